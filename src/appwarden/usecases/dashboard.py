"""The console's dashboard: every policy with its versions, the version in effect, and how many
devices are in each compliance state for it (one grouped count per policy, never the fleet), and
its compliance over time (`usecases.compliance_history`)."""

from __future__ import annotations

from typing import Any

from appwarden.db.uow import UnitOfWork
from appwarden.policies.service import effective_versions
from appwarden.usecases.compliance_history import history, state_counts
from appwarden.usecases.policies import policy_rows


def overview(uow: UnitOfWork) -> list[dict[str, Any]]:
    """`usecases.policies.policy_rows` at the unit of work's now, each with `counts`: the
    states of the version in effect (empty when none is), and `history`, its snapshots."""
    live = {v.policy_id: v.id for v in effective_versions(uow, uow.now)}
    rows = policy_rows(uow, uow.now)
    for row in rows:
        version_id = live.get(row["policy"])
        row["counts"] = state_counts(uow, version_id) if version_id is not None else {}
        row["history"] = history(uow, row["policy"])
    return rows
