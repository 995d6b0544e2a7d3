"""What every import source shares, whatever its format (docs/sources/README.md): owners outside
the organisation's domains, retirements a source reports (and too many at once), and a mail
partnership no identifier joins, waiting for an admin's merge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from tests.conftest import table_digest

from appwarden.audit.models import AuditEntry
from appwarden.db.uow import unit_of_work
from appwarden.devices.models import Device, FactConflict
from appwarden.devices.service import find_device
from appwarden.timeutil import parse_instant

AT = "2026-03-04T00:00:00Z"


def _write(path: Path, source: str, devices: list[dict[str, Any]], people: Any = ()) -> str:
    document = {
        "format": "appwarden.inventory/v1",
        "source": source,
        "people": list(people),
        "devices": devices,
    }
    path.write_text(json.dumps(document))
    return str(path)


def _phone(serial: str, **facts: Any) -> dict[str, Any]:
    return {
        "identifiers": [{"namespace": "serial", "value": serial}],
        "platform": "android",
        "form_factor": "phone",
        "ownership": "corporate",
        "report": {"evidence_kind": "inventory", "observed_at": "2026-03-03T00:00:00Z", "apps": []},
        **facts,
    }


def _device(store, reference: str) -> Device:
    with unit_of_work(store.engine, now=parse_instant(AT)) as uow:
        device = find_device(uow, reference)
        uow.session.expunge(device)
        return device


def test_an_owner_outside_the_organisation_leaves_the_device_unowned_and_listed(
    cli, store, tmp_path, monkeypatch
):
    monkeypatch.setenv("APPWARDEN_ORGANISATION_DOMAINS", "example.com")
    people = [{"email": "friend@gmail.com", "display_name": "A Friend"}]
    devices = [
        _phone("SERIAL0001", owner="Alice@Example.com"),
        _phone("SERIAL0002", owner="friend@gmail.com"),
    ]
    result = cli("import", "native", _write(tmp_path / "a.json", "mdm", devices, people),
                 "--at", AT, "--json")  # fmt: skip
    assert result.code == 0, result.err
    (summary,) = result.json()
    assert summary["outside_domains"] == ["friend@gmail.com", "friend@gmail.com"]
    assert summary["people"] == 0  # the gmail entry made nobody; alice was made as an owner
    assert _device(store, "serial:SERIAL0002").owner_id is None
    assert _device(store, "serial:SERIAL0002").unmatched_owner == "friend@gmail.com"
    assert _device(store, "serial:SERIAL0001").owner_id is not None
    shown = cli("status", "--json", "--at", AT)
    assert "friend@gmail.com" not in shown.out


def test_an_outside_address_that_is_a_known_alias_matches_its_person(cli, store, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    monkeypatch.setenv("APPWARDEN_ORGANISATION_DOMAINS", "example.com")
    people = [{"email": "alice@example.com", "aliases": ["alice@corp-old.net"],
               "accounts": ["alice@corp.example"]}]  # fmt: skip
    first = _write(tmp_path / "p.json", "mdm", [], people)
    assert cli("import", "native", first, "--at", AT).code == 0
    devices = [
        _phone("SERIAL0003", owner="ALICE@corp-old.net"),
        _phone("SERIAL0004", owner="alice@corp.example"),  # an account name (a UPN)
    ]
    result = cli("import", "native", _write(tmp_path / "d.json", "mdm", devices), "--at", AT)
    assert result.code == 0, result.err
    owners = {_device(store, f"serial:{s}").owner_id for s in ("SERIAL0003", "SERIAL0004")}
    assert len(owners) == 1
    assert None not in owners


def _fleet(tmp_path: Path, count: int, retired: int, name: str) -> str:
    devices = [
        _phone(f"FLEET{i:05d}", status="retired" if i < retired else "active") for i in range(count)
    ]
    return _write(tmp_path / name, "mdm", devices)


def test_a_source_that_reports_a_deletion_retires_the_device_and_seen_again_it_returns(
    cli, store, tmp_path
):
    assert cli("import", "native", _fleet(tmp_path, 3, 0, "a.json"), "--at", AT).code == 0
    assert cli("import", "native", _fleet(tmp_path, 3, 1, "b.json"), "--at", AT).code == 0
    assert _device(store, "serial:FLEET00000").status == "retired"
    assert _device(store, "serial:FLEET00001").status == "active"
    assert cli("import", "native", _fleet(tmp_path, 3, 0, "c.json"), "--at", AT).code == 0
    assert _device(store, "serial:FLEET00000").status == "active"


def test_retiring_too_many_of_a_sources_devices_at_once_is_held_for_an_admin(cli, store, tmp_path):
    assert cli("import", "native", _fleet(tmp_path, 120, 0, "a.json"), "--at", AT).code == 0
    # 51 of 120 is over both the floor (50) and 5 %: every one of them is held.
    result = cli("import", "native", _fleet(tmp_path, 120, 51, "b.json"), "--at", AT, "--json")
    assert result.code == 0, result.err
    assert result.json()[0]["retirements_held"] == 51
    assert _device(store, "serial:FLEET00000").status == "active"
    with unit_of_work(store.engine, now=parse_instant(AT)) as uow:
        held = uow.session.scalars(
            select(FactConflict).where(FactConflict.fact == "device_status")
        ).all()
        assert len(held) == 51
        assert {c.offered_value for c in held} == {"retired"}
        audit = uow.session.scalars(
            select(AuditEntry).where(AuditEntry.action == "retirement.hold")
        ).all()
        assert [a.object_id for a in audit] == ["mdm"]
    listed = cli("conflicts", "--json").json()
    first = next(c for c in listed if c["device"] == ["serial:FLEET00000"])
    assert cli("admin", "create", "root@example.com", "--role", "admin").code == 0
    settled = cli("--as", "root@example.com", "conflicts", "settle", str(first["id"]), "--accept")
    assert settled.code == 0, settled.err
    assert _device(store, "serial:FLEET00000").status == "retired"
    # 50 at once is within the floor: applied.
    assert cli("import", "native", _fleet(tmp_path, 120, 50, "c.json"), "--at", AT).code == 0
    assert _device(store, "serial:FLEET00049").status == "retired"


ERIN_TABLET = "enterprise_specific_id:ERIN-TAB-0042"
PARTNERSHIP = "eas_device_id:E41A00000000000000000000000000E1"
ADMIN = "it.admin@example.com"
AFTER_MEMO = "2020-07-10T10:00:00-07:00"


def _partnership(tmp_path: Path) -> str:
    """erin's phone as Exchange sees it: a DeviceId, an owner, mail; no app list."""
    device = {
        "identifiers": [{"namespace": "eas_device_id", "value": PARTNERSHIP.split(":")[1]}],
        "platform": "android",
        "form_factor": "phone",
        "owner": "erin@example.com",
        "resources": ["email"],
        "report": {"evidence_kind": "none"},
    }
    return _write(tmp_path / "exchange.json", "exchange", [device])


