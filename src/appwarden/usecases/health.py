"""Source health (docs/sources/README.md, "Source health"): for each source the store knows —
one with sync runs, one a setting names, one that is some device's MDM of record — its last
complete run and its age, its last run and that run's error, how many devices it is the MDM of
record of, its staleness bound and whether it is stale. What `appwarden sources`, `/metrics`
and the worker's staleness warning all read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from appwarden.db.uow import UnitOfWork
from appwarden.devices.runs import Reader, Run, devices_by_source, last_run, run_sources
from appwarden.staleness import Staleness, is_stale
from appwarden.timeutil import format_duration, iso


@dataclass(frozen=True, slots=True)
class SourceHealth:
    source: str
    devices: int
    watched: bool  # it has runs or a setting names it: only then can it be stale
    stale_after: timedelta
    stale_after_from: str  # stale_after, interval or default
    stale: bool
    last_complete: Run | None
    last: Run | None

    @property
    def last_complete_at(self) -> datetime | None:
        return self.last_complete.ended_at if self.last_complete else None

    def age(self, now: datetime) -> timedelta | None:
        at = self.last_complete_at
        return None if at is None else now - at

    def to_json(self, now: datetime) -> dict[str, Any]:
        age = self.age(now)
        return {
            "source": self.source,
            "devices": self.devices,
            "watched": self.watched,
            "stale": self.stale,
            "stale_after": format_duration(self.stale_after),
            "stale_after_from": self.stale_after_from,
            "last_complete_at": iso(self.last_complete_at),
            "age_seconds": None if age is None else int(age.total_seconds()),
            "last_complete_run": _run_json(self.last_complete),
            "last_run": _run_json(self.last),
            "last_error": self.last.error if self.last else None,
        }


def _run_json(run: Run | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "id": run.id,
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "complete": run.complete,
        "pages": run.pages,
        "reports": run.reports,
        "devices": run.devices,
        "error": run.error,
        "runner": run.runner,
    }


def source_health(
    reader: Reader, staleness: Staleness, now: datetime, *, with_devices: bool = True
) -> list[SourceHealth]:
    """Every source the store or the settings know, by name. `with_devices=False` skips the
    per-source device counts (the one read that grows with the fleet) and the sources known
    only as some device's MDM of record, which are never stale."""
    counts = devices_by_source(reader) if with_devices else {}
    names = sorted(set(counts) | set(run_sources(reader)) | staleness.configured_sources)
    found = []
    for name in names:
        last = last_run(reader, name)
        complete = last if last is not None and last.complete else None
        if last is not None and complete is None:
            complete = last_run(reader, name, complete=True)
        watched = staleness.configured(name) or last is not None
        bound = staleness.bound(name)
        ended = complete.ended_at if complete else None
        found.append(
            SourceHealth(
                source=name,
                devices=counts.get(name, 0),
                watched=watched,
                stale_after=bound,
                stale_after_from=staleness.bound_from(name),
                stale=is_stale(watched=watched, last_complete_at=ended, bound=bound, now=now),
                last_complete=complete,
                last=last,
            )
        )
    return found


def health_rows(uow: UnitOfWork) -> list[dict[str, Any]]:
    """`appwarden sources --json`: every source at the unit of work's time."""
    return [h.to_json(uow.now) for h in source_health(uow.session, uow.staleness, uow.now)]


def stale_sources(uow: UnitOfWork) -> list[SourceHealth]:
    """The watched sources that are stale now (the worker warns of each, every pass)."""
    health = source_health(uow.session, uow.staleness, uow.now, with_devices=False)
    return [h for h in health if h.stale]


def health_on(engine: Engine, staleness: Staleness, now: datetime) -> list[SourceHealth]:
    """Source health read on a connection of its own (a scrape is no request's transaction);
    raises the store's error when it does not answer."""
    with engine.connect().execution_options(appwarden_write=False) as connection:
        return source_health(connection, staleness, now)
