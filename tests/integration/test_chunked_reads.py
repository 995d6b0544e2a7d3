"""Reads by a fleet-sized set of ids (`db.chunked.scalars_in`, `compliance.rules.device_views`): a
memo's audience, a retraction's recipients, `status` over every device in scope. PostgreSQL's protocol refuses a statement with
more than 65,535 parameters, so one `IN (...)` list of a large organisation's devices fails there;
read a chunk at a time, the same set answers on both stores."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from appwarden.compliance.rules import device_views
from appwarden.db.chunked import scalars_in
from appwarden.db.uow import unit_of_work
from appwarden.devices.models import Device
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
