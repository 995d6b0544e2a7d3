"""Composition: which handler reacts to which event, the complete metadata, and the services
every process front shares."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from sqlalchemy import Engine, MetaData
from sqlalchemy.exc import DBAPIError

from appwarden.access import models as _access_models  # noqa: F401 - registers tables
from appwarden.access.service import written_devices
from appwarden.audit import models as _audit_models  # noqa: F401
from appwarden.audit.service import chain, recorded
from appwarden.catalog.loader import load_catalog
from appwarden.catalog.model import Catalog
from appwarden.compliance import models as _compliance_models  # noqa: F401
from appwarden.db.base import Base
from appwarden.db.uow import UnitOfWork, unit_of_work
from appwarden.devices import models as _devices_models  # noqa: F401
from appwarden.events import DecisionChanged, DeviceEvaluated, DevicesEvaluated, EventBus
from appwarden.exemptions import models as _exemptions_models  # noqa: F401
from appwarden.identity import models as _identity_models  # noqa: F401
from appwarden.identity.models import Person
from appwarden.notifications import models as _notifications_models  # noqa: F401
from appwarden.notifications import service as outbox
from appwarden.notifications.templates import templates_digest
from appwarden.policies import models as _policies_models  # noqa: F401
from appwarden.policies.models import PolicyVersion
from appwarden.settings import Settings
from appwarden.staleness import Staleness
from appwarden.timeutil import iso
from appwarden.usecases.enforcement import configured
from appwarden.usecases.lifecycle import LifecycleRules
from appwarden.usecases.notices import (
    AUDIENCE_STATES,
    NoticeConfig,
    announce_entrant,
    announce_entrants,
    on_decision_changed,
)

log = logging.getLogger("appwarden")


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

        def announce_late_entrants_of_batch(uow: UnitOfWork, event: DevicesEvaluated) -> None:
            candidates = [
                (evaluated.owner_id, version_id)
                for evaluated in event.devices
                if evaluated.owner_id is not None
                for version_id, state in evaluated.states
                if state in AUDIENCE_STATES
            ]
            if candidates:
                announce_entrants(uow, candidates, notice_config, event.evaluations)

        bus.subscribe(DecisionChanged, notify_decision)
        bus.subscribe(DeviceEvaluated, announce_late_entrants)
        bus.subscribe(DevicesEvaluated, announce_late_entrants_of_batch)
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


class Services:
    """What one process shares, whatever its front (the CLI's `AppContext`, the server's
    `Runtime`): the settings and engine, the catalog, the notice configuration, and units of
    work wired with the event reactions above, whose audit entries are chained after commit."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        # Called after a commit that wrote decisions, with those devices (the gate's copy).
        self.on_decisions_written: list[Callable[[Collection[int]], None]] = []
        self._chain_lock = threading.Lock()

    @cached_property
    def catalog(self) -> Catalog:
        return load_catalog(self.settings.catalog_file)

    @cached_property
    def staleness(self) -> Staleness:
        return self.settings.staleness()

    @cached_property
    def notice_config(self) -> NoticeConfig:
        settings = self.settings
        return NoticeConfig(
            catalog=self.catalog,
            domain=settings.mail_domain,
            organisation=settings.organisation,
            default_time_zone=settings.default_time_zone,
            public_url=settings.public_url,
        )

    @property
    def lifecycle_rules(self) -> LifecycleRules:
        """What the steps of a version's life need (`usecases.lifecycle`), from the settings."""
        return LifecycleRules(
            catalog=self.catalog,
            templates_digest=templates_digest(),
            undo_window=timedelta(seconds=self.settings.undo_window_seconds),
            required_approvals=self.settings.required_approvals,
        )

    def bus(self) -> EventBus:
        settings = self.settings
        return build_bus(
            self.notice_config,
            webhook_url=settings.webhook_url,
            enforce=configured(settings),
            enforce_resource=settings.enforce_resource,
        )

    @contextmanager
    def uow(
        self,
        at: datetime,
        *,
        actor: str | None = None,
        write: bool = True,
        employee_only: bool = False,
    ) -> Iterator[UnitOfWork]:
        """A unit of work at logical time `at`. After a writing one commits, the devices whose
        decisions it wrote are announced and the audit entries it recorded are chained.
        `employee_only`: the actor's roles do not apply (a portal session)."""
        with unit_of_work(
            self.engine,
            now=at,
            bus=self.bus(),
            actor=actor,
            write=write,
            staleness=self.staleness,
            employee_only=employee_only,
        ) as uow:
            written = written_devices(uow)
            yield uow
        if write and written:
            for callback in self.on_decisions_written:
                callback(written)
        # `audit.service.record` marks the session (a flag, not a flush listener on every unit
        # of work: W4); a read-only unit of work's entries were rolled back.
        if write and recorded(uow.session):
            self.chain_audit(at)

    def chain_audit(self, at: datetime) -> None:
        """Chain pending audit entries. One appender per process; if another process chains
        at the same moment, the loser leaves its entries for the next chain (nothing is lost:
        unchained entries stay in insertion order)."""
        with self._chain_lock:
            try:
                with unit_of_work(self.engine, now=at) as chainer:
                    chain(chainer.session)
            except DBAPIError:
                log.warning("audit chaining deferred: another appender was chaining")
