"""Dave confirms removal on his phone's page in a real browser at phone size, and the privacy and
data pages pass axe-core and fit a phone."""

from __future__ import annotations

from tests.browser.test_portal_pages_in_a_browser import NOW, device_ids

DAVE_PHONE = "Dave's iPhone"


def test_dave_confirms_removal_and_reads_what_is_kept(portal, pages):
    portal.clock.set(NOW)
    page = portal.signed_in(pages, "dave@example.com")
    page.goto(f"{portal.url}/me/devices/{device_ids(portal)[DAVE_PHONE]}")
    main = page.locator("main")
    assert "Run the check app (on a phone or tablet) or the agent" in main.inner_text()
    pages.check(page, "dave-ways-out")
    page.get_by_role("button", name="I confirm TikTok is not on this device").click()
    page.wait_for_url("**attested=1")
    assert "your confirmation is recorded" in main.inner_text()
    assert "All good" in main.inner_text()
    pages.check(page, "dave-confirmed")
    page.goto(f"{portal.url}/me/privacy")
    assert "Your devices and your privacy" in main.inner_text()
    pages.check(page, "dave-privacy")
    page.goto(f"{portal.url}/me/data")
    assert "attestation" in main.inner_text()
    pages.check(page, "dave-data")
