"""The console's device, people and operations pages in a real browser (Chromium driving a
running server on the reference organisation, the memo released): an admin searches a device by
its owner and by its serial, opens it, settles a conflict between sources from its page, merges
the devices of a quarantined report, retries a failed notice, views the settings and verifies the
audit log; an approver grants an exemption from the queue; a viewer sees the pages without a
single action. Every page passes axe-core and the phone-size check, with a screenshot in
artifacts/ (tests/browser/conftest.py)."""

from __future__ import annotations

import orjson
from sqlalchemy import select

from appwarden.db.engine import make_engine
from appwarden.db.uow import unit_of_work
from appwarden.notifications.models import Notice
from appwarden.sources.native import parse_native
from appwarden.usecases.demo import APPROVER
from appwarden.usecases.ingest import Writer, ingest
from appwarden.vocabulary import SignInMethod

PASSWORD = SignInMethod.PASSWORD
ADMIN = "root@example.com"
VIEWER = "viewer@example.com"
ALICE_PHONE = "udid:00008110-000A1B2C3D4E801E"


def _write(portal, source: str, *identifiers: tuple[str, str], **facts) -> None:
    listed = [{"namespace": ns, "value": value} for ns, value in identifiers]
    document = {
        "format": "appwarden.inventory/v1",
        "source": source,
        "devices": [{"identifiers": listed, **facts}],
    }
    batch = parse_native(orjson.dumps(document), "x.json", strict=True)
    engine = make_engine(portal.db)
    try:
        with unit_of_work(engine, now=portal.clock.now(), actor=f"token:{source}") as uow:
            ingest(uow, batch, writer=Writer(source=source))
    finally:
        engine.dispose()


def _queues(portal) -> int:
    """Something in each queue: a conflict on alice's phone, a quarantined report naming erin's
    tablet and a second record of it, alice's exemption request, a failed notice (its id)."""
    assert portal.cli("admin", "create", ADMIN, "--role", "admin") == 0
    assert portal.cli("admin", "create", VIEWER, "--role", "viewer") == 0
    _write(portal, "mail-agent", ("udid", ALICE_PHONE[5:]), platform="windows")
    _write(portal, "mail-agent", ("eas_device_id", "E1E1E1E1"), owner="erin@example.com")
    _write(
        portal,
        "other-mdm",
        ("enterprise_specific_id", "ERIN-TAB-0042"),
        ("eas_device_id", "E1E1E1E1"),
    )
    asked = portal.cli(
        "exemption", "request", "--policy", "tiktok-mobile-email", "--device", ALICE_PHONE,
        "--reason", "Runs the campaign account", "--as", "alice@example.com",
    )  # fmt: skip
    assert asked == 0
    portal.worker()
    engine = make_engine(portal.db)
    try:
        with unit_of_work(engine, now=portal.clock.now()) as uow:
            notice = uow.session.scalars(select(Notice).order_by(Notice.id)).first()
            assert notice is not None
            notice.status, notice.last_error = "failed", "550 mailbox unavailable"
            return notice.id
    finally:
        engine.dispose()


def _expect_rows(page, count: int) -> None:
    """The results table shows `count` rows (once the search's page has loaded)."""
    from playwright.sync_api import expect  # the chromium fixture says why when it is missing

    expect(page.locator("tbody tr")).to_have_count(count)


def _status(page) -> str:
    """What the page says the last action did (after the redirect back to it)."""
    page.wait_for_url("**done=*")
    return page.get_by_role("status").inner_text()


def test_an_admin_finds_a_device_settles_merges_retries_and_verifies(portal, pages):
    failed = _queues(portal)
    admin = portal.signed_in(pages, ADMIN, method=PASSWORD)

    admin.goto(f"{portal.url}/admin/devices")
    pages.check(admin, "devices")
    admin.get_by_label("Person (email, alias or account name)").fill("alice@example.com")
    admin.get_by_role("button", name="Search").click()
    _expect_rows(admin, 2)  # her iPhone and her MacBook
    admin.get_by_label("Person (email, alias or account name)").fill("")
    admin.get_by_label("Serial or identifier", exact=False).fill("C02ZK1ABMD6M")
    admin.get_by_role("button", name="Search").click()
    _expect_rows(admin, 1)
    pages.check(admin, "devices-by-serial")

    admin.get_by_label("Serial or identifier", exact=False).fill(ALICE_PHONE)
    admin.get_by_role("button", name="Search").click()
    admin.get_by_role("link", name="Alice's iPhone").click()
    main = admin.locator("main").inner_text()
    assert "alice@example.com" in main
    assert "mdm-export" in main  # a report's source
    assert "mail-agent says windows" in main
    pages.check(admin, "device")
    admin.get_by_role("button", name="Reject it").click()
    assert "offered value was discarded" in _status(admin)
    assert "None open." in admin.locator("main").inner_text()

    admin.goto(f"{portal.url}/admin/quarantine")
    pages.check(admin, "quarantine")
    admin.get_by_role("button", name="Merge the devices").click()
    assert "merged into one" in _status(admin)
    assert "Nothing here." in admin.locator("main").inner_text()

    admin.goto(f"{portal.url}/admin/notices?status=failed")
    assert "550 mailbox unavailable" in admin.locator("main").inner_text()
    pages.check(admin, "notices")
    admin.get_by_role("button", name=f"Retry notice {failed}").click()
    assert "queued again" in _status(admin)
    admin.goto(f"{portal.url}/admin/notices?status=failed")
    assert "No notice matches." in admin.locator("main").inner_text()

    for path, label in (("people?status=left", "people"), ("sources", "sources")):
        admin.goto(f"{portal.url}/admin/{path}")
        pages.check(admin, label)
    admin.goto(f"{portal.url}/admin/settings")
    settings = admin.locator("main").inner_text()
    assert "APPWARDEN_DATABASE_URL" in settings
    assert "environment" in settings
    pages.check(admin, "settings")

    portal.worker()  # the appender chains the entries written since
    admin.goto(f"{portal.url}/admin/audit")
    assert "quarantine.merge" in admin.locator("main").inner_text()
    admin.get_by_role("link", name="Verify the whole chain").click()
    assert "the chain is intact" in admin.locator("main").inner_text()
    pages.check(admin, "audit")


def test_an_approver_grants_an_exemption_and_a_viewer_only_reads(portal, pages):
    _queues(portal)
    approver = portal.signed_in(pages, APPROVER, method=PASSWORD)
    approver.goto(f"{portal.url}/admin/exemptions")
    assert "Runs the campaign account" in approver.locator("main").inner_text()
    pages.check(approver, "exemptions")
    approver.get_by_label("Reason (the holder reads it)").fill("Approved for the campaign.")
    approver.get_by_label("Last day of the exemption (optional)").fill("2020-08-31")
    approver.get_by_role("button", name="Grant", exact=False).click()
    assert "was granted" in _status(approver)
    approver.goto(f"{portal.url}/admin/exemptions?status=approved")
    assert "Approved for the campaign." in approver.locator("main").inner_text()
    pages.check(approver, "exemptions-approved")

    viewer = portal.signed_in(pages, VIEWER, method=PASSWORD)
    for path in ("devices", "conflicts", "quarantine", "notices", "exemptions", "audit"):
        viewer.goto(f"{portal.url}/admin/{path}")
        assert viewer.locator("main form[method=post]").count() == 0, path
    viewer.goto(f"{portal.url}/admin/settings")
    assert "Not allowed" in viewer.locator("main").inner_text()
