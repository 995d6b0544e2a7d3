"""The employee portal's pages (docs/portal.md): a person's own devices only, each policy's state
with the deadline in their zone counting down, what to do, what stays allowed and why, exemption
requests and their decisions, a withdrawn policy as "no action needed", and what the
organisation stores. Templates run no SQL."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select
from tests.conftest import table_digest
from tests.portal_harness import (
    MORNING,
    csrf_of,
    device_named,
    https_client,
    open_session,
    person_client,
    signed_in,
    statements_while_rendering,
)

from appwarden.audit.models import AuditEntry
from appwarden.db.uow import unit_of_work
from appwarden.exemptions.models import Exemption
from appwarden.timeutil import iso

POLICY = "tiktok-mobile-email"


def main_text(html: str) -> str:
    """The words of a page's main part, tags dropped and spaces folded."""
    body = html.split('<main id="main"', 1)[1].split(">", 1)[1].split("</main>", 1)[0]
    inline = re.sub(r"</?(?:a|code|span|strong|em)\b[^>]*>", "", body)
    return " ".join(re.sub(r"<[^>]+>", " ", inline).replace("&#39;", "'").split())


def test_alice_sees_her_phone_with_the_deadline_in_her_zone_counting_down(store, app, clock):
    alice = person_client(app, store, "alice@example.com", clock.now())
    home = main_text(alice.get("/me/").text)
    assert home.index("Alice's iPhone") < home.index("Alice's MacBook")  # what needs doing first
    assert "Action required Mandatory removal of TikTok" in home
    phone = device_named(store, "Alice's iPhone")
    page = main_text(alice.get(f"/me/devices/{phone}?policy={POLICY}").text)
    assert "Please remove it by Friday, July 10, 2020 at 11:59 PM PDT" in page
    assert "13 hours, 59 minutes left" in page
    assert "Delete the TikTok app from this device." in page  # the remediation
    assert "Using TikTok from your company laptop browser is allowed." in page
    assert "only ever affects company email" in page
    assert "read what you copy to the clipboard" in page  # the rationale
    clock.advance(timedelta(hours=12))  # (a session unused that long has ended: a new one)
    alice = person_client(app, store, "alice@example.com", clock.now())
    assert "1 hour, 59 minutes left" in main_text(alice.get(f"/me/devices/{phone}").text)
    clock.advance(timedelta(hours=2))  # past the deadline: the gate denies, the page says so
    alice = person_client(app, store, "alice@example.com", clock.now())
    late = main_text(alice.get(f"/me/devices/{phone}").text)
    assert "Access blocked" in late
    assert "Access to company email is blocked on this device" in late


def test_a_deadline_reads_in_each_persons_own_zone(store, app, clock):
    carol = person_client(app, store, "carol@example.com", clock.now())
    galaxy = device_named(store, "Carol's Galaxy")
    page = main_text(carol.get(f"/me/devices/{galaxy}").text)
    assert "Saturday, July 11, 2020 at 8:59 AM CEST" in page
    assert "Europe/Berlin" in page


def test_an_unknown_device_says_what_can_be_done(store, app, clock):
    dave = person_client(app, store, "dave@example.com", clock.now())
    phone = device_named(store, "Dave's iPhone")
    page = main_text(dave.get(f"/me/devices/{phone}").text)
    assert "Cannot confirm" in page
    assert "its device management reports only the apps it installed itself" in page
    assert "What you can do" in page
    assert "If TikTok is installed, remove it." in page
    assert "Nothing is blocked on this device while we cannot see its apps." in page


def test_someone_elses_device_reads_exactly_like_a_missing_one(store, app, clock):
    alice = person_client(app, store, "alice@example.com", clock.now())
    bob_pixel = device_named(store, "Bob's Pixel")
    answers = [alice.get(f"/me/devices/{ref}") for ref in (bob_pixel, 999999, "abc", "1e3", "-1")]
    assert {a.status_code for a in answers} == {404}
    assert len({a.text for a in answers}) == 1
    assert "Bob" not in answers[0].text
    before = table_digest(store.engine, exclude=("portal_session",))
    form = {"csrf": csrf_of(alice.get("/me/").text), "policy": POLICY, "reason": "mine now"}
    assert alice.post(f"/me/devices/{bob_pixel}/exemptions", data=form).status_code == 404
    assert table_digest(store.engine, exclude=("portal_session",)) == before


def test_a_form_posted_without_its_csrf_token_is_refused(store, app, clock):
    alice = person_client(app, store, "alice@example.com", clock.now())
    phone = device_named(store, "Alice's iPhone")
    other = open_session(store, "bob@example.com", clock.now())
    bobs_token = csrf_of(signed_in(https_client(app), other).get("/me/").text)
    before = table_digest(store.engine, exclude=("portal_session",))
    for form in ({}, {"csrf": ""}, {"csrf": bobs_token}):
        refused = alice.post(
            f"/me/devices/{phone}/exemptions", data={**form, "policy": POLICY, "reason": "why"}
        )
        assert refused.status_code == 403
    assert table_digest(store.engine, exclude=("portal_session",)) == before


