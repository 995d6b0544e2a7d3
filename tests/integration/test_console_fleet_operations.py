"""The admin console's use cases for devices, people and operations, on both stores: lists a
page at a time (cursors, filters, bad arguments named), the quarantine queue settled, exemptions
decided and notices retried with the CLI's permissions and audit entries, settings shown with
their origin and secrets masked.

The reference organisation (`demo`) is loaded the day before the deadline; `it.admin` is an admin,
ciso@example.com an approver (exemptions:decide), security.lead@example.com an author.
"""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest
from pydantic import SecretStr
from sqlalchemy import select, update
from tests.conftest import table_digest

from appwarden.audit.models import AuditEntry
from appwarden.audit.service import chain
from appwarden.catalog.loader import load_catalog
from appwarden.db.uow import unit_of_work
from appwarden.devices.models import Device, Quarantine
from appwarden.devices.service import find_device
from appwarden.errors import Conflict, InvalidInput, PermissionDenied
from appwarden.identity.models import Person
from appwarden.notifications.models import Notice
from appwarden.settings import Settings
from appwarden.sources.native import parse_native
from appwarden.timeutil import parse_instant
from appwarden.usecases import fleet_console as fleet
from appwarden.usecases import operations_console as operations
from appwarden.usecases.ingest import Writer, ingest
from appwarden.usecases.inventory import DeviceFilters
from appwarden.usecases.notices import NoticeConfig
from appwarden.usecases.paging import Window

NOW = parse_instant("2020-07-10T10:00:00-07:00")
ADMIN = "it.admin@example.com"
APPROVER = "ciso@example.com"
AUTHOR = "security.lead@example.com"
ERIN_TABLET = "enterprise_specific_id:ERIN-TAB-0042"
ALICE_PHONE = "udid:00008110-000A1B2C3D4E801E"
CONFIG = NoticeConfig(catalog=load_catalog(), public_url="https://appwarden.example.com")


@pytest.fixture
def organisation(store, cli, demo):
    assert cli("admin", "create", ADMIN, "--role", "admin").code == 0
    return store


def _write(store, source: str, document: dict) -> None:
    text = orjson.dumps({"format": "appwarden.inventory/v1", "source": source, **document})
    with unit_of_work(store.engine, now=NOW, actor=f"token:{source}") as uow:
        ingest(uow, parse_native(text, "x.json", strict=True), writer=Writer(source=source))


def _device_entry(*identifiers: tuple[str, str], **facts) -> dict:
    listed = [{"namespace": ns, "value": value} for ns, value in identifiers]
    return {"devices": [{"identifiers": listed, **facts}]}


@pytest.fixture
def held(organisation):
    """Erin's tablet seen by a mail agent under an identifier of its own (a second record), then
    a report naming both records: quarantined."""
    _write(
        organisation,
        "mail-agent",
        _device_entry(("eas_device_id", "E1E1E1E1"), owner="erin@example.com"),
    )
    _write(
        organisation,
        "other-mdm",
        _device_entry(("enterprise_specific_id", "ERIN-TAB-0042"), ("eas_device_id", "E1E1E1E1")),
    )
    with unit_of_work(organisation.engine, now=NOW, write=False) as uow:
        return uow.session.scalars(select(Quarantine.id)).one()


def _read(store, work, *args, **kwargs):
    with unit_of_work(store.engine, now=NOW, write=False) as uow:
        return work(uow, *args, **kwargs)


def _act(store, actor, work, *args, **kwargs):
    with unit_of_work(store.engine, now=NOW, actor=actor) as uow:
        return work(uow, *args, **kwargs)


def _all_pages(store, work, limit: int, **filters) -> list[list[dict]]:
    pages, cursor = [], None
    while True:
        listing = _read(store, work, window=Window(limit, cursor), **filters)
        pages.append(listing.rows)
        if listing.next_after is None:
            return pages
        cursor = listing.next_after


# ── people ────────────────────────────────────────────────────────────────────────────────────


