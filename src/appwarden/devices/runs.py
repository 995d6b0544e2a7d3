"""The store side of live syncs: runs (`source_run`), which runs listed each device
(`device_source`), who holds a source (`source_claim`), which devices a source stopped listing,
and the reads a source's health is made of (docs/sources/README.md, "Source health"). Services
flush, never commit: the caller owns the transaction (usecases/sync.py).

The health reads are an index lookup per source (`ix_source_run_source_started`,
`ix_device_mdm_source`), so a scrape of /metrics and the breaker's check of one device's source
stay cheap whatever the fleet's size. They take a Session or a plain Connection: the CLI reads in
its unit of work, a scrape on a connection of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, func, select, update
from sqlalchemy.orm import Session

from appwarden.db.chunked import one_of
from appwarden.db.uow import UnitOfWork
from appwarden.devices.models import Device, DeviceSource, SourceClaim, SourceRun
from appwarden.vocabulary import DeviceStatus

# A device is retired by absence only when this many consecutive complete runs of its MDM of
# record did not list it (one missed page, one flaky run, must not retire a device).
ABSENT_RUNS = 3
_CHUNK = 500  # ids per IN (...) list


def start_run(uow: UnitOfWork, source: str, *, runner: str | None) -> SourceRun:
    run = SourceRun(source=source, started_at=uow.now, runner=runner)
    uow.session.add(run)
    uow.session.flush()
    return run


def last_started(uow: UnitOfWork, source: str) -> datetime | None:
    """When the latest run of the source started, complete or not."""
    started: datetime | None = uow.session.scalar(
        select(func.max(SourceRun.started_at)).where(SourceRun.source == source)
    )
    return started


# ── which runs listed a device ──────────────────────────────────────────────────────────────


def mark_listed(uow: UnitOfWork, source: str, run_id: int, device_ids: Iterable[int]) -> None:
    """These devices were listed by run `run_id` (not yet complete)."""
    wanted = sorted(set(device_ids))
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        known = set(
            uow.session.scalars(
                select(DeviceSource.device_id).where(
                    DeviceSource.source == source, one_of(DeviceSource.device_id, chunk)
                )
            )
        )
        if known:
            uow.session.execute(
                update(DeviceSource)
                .where(DeviceSource.source == source, one_of(DeviceSource.device_id, sorted(known)))
                .values(listed_run_id=run_id)
            )
        uow.session.add_all(
            DeviceSource(device_id=device_id, source=source, listed_run_id=run_id)
            for device_id in chunk
            if device_id not in known
        )
    uow.session.flush()


def listed_count(uow: UnitOfWork, source: str, run_id: int) -> int:
    count = uow.session.scalar(
        select(func.count())
        .select_from(DeviceSource)
        .where(DeviceSource.source == source, DeviceSource.listed_run_id == run_id)
    )
    return int(count or 0)


def promote_listed(uow: UnitOfWork, source: str, run_id: int) -> None:
    """Run `run_id` completed: what it listed was last seen by a complete run now."""
    uow.session.execute(
        update(DeviceSource)
        .where(DeviceSource.source == source, DeviceSource.listed_run_id == run_id)
        .values(last_seen_run_id=run_id, last_seen_at=uow.now)
    )


def absent_devices(uow: UnitOfWork, source: str, *, runs: int = ABSENT_RUNS) -> list[Device]:
    """The active devices whose MDM of record is `source` and which none of its last `runs`
    complete runs listed, though they existed when the oldest of those started. Fewer complete
    runs than that: none (incomplete runs never count)."""
    last = uow.session.execute(
        select(SourceRun.id, SourceRun.started_at)
        .where(SourceRun.source == source, SourceRun.complete.is_(True))
        .order_by(SourceRun.id.desc())
        .limit(runs)
    ).all()
    if len(last) < runs:
        return []
    oldest_id, oldest_started = last[-1]
    listed_since = select(DeviceSource.device_id).where(
        DeviceSource.source == source, DeviceSource.last_seen_run_id >= oldest_id
    )
    return list(
        uow.session.scalars(
            select(Device)
            .where(
                Device.mdm_source == source,
                Device.status == DeviceStatus.ACTIVE,
                Device.created_at <= oldest_started,
                Device.id.not_in(listed_since),
            )
            .order_by(Device.id)
        )
    )


# ── claims ──────────────────────────────────────────────────────────────────────────────────


def claim(
    uow: UnitOfWork, source: str, holder: str, *, wall_now: datetime, lease: timedelta
) -> bool:
    """Take the source for `holder` until `wall_now + lease`, unless another holder's lease is
    still running. One conditional UPDATE: PostgreSQL locks the row, and a second worker's
    UPDATE waits for the first to commit, then finds the lease taken; SQLite writers are
    serialised by BEGIN IMMEDIATE."""
    _ensure_claim_row(uow, source)
    taken = uow.session.execute(
        update(SourceClaim)
        .where(
            SourceClaim.source == source,
            (SourceClaim.lease_until.is_(None)) | (SourceClaim.lease_until <= wall_now),
        )
        .values(holder=holder, claimed_at=wall_now, lease_until=wall_now + lease)
    )
    return int(taken.rowcount or 0) == 1  # type: ignore[attr-defined]


def renew(
    uow: UnitOfWork, source: str, holder: str, *, wall_now: datetime, lease: timedelta
) -> bool:
    """Extend `holder`'s claim; False when it no longer holds it (its lease ran out and another
    took the source)."""
    renewed = uow.session.execute(
        update(SourceClaim)
        .where(SourceClaim.source == source, SourceClaim.holder == holder)
        .where(SourceClaim.lease_until.is_not(None))
        .values(lease_until=wall_now + lease)
    )
    return int(renewed.rowcount or 0) == 1  # type: ignore[attr-defined]


def release(uow: UnitOfWork, source: str, holder: str) -> None:
    uow.session.execute(
        update(SourceClaim)
        .where(SourceClaim.source == source, SourceClaim.holder == holder)
        .values(lease_until=None)
    )


def holder_of(uow: UnitOfWork, source: str, *, wall_now: datetime) -> SourceClaim | None:
    """The claim on the source while its lease runs, else None."""
    held = uow.session.get(SourceClaim, source)
    if held is None or held.lease_until is None or held.lease_until <= wall_now:
        return None
    return held


def _ensure_claim_row(uow: UnitOfWork, source: str) -> None:
    # The store's own dialect (already loaded by its engine), not both at import.
    from sqlalchemy.dialects.postgresql import insert as postgresql_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    insert = postgresql_insert if uow.dialect == "postgresql" else sqlite_insert
    uow.session.execute(
        insert(SourceClaim).values(source=source).on_conflict_do_nothing(index_elements=["source"])
    )


# ── health: reading runs ─────────────────────────────────────────────────────────────────────

Reader = Session | Connection


@dataclass(frozen=True, slots=True)
class Run:
    id: int
    started_at: datetime
    finished_at: datetime | None
    complete: bool
    pages: int
    reports: int
    devices: int
    error: str | None
    runner: str | None

    @property
    def ended_at(self) -> datetime:
        """When the run's data was complete (its start if it never recorded its end)."""
        return self.finished_at or self.started_at


