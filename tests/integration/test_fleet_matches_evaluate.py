"""The set-based fleet evaluation agrees with the per-device `evaluate`, row for row (docs/architecture.md).

Hypothesis generates small fleets (one policy version, a few people and devices, observations and
coverage from several feeds, exemptions, stored first-seen times) whose instants mostly come from a
handful of points on a day grid, so that ties — where two implementations of "before", "after"
and "within" most easily drift apart — happen in nearly every example. The rows are inserted directly with the models, then
both sides are computed at one or more instants T in a read-only unit of work and compared:

* the devices `fleet_rows` returns are exactly those `evaluate` does not call `not_applicable`;
* for each of them `evaluation_from_row` and `evaluate` give the same state, since, due,
  first_seen, reasons and valid_until.

A few hand-written tests pin the tricky ties to the state the rules ask for, on both sides.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, inspect, select

from appwarden.catalog.matching import is_pattern, like_pattern
from appwarden.compliance.evaluate import Evaluation
from appwarden.compliance.fleet import fleet_rows
from appwarden.compliance.rules import device_views, rules_of
from appwarden.compliance.service import evaluate_view, evaluation_from_row
from appwarden.db.uow import unit_of_work
from appwarden.devices.models import (
    Coverage,
    Device,
    DeviceResource,
    Observation,
    Report,
)
from appwarden.exemptions.models import Exemption
from appwarden.identity.models import Person, PersonGroup
from appwarden.policies.models import Policy, PolicyFirstSeen, PolicyIdentifier, PolicyVersion
from appwarden.vocabulary import ComplianceState
from appwarden.wiring import metadata

BASE = datetime(2020, 7, 10, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
MINUTE = timedelta(minutes=1)
# Whole days plus at most a minute either way: grace and max_evidence_age are whole days, so
# "T - max_evidence_age", "first_seen + grace" and "release_at" land on each other very often.
GRID = tuple(BASE + d * DAY + m * MINUTE for d in range(-4, 5) for m in (0, -1, 1))
POLICY_ID = "tiktok-mobile-email"
OTHER_POLICY_ID = "other-policy"  # decoy: its exemptions and first-seen times must not count

IDENTIFIER_POOL = (
    ("android_package", "com.zhiliaoapp.musically"),
    ("android_package", "com.ss.android.ugc.trill"),
    ("apple_bundle_id", "com.zhiliaoapp.musically"),
    ("windows_program", "tiktok*|tiktok*"),
    ("display_name", "tiktok"),
    ("display_name", "tiktok*"),
)
# Observed match keys: the identifiers themselves, values the globs match, and decoys.
OBSERVED_POOL = (
    ("android_package", "com.zhiliaoapp.musically"),
    ("android_package", "com.ss.android.ugc.trill"),
    ("android_package", "com.zhiliaoapp.Musically"),  # android ids are case-sensitive: a decoy
    ("android_package", "com.example.notes"),
    ("apple_bundle_id", "com.zhiliaoapp.musically"),
    ("apple_bundle_id", "com.example.notes"),
    ("windows_program", "tiktok|tiktok pte. ltd."),
    ("windows_program", "tiktok lite|tiktok pte. ltd."),
    ("windows_program", "tiktok_lite|tiktok"),
    ("windows_program", "tiktok|"),  # no publisher: the glob needs "tiktok" after the bar
    ("windows_program", "mytiktok|tiktok"),
    ("windows_program", "notepad++|notepad++ team"),
    ("display_name", "tiktok"),
    ("display_name", "tiktok lite"),
    ("display_name", "notes"),
    ("web_domain", "tiktok.com"),
)
COVERAGE_POOL = (
    *((ns, "") for ns in sorted({ns for ns, _ in OBSERVED_POOL})),
    *IDENTIFIER_POOL,
    ("android_package", "com.example.notes"),
    ("windows_program", "tiktok|tiktok pte. ltd."),
)
SOURCES = ("a", "b")
EVIDENCE_KINDS = ("inventory", "managed_only", "targeted_check", "attestation")
PROOF_KINDS = ("inventory", "targeted_check", "attestation")
GROUPS = ("staff", "eng", "contractors")
PLATFORMS = ("android", "ios", "ipados", "macos", "windows", "linux", "chromeos", "unknown")
FORM_FACTORS = ("phone", "tablet", "laptop", "desktop", "unknown")
OWNERSHIPS = ("corporate", "personal", "unknown")
RESOURCES = ("email", "webmail")


def email(index: int) -> str:
    return f"p{index}@example.com"


# ---------------------------------------------------------------------------------------------
# A fleet as plain data (readable when Hypothesis prints a falsifying example)


@dataclass(frozen=True)
class PolicySpec:
    release_at: datetime
    deadline: datetime
    grace_days: int
    max_age_days: int
    evidence: tuple[str, ...]
    unknown_deny: bool
    scope: dict
    identifiers: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class FeedSpec:
    source: str
    kind: str
    # (namespace, value, first_seen_at, last_seen_at)
    observations: tuple[tuple[str, str, datetime, datetime], ...] = ()
    # (namespace, value, observed_at); value "" covers the whole namespace
    coverage: tuple[tuple[str, str, datetime], ...] = ()


@dataclass(frozen=True)
class DeviceSpec:
    platform: str = "android"
    form_factor: str = "phone"
    ownership: str = "corporate"
    owner: int | None = 0
    status: str = "active"
    resources: tuple[str, ...] = ("email",)
    first_report_at: datetime | None = None
    feeds: tuple[FeedSpec, ...] = ()


@dataclass(frozen=True)
class PersonSpec:
    status: str = "active"
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExemptionSpec:
    policy_id: str
    person: int | None  # exactly one of person / device
    device: int | None
    status: str
    starts_at: datetime
    ends_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class FleetSpec:
    policy: PolicySpec
    people: tuple[PersonSpec, ...] = (PersonSpec(),)
    devices: tuple[DeviceSpec, ...] = ()
    exemptions: tuple[ExemptionSpec, ...] = ()
    # (policy id, device index, first_seen_at)
    first_seen: tuple[tuple[str, int, datetime], ...] = ()
    at: tuple[datetime, ...] = field(default=(BASE,))


# ---------------------------------------------------------------------------------------------
# Strategies

instants = st.sampled_from(GRID)


def mostly(pool: list[datetime]) -> st.SearchStrategy[datetime]:
    """Usually an instant of the example's small pool (so that ties abound), else any on the grid."""
    return st.integers(0, 3).flatmap(lambda i: st.sampled_from(pool) if i else instants)


