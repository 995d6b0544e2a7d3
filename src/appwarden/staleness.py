"""How long an inventory source may stay silent before it is stale (docs/sources/README.md,
"Source health"). Pure, standard library only.

A source is *watched* once it has a sync run (`source_run`) or a setting names it (a staleness
bound or a sync interval). A watched source is stale when its last complete run finished longer
ago than its bound, or when it never completed one. A source fed only by file imports records
no runs: it is listed, never judged stale.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

DEFAULT_STALE_AFTER: Final = timedelta(days=1)
#: A source with a sync interval and no bound of its own is stale after this many intervals.
INTERVALS_BEFORE_STALE: Final = 3


@dataclass(frozen=True, slots=True)
class Staleness:
    """The bounds: `stale_after` per source (`APPWARDEN_SOURCE_STALE_AFTER`), else
    3 × its sync interval (`APPWARDEN_SYNC_<SOURCE>_INTERVAL`), else `default`
    (`APPWARDEN_SOURCE_STALE_DEFAULT`)."""

    stale_after: Mapping[str, timedelta] = field(default_factory=dict)
    intervals: Mapping[str, timedelta] = field(default_factory=dict)
    default: timedelta = DEFAULT_STALE_AFTER

    def bound(self, source: str) -> timedelta:
        if source in self.stale_after:
            return self.stale_after[source]
        if source in self.intervals:
            return INTERVALS_BEFORE_STALE * self.intervals[source]
        return self.default

    def bound_from(self, source: str) -> str:
        """Which setting the bound comes from: `stale_after`, `interval` or `default`."""
        if source in self.stale_after:
            return "stale_after"
        return "interval" if source in self.intervals else "default"

    def configured(self, source: str) -> bool:
        return source in self.stale_after or source in self.intervals

    @property
    def configured_sources(self) -> frozenset[str]:
        return frozenset(self.stale_after) | frozenset(self.intervals)


def is_stale(
    *, watched: bool, last_complete_at: datetime | None, bound: timedelta, now: datetime
) -> bool:
    """Whether a source is stale at `now`: watched, and its last complete run finished more than
    `bound` before `now` (or it never completed one)."""
    if not watched:
        return False
    return last_complete_at is None or now - last_complete_at > bound
