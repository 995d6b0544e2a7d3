"""The mass-lockout breaker: rule 7, "the breaker rule", of docs/architecture.md (and its
section "The breaker").

A policy may turn at most max(50, 5 % of its in-scope devices) from allow to deny within an hour.
The next flip is *held*: the decision stays allow, and the policy's reason says so
(`"reason": "breaker_open", "cause": "mass_deny"`); the breaker is then tripped and holds every
new deny of the policy until an admin releases them (`appwarden breaker release POLICY`).
Whatever the count, a deny that comes from `unknown` under `unknown: deny` on a device whose MDM
of record is stale is held too (cause `source_stale:<source>`), until the source is fresh again
or an admin releases it: a source that stopped talking must not lock its devices out.

Cost: a new allow→deny flip reads the policy's breaker row and its last two hourly counts (two
primary-key reads) and, for an `unknown` deny, the latest complete run of the device's source;
the in-scope count behind the 5 % is read only past the floor of 50, at most hourly. Nothing here
scans the fleet. The breaker row is locked (on PostgreSQL) for the rest of the transaction, so two
writers cannot both let the last admitted flip through.

Prepared decisions (`DecisionRecord.next_*`, applied by every gate's copy at `valid_until`
without the worker, docs/gates.md) pass the breaker when they are prepared, as if they happened
at their instant: a prepared flip is counted in the hour of that instant, and one past the bound
is prepared held, so a held flip never reaches a gate as deny. A prepared flip that is withdrawn
before its instant (the device was cleaned, a new report came) gives its place back. A prepared
deny that would come from `unknown` on a device of a watched source cannot be judged in advance
(will the source be fresh then?): it is prepared as allow (`"reason": "breaker_deferred"`) and
the worker judges it at its instant, within one pass.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from sqlalchemy import func, select

from appwarden.access.decide import DecisionResult
from appwarden.access.models import Breaker, BreakerCount, BreakerHold, DecisionRecord
from appwarden.audit.service import record
from appwarden.compliance.models import ComplianceRecord
from appwarden.db.chunked import one_of
from appwarden.db.uow import UnitOfWork
from appwarden.devices.models import Device
from appwarden.devices.runs import has_runs, last_complete_at
from appwarden.policies.models import PolicyVersion
from appwarden.staleness import is_stale
from appwarden.timeutil import iso
from appwarden.vocabulary import ComplianceState, Decision, VersionState

log = logging.getLogger("appwarden.breaker")

FLOOR: Final = 50
SHARE: Final = 0.05
WINDOW: Final = timedelta(hours=1)
MASS_DENY: Final = "mass_deny"
SOURCE_STALE: Final = "source_stale:"
HELD: Final = "breaker_open"
DEFERRED: Final = "breaker_deferred"
RELEASED: Final = "breaker_released"

Reason = Mapping[str, Any]


def bound(in_scope: int) -> int:
    """How many allow→deny flips one policy may make within an hour: max(50, 5 % of its
    in-scope devices). The next one is held."""
    return max(FLOOR, math.floor(SHARE * in_scope))


def hour_of(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def recent_flips(this_hour: int, previous_hour: int, at: datetime) -> float:
    """Flips admitted within the hour before `at`, from two clock hours' counts: all of this
    hour's, and the part of the previous hour's that lies within the hour before `at` (its flips
    taken as spread evenly over it)."""
    elapsed = (at - hour_of(at)) / WINDOW
    return this_hour + previous_hour * (1 - elapsed)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the breaker does with one new deny: let it through (`admit`, counted), let it through
    because an admin released the policy's breaker (`released`), `hold` it, or leave a prepared
    one to the worker (`defer`)."""

    kind: Literal["admit", "released", "hold", "defer"]
    cause: str | None = None

    def mark(self, reason: Reason) -> dict[str, Any]:
        """The policy's reason as the decision records it."""
        if self.kind == "admit":
            return dict(reason)
        if self.kind == "released":
            return {**reason, "reason": RELEASED}
        kind = HELD if self.kind == "hold" else DEFERRED
        return {**reason, "effect": "allow", "reason": kind, "cause": self.cause}

    @property
    def lets_through(self) -> bool:
        return self.kind in ("admit", "released")


ADMIT: Final = Verdict("admit")


def denying(reasons: Iterable[Reason]) -> set[str]:
    return {str(r["policy"]) for r in reasons if r.get("effect") == "deny"}


