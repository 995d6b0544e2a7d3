"""Fact conflicts for admins: list them, and settle one (accept applies the offered value and
re-evaluates what it touches; reject discards it). Both are audited (devices/facts.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from appwarden.db.uow import UnitOfWork
from appwarden.devices import facts
from appwarden.devices.models import Device
from appwarden.events import DecisionChanged
from appwarden.identity.service import require
from appwarden.usecases.ingest import reevaluate_device
from appwarden.vocabulary import Permission


def conflict_rows(uow: UnitOfWork, *, include_settled: bool = False) -> list[dict[str, Any]]:
    """Each conflict with the device's identifiers or the person's email, for reading."""
    from appwarden.devices.service import device_identifiers
    from appwarden.identity.models import Person

    rows = facts.list_conflicts(uow, include_settled=include_settled)
    identifiers = device_identifiers(uow, {c.device_id for c in rows if c.device_id is not None})
    out = []
    for conflict in rows:
        row = facts.conflict_json(conflict)
        row["device"] = identifiers.get(conflict.device_id, []) if conflict.device_id else None
        person = uow.session.get(Person, conflict.person_id) if conflict.person_id else None
        row["person"] = person.email if person is not None else None
        out.append(row)
    return out


def settle_conflict(
    uow: UnitOfWork, conflict_id: int, *, accept: bool
) -> tuple[dict[str, Any], list[DecisionChanged]]:
    """Settle one open conflict as the admin named by `uow.actor` (needs `admin`)."""
    require(uow, Permission.ADMIN)
    conflict = facts.settle(uow, conflict_id, accept=accept)
    changes: list[DecisionChanged] = []
    if accept:
        if conflict.device_id is not None:
            devices = [uow.session.get(Device, conflict.device_id)]
        else:
            devices = list(
                uow.session.scalars(select(Device).where(Device.owner_id == conflict.person_id))
            )
        for device in devices:
            if device is not None:
                changes += reevaluate_device(uow, device)
    return facts.conflict_json(conflict), changes
