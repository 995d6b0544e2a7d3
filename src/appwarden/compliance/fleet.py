"""Set-based evaluation of one policy version over the whole fleet, in SQL.

The same ordered rules as `compliance.evaluate`, expressed as joins and aggregates that run inside
the database (SQLite or PostgreSQL), so no Python code loops over devices to decide a state. Time
arithmetic is moved into bound parameters (T - grace, T - max_evidence_age) so both dialects only
compare instants. A property-based test checks this module against `evaluate` row for row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Select,
    and_,
    case,
    exists,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import CTE

from appwarden.compliance.evaluate import PolicyRules
from appwarden.db.base import UTCDateTime
from appwarden.db.statistics import bulk_read_settings, refresh_statistics
from appwarden.db.uow import UnitOfWork
from appwarden.devices.models import Coverage, Device, DeviceResource, Observation
from appwarden.exemptions.models import Exemption
from appwarden.identity.models import Person, PersonGroup
from appwarden.policies.models import PolicyFirstSeen, PolicyIdentifier
from appwarden.vocabulary import (
    NAMESPACE_PLATFORMS,
    PLATFORM_NAMESPACES,
    ComplianceState,
    Platform,
)


@dataclass(frozen=True, slots=True)
class FleetRow:
    """SQL's verdict for one in-scope device plus the instants needed to explain it."""

    device_id: int
    state: ComplianceState
    first_seen: datetime | None
    latest_presence: datetime | None
    cleared_at: datetime | None  # compliant: when the last sighting was proven gone
    oldest_unproven_proof: datetime | None  # unknown: the proof that expired first
    never_proven: int  # unknown: carried identifiers that never had an absence proof
    oldest_fresh_proof: datetime | None  # compliant: the proof that expires first
    exemption_id: int | None
    exemption_starts_at: datetime | None  # the continuous exempt period around now
    exemption_ends_at: datetime | None
    exemption_ended_at: datetime | None
    next_exemption_at: datetime | None
    underlying: ComplianceState
    present: tuple[str, ...]  # `namespace:value` of live identifiers, in rule order
    unverified: tuple[str, ...]  # carried identifiers without a fresh absence proof


def _at(value: datetime) -> ColumnElement[datetime]:
    return literal(value, UTCDateTime())


def _matches(ident: Any) -> ColumnElement[bool]:
    """Does the Observation row match the policy identifier (exactly, or by its glob)?"""
    return and_(
        Observation.namespace == ident.namespace,
        or_(
            Observation.value == ident.value,
            and_(
                ident.like_pattern.is_not(None),
                Observation.value.like(ident.like_pattern, escape="\\"),
            ),
        ),
    )


def _carries(platform: ColumnElement[str], namespace: ColumnElement[str]) -> ColumnElement[bool]:
    carried_by_unknown = sorted(ns.value for ns in PLATFORM_NAMESPACES[Platform.UNKNOWN])
    clauses = [and_(platform == Platform.UNKNOWN.value, namespace.in_(carried_by_unknown))]
    for ns, platforms in NAMESPACE_PLATFORMS.items():
        if platforms:
            clauses.append(
                and_(namespace == ns.value, platform.in_(sorted(p.value for p in platforms)))
            )
    return or_(*clauses)


def _in_scope(rules: PolicyRules) -> Select[int, str, int]:
    scope = rules.scope
    conditions: list[ColumnElement[bool]] = [
        Device.status == "active",
        Device.owner_id.is_not(None),
        Person.status == "active",
    ]
    for column, allowed in (
        (Device.platform, scope.platforms),
        (Device.form_factor, scope.form_factors),
        (Device.ownership, scope.ownership),
    ):
        if allowed is not None:
            conditions.append(or_(column == "unknown", column.in_(sorted(allowed))))
    if scope.access is not None:
        conditions.append(
            exists().where(
                DeviceResource.device_id == Device.id,
                DeviceResource.resource.in_(sorted(scope.access)),
            )
        )
    if scope.include_groups is not None:
        conditions.append(
            exists().where(
                PersonGroup.person_id == Person.id,
                PersonGroup.group_name.in_(sorted(scope.include_groups)),
            )
        )
    if scope.exclude_groups:
        conditions.append(
            ~exists().where(
                PersonGroup.person_id == Person.id,
                PersonGroup.group_name.in_(sorted(scope.exclude_groups)),
            )
        )
    if scope.exclude_people:
        conditions.append(Person.email.not_in(sorted(scope.exclude_people)))
    return (
        select(
            Device.id.label("device_id"),
            Device.platform.label("platform"),
            Person.id.label("person_id"),
        )
        .join(Person, Person.id == Device.owner_id)
        .where(*conditions)
    )


