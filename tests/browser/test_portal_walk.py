"""The issue's walk, in a real browser on a phone-sized screen: alice follows the link in the
announcement she received, signs in by an emailed link, lands on her iPhone's page with the
deadline in her zone and the remediation, asks for an exemption; an approver grants it on the
command line and her page shows it; the policy is retracted and her page says no action is
needed. Every page on the way passes axe-core and the phone-size check (tests/browser/conftest.py)."""

from __future__ import annotations

from datetime import timedelta

import orjson
from tests.portal_harness import RELEASE

from appwarden.timeutil import iso

POLICY = "tiktok-mobile-email"
DEVICE_LINK = r"/me/devices/\d+\?policy=tiktok-mobile-email"
SIGN_IN_LINK = r"/auth/link/[A-Za-z0-9_-]+"


def test_alice_walks_from_the_notice_to_an_exemption_and_a_retraction(portal, pages, capsys):
    portal.clock.set(RELEASE + timedelta(minutes=5))
    portal.worker()  # the announcements go out
    link = portal.link_in(portal.mail_to("alice@example.com", "announce"), DEVICE_LINK)
    page = pages.new_page()

    # The link asks her to sign in first; the page she asked for is kept on the server.
    page.goto(link)
    assert page.url == f"{portal.url}/auth/sign-in"
    pages.check(page, "sign-in")
    page.get_by_label("Your work email address").fill("alice@example.com")
    page.get_by_role("button", name="Email me a sign-in link").click()
    page.get_by_text("If that address belongs to someone here").wait_for()
    pages.check(page, "check-email")

    portal.worker()  # the sign-in mail leaves through the outbox
    signing = portal.link_in(portal.mail_to("alice@example.com", "sign-in"), SIGN_IN_LINK)
    page.goto(signing)
    pages.check(page, "sign-in-link")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(link)

    # Her iPhone: the deadline in her zone, counting down, and what to do.
    assert page.get_by_role("heading", level=1).inner_text() == "Alice's iPhone"
    card = page.locator(f"#policy-{POLICY}")
    assert "Action required" in card.inner_text()
    assert "Please remove it by Friday, July 10, 2020 at 11:59 PM PDT." in card.inner_text()
    assert card.locator(".countdown").inner_text() == "14 hours, 54 minutes left"
    assert "Delete the TikTok app from this device." in card.inner_text()
    assert "Using TikTok from your company laptop browser is allowed." in card.inner_text()
    pages.check(page, "device-action-required")

    portal.clock.advance(timedelta(minutes=90))  # time passes on the server
    page.reload()
    assert card.locator(".countdown").inner_text() == "13 hours, 24 minutes left"

    page.get_by_label("Need to keep TikTok on this device? Tell us why").fill(
        "I run the team's TikTok account from this phone."
    )
    page.get_by_role("button", name="Ask for an exemption").click()
    page.get_by_text("Your request was sent").wait_for()
    assert "waiting for a decision" in card.inner_text()
    assert page.get_by_role("button", name="Ask for an exemption").count() == 0
    pages.check(page, "device-requested")

    # An approver grants it on the command line; her page shows it.
    capsys.readouterr()
    assert portal.cli("exemption", "list", "--json") == 0
    [request] = [e for e in orjson.loads(capsys.readouterr().out) if e["status"] == "requested"]
    until = iso(RELEASE + timedelta(days=30))
    assert portal.cli(
        "exemption", "grant", str(request["id"]), "--until", until,
        "--reason", "Approved for the marketing account.", "--as", "ciso@example.com",
        "--at", iso(portal.clock.now()),
    ) == 0  # fmt: skip
    page.reload()
    assert "Exempt" in card.inner_text()
    assert (
        "You have an exemption for this device until Sunday, August 9, 2020 at 9:00 AM PDT"
        in card.inner_text()
    )
    assert "Approved for the marketing account." in card.inner_text()
    pages.check(page, "device-exempt")

    page.get_by_role("link", name="My devices").click()
    page.wait_for_url(f"{portal.url}/me/")
    pages.check(page, "home")
    page.get_by_role("link", name="What we store").click()
    page.get_by_text("00008110-000A1B2C3D4E801E").first.wait_for()  # listed, and in its rows
    pages.check(page, "data")

    # The memo is taken back: her page says nothing is needed, with the correction.
    portal.clock.advance(timedelta(minutes=30))
    assert portal.cli(
        "policy", "retract", POLICY, "--message", "This message was sent in error.",
        "--as", "security.lead@example.com", "--at", iso(portal.clock.now()),
    ) == 0  # fmt: skip
    portal.worker()
    assert portal.mail_to("alice@example.com", "correction")["Subject"].startswith("Correction")
    page.goto(link)
    assert "No action needed" in card.inner_text()
    assert "This message was sent in error." in card.inner_text()
    assert "Action required" not in card.inner_text()
    pages.check(page, "device-withdrawn")

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{portal.url}/auth/signed-out")
    pages.check(page, "signed-out")
    page.goto(link)
    assert page.url == f"{portal.url}/auth/sign-in"  # the session is gone
