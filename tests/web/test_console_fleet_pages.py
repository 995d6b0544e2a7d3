"""The console's device, people and operations pages over HTTP, on both stores: each renders for
a signed-in admin, its forms act through the CLI's use cases, and a viewer sees every page but
acts on none — a direct POST of any form is refused and changes nothing (`table_digest`), as is a
form without its CSRF token.
"""

from __future__ import annotations

import re

import orjson
import pytest
from sqlalchemy import select
from tests.conftest import table_digest
from tests.portal_harness import (
    MORNING,
    TimeFile,
    https_client,
    open_session,
    portal_settings,
    statements_while_rendering,
)

from appwarden.db.uow import unit_of_work
from appwarden.devices.models import Device, FactConflict, Quarantine
from appwarden.devices.service import find_device
from appwarden.notifications.models import Notice
from appwarden.sources.native import parse_native
from appwarden.usecases.ingest import Writer, ingest
from appwarden.vocabulary import SignInMethod
from appwarden.web.app import create_app

ADMIN = "it.admin@example.com"
VIEWER = "auditor@example.com"
APPROVER = "ciso@example.com"
ALICE_PHONE = "udid:00008110-000A1B2C3D4E801E"
ERIN_TABLET = "enterprise_specific_id:ERIN-TAB-0042"

PAGES = (
    "/admin/devices",
    "/admin/devices?person=alice%40example.com",
    "/admin/devices?identifier=C02ZK1ABMD6M",
    "/admin/people",
    "/admin/people?status=left",
    "/admin/conflicts",
    "/admin/conflicts?show=all",
    "/admin/quarantine",
    "/admin/sources",
    "/admin/notices",
    "/admin/notices?status=failed",
    "/admin/exemptions",
    "/admin/exemptions?status=",
    "/admin/audit",
    "/admin/audit?verify=1",
)


def _write(store, source: str, document: dict) -> None:
    text = orjson.dumps({"format": "appwarden.inventory/v1", "source": source, **document})
    with unit_of_work(store.engine, now=MORNING, actor=f"token:{source}") as uow:
        ingest(uow, parse_native(text, "x.json", strict=True), writer=Writer(source=source))


def _entry(*identifiers: tuple[str, str], **facts) -> dict:
    listed = [{"namespace": ns, "value": value} for ns, value in identifiers]
    return {"devices": [{"identifiers": listed, **facts}]}


@pytest.fixture
def app(store, cli, demo, clock, tmp_path, monkeypatch):
    """The reference organisation with something in every queue: a fact conflict on alice's
    phone, a quarantined report naming erin's tablet and a second record of it, a failed
    notice, and alice's exemption request."""
    monkeypatch.setenv("APPWARDEN_MAILDIR", str(tmp_path / "mail"))
    assert cli("admin", "create", ADMIN, "--role", "admin").code == 0
    assert cli("worker", "--once", "--at", "2020-07-10T09:01:00-07:00").code == 0
    _write(store, "mail-agent", _entry(("udid", ALICE_PHONE[5:]), platform="windows"))
    _write(store, "mail-agent", _entry(("eas_device_id", "E1E1E1E1"), owner="erin@example.com"))
    _write(
        store,
        "other-mdm",
        _entry(("enterprise_specific_id", "ERIN-TAB-0042"), ("eas_device_id", "E1E1E1E1")),
    )
    asked = cli(
        "exemption", "request", "--policy", "tiktok-mobile-email", "--device", ALICE_PHONE,
        "--reason", "campaign", "--as", "alice@example.com", "--at", "2020-07-10T09:30:00-07:00",
    )  # fmt: skip
    assert asked.code == 0, asked.err
    with unit_of_work(store.engine, now=MORNING) as uow:
        notice = uow.session.scalars(select(Notice).order_by(Notice.id)).first()
        notice.status, notice.last_error = "failed", "550 mailbox unavailable"
    assert cli("admin", "create", VIEWER, "--role", "viewer").code == 0
    made = create_app(portal_settings(store, clock, tmp_path))
    with https_client(made):
        yield made


def browser(app, store, email: str, clock: TimeFile):
    secret = open_session(store, email, clock.now(), method=SignInMethod.PASSWORD)
    client = https_client(app)
    client.cookies.set("__Host-appwarden-session", secret)
    return client


def csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found
    return found.group(1)


def _ids(store):
    with unit_of_work(store.engine, now=MORNING, write=False) as uow:
        return {
            "conflict": uow.session.scalars(select(FactConflict.id)).one(),
            "held": uow.session.scalars(select(Quarantine.id)).one(),
            "tablet": find_device(uow, ERIN_TABLET).id,
            "notice": uow.session.scalars(select(Notice.id).where(Notice.status == "failed")).one(),
        }


def test_every_page_renders_for_an_admin(store, app, clock):
    admin = browser(app, store, ADMIN, clock)
    for path in PAGES:
        response = admin.get(path)
        assert response.status_code == 200, (path, response.text[:2000])
    ids = _ids(store)
    device = admin.get(f"/admin/devices/{ids['tablet']}")
    assert device.status_code == 200
    assert "Merge into this device" in device.text
    assert "mdm-export" in device.text  # a report's source
    settings = admin.get("/admin/settings")
    assert "APPWARDEN_DATABASE_URL" in settings.text
    assert admin.get("/admin/audit?verify=1").text.count("the chain is intact") == 1