# The tables the fleet statement reads: their planner statistics are refreshed before it runs
# when missing or stale (db/statistics.py; PostgreSQL only).
FLEET_TABLES: tuple[str, ...] = tuple(
    model.__tablename__
    for model in (
        Device,
        Person,
        PersonGroup,
        DeviceResource,
        Observation,
        Coverage,
        PolicyIdentifier,
        PolicyFirstSeen,
        Exemption,
    )
)


def fleet_rows(uow: UnitOfWork, rules: PolicyRules, *, now: datetime) -> list[FleetRow]:
    """The state of every in-scope device under `rules` at `now`."""
    refresh_statistics(uow.engine, FLEET_TABLES, only_stale=True)
    with bulk_read_settings(uow.session):
        rows = uow.session.execute(_fleet_query(rules, now)).mappings().all()
    return [_fleet_row(r) for r in rows]


def _fleet_query(rules: PolicyRules, now: datetime) -> Select[Any]:
    """One statement: a chain of CTEs from scope to verdict, each built by a function below."""
    scoped = _in_scope(rules).cte("scoped")
    pi = _policy_identifiers(rules)
    presence = _presence(scoped, pi)
    proofs = _proofs(rules, scoped, pi)
    pairs = _pairs(scoped, pi)
    newest = _newest(proofs)
    clears = _clears(proofs, presence)
    facts = _facts(pairs, presence, newest, clears, cutoff=_at(now - rules.max_evidence_age))
    per_device = _per_device(facts)
    base = _base(rules, now, scoped, per_device)
    return _verdict(rules, now, base)


def _policy_identifiers(rules: PolicyRules) -> CTE:
    """The identifiers of the policy version being evaluated."""
    return select(PolicyIdentifier).where(PolicyIdentifier.version_id == rules.version_id).cte("pi")


def _presence(scoped: CTE, pi: CTE) -> CTE:
    """Latest and first sighting of each policy identifier on each in-scope device, any feed."""
    return (
        select(
            Observation.device_id,
            pi.c.namespace,
            pi.c.value,
            func.max(Observation.last_seen_at).label("last_seen"),
            func.min(Observation.first_seen_at).label("first_seen"),
        )
        .join(pi, _matches(pi.c))
        .where(Observation.device_id.in_(select(scoped.c.device_id)))
        .group_by(Observation.device_id, pi.c.namespace, pi.c.value)
        .cte("presence")
    )


def _proofs(rules: PolicyRules, scoped: CTE, pi: CTE) -> CTE:
    """Absence proofs: an allowed evidence kind covers the identifier and its own feed does not
    show it at that time."""
    shown = select(Observation.id).where(
        Observation.device_id == Coverage.device_id,
        Observation.source == Coverage.source,
        Observation.evidence_kind == Coverage.evidence_kind,
        _matches(pi.c),
        Observation.last_seen_at >= Coverage.observed_at,
    )
    return (
        select(
            Coverage.device_id,
            pi.c.namespace,
            pi.c.value,
            Coverage.observed_at,
        )
        .join(
            pi,
            and_(
                Coverage.namespace == pi.c.namespace, Coverage.value.in_([literal(""), pi.c.value])
            ),
        )
        .where(
            Coverage.device_id.in_(select(scoped.c.device_id)),
            Coverage.evidence_kind.in_(sorted(rules.evidence)),
            ~exists(shown),
        )
        .cte("proofs")
    )


