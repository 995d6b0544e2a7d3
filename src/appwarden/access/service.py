"""Decisions: computed from the versions in effect, materialised per (device, resource), and
every change announced as one DecisionChanged event.

Every process keeps an in-memory copy of the decisions for the gate (`access.index`). So that other
processes can ask "what was written since I last looked", a transaction that wrote decisions stamps
them with the wall-clock time of its commit (not of its first write: a long import would otherwise
commit rows stamped minutes in the past) and, on PostgreSQL, sends a NOTIFY on `CHANGES_CHANNEL`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.orm.attributes import flag_modified

from appwarden.access.breaker import DeviceFlips
from appwarden.access.decide import DecisionResult, PolicyOutcome, decide
from appwarden.access.models import DecisionRecord
from appwarden.compliance.service import DeviceEvaluator, Outcome, evaluate_device
from appwarden.db.chunked import one_of
from appwarden.db.uow import UnitOfWork
from appwarden.devices.models import Device
from appwarden.devices.service import resources_of
from appwarden.events import DecisionChanged
from appwarden.vocabulary import ComplianceState, Decision


def _policy_outcomes(outcomes: list[Outcome]) -> list[PolicyOutcome]:
    return [
        PolicyOutcome(
            policy_id=o.version.policy_id,
            version=o.version.number,
            deny=o.rules.deny,
            unknown_deny=o.rules.unknown_deny,
            deadline=o.rules.deadline,
            grace=o.rules.grace,
            evaluation=o.evaluation,
        )
        for o in outcomes
    ]


def decide_for(
    uow: UnitOfWork,
    device: Device,
    resource: str,
    at: datetime,
    outcomes: list[Outcome] | None = None,
) -> DecisionResult:
    if outcomes is None:
        outcomes = evaluate_device(uow, device, at)
    return decide(
        resource, _policy_outcomes(outcomes), first_report_at=device.first_report_at, now=at
    )


#: The PostgreSQL NOTIFY channel a decision-writing transaction signals on commit.
CHANGES_CHANNEL = "appwarden_decisions"
_WRITTEN_KEY = "appwarden.decisions_written"
_STAMP_CHUNK = 500
# Built once: every transaction that writes decisions runs them (W4; see `compliance.rules`).
_DECISIONS_OF_DEVICE = select(DecisionRecord).where(
    DecisionRecord.device_id == bindparam("device_id")
)
_STAMP = (
    update(DecisionRecord)
    .where(one_of(DecisionRecord.device_id, key="ids"))
    .values(written_at=bindparam("stamp"))
    .execution_options(synchronize_session=False)
)
# PostgreSQL: the last chunk's stamp and the NOTIFY in one round trip (a data-modifying WITH runs
# whether or not the query reads it).
_DECISION_TABLE = cast(Table, DecisionRecord.__table__)
_STAMP_AND_NOTIFY = select(func.pg_notify(bindparam("channel"), "")).add_cte(
    update(_DECISION_TABLE)
    .where(one_of(_DECISION_TABLE.c.device_id, key="ids"))
    .values(written_at=bindparam("stamp"))
    .returning(_DECISION_TABLE.c.device_id)
    .cte("stamped")
)


def written_devices(uow: UnitOfWork) -> set[int]:
    """The devices whose decisions this unit of work (re)wrote; the first call arranges for
    them to be stamped (and announced) as the transaction's last statements."""
    return uow.until_commit(_WRITTEN_KEY, set[int], lambda written: _stamp_written(uow, written))


def _stamp_written(uow: UnitOfWork, written: set[int]) -> None:
    if not written:
        return
    ids = sorted(written)
    stamp = datetime.now(UTC)
    postgresql = uow.dialect == "postgresql"
    for start in range(0, len(ids), _STAMP_CHUNK):
        chunk = {"ids": ids[start : start + _STAMP_CHUNK], "stamp": stamp}
        if postgresql and start + _STAMP_CHUNK >= len(ids):
            uow.session.execute(_STAMP_AND_NOTIFY, {**chunk, "channel": CHANGES_CHANNEL})
        else:
            uow.session.execute(_STAMP, chunk)


def next_decision(
    uow: UnitOfWork,
    device: Device,
    resource: str,
    current: DecisionResult,
    evaluator: DeviceEvaluator,
) -> DecisionResult | None:
    """What `current` becomes at its `valid_until` if no fact changes: the decision at that
    instant, or, when it is still the same there (a compliant state holds through the last
    instant of its proof), a microsecond later."""
    if current.valid_until is None:
        return None
    upcoming = current
    for instant in (current.valid_until, current.valid_until + _INSTANT):
        upcoming = decide_for(uow, device, resource, instant, evaluator.at(instant))
        if (upcoming.decision, upcoming.reasons) != (current.decision, current.reasons):
            break
    return upcoming


_INSTANT = timedelta(microseconds=1)


