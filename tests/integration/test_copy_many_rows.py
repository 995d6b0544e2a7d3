"""Many rows of a plain INSERT go as `COPY` on PostgreSQL (`db.engine.copy_many_rows`): the rows
stored are those the INSERT would have stored (NULLs, JSON, instants, booleans, text with tabs,
newlines, backslashes, `\\N` and non-ASCII), an ORM flush of many new objects takes the same way,
and a row that breaks a constraint fails the statement as the INSERT would, leaving nothing.
Fewer rows, and an INSERT with ON CONFLICT, go as before. On both stores (SQLite inserts)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    event,
    insert,
    select,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.exc import IntegrityError

from appwarden.db.base import UTCDateTime
from appwarden.db.engine import COPY_FROM_ROWS
from appwarden.db.ids import ALLOCATE_FROM
from appwarden.db.uow import unit_of_work
from appwarden.identity.models import Person
from appwarden.vocabulary import PersonStatus

AT = datetime(2020, 7, 11, 19, tzinfo=UTC)
ROWS = COPY_FROM_ROWS + 8
TEXTS = [
    "plain",
    "tab\there",
    "new\nline",
    "back\\slash",
    "\\N",
    "",
    "émoji 🚫",
    "quote'\"",
    "a,b;c",
]


@pytest.fixture
def scratch(store) -> Iterator[Table]:
    metadata = MetaData()
    table = Table(
        "copy_scratch",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("name", String),
        Column("data", JSON),
        Column("at", UTCDateTime()),
        Column("flag", Boolean),
    )
    metadata.create_all(store.engine)
    yield table
    metadata.drop_all(store.engine)


def _rows(count: int, start: int = 1) -> list[dict[str, Any]]:
    return [
        {
            "id": start + i,
            "name": None if i % 7 == 3 else TEXTS[i % len(TEXTS)],
            "data": None
            if i % 5 == 4
            else {"n": i, "text": TEXTS[i % len(TEXTS)], "list": [1, None]},
            "at": None if i % 6 == 5 else AT + timedelta(microseconds=i),
            "flag": None if i % 4 == 3 else i % 2 == 0,
        }
        for i in range(count)
    ]


@contextmanager
def _statuses(engine: Engine) -> Iterator[list[str]]:
    """What the server answered to each statement (PostgreSQL: `COPY 40`, `INSERT 0 1`)."""
    answered: list[str] = []

    def record(_conn, cursor, _statement, _parameters, _context, _many) -> None:
        answered.append(str(getattr(cursor, "statusmessage", "")))

    event.listen(engine, "after_cursor_execute", record)
    try:
        yield answered
    finally:
        event.remove(engine, "after_cursor_execute", record)


def _stored(engine: Engine, table: Table) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [
            dict(row._mapping) for row in connection.execute(select(table).order_by(table.c.id))
        ]


def test_many_rows_are_stored_as_the_insert_would_store_them(store, scratch):
    rows = _rows(ROWS)
    with _statuses(store.engine) as answered, store.engine.begin() as connection:
        connection.execute(insert(scratch), rows)
    assert _stored(store.engine, scratch) == rows
    if store.backend == "postgresql":
        assert answered == [f"COPY {ROWS}"]


def test_an_orm_flush_of_many_new_objects_goes_the_same_way(store):
    people = [
        Person(
            email=f"p{n:03d}@example.com", status=PersonStatus.ACTIVE, created_at=AT, source="t\t1"
        )
        for n in range(max(ROWS, ALLOCATE_FROM))
    ]
    with _statuses(store.engine) as answered, unit_of_work(store.engine, now=AT) as uow:
        uow.session.add_all(people)
        uow.session.flush()
        expected = [(p.id, p.email, p.source) for p in people]
    with unit_of_work(store.engine, now=AT, write=False) as uow:
        stored = uow.session.execute(
            select(Person.id, Person.email, Person.source).order_by(Person.id)
        )
        assert [tuple(row) for row in stored] == expected
    if store.backend == "postgresql":
        assert f"COPY {len(people)}" in answered


def test_a_row_that_breaks_a_constraint_fails_the_statement_and_leaves_nothing(store, scratch):
    rows = _rows(ROWS)
    rows[ROWS // 2]["id"] = rows[0]["id"]  # a duplicate key half-way
    with pytest.raises(IntegrityError), store.engine.begin() as connection:
        connection.execute(insert(scratch), rows)
    assert _stored(store.engine, scratch) == []


def test_fewer_rows_and_an_upsert_go_as_before(store, scratch):
    few = _rows(COPY_FROM_ROWS - 1)
    with _statuses(store.engine) as answered, store.engine.begin() as connection:
        connection.execute(insert(scratch), few)
    assert _stored(store.engine, scratch) == few
    if store.backend != "postgresql":
        return
    assert not any(status.startswith("COPY") for status in answered)
    upsert = postgresql_insert(scratch).on_conflict_do_nothing(index_elements=["id"])
    with _statuses(store.engine) as answered, store.engine.begin() as connection:
        connection.execute(upsert, _rows(ROWS))  # the first rows conflict: left as they are
    assert not any(status.startswith("COPY") for status in answered)
    assert _stored(store.engine, scratch) == few + _rows(ROWS)[len(few) :]
