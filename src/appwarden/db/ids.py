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

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Column, Table, event, func, insert, inspect, select
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


def insert_new_in_bulk(session: Session, classes: Collection[type[Any]]) -> None:
    """Insert the session's new objects of these classes, where it holds many of one
    (`ALLOCATE_FROM`), with one `executemany` per class (and set of columns given) in the order
    they were added, and let go of them: a flush spends about 50 µs an object on bookkeeping
    (its state, the identity map) that rows nobody changes again in the unit of work do not
    need. The caller names only such classes: the objects are no longer the session's, so a
    change to one afterwards would be lost (a query loads the stored row anew). A class that
    other new objects' rows refer to, or with objects being deleted, is left to the flush,
    which orders those statements."""
    with session.no_autoflush:  # what stays pending is the flush's, after these
        waiting: dict[Mapper[Any], list[Any]] = {}
        for state in map(inspect, session.new):
            waiting.setdefault(state.mapper, []).append(state)
        pending_tables = {mapper.local_table for mapper in waiting}
        deleting = {inspect(obj).mapper for obj in session.deleted}
        for mapper, states in waiting.items():
            if (
                mapper.class_ in classes
                and len(states) >= ALLOCATE_FROM
                and mapper not in deleting
                and not _refers_to(mapper, pending_tables)
            ):
                _insert_and_let_go(session, mapper, states)


def _refers_to(mapper: Mapper[Any], tables: Collection[Any]) -> bool:
    own = mapper.local_table
    return any(k.column.table in tables and k.column.table is not own for k in own.foreign_keys)


def _insert_and_let_go(session: Session, mapper: Mapper[Any], states: list[Any]) -> None:
    states.sort(key=lambda s: s.insert_order)
    _allocate_keys(session, mapper, states)
    columns = [(p.key, p.columns[0].key) for p in mapper.column_attrs]
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for state in states:
        values = state.dict
        row = {column: values[key] for key, column in columns if key in values}
        by_columns.setdefault(tuple(row), []).append(row)
    table = cast(Table, mapper.local_table)  # Core's insert, not the ORM's bulk one
    for rows in by_columns.values():
        session.execute(insert(table), rows)
    for state in states:
        session.expunge(state.obj())


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
        if len(states) >= ALLOCATE_FROM:
            _allocate_keys(session, mapper, sorted(states, key=lambda s: s.insert_order))


def _allocate_keys(session: Session, mapper: Mapper[Any], states: Sequence[Any]) -> None:
    """Give these new objects without a key theirs, in the order of `states` (the order the
    flush inserts them in), when the class's key is one the store assigns."""
    column = _assigned_key(mapper)
    if column is None:
        return
    key = mapper.get_property_by_column(column).key
    unnamed = [s for s in states if getattr(s.obj(), key) is None]
    for state, value in zip(unnamed, _next_ids(session, column, len(unnamed)), strict=True):
        setattr(state.obj(), key, value)