def maybe_list(values: tuple[str, ...]) -> st.SearchStrategy[list[str] | None]:
    """Mostly omitted (matches everything), else a small non-empty list."""
    listed = st.lists(st.sampled_from(values), min_size=1, max_size=4, unique=True)
    return st.sampled_from((False, False, True)).flatmap(lambda on: listed if on else st.none())


@st.composite
def scopes(draw: st.DrawFn) -> dict:
    scope: dict = {}
    for key, values in (
        ("platforms", PLATFORMS),
        ("form_factors", FORM_FACTORS),
        ("ownership", OWNERSHIPS),
        ("access", RESOURCES),
    ):
        chosen = draw(maybe_list(values))
        if chosen is not None:
            scope[key] = chosen
    if draw(st.sampled_from((False, False, True))):
        people: dict = {}
        for key, values in (
            ("include_groups", GROUPS),
            ("exclude_groups", GROUPS),
            # upper case on purpose: the rules compare e-mail addresses lower-cased
            ("exclude", (email(0), email(1).upper(), email(3))),
        ):
            chosen = draw(maybe_list(values))
            if chosen is not None:
                people[key] = chosen
        scope["people"] = people
    return scope


@st.composite
def policies(draw: st.DrawFn) -> PolicySpec:
    release_at = draw(instants)
    # Often a short notice (within grace of the release), so that grace decides the due time.
    later = [t for t in GRID if t >= release_at]
    soon = [t for t in later if t <= release_at + 3 * DAY]
    deadline = draw(st.sampled_from(soon) | st.sampled_from(later))
    return PolicySpec(
        release_at=release_at,
        deadline=deadline,
        grace_days=draw(st.integers(0, 3)),
        max_age_days=draw(st.integers(1, 10)),
        evidence=tuple(
            draw(st.lists(st.sampled_from(PROOF_KINDS), min_size=1, max_size=3, unique=True))
        ),
        unknown_deny=draw(st.booleans()),
        scope=draw(scopes()),
        identifiers=tuple(
            draw(st.lists(st.sampled_from(IDENTIFIER_POOL), min_size=1, max_size=4, unique=True))
        ),
    )