def in_force(record: DecisionRecord | None, now: datetime) -> tuple[str, list[Reason]]:
    """The decision a gate answers with at `now` from the stored row: the row's, or, once its
    `valid_until` has come, the one prepared for then."""
    if record is None:
        return Decision.ALLOW, []
    if record.valid_until is not None and record.valid_until <= now and record.next_decision:
        return record.next_decision, list(record.next_reasons or ())
    return record.decision, list(record.reasons)


def judged_result(reasons: list[dict[str, Any]], valid_until: datetime | None) -> DecisionResult:
    denied = any(r.get("effect") == "deny" for r in reasons)
    return DecisionResult(Decision.DENY if denied else Decision.ALLOW, tuple(reasons), valid_until)


_KEY: Final = "appwarden.breakers"


def breakers(uow: UnitOfWork) -> Breakers:
    """The breakers as this unit of work reads and changes them (one per unit of work)."""
    return uow.kept(_KEY, lambda: Breakers(uow))


class Breakers:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self._rows: dict[str, Breaker] = {}
        self._sources: dict[str, tuple[bool, datetime | None]] = {}
        # (policy, hour) → that hour's count row, None for none. Read once per unit of work:
        # `row` holds the policy's breaker locked, so no other transaction counts meanwhile, and
        # a query per flip would flush the whole batch's pending writes each time.
        self._counted: dict[tuple[str, datetime], BreakerCount | None] = {}
        self._counted_since: datetime | None = None  # every count from this hour on is read
        self._prefetched_holds: dict[int, dict[str, BreakerHold]] = {}

    # ── the state ────────────────────────────────────────────────────────────────────────────

    def row(self, policy_id: str) -> Breaker:
        """The policy's breaker, made if needed and locked for the rest of the transaction.
        The first call locks every breaker, in policy order: a transaction that flips devices
        of several policies then never waits for one that locked them the other way round."""
        session = self.uow.session
        self._lock_every()
        found = self._rows.get(policy_id)
        if found is None:
            # The store's own dialect (already loaded by its engine), not both at import.
            from sqlalchemy.dialects import postgresql, sqlite

            insert = postgresql.insert if self.uow.dialect == "postgresql" else sqlite.insert
            session.execute(
                insert(Breaker).values(policy_id=policy_id, in_scope=0).on_conflict_do_nothing()
            )
            one = select(Breaker).where(Breaker.policy_id == policy_id).with_for_update()
            found = self._rows[policy_id] = session.scalars(one).one()
        return found

    def _lock_every(self) -> None:
        if not self._rows:
            every = select(Breaker).order_by(Breaker.policy_id).with_for_update()
            self._rows = {b.policy_id: b for b in self.uow.session.scalars(every)}

    def note_scope(self, policy_id: str, in_scope: int) -> None:
        """The policy's in-scope device count, as a release just evaluated it."""
        breaker = self.row(policy_id)
        breaker.in_scope, breaker.in_scope_at = in_scope, self.uow.now

    def _in_scope(self, breaker: Breaker) -> int:
        now = self.uow.now
        if breaker.in_scope_at is None or now - breaker.in_scope_at >= WINDOW:
            live = select(PolicyVersion.id).where(
                PolicyVersion.policy_id == breaker.policy_id,
                PolicyVersion.state.in_((VersionState.ACTIVE, VersionState.SCHEDULED)),
            )
            counted = self.uow.session.scalar(
                select(func.count(func.distinct(ComplianceRecord.device_id))).where(
                    ComplianceRecord.version_id.in_(live)
                )
            )
            breaker.in_scope, breaker.in_scope_at = int(counted or 0), now
        return breaker.in_scope

    def _counts(self, policy_id: str, at: datetime) -> tuple[BreakerCount | None, int]:
        """(This hour's count row, the previous hour's count) of the hour holding `at`."""
        hour = hour_of(at)
        hours = (hour, hour - WINDOW)
        since = self._counted_since
        missing = [
            h for h in hours if (policy_id, h) not in self._counted and (since is None or h < since)
        ]
        if missing:
            self._counted.update(((policy_id, h), None) for h in missing)
            for row in self.uow.session.scalars(
                select(BreakerCount).where(
                    BreakerCount.policy_id == policy_id, BreakerCount.hour.in_(missing)
                )
            ):
                self._counted[policy_id, hour_of(row.hour)] = row
        previous = self._counted.get((policy_id, hour - WINDOW))
        return self._counted.get((policy_id, hour)), 0 if previous is None else previous.admitted

    def _admit(self, policy_id: str, at: datetime, counted: BreakerCount | None) -> None:
        if counted is None:
            counted = BreakerCount(policy_id=policy_id, hour=hour_of(at), admitted=0)
            self.uow.session.add(counted)
            self._counted[policy_id, hour_of(at)] = counted
        counted.admitted += 1

    def withdraw(self, policy_id: str, at: datetime) -> None:
        """A prepared flip counted for `at` will not happen: its place is free again."""
        self.row(policy_id)
        counted, _ = self._counts(policy_id, at)
        if counted is not None and counted.admitted > 0:
            counted.admitted -= 1

    # ── sources ──────────────────────────────────────────────────────────────────────────────

    def _freshness(self, source: str) -> tuple[bool, datetime | None]:
        """(Watched, when its last complete run ended) for the device's MDM of record."""
        known = self._sources.get(source)
        if known is None:
            session = self.uow.session
            last = last_complete_at(session, source)
            configured = self.uow.staleness.configured(source)
            watched = configured or last is not None or has_runs(session, source)
            known = self._sources[source] = (watched, last)
        return known

    def watched(self, source: str | None) -> bool:
        return source is not None and self._freshness(source)[0]

    def stale(self, source: str | None, at: datetime) -> bool:
        if source is None:
            return False
        watched, last = self._freshness(source)
        bound_ = self.uow.staleness.bound(source)
        return is_stale(watched=watched, last_complete_at=last, bound=bound_, now=at)

    # ── verdicts ─────────────────────────────────────────────────────────────────────────────

    def judge(
        self, device: Device, policy_id: str, at: datetime, *, unknown: bool, prepared: bool
    ) -> Verdict:
        """The verdict on a new allow→deny flip of `device` by `policy_id` taking effect at `at`
        (now, or the instant a prepared decision applies); an admitted flip is counted."""
        source = device.mdm_source
        if unknown and self.watched(source):
            if prepared:  # whether the source will be fresh then cannot be known now
                return Verdict("defer", f"source_check:{source}")
            if self.stale(source, at):
                return Verdict("hold", f"{SOURCE_STALE}{source}")
        breaker = self.row(policy_id)
        if breaker.tripped_at is not None:
            return Verdict("hold", MASS_DENY)
        counted, previous = self._counts(policy_id, at)
        flips = recent_flips(counted.admitted if counted else 0, previous, at)
        if flips >= FLOOR:
            limit = bound(self._in_scope(breaker))
            if flips >= limit:
                if not prepared:
                    self._trip(breaker, at, flips, limit)
                return Verdict("hold", MASS_DENY)
        self._admit(policy_id, at, counted)
        return ADMIT

    def peek(self, device: Device, policy_id: str, at: datetime, *, unknown: bool) -> Verdict:
        """What `judge` would say of a flip at `at` as far as a reader can tell (no count, no
        write): held when the device's source is stale or the policy's breaker is tripped."""
        if unknown and self.stale(device.mdm_source, at):
            return Verdict("hold", f"{SOURCE_STALE}{device.mdm_source}")
        breaker = self.uow.session.get(Breaker, policy_id)
        if breaker is not None and breaker.tripped_at is not None:
            return Verdict("hold", MASS_DENY)
        return ADMIT

    # ── holds ────────────────────────────────────────────────────────────────────────────────

    def prefetch(self, device_ids: Sequence[int], chunk: int = 2_000) -> None:
        """What judging a batch's flips reads, at once: every breaker (locked), every count from
        the previous hour on, and these devices' held denies for their next `keep_holds`. The
        batch's evaluation then asks the store nothing: a query per device would flush its
        pending writes each time, and it may run while the batch's observation rows are still
        being written (`usecases.ingest`). Each device's holds are used once, and only until
        the next prefetch: a later call reads them again."""
        self._lock_every()
        since = hour_of(self.uow.now) - WINDOW
        for count in self.uow.session.scalars(
            select(BreakerCount).where(BreakerCount.hour >= since)
        ):
            self._counted[count.policy_id, hour_of(count.hour)] = count
        self._counted_since = since
        prefetched: dict[int, dict[str, BreakerHold]] = {device_id: {} for device_id in device_ids}
        ids = list(device_ids)
        for start in range(0, len(ids), chunk):
            for hold in self.uow.session.scalars(
                select(BreakerHold).where(one_of(BreakerHold.device_id, ids[start : start + chunk]))
            ):
                prefetched[hold.device_id][hold.policy_id] = hold
        self._prefetched_holds = prefetched

    def keep_holds(
        self, device_id: int, held: Mapping[str, tuple[str, datetime]], *, had: bool
    ) -> None:
        """Make the device's held denies exactly `held` (policy → cause, when it would have
        taken effect); `had`: its stored decisions showed a hold."""
        existing = self._prefetched_holds.pop(device_id, None)
        if not held and not had:
            return
        session = self.uow.session
        if existing is None:
            existing = {
                h.policy_id: h
                for h in session.scalars(
                    select(BreakerHold).where(BreakerHold.device_id == device_id)
                )
            }
        for policy_id, gone in existing.items():
            if policy_id not in held:
                session.delete(gone)
        for policy_id, (cause, at) in held.items():
            hold = existing.get(policy_id)
            if hold is None:
                session.add(
                    BreakerHold(
                        policy_id=policy_id,
                        device_id=device_id,
                        cause=cause,
                        effective_at=at,
                        held_at=self.uow.now,
                    )
                )
                self._opened(self.row(policy_id), cause)
            else:
                hold.cause, hold.effective_at = cause, at

    def _trip(self, breaker: Breaker, at: datetime, flips: float, limit: int) -> None:
        breaker.tripped_at = self.uow.now
        detail = {
            "flips_in_hour": math.floor(flips),
            "bound": limit,
            "in_scope": breaker.in_scope,
            "at": iso(at),
        }
        self._opened(breaker, MASS_DENY, detail, announce=True)

    def _opened(
        self,
        breaker: Breaker,
        cause: str,
        detail: Mapping[str, Any] | None = None,
        *,
        announce: bool = False,
    ) -> None:
        """The breaker holds a deny: audited and logged when it opens, and when it trips."""
        if breaker.opened_at is None:
            breaker.opened_at = self.uow.now
            announce = True
        if not announce:
            return
        after = {"cause": cause, **(detail or {})}
        record(
            self.uow,
            action="breaker.open",
            object_type="policy",
            object_id=breaker.policy_id,
            after=after,
        )
        policy_id, at = breaker.policy_id, iso(self.uow.now)
        self.uow.after_commit(
            lambda: log.error(
                "breaker of %s open at %s: holding denies (%s); release with "
                "`appwarden breaker release %s` once checked",
                policy_id,
                at,
                ", ".join(f"{k}={v}" for k, v in after.items()),
                policy_id,
                extra={"fields": {"policy": policy_id, **after}},
            )
        )


