"""The HTTP adapter: the JSON API under /v1/, health, metrics, and the embedded worker.

`appwarden.web.app.create_app(settings)` builds the application. What every request shares lives in
one `Runtime` per application (settings, engine, clock, catalog, and how to open a unit of work at
a logical time), so tests can build many independent applications in one process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from appwarden.access.service import written_devices
from appwarden.audit.models import AuditEntry
from appwarden.audit.service import chain
from appwarden.catalog.loader import load_catalog
from appwarden.catalog.model import Catalog
from appwarden.clock import Clock
from appwarden.db.migrate import is_current
from appwarden.db.uow import UnitOfWork, unit_of_work
from appwarden.settings import Settings
from appwarden.usecases.enforce import configured
from appwarden.usecases.notices import NoticeConfig
from appwarden.web.errors import ServiceUnavailable
from appwarden.wiring import build_bus

log = logging.getLogger("appwarden.web")


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    clock: Clock
    # Called after a commit that wrote decisions, with those devices (the gate's copy reloads them).
    on_decisions_written: list[Callable[[Collection[int]], None]] = field(default_factory=list)
    _schema_current: bool = field(default=False, repr=False)
    _chain_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @cached_property
    def catalog(self) -> Catalog:
        return load_catalog(self.settings.catalog_file)

    @cached_property
    def notice_config(self) -> NoticeConfig:
        settings = self.settings
        return NoticeConfig(
            catalog=self.catalog,
            domain=settings.mail_domain,
            portal_url=settings.portal_url,
            organisation=settings.organisation,
            default_time_zone=settings.default_time_zone,
        )

    def now(self) -> datetime:
        return self.clock.now()

    def require_schema(self) -> None:
        if self._schema_current:
            return
        try:
            current = is_current(self.engine)
        except DBAPIError as exc:
            raise ServiceUnavailable("the store is not reachable") from exc
        if not current:
            raise ServiceUnavailable(
                "the database schema is not current: run `appwarden db upgrade`"
            )
        self._schema_current = True

    @contextmanager
    def uow(
        self, at: datetime, *, actor: str | None = None, write: bool = True
    ) -> Iterator[UnitOfWork]:
        """A unit of work at logical time `at`, with the event reactions of `wiring`. After a
        writing one commits, the audit entries it recorded are chained."""
        self.require_schema()
        bus = build_bus(
            self.notice_config,
            webhook_url=self.settings.webhook_url,
            enforce=configured(self.settings),
            enforce_resource=self.settings.enforce_resource,
        )
        audited = False
        with unit_of_work(self.engine, now=at, bus=bus, actor=actor, write=write) as uow:
            written = written_devices(uow)
            if write:

                def _saw_audit(session: Session, *_: Any) -> None:
                    nonlocal audited
                    audited = audited or any(isinstance(o, AuditEntry) for o in session.new)

                event.listen(uow.session, "before_flush", _saw_audit)
            yield uow
        if write and written:
            for callback in self.on_decisions_written:
                callback(written)
        if audited:
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

    def close(self) -> None:
        self.engine.dispose()
