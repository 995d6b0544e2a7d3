"""Time-driven work: record the releases that have happened (and perform their side effects),
and recompute the decisions whose `valid_until` has come, without scanning the fleet."""

from __future__ import annotations

from sqlalchemy import func, select

from appwarden.access.breaker import breakers
from appwarden.access.models import DecisionRecord
from appwarden.compliance.fleet import fleet_rows
from appwarden.compliance.models import ComplianceRecord
from appwarden.compliance.rules import rules_of
from appwarden.db.uow import UnitOfWork
from appwarden.events import DecisionChanged
from appwarden.policies.models import PolicyVersion
from appwarden.policies.service import settle
from appwarden.usecases.ingest import reevaluate_ids
from appwarden.usecases.notices import NoticeConfig, on_release


def release_due(uow: UnitOfWork, config: NoticeConfig | None = None) -> list[DecisionChanged]:
    released = settle(uow)
    if not released:
        return []
    device_ids: set[int] = set()
    for version in released:
        if config is not None:
            on_release(uow, version, config)
        rules = rules_of(uow, version)
        in_scope = {row.device_id for row in fleet_rows(uow, rules, now=uow.now)}
        breakers(uow).note_scope(version.policy_id, len(in_scope))  # the bound is 5 % of it
        device_ids |= in_scope
        older = select(PolicyVersion.id).where(
            PolicyVersion.policy_id == version.policy_id, PolicyVersion.id != version.id
        )
        device_ids |= set(
            uow.session.scalars(
                select(ComplianceRecord.device_id).where(ComplianceRecord.version_id.in_(older))
            )
        )
    return reevaluate_ids(uow, device_ids)


def refresh_expired(uow: UnitOfWork, *, limit: int | None = None) -> list[DecisionChanged]:
    """Decisions whose valid_until has come (a deadline, a grace period, an exemption's end):
    all of them, or the `limit` devices due longest (see `usecases.worker`, which commits a
    large deadline in batches)."""
    query = (
        select(DecisionRecord.device_id)
        .where(DecisionRecord.valid_until.is_not(None), DecisionRecord.valid_until <= uow.now)
        .group_by(DecisionRecord.device_id)
        .order_by(func.min(DecisionRecord.valid_until), DecisionRecord.device_id)
    )
    if limit is not None:
        query = query.limit(limit)
    return reevaluate_ids(uow, set(uow.session.scalars(query)))


def expired_count(uow: UnitOfWork) -> int:
    """Devices with a decision whose valid_until has come."""
    return (
        uow.session.scalar(
            select(func.count(func.distinct(DecisionRecord.device_id))).where(
                DecisionRecord.valid_until.is_not(None), DecisionRecord.valid_until <= uow.now
            )
        )
        or 0
    )
