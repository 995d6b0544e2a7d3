"""Server-side paging of the lists the fronts show (the console's): a bounded page of rows after
a cursor, never the whole table.

A list reads `window.size + 1` rows in its key order after `window.after` and hands them to
`page_of`; the extra row only says whether a next page exists. The cursor is the last shown row's
key, as text: opaque to the browser, meaningful to the list that made it.

The module imports nothing heavy, so the command line's help can name the device listing's limits
(`appwarden devices list`, `GET /v1/devices`) without loading the listing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from appwarden.errors import InvalidInput, Problem

DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 200
MAX_CURSOR_CHARS: Final = 512

#: The device listing of the API and the command line: machines read bigger pages than people.
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000

Row = TypeVar("Row")


@dataclass(frozen=True, slots=True)
class Window:
    """Which page: at most `size` rows (1..MAX_PAGE_SIZE) whose key comes after `after`."""

    size: int = DEFAULT_PAGE_SIZE
    after: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.size <= MAX_PAGE_SIZE:
            raise InvalidInput(
                f"size: a page holds 1 to {MAX_PAGE_SIZE} rows",
                problems=[Problem("size", f"expected 1 to {MAX_PAGE_SIZE}")],
            )
        if self.after is not None and len(self.after) > MAX_CURSOR_CHARS:
            raise InvalidInput(
                "after: the cursor is too long", problems=[Problem("after", "too long")]
            )

    @property
    def fetch(self) -> int:
        """How many rows a list reads: one more than it shows."""
        return self.size + 1


@dataclass(frozen=True, slots=True)
class Page(Generic[Row]):
    rows: list[Row]
    #: The cursor of the next page, None on the last one.
    next_after: str | None


def page_of(rows: Sequence[Row], window: Window, key: Callable[[Row], str]) -> Page[Row]:
    """`rows`: up to `window.fetch` rows read in key order after `window.after`."""
    shown = list(rows[: window.size])
    more = len(rows) > window.size and bool(shown)
    return Page(shown, key(shown[-1]) if more else None)
