"""Output: JSON for machines (`--json`), rich tables for people, quiet when piped.

Almost everything printed holds text we do not control: names from inventory files, titles from
policy files, values quoted by error messages, file names. So the consoles never interpret a
string as rich markup or emoji codes, and show control characters escaped: a device named
`[link=https://evil.example]x[/link]` is printed as those characters, not as a terminal hyperlink.
Our own emphasis is built as `Text` objects (`bold`, `styled`), never as markup in a string.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, cast

import orjson

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

# C0 and C1 controls (but tab and newline), DEL, and the bidirectional overrides that can make
# text read differently from what it is: shown as Python escapes (`\x1b`), never sent raw.
_UNSAFE: Final = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in (
        *range(0x00, 0x09),
        *range(0x0B, 0x20),
        *range(0x7F, 0xA0),
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
    )
}


def plain(text: str) -> str:
    """`text` with every control character escaped: safe to hand to a terminal."""
    return text.translate(_UNSAFE)


class _Console:
    """A `PlainConsole` (cli/consoles.py) made on first use: importing rich costs a command
    that prints nothing with it, and `--help`, a tenth of a second."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._made: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._made is None:
            from appwarden.cli.consoles import PlainConsole

            self._made = PlainConsole(**self._kwargs)
        return getattr(self._made, name)


console = cast("Console", _Console())
errors = cast("Console", _Console(stderr=True))

STATE_STYLE = {
    "non_compliant": "bold red",
    "action_required": "yellow",
    "unknown": "magenta",
    "compliant": "green",
    "exempt": "cyan",
    "not_applicable": "dim",
    "deny": "bold red",
    "allow": "green",
}


def emit_json(value: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()


def emit_document(text: str) -> None:
    """A document a person wrote, exactly as stored. Piped or redirected (`> next.yaml`, to edit
    the next version from it) it is written byte for byte; on a terminal it goes through the
    plain console, so nothing in it is read as markup and no control character reaches the
    terminal."""
    if console.is_terminal:
        console.out(text, end="")
        return
    sys.stdout.buffer.write(text.encode())
    sys.stdout.flush()


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    from rich.table import Table

    from appwarden.cli.consoles import PlainConsole

    grid = Table(title=title, title_justify="left", show_lines=False, expand=False)
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*[styled(cell) for cell in row])
    if console.is_terminal:
        console.print(grid)
    else:  # piped output has no width to fit: keep each row on one line for grep and less
        PlainConsole(width=240, file=console.file).print(grid)


def styled(cell: Any) -> Text:
    """A table cell: a state or decision in its colour, anything else as literal text."""
    from rich.text import Text

    text = plain("" if cell is None else str(cell))
    return Text(text, style=STATE_STYLE.get(text, ""))


def bold(text: str) -> Text:
    """Emphasis for a value we print (literal text, whatever it contains)."""
    from rich.text import Text

    return Text(plain(text), style="bold")


@contextmanager
def progress(description: str, total: int | None) -> Iterator[Any]:
    """A progress bar on a terminal; nothing when output is piped. `total=None`: the count is not
    known in advance (a sync's pages), the bar pulses and counts."""
    if not errors.is_terminal or (total is not None and total < 2):
        yield lambda _advance=1: None
        return
    # Imported here: only a long import or sync draws a bar, and `rich.progress` costs start-up.
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda advance=1: bar.advance(task, advance)


def short_time(value: str | None) -> str:
    """`2020-07-11T06:59:59Z` → `2020-07-11 06:59Z` for tables (JSON keeps the full instant)."""
    if not value:
        return ""
    return value[:16].replace("T", " ") + "Z"


_REASON_TEXT = {
    "present": "found {}",
    "unverified": "cannot see {}",
    "exemption": "exemption #{}",
    "underlying": "would be {}",
    "out_of_scope": "out of scope ({})",
}


def explain(reasons: Sequence[str]) -> str:
    """Reasons in words, short enough for a table cell."""
    words = []
    for reason in reasons:
        code, _, detail = reason.partition(":")
        if code in ("present", "unverified"):
            detail = detail.partition(":")[2]
        template = _REASON_TEXT.get(code)
        words.append(template.format(detail) if template else reason.replace("_", " "))
    return "; ".join(words)
