"""One pass of the worker, as `appwarden worker` and the worker embedded in `appwarden serve`
both run it at the clock's now: releases whose time came, decisions whose `valid_until` came,
the breaker's holds whose cause passed, the compliance counts when due (hourly, and after a
release or retraction: usecases/compliance_history.py), exemption expiry warnings, delivery of
notices and webhooks, then the scheduled syncs that are due (usecases/sync.py: each under a
claim, so two workers never sync one source at once; a long sync delays the next pass, not this
pass's notices). Each pass also logs a warning for each stale source (docs/sources/README.md,
"Source health").

Decisions whose time came are re-evaluated in batches, each its own transaction: at a deadline
that is every device still carrying the app at once (2.3 ms each, bench/README.md), and one
transaction over all of them would hold the "blocked" notices and the enforcement back until
the last one, and the store's write lock all along. The gate does not wait for it: each decision
carries what it becomes at its valid_until.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from appwarden.timeutil import format_duration, iso
from appwarden.usecases.breakers import close_idle, settle_holds
from appwarden.usecases.compliance_history import record_counts
from appwarden.usecases.deliver import Delivery, DeliveryStats, OpenUnitOfWork, deliver_due
from appwarden.usecases.exemptions import warn_expiring
from appwarden.usecases.health import stale_sources
from appwarden.usecases.notices import NoticeConfig
from appwarden.usecases.release import expired_count, refresh_expired, release_due
from appwarden.usecases.sign_in import SessionRules, housekeeping
from appwarden.usecases.sync import SyncOutcome, SyncSchedule, run_due_syncs

log = logging.getLogger("appwarden.worker")

#: Devices re-evaluated per transaction when their decisions' time came.
EXPIRY_BATCH = 500


@dataclass(frozen=True)
class PassResult:
    at: datetime
    decision_changes: int
    delivery: DeliveryStats
    syncs: tuple[SyncOutcome, ...] = ()
    stale_sources: tuple[str, ...] = ()


def worker_pass(
    open_uow: OpenUnitOfWork,
    config: NoticeConfig,
    delivery: Delivery,
    now: datetime,
    *,
    batch: int = EXPIRY_BATCH,
    syncs: SyncSchedule | None = None,
    sessions: SessionRules | None = None,
) -> PassResult:
    """`open_uow` opens a unit of work at `now`. `syncs`: run the scheduled syncs that are due.
    With `sessions`, expired sessions and sign-in flows are deleted too."""
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
    stale = _settle_breakers(open_uow, batch)
    with open_uow() as uow:
        record_counts(uow)  # after this pass's releases and decisions
        warn_expiring(uow, config)
        if sessions is not None:
            housekeeping(uow, sessions)
    stats = deliver_due(open_uow, delivery)
    synced = tuple(run_due_syncs(open_uow, syncs, now)) if syncs is not None else ()
    return PassResult(now, changes, stats, synced, stale)


def _settle_breakers(open_uow: OpenUnitOfWork, batch: int) -> tuple[str, ...]:
    """Warn of each stale source; re-evaluate, a batch per transaction, the devices whose
    held deny's cause passed; close the breakers that hold nothing any more."""
    with open_uow() as uow:
        stale = stale_sources(uow)
        for health in stale:
            log.warning(
                "source %s is stale: last complete run %s, bound %s",
                health.source,
                iso(health.last_complete_at) or "never",
                format_duration(health.stale_after),
                extra={"fields": {"source": health.source}},
            )
    while True:
        with open_uow() as uow:
            if settle_holds(uow, limit=batch) < batch:
                break
    with open_uow() as uow:
        close_idle(uow)
    return tuple(h.source for h in stale)
