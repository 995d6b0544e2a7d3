"""What every import source shares, whatever its format (docs/sources/README.md): owners outside
the organisation's domains, retirements a source reports (and too many at once), and a mail
partnership no identifier joins, waiting for an admin's merge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

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