@st.composite
def devices(
    draw: st.DrawFn, policy: PolicySpec, people_count: int, pool: list[datetime]
) -> DeviceSpec:
    # What the policy names is reported more often than the rest of the pools.
    named = tuple(i for i in policy.identifiers if "*" not in i[1])
    observed = OBSERVED_POOL + named * 2
    covered = COVERAGE_POOL + (*((ns, "") for ns, _ in policy.identifiers), *policy.identifiers) * 2
    feeds = draw(st.sampled_from((1, 2, 2, 3)))
    feed_keys = draw(
        st.lists(
            st.tuples(st.sampled_from(SOURCES), st.sampled_from(EVIDENCE_KINDS)),
            min_size=feeds,
            max_size=feeds,
            unique=True,
        )
    )
    sightings = {}
    for key in feed_keys:
        sightings[key] = []
        for namespace, value in draw(st.lists(st.sampled_from(observed), max_size=4, unique=True)):
            first, last = sorted((draw(mostly(pool)), draw(mostly(pool))))
            sightings[key].append((namespace, value, first, last))
    # A report's time is often exactly a sighting of this device — of its own feed (the report
    # shows it) or of another feed (a proof at the very instant of a sighting is not *later*) —
    # and otherwise older or newer than the sightings.
    lasts = sorted({o[3] for rows in sightings.values() for o in rows})
    report_times = mostly(lasts or pool)
    feed_list = tuple(
        FeedSpec(
            source,
            kind,
            tuple(sightings[source, kind]),
            tuple(
                (namespace, value, draw(report_times))
                for namespace, value in draw(
                    st.lists(st.sampled_from(covered), max_size=4, unique=True)
                )
            ),
        )
        for source, kind in feed_keys
    )

    def pick(key: str, values: tuple[str, ...]) -> str:
        """Mostly a value the scope lists (so that most devices are in scope), else any."""
        listed = policy.scope.get(key) or values
        return draw(st.integers(0, 4).flatmap(lambda i: st.sampled_from(listed if i else values)))

    return DeviceSpec(
        platform=pick("platforms", PLATFORMS),
        form_factor=pick("form_factors", FORM_FACTORS),
        ownership=pick("ownership", OWNERSHIPS),
        owner=draw(
            st.sampled_from(
                (None, *range(people_count), *range(people_count), *range(people_count))
            )
        ),
        status=draw(st.sampled_from(("active",) * 5 + ("retired",))),
        resources=tuple(
            draw(st.sampled_from(((), ("email",), ("webmail",), RESOURCES, RESOURCES, RESOURCES)))
        ),
        first_report_at=draw(st.none() | instants),
        feeds=feed_list,
    )


@st.composite
def exemptions(
    draw: st.DrawFn, people_count: int, device_count: int, pool: list[datetime]
) -> ExemptionSpec:
    on_person = device_count == 0 or draw(st.booleans())
    starts_at, ends_at = sorted((draw(mostly(pool)), draw(mostly(pool))))
    return ExemptionSpec(
        policy_id=draw(st.sampled_from((POLICY_ID,) * 5 + (OTHER_POLICY_ID,))),
        person=draw(st.integers(0, people_count - 1)) if on_person else None,
        device=None if on_person else draw(st.integers(0, device_count - 1)),
        status=draw(st.sampled_from(("approved",) * 4 + ("revoked", "requested", "denied"))),
        starts_at=starts_at,
        ends_at=ends_at,
        revoked_at=draw(mostly(pool)) if draw(st.sampled_from((False, False, True))) else None,
    )


