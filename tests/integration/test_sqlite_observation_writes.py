"""SQLite's bulk observation writes (devices/bulk.py) pass their rows as one JSON array that
SQLite unpacks itself: every value must come back exactly as an `executemany` would store it,
whatever its text holds, and a NUL character (which SQLite's JSON functions cut short) sends
its rows one by one instead."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.dialects import sqlite
from sqlalchemy.schema import CreateIndex, CreateTable

from appwarden.devices import bulk
from appwarden.devices.models import Observation

AT = datetime(2020, 7, 11, 18, tzinfo=UTC)
HOSTILE = (
    "quote \" and ' and \\ backslash",
    "emoji 🚀, accents ünïcödé, line separator \u2028, tab\tand newline\n",
    'looks like JSON: [1, 2] {"a": null} null true',
    "12",
    "x" * 1000,
)


@pytest.fixture
def cursor() -> Iterator[Any]:
    connection = sqlite3.connect(":memory:", isolation_level=None)
    table = Observation.__table__
    connection.execute(str(CreateTable(table).compile(dialect=sqlite.dialect())))
    for index in table.indexes:  # type: ignore[attr-defined]
        connection.execute(str(CreateIndex(index).compile(dialect=sqlite.dialect())))
    cursor = connection.cursor()
    yield cursor
    connection.close()


def _new(n: int, name: str | None, version: str | None = "1.0") -> tuple[Any, ...]:
    return (1, "mdm", "inventory", "apple_bundle_id", f"com.app{n}", f"com.App{n}", version, name,
            AT, AT)  # fmt: skip


def _stored(cursor: Any) -> list[tuple[Any, ...]]:
    return cursor.execute(f"SELECT id, {bulk._COLUMNS} FROM observation ORDER BY id").fetchall()


@pytest.mark.parametrize("nul", [False, True], ids=["json", "row-by-row"])
def test_new_and_changed_rows_come_back_exactly(cursor, nul: bool):
    names = [*HOSTILE, None, *(["a NUL \x00 inside"] if nul else [])]
    rows = [_new(n, name, version=name) for n, name in enumerate(names)]
    bulk._sqlite_writes([], {}, [], rows, cursor)
    text = bulk.SqliteInstants()[AT]
    expected = [(n + 1, *row[:8], text, text) for n, row in enumerate(rows)]
    assert _stored(cursor) == expected
    later = AT + timedelta(hours=1)
    changed = [(n + 1, f"raw {name}", None, name, AT, later) for n, name in enumerate(names)]
    bulk._sqlite_writes([], {}, changed, [], cursor)
    after = bulk.SqliteInstants()[later]
    assert _stored(cursor) == [
        (n + 1, *row[:5], f"raw {name}", None, name, text, after)
        for n, (row, name) in enumerate(zip(rows, names, strict=True))
    ]


def test_rows_seen_again_and_deleted_are_written_by_id(cursor):
    bulk._sqlite_writes([], {}, [], [_new(n, None) for n in range(6)], cursor)
    later = AT + timedelta(days=1)
    bulk._sqlite_writes([2, 5], {later: [1, 3]}, [], [], cursor)
    stored = {row[0]: row[-1] for row in _stored(cursor)}
    text = bulk.SqliteInstants()
    assert stored == {1: text[later], 3: text[later], 4: text[AT], 6: text[AT]}


def test_new_rows_of_several_reports_keep_their_order_and_columns(cursor):
    """New rows go in groups that share a report's columns: runs of rows from different
    devices, sources and instants, one coming back after another, are stored as given."""
    later = AT + timedelta(hours=2)
    reports = [
        (1, "mdm", AT),
        (2, "mdm", AT),
        (1, "mdm", later),
        (1, "osquery", AT),
        (2, "mdm", AT),
    ]
    rows = [
        (device, source, "inventory", "apple_bundle_id", f"com.app{n}.{run}", "raw", None, None,
         instant, instant)
        for run, (device, source, instant) in enumerate(reports)
        for n in range(run + 1)
    ]  # fmt: skip
    bulk._sqlite_writes([], {}, [], rows, cursor)
    text = bulk.SqliteInstants()
    assert _stored(cursor) == [
        (n, *row[:8], text[row[8]], text[row[9]]) for n, row in enumerate(rows, 1)
    ]