def _pairs(scoped: CTE, pi: CTE) -> CTE:
    """One row per (in-scope device, policy identifier)."""
    return (
        select(scoped.c.device_id, scoped.c.platform, pi.c.namespace, pi.c.value)
        .select_from(scoped.join(pi, literal(True)))
        .cte("pairs")
    )


# Per (device, identifier): the newest proof, and the first proof after the latest sighting.
# Grouped once and joined, not asked per pair: a correlated subquery over the `proofs` CTE
# scans all of it for every pair (SQLite cannot index a CTE for it), quadratic in the fleet.
def _newest(proofs: CTE) -> CTE:
    """The newest absence proof of each (device, identifier)."""
    key = (proofs.c.device_id, proofs.c.namespace, proofs.c.value)
    return (
        select(*key, func.max(proofs.c.observed_at).label("newest_proof"))
        .group_by(*key)
        .cte("newest")
    )


def _clears(proofs: CTE, presence: CTE) -> CTE:
    """The first absence proof after the latest sighting of each (device, identifier)."""
    key = (proofs.c.device_id, proofs.c.namespace, proofs.c.value)
    return (
        select(*key, func.min(proofs.c.observed_at).label("first_clear"))
        .join(
            presence,
            and_(
                presence.c.device_id == proofs.c.device_id,
                presence.c.namespace == proofs.c.namespace,
                presence.c.value == proofs.c.value,
                proofs.c.observed_at > presence.c.last_seen,
            ),
        )
        .group_by(*key)
        .cte("clears")
    )


def _facts(
    pairs: CTE, presence: CTE, newest: CTE, clears: CTE, *, cutoff: ColumnElement[datetime]
) -> CTE:
    """Per (device, identifier): is it live, is it carried but unproven, and its instants."""

    def same_pair(table: CTE) -> ColumnElement[bool]:
        return and_(
            table.c.device_id == pairs.c.device_id,
            table.c.namespace == pairs.c.namespace,
            table.c.value == pairs.c.value,
        )

    # live: seen, and no proof after the latest sighting
    live = case(
        (
            and_(
                presence.c.last_seen.is_not(None),
                or_(
                    newest.c.newest_proof.is_(None),
                    newest.c.newest_proof <= presence.c.last_seen,
                ),
            ),
            1,
        ),
        else_=0,
    )
    unproven = case(
        (
            and_(
                _carries(pairs.c.platform, pairs.c.namespace),
                or_(newest.c.newest_proof.is_(None), newest.c.newest_proof < cutoff),
            ),
            1,
        ),
        else_=0,
    )
    return (
        select(
            pairs.c.device_id,
            (pairs.c.namespace + ":" + pairs.c.value).label("ident"),
            presence.c.first_seen,
            presence.c.last_seen,
            live.label("live"),
            unproven.label("unproven"),
            _carries(pairs.c.platform, pairs.c.namespace).label("carried"),
            newest.c.newest_proof,
            clears.c.first_clear,
        )
        .select_from(
            pairs.outerjoin(presence, same_pair(presence))
            .outerjoin(newest, same_pair(newest))
            .outerjoin(clears, same_pair(clears))
        )
        .cte("facts")
    )


