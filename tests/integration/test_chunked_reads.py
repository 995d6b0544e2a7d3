"""Reads by a fleet-sized set of ids (`db.chunked.scalars_in`, `compliance.rules.device_views`): a
memo's audience, a retraction's recipients, `status` over every device in scope. PostgreSQL's protocol refuses a statement with
more than 65,535 parameters, so one `IN (...)` list of a large organisation's devices fails there;
read a chunk at a time, the same set answers on both stores."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from tests.conftest import statements_sent

from appwarden.compliance.rules import device_views
from appwarden.db.chunked import one_of, scalars_in
from appwarden.db.uow import unit_of_work
from appwarden.devices.models import Device, DeviceIdentifier, Observation
from appwarden.devices.service import device_identifiers

AT = datetime(2020, 7, 11, 19, tzinfo=UTC)
FLEET = 70_000  # past PostgreSQL's 65,535 parameters per statement


def test_a_fleet_sized_set_of_ids_is_read_on_both_stores(store, demo):
    with unit_of_work(store.engine, now=AT, write=False) as uow:
        stored = sorted(uow.session.scalars(select(Device.id)))
        wanted = set(range(-FLEET, 0)) | set(stored)  # ids no device has, and every device's
        found = scalars_in(uow.session, select(Device), Device.id, wanted)
        assert sorted(d.id for d in found) == stored
        identifiers = device_identifiers(uow, wanted)
        views = device_views(uow, sorted(wanted))
    assert sorted(views) == stored
    assert len(identifiers) == len(wanted)
    assert all(identifiers[device_id] for device_id in stored)
    assert not any(identifiers[device_id] for device_id in range(-FLEET, 0))


def test_one_of_takes_the_values_of_each_execution_on_both_stores(store, demo):
    """A statement is compiled once and then taken from SQLAlchemy's cache: each execution must
    still read its own values, given with the statement or by name at execution. PostgreSQL
    receives the set as one array parameter (`= ANY`), SQLite as an `IN` list."""
    with unit_of_work(store.engine, now=AT, write=False) as uow:
        stored = sorted(uow.session.scalars(select(Device.id)))
        values = sorted(uow.session.scalars(select(DeviceIdentifier.value)))
        for part in (stored[:2], stored[2:5], [], [-1, *stored[5:6]]):
            found = uow.session.scalars(select(Device.id).where(one_of(Device.id, part)))
            assert sorted(found) == [i for i in part if i in stored]
        named = select(Device.id).where(one_of(Device.id, key="ids"))
        for part in (stored[:1], stored[1:4]):
            assert sorted(uow.session.scalars(named, {"ids": part})) == part
        by_value = select(DeviceIdentifier.value).where(
            one_of(DeviceIdentifier.value, {values[0], values[-1], "no such value"})
        )
        assert sorted(uow.session.scalars(by_value)) == [values[0], values[-1]]
        with statements_sent(store.engine) as sent:
            uow.session.scalars(select(Device.id).where(one_of(Device.id, stored))).all()
    (statement,) = sent
    if store.backend == "postgresql":
        assert statement.count("%(") == 1
    else:
        assert statement.count("?") == len(stored)


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_one_of_is_answered_from_an_index_on_sqlite(store, demo):
    """On SQLite `one_of` is a plain `IN` list, which SQLite answers by searching the index that
    starts with the column. Written as a boolean value (`(… IN (…)) = 1`, SQLAlchemy's way with a
    boolean column on a store without booleans) it made SQLite read every row of the table: a
    bulk import's page read all the observations stored before it."""
    with unit_of_work(store.engine, now=AT, write=False) as uow:
        connection = uow.session.connection()
        with statements_sent(store.engine) as statements:
            connection.execute(select(Observation.id).where(one_of(Observation.device_id, [1, 2])))
        (sql,) = statements
        dbapi = connection.connection.driver_connection
        assert dbapi is not None
        plan = " ".join(row[3] for row in dbapi.execute(f"EXPLAIN QUERY PLAN {sql}", (1, 2)))
    assert plan.startswith("SEARCH observation USING"), plan
