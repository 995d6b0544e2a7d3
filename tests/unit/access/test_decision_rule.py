"""The decision rule of docs/architecture.md (appwarden.access.decide), table by table.

deny iff some policy with the resource in `enforcement.deny` has the device `non_compliant`, or
`unknown` under `unknown: deny` at or after max(deadline, first report + grace) (the deadline when
the device has no first report). `valid_until` is the earliest future instant the answer may change.

Timeline (UTC, 2020): release July 1, deadline July 10 00:00, grace 1 day; now July 5 12:00 unless
a case says otherwise.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from appwarden.access.decide import DecisionResult, PolicyOutcome, decide, unknown_deny_from
from appwarden.compliance.evaluate import Evaluation
from appwarden.vocabulary import ComplianceState as S
from appwarden.vocabulary import Decision


def jun(day: int, hour: int = 0) -> datetime:
    return datetime(2020, 6, day, hour, tzinfo=UTC)


def jul(day: int, hour: int = 0) -> datetime:
    return datetime(2020, 7, day, hour, tzinfo=UTC)


RELEASE = jul(1)
DEADLINE = jul(10)
GRACE = timedelta(days=1)
NOW = jul(5, 12)
POLICY = "tiktok-mobile-email"


def outcome(
    state: S,
    *,
    since: datetime | None = RELEASE,
    due: datetime | None = None,
    valid_until: datetime | None = None,
    policy: str = POLICY,
    version: int = 1,
    deny: frozenset[str] = frozenset({"email"}),
    unknown_deny: bool = False,
    deadline: datetime = DEADLINE,
) -> PolicyOutcome:
    return PolicyOutcome(
        policy_id=policy,
        version=version,
        deny=deny,
        unknown_deny=unknown_deny,
        deadline=deadline,
        grace=GRACE,
        evaluation=Evaluation(state, since=since, due=due, valid_until=valid_until),
    )


def reason(
    state: str,
    effect: str,
    *,
    since: str | None = "2020-07-01T00:00:00Z",
    due: str | None = None,
    policy: str = POLICY,
    version: int = 1,
) -> dict[str, str | int | None]:
    return {
        "policy": policy,
        "version": version,
        "state": state,
        "since": since,
        "due": due,
        "effect": effect,
    }


DEADLINE_Z = "2020-07-10T00:00:00Z"

NON_COMPLIANT = outcome(S.NON_COMPLIANT, since=DEADLINE, due=DEADLINE)
NON_COMPLIANT_REASON = reason("non_compliant", "deny", since=DEADLINE_Z, due=DEADLINE_Z)
ACTION_REQUIRED = outcome(S.ACTION_REQUIRED, due=DEADLINE, valid_until=DEADLINE)
ACTION_REQUIRED_REASON = reason("action_required", "allow", due=DEADLINE_Z)
UNKNOWN_DENY = outcome(S.UNKNOWN, unknown_deny=True)
UNKNOWN_DENY_REASON = reason("unknown", "deny")
UNKNOWN_ALLOW_REASON = reason("unknown", "allow")


def allow(*reasons, valid_until: datetime | None = None) -> DecisionResult:
    return DecisionResult(Decision.ALLOW, tuple(reasons), valid_until)


def deny(*reasons, valid_until: datetime | None = None) -> DecisionResult:
    return DecisionResult(Decision.DENY, tuple(reasons), valid_until)


def case(
    case_id: str,
    outcomes: tuple[PolicyOutcome, ...],
    expected: DecisionResult,
    *,
    now: datetime = NOW,
    first_report_at: datetime | None = None,
    resource: str = "email",
):
    return pytest.param(resource, outcomes, first_report_at, now, expected, id=case_id)


# fmt: off
CASES = [
    case("deny-non_compliant", (NON_COMPLIANT,), deny(NON_COMPLIANT_REASON), now=jul(12)),
    case("allow-action_required-valid-until-due", (ACTION_REQUIRED,),
         allow(ACTION_REQUIRED_REASON, valid_until=DEADLINE)),
    case("allow-compliant-valid-until-proof-expiry",
         (outcome(S.COMPLIANT, valid_until=jul(11)),),
         allow(reason("compliant", "allow"), valid_until=jul(11))),
    case("allow-unknown-without-unknown-deny-after-deadline", (outcome(S.UNKNOWN),),
         allow(UNKNOWN_ALLOW_REASON), now=jul(20), first_report_at=jun(1)),
    # unknown: deny without a first report: the deadline is the threshold.
    case("allow-unknown-deny-before-deadline-no-first-report", (UNKNOWN_DENY,),
         allow(UNKNOWN_ALLOW_REASON, valid_until=DEADLINE)),
    case("allow-unknown-deny-just-before-deadline-no-first-report", (UNKNOWN_DENY,),
         allow(UNKNOWN_ALLOW_REASON, valid_until=DEADLINE), now=jul(9, 23)),
    case("deny-unknown-deny-at-deadline-no-first-report", (UNKNOWN_DENY,),
         deny(UNKNOWN_DENY_REASON), now=DEADLINE),
    # First report long before the deadline: the deadline is the threshold.
    case("allow-unknown-deny-early-first-report-before-deadline", (UNKNOWN_DENY,),
         allow(UNKNOWN_ALLOW_REASON, valid_until=DEADLINE), now=jul(9), first_report_at=jun(1)),
    case("deny-unknown-deny-early-first-report-at-deadline", (UNKNOWN_DENY,),
         deny(UNKNOWN_DENY_REASON), now=DEADLINE, first_report_at=jun(1)),
    # First report shortly before the deadline: grace from the first report.
    case("allow-unknown-deny-late-first-report-after-deadline-within-grace", (UNKNOWN_DENY,),
         allow(UNKNOWN_ALLOW_REASON, valid_until=jul(10, 12)), now=DEADLINE,
         first_report_at=jul(9, 12)),
    case("deny-unknown-deny-late-first-report-grace-over", (UNKNOWN_DENY,),
         deny(UNKNOWN_DENY_REASON), now=jul(10, 12), first_report_at=jul(9, 12)),
    case("deny-unknown-deny-first-report-after-deadline-grace-over", (UNKNOWN_DENY,),
         deny(UNKNOWN_DENY_REASON), now=jul(16), first_report_at=jul(15)),
    case("allow-unknown-deny-first-report-after-deadline-within-grace", (UNKNOWN_DENY,),
         allow(UNKNOWN_ALLOW_REASON, valid_until=jul(16)), now=jul(15, 12),
         first_report_at=jul(15)),
    # Policies that do not enforce on this resource are not consulted at all.
    case("allow-resource-not-in-deny-no-reason", (NON_COMPLIANT,), allow(), now=jul(12),
         resource="webmail"),
    case("allow-resource-not-in-deny-horizon-ignored", (ACTION_REQUIRED,), allow(),
         resource="webmail"),
    case("allow-resource-not-in-deny-unknown-deny-ignored", (UNKNOWN_DENY,), allow(),
         now=jul(20), resource="webmail"),
    case("allow-monitor-only-empty-deny", (outcome(S.NON_COMPLIANT, deny=frozenset()),),
         allow(), now=jul(12)),
    case("allow-not_applicable-ignored",
         (outcome(S.NOT_APPLICABLE, since=None, unknown_deny=True, valid_until=jul(8)),),
         allow(), now=jul(20)),
    case("allow-no-policies", (), allow()),
    # Several policies: one deny is enough; every consulted policy gives a reason, in order.
    case("deny-two-policies-one-denies",
         (ACTION_REQUIRED, outcome(S.NON_COMPLIANT, since=DEADLINE, due=DEADLINE,
                                   policy="tiktok-laptops", version=3,
                                   deny=frozenset({"email", "webmail"}))),
         deny(ACTION_REQUIRED_REASON,
              reason("non_compliant", "deny", since=DEADLINE_Z, due=DEADLINE_Z,
                     policy="tiktok-laptops", version=3),
              valid_until=DEADLINE)),
    case("deny-unknown-deny-and-future-threshold-of-another-policy",
         (UNKNOWN_DENY, outcome(S.UNKNOWN, policy="late-policy", version=2, unknown_deny=True,
                                deadline=jul(20))),
         deny(UNKNOWN_DENY_REASON, reason("unknown", "allow", policy="late-policy", version=2),
              valid_until=jul(20)),
         now=jul(12)),
    case("deny-only-for-resource-in-deny-of-the-failing-policy",
         (NON_COMPLIANT, outcome(S.COMPLIANT, policy="other", valid_until=jul(11),
                                 deny=frozenset({"webmail"}))),
         deny(NON_COMPLIANT_REASON), now=jul(10, 12)),
    # Exempt: allowed, with the reason, until the window ends.
    case("allow-exempt-with-reasons",
         (outcome(S.EXEMPT, since=jul(3), due=DEADLINE, valid_until=jul(8)),),
         allow(reason("exempt", "allow", since="2020-07-03T00:00:00Z", due=DEADLINE_Z),
               valid_until=jul(8))),
    case("allow-exempt-under-unknown-deny-after-threshold",
         (outcome(S.EXEMPT, since=jul(3), unknown_deny=True, valid_until=jul(20)),),
         allow(reason("exempt", "allow", since="2020-07-03T00:00:00Z"), valid_until=jul(20)),
         now=jul(12)),
    # valid_until: the earliest future horizon of any consulted policy.
    case("allow-valid-until-min-is-unknown-deny-threshold",
         (outcome(S.COMPLIANT, policy="a", valid_until=jul(11)),
          outcome(S.ACTION_REQUIRED, policy="b", due=DEADLINE, valid_until=DEADLINE),
          outcome(S.UNKNOWN, policy="c", unknown_deny=True, deadline=jul(8))),
         allow(reason("compliant", "allow", policy="a"),
               reason("action_required", "allow", due=DEADLINE_Z, policy="b"),
               reason("unknown", "allow", policy="c"),
               valid_until=jul(8))),
    case("allow-valid-until-min-is-proof-expiry",
         (outcome(S.ACTION_REQUIRED, policy="b", due=DEADLINE, valid_until=DEADLINE),
          outcome(S.COMPLIANT, policy="a", valid_until=jul(7)),
          outcome(S.UNKNOWN, policy="c", unknown_deny=True, deadline=jul(8))),
         allow(reason("action_required", "allow", due=DEADLINE_Z, policy="b"),
               reason("compliant", "allow", policy="a"),
               reason("unknown", "allow", policy="c"),
               valid_until=jul(7))),
    case("allow-past-horizon-ignored",
         (outcome(S.COMPLIANT, valid_until=jul(5)),), allow(reason("compliant", "allow"))),
    case("allow-since-none-serialised-as-null",
         (outcome(S.UNKNOWN, since=None),), allow(reason("unknown", "allow", since=None))),
]
# fmt: on


@pytest.mark.parametrize(("resource", "outcomes", "first_report_at", "now", "expected"), CASES)
def test_decision_rule(resource, outcomes, first_report_at, now, expected):
    result = decide(resource, outcomes, first_report_at=first_report_at, now=now)
    assert result == expected


def test_case_ids_are_unique() -> None:
    ids = [p.id for p in CASES]
    assert len(ids) == len(set(ids))


def test_outcomes_may_be_a_one_shot_iterator() -> None:
    result = decide("email", iter([NON_COMPLIANT]), first_report_at=None, now=jul(12))
    assert result == deny(NON_COMPLIANT_REASON)


@pytest.mark.parametrize(
    ("first_report_at", "threshold"),
    [
        pytest.param(None, DEADLINE, id="no-first-report-deadline"),
        pytest.param(jun(1), DEADLINE, id="early-first-report-deadline"),
        pytest.param(jul(9), DEADLINE, id="first-report-plus-grace-equals-deadline"),
        pytest.param(jul(9, 12), jul(10, 12), id="late-first-report-grace-from-report"),
        pytest.param(jul(15), jul(16), id="first-report-after-deadline-grace-from-report"),
    ],
)
def test_unknown_deny_threshold(first_report_at, threshold):
    assert unknown_deny_from(outcome(S.UNKNOWN, unknown_deny=True), first_report_at) == threshold
