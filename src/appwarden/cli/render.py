"""Output: JSON for machines (`--json`), rich tables for people, quiet when piped."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)

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


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    grid = Table(title=title, title_justify="left", show_lines=False, expand=False)
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*[styled(cell) for cell in row])
    if console.is_terminal:
        console.print(grid)
    else:  # piped output has no width to fit: keep each row on one line for grep and less
        Console(highlight=False, width=240, file=console.file).print(grid)


def styled(cell: Any) -> str:
    if cell is None:
        return ""
    text = str(cell)
    style = STATE_STYLE.get(text)
    return f"[{style}]{text}[/]" if style and console.is_terminal else text.replace("[", "\\[")


@contextmanager
def progress(description: str, total: int) -> Iterator[Any]:
    """A progress bar on a terminal; nothing when output is piped."""
    if not errors.is_terminal or total < 2:
        yield lambda _advance=1: None
        return
    with Progress(
        TextColumn("{task.description}"),
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
