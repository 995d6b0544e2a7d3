"""Joining what no identifier joins: an admin merges two device records that are one device.

The case it exists for: an Android phone managed through the Android Management API and its
Exchange mail partnership share no identifier (AMAPI never sees the ActiveSync DeviceId), so the
partnership arrives as a device of its own. It waits (`Device.join_pending_until`), announcing
nobody, until an admin merges it into the phone (`appwarden devices merge PHONE PARTNERSHIP`) or
seven days pass (docs/sources/README.md).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update

from appwarden.audit.service import record
from appwarden.db.uow import UnitOfWork
from appwarden.devices.facts import set_owner, set_resources, stored_resources
from appwarden.devices.models import (
    Coverage,
    Device,
    DeviceIdentifier,
    DeviceOwnerHistory,
    DeviceSource,
    FactConflict,
    Observation,
    Report,
)
from appwarden.devices.service import device_identifiers, find_device
from appwarden.errors import Conflict, InvalidInput
from appwarden.events import DecisionChanged
from appwarden.exemptions.models import Exemption
from appwarden.identity.models import Person
from appwarden.identity.service import require
from appwarden.policies.models import PolicyFirstSeen
from appwarden.timeutil import iso
from appwarden.usecases.ingest import reevaluate_device
from appwarden.vocabulary import DeviceStatus, Permission

# Rows that belong to a device and move with it (the computed states and decisions of the
# merged-away record are dropped with it and computed afresh for the one kept).
_MOVED = (
    DeviceIdentifier,
    Report,
    Observation,
    Coverage,
    DeviceOwnerHistory,
    FactConflict,
    Exemption,
    DeviceSource,  # the sync runs that listed it: the merged device is not absent from them
)


def merge_devices(uow: UnitOfWork, keep_ref: str, other_ref: str) -> dict[str, Any]:
    """Merge the device `other_ref` names into the one `keep_ref` names, audited; returns the
    kept device's summary. Refused (nothing changes) when they are one record, have different
    owners, or both carry reports from one source (then they are two devices). Needs `admin`."""
    require(uow, Permission.ADMIN)
    keep, other = find_device(uow, keep_ref), find_device(uow, other_ref)
    _check_mergeable(uow, keep, other)
    before = {"kept": _summary(uow, keep), "merged": _summary(uow, other)}
    for model in _MOVED:
        uow.session.execute(
            update(model)
            .where(model.device_id == other.id)
            .values(device_id=keep.id)
            .execution_options(synchronize_session=False)
        )
    _move_first_seen(uow, keep, other)
    _take_missing_facts(uow, keep, other)
    set_resources(
        uow, keep, sorted(set(stored_resources(uow, keep)) | set(stored_resources(uow, other)))
    )
    keep.join_pending_until = None
    uow.session.flush()
    uow.session.expire_all()
    uow.session.execute(delete(Device).where(Device.id == other.id))
    uow.session.flush()
    kept = uow.session.get(Device, keep.id)
    assert kept is not None
    changes: list[DecisionChanged] = reevaluate_device(uow, kept)
    after = _summary(uow, kept)
    record(
        uow,
        action="device.merge",
        object_type="device",
        object_id=str(kept.id),
        before=before,
        after={**after, "decision_changes": len(changes)},
    )
    return after


def _check_mergeable(uow: UnitOfWork, keep: Device, other: Device) -> None:
    if keep.id == other.id:
        raise InvalidInput("both references name the same device: nothing to merge")
    if None not in (keep.owner_id, other.owner_id) and keep.owner_id != other.owner_id:
        raise Conflict(
            f"device {keep.id} and device {other.id} belong to different people: they are "
            "not one device (fix the owner first if a source got it wrong)"
        )
    shared = set(_sources(uow, keep)) & set(_sources(uow, other))
    if shared:
        raise Conflict(
            f"device {keep.id} and device {other.id} both have reports from "
            f"{', '.join(sorted(shared))}: one source sees them as two devices"
        )


def _sources(uow: UnitOfWork, device: Device) -> list[str]:
    return list(uow.session.scalars(select(Report.source).where(Report.device_id == device.id)))


def _move_first_seen(uow: UnitOfWork, keep: Device, other: Device) -> None:
    """The earliest sighting of a violation on either record holds for the merged device."""
    kept = {
        row.policy_id: row
        for row in uow.session.scalars(
            select(PolicyFirstSeen).where(PolicyFirstSeen.device_id == keep.id)
        )
    }
    for row in uow.session.scalars(
        select(PolicyFirstSeen).where(PolicyFirstSeen.device_id == other.id)
    ):
        mine = kept.get(row.policy_id)
        if mine is None:
            uow.session.add(
                PolicyFirstSeen(
                    policy_id=row.policy_id, device_id=keep.id, first_seen_at=row.first_seen_at
                )
            )
        elif row.first_seen_at < mine.first_seen_at:
            mine.first_seen_at = row.first_seen_at


def _take_missing_facts(uow: UnitOfWork, keep: Device, other: Device) -> None:
    """What the kept record does not know yet, the other one may (an owner, a platform)."""
    for attribute in ("platform", "form_factor", "ownership"):
        if getattr(keep, attribute) == "unknown":
            setattr(keep, attribute, getattr(other, attribute))
    if keep.owner_id is None and other.owner_id is not None:
        owner = uow.session.get(Person, other.owner_id)
        assert owner is not None
        set_owner(uow, keep, owner)
    keep.name = keep.name or other.name
    if other.status == DeviceStatus.ACTIVE and keep.status != DeviceStatus.ACTIVE:
        keep.status, keep.retired_at = DeviceStatus.ACTIVE, None
    if other.first_report_at is not None and (
        keep.first_report_at is None or other.first_report_at < keep.first_report_at
    ):
        keep.first_report_at = other.first_report_at


def _summary(uow: UnitOfWork, device: Device) -> dict[str, Any]:
    owner = uow.session.get(Person, device.owner_id) if device.owner_id is not None else None
    return {
        "device_id": device.id,
        "identifiers": device_identifiers(uow, [device.id]).get(device.id, []),
        "owner": owner.email if owner is not None else None,
        "platform": device.platform,
        "resources": stored_resources(uow, device),
        "sources": sorted(set(_sources(uow, device))),
    }


def unjoined_partnerships(uow: UnitOfWork) -> list[dict[str, Any]]:
    """Mail partnerships waiting for a merge, each with the devices of the same person it could
    be (same platform or an unknown one, no ActiveSync DeviceId of their own)."""
    rows = []
    for device in uow.session.scalars(
        select(Device).where(Device.join_pending_until.is_not(None)).order_by(Device.id)
    ):
        row = _summary(uow, device)
        row["waits_until"] = iso(device.join_pending_until)
        row["candidates"] = _candidates(uow, device)
        rows.append(row)
    return rows


def _candidates(uow: UnitOfWork, partnership: Device) -> list[dict[str, Any]]:
    if partnership.owner_id is None:
        return []
    with_eas = select(DeviceIdentifier.device_id).where(
        DeviceIdentifier.namespace == "eas_device_id"
    )
    devices = uow.session.scalars(
        select(Device)
        .where(
            Device.owner_id == partnership.owner_id,
            Device.id != partnership.id,
            Device.status == DeviceStatus.ACTIVE,
            Device.id.not_in(with_eas),
        )
        .order_by(Device.id)
    )
    return [
        _summary(uow, d)
        for d in devices
        if "unknown" in (d.platform, partnership.platform) or d.platform == partnership.platform
    ]