@st.composite
def fleets(draw: st.DrawFn) -> FleetSpec:
    policy = draw(policies())
    # Most instants of the example come from this handful, so that they coincide often.
    pool = sorted(
        {
            policy.release_at,
            policy.deadline,
            *draw(st.lists(instants, min_size=1, max_size=3)),
        }
    )
    people = tuple(
        PersonSpec(
            status=draw(st.sampled_from(("active",) * 4 + ("left",))),
            groups=tuple(
                draw(st.lists(st.sampled_from(GROUPS), min_size=1, max_size=2, unique=True))
                if draw(st.integers(0, 3))
                else ()
            ),
        )
        for _ in range(draw(st.integers(1, 4)))
    )
    count = draw(st.integers(0, 8))
    device_list = tuple(
        draw(st.lists(devices(policy, len(people), pool), min_size=count, max_size=count))
    )
    exemption_list = tuple(
        draw(st.lists(exemptions(len(people), len(device_list), pool), max_size=4))
    )
    first_seen = ()
    if device_list:
        first_seen = tuple(
            draw(
                st.lists(
                    st.tuples(
                        st.sampled_from((POLICY_ID, POLICY_ID, OTHER_POLICY_ID)),
                        st.integers(0, len(device_list) - 1),
                        mostly(pool),
                    ),
                    max_size=3,
                    unique_by=lambda row: (row[0], row[1]),
                )
            )
        )
    # T: often exactly an instant where some rule flips — the release, the deadline, a sighting
    # plus grace, a proof plus max_evidence_age, an exemption's start or end (plus grace).
    grace, max_age = policy.grace_days * DAY, policy.max_age_days * DAY
    edges = {policy.release_at, policy.deadline}
    for d in device_list:
        for feed in d.feeds:
            edges.update(o[2] + grace for o in feed.observations)
            edges.update(o[3] for o in feed.observations)
            edges.update(c[2] + max_age for c in feed.coverage)
    for e in exemption_list:
        ends = min(e.ends_at, e.revoked_at) if e.revoked_at else e.ends_at
        edges.update((e.starts_at, ends, ends + grace))
    edges.update(row[2] + grace for row in first_seen)
    at = tuple(
        draw(
            st.lists(st.sampled_from(sorted(edges)) | instants, min_size=1, max_size=3, unique=True)
        )
    )
    return FleetSpec(policy, people, device_list, exemption_list, first_seen, at)


# ---------------------------------------------------------------------------------------------
# Loading a spec into the store and evaluating it both ways


def clear(engine) -> None:
    """Empty every table, children first (the `store` fixture is per test, not per example)."""
    with unit_of_work(engine, now=BASE) as uow:
        present = set(inspect(uow.session.connection()).get_table_names())
        for table in reversed(metadata().sorted_tables):
            if table.name in present:  # a model whose migration is not written yet has no rows
                uow.session.execute(delete(table))


