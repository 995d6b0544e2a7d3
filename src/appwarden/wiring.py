"""Composition: which handler reacts to which event, and the complete metadata."""

from __future__ import annotations

from typing import Any

from sqlalchemy import MetaData

from appwarden.access import models as _access_models  # noqa: F401 - registers tables
from appwarden.audit import models as _audit_models  # noqa: F401
from appwarden.compliance import models as _compliance_models  # noqa: F401
from appwarden.db.base import Base
from appwarden.db.uow import UnitOfWork
from appwarden.devices import models as _devices_models  # noqa: F401
from appwarden.events import DecisionChanged, DeviceEvaluated, EventBus
from appwarden.exemptions import models as _exemptions_models  # noqa: F401
from appwarden.identity import models as _identity_models  # noqa: F401
from appwarden.identity.models import Person
from appwarden.notifications import models as _notifications_models  # noqa: F401
from appwarden.notifications import service as outbox
from appwarden.policies import models as _policies_models  # noqa: F401
from appwarden.policies.models import PolicyVersion
from appwarden.timeutil import iso
from appwarden.usecases.notices import (
    AUDIENCE_STATES,
    NoticeConfig,
    announce_entrant,
    on_decision_changed,
)


def metadata() -> MetaData:
    return Base.metadata


def build_bus(
    config: NoticeConfig | None = None,
    *,
    webhook_url: str | None = None,
    enforce: tuple[str, ...] = (),
    enforce_resource: str = "email",
) -> EventBus:
    """Every in-process reaction to a domain event is registered here. Reactions run inside the
    unit of work of their cause; what leaves the building goes through the outbox."""
    bus = EventBus()
    if config is not None:
        notice_config = config

        def notify_decision(uow: UnitOfWork, event: DecisionChanged) -> None:
            on_decision_changed(uow, event, notice_config)

        def announce_late_entrants(uow: UnitOfWork, event: DeviceEvaluated) -> None:
            if event.owner_id is None:
                return
            person = uow.session.get(Person, event.owner_id)
            for version_id, state in event.states:
                if state in AUDIENCE_STATES and person is not None:
                    version = uow.session.get(PolicyVersion, version_id)
                    if version is not None:
                        announce_entrant(uow, person, version, notice_config)

        bus.subscribe(DecisionChanged, notify_decision)
        bus.subscribe(DeviceEvaluated, announce_late_entrants)
    if webhook_url:
        url = webhook_url

        def decision_webhook(uow: UnitOfWork, event: DecisionChanged) -> None:
            body: dict[str, Any] = {
                "device_id": event.device_id,
                "resource": event.resource,
                "old": event.old,
                "new": event.new,
                "causes": list(event.causes),
                "at": iso(event.at),
            }
            key = f"decision/{event.device_id}/{event.resource}/{iso(event.at)}/{event.new}"
            outbox.enqueue_webhook(
                uow, url=url, event_type="decision.changed", event_key=key, body=body
            )

        bus.subscribe(DecisionChanged, decision_webhook)
    if enforce:
        providers = enforce

        def tell_providers(uow: UnitOfWork, event: DecisionChanged) -> None:
            if event.resource != enforce_resource:
                return
            body: dict[str, Any] = {
                "device_id": event.device_id,
                "resource": event.resource,
                "new": event.new,
                "at": iso(event.at),
            }
            for provider in providers:
                key = f"{provider}/{event.device_id}/{event.resource}/{iso(event.at)}/{event.new}"
                outbox.enqueue_webhook(
                    uow, url=provider, event_type=provider, event_key=key, body=body
                )

        bus.subscribe(DecisionChanged, tell_providers)
    return bus