def _per_device(facts: CTE) -> CTE:
    """The facts of each device's identifiers folded into counts, instants and name lists."""
    return (
        select(
            facts.c.device_id,
            func.sum(facts.c.live).label("live_count"),
            func.sum(facts.c.unproven).label("unproven_count"),
            func.min(case((facts.c.live == 1, facts.c.first_seen))).label("live_first_seen"),
            func.max(case((facts.c.live == 1, facts.c.last_seen))).label("latest_presence"),
            func.max(
                case((and_(facts.c.last_seen.is_not(None), facts.c.live == 0), facts.c.first_clear))
            ).label("cleared_at"),
            func.min(case((facts.c.unproven == 1, facts.c.newest_proof))).label(
                "oldest_unproven_proof"
            ),
            func.sum(
                case((and_(facts.c.unproven == 1, facts.c.newest_proof.is_(None)), 1), else_=0)
            ).label("never_proven"),
            func.min(case((facts.c.carried, facts.c.newest_proof))).label("oldest_fresh_proof"),
            # Identifier values never contain control characters, so a newline separates them.
            func.aggregate_strings(case((facts.c.live == 1, facts.c.ident)), "\n").label(
                "live_idents"
            ),
            func.aggregate_strings(case((facts.c.unproven == 1, facts.c.ident)), "\n").label(
                "unproven_idents"
            ),
        )
        .group_by(facts.c.device_id)
        .cte("per_device")
    )


def _window_end(e: Any) -> ColumnElement[Any]:
    """A window's end: its revocation when it was revoked early."""
    return case(
        (and_(e.revoked_at.is_not(None), e.revoked_at < e.ends_at), e.revoked_at),
        else_=e.ends_at,
    )


def _covering(e: Any, rules: PolicyRules, scoped: CTE) -> ColumnElement[bool]:
    """Is exemption window `e` one of this policy's, granted to the scoped device or its owner?"""
    return and_(
        e.policy_id == rules.policy_id,
        e.status.in_(["approved", "revoked"]),
        e.starts_at.is_not(None),
        e.ends_at.is_not(None),
        or_(e.device_id == scoped.c.device_id, e.person_id == scoped.c.person_id),
    )


