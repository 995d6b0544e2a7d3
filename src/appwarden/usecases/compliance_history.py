"""Compliance over time: how many devices were in each state of each policy's version, written by
the worker every hour and at every release or retraction (`record_counts`), read by the console's
chart (`history`). Nothing is backfilled: the history starts when the worker first runs.

A snapshot counts the stored states (`compliance_state`, one grouped count per version) of the
versions in effect, and of those that ended (retracted, retired, superseded) since the last
snapshot, so the chart shows where a retracted version stood when it ended.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import func, or_, select

from appwarden.compliance.models import ComplianceCount, ComplianceRecord
from appwarden.db.uow import UnitOfWork
from appwarden.policies.models import PolicyVersion
from appwarden.policies.service import effective_versions
from appwarden.timeutil import iso
from appwarden.usecases.status import STATE_ORDER
from appwarden.vocabulary import ComplianceState

#: The states counted, most urgent first (not_applicable is never stored).
COUNTED_STATES: Final = tuple(str(s) for s in STATE_ORDER if s != ComplianceState.NOT_APPLICABLE)
#: How often the counts are written when nothing is released or retracted.
SNAPSHOT_EVERY: Final = timedelta(hours=1)
#: How many snapshots a chart shows: a week of hourly ones.
HISTORY_POINTS: Final = 168


def state_counts(uow: UnitOfWork, version_id: int) -> dict[str, int]:
    """Devices per stored compliance state of one version, every counted state present."""
    counts = dict.fromkeys(COUNTED_STATES, 0)
    rows = uow.session.execute(
        select(ComplianceRecord.state, func.count())
        .where(ComplianceRecord.version_id == version_id)
        .group_by(ComplianceRecord.state)
    )
    for state, count in rows:
        counts[state] = counts.get(state, 0) + int(count)
    return counts


def _last_snapshot(uow: UnitOfWork) -> datetime | None:
    return uow.session.scalar(select(func.max(ComplianceCount.at)))


def _changed_since(uow: UnitOfWork, since: datetime) -> list[PolicyVersion]:
    """Versions released, or ended, from `since` (the last count) to now. From, not after: a
    step at the very instant of the last count may have come after it (the logical clock
    stands still between them); at worst one count is written again."""
    now = uow.now
    return list(
        uow.session.scalars(
            select(PolicyVersion).where(
                or_(
                    PolicyVersion.release_at.between(since, now),
                    PolicyVersion.ended_at.between(since, now),
                )
            )
        )
    )


def record_counts(uow: UnitOfWork) -> int:
    """Write a snapshot at the unit of work's now if one is due: none yet, the last is an hour
    old, or a version was released or ended since. The number of rows written."""
    now = uow.now
    last = _last_snapshot(uow)
    changed = _changed_since(uow, last) if last is not None else []
    if last is not None and last >= now:
        return 0
    if last is not None and now - last < SNAPSHOT_EVERY and not changed:
        return 0
    versions = {v.id: v for v in effective_versions(uow, now)}
    versions.update({v.id: v for v in changed if v.ended_at is not None})
    written = 0
    for version in sorted(versions.values(), key=lambda v: (v.policy_id, v.number)):
        for state, n in state_counts(uow, version.id).items():
            uow.session.add(
                ComplianceCount(
                    policy_id=version.policy_id, version=version.number, at=now, state=state, n=n
                )
            )
            written += 1
    uow.session.flush()
    return written


def history(uow: UnitOfWork, policy_id: str, points: int = HISTORY_POINTS) -> list[dict[str, Any]]:
    """The policy's last `points` snapshots, oldest first: each instant with, per version
    counted then, its devices per state."""
    instants = list(
        uow.session.scalars(
            select(ComplianceCount.at)
            .where(ComplianceCount.policy_id == policy_id)
            .group_by(ComplianceCount.at)
            .order_by(ComplianceCount.at.desc())
            .limit(points)
        )
    )
    if not instants:
        return []
    rows = uow.session.scalars(
        select(ComplianceCount)
        .where(ComplianceCount.policy_id == policy_id, ComplianceCount.at >= min(instants))
        .order_by(ComplianceCount.at, ComplianceCount.version)
    )
    snapshots: dict[tuple[datetime, int], dict[str, Any]] = {}
    for row in rows:
        key = (row.at, row.version)
        snapshot = snapshots.setdefault(
            key, {"at": iso(row.at), "version": row.version, "counts": {}}
        )
        snapshot["counts"][row.state] = row.n
    return list(snapshots.values())