def test_people_come_a_page_at_a_time_and_leavers_on_their_own(organisation):
    pages = _all_pages(organisation, fleet.people_page, 3)
    everyone = [row["email"] for page in pages for row in page]
    assert all(len(page) == 3 for page in pages[:-1])
    assert len(pages) > 2
    assert len(everyone) == len(set(everyone))
    assert "alice@example.com" in everyone
    with unit_of_work(organisation.engine, now=NOW) as uow:
        uow.session.execute(
            update(Person)
            .where(Person.email == "bob@example.com")
            .values(status="left", left_at=NOW)
        )
    leavers = _read(organisation, fleet.people_page, status="left").rows
    assert [(r["email"], r["left_at"], r["devices"]) for r in leavers] == [
        ("bob@example.com", "2020-07-10T17:00:00Z", 1)
    ]
    [alice] = _read(organisation, fleet.people_page, name="ALICE@example.com").rows
    assert alice["email"] == "alice@example.com"


def test_bad_list_arguments_are_named(organisation):
    with pytest.raises(InvalidInput) as caught:
        _read(organisation, fleet.people_page, window=Window(after="nonsense"))
    assert [p.where for p in caught.value.problems] == ["after"]
    with pytest.raises(InvalidInput) as caught:
        _read(organisation, fleet.device_list, DeviceFilters(), Window(after="12"))
    assert [p.where for p in caught.value.problems] == ["after"]
    with pytest.raises(InvalidInput) as caught:
        _read(organisation, operations.notice_page, status="lost")
    assert [p.where for p in caught.value.problems] == ["status"]
    with pytest.raises(InvalidInput) as caught:
        _read(organisation, fleet.device_list, DeviceFilters(platform="nokia"))
    assert [p.where for p in caught.value.problems] == ["platform"]


def test_devices_are_found_by_person_serial_or_identifier(organisation):
    by_person = _read(organisation, fleet.device_list, DeviceFilters(person="erin@example.com"))
    assert [r["device"] for r in by_person.rows] == [ERIN_TABLET]
    for reference in ("C02ZK1ABMD6M", "serial:C02ZK1ABMD6M"):
        [found] = _read(organisation, fleet.device_list, DeviceFilters(identifier=reference)).rows
        assert found["person"] == "alice@example.com"
    first = _read(organisation, fleet.device_list, DeviceFilters(), Window(size=2))
    rest = _read(organisation, fleet.device_list, DeviceFilters(), Window(after=first.next_after))
    ids = [r["id"] for r in first.rows + rest.rows]
    assert ids == sorted(set(ids))
    assert len(ids) == 7  # the reference organisation's devices


# ── devices, conflicts, quarantine ────────────────────────────────────────────────────────────


def test_a_device_shows_its_decisions_owners_and_history(organisation):
    with unit_of_work(organisation.engine, now=NOW, write=False) as uow:
        carol = find_device(uow, "enterprise_specific_id:CAROL-GALAXY-2210").id
    shown = _read(organisation, fleet.device_view, carol)
    assert shown["owner"]["email"] == "carol@example.com"
    assert [d["resource"] for d in shown["decisions"]] == ["email"]
    assert shown["owner_history"][0]["owner"] == "carol@example.com"
    assert shown["reports"][0]["evidence_kind"] == "inventory"
    assert {s["policy"] for s in shown["states"]} == {"tiktok-mobile-email"}


def test_a_fact_conflict_is_listed_with_its_device_and_settled_as_the_cli_does(organisation):
    _write(organisation, "mail-agent", _device_entry(("udid", ALICE_PHONE[5:]), platform="windows"))
    [conflict] = _read(organisation, fleet.conflict_page).rows
    assert conflict["fact"] == "platform"
    assert ALICE_PHONE in conflict["device"]
    from appwarden.usecases.conflicts import settle_conflict

    with pytest.raises(PermissionDenied):
        _act(organisation, APPROVER, settle_conflict, conflict["id"], accept=False)
    _act(organisation, ADMIN, settle_conflict, conflict["id"], accept=False)
    assert _read(organisation, fleet.conflict_page).rows == []
    [settled] = _read(organisation, fleet.conflict_page, show="settled").rows
    assert settled["resolution"] == "rejected"