def _notices_to(cli, email: str) -> list[dict[str, Any]]:
    rows = cli("notices", "--json").json()
    return [n for n in rows if n["address"] == email]


def test_a_partnership_no_identifier_joins_waits_for_an_admins_merge(demo, cli, store, tmp_path):
    imported = cli("import", "native", _partnership(tmp_path), "--at", AFTER_MEMO)
    assert imported.code == 0, imported.err
    (waiting,) = cli("devices", "unjoined", "--json", "--at", AFTER_MEMO).json()
    assert waiting["identifiers"] == [PARTNERSHIP]
    assert waiting["owner"] == "erin@example.com"
    assert [c["identifiers"] for c in waiting["candidates"]] == [[ERIN_TABLET]]
    assert _notices_to(cli, "erin@example.com") == []  # it announces nobody while it waits

    assert cli("admin", "create", ADMIN, "--role", "admin").code == 0
    merged = cli("--as", ADMIN, "devices", "merge", ERIN_TABLET, PARTNERSHIP, "--json",
                 "--at", AFTER_MEMO)  # fmt: skip
    assert merged.code == 0, merged.err
    body = merged.json()
    assert body["identifiers"] == [PARTNERSHIP, ERIN_TABLET]
    assert body["resources"] == ["email"]
    assert body["sources"] == ["exchange", "mdm-export"]
    assert cli("devices", "unjoined", "--json").json() == []
    # The tablet now reaches mail with TikTok on it: erin is in scope and is told.
    (row,) = cli("status", "--device", PARTNERSHIP, "--at", AFTER_MEMO, "--json").json()
    assert row["state"] == "action_required"
    assert _notices_to(cli, "erin@example.com")
    with unit_of_work(store.engine, now=parse_instant(AFTER_MEMO)) as uow:
        (entry,) = uow.session.scalars(
            select(AuditEntry).where(AuditEntry.action == "device.merge")
        ).all()
        assert entry.actor == ADMIN