def _exemption_columns(
    rules: PolicyRules, now: datetime, scoped: CTE
) -> dict[str, ColumnElement[Any]]:
    """Per scoped device: the window that exempts it now, the exempt period around now, the
    latest end before now and the next start after it (correlated scalar subqueries)."""
    ends, covering = _window_end(Exemption), _covering(Exemption, rules, scoped)
    active = (
        select(Exemption.id)
        .where(covering, Exemption.starts_at <= _at(now), ends > _at(now))
        .order_by(ends.desc(), Exemption.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    ended = select(func.max(ends)).where(covering, ends <= _at(now)).scalar_subquery()
    # The continuous exempt period around now (evaluate.exempt_period): touching or overlapping
    # windows are one period. Its start is the latest start no other window covers or touches,
    # its end the earliest end after now that no other window covers.
    other = aliased(Exemption)
    period_start = (
        select(func.max(Exemption.starts_at))
        .where(
            covering,
            Exemption.starts_at <= _at(now),
            ~select(other.id)
            .where(
                _covering(other, rules, scoped),
                other.starts_at < Exemption.starts_at,
                _window_end(other) >= Exemption.starts_at,
            )
            .correlate_except(other)  # the device (two levels up) and the window in question
            .exists(),
        )
        .scalar_subquery()
    )
    period_end = (
        select(func.min(ends))
        .where(
            covering,
            ends > _at(now),
            ~select(other.id)
            .where(
                _covering(other, rules, scoped), other.starts_at <= ends, ends < _window_end(other)
            )
            .correlate_except(other)
            .exists(),
        )
        .scalar_subquery()
    )
    upcoming = select(func.min(Exemption.starts_at)).where(covering, Exemption.starts_at > _at(now))
    return {
        "exemption_id": active.label("exemption_id"),
        "exemption_starts_at": case((active.is_not(None), period_start)).label(
            "exemption_starts_at"
        ),
        "exemption_ends_at": case((active.is_not(None), period_end)).label("exemption_ends_at"),
        "exemption_ended_at": ended.label("exemption_ended_at"),
        "next_exemption_at": upcoming.scalar_subquery().label("next_exemption_at"),
    }


def _base(rules: PolicyRules, now: datetime, scoped: CTE, per_device: CTE) -> CTE:
    """Every scoped device with its folded facts, stored first sighting and exemption instants."""
    stored = (
        select(PolicyFirstSeen.first_seen_at)
        .where(
            PolicyFirstSeen.policy_id == rules.policy_id,
            PolicyFirstSeen.device_id == scoped.c.device_id,
        )
        .scalar_subquery()
    )
    exemption = _exemption_columns(rules, now, scoped)
    query = select(
        scoped.c.device_id,
        per_device.c.live_count,
        per_device.c.unproven_count,
        per_device.c.live_first_seen,
        stored.label("stored_first_seen"),
        per_device.c.latest_presence,
        per_device.c.cleared_at,
        per_device.c.oldest_unproven_proof,
        per_device.c.never_proven,
        per_device.c.oldest_fresh_proof,
        per_device.c.live_idents,
        per_device.c.unproven_idents,
        exemption["exemption_id"],
        exemption["exemption_starts_at"],
        exemption["exemption_ends_at"],
        exemption["exemption_ended_at"],
        exemption["next_exemption_at"],
    ).select_from(scoped.outerjoin(per_device, per_device.c.device_id == scoped.c.device_id))
    return query.cte("base")


def _verdict(rules: PolicyRules, now: datetime, base: CTE) -> Select[Any]:
    """The decision rule over `base`: first seen, the underlying state, and exempt over it."""
    first_seen = case(
        (
            and_(
                base.c.stored_first_seen.is_not(None),
                base.c.stored_first_seen < base.c.live_first_seen,
            ),
            base.c.stored_first_seen,
        ),
        else_=base.c.live_first_seen,
    )
    # non_compliant ⟺ T ≥ due, with due = deadline if first seen before release, else
    # max(deadline, first_seen + grace), and at least the end of an exemption + grace.
    grace_cut = _at(now - rules.grace)
    overdue = and_(
        literal(now >= rules.deadline),
        or_(first_seen < _at(rules.release_at), first_seen <= grace_cut),
        or_(base.c.exemption_ended_at.is_(None), base.c.exemption_ended_at <= grace_cut),
    )
    underlying = case(
        (
            func.coalesce(base.c.live_count, 0) > 0,
            case((overdue, "non_compliant"), else_="action_required"),
        ),
        (func.coalesce(base.c.unproven_count, 0) == 0, "compliant"),
        else_="unknown",
    )
    return select(
        base,
        first_seen.label("first_seen"),
        underlying.label("underlying"),
        case((base.c.exemption_id.is_not(None), "exempt"), else_=underlying).label("state"),
    ).order_by(base.c.device_id)


def _fleet_row(r: Any) -> FleetRow:
    """One result row as a FleetRow, instants restored to aware UTC."""
    return FleetRow(
        device_id=r["device_id"],
        state=ComplianceState(r["state"]),
        first_seen=_utc(r["first_seen"]) if r["live_count"] else None,
        latest_presence=_utc(r["latest_presence"]),
        cleared_at=_utc(r["cleared_at"]),
        oldest_unproven_proof=_utc(r["oldest_unproven_proof"]),
        never_proven=int(r["never_proven"] or 0),
        oldest_fresh_proof=_utc(r["oldest_fresh_proof"]),
        exemption_id=r["exemption_id"],
        exemption_starts_at=_utc(r["exemption_starts_at"]),
        exemption_ends_at=_utc(r["exemption_ends_at"]),
        exemption_ended_at=_utc(r["exemption_ended_at"]),
        next_exemption_at=_utc(r["next_exemption_at"]),
        underlying=ComplianceState(r["underlying"]),
        present=_split(r["live_idents"]),
        unverified=_split(r["unproven_idents"]),
    )


def _split(text: str | None) -> tuple[str, ...]:
    """Aggregated identifiers, in the order the rules list them (namespace, then value)."""
    if not text:
        return ()
    return tuple(sorted(text.split("\n"), key=lambda item: tuple(item.split(":", 1))))


def _utc(value: object) -> datetime | None:
    """Aggregates and CASE results lose the column type: restore an aware UTC instant."""
    if value is None:
        return None
    if isinstance(value, str):  # SQLite keeps instants as UTC text
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
