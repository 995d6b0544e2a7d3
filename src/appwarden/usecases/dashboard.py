"""The console's dashboard: every policy with its versions, the version in effect, and how many
devices are in each compliance state for it (one grouped count per policy, never the fleet)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from appwarden.compliance.models import ComplianceRecord
from appwarden.db.uow import UnitOfWork
from appwarden.policies.service import effective_versions
from appwarden.usecases.policies import policy_rows
from appwarden.usecases.status import STATE_ORDER
from appwarden.vocabulary import ComplianceState

#: The states a dashboard counts, most urgent first (not_applicable is never stored).
COUNTED_STATES = tuple(str(s) for s in STATE_ORDER if s != ComplianceState.NOT_APPLICABLE)


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


def overview(uow: UnitOfWork) -> list[dict[str, Any]]:
    """`usecases.policies.policy_rows` at the unit of work's now, each with `counts`: the
    states of the version in effect (empty when none is)."""
    live = {v.policy_id: v.id for v in effective_versions(uow, uow.now)}
    rows = policy_rows(uow, uow.now)
    for row in rows:
        version_id = live.get(row["policy"])
        row["counts"] = state_counts(uow, version_id) if version_id is not None else {}
    return rows
