"""The version state machine (appwarden.policies.lifecycle): every legal transition gives its
documented next state, every other (state, action) pair is a Conflict naming the current state and
what is possible from it.

The table below is written out by hand (docs/architecture.md and the module's diagram), not derived from
TRANSITIONS, so a changed table fails here. Besides the diagram, a `scheduled` version can be
superseded or retired: a scheduled version whose release_at has passed is in effect (docs/architecture.md) before the
worker marks it active.
"""

from __future__ import annotations

import itertools

import pytest

from appwarden.errors import Conflict
from appwarden.policies.lifecycle import (
    ENDED_STATES,
    LIVE_STATES,
    OPEN_STATES,
    TRANSITIONS,
    next_state,
)
from appwarden.vocabulary import VersionState as S

EXPECTED: dict[tuple[S, str], S] = {
    (S.DRAFT, "edit"): S.DRAFT,
    (S.PROPOSED, "edit"): S.DRAFT,
    (S.APPROVED, "edit"): S.DRAFT,
    (S.DRAFT, "propose"): S.PROPOSED,
    (S.PROPOSED, "approve"): S.APPROVED,
    (S.APPROVED, "publish"): S.SCHEDULED,
    (S.SCHEDULED, "cancel"): S.APPROVED,
    (S.SCHEDULED, "release"): S.ACTIVE,
    (S.SCHEDULED, "supersede"): S.SUPERSEDED,
    (S.ACTIVE, "supersede"): S.SUPERSEDED,
    (S.SCHEDULED, "retract"): S.RETRACTED,
    (S.ACTIVE, "retract"): S.RETRACTED,
    (S.SCHEDULED, "retire"): S.RETIRED,
    (S.ACTIVE, "retire"): S.RETIRED,
}
ACTIONS = ("edit", "propose", "approve", "publish", "cancel", "release", "supersede", "retract",
           "retire")  # fmt: skip

# What the Conflict message lists as possible from each state (sorted action names).
POSSIBLE: dict[S, str] = {
    S.DRAFT: "edit, propose",
    S.PROPOSED: "approve, edit",
    S.APPROVED: "edit, publish",
    S.SCHEDULED: "cancel, release, retire, retract, supersede",
    S.ACTIVE: "retire, retract, supersede",
    S.SUPERSEDED: "",
    S.RETRACTED: "",
    S.RETIRED: "",
}

ILLEGAL = [
    (state, action)
    for state, action in itertools.product(S, ACTIONS)
    if (state, action) not in EXPECTED
]


def test_transition_table_is_exactly_the_documented_one() -> None:
    assert set(TRANSITIONS) == set(ACTIONS)
    table = {
        (state, action): new for action, row in TRANSITIONS.items() for state, new in row.items()
    }
    assert table == EXPECTED


@pytest.mark.parametrize(
    ("state", "action", "new"),
    [
        pytest.param(state, action, new, id=f"{state}-{action}->{new}")
        for (state, action), new in EXPECTED.items()
    ],
)
def test_legal_transition_gives_the_documented_state(state: S, action: str, new: S) -> None:
    assert next_state(state, action) is new
    assert next_state(str(state), action) is new  # the stored string form is accepted too


@pytest.mark.parametrize(
    ("state", "action"),
    [pytest.param(state, action, id=f"{state}-{action}-conflict") for state, action in ILLEGAL],
)
def test_illegal_transition_is_a_conflict_naming_state_and_options(state: S, action: str) -> None:
    expected = f"cannot {action} a version that is {state}"
    if POSSIBLE[state]:
        expected += f"; from {state} you can: {POSSIBLE[state]}"
    with pytest.raises(Conflict) as caught:
        next_state(state.value, action)
    assert str(caught.value) == expected
    assert caught.value.message == expected
    assert caught.value.exit_code == 4


def test_every_state_and_action_is_either_legal_or_a_conflict() -> None:
    assert len(EXPECTED) + len(ILLEGAL) == len(S) * len(ACTIONS)
    assert len(ILLEGAL) == 58


def test_state_groups() -> None:
    assert frozenset({S.DRAFT, S.PROPOSED, S.APPROVED, S.SCHEDULED}) == OPEN_STATES
    assert frozenset({S.SCHEDULED, S.ACTIVE}) == LIVE_STATES
    assert frozenset({S.SUPERSEDED, S.RETRACTED, S.RETIRED}) == ENDED_STATES
    # Ended states are terminal: nothing leads out of them.
    assert all(state not in row for row in TRANSITIONS.values() for state in ENDED_STATES)


def test_unknown_state_is_rejected() -> None:
    with pytest.raises(ValueError, match="'published' is not a valid VersionState"):
        next_state("published", "release")
