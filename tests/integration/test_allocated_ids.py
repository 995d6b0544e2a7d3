"""Keys taken before a flush of many new rows (`db/ids.py`): the rows go without `RETURNING`, get
the ids the store would have given them, in the order they were added, and the store's own
assignment carries on after them; a flush of a few new rows, or of rows named already, is left as
it was. On both stores."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import event, select

from appwarden.db.ids import ALLOCATE_FROM, allocate_ids
from appwarden.db.uow import UnitOfWork, unit_of_work
from appwarden.identity.models import Person
from appwarden.vocabulary import PersonStatus

AT = datetime(2020, 7, 11, 19, tzinfo=UTC)


def _person(n: int) -> Person:
    return Person(
        email=f"p{n:04d}@example.com", status=PersonStatus.ACTIVE, created_at=AT, source="test"
    )


@contextmanager
def _statements(store) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn, _cursor, statement, _params, _context, _many) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(store.engine, "before_cursor_execute", record)


def _add(uow: UnitOfWork, numbers: range) -> list[Person]:
    people = [_person(n) for n in numbers]
    uow.session.add_all(people)
    uow.session.flush()
    return people


def _ids_by_email(store) -> dict[str, int]:
    with unit_of_work(store.engine, now=AT, write=False) as uow:
        return dict(uow.session.execute(select(Person.email, Person.id)).all())


def test_many_new_rows_get_the_store_s_next_ids_without_returning(store):
    with unit_of_work(store.engine, now=AT) as uow:
        first = _add(uow, range(3))  # a few: the store assigns them
    with unit_of_work(store.engine, now=AT) as uow, _statements(store) as statements:
        many = _add(uow, range(3, 3 + ALLOCATE_FROM + 4))
    inserts = [s for s in statements if s.startswith("INSERT INTO person")]
    assert inserts
    assert not any("RETURNING" in s for s in inserts)
    expected = list(range(first[-1].id + 1, first[-1].id + 1 + len(many)))
    assert [p.id for p in many] == expected
    with unit_of_work(store.engine, now=AT) as uow:
        (after,) = _add(uow, range(900, 901))
    assert after.id == expected[-1] + 1  # the store's own assignment carries on after them
    stored = _ids_by_email(store)
    assert [stored[p.email] for p in [*first, *many, after]] == [
        p.id for p in [*first, *many, after]
    ]


def test_a_few_new_rows_and_named_rows_are_left_to_the_store(store):
    with unit_of_work(store.engine, now=AT) as uow, _statements(store) as statements:
        few = _add(uow, range(ALLOCATE_FROM - 1))
    assert not any("nextval" in s or "max(" in s for s in statements)
    named = [_person(n) for n in range(100, 100 + ALLOCATE_FROM)]
    named[0].id = 10_000
    with unit_of_work(store.engine, now=AT) as uow:
        uow.session.add_all(named)
        uow.session.flush()
    assert named[0].id == 10_000
    assert [p.id for p in named[1:]] == sorted(p.id for p in named[1:])
    assert min(p.id for p in named[1:]) > few[-1].id
    assert _ids_by_email(store)[named[0].email] == 10_000


def test_allocated_ids_ascend_from_the_next_and_are_not_given_twice(store):
    with unit_of_work(store.engine, now=AT) as uow:
        _add(uow, range(2))
        ids = allocate_ids(uow.session, Person, 5)
        again = allocate_ids(uow.session, Person, 2) if store.backend == "postgresql" else []
        assert allocate_ids(uow.session, Person, 0) == []
    assert ids == list(range(ids[0], ids[0] + 5))
    assert ids[0] == 3
    # PostgreSQL's sequence never gives a value twice; SQLite's next is the largest stored + 1,
    # so there the caller writes its rows before it asks again.
    assert not set(again) & set(ids)
