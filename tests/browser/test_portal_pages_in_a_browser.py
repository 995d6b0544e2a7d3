"""Every other portal page in a real browser at phone size: axe-core and the phone-size check on
each (tests/browser/conftest.py), someone else's device by URL, the portal without JavaScript and
by keyboard, and the countdown kept current in the browser."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from sqlalchemy import select
from tests.portal_harness import RELEASE

from appwarden.db.engine import make_engine
from appwarden.db.uow import unit_of_work
from appwarden.devices.models import Device

NOW = RELEASE + timedelta(minutes=5)


def device_ids(portal) -> dict[str, int]:
    engine = make_engine(portal.db)
    with unit_of_work(engine, now=NOW, write=False) as uow:
        found = {name: id_ for id_, name in uow.session.execute(select(Device.id, Device.name))}
    engine.dispose()
    return found


@pytest.mark.parametrize(
    ("email", "device", "says"),
    [
        ("dave@example.com", "Dave's iPhone", "Cannot confirm"),
        ("bob@example.com", "Bob's Pixel", "All good"),
        ("frank@example.com", "Frank's iPhone", "Exempt"),
        ("alice@example.com", "Alice's MacBook", "Nothing to do"),
    ],
)
def test_each_state_of_a_device_page_passes_axe_and_fits_a_phone(
    portal, pages, email, device, says
):
    portal.clock.set(NOW)
    page = portal.signed_in(pages, email)
    page.goto(f"{portal.url}/me/devices/{device_ids(portal)[device]}")
    assert says in page.locator("main").inner_text()
    pages.check(page, device.split("'")[0].lower() + "-device")
    page.goto(f"{portal.url}/me/")
    pages.check(page, device.split("'")[0].lower() + "-home")


def test_alice_cannot_reach_bobs_device_by_changing_the_url(portal, pages):
    portal.clock.set(NOW)
    ids = device_ids(portal)
    page = portal.signed_in(pages, "alice@example.com")
    alices, bobs_pixel = ids["Alice's iPhone"], ids["Bob's Pixel"]
    page.goto(f"{portal.url}/me/devices/{alices}")
    assert "Action required" in page.locator("main").inner_text()
    answer = page.goto(f"{portal.url}/me/devices/{bobs_pixel}")
    assert answer.status == 404
    bobs = page.content()
    assert "Bob" not in bobs
    pages.check(page, "not-found")
    missing = page.goto(f"{portal.url}/me/devices/999999")
    assert missing.status == 404
    assert page.content() == bobs


def test_the_sign_in_pages_pass_axe_and_fit_a_phone(portal, pages, cli_stdin):
    portal.clock.set(NOW)
    page = pages.new_page()
    page.goto(f"{portal.url}/auth/sign-in")
    page.get_by_label("Your work email address").fill("not an address")
    page.get_by_role("button", name="Email me a sign-in link").click()  # the browser's own check
    page.evaluate("document.querySelector('form').noValidate = true")
    page.get_by_role("button", name="Email me a sign-in link").click()
    page.get_by_role("alert").wait_for()
    pages.check(page, "sign-in-problem")
    page.goto(f"{portal.url}/auth/link/not-a-token")
    assert "no longer works" in page.locator("main").inner_text()
    pages.check(page, "link-invalid")

    cli_stdin("correct horse battery staple\n")
    assert (
        portal.cli("admin", "create", "grace@example.com", "--role", "viewer", "--password-stdin")
        == 0
    )
    page.goto(f"{portal.url}/admin/")
    assert page.url == f"{portal.url}/auth/sign-in"
    page.get_by_role("link", name="sign in with a password").click()
    pages.check(page, "password")
    page.get_by_label("Email address").fill("grace@example.com")
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{portal.url}/admin/")
    assert "Your permissions: read." in page.locator("main").inner_text()
    pages.check(page, "admin")

    email_session = portal.signed_in(pages, "grace@example.com")
    refused = email_session.goto(f"{portal.url}/admin/")
    assert refused.status == 403
    pages.check(email_session, "admin-refused")


def test_the_portal_works_without_javascript_and_by_keyboard(portal, pages):
    portal.clock.set(NOW)
    page = pages.new_page(java_script_enabled=False)
    page.goto(f"{portal.url}/me/")
    page.get_by_label("Your work email address").fill("dave@example.com")
    page.keyboard.press("Enter")  # submits the form
    page.get_by_text("If that address belongs to someone here").wait_for()
    portal.worker()
    page.goto(
        portal.link_in(portal.mail_to("dave@example.com", "sign-in"), r"/auth/link/[A-Za-z0-9_-]+")
    )
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{portal.url}/me/")

    page.keyboard.press("Tab")  # the first stop is the skip link
    assert page.locator(":focus").inner_text() == "Skip to the content"
    page.get_by_role("link", name="See what to do on Dave's iPhone").focus()
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Dave's iPhone").wait_for()
    page.get_by_label("Need to keep TikTok on this device? Tell us why").focus()
    page.keyboard.type("The MDM cannot see it; I do not have the app.")
    page.keyboard.press("Tab")
    assert page.locator(":focus").inner_text() == "Ask for an exemption"
    page.keyboard.press("Enter")
    page.get_by_text("Your request was sent").wait_for()
    assert "waiting for a decision" in page.locator("main").inner_text()
    # (axe-core needs JavaScript: these pages were checked with it in the other tests.)


def test_the_countdown_keeps_time_while_the_page_stays_open(portal, pages):
    portal.clock.set(NOW)
    page = portal.signed_in(pages, "alice@example.com")
    page.clock.install()
    phone = device_ids(portal)["Alice's iPhone"]
    page.goto(f"{portal.url}/me/devices/{phone}")
    countdown = page.locator(".countdown")
    assert countdown.inner_text() == "14 hours, 54 minutes left"
    page.clock.run_for(61 * 60 * 1000)  # an hour and a minute with the page open
    assert countdown.inner_text() == "13 hours, 53 minutes left"


@pytest.fixture
def cli_stdin(monkeypatch):
    def feed(text: str) -> None:
        monkeypatch.setattr("sys.stdin", io.StringIO(text))

    return feed
