"""The state of (policy version, device, T); the first rule that matches wins (docs/architecture.md,
"State rules and the decision rule").

Pure: plain data in, an Evaluation out, no I/O. The set-based fleet evaluation in
`compliance.fleet` must agree with this module row for row (a property-based test checks it).

Rules, in order:
  1. not_applicable  a listed scope key does not match, the owner left, the device is retired,
                     or the device has no owner
  2. exempt          an approved exemption covers the device or its owner at T
  3. violating       a report shows an identifier of the policy and no later report that can prove
                     absence covers it: action_required before the due time, non_compliant after
  4. compliant       every identifier the platform can carry is covered by a fresh absence proof
  5. unknown         otherwise
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from appwarden.catalog.matching import key_matches
from appwarden.vocabulary import ComplianceState, DeviceStatus, PersonStatus, platform_carries

State = ComplianceState


@dataclass(frozen=True, slots=True)
class IdentifierRule:
    namespace: str
    value: str  # catalog match key; may be a glob for pattern namespaces
    is_pattern: bool = False

    def matches(self, namespace: str, key: str) -> bool:
        if namespace != self.namespace:
            return False
        if self.is_pattern:
            return key_matches(namespace, self.value, key)
        return key == self.value


@dataclass(frozen=True, slots=True)
class ScopeRule:
    """None means the key was omitted: it matches every device."""

    platforms: frozenset[str] | None = None
    form_factors: frozenset[str] | None = None
    ownership: frozenset[str] | None = None
    access: frozenset[str] | None = None
    include_groups: frozenset[str] | None = None
    exclude_groups: frozenset[str] = frozenset()
    exclude_people: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class PolicyRules:
    version_id: int
    policy_id: str
    release_at: datetime
    deadline: datetime
    grace: timedelta
    max_evidence_age: timedelta
    evidence: frozenset[str]
    unknown_deny: bool
    deny: frozenset[str]
    identifiers: tuple[IdentifierRule, ...]
    scope: ScopeRule = field(default_factory=ScopeRule)


@dataclass(frozen=True, slots=True)
class Owner:
    email: str
    status: str = PersonStatus.ACTIVE
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Seen:
    """An observation: feed (source, evidence kind) saw identifier (namespace, key)."""

    source: str
    evidence_kind: str
    namespace: str
    key: str
    first_seen_at: datetime
    last_seen_at: datetime


@dataclass(frozen=True, slots=True)
class Covered:
    """The latest time a feed listed `namespace` completely (value "") or answered for one
    identifier (value = that identifier)."""

    source: str
    evidence_kind: str
    namespace: str
    value: str
    observed_at: datetime


@dataclass(frozen=True, slots=True)
class Watched:
    """The observations evaluation under some rules can look at: those of an exact identifier
    of theirs, and every one in a namespace where one of theirs is a pattern. A view holding
    only these evaluates as one holding all of a device's (a phone has ~90 apps; a policy names
    a few): nothing else can show an identifier (`_facts`)."""

    keys: frozenset[tuple[str, str]]
    namespaces: frozenset[str]

    @classmethod
    def by(cls, rules: Iterable[PolicyRules]) -> Watched:
        identifiers = [i for r in rules for i in r.identifiers]
        return cls(
            frozenset((i.namespace, i.value) for i in identifiers if not i.is_pattern),
            frozenset(i.namespace for i in identifiers if i.is_pattern),
        )

    def wants(self, namespace: str, key: str) -> bool:
        return namespace in self.namespaces or (namespace, key) in self.keys


_SeenIndex = tuple[dict[str, list[Seen]], dict[tuple[str, str], list[Seen]]]


@dataclass(frozen=True, slots=True)
class DeviceView:
    device_id: int
    platform: str
    form_factor: str
    ownership: str
    status: str
    resources: frozenset[str]
    owner: Owner | None
    first_report_at: datetime | None = None
    observations: tuple[Seen, ...] = ()
    coverage: tuple[Covered, ...] = ()
    _index: _SeenIndex | None = field(default=None, init=False, repr=False, compare=False)
    # by id(rules), with the rules held so that the id stays theirs (hashing rules costs more)
    _facts_by_rules: dict[int, tuple[PolicyRules, tuple[_IdentifierFacts, ...]]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def seen_index(self) -> _SeenIndex:
        """The observations by namespace and by exact key, made on first use and kept: a device
        is evaluated at several instants (the decision and the one prepared for its end)."""
        if self._index is None:
            by_namespace: dict[str, list[Seen]] = {}
            by_key: dict[tuple[str, str], list[Seen]] = {}
            for s in self.observations:
                by_namespace.setdefault(s.namespace, []).append(s)
                by_key.setdefault((s.namespace, s.key), []).append(s)
            object.__setattr__(self, "_index", (by_namespace, by_key))
        assert self._index is not None
        return self._index

    def facts_under(self, rules: PolicyRules) -> tuple[_IdentifierFacts, ...]:
        """What the device's observations and coverage say of each of the rules' identifiers,
        made on first use and kept: they do not depend on the instant evaluated."""
        if self._facts_by_rules is None:
            object.__setattr__(self, "_facts_by_rules", {})
        assert self._facts_by_rules is not None
        known = self._facts_by_rules.get(id(rules))
        if known is None:
            known = self._facts_by_rules[id(rules)] = (rules, _facts(rules, self))
        return known[1]


@dataclass(frozen=True, slots=True)
class ExemptionWindow:
    """An approved exemption; `ends_at` is the revocation time when it was revoked early."""

    exemption_id: int
    starts_at: datetime
    ends_at: datetime


@dataclass(frozen=True, slots=True)
class Evaluation:
    state: State
    since: datetime | None
    due: datetime | None = None
    first_seen: datetime | None = None
    reasons: tuple[str, ...] = ()
    valid_until: datetime | None = None  # the next instant the state may change without new facts


def scope_mismatch(scope: ScopeRule, device: DeviceView) -> str | None:
    """The reason the device is out of scope, or None. An `unknown` value is in scope."""
    for key, allowed, value in (
        ("platforms", scope.platforms, device.platform),
        ("form_factors", scope.form_factors, device.form_factor),
        ("ownership", scope.ownership, device.ownership),
    ):
        if allowed is not None and value != "unknown" and value not in allowed:
            return f"out_of_scope:{key}"
    if scope.access is not None and not (scope.access & device.resources):
        return "out_of_scope:access"
    owner = device.owner
    if owner is not None:
        if scope.include_groups is not None and not (scope.include_groups & owner.groups):
            return "out_of_scope:include_groups"
        if scope.exclude_groups & owner.groups:
            return "out_of_scope:exclude_groups"
        if owner.email in scope.exclude_people:
            return "out_of_scope:exclude"
    return None


def not_applicable_reason(rules: PolicyRules, device: DeviceView) -> str | None:
    mismatch = scope_mismatch(rules.scope, device)
    if mismatch:
        return mismatch
    if device.status == DeviceStatus.RETIRED:
        return "device_retired"
    if device.owner is None:
        return "no_owner"
    if device.owner.status == PersonStatus.LEFT:
        return "person_left"
    return None


def _shows(seen_in: Iterable[Seen], proof: Covered, ident: IdentifierRule) -> bool:
    """Did the proof's own feed list the identifier as present at the proof's time?"""
    return any(
        seen.source == proof.source
        and seen.evidence_kind == proof.evidence_kind
        and ident.matches(seen.namespace, seen.key)
        and seen.last_seen_at >= proof.observed_at
        for seen in seen_in
    )


def _absence_proofs(
    rules: PolicyRules,
    device: DeviceView,
    ident: IdentifierRule,
    seen_in: Iterable[Seen] | None = None,
) -> list[Covered]:
    """Reports of an allowed evidence kind that cover the identifier and do not show it;
    `seen_in`: the device's observations that match the identifier (or a superset of them),
    when the caller has them (only those can show it)."""
    observations = device.observations if seen_in is None else tuple(seen_in)
    return [
        proof
        for proof in device.coverage
        if proof.evidence_kind in rules.evidence
        and proof.namespace == ident.namespace
        and proof.value in ("", ident.value)
        and not _shows(observations, proof, ident)
    ]


@dataclass(frozen=True, slots=True)
class _IdentifierFacts:
    ident: IdentifierRule
    last_seen: datetime | None  # latest presence of the identifier in any feed
    first_seen: datetime | None
    proofs: tuple[datetime, ...]  # observed_at of absence proofs

    @property
    def live(self) -> bool:
        return self.last_seen is not None and not any(p > self.last_seen for p in self.proofs)


def _facts(rules: PolicyRules, device: DeviceView) -> tuple[_IdentifierFacts, ...]:
    # Observations indexed by namespace and by exact key, so a policy of many identifiers does
    # not scan a phone's ~90 apps once per identifier: an exact identifier is a lookup, a
    # pattern scans its namespace. Only what matches the identifier can show it (`_shows`).
    by_namespace, by_key = device.seen_index()
    facts = []
    for ident in rules.identifiers:
        if ident.is_pattern:
            in_namespace = by_namespace.get(ident.namespace, ())
            seen = [s for s in in_namespace if ident.matches(s.namespace, s.key)]
        else:
            seen = by_key.get((ident.namespace, ident.value)) or []
        proofs = _absence_proofs(rules, device, ident, seen) if device.coverage else ()
        facts.append(
            _IdentifierFacts(
                ident=ident,
                last_seen=max((s.last_seen_at for s in seen), default=None),
                first_seen=min((s.first_seen_at for s in seen), default=None),
                proofs=tuple(p.observed_at for p in proofs),
            )
        )
    return tuple(facts)


def due_time(rules: PolicyRules, first_seen: datetime) -> datetime:
    """A violation seen before release is due at the deadline; a later one gets its grace."""
    if first_seen < rules.release_at:
        return rules.deadline
    return max(rules.deadline, first_seen + rules.grace)


def underlying_state(
    rules: PolicyRules,
    device: DeviceView,
    stored_first_seen: datetime | None,
    now: datetime,
    *,
    exemption_ended_at: datetime | None = None,
) -> Evaluation:
    """Rules 3-5 for an in-scope device. After an exemption ends, a violation gets `grace`
    from the end."""
    facts = device.facts_under(rules)
    live = [f for f in facts if f.live]
    if live:
        first_seen = min(f.first_seen for f in live if f.first_seen is not None)
        if stored_first_seen is not None:
            first_seen = min(first_seen, stored_first_seen)
        due = due_time(rules, first_seen)
        if exemption_ended_at is not None:
            due = max(due, exemption_ended_at + rules.grace)
        reasons: list[str] = [f"present:{f.ident.namespace}:{f.ident.value}" for f in live]
        latest_presence = max(f.last_seen for f in live if f.last_seen is not None)
        if latest_presence < now - rules.max_evidence_age:
            reasons.append("evidence_stale")
        if now < due:
            return Evaluation(
                State.ACTION_REQUIRED,
                since=max(rules.release_at, first_seen),
                due=due,
                first_seen=first_seen,
                reasons=tuple(reasons),
                valid_until=due,
            )
        return Evaluation(
            State.NON_COMPLIANT,
            since=max(rules.release_at, due),
            due=due,
            first_seen=first_seen,
            reasons=tuple(reasons),
        )

    carried = [f for f in facts if platform_carries(device.platform, f.ident.namespace)]
    cutoff = now - rules.max_evidence_age
    unproven = [f for f in carried if not any(p >= cutoff for p in f.proofs)]
    if not unproven:
        # When absence was proven: the first proof after the last sighting, for what was seen.
        cleared = [
            min(p for p in f.proofs if p > f.last_seen) for f in facts if f.last_seen is not None
        ]
        since = max([rules.release_at, *cleared])
        expiry = min((max(f.proofs) + rules.max_evidence_age for f in carried), default=None)
        return Evaluation(
            State.COMPLIANT,
            since=since,
            reasons=("absence_proven",),
            valid_until=expiry,
        )
    unverified = tuple(f"unverified:{f.ident.namespace}:{f.ident.value}" for f in unproven)
    # Compliance ended when the first proof expired; it never began if something was never proven.
    if all(f.proofs for f in unproven):
        since = max(rules.release_at, min(max(f.proofs) for f in unproven) + rules.max_evidence_age)
    else:
        since = rules.release_at
    return Evaluation(State.UNKNOWN, since=since, reasons=unverified)


def evaluate(
    rules: PolicyRules,
    device: DeviceView,
    *,
    now: datetime,
    exemptions: Iterable[ExemptionWindow] = (),
    stored_first_seen: datetime | None = None,
) -> Evaluation:
    """The state of the device under the policy version at `now`."""
    reason = not_applicable_reason(rules, device)
    if reason:
        return Evaluation(State.NOT_APPLICABLE, since=None, reasons=(reason,))
    windows = list(exemptions)
    ended_at = max((e.ends_at for e in windows if e.ends_at <= now), default=None)
    base = underlying_state(rules, device, stored_first_seen, now, exemption_ended_at=ended_at)
    active = [e for e in windows if e.starts_at <= now < e.ends_at]
    if not active:
        # An exemption that ended is where the following state began; one that starts later is
        # when this state ends without any new fact.
        since = base.since
        if ended_at is not None and since is not None:
            since = max(since, ended_at)
        starts = [e.starts_at for e in windows if e.starts_at > now]
        horizon = [t for t in (base.valid_until, *starts) if t is not None]
        return replace(base, since=since, valid_until=min(horizon, default=None))
    window = max(active, key=lambda e: (e.ends_at, e.exemption_id))
    period_start, period_end = exempt_period(windows, now)
    return Evaluation(
        State.EXEMPT,
        since=max(rules.release_at, period_start),
        due=base.due,
        first_seen=base.first_seen,
        reasons=(f"exemption:{window.exemption_id}", f"underlying:{base.state}", *base.reasons),
        valid_until=period_end,
    )


def exempt_period(windows: list[ExemptionWindow], now: datetime) -> tuple[datetime, datetime]:
    """The continuous exempt period around `now` (some window is active): windows that overlap
    or touch (a renewal starting when the old one ends) are one period. It starts at the latest
    window start not covered or touched by another window, and ends at the earliest window end
    after `now` that no other window covers (`fleet.py` computes the same in SQL)."""
    starts = max(
        w.starts_at
        for w in windows
        if w.starts_at <= now and not any(o.starts_at < w.starts_at <= o.ends_at for o in windows)
    )
    ends = min(
        w.ends_at
        for w in windows
        if w.ends_at > now and not any(o.starts_at <= w.ends_at < o.ends_at for o in windows)
    )
    return starts, ends


IN_SCOPE_STATES = frozenset(State) - {State.NOT_APPLICABLE}


# Evidence the device or its owner gave about itself: it proves who answered, not what is
# installed (docs/targeted-check.md, "What a signed answer proves").
SELF_REPORTED_KINDS = frozenset({"targeted_check", "attestation"})


def self_reported(rules: PolicyRules, device: DeviceView, now: datetime) -> bool:
    """Does absence rest, for some identifier the platform carries, only on what the device or
    its owner said (a targeted check, an attestation) rather than on an inventory?"""
    cutoff = now - rules.max_evidence_age
    for ident in rules.identifiers:
        if not platform_carries(device.platform, ident.namespace):
            continue
        fresh = [p for p in _absence_proofs(rules, device, ident) if p.observed_at >= cutoff]
        if fresh and all(p.evidence_kind in SELF_REPORTED_KINDS for p in fresh):
            return True
    return False