def load(engine, spec: FleetSpec) -> int:
    """Insert the fleet; return the policy version id."""
    clear(engine)
    p = spec.policy
    with unit_of_work(engine, now=BASE) as uow:
        session = uow.session
        created = BASE - 30 * DAY
        session.add_all(
            [
                Policy(id=POLICY_ID, title="Mandatory removal of TikTok", created_at=created),
                Policy(id=OTHER_POLICY_ID, title="Another policy", created_at=created),
            ]
        )
        version = PolicyVersion(
            policy_id=POLICY_ID,
            number=1,
            state="active",
            document={
                "metadata": {"id": POLICY_ID, "title": "Mandatory removal of TikTok"},
                "spec": {"scope": p.scope},
            },
            source_text="placeholder",
            source_name="policy.yaml",
            content_hash="0" * 64,
            # a digest of what the version holds, as a stored document's is: evaluation keeps a
            # released version's identifiers under it, and the examples reuse the version id
            document_hash=hashlib.sha256(repr(p).encode()).hexdigest(),
            created_at=created,
            release_at=p.release_at,
            deadline=p.deadline,
            grace_seconds=p.grace_days * 86400,
            max_evidence_age_seconds=p.max_age_days * 86400,
            unknown_deny=p.unknown_deny,
            evidence=list(p.evidence),
            deny_resources=["email"],
        )
        session.add(version)
        session.flush()
        for namespace, value in p.identifiers:
            session.add(
                PolicyIdentifier(
                    version_id=version.id,
                    namespace=namespace,
                    value=value,
                    like_pattern=like_pattern(value) if is_pattern(namespace, value) else None,
                )
            )
        people = []
        for index, person in enumerate(spec.people):
            row = Person(
                email=email(index),
                status=person.status,
                created_at=created,
                left_at=created if person.status == "left" else None,
            )
            session.add(row)
            people.append(row)
        session.flush()
        for row, person in zip(people, spec.people, strict=True):
            session.add_all(PersonGroup(person_id=row.id, group_name=g) for g in person.groups)
        device_rows = []
        for d in spec.devices:
            row = Device(
                platform=d.platform,
                form_factor=d.form_factor,
                ownership=d.ownership,
                owner_id=None if d.owner is None else people[d.owner].id,
                status=d.status,
                retired_at=created if d.status == "retired" else None,
                first_report_at=d.first_report_at,
                created_at=created,
            )
            session.add(row)
            device_rows.append(row)
        session.flush()
        for row, d in zip(device_rows, spec.devices, strict=True):
            session.add_all(DeviceResource(device_id=row.id, resource=r) for r in d.resources)
            for feed in d.feeds:
                for namespace, value, first, last in feed.observations:
                    session.add(
                        Observation(
                            device_id=row.id,
                            source=feed.source,
                            evidence_kind=feed.kind,
                            namespace=namespace,
                            value=value,
                            raw_value=value,
                            first_seen_at=first,
                            last_seen_at=last,
                        )
                    )
                if feed.coverage:
                    report = Report(
                        device_id=row.id,
                        source=feed.source,
                        evidence_kind=feed.kind,
                        observed_at=max(c[2] for c in feed.coverage),
                        received_at=max(c[2] for c in feed.coverage),
                        coverage_namespaces=sorted({c[0] for c in feed.coverage}),
                    )
                    session.add(report)
                    session.flush()
                    for namespace, value, observed_at in feed.coverage:
                        session.add(
                            Coverage(
                                device_id=row.id,
                                source=feed.source,
                                evidence_kind=feed.kind,
                                namespace=namespace,
                                value=value,
                                observed_at=observed_at,
                                report_id=report.id,
                            )
                        )
        for e in spec.exemptions:
            session.add(
                Exemption(
                    policy_id=e.policy_id,
                    person_id=None if e.person is None else people[e.person].id,
                    device_id=None if e.device is None else device_rows[e.device].id,
                    starts_at=e.starts_at,
                    ends_at=e.ends_at,
                    reason="travel",
                    status=e.status,
                    created_at=created,
                    revoked_at=e.revoked_at,
                )
            )
        for policy_id, index, at in spec.first_seen:
            session.add(
                PolicyFirstSeen(
                    policy_id=policy_id, device_id=device_rows[index].id, first_seen_at=at
                )
            )
        session.flush()
        return version.id


def both_sides(
    engine, version_id: int, at: datetime
) -> tuple[dict[int, Evaluation], dict[int, Evaluation], dict[int, Evaluation]]:
    """(per-device evaluate for every device, its in-scope part, fleet evaluation)."""
    with unit_of_work(engine, now=at, write=False) as uow:
        version = uow.session.get(PolicyVersion, version_id)
        assert version is not None
        rules = rules_of(uow, version)
        owners = dict(uow.session.execute(select(Device.id, Device.owner_id)).all())
        views = device_views(uow, owners)
        single = {
            device_id: evaluate_view(uow, rules, view, owners[device_id], at)
            for device_id, view in views.items()
        }
        rows = fleet_rows(uow, rules, now=at)
        fleet = {row.device_id: evaluation_from_row(rules, row, at) for row in rows}
        assert len(fleet) == len(rows), "fleet_rows returned a device twice"
    in_scope = {
        device_id: evaluation
        for device_id, evaluation in single.items()
        if evaluation.state != ComplianceState.NOT_APPLICABLE
    }
    return single, in_scope, fleet


