"""Primary keys for many new rows, taken from the store in one statement before they are written.

A row whose id the store assigns must come back with it: PostgreSQL inserts such rows as
`INSERT … VALUES (…), (…) … RETURNING id`, a statement with a parameter per value that psycopg
rewrites and PostgreSQL parses whole, about 35 µs a row. With the ids known beforehand the same rows
go as one prepared statement executed many times in a pipeline (psycopg's `executemany`), about a
third of that. So a flush of many new objects of one class gets their ids first (`StoreSession`),
and the bulk paths' own inserts do the same (`insert_rows`). A few new objects keep the
`RETURNING` insert: asking for ids first would cost them a round trip of its own.

The ids are those the store would have given, in the same order: PostgreSQL's from the column's
sequence, SQLite's the next after the largest (what SQLite itself gives a table whose integer key
is not AUTOINCREMENT; every unit of work that writes holds SQLite's write lock from its first
statement, `BEGIN IMMEDIATE`, so nobody else takes them meanwhile).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Column, event, func, insert, inspect, select
from sqlalchemy.orm import Mapper, Session, UOWTransaction

#: From how many new objects of one class a flush takes their ids first.
ALLOCATE_FROM = 16


class StoreSession(Session):
    """The units of work's session: a flush of many new objects of one class with an integer
    key the store assigns asks for their ids first (`ALLOCATE_FROM`)."""


def insert_rows(session: Session, model: type[Any], rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Insert these rows of `model` (without their key) and return their new keys, in order:
    many rows take their keys first (`ALLOCATE_FROM`), a few come back through `RETURNING`."""
    if not rows:
        return []
    column = _key_of(inspect(model))
    if len(rows) < ALLOCATE_FROM:
        returning = insert(model).returning(column, sort_by_parameter_order=True)
        return list(session.scalars(returning, rows))
    ids = _next_ids(session, column, len(rows))
    keyed = [{**row, column.key: i} for row, i in zip(rows, ids, strict=True)]
    session.execute(insert(model), keyed)
    return ids


def _next_ids(session: Session, column: Column[Any], count: int) -> list[int]:
    """`count` new values of the key `column`, ascending, in the caller's transaction."""
    if count <= 0:
        return []
    if session.get_bind().dialect.name == "postgresql":
        sequence = func.pg_get_serial_sequence(column.table.name, column.name)
        return sorted(
            session.scalars(
                select(func.nextval(sequence)).select_from(func.generate_series(1, count))
            )
        )
    largest = session.scalar(select(func.coalesce(func.max(column), 0)))
    assert largest is not None
    return list(range(largest + 1, largest + 1 + count))


def _key_of(mapper: Mapper[Any]) -> Column[Any]:
    column = _assigned_key(mapper)
    if column is None:
        raise ValueError(f"{mapper.class_!r} has no integer key the store assigns")
    return column


def _assigned_key(mapper: Mapper[Any]) -> Column[Any] | None:
    """The class's key when it is one integer column the store assigns, else None."""
    if len(mapper.primary_key) != 1:
        return None
    column = mapper.primary_key[0]
    if not isinstance(column, Column) or column.table.autoincrement_column is not column:
        return None
    return column


@event.listens_for(StoreSession, "before_flush")
def _allocate_before_flush(
    session: Session, _context: UOWTransaction, _instances: Iterable[Any] | None
) -> None:
    new = session.new
    if len(new) < ALLOCATE_FROM:  # most flushes (one report's): nothing to group
        return
    waiting: dict[Mapper[Any], list[Any]] = {}
    for state in map(inspect, new):
        waiting.setdefault(state.mapper, []).append(state)
    for mapper, states in waiting.items():
        column = _assigned_key(mapper) if len(states) >= ALLOCATE_FROM else None
        if column is None:
            continue
        key = mapper.get_property_by_column(column).key
        unnamed = [s for s in states if getattr(s.obj(), key) is None]
        unnamed.sort(key=lambda s: s.insert_order)  # the order the flush inserts them in
        for state, value in zip(unnamed, _next_ids(session, column, len(unnamed)), strict=True):
            setattr(state.obj(), key, value)
