"""Decision for (device, resource, T): docs/architecture.md, "the decision". Pure.

deny iff some active policy with the resource in `enforcement.deny` has the device
`non_compliant`, or has it `unknown` with `unknown: deny` and T ≥ max(deadline, first report +
grace). Otherwise allow. `valid_until` is the next instant the answer may change without new facts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from appwarden.compliance.evaluate import Evaluation
from appwarden.vocabulary import ComplianceState, Decision


@dataclass(frozen=True, slots=True)
class PolicyOutcome:
    """One active policy version's view of the device."""

    policy_id: str
    version: int
    deny: frozenset[str]
    unknown_deny: bool
    deadline: datetime
    grace: timedelta
    evaluation: Evaluation


@dataclass(frozen=True, slots=True)
class DecisionResult:
    decision: Decision
    reasons: tuple[dict[str, str | int | None], ...]
    valid_until: datetime | None


def unknown_deny_from(outcome: PolicyOutcome, first_report_at: datetime | None) -> datetime:
    """From when an `unknown` device is denied under `unknown: deny`."""
    if first_report_at is None:
        return outcome.deadline
    return max(outcome.deadline, first_report_at + outcome.grace)


def decide(
    resource: str,
    outcomes: Iterable[PolicyOutcome],
    *,
    first_report_at: datetime | None,
    now: datetime,
) -> DecisionResult:
    denied = False
    reasons: list[dict[str, str | int | None]] = []
    horizon: list[datetime] = []
    for outcome in outcomes:
        evaluation = outcome.evaluation
        if resource not in outcome.deny or evaluation.state == ComplianceState.NOT_APPLICABLE:
            continue
        denies = evaluation.state == ComplianceState.NON_COMPLIANT
        if evaluation.state == ComplianceState.UNKNOWN and outcome.unknown_deny:
            threshold = unknown_deny_from(outcome, first_report_at)
            denies = now >= threshold
            if not denies:
                horizon.append(threshold)
        if evaluation.valid_until is not None and evaluation.valid_until > now:
            horizon.append(evaluation.valid_until)
        denied = denied or denies
        reasons.append(
            {
                "policy": outcome.policy_id,
                "version": outcome.version,
                "state": str(evaluation.state),
                "since": _iso(evaluation.since),
                "due": _iso(evaluation.due),
                "effect": "deny" if denies else "allow",
            }
        )
    return DecisionResult(
        decision=Decision.DENY if denied else Decision.ALLOW,
        reasons=tuple(reasons),
        valid_until=min(horizon, default=None),
    )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")