class DeviceFlips:
    """One device's decisions passing the breaker while `access.service.refresh_decisions`
    rewrites them. A device counts once per policy, however many resources it loses.

    `admit`: policies whose breaker an admin is releasing: their denies go through, uncounted.
    """

    def __init__(self, uow: UnitOfWork, device: Device, admit: frozenset[str]) -> None:
        self.book = breakers(uow)
        self.device = device
        self.admit = admit
        self.now = uow.now
        self._verdicts: dict[tuple[str, datetime, bool], Verdict] = {}
        self._prepared_before: dict[tuple[str, datetime], bool] = {}  # → released by an admin
        self._prepared_now: set[tuple[str, datetime]] = set()
        self._held: dict[str, tuple[str, datetime]] = {}
        self._had_holds = False

    def live(self, raw: DecisionResult, stored: DecisionRecord | None) -> DecisionResult:
        """The decision now: each deny that turns the device from allow is judged."""
        self._note(stored)
        decision, reasons = in_force(stored, self.now)
        before = denying(reasons)
        judged = []
        for reason in raw.reasons:
            if _new_deny(reason, before, decision):
                reason = self._verdict(reason, self.now, prepared=False).mark(reason)
            judged.append(dict(reason))
        return judged_result(judged, raw.valid_until)

    def prepared(
        self,
        current: DecisionResult,
        upcoming: DecisionResult | None,
        stored: DecisionRecord | None,
    ) -> DecisionResult | None:
        """The decision prepared for `current.valid_until`: each deny that turns the device from
        allow then is judged as of that instant, unless the same flip was prepared before."""
        at = current.valid_until
        if upcoming is None or at is None:
            return upcoming
        before = denying(current.reasons)
        carried = _prepared_flips(stored, self.now) if stored is not None else {}
        judged = []
        for reason in upcoming.reasons:
            if _new_deny(reason, before, current.decision):
                policy_id = str(reason["policy"])
                old = carried.get((policy_id, at))
                if old is not None:  # the same flip, let through when it was prepared before
                    reason = {**reason, **({"reason": RELEASED} if old else {})}
                    self._prepared_now.add((policy_id, at))
                else:
                    verdict = self._verdict(reason, at, prepared=True)
                    if verdict.lets_through:
                        self._prepared_now.add((policy_id, at))
                    reason = verdict.mark(reason)
            judged.append(dict(reason))
        return judged_result(judged, upcoming.valid_until)

    def finish(self) -> None:
        """Give back the places of prepared flips withdrawn, and record the held denies."""
        for (policy_id, at), released in self._prepared_before.items():
            if (policy_id, at) not in self._prepared_now and not released:
                self.book.withdraw(policy_id, at)
        self.book.keep_holds(self.device.id, self._held, had=self._had_holds)

    def _note(self, stored: DecisionRecord | None) -> None:
        if stored is None:
            return
        for reason in (*stored.reasons, *(stored.next_reasons or ())):
            if reason.get("reason") == HELD:
                self._had_holds = True
        self._prepared_before.update(_prepared_flips(stored, self.now))

    def _verdict(self, reason: Reason, at: datetime, *, prepared: bool) -> Verdict:
        policy_id = str(reason["policy"])
        key = (policy_id, at, prepared)
        verdict = self._verdicts.get(key)
        if verdict is None:
            if policy_id in self.admit:
                verdict = Verdict("released")
            else:
                unknown = reason.get("state") == ComplianceState.UNKNOWN
                verdict = self.book.judge(
                    self.device, policy_id, at, unknown=unknown, prepared=prepared
                )
            self._verdicts[key] = verdict
        if verdict.kind == "hold":
            assert verdict.cause is not None
            known = self._held.get(policy_id)
            if known is None or at < known[1]:  # held now and later: the hold starts now
                self._held[policy_id] = (verdict.cause, at)
        return verdict


