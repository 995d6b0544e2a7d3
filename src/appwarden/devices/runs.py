"""The store side of live syncs: runs (`source_run`), which runs listed each device
(`device_source`), who holds a source (`source_claim`), and which devices a source stopped
listing. Services flush, never commit: the caller owns the transaction (usecases/sync.py)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

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
                    DeviceSource.source == source, DeviceSource.device_id.in_(chunk)
                )
            )
        )
        if known:
            uow.session.execute(
                update(DeviceSource)
                .where(DeviceSource.source == source, DeviceSource.device_id.in_(sorted(known)))
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
    insert = postgresql_insert if uow.dialect == "postgresql" else sqlite_insert
    uow.session.execute(
        insert(SourceClaim).values(source=source).on_conflict_do_nothing(index_elements=["source"])
    )