def _denying(reasons: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    return tuple(str(r["policy"]) for r in reasons if r.get("effect") == "deny")


def _unverified(reasons: Sequence[Mapping[str, Any]], policies: Iterable[str]) -> tuple[str, ...]:
    """Of these policies, those whose only state among the reasons is unknown."""
    return tuple(
        policy
        for policy in policies
        if [r.get("state") for r in reasons if r.get("policy") == policy]
        == [ComplianceState.UNKNOWN]
    )


def stored_decisions(
    uow: UnitOfWork, device_ids: Sequence[int], chunk: int = 2_000
) -> dict[int, dict[str, DecisionRecord]]:
    """The stored decisions of these devices by device and resource (every device has an
    entry), read a chunk of devices at a time, for `refresh_decisions(stored=...)`."""
    stored: dict[int, dict[str, DecisionRecord]] = {device_id: {} for device_id in device_ids}
    ids = list(device_ids)
    for start in range(0, len(ids), chunk):
        for record in uow.session.scalars(
            select(DecisionRecord).where(
                one_of(DecisionRecord.device_id, ids[start : start + chunk])
            )
        ):
            stored[record.device_id][record.resource] = record
    return stored


def refresh_decisions(
    uow: UnitOfWork,
    device: Device,
    outcomes: list[Outcome],
    evaluator: DeviceEvaluator | None = None,
    *,
    admit: frozenset[str] = frozenset(),
    stored: dict[str, DecisionRecord] | None = None,
    flush: bool = True,
) -> list[DecisionChanged]:
    """Recompute the device's materialised decisions at the unit of work's time, through the
    breaker (`access.breaker`; `admit`: policies whose held denies an admin releases); publish a
    DecisionChanged for each one that changed. `stored`: the device's decisions by resource, as
    `stored_decisions` read them for a batch (kept up to date here); else read here.
    `flush=False`: the writes wait for the session's next flush (a reaction's query, the next
    device's, the batch's end), so a batch's go to the store in fewer, larger statements."""
    # The evaluator read the device's resources already (its view): no second query.
    resources = set(evaluator.view.resources if evaluator else resources_of(uow, device.id))
    for outcome in outcomes:
        resources |= outcome.rules.deny
    if stored is None:
        stored = {
            r.resource: r
            for r in uow.session.scalars(_DECISIONS_OF_DEVICE, {"device_id": device.id})
        }
    changes = []
    written_devices(uow).add(device.id)
    evaluator = evaluator or DeviceEvaluator(uow, device)
    flips = DeviceFlips(uow, device, admit)
    versions = tuple((o.version.policy_id, o.version.id) for o in outcomes)
    for resource in sorted(resources | set(stored)):
        raw = decide_for(uow, device, resource, uow.now, outcomes)
        record = stored.get(resource)
        result = flips.live(raw, record)
        upcoming = flips.prepared(
            result, next_decision(uow, device, resource, raw, evaluator), record
        )
        old = Decision(record.decision) if record is not None else Decision.ALLOW
        denied_before = _denying(record.reasons) if record is not None else ()
        if record is None:
            record = DecisionRecord(device_id=device.id, resource=resource, changed_at=uow.now)
            uow.session.add(record)
            stored[resource] = record
        _write(record, result, upcoming)
        if old != result.decision:
            record.changed_at = uow.now
            denied = result.decision == Decision.DENY
            causes = _denying(result.reasons) if denied else denied_before
            change = DecisionChanged(
                device.id,
                resource,
                old,
                result.decision,
                causes,
                uow.now,
                versions,
                _unverified(result.reasons, causes) if denied else (),
            )
            changes.append(change)
    flips.finish()
    if flush:
        uow.session.flush()
    for change in changes:
        uow.publish(change)
    return changes


# Every column `_write` sets: a changed record is written whole (`changed_at` too), so that a
# batch's changed decisions share one UPDATE statement (an ORM flush groups consecutive rows by
# the columns they change: rows changing different ones went one or two to a statement).
_WRITTEN = (
    "decision",
    "reasons",
    "valid_until",
    "next_decision",
    "next_reasons",
    "next_valid_until",
)


def _write(record: DecisionRecord, result: DecisionResult, upcoming: DecisionResult | None) -> None:
    """The record's values, when they changed; `written_at` is left to the commit's stamp
    (`written_devices`), so a decision found the same again is not written by the flush."""
    values = (
        str(result.decision),
        list(result.reasons),
        result.valid_until,
        str(upcoming.decision) if upcoming else None,
        list(upcoming.reasons) if upcoming else None,
        upcoming.valid_until if upcoming else None,
    )
    if values == tuple(getattr(record, column) for column in _WRITTEN):
        return
    for column, value in zip(_WRITTEN, values, strict=True):
        setattr(record, column, value)
        flag_modified(record, column)
    flag_modified(record, "changed_at")  # moved only by a flip: the same columns either way
