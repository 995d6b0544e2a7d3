"""Exemptions: requested with a reason, decided by someone allowed to, time-boxed, audited.

status: `requested` (changes nothing) → `approved` | `denied`; `approved` → `revoked`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from appwarden.audit.service import record
from appwarden.db.uow import UnitOfWork
from appwarden.devices.models import Device
from appwarden.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from appwarden.exemptions.models import Exemption
from appwarden.identity.models import Person
from appwarden.identity.service import find_person, require
from appwarden.policies.service import get_policy
from appwarden.vocabulary import Permission

MAX_REASON = 2000


def _reason(text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise InvalidInput("an exemption needs a reason")
    if len(text) > MAX_REASON:
        raise InvalidInput(f"the reason is longer than {MAX_REASON} characters")
    return text


def _window(starts_at: datetime | None, ends_at: datetime | None) -> None:
    if starts_at is None or ends_at is None:
        raise InvalidInput("an exemption needs --from and --until")
    if ends_at <= starts_at:
        raise InvalidInput("an exemption must end after it starts")


def _snapshot(e: Exemption) -> dict[str, Any]:
    return {
        "policy": e.policy_id,
        "person_id": e.person_id,
        "device_id": e.device_id,
        "status": e.status,
        "starts_at": e.starts_at.isoformat() if e.starts_at else None,
        "ends_at": e.ends_at.isoformat() if e.ends_at else None,
        "reason": e.reason,
    }


def _new(
    uow: UnitOfWork,
    policy_id: str,
    person: Person | None,
    device: Device | None,
    starts_at: datetime | None,
    ends_at: datetime | None,
    reason: str,
    requested_by: int,
) -> Exemption:
    get_policy(uow, policy_id)
    if (person is None) == (device is None):
        raise InvalidInput("an exemption covers either a person or a device")
    exemption = Exemption(
        policy_id=policy_id,
        person_id=person.id if person else None,
        device_id=device.id if device else None,
        starts_at=starts_at,
        ends_at=ends_at,
        reason=_reason(reason),
        status="requested",
        requested_by=requested_by,
        created_at=uow.now,
    )
    uow.session.add(exemption)
    uow.session.flush()
    return exemption


def request(
    uow: UnitOfWork,
    *,
    policy_id: str,
    person: Person | None = None,
    device: Device | None = None,
    reason: str,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
) -> Exemption:
    """An employee asks (for themselves or their device); admins may ask on someone's behalf.
    A pending request changes nothing."""
    if not uow.actor:
        raise PermissionDenied("name who is asking with --as EMAIL")
    asker = find_person(uow, uow.actor)
    if asker is None:
        raise PermissionDenied(f"{uow.actor} is not a known person")
    owner_id = person.id if person is not None else (device.owner_id if device else None)
    if owner_id != asker.id:
        require(uow, Permission.EXEMPTIONS_DECIDE)  # on someone else's behalf
    exemption = _new(uow, policy_id, person, device, starts_at, ends_at, reason, asker.id)
    record(
        uow,
        action="exemption.request",
        object_type="exemption",
        object_id=str(exemption.id),
        after=_snapshot(exemption),
    )
    return exemption


def grant(
    uow: UnitOfWork,
    *,
    policy_id: str | None = None,
    person: Person | None = None,
    device: Device | None = None,
    starts_at: datetime | None,
    ends_at: datetime | None,
    reason: str,
    request_id: int | None = None,
) -> Exemption:
    """Approve a request, or grant directly."""
    approver = require(uow, Permission.EXEMPTIONS_DECIDE)
    if request_id is not None:
        exemption = get(uow, request_id)
        if exemption.status != "requested":
            raise Conflict(f"exemption {request_id} is {exemption.status}, not requested")
        before = _snapshot(exemption)
        exemption.starts_at = starts_at or exemption.starts_at or uow.now
        exemption.ends_at = ends_at or exemption.ends_at
        _window(exemption.starts_at, exemption.ends_at)
        exemption.decision_note = (reason or "").strip() or None
    else:
        if policy_id is None:
            raise InvalidInput("name the policy")
        _window(starts_at, ends_at)
        exemption = _new(uow, policy_id, person, device, starts_at, ends_at, reason, approver.id)
        before = None
    exemption.status = "approved"
    exemption.decided_by = approver.id
    exemption.decided_at = uow.now
    uow.session.flush()
    record(
        uow,
        action="exemption.grant",
        object_type="exemption",
        object_id=str(exemption.id),
        before=before,
        after=_snapshot(exemption),
    )
    return exemption


def deny(uow: UnitOfWork, exemption_id: int, *, note: str) -> Exemption:
    approver = require(uow, Permission.EXEMPTIONS_DECIDE)
    exemption = get(uow, exemption_id)
    if exemption.status != "requested":
        raise Conflict(f"exemption {exemption_id} is {exemption.status}, not requested")
    before = _snapshot(exemption)
    exemption.status = "denied"
    exemption.decided_by = approver.id
    exemption.decided_at = uow.now
    exemption.decision_note = _reason(note)
    record(
        uow,
        action="exemption.deny",
        object_type="exemption",
        object_id=str(exemption.id),
        before=before,
        after=_snapshot(exemption),
    )
    return exemption


def revoke(uow: UnitOfWork, exemption_id: int, *, note: str) -> Exemption:
    """End an approved exemption now; the device then gets `grace` from now."""
    require(uow, Permission.EXEMPTIONS_DECIDE)
    exemption = get(uow, exemption_id)
    if exemption.status != "approved":
        raise Conflict(
            f"exemption {exemption_id} is {exemption.status}; only an approved one can be revoked"
        )
    before = _snapshot(exemption)
    exemption.status = "revoked"
    exemption.revoked_at = uow.now
    exemption.decision_note = _reason(note)
    record(
        uow,
        action="exemption.revoke",
        object_type="exemption",
        object_id=str(exemption.id),
        before=before,
        after=_snapshot(exemption),
    )
    return exemption


def holder(uow: UnitOfWork, exemption: Exemption) -> Person | None:
    """Who holds the exemption: its person, or the owner of its device."""
    person_id = exemption.person_id
    if person_id is None and exemption.device_id is not None:
        device = uow.session.get(Device, exemption.device_id)
        person_id = device.owner_id if device else None
    return uow.session.get(Person, person_id) if person_id is not None else None


def get(uow: UnitOfWork, exemption_id: int) -> Exemption:
    exemption = uow.session.get(Exemption, exemption_id)
    if exemption is None:
        raise NotFound(f"no exemption {exemption_id}")
    return exemption


def list_exemptions(uow: UnitOfWork, policy_id: str | None = None) -> list[Exemption]:
    query = select(Exemption).order_by(Exemption.id)
    if policy_id is not None:
        query = query.where(Exemption.policy_id == policy_id)
    return list(uow.session.scalars(query))


def ending_between(uow: UnitOfWork, start: datetime, end: datetime) -> list[Exemption]:
    return list(
        uow.session.scalars(
            select(Exemption).where(
                Exemption.status == "approved", Exemption.ends_at > start, Exemption.ends_at <= end
            )
        )
    )