def _new_deny(reason: Reason, before: set[str], decision: str) -> bool:
    """A policy's deny that turns the device from allow (not one it already carried, nor one
    added to a device another policy denies)."""
    return reason.get("effect") == "deny" and reason["policy"] not in before and decision != "deny"


def _prepared_flips(stored: DecisionRecord, now: datetime) -> dict[tuple[str, datetime], bool]:
    """The prepared allow→deny flips the stored row lets through at its (future) `valid_until`,
    each with whether an admin released it (released flips were never counted)."""
    at = stored.valid_until
    if at is None or at <= now or stored.decision != "allow" or stored.next_decision != "deny":
        return {}
    return {
        (str(r["policy"]), at): r.get("reason") == RELEASED
        for r in stored.next_reasons or ()
        if r.get("effect") == "deny"
    }


def judged_view(
    uow: UnitOfWork, device: Device, resource: str, at: datetime, raw: DecisionResult
) -> DecisionResult:
    """What the breaker makes of a computed decision for a reader (`decide`, the gate's store
    path): a deny the stored decision holds stays held; a new one is held when its source is
    stale or its policy's breaker is tripped. Nothing is counted or written."""
    stored = uow.session.get(DecisionRecord, (device.id, resource))
    decision, reasons = in_force(stored, at)
    before = denying(reasons)
    held = {str(r["policy"]): r for r in reasons if r.get("reason") == HELD}
    book = breakers(uow)
    judged = []
    for reason in raw.reasons:
        if _new_deny(reason, before, decision):
            policy_id = str(reason["policy"])
            old = held.get(policy_id)
            if old is not None:
                verdict = Verdict("hold", str(old.get("cause")))
            else:
                unknown = reason.get("state") == ComplianceState.UNKNOWN
                verdict = book.peek(device, policy_id, at, unknown=unknown)
            reason = verdict.mark(reason)
        judged.append(dict(reason))
    return judged_result(judged, raw.valid_until)