def assert_agree(engine, version_id: int, at: datetime) -> dict[int, Evaluation]:
    single, in_scope, fleet = both_sides(engine, version_id, at)
    assert set(fleet) == set(in_scope), (
        f"at {at.isoformat()}: fleet-only devices "
        f"{ {d: single.get(d) for d in set(fleet) - set(in_scope)} }, evaluate-only devices "
        f"{ {d: in_scope[d] for d in set(in_scope) - set(fleet)} }"
    )
    for device_id, expected in in_scope.items():
        assert fleet[device_id] == expected, (
            f"device {device_id} at {at.isoformat()}:\n"
            f"  evaluate: {expected}\n  fleet:    {fleet[device_id]}"
        )
    return single


# ---------------------------------------------------------------------------------------------
# The property

EXAMPLES = {"sqlite": 60, "postgresql": 25}
# A longer hunt: APPWARDEN_FLEET_EXAMPLES_FACTOR=50 pytest tests/integration/test_fleet_matches…
FACTOR = int(os.environ.get("APPWARDEN_FLEET_EXAMPLES_FACTOR", "1"))


def test_fleet_rows_match_evaluate_for_generated_fleets(store):
    @settings(
        max_examples=EXAMPLES[store.backend] * FACTOR,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(spec=fleets())
    def check(spec: FleetSpec) -> None:
        version_id = load(store.engine, spec)
        for at in spec.at:
            assert_agree(store.engine, version_id, at)

    check()


# ---------------------------------------------------------------------------------------------
# Ties, by hand: both sides must agree and give the state the rules ask for

RELEASE = BASE - 2 * DAY
DEADLINE = BASE - DAY


def tie_policy(**changes) -> PolicySpec:
    values = {
        "release_at": RELEASE,
        "deadline": DEADLINE,
        "grace_days": 1,
        "max_age_days": 7,
        "evidence": ("inventory", "targeted_check"),
        "unknown_deny": False,
        "scope": {"platforms": ["android"], "access": ["email"]},
        "identifiers": (("android_package", "com.zhiliaoapp.musically"),),
    }
    values.update(changes)
    return PolicySpec(**values)


TIKTOK = "com.zhiliaoapp.musically"


def only_device(store, spec: FleetSpec, at: datetime) -> Evaluation:
    version_id = load(store.engine, spec)
    single = assert_agree(store.engine, version_id, at)
    (evaluation,) = single.values()
    return evaluation


def test_proof_at_the_instant_of_the_last_sighting_does_not_clear(store):
    seen = BASE - 3 * MINUTE
    spec = FleetSpec(
        policy=tie_policy(),
        devices=(
            DeviceSpec(
                feeds=(
                    # MDM inventory saw it at `seen`, and its report at `seen` shows it.
                    FeedSpec(
                        "a",
                        "inventory",
                        observations=(("android_package", TIKTOK, RELEASE - DAY, seen),),
                        coverage=(("android_package", "", seen),),
                    ),
                    # A targeted check at the very same instant says it is absent: not *later*.
                    FeedSpec("b", "targeted_check", coverage=(("android_package", TIKTOK, seen),)),
                ),
            ),
        ),
    )
    evaluation = only_device(store, spec, BASE)
    assert evaluation.state == ComplianceState.NON_COMPLIANT
    assert evaluation.reasons == (f"present:android_package:{TIKTOK}",)


def test_exemption_ending_exactly_at_t_has_ended(store):
    ends = BASE
    spec = FleetSpec(
        policy=tie_policy(),
        devices=(
            DeviceSpec(
                feeds=(
                    FeedSpec(
                        "a",
                        "inventory",
                        observations=(("android_package", TIKTOK, RELEASE - DAY, BASE),),
                        coverage=(("android_package", "", BASE),),
                    ),
                ),
            ),
        ),
        exemptions=(ExemptionSpec(POLICY_ID, 0, None, "approved", RELEASE, ends),),
    )
    evaluation = only_device(store, spec, ends)
    # Not exempt any more (starts_at ≤ T < ends_at fails), and the violation gets grace from then.
    assert evaluation.state == ComplianceState.ACTION_REQUIRED
    assert evaluation.due == ends + DAY
    assert evaluation.valid_until == ends + DAY


def test_a_renewal_is_one_exempt_period_and_other_devices_windows_do_not_join_it(store):
    """Windows that touch (a renewal from the instant the old one ends) are one exempt period:
    `since` is the first start, `valid_until` the last end. Another device's window that
    touches it is not part of it (the SQL once joined every device's windows)."""
    renewed = (RELEASE, BASE - DAY), (BASE - DAY, BASE + DAY)
    spec = FleetSpec(
        policy=tie_policy(),
        devices=(DeviceSpec(), DeviceSpec()),
        exemptions=(
            *(ExemptionSpec(POLICY_ID, None, 0, "approved", a, b) for a, b in renewed),
            ExemptionSpec(POLICY_ID, None, 1, "approved", BASE + DAY, BASE + 2 * DAY),
            ExemptionSpec(POLICY_ID, None, 1, "approved", RELEASE - DAY, RELEASE),
        ),
    )
    version_id = load(store.engine, spec)
    single = assert_agree(store.engine, version_id, BASE)
    renewal, _other = (single[d] for d in sorted(single))
    assert renewal.state == ComplianceState.EXEMPT
    assert (renewal.since, renewal.valid_until) == (RELEASE, BASE + DAY)


def test_proof_exactly_at_the_freshness_cutoff_counts(store):
    proof = BASE - 7 * DAY  # T - max_evidence_age
    spec = FleetSpec(
        policy=tie_policy(),
        devices=(
            DeviceSpec(
                feeds=(FeedSpec("a", "inventory", coverage=(("android_package", "", proof),)),),
            ),
        ),
    )
    evaluation = only_device(store, spec, BASE)
    assert evaluation.state == ComplianceState.COMPLIANT
    # A minute later the same proof is too old.
    version_id = load(store.engine, spec)
    later = assert_agree(store.engine, version_id, BASE + MINUTE)
    assert [e.state for e in later.values()] == [ComplianceState.UNKNOWN]


def test_first_seen_exactly_at_release_gets_grace(store):
    spec = FleetSpec(
        policy=tie_policy(grace_days=2),
        devices=(
            DeviceSpec(
                feeds=(
                    FeedSpec(
                        "a",
                        "inventory",
                        observations=(("android_package", TIKTOK, RELEASE, BASE - 2 * MINUTE),),
                        coverage=(("android_package", "", BASE - 2 * MINUTE),),
                    ),
                ),
            ),
        ),
    )
    # Seen at the release, not before it: due = max(deadline, first_seen + grace) = T.
    evaluation = only_device(store, spec, BASE - MINUTE)
    assert evaluation.state == ComplianceState.ACTION_REQUIRED
    assert evaluation.first_seen == RELEASE
    assert evaluation.due == RELEASE + 2 * DAY
    # At the due time itself the device is overdue.
    version_id = load(store.engine, spec)
    at_due = assert_agree(store.engine, version_id, RELEASE + 2 * DAY)
    assert [e.state for e in at_due.values()] == [ComplianceState.NON_COMPLIANT]


@pytest.mark.parametrize("stored", [RELEASE - MINUTE, RELEASE, RELEASE + MINUTE])
def test_stored_first_seen_around_release_decides_the_grace(store, stored):
    spec = FleetSpec(
        policy=tie_policy(grace_days=2),
        devices=(
            DeviceSpec(
                feeds=(
                    FeedSpec(
                        "a",
                        "inventory",
                        observations=(("android_package", TIKTOK, BASE - DAY, BASE),),
                        coverage=(("android_package", "", BASE),),
                    ),
                ),
            ),
        ),
        first_seen=((POLICY_ID, 0, stored),),
    )
    evaluation = only_device(store, spec, BASE - MINUTE)
    expected_due = DEADLINE if stored < RELEASE else stored + 2 * DAY
    assert evaluation.first_seen == stored
    assert evaluation.due == expected_due
