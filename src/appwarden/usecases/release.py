"""Release: record the versions whose release time has come, and bring the stored states and
decisions of the devices they touch up to date."""

from __future__ import annotations

from sqlalchemy import select

from appwarden.compliance.fleet import fleet_rows
from appwarden.compliance.models import ComplianceRecord
from appwarden.compliance.rules import rules_of
from appwarden.db.uow import UnitOfWork
from appwarden.devices.models import Device
from appwarden.events import DecisionChanged
from appwarden.policies.models import PolicyVersion
from appwarden.policies.service import settle
from appwarden.usecases.ingest import reevaluate_device


def release_due(uow: UnitOfWork) -> list[DecisionChanged]:
    released = settle(uow)
    if not released:
        return []
    device_ids: set[int] = set()
    for version in released:
        device_ids |= {
            row.device_id for row in fleet_rows(uow, rules_of(uow, version), now=uow.now)
        }
        older = select(PolicyVersion.id).where(
            PolicyVersion.policy_id == version.policy_id, PolicyVersion.id != version.id
        )
        device_ids |= set(
            uow.session.scalars(
                select(ComplianceRecord.device_id).where(ComplianceRecord.version_id.in_(older))
            )
        )
    changes: list[DecisionChanged] = []
    for device in uow.session.scalars(select(Device).where(Device.id.in_(device_ids))):
        changes += reevaluate_device(uow, device)
    return changes