def test_merging_a_quarantined_report_joins_its_devices_once(organisation, held):
    [row] = _read(organisation, fleet.quarantine_page).rows
    assert row["source"] == "other-mdm"
    assert [c["identifiers"] for c in row["candidates"]] == [
        [ERIN_TABLET],
        ["eas_device_id:E1E1E1E1"],
    ]
    before = table_digest(organisation.engine)
    with pytest.raises(PermissionDenied):
        _act(organisation, APPROVER, fleet.settle_quarantine, held, merge=True)
    assert table_digest(organisation.engine) == before

    outcome = _act(organisation, ADMIN, fleet.settle_quarantine, held, merge=True)
    assert outcome["resolution"] == "merged"
    assert len(outcome["merged"]) == 1
    with unit_of_work(organisation.engine, now=NOW, write=False) as uow:
        assert find_device(uow, "eas_device_id:E1E1E1E1").id == find_device(uow, ERIN_TABLET).id
        actions = [
            e.action for e in uow.session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        ]
    assert actions[-2:] == ["device.merge", "quarantine.merge"]
    assert _read(organisation, fleet.quarantine_page).rows == []
    with pytest.raises(Conflict):
        _act(organisation, ADMIN, fleet.settle_quarantine, held, merge=False)
    kept = outcome["merged"][0]
    with unit_of_work(organisation.engine, now=NOW, write=False) as uow:
        assert uow.session.get(Device, kept) is None


def test_rejecting_a_quarantined_report_keeps_both_devices(organisation, held):
    outcome = _act(organisation, ADMIN, fleet.settle_quarantine, held, merge=False)
    assert outcome == {"id": held, "resolution": "rejected", "merged": []}
    [row] = _read(organisation, fleet.quarantine_page, show="settled").rows
    assert row["resolved_at"] is not None
    with unit_of_work(organisation.engine, now=NOW, write=False) as uow:
        assert find_device(uow, "eas_device_id:E1E1E1E1").id != find_device(uow, ERIN_TABLET).id


def test_merge_from_a_devices_page_names_the_other_device(organisation):
    _write(
        organisation,
        "mail-agent",
        _device_entry(("eas_device_id", "E1E1E1E1"), owner="erin@example.com"),
    )
    with unit_of_work(organisation.engine, now=NOW, write=False) as uow:
        tablet = find_device(uow, ERIN_TABLET).id
    with pytest.raises(InvalidInput):
        _act(organisation, ADMIN, fleet.merge_into, tablet, "  ")
    merged = _act(organisation, ADMIN, fleet.merge_into, tablet, "eas_device_id:E1E1E1E1")
    assert merged["device_id"] == tablet
    history = _read(organisation, fleet.device_view, tablet)["history"]
    assert [h["action"] for h in history] == ["device.merge"]


# ── notices ───────────────────────────────────────────────────────────────────────────────────


@pytest.fixture
def notices(organisation, cli, tmp_path, monkeypatch):
    """The memo's announcements queued, the first one failed."""
    monkeypatch.setenv("APPWARDEN_MAILDIR", str(tmp_path / "mail"))
    assert cli("worker", "--once", "--at", "2020-07-10T09:01:00-07:00").code == 0
    with unit_of_work(organisation.engine, now=NOW) as uow:
        first = uow.session.scalars(select(Notice).order_by(Notice.id)).first()
        assert first is not None
        first.status, first.last_error = "failed", "550 mailbox unavailable"
        return first.id


