"""Every stored instant comes back as the same instant in UTC (`db.base.UTCDateTime`), whatever
zone it was written in or the PostgreSQL session reads in, also when many rows read together
share some instants (each distinct value is converted once, from a small cache). On both stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text

from appwarden.db.uow import unit_of_work
from appwarden.identity.models import Person
from appwarden.vocabulary import PersonStatus

AT = datetime(2020, 7, 11, 19, tzinfo=UTC)
PACIFIC = timezone(timedelta(hours=-7))


def _written(store, instants: list[datetime]) -> None:
    with unit_of_work(store.engine, now=AT) as uow:
        uow.session.add_all(
            Person(
                email=f"p{n:04d}@example.com",
                status=PersonStatus.ACTIVE,
                created_at=instant,
                source="test",
            )
            for n, instant in enumerate(instants)
        )


def _read(store, *, session_zone: str | None = None) -> list[datetime]:
    with unit_of_work(store.engine, now=AT, write=False) as uow:
        if session_zone is not None:
            uow.session.execute(text(f"SET LOCAL TIME ZONE '{session_zone}'"))
        return list(uow.session.scalars(select(Person.created_at).order_by(Person.email)))


def test_many_rows_sharing_some_instants_read_back_each_its_own_in_utc(store):
    # runs of equal instants, written in two zones, with every value more often than the cache
    # holds entries: a value converted for one row must not stand in for another's
    instants = [
        (AT + timedelta(seconds=n // 3)).astimezone(PACIFIC if n % 2 else UTC) for n in range(300)
    ]
    _written(store, instants)

    read = _read(store)

    assert read == instants  # the same instants (aware datetimes compare as instants)
    assert all(value.tzinfo is UTC for value in read)
    assert [value.isoformat() for value in read[:4]] == [
        "2020-07-11T19:00:00+00:00",
        "2020-07-11T19:00:00+00:00",
        "2020-07-11T19:00:00+00:00",
        "2020-07-11T19:00:01+00:00",
    ]


@pytest.mark.parametrize("store", ["postgresql"], indirect=True)  # SQLite has no session zone
def test_a_session_in_another_zone_reads_the_same_instants_in_utc(store):
    instants = [AT + timedelta(hours=n) for n in range(5)]
    _written(store, instants)

    read = _read(store, session_zone="America/Los_Angeles")

    assert read == instants
    assert all(value.tzinfo is UTC for value in read)
