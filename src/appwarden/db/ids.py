"""Primary keys for many new rows, taken from the store in one statement before they are written.

A row whose id the store assigns must come back with it: PostgreSQL inserts such rows as
`INSERT … VALUES (…), (…) … RETURNING id`, a statement with a parameter per value that psycopg
rewrites and PostgreSQL parses whole, about 35 µs a row. With the ids known beforehand the same rows
go as one prepared statement executed many times in a pipeline (psycopg's `executemany`), about a
third of that. So a flush of many new objects of one class gets their ids first (`StoreSession`),
and the bulk paths' own inserts do the same (`allocate_ids`). A few new objects keep the
`RETURNING` insert: asking for ids first would cost them a round trip of its own.

The ids are those the store would have given, in the same order: PostgreSQL's from the column's
sequence, SQLite's the next after the largest (what SQLite itself gives a table whose integer key
is not AUTOINCREMENT; every unit of work that writes holds SQLite's write lock from its first
statement, `BEGIN IMMEDIATE`, so nobody else takes them meanwhile).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Column, event, func, inspect, select
from sqlalchemy.orm import Mapper, Session, UOWTransaction

#: From how many new objects of one class a flush takes their ids first.
ALLOCATE_FROM = 16


class StoreSession(Session):
    """The units of work's session: a flush of many new objects of one class with an integer
    key the store assigns asks for their ids first (`ALLOCATE_FROM`)."""


def allocate_ids(session: Session, model: type[Any] | Mapper[Any], count: int) -> list[int]:
    """`count` new keys of the mapped class `model` (an integer key the store assigns),
    ascending, in the caller's transaction."""
    column = _assigned_key(inspect(model))
    if column is None:
        raise ValueError(f"{model!r} has no integer key the store assigns")
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
    waiting: dict[Mapper[Any], list[Any]] = {}
    for state in map(inspect, session.new):
        waiting.setdefault(state.mapper, []).append(state)
    for mapper, states in waiting.items():
        column = _assigned_key(mapper) if len(states) >= ALLOCATE_FROM else None
        if column is None:
            continue
        key = mapper.get_property_by_column(column).key
        unnamed = [s for s in states if getattr(s.obj(), key) is None]
        unnamed.sort(key=lambda s: s.insert_order)  # the order the flush inserts them in
        for state, value in zip(unnamed, allocate_ids(session, mapper, len(unnamed)), strict=True):
            setattr(state.obj(), key, value)