def test_notices_list_newest_first_and_a_failed_one_is_retried(organisation, notices):
    pages = _all_pages(organisation, operations.notice_page, 2)
    ids = [row["id"] for page in pages for row in page]
    assert ids == sorted(ids, reverse=True)
    assert notices == ids[-1]
    [failed] = _read(organisation, operations.notice_page, status="failed").rows
    assert failed["last_error"] == "550 mailbox unavailable"

    before = table_digest(organisation.engine)
    with pytest.raises(PermissionDenied):
        _act(organisation, AUTHOR, operations.retry_notices, notices)
    with pytest.raises(Conflict):
        _act(organisation, ADMIN, operations.retry_notices, ids[0])
    assert table_digest(organisation.engine) == before

    assert _act(organisation, ADMIN, operations.retry_notices, notices) == 1
    assert _read(organisation, operations.notice_page, status="failed").rows == []
    [entry] = _read(organisation, operations.audit_page, action="notice.retry").rows
    assert entry["actor"] == ADMIN


# ── exemptions ────────────────────────────────────────────────────────────────────────────────


def test_an_approver_grants_a_request_with_a_reason(organisation, cli):
    asked = cli(
        "exemption", "request", "--policy", "tiktok-mobile-email", "--device", ALICE_PHONE,
        "--reason", "campaign", "--as", "alice@example.com", "--at", "2020-07-10T09:30:00-07:00",
        "--json",
    )  # fmt: skip
    assert asked.code == 0, asked.err
    request_id = asked.json()["id"]
    [queued] = _read(organisation, operations.exemption_page, status="requested").rows
    assert (queued["id"], queued["requested_by"], queued["device"][0]) == (
        request_id,
        "alice@example.com",
        ALICE_PHONE,
    )
    before = table_digest(organisation.engine)
    for actor, reason, error in (
        (AUTHOR, "fine", PermissionDenied),
        (APPROVER, "  ", InvalidInput),
    ):
        with pytest.raises(error):
            _act(
                organisation,
                actor,
                operations.decide_exemption,
                request_id,
                "grant",
                reason,
                CONFIG,
            )
    assert table_digest(organisation.engine) == before

    until = NOW + timedelta(days=20)
    granted = _act(
        organisation, APPROVER, operations.decide_exemption, request_id, "grant", "ok", CONFIG,
        until=until,
    )  # fmt: skip
    assert granted == {"id": request_id, "status": "approved", "ends_at": "2020-07-30T17:00:00Z"}
    revoked = _act(
        organisation, APPROVER, operations.decide_exemption, request_id, "revoke", "over", CONFIG
    )
    assert revoked["status"] == "revoked"
    actions = [
        r["action"] for r in _read(organisation, operations.audit_page, window=Window(2)).rows
    ]
    assert actions == ["exemption.revoke", "exemption.grant"]


# ── settings and the audit log ────────────────────────────────────────────────────────────────


def test_settings_say_where_each_value_comes_from_and_hide_secrets():
    settings = Settings(
        database_url="postgresql+psycopg://app:hunter2@db.example.com/appwarden",
        smtp_password=SecretStr("hunter3"),
        webhook_url="https://hooks.example.com/T000/SECRET",
    )
    rows = {r["variable"]: r for r in operations.settings_rows(settings)}
    assert rows["APPWARDEN_SMTP_PASSWORD"]["value"] == operations.MASKED
    assert "hunter2" not in rows["APPWARDEN_DATABASE_URL"]["value"]
    assert "db.example.com" in rows["APPWARDEN_DATABASE_URL"]["value"]
    assert "SECRET" not in rows["APPWARDEN_WEBHOOK_URL"]["value"]
    assert rows["APPWARDEN_DATABASE_URL"]["origin"] == "environment"
    assert rows["APPWARDEN_ORGANISATION"] | {"variable": None} == {
        "variable": None,
        "value": "Example Corp",
        "origin": "default",
        "secret": False,
    }
    assert rows["APPWARDEN_OIDC_CLIENT_SECRET"]["value"] == ""


def test_the_audit_log_pages_newest_first_and_verifies(organisation):
    with unit_of_work(organisation.engine, now=NOW) as uow:
        chain(uow.session)
    pages = _all_pages(organisation, operations.audit_page, 3)
    ids = [row["id"] for page in pages for row in page]
    assert ids == sorted(ids, reverse=True)
    assert len(pages) > 1
    verified = _read(organisation, operations.audit_verification)
    assert verified["ok"] is True
    assert verified["entries_checked"] == len(ids)
