"""Exemption decisions across nouns: states and decisions follow at once, the holder is told
(at release if the version is not released yet), and a warning goes out 7 days before the end."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from appwarden.db.uow import UnitOfWork
from appwarden.devices.models import Device
from appwarden.exemptions import service as exemptions
from appwarden.exemptions.models import Exemption
from appwarden.notifications import service as outbox
from appwarden.policies.service import document_of, live_version
from appwarden.timeutil import iso
from appwarden.usecases.ingest import reevaluate_device
from appwarden.usecases.notices import NoticeConfig, released, render_notice

EXPIRY_WARNING = timedelta(days=7)


def covered_devices(uow: UnitOfWork, exemption: Exemption) -> list[Device]:
    if exemption.device_id is not None:
        device = uow.session.get(Device, exemption.device_id)
        return [device] if device else []
    return list(uow.session.scalars(select(Device).where(Device.owner_id == exemption.person_id)))


def after_decision(uow: UnitOfWork, exemption: Exemption, config: NoticeConfig) -> None:
    """Recompute what the exemption covers; tell the holder of a grant if the policy is live."""
    for device in covered_devices(uow, exemption):
        reevaluate_device(uow, device)
    if exemption.status == "approved":
        _tell(uow, exemption, config, template="exemption-granted", slot=f"granted:{exemption.id}")


def _tell(
    uow: UnitOfWork, exemption: Exemption, config: NoticeConfig, *, template: str, slot: str
) -> bool:
    version = live_version(uow, exemption.policy_id, uow.now)
    person = exemptions.holder(uow, exemption)
    if version is None or person is None or not released(version):
        return False  # announced at release (usecases.notices), never before
    doc = document_of(version)
    rendered = render_notice(
        config,
        person,
        version,
        doc,
        kind="exemption",
        template=template,
        devices=(),
        exemption_ends=exemption.ends_at,
        exemption_reason=exemption.reason,
    )
    queued = outbox.enqueue(
        uow,
        person_id=person.id,
        address=person.email,
        policy_id=exemption.policy_id,
        version_id=version.id,
        kind="exemption",
        due_slot=slot,
        due_at=uow.now,
        rendered=rendered,
        domain=config.domain,
        payload={"template": template, "exemption": exemption.id},
    )
    return queued is not None


def warn_expiring(uow: UnitOfWork, config: NoticeConfig) -> int:
    """A warning 7 days before an exemption ends (once per exemption)."""
    warned = 0
    for exemption in exemptions.ending_between(uow, uow.now, uow.now + EXPIRY_WARNING):
        slot = f"expiring:{exemption.id}"
        warned += _tell(uow, exemption, config, template="exemption-expiring", slot=slot)
    return warned


def exemption_row(exemption: Exemption) -> dict[str, Any]:
    """An exemption as the fronts print it."""
    return {
        "id": exemption.id,
        "policy": exemption.policy_id,
        "person_id": exemption.person_id,
        "device_id": exemption.device_id,
        "status": exemption.status,
        "starts_at": iso(exemption.starts_at),
        "ends_at": iso(exemption.ends_at),
        "reason": exemption.reason,
    }
