"""The mass-lockout breaker for admins and the worker (`access/breaker.py` holds the rule):
list the breakers, release one (its held denies are applied, audited; needs `admin`), and settle
the holds whose cause has passed (a stale source fresh again, a policy no longer in effect)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, func, or_, select

from appwarden.access.breaker import (
    SOURCE_STALE,
    WINDOW,
    bound,
    breakers,
    hour_of,
    recent_flips,
)
from appwarden.access.models import Breaker, BreakerCount, BreakerHold
from appwarden.audit.service import record
from appwarden.db.chunked import one_of
from appwarden.db.uow import UnitOfWork
from appwarden.errors import Conflict
from appwarden.events import DecisionChanged
from appwarden.identity.service import require
from appwarden.policies.service import effective_versions, get_policy
from appwarden.timeutil import iso
from appwarden.usecases.ingest import reevaluate_ids
from appwarden.vocabulary import Permission


def breaker_rows(uow: UnitOfWork) -> list[dict[str, Any]]:
    """Every policy's breaker that ever counted a flip: its state, what it holds and why, and
    the flips it let through within the last hour against its bound."""
    session, now = uow.session, uow.now
    held: dict[str, dict[str, int]] = defaultdict(dict)
    first: dict[str, datetime] = {}
    for policy_id, cause, count, earliest in session.execute(
        select(
            BreakerHold.policy_id,
            BreakerHold.cause,
            func.count(),
            func.min(BreakerHold.effective_at),
        ).group_by(BreakerHold.policy_id, BreakerHold.cause)
    ):
        held[policy_id][cause] = count
        first[policy_id] = min(earliest, first.get(policy_id, earliest))
    hour = hour_of(now)
    counts = {
        (p, hour_of(h)): n
        for p, h, n in session.execute(
            select(BreakerCount.policy_id, BreakerCount.hour, BreakerCount.admitted).where(
                BreakerCount.hour.in_((hour, hour - WINDOW))
            )
        )
    }
    rows = []
    for breaker in session.scalars(select(Breaker).order_by(Breaker.policy_id)):
        policy_id = breaker.policy_id
        flips = recent_flips(
            counts.get((policy_id, hour), 0), counts.get((policy_id, hour - WINDOW), 0), now
        )
        rows.append(
            {
                "policy": policy_id,
                "state": _state(breaker),
                "opened_at": iso(breaker.opened_at),
                "tripped_at": iso(breaker.tripped_at),
                "held": sum(held[policy_id].values()),
                "causes": dict(sorted(held[policy_id].items())),
                "first_effective_at": iso(first.get(policy_id)),
                "flips_last_hour": int(flips),
                "bound": bound(breaker.in_scope),
                "in_scope": breaker.in_scope,
            }
        )
    return rows


def _state(breaker: Breaker) -> str:
    if breaker.tripped_at is not None:
        return "tripped"
    return "open" if breaker.opened_at is not None else "closed"


def release_breaker(
    uow: UnitOfWork, policy_id: str
) -> tuple[dict[str, Any], list[DecisionChanged]]:
    """Apply every deny the policy's breaker holds (as the admin `uow.actor`), close it, audit
    it. Refused, changing nothing, when it holds nothing and is not tripped."""
    require(uow, Permission.ADMIN)
    get_policy(uow, policy_id)
    session = uow.session
    existing = session.get(Breaker, policy_id)
    held = dict(
        session.execute(
            select(BreakerHold.cause, func.count())
            .where(BreakerHold.policy_id == policy_id)
            .group_by(BreakerHold.cause)
        ).all()
    )
    if not held and (existing is None or _state(existing) == "closed"):
        raise Conflict(f"the breaker of {policy_id} holds nothing: there is nothing to release")
    breaker = breakers(uow).row(policy_id)
    before = {"state": _state(breaker), "held": held}
    held_devices = set(
        session.scalars(select(BreakerHold.device_id).where(BreakerHold.policy_id == policy_id))
    )
    changes = reevaluate_ids(uow, held_devices, admit=frozenset({policy_id}))
    session.execute(delete(BreakerHold).where(BreakerHold.policy_id == policy_id))
    breaker.opened_at = breaker.tripped_at = None
    out = {
        "policy": policy_id,
        "released": sum(held.values()),
        "causes": held,
        "decision_changes": len(changes),
    }
    record(
        uow,
        action="breaker.release",
        object_type="policy",
        object_id=policy_id,
        before=before,
        after={"state": "closed", **out},
    )
    return out, changes


def settle_holds(uow: UnitOfWork, *, limit: int) -> int:
    """Re-evaluate up to `limit` held devices whose hold's cause has passed: their stale source
    is fresh again, or their policy is no longer in effect. Returns how many were."""
    session, book = uow.session, breakers(uow)
    passed = []
    causes = session.scalars(
        select(BreakerHold.cause).where(BreakerHold.cause.startswith(SOURCE_STALE)).distinct()
    )
    for cause in list(causes):
        if not book.stale(cause.removeprefix(SOURCE_STALE), uow.now):
            passed.append(BreakerHold.cause == cause)
    live = {v.policy_id for v in effective_versions(uow, uow.now)}
    passed.append(BreakerHold.policy_id.not_in(live))
    due = list(
        session.scalars(
            select(BreakerHold.device_id)
            .where(or_(*passed))
            .distinct()
            .order_by(BreakerHold.device_id)
            .limit(limit)
        )
    )
    reevaluate_ids(uow, due)
    # Re-evaluated, none of them is held for a passed cause any more; a row that says otherwise
    # (its decision no longer shows it) is dropped, so the next round moves on.
    session.execute(delete(BreakerHold).where(one_of(BreakerHold.device_id, due), or_(*passed)))
    return len(due)


def close_idle(uow: UnitOfWork) -> list[str]:
    """Close the breakers that hold nothing any more (every held device settled by itself), and
    forget hourly counts too old to matter; returns the policies closed."""
    session, book = uow.session, breakers(uow)
    closed = []
    candidates = select(Breaker.policy_id).where(
        or_(Breaker.opened_at.is_not(None), Breaker.tripped_at.is_not(None))
    )
    for policy_id in list(session.scalars(candidates)):
        breaker = book.row(policy_id)  # locked: no hold can be added while this one looks
        holding = session.scalars(
            select(BreakerHold.device_id).where(BreakerHold.policy_id == policy_id).limit(1)
        ).first()
        if holding is None and _state(breaker) != "closed":
            before = {"state": _state(breaker)}
            breaker.opened_at = breaker.tripped_at = None
            record(
                uow,
                action="breaker.close",
                object_type="policy",
                object_id=policy_id,
                before=before,
                after={"state": "closed", "reason": "nothing held"},
            )
            closed.append(policy_id)
    session.execute(delete(BreakerCount).where(BreakerCount.hour < hour_of(uow.now) - WINDOW))
    return closed


def breakers_open(engine: Engine) -> dict[str, bool]:
    """Per policy with a breaker: whether it holds denies. For /metrics: one small read on a
    connection of its own; raises the store's error when it does not answer."""
    with engine.connect().execution_options(appwarden_write=False) as connection:
        rows = connection.execute(select(Breaker.policy_id, Breaker.opened_at, Breaker.tripped_at))
        return {p: opened is not None or tripped is not None for p, opened, tripped in rows}