def test_alice_asks_for_an_exemption_and_sees_the_decision(store, app, clock, cli):
    alice = person_client(app, store, "alice@example.com", clock.now())
    phone = device_named(store, "Alice's iPhone")
    page = alice.get(f"/me/devices/{phone}")
    empty = alice.post(
        f"/me/devices/{phone}/exemptions",
        data={"csrf": csrf_of(page.text), "policy": POLICY, "reason": "  "},
    )
    assert empty.status_code == 422
    assert "An exemption needs a reason." in main_text(empty.text)
    asked = alice.post(
        f"/me/devices/{phone}/exemptions",
        data={"csrf": csrf_of(page.text), "policy": POLICY, "reason": "I run the team's account."},
    )
    assert asked.status_code == 303
    assert asked.headers["location"] == f"/me/devices/{phone}?policy={POLICY}&requested=1"
    waiting = main_text(alice.get(asked.headers["location"]).text)
    assert "Your request was sent" in waiting
    assert "waiting for a decision" in waiting
    assert "Ask for an exemption" not in waiting  # one request at a time
    with unit_of_work(store.engine, now=MORNING, write=False) as uow:
        [request] = uow.session.scalars(select(Exemption).where(Exemption.status == "requested"))
        actors = set(
            uow.session.scalars(
                select(AuditEntry.actor).where(AuditEntry.action == "exemption.request")
            )
        )
    assert request.device_id == phone
    assert actors == {"alice@example.com"}
    again = alice.post(
        f"/me/devices/{phone}/exemptions",
        data={"csrf": csrf_of(page.text), "policy": POLICY, "reason": "again"},
    )
    assert again.status_code == 409

    until = iso(MORNING + timedelta(days=30))
    granted = cli(
        "exemption",
        "grant",
        str(request.id),
        "--until",
        until,
        "--reason",
        "Marketing lead.",
        "--as",
        "ciso@example.com",
        "--at",
        iso(clock.now()),
    )
    assert granted.code == 0, granted.err
    shown = main_text(alice.get(f"/me/devices/{phone}").text)
    assert "Exempt" in shown
    assert (
        "You have an exemption for this device until Sunday, August 9, 2020 at 10:00 AM PDT"
        in shown
    )
    assert "the approver’s note: “Marketing lead.”" in shown


def test_a_denied_request_shows_why(store, app, clock, cli):
    dave = person_client(app, store, "dave@example.com", clock.now())
    phone = device_named(store, "Dave's iPhone")
    page = dave.get(f"/me/devices/{phone}")
    dave.post(
        f"/me/devices/{phone}/exemptions",
        data={"csrf": csrf_of(page.text), "policy": POLICY, "reason": "I like it."},
    )
    with unit_of_work(store.engine, now=MORNING, write=False) as uow:
        [request] = uow.session.scalars(select(Exemption.id).where(Exemption.status == "requested"))
    denied = cli(
        "exemption",
        "deny",
        str(request),
        "--reason",
        "Not a business need.",
        "--as",
        "ciso@example.com",
        "--at",
        iso(clock.now()),
    )
    assert denied.code == 0, denied.err
    shown = main_text(dave.get(f"/me/devices/{phone}").text)
    assert "Turned down on Friday, July 10, 2020 at 10:00 AM PDT" in shown
    assert "Not a business need." in shown
    assert "Ask for an exemption" in shown  # may ask again


def test_a_retracted_policy_shows_no_action_needed_with_the_correction(store, app, clock, cli):
    at = iso(clock.now())
    assert cli("worker", "--once", "--at", at).code == 0  # the announcements go out
    retracted = cli(
        "policy",
        "retract",
        POLICY,
        "--message",
        "Sent in error. Keep your apps.",
        "--as",
        "security.lead@example.com",
        "--at",
        at,
    )
    assert retracted.code == 0, retracted.err
    alice = person_client(app, store, "alice@example.com", clock.now())
    phone = device_named(store, "Alice's iPhone")
    page = main_text(alice.get(f"/me/devices/{phone}?policy={POLICY}").text)
    assert "No action needed" in page
    assert "Sent in error. Keep your apps." in page
    assert "Action required" not in page
    assert "Ask for an exemption" not in page
    # The laptop was never in scope, and erin was never told: no card for either.
    laptop = device_named(store, "Alice's MacBook")
    assert "Mandatory removal" not in main_text(alice.get(f"/me/devices/{laptop}").text)
    erin = person_client(app, store, "erin@example.com", clock.now())
    assert "Mandatory removal" not in main_text(erin.get("/me/").text)


def test_the_data_page_lists_what_is_stored_about_my_devices(store, app, clock):
    alice = person_client(app, store, "alice@example.com", clock.now())
    page = main_text(alice.get("/me/data").text)
    assert "alice@example.com" in page
    assert "udid 00008110-000A1B2C3D4E801E, from mdm-export" in page
    assert "C02ZK1ABMD6M" in page  # the laptop too
    assert "from mdm-export, a full app list" in page
    assert "only the apps that a policy names" in page
    assert "Bob" not in page


def test_templates_run_no_sql(store, app, clock, monkeypatch):
    """Every statement a page needs runs before its template is rendered: a listener counts
    the statements this thread sends while `pages.render` runs, and there must be none."""
    with statements_while_rendering(app, monkeypatch) as counts:
        for email in ("alice@example.com", "dave@example.com", "frank@example.com"):
            browser = person_client(app, store, email, clock.now())
            home = browser.get("/me/")
            for link in set(re.findall(r'href="(/me/devices/\d+)"', home.text)):
                assert browser.get(link).status_code == 200
            assert browser.get("/me/data").status_code == 200
        https_client(app).get("/auth/sign-in")
    assert counts["renders"] >= 10
    assert counts["outside"] > 0  # the listener does see the pages' queries
    assert counts["during"] == 0
