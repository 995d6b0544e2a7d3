"""One pass of the worker, as `appwarden worker` and the worker embedded in `appwarden serve`
both run it at the clock's now: releases whose time came, decisions whose `valid_until` came,
exemption expiry warnings, then delivery of notices and webhooks.

Decisions whose time came are re-evaluated in batches, each its own transaction: at a deadline
that is every device still carrying the app at once (2.3 ms each, bench/README.md), and one
transaction over all of them would hold the "blocked" notices and the enforcement back until
the last one, and the store's write lock all along. The gate does not wait for it: each decision
carries what it becomes at its valid_until.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from appwarden.usecases.deliver import Delivery, DeliveryStats, OpenUnitOfWork, deliver_due
from appwarden.usecases.exemptions import warn_expiring
from appwarden.usecases.notices import NoticeConfig
from appwarden.usecases.release import expired_count, refresh_expired, release_due
from appwarden.usecases.sign_in import SessionRules, housekeeping

#: Devices re-evaluated per transaction when their decisions' time came.
EXPIRY_BATCH = 500


@dataclass(frozen=True)
class PassResult:
    at: datetime
    decision_changes: int
    delivery: DeliveryStats


def worker_pass(
    open_uow: OpenUnitOfWork,
    config: NoticeConfig,
    delivery: Delivery,
    now: datetime,
    *,
    batch: int = EXPIRY_BATCH,
    sessions: SessionRules | None = None,
) -> PassResult:
    """`open_uow` opens a unit of work at `now`. With `sessions`, expired sessions and sign-in
    flows are deleted too."""
    with open_uow() as uow:
        changes = len(release_due(uow, config))
        due = expired_count(uow)
    # Each batch leaves its devices with a valid_until after now, so the due set shrinks; the
    # bound only guards against a device that would come back due at the same instant.
    for _ in range(due // batch + 1):
        with open_uow() as uow:
            changes += len(refresh_expired(uow, limit=batch))
            if expired_count(uow) == 0:
                break
    with open_uow() as uow:
        warn_expiring(uow, config)
        if sessions is not None:
            housekeeping(uow, sessions)
    stats = deliver_due(open_uow, delivery)
    return PassResult(now, changes, stats)
