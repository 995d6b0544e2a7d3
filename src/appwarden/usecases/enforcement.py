"""What the enforcement adapters need from the store: the decision now in force for each device
and resource, with the identifiers the mail provider knows the device by."""

from __future__ import annotations

from sqlalchemy import select

from appwarden.access.models import DecisionRecord
from appwarden.db.uow import UnitOfWork
from appwarden.devices.models import Device, DeviceIdentifier
from appwarden.enforcement.exchange import ExchangeState
from appwarden.identity.models import Person
from appwarden.vocabulary import DeviceNamespace


def exchange_state(uow: UnitOfWork, *, resource: str = "email") -> list[ExchangeState]:
    """(owner's mailbox, EAS DeviceId, decision) for every device Exchange knows (an
    `eas_device_id`) that has a materialised decision for `resource`."""
    rows = uow.session.execute(
        select(Person.email, DeviceIdentifier.value, DecisionRecord.decision)
        .join(Device, Device.id == DecisionRecord.device_id)
        .join(Person, Person.id == Device.owner_id)
        .join(DeviceIdentifier, DeviceIdentifier.device_id == Device.id)
        .where(
            DecisionRecord.resource == resource,
            DeviceIdentifier.namespace == DeviceNamespace.EAS_DEVICE_ID,
        )
        .order_by(Person.email, DeviceIdentifier.value)
    )
    return [
        ExchangeState(email, value, "deny" if decision == "deny" else "allow")
        for email, value, decision in rows
    ]
