"""What every command shares: settings, the engine, the clock, the catalog, and how to open a
unit of work at a logical time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING

from appwarden.errors import Conflict, InvalidInput

# Imported where used: a command loads only what it runs (`appwarden --help` none of it).
if TYPE_CHECKING:
    from sqlalchemy import Engine

    from appwarden.catalog.model import Catalog
    from appwarden.clock import Clock
    from appwarden.db.uow import UnitOfWork
    from appwarden.settings import Settings
    from appwarden.usecases.deliver import Delivery
    from appwarden.usecases.notices import NoticeConfig
    from appwarden.wiring import Services


@dataclass
class AppContext:
    settings: Settings
    actor: str | None = None
    _checked_schema: bool = field(default=False, repr=False)

    @cached_property
    def engine(self) -> Engine:
        from appwarden.db.engine import make_engine

        return make_engine(self.settings.database_url)

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()

    @cached_property
    def clock(self) -> Clock:
        from appwarden.clock import clock_from_spec

        return clock_from_spec(self.settings.clock, env=self.settings.env)

    @cached_property
    def services(self) -> Services:
        from appwarden.wiring import Services

        return Services(self.settings, self.engine)

    @property
    def catalog(self) -> Catalog:
        return self.services.catalog

    @property
    def notice_config(self) -> NoticeConfig:
        return self.services.notice_config

    def delivery(self) -> Delivery:
        """Channels from the settings: SMTP when a host is set, else the local maildir."""
        from appwarden.usecases.deliver import delivery_from_settings

        return delivery_from_settings(self.settings, self.notice_config)

    @property
    def templates_digest(self) -> str:
        from appwarden.notifications.templates import templates_digest

        return templates_digest()

    @property
    def undo_window(self) -> timedelta:
        return timedelta(seconds=self.settings.undo_window_seconds)

    def at(self, text: str | None) -> datetime:
        """`--at T` or the clock's now. Naive times are refused."""
        if text is None:
            return self.clock.now()
        try:
            from appwarden.timeutil import parse_instant

            return parse_instant(text)
        except ValueError as exc:
            raise InvalidInput(f"--at: {exc}") from exc

    def require_schema(self) -> None:
        if self._checked_schema:
            return
        from appwarden.db.migrate import is_current

        if not is_current(self.engine):
            raise Conflict("the database schema is not current: run `appwarden db upgrade` first")
        self._checked_schema = True

    @contextmanager
    def uow(
        self, at: datetime, *, actor: str | None = None, write: bool = True
    ) -> Iterator[UnitOfWork]:
        """A unit of work at logical time `at` (`wiring.Services.uow`), as `--as` or `actor`.

        A reading one skips the wiring: nothing it does publishes, announces or audits, and
        `wiring` imports every slice, which a reading command (`decide`, `status`) would pay for
        at every start."""
        self.require_schema()
        if write:
            with self.services.uow(at, actor=actor or self.actor, write=True) as uow:
                yield uow
            return
        from appwarden.db.uow import unit_of_work

        staleness = self.settings.staleness()
        with unit_of_work(
            self.engine, now=at, actor=actor or self.actor, write=False, staleness=staleness
        ) as uow:
            yield uow
