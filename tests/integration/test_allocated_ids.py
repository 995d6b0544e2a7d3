"""Keys taken before a flush of many new rows (`db/ids.py`): the rows go without `RETURNING`, get
the ids the store would have given them, in the order they were added, and the store's own
assignment carries on after them; a flush of a few new rows, or of rows named already, is left as
it was. A bulk insert (`insert_rows`) takes its keys first the same way, for many rows only, and
so do the new objects a batch inserts without the flush (`insert_new_in_bulk`). On both
stores."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from tests.conftest import statements_sent

from appwarden.db.ids import ALLOCATE_FROM, insert_new_in_bulk, insert_rows
from appwarden.db.uow import UnitOfWork, unit_of_work
from appwarden.identity.models import Person, PersonAlias
from appwarden.vocabulary import PersonStatus

AT = datetime(2020, 7, 11, 19, tzinfo=UTC)


def _person(n: int) -> Person:
    return Person(
        email=f"p{n:04d}@example.com", status=PersonStatus.ACTIVE, created_at=AT, source="test"
    )


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
    with unit_of_work(store.engine, now=AT) as uow, statements_sent(store.engine) as statements:
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
    with unit_of_work(store.engine, now=AT) as uow, statements_sent(store.engine) as statements:
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


def test_a_bulk_insert_takes_keys_first_only_for_many_rows(store):
    def rows(numbers: range) -> list[dict[str, object]]:
        return [
            {"email": p.email, "status": p.status, "created_at": AT, "source": "test"}
            for p in map(_person, numbers)
        ]

    with unit_of_work(store.engine, now=AT) as uow, statements_sent(store.engine) as statements:
        assert insert_rows(uow.session, Person, []) == []
        few = insert_rows(uow.session, Person, rows(range(2)))
        many = insert_rows(uow.session, Person, rows(range(2, 2 + ALLOCATE_FROM)))
    assert few == [1, 2]
    assert many == list(range(3, 3 + ALLOCATE_FROM))  # the next ones, ascending, in order
    inserts = [s for s in statements if s.startswith("INSERT INTO person")]
    *few_inserts, many_insert = inserts  # SQLite's driver may send the few one by one
    assert few_inserts
    assert all("RETURNING" in s for s in few_inserts)
    assert "RETURNING" not in many_insert
    stored = _ids_by_email(store)
    assert [stored[f"p{n:04d}@example.com"] for n in range(2 + ALLOCATE_FROM)] == few + many


def test_new_rows_named_as_written_once_are_inserted_in_bulk_and_let_go(store):
    """`insert_new_in_bulk`: many new objects of a class named go in one insert, in the order
    they were added, with the ids the store would have given, and leave the session (nothing
    more is flushed for them); a few, or a class not named, stay for the flush, and so does a
    class whose rows refer to a table with rows still pending."""
    with unit_of_work(store.engine, now=AT) as uow:
        before = _add(uow, range(2))
        session = uow.session
        people = [_person(n) for n in range(10, 10 + ALLOCATE_FROM + 2)]
        session.add_all(people)
        insert_new_in_bulk(session, (Person,))
        assert not any(p in session for p in people)
        assert [p.id for p in people] == list(range(before[-1].id + 1, people[-1].id + 1))
        aliases = [
            PersonAlias(person_id=p.id, email=f"alias{n}@example.com") for n, p in enumerate(people)
        ]
        session.add_all(aliases)
        pending = _person(99)
        session.add(pending)  # a person not yet written: rows naming `person` wait for it
        insert_new_in_bulk(session, (PersonAlias,))
        assert all(a in session.new for a in aliases)
        few = [_person(n) for n in range(200, 203)]
        session.add_all(few)
        insert_new_in_bulk(session, (Person,))
        assert pending in session.new
        assert all(p in session.new for p in few)
        session.flush()  # (the people let go would break the addresses' uniqueness again)
    stored = _ids_by_email(store)
    assert [stored[p.email] for p in people] == [p.id for p in people]
    assert {pending.email, *(p.email for p in few)} <= set(stored)
    with unit_of_work(store.engine, now=AT, write=False) as uow:
        assert len(list(uow.session.scalars(select(PersonAlias.id)))) == len(aliases)
