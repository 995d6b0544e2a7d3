"""The version state machine (docs/architecture.md, "The lifecycle of a policy version"). Pure.

draft ──propose──▶ proposed ──approve──▶ approved ──publish──▶ scheduled ──release──▶ active
  ▲                   │                     │  ▲                  │                    │
  └──────edit─────────┴─────────edit────────┘  └──────cancel──────┘                    │
scheduled, active ──retract──▶ retracted          active ──retire──▶ retired
active ──(a newer version is released)──▶ superseded
"""

from __future__ import annotations

from appwarden.errors import Conflict
from appwarden.vocabulary import VersionState as S

TRANSITIONS: dict[str, dict[S, S]] = {
    "edit": {S.DRAFT: S.DRAFT, S.PROPOSED: S.DRAFT, S.APPROVED: S.DRAFT},
    "propose": {S.DRAFT: S.PROPOSED},
    "approve": {S.PROPOSED: S.APPROVED},
    "publish": {S.APPROVED: S.SCHEDULED},
    "cancel": {S.SCHEDULED: S.APPROVED},
    "release": {S.SCHEDULED: S.ACTIVE},
    "supersede": {S.ACTIVE: S.SUPERSEDED, S.SCHEDULED: S.SUPERSEDED},
    "retract": {S.SCHEDULED: S.RETRACTED, S.ACTIVE: S.RETRACTED},
    "retire": {S.ACTIVE: S.RETIRED, S.SCHEDULED: S.RETIRED},
}

OPEN_STATES = frozenset({S.DRAFT, S.PROPOSED, S.APPROVED, S.SCHEDULED})
LIVE_STATES = frozenset({S.SCHEDULED, S.ACTIVE})
ENDED_STATES = frozenset({S.SUPERSEDED, S.RETRACTED, S.RETIRED})


def next_state(state: S | str, action: str) -> S:
    """The state after `action`, or Conflict naming what is allowed from here."""
    current = S(state)
    allowed = TRANSITIONS[action]
    if current not in allowed:
        possible = sorted(a for a, table in TRANSITIONS.items() if current in table)
        raise Conflict(
            f"cannot {action} a version that is {current}"
            + (f"; from {current} you can: {', '.join(possible)}" if possible else "")
        )
    return allowed[current]
