"""One transaction per use case, owned by the caller.

    with unit_of_work(engine, clock=clock, bus=bus) as uow:
        ingest(uow, batch)

Services flush, never commit. Events published on `uow.bus` run inside the same transaction; work
registered with `uow.after_commit` (waking a worker, say) runs only once the commit succeeded;
`uow.before_commit` work runs after the last flush, inside the transaction, as its final statements.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from appwarden.db.ids import StoreSession
from appwarden.events import EventBus
from appwarden.staleness import Staleness

_Kept = TypeVar("_Kept")


@dataclass
class UnitOfWork:
    session: Session
    now: datetime
    bus: EventBus
    actor: str | None = None
    # When each inventory source counts as stale (the settings'): the breaker holds the denies
    # a stale source would cause (access/breaker.py).
    staleness: Staleness = field(default_factory=Staleness)
    # The actor acts as an employee only (a portal session, or one opened by an email link):
    # none of their roles applies, so `identity.service.require` refuses every permission.
    employee_only: bool = False
    _before_commit: list[Callable[[], None]] = field(default_factory=list)
    _after_commit: list[Callable[[], None]] = field(default_factory=list)
    _kept: dict[str, Any] = field(default_factory=dict)

    def publish(self, event: Any) -> None:
        self.bus.publish(self, event)

    def before_commit(self, callback: Callable[[], None]) -> None:
        self._before_commit.append(callback)

    def after_commit(self, callback: Callable[[], None]) -> None:
        self._after_commit.append(callback)

    def kept(self, key: str, make: Callable[[], _Kept]) -> _Kept:
        """What the unit of work holds under `key` while it lasts, made on the first ask."""
        if key not in self._kept:
            self._kept[key] = make()
        return cast(_Kept, self._kept[key])

    def until_commit(
        self, key: str, make: Callable[[], _Kept], write: Callable[[_Kept], None]
    ) -> _Kept:
        """What the unit of work gathers under `key` until its commit, made on the first ask;
        `write` stores it among the transaction's last statements."""
        if key in self._kept:
            return cast(_Kept, self._kept[key])
        gathered = self.kept(key, make)
        self.before_commit(lambda: write(gathered))
        return gathered

    @property
    def dialect(self) -> str:
        return self.session.get_bind().dialect.name

    @property
    def engine(self) -> Engine:
        """The engine the unit of work's connection came from (for work on a connection of
        its own, such as `db.statistics.refresh_statistics`)."""
        bind = self.session.get_bind()
        return bind if isinstance(bind, Engine) else bind.engine


@contextmanager
def unit_of_work(
    engine: Engine,
    *,
    now: datetime,
    bus: EventBus | None = None,
    actor: str | None = None,
    write: bool = True,
    staleness: Staleness | None = None,
    employee_only: bool = False,
) -> Iterator[UnitOfWork]:
    connection = engine.connect().execution_options(appwarden_write=write)
    session = StoreSession(bind=connection, expire_on_commit=False, autoflush=True)
    uow = UnitOfWork(
        session=session,
        now=now,
        bus=bus or EventBus(),
        actor=actor,
        staleness=staleness or Staleness(),
        employee_only=employee_only,
    )
    transaction = connection.begin()
    try:
        yield uow
        session.flush()
        if write:
            for before in uow._before_commit:
                before()
            transaction.commit()
        else:
            transaction.rollback()
    except BaseException:
        transaction.rollback()
        raise
    finally:
        session.close()
        connection.close()
    for callback in uow._after_commit:
        callback()