def test_a_partnership_waits_seven_days_at_most(demo, cli, tmp_path):
    assert cli("import", "native", _partnership(tmp_path), "--at", AFTER_MEMO).code == 0
    (waiting,) = cli("devices", "unjoined", "--json").json()
    assert waiting["waits_until"] == "2020-07-17T17:00:00Z"


@pytest.mark.parametrize(
    ("keep", "other", "why"),
    [
        (ERIN_TABLET, "enterprise_specific_id:BOB-PIXEL-7731", "belong to different people"),
        (ERIN_TABLET, ERIN_TABLET, "the same device"),
    ],
)
def test_a_merge_that_cannot_be_right_is_refused_and_changes_nothing(
    demo, cli, store, keep, other, why
):
    assert cli("admin", "create", ADMIN, "--role", "admin").code == 0
    before = table_digest(store.engine)
    refused = cli("--as", ADMIN, "devices", "merge", keep, other)
    assert refused.code != 0
    assert why in refused.err
    assert table_digest(store.engine) == before


def test_only_an_admin_merges(demo, cli, store, tmp_path):
    assert cli("import", "native", _partnership(tmp_path), "--at", AFTER_MEMO).code == 0
    assert cli("admin", "create", "viewer@example.com", "--role", "viewer").code == 0
    before = table_digest(store.engine)
    refused = cli("--as", "viewer@example.com", "devices", "merge", ERIN_TABLET, PARTNERSHIP)
    assert refused.code != 0
    assert "lacks the permission admin" in refused.err
    assert table_digest(store.engine) == before


SOURCES = Path(__file__).resolve().parents[1] / "fixtures" / "sources"
VENDOR_PAGES = {
    "osquery": ["event_line.log"],
    "fleet": ["hosts_page.json"],
    "intune": ["managed-devices.json", "detected-apps.json"],
    "apple-mdm": ["envelope.json"],
    "amapi": ["formats-device.json"],
    "google": ["formats-page.json"],
    "jamf": ["computers_inventory.json"],
    "exchange": ["formats-device.json"],
}


@pytest.mark.parametrize("source", VENDOR_PAGES)
def test_importing_the_same_pages_twice_changes_nothing(demo, cli, store, source):
    pages = [str(SOURCES / source / name) for name in VENDOR_PAGES[source]]
    first = cli("import", source, *pages, "--at", AT, "--json")
    assert first.code == 0, first.err
    assert sum(r["devices"] for r in first.json()) >= 1
    before = table_digest(store.engine)
    again = cli("import", source, *pages, "--at", AT, "--json")
    assert again.code == 0, again.err
    assert sum(r["reports_repeated"] for r in again.json()) == sum(
        r["reports_applied"] for r in first.json()
    )
    assert table_digest(store.engine) == before