_RUN_COLUMNS = (
    SourceRun.id,
    SourceRun.started_at,
    SourceRun.finished_at,
    SourceRun.complete,
    SourceRun.pages,
    SourceRun.reports,
    SourceRun.devices,
    SourceRun.error,
    SourceRun.runner,
)


def last_run(reader: Reader, source: str, *, complete: bool = False) -> Run | None:
    """The source's latest run (by start), or its latest complete one."""
    query = select(*_RUN_COLUMNS).where(SourceRun.source == source)
    if complete:
        query = query.where(SourceRun.complete.is_(True))
    row = reader.execute(query.order_by(SourceRun.started_at.desc()).limit(1)).first()
    return None if row is None else Run(*row)


def last_complete_at(reader: Reader, source: str) -> datetime | None:
    run = last_run(reader, source, complete=True)
    return None if run is None else run.ended_at


def has_runs(reader: Reader, source: str) -> bool:
    query = select(SourceRun.id).where(SourceRun.source == source).limit(1)
    return reader.execute(query).first() is not None


def run_sources(reader: Reader) -> list[str]:
    """Every source that has a run."""
    return list(reader.execute(select(SourceRun.source).distinct()).scalars())


def devices_by_source(reader: Reader) -> dict[str, int]:
    """Active devices per MDM of record."""
    rows = reader.execute(
        select(Device.mdm_source, func.count())
        .where(Device.mdm_source.is_not(None), Device.status == DeviceStatus.ACTIVE)
        .group_by(Device.mdm_source)
    )
    return {str(source): int(count) for source, count in rows}
