"""Time comes from here. Code asks a Clock for `now`; it never calls datetime.now() itself.

`fixed:<RFC3339>` pins the clock and `file:<path>` re-reads an instant from a file at every call,
so a test can walk a running server through time. Both are refused unless APPWARDEN_ENV is
`test` or `demo`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from appwarden.errors import InvalidInput
from appwarden.timeutil import parse_instant, utc


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True)
class FixedClock:
    instant: datetime

    def now(self) -> datetime:
        return utc(self.instant)


@dataclass(frozen=True)
class FileClock:
    path: Path

    def now(self) -> datetime:
        return parse_instant(self.path.read_text().strip())


def clock_from_spec(spec: str | None, *, env: str) -> Clock:
    """Build the clock named by APPWARDEN_CLOCK (`system`, `fixed:T`, `file:PATH`)."""
    if not spec or spec == "system":
        return SystemClock()
    if env not in ("test", "demo"):
        raise InvalidInput(
            f"APPWARDEN_CLOCK={spec!r} is only allowed when APPWARDEN_ENV is test or demo"
        )
    kind, _, arg = spec.partition(":")
    if kind == "fixed":
        try:
            return FixedClock(parse_instant(arg))
        except ValueError as exc:
            raise InvalidInput(f"APPWARDEN_CLOCK: {exc}") from exc
    if kind == "file":
        return FileClock(Path(arg))
    raise InvalidInput(
        f"APPWARDEN_CLOCK must be system, fixed:<RFC3339> or file:<path>, got {spec!r}"
    )