def test_a_viewer_sees_but_cannot_act(store, app, clock):
    viewer = browser(app, store, VIEWER, clock)
    ids = _ids(store)
    for path in PAGES:
        page = viewer.get(path)
        assert page.status_code == 200, path
        assert 'method="post" action="/admin/' not in page.text, path
    assert viewer.get("/admin/settings").status_code == 403  # settings need admin
    token = csrf(viewer.get("/admin/devices").text)  # the sign-out form's
    before = table_digest(store.engine, exclude=("portal_session",))
    for path, form in (
        (f"/admin/conflicts/{ids['conflict']}/settle", {"resolution": "accept"}),
        (f"/admin/quarantine/{ids['held']}/settle", {"resolution": "merge"}),
        (f"/admin/devices/{ids['tablet']}/merge", {"other": "eas_device_id:E1E1E1E1"}),
        ("/admin/notices/retry", {"notice": str(ids["notice"])}),
        ("/admin/exemptions/1/decide", {"decision": "deny", "reason": "no"}),
    ):
        refused = viewer.post(path, data={"csrf": token, **form})
        assert refused.status_code == 403, path
    assert table_digest(store.engine, exclude=("portal_session",)) == before


def test_admin_forms_act_and_refuse_without_their_token(store, app, clock):
    admin = browser(app, store, ADMIN, clock)
    ids = _ids(store)
    token = csrf(admin.get("/admin/quarantine").text)
    before = table_digest(store.engine, exclude=("portal_session",))
    assert (
        admin.post(
            f"/admin/quarantine/{ids['held']}/settle", data={"resolution": "merge"}
        ).status_code
        == 403
    )
    bad = admin.post(
        f"/admin/quarantine/{ids['held']}/settle", data={"csrf": token, "resolution": "x"}
    )
    assert bad.status_code == 422
    assert "resolution: expected one of merge, reject" in bad.text
    assert table_digest(store.engine, exclude=("portal_session",)) == before

    merged = admin.post(
        f"/admin/quarantine/{ids['held']}/settle", data={"csrf": token, "resolution": "merge"}
    )
    assert merged.status_code == 303
    assert admin.get(merged.headers["location"]).text.count("were merged into one") == 1
    settled = admin.post(
        f"/admin/conflicts/{ids['conflict']}/settle",
        data={"csrf": token, "resolution": "reject", "back": "/admin/devices/1"},
    )
    assert settled.headers["location"] == "/admin/devices/1?done=rejected"
    retried = admin.post("/admin/notices/retry", data={"csrf": token, "notice": str(ids["notice"])})
    assert retried.status_code == 303
    with unit_of_work(store.engine, now=MORNING, write=False) as uow:
        assert uow.session.get(Notice, ids["notice"]).status == "pending"
        assert uow.session.scalars(select(Device.id).where(Device.id == ids["tablet"])).one()


def test_an_approver_decides_an_exemption_from_the_queue(store, app, clock):
    approver = browser(app, store, APPROVER, clock)
    queue = approver.get("/admin/exemptions")
    [exemption_id] = re.findall(r'action="/admin/exemptions/(\d+)/decide"', queue.text)
    token = csrf(queue.text)
    path = f"/admin/exemptions/{exemption_id}/decide"
    no_reason = approver.post(path, data={"csrf": token, "decision": "grant", "reason": ""})
    assert no_reason.status_code == 422
    bad_day = approver.post(
        path, data={"csrf": token, "decision": "grant", "reason": "ok", "until": "next week"}
    )
    assert bad_day.status_code == 422
    granted = approver.post(
        path, data={"csrf": token, "decision": "grant", "reason": "ok", "until": "2020-08-01"}
    )
    assert granted.status_code == 303
    approved = approver.get("/admin/exemptions?status=approved").text
    assert "Revoke" in approved
    assert "2020-08-02T06:59:59Z" in approved  # the end of Aug 1 in the approver's zone


def test_pages_run_no_sql_while_rendering(store, app, clock, monkeypatch):
    admin = browser(app, store, ADMIN, clock)
    paths = (*PAGES, f"/admin/devices/{_ids(store)['tablet']}", "/admin/settings")
    with statements_while_rendering(app, monkeypatch) as counts:
        for path in paths:
            assert admin.get(path).status_code == 200, path
    assert counts["renders"] == len(paths)
    assert counts["outside"] > 0
    assert counts["during"] == 0


def test_bad_input_is_a_located_answer_never_a_500(store, app, clock):
    admin = browser(app, store, ADMIN, clock)
    for path, status in (
        ("/admin/devices?platform=nokia", 422),
        ("/admin/devices?after=garbage", 422),
        ("/admin/devices/abc", 400),
        ("/admin/devices/999999", 404),
        ("/admin/people?status=gone", 422),
        ("/admin/conflicts?show=some", 422),
        ("/admin/notices?status=lost", 422),
        ("/admin/audit?after=-1", 422),
        ("/admin/exemptions?size=500", 422),
    ):
        assert admin.get(path).status_code == status, path
    token = csrf(admin.get("/admin/notices").text)
    before = table_digest(store.engine, exclude=("portal_session",))
    for path, form, status in (
        ("/admin/notices/retry", {"notice": "one"}, 422),
        ("/admin/notices/retry", {"notice": "999999"}, 409),
        ("/admin/quarantine/999999/settle", {"resolution": "merge"}, 404),
        ("/admin/devices/1/merge", {"other": ""}, 422),
        ("/admin/devices/1/merge", {"other": "serial:NOPE"}, 404),
        ("/admin/exemptions/999999/decide", {"decision": "deny", "reason": "no"}, 404),
        ("/admin/exemptions/1/decide", {"decision": "maybe", "reason": "no"}, 422),
    ):
        answer = admin.post(path, data={"csrf": token, **form})
        assert answer.status_code == status, (path, form, answer.text[-800:])
    assert table_digest(store.engine, exclude=("portal_session",)) == before
