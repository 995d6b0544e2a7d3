"""The HTTP adapter: the JSON API under /v1/, health, metrics, and the embedded worker.

`appwarden.web.app.create_app(settings)` builds the application. What every request shares lives in
one `Runtime` per application (settings, engine, clock, catalog, and how to open a unit of work at
a logical time), so tests can build many independent applications in one process.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from ipaddress import IPv4Network, IPv6Network, ip_network

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from appwarden.catalog.model import Catalog
from appwarden.clock import Clock
from appwarden.db.migrate import is_current
from appwarden.db.uow import UnitOfWork
from appwarden.settings import Settings
from appwarden.usecases.notices import NoticeConfig
from appwarden.usecases.sign_in import SessionRules
from appwarden.web.errors import ServiceUnavailable
from appwarden.wiring import Services


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    clock: Clock
    _schema_current: bool = field(default=False, repr=False)

    @cached_property
    def services(self) -> Services:
        return Services(self.settings, self.engine)

    @cached_property
    def session_rules(self) -> SessionRules:
        return SessionRules.from_settings(self.settings)

    @cached_property
    def trusted_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        """APPWARDEN_TRUSTED_PROXIES as networks (web.sessions.client_address)."""
        return tuple(ip_network(p, strict=False) for p in self.settings.trusted_proxies)

    @property
    def catalog(self) -> Catalog:
        return self.services.catalog

    @property
    def notice_config(self) -> NoticeConfig:
        return self.services.notice_config

    @property
    def on_decisions_written(self) -> list[Callable[[Collection[int]], None]]:
        return self.services.on_decisions_written

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
        self,
        at: datetime,
        *,
        actor: str | None = None,
        write: bool = True,
        employee_only: bool = False,
    ) -> Iterator[UnitOfWork]:
        """A unit of work at logical time `at` (`wiring.Services.uow`), once the schema is
        known to be current. `employee_only`: the actor's roles do not apply (the portal)."""
        self.require_schema()
        with self.services.uow(at, actor=actor, write=write, employee_only=employee_only) as uow:
            yield uow

    def chain_audit(self, at: datetime) -> None:
        self.services.chain_audit(at)

    def close(self) -> None:
        self.engine.dispose()
