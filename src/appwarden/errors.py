"""The one error hierarchy. Adapters map it to exit codes (CLI) and problem+json (HTTP).

AppwardenError
├── InvalidInput        bad input: a file, a field, an argument (422 / exit 2)
│   └── too large        InputTooLarge (413)
├── NotFound            an id that does not exist (404 / exit 3)
├── Ambiguous           a bare device identifier that matches several devices (422)
├── Conflict            an illegal transition or a clash with stored state (409 / exit 4)
│   └── IdentifierConflict  one report's identifiers point at two devices (quarantined)
├── PermissionDenied    the actor may not do this (403 / exit 5)
└── TooManyAttempts     a rate limit was reached; try again after `retry_after` seconds (429)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an input, located as precisely as the input allows.

    `where` is `FILE:LINE:COL` for documents, `FILE:ROW:COLUMN` for CSV, or a JSON path.
    """

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class AppwardenError(Exception):
    """Base of every error appwarden raises on purpose."""

    exit_code = 1
    title = "error"

    def __init__(self, message: str, *, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems: list[Problem] = list(problems or [])

    def lines(self) -> list[str]:
        """Human-readable lines: each located problem, or the message."""
        return [str(p) for p in self.problems] or [self.message]


class InvalidInput(AppwardenError):
    exit_code = 2
    title = "invalid input"


class InputTooLarge(InvalidInput):
    title = "input too large"


class Ambiguous(InvalidInput):
    title = "ambiguous reference"


class NotFound(AppwardenError):
    exit_code = 3
    title = "not found"


class Conflict(AppwardenError):
    exit_code = 4
    title = "conflict"


class IdentifierConflict(Conflict):
    title = "identifier conflict"

    def __init__(self, message: str, *, device_ids: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.device_ids = device_ids  # the devices the identifiers point at


class PermissionDenied(AppwardenError):
    exit_code = 5
    title = "permission denied"


class TooManyAttempts(AppwardenError):
    exit_code = 6
    title = "too many attempts"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)
