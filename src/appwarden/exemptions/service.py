"""Exemptions: time-boxed, justified, approved by someone allowed to decide them, audited."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from appwarden.audit.service import record
from appwarden.db.uow import UnitOfWork
from appwarden.devices.models import Device
from appwarden.errors import InvalidInput
from appwarden.exemptions.models import Exemption
from appwarden.identity.models import Person
from appwarden.identity.service import require
from appwarden.policies.service import get_policy
from appwarden.vocabulary import Permission


def grant(
    uow: UnitOfWork,
    *,
    policy_id: str,
    person: Person | None = None,
    device: Device | None = None,
    starts_at: datetime,
    ends_at: datetime,
    reason: str,
) -> Exemption:
    """Grant an approved exemption directly (no prior request)."""
    approver = require(uow, Permission.EXEMPTIONS_DECIDE)
    get_policy(uow, policy_id)
    if (person is None) == (device is None):
        raise InvalidInput("an exemption covers either a person or a device")
    if not reason.strip():
        raise InvalidInput("an exemption needs a reason")
    if ends_at <= starts_at:
        raise InvalidInput("an exemption must end after it starts")
    exemption = Exemption(
        policy_id=policy_id,
        person_id=person.id if person else None,
        device_id=device.id if device else None,
        starts_at=starts_at,
        ends_at=ends_at,
        reason=reason.strip(),
        status="approved",
        requested_by=approver.id,
        decided_by=approver.id,
        created_at=uow.now,
        decided_at=uow.now,
    )
    uow.session.add(exemption)
    uow.session.flush()
    record(
        uow,
        action="exemption.grant",
        object_type="exemption",
        object_id=str(exemption.id),
        after={
            "policy": policy_id,
            "person": person.email if person else None,
            "device": device.id if device else None,
            "starts_at": starts_at.isoformat(),
            "ends_at": ends_at.isoformat(),
            "reason": exemption.reason,
        },
    )
    return exemption


def list_exemptions(uow: UnitOfWork, policy_id: str | None = None) -> list[Exemption]:
    query = select(Exemption).order_by(Exemption.id)
    if policy_id is not None:
        query = query.where(Exemption.policy_id == policy_id)
    return list(uow.session.scalars(query))
