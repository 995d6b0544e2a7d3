"""Which source says what: each of the seven facts is applied only from the source authoritative
for it. Another source's different value changes no state and no decision; it is held as a
conflict, listed for admins, audited when first held, and settled by an admin. The authoritative
source's write still applies.

The reference organisation's inventory comes from `mdm-export` (the MDM of record of every device
and the source of every person); carol's phone has TikTok Lite and is blocked from email after the
deadline. Each attack below would lift that block if it were applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from appwarden.audit.models import AuditEntry
from appwarden.db.uow import unit_of_work
from appwarden.devices.facts import owner_email, stored_resources
from appwarden.devices.models import Device, FactConflict, Report
from appwarden.devices.service import find_device
from appwarden.identity.service import get_person, groups_of
from appwarden.identity.tokens import create_token
from appwarden.sources.native import parse_native
from appwarden.timeutil import parse_instant
from appwarden.usecases.ingest import Writer, ingest
from appwarden.usecases.status import decision_row

CAROL_PHONE = "enterprise_specific_id:CAROL-GALAXY-2210"
LATER = "2020-07-13T12:00:00-07:00"  # past the deadline and its grace: carol is blocked
NOW = parse_instant(LATER)
ADMIN = "it.admin@example.com"


@dataclass(frozen=True)
class Attack:
    fact: str
    entry: dict[str, Any]  # what the document says (a device entry, or a people entry)
    offered: Any  # the value held
    stored: Any  # what stays stored


def _device(**facts: Any) -> dict[str, Any]:
    return {
        "devices": [
            {
                "identifiers": [
                    {"namespace": "enterprise_specific_id", "value": "CAROL-GALAXY-2210"}
                ],
                **facts,
            }
        ]
    }


ATTACKS = [
    Attack("owner", _device(owner="frank@example.com"), "frank@example.com", "carol@example.com"),
    Attack(
        "person_status",
        {"people": [{"email": "carol@example.com", "status": "left"}]},
        "left",
        "active",
    ),
    Attack(
        "person_groups",
        {"people": [{"email": "carol@example.com", "groups": []}]},
        [],
        ["sales"],
    ),
    Attack("device_status", _device(status="retired"), "retired", "active"),
    Attack("platform", _device(platform="windows"), "windows", "android"),
    Attack("form_factor", _device(form_factor="laptop"), "laptop", "phone"),
    Attack("ownership", _device(ownership="unknown"), "unknown", "personal"),
    Attack("resources", _device(resources=[]), [], ["email"]),
]


def _stored(uow, fact: str) -> Any:
    device = find_device(uow, CAROL_PHONE)
    if fact == "owner":
        return owner_email(uow, device)
    if fact == "person_status":
        return get_person(uow, "carol@example.com").status
    if fact == "person_groups":
        return sorted(groups_of(uow, get_person(uow, "carol@example.com").id))
    if fact == "resources":
        return stored_resources(uow, device)
    return getattr(device, {"device_status": "status"}.get(fact, fact))


def _write(store, source: str, entry: dict[str, Any], token_id: int | None = None) -> None:
    text = orjson.dumps({"format": "appwarden.inventory/v1", "source": source, **entry})
    batch = parse_native(text, "attack.json", strict=True)
    with unit_of_work(store.engine, now=NOW, actor=f"token:{source}") as uow:
        ingest(uow, batch, writer=Writer(token_id=token_id, source=source))


def _decision(store) -> str:
    with unit_of_work(store.engine, now=NOW, write=False) as uow:
        return str(decision_row(uow, CAROL_PHONE, "email", NOW)["decision"])


@pytest.fixture
def organisation(store, cli, demo) -> int:
    """The reference organisation, an admin, and a token bound to another source (its id)."""
    assert cli("admin", "create", ADMIN, "--role", "admin").code == 0
    with unit_of_work(store.engine, now=NOW) as uow:
        token, _ = create_token(uow, "mail-agent", ["inventory:write"], source="mail-agent")
        return token.id


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.fact for a in ATTACKS])
def test_a_fact_from_a_source_not_authoritative_for_it_is_held(store, cli, organisation, attack):
    assert _decision(store) == "deny"

    _write(store, "mail-agent", attack.entry, token_id=organisation)
    _write(store, "mail-agent", attack.entry, token_id=organisation)  # offered again: one conflict

    with unit_of_work(store.engine, now=NOW, write=False) as uow:
        assert _stored(uow, attack.fact) == attack.stored
    assert _decision(store) == "deny"  # the block stays

    listed = cli("conflicts", "--json")
    assert listed.code == 0, listed.err
    [conflict] = listed.json()
    assert conflict["fact"] == attack.fact
    assert conflict["status"] == "open"
    assert conflict["source"] == "mail-agent"
    assert conflict["token_id"] == organisation
    assert conflict["offered_value"] == attack.offered
    assert conflict["stored_value"] == attack.stored
    if attack.fact in ("person_status", "person_groups"):
        assert conflict["person"] == "carol@example.com"
    else:
        assert CAROL_PHONE in conflict["device"]
    with unit_of_work(store.engine, now=NOW, write=False) as uow:
        held = uow.session.scalars(
            select(AuditEntry).where(AuditEntry.action == "conflict.hold")
        ).all()
    assert [(e.object_id, e.after["fact"]) for e in held] == [(str(conflict["id"]), attack.fact)]

    # The MDM of record says the same thing: it is applied.
    _write(store, "mdm-export", attack.entry)
    with unit_of_work(store.engine, now=NOW, write=False) as uow:
        assert _stored(uow, attack.fact) == attack.offered


def test_a_configured_source_is_authoritative_instead_of_the_mdm_of_record(store, organisation):
    """APPWARDEN_FACT_SOURCES names the source of a fact: the HR feed decides who has left, and
    the MDM of record no longer may."""
    entry = {"people": [{"email": "carol@example.com", "status": "left"}]}
    text = orjson.dumps({"format": "appwarden.inventory/v1", "source": "mdm-export", **entry})
    writer = Writer(source="mdm-export", fact_sources={"person_status": "workday"})
    with unit_of_work(store.engine, now=NOW) as uow:
        ingest(uow, parse_native(text, "hr.json", strict=True), writer=writer)
    with unit_of_work(store.engine, now=NOW, write=False) as uow:
        assert get_person(uow, "carol@example.com").status == "active"
    text = orjson.dumps({"format": "appwarden.inventory/v1", "source": "workday", **entry})
    writer = Writer(source="workday", fact_sources={"person_status": "workday"})
    with unit_of_work(store.engine, now=NOW) as uow:
        ingest(uow, parse_native(text, "hr.json", strict=True), writer=writer)
    with unit_of_work(store.engine, now=NOW, write=False) as uow:
        assert get_person(uow, "carol@example.com").status == "left"


def test_an_admin_settles_a_conflict_accept_applies_reject_discards(store, cli, organisation):
    attacks = {attack.fact: attack for attack in ATTACKS}
    _write(store, "mail-agent", attacks["resources"].entry, token_id=organisation)  # []
    _write(store, "mail-agent", attacks["platform"].entry, token_id=organisation)  # windows
    by_fact = {c["fact"]: c["id"] for c in cli("conflicts", "--json").json()}

    refused = cli("conflicts", "settle", str(by_fact["resources"]), "--accept")
    assert refused.code == 5  # settling needs an admin: --as
    assert cli("conflicts", "settle", str(by_fact["resources"])).code == 2  # --accept or --reject

    rejected = cli("--as", ADMIN, "conflicts", "settle", str(by_fact["platform"]), "--reject")
    assert rejected.code == 0, rejected.err
    accepted = cli(
        "--as", ADMIN, "conflicts", "settle", str(by_fact["resources"]), "--accept", "--json"
    )
    assert accepted.code == 0, accepted.err
    assert accepted.json()["resolution"] == "accepted"
    assert cli("--as", ADMIN, "conflicts", "settle", str(by_fact["platform"]), "--accept").code == 4

    with unit_of_work(store.engine, now=NOW, write=False) as uow:
        device = find_device(uow, CAROL_PHONE)
        assert device.platform == "android"  # rejected: discarded
        assert stored_resources(uow, device) == []  # accepted: applied
        actions = [
            (e.action, e.actor)
            for e in uow.session.scalars(
                select(AuditEntry)
                .where(AuditEntry.action.like("conflict.%"))
                .order_by(AuditEntry.id)
            )
        ]
    assert actions[-2:] == [("conflict.reject", ADMIN), ("conflict.accept", ADMIN)]
    assert _decision(store) == "allow"  # no resource any more: out of the policy's scope
    assert cli("conflicts", "--json").json() == []
    assert len(cli("conflicts", "--all", "--json").json()) == 2


def test_a_new_device_takes_its_facts_from_whoever_reports_it_first(store, organisation):
    entry = {
        "devices": [
            {
                "identifiers": [{"namespace": "serial", "value": "NEWPHONE01"}],
                "platform": "android",
                "owner": "carol@example.com",
                "resources": ["email"],
            }
        ]
    }
    _write(store, "mail-agent", entry, token_id=organisation)
    with unit_of_work(store.engine, now=NOW, write=False) as uow:
        device = find_device(uow, "serial:NEWPHONE01")
        assert device.mdm_source == "mail-agent"
        assert device.platform == "android"
        assert owner_email(uow, device) == "carol@example.com"
        assert uow.session.scalars(select(FactConflict)).all() == []


def test_each_stored_report_keeps_the_token_that_wrote_it(store, organisation):
    report = _device(report={"evidence_kind": "inventory", "apps": []})
    _write(store, "mail-agent", report, token_id=organisation)
    _write(store, "mdm-export", report)  # a CLI import: no token
    with unit_of_work(store.engine, now=NOW, write=False) as uow:
        device_id = find_device(uow, CAROL_PHONE).id
        rows = uow.session.scalars(
            select(Report).where(Report.device_id == device_id, Report.received_at == NOW)
        ).all()
        assert sorted((r.source, r.token_id) for r in rows) == [
            ("mail-agent", organisation),
            ("mdm-export", None),
        ]
        assert uow.session.get(Device, device_id).mdm_source == "mdm-export"
