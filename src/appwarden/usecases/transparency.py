"""Transparency: every row stored about a person's devices, table by table, as stored.

What is listed is found from the schema, not from a hand-kept list: every table with a
`device_id` column (identifiers, reports, their coverage, observations, states, decisions, first
sightings, held conflicts, ...), each device's own row, and the rows naming the person that are
about their devices (notices, exemptions, held conflicts). A table added later with a `device_id`
is listed without anyone remembering to add it here. Sign-in records (sessions, links,
passwords) are about the person's account, not their devices, and are not listed.

The portal's "what we store" page (`usecases.portal.my_data`) and `appwarden transparency`
read the same rows through `stored_rows`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Table, select

# The model modules whose tables may hold rows about a device are imported so that their tables
# are in the metadata whichever entry point runs this.
from appwarden.access import models as _access_models  # noqa: F401
from appwarden.compliance import models as _compliance_models  # noqa: F401
from appwarden.db.base import Base
from appwarden.db.chunked import one_of
from appwarden.db.uow import UnitOfWork
from appwarden.errors import NotFound
from appwarden.exemptions import models as _exemption_models  # noqa: F401
from appwarden.identity.models import Person
from appwarden.identity.service import find_person, require
from appwarden.notifications import models as _notice_models  # noqa: F401
from appwarden.policies import models as _policy_models  # noqa: F401
from appwarden.timeutil import iso
from appwarden.vocabulary import Permission

#: Person-keyed tables whose rows are about the person's devices and what they were told.
PERSON_TABLES: Final = ("notice", "exemption", "fact_conflict")

Row = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class StoredRows:
    """Rows as stored: per device id, its row and its rows in every device-keyed table; and the
    person's rows in PERSON_TABLES."""

    devices: Mapping[int, Row]
    device_tables: Mapping[int, Mapping[str, Sequence[Row]]]
    person_tables: Mapping[str, Sequence[Row]]

    def as_json(self) -> dict[str, Any]:
        return {
            "devices": [
                {"device": self.devices[i], "tables": dict(self.device_tables[i])}
                for i in sorted(self.devices)
            ],
            **{name: list(rows) for name, rows in self.person_tables.items()},
        }


def device_tables() -> list[Table]:
    """Every table holding rows about one device (a `device_id` column), by name."""
    return sorted(
        (t for t in Base.metadata.tables.values() if "device_id" in t.c and t.name != "device"),
        key=lambda t: t.name,
    )


def _plain(value: Any) -> Any:
    return iso(value) if isinstance(value, datetime) else value


def _rows(uow: UnitOfWork, table: Table, where: Any) -> list[Row]:
    ordering = list(table.primary_key.columns)
    result = uow.session.execute(select(table).where(where).order_by(*ordering)).mappings()
    return [{str(key): _plain(value) for key, value in row.items()} for row in result]


def stored_rows(uow: UnitOfWork, person_id: int, device_ids: Sequence[int]) -> StoredRows:
    """Every row stored about these devices of the person, and the person's PERSON_TABLES rows
    (an exemption or conflict of one of the devices is listed there, once)."""
    device_table = Base.metadata.tables["device"]
    devices = {
        int(row["id"]): row
        for row in _rows(uow, device_table, one_of(device_table.c.id, device_ids))
    }
    per_device: dict[int, dict[str, list[Row]]] = {i: {} for i in devices}
    for table in device_tables():
        if table.name in PERSON_TABLES:
            continue
        for row in _rows(uow, table, one_of(table.c.device_id, device_ids)):
            per_device[int(row["device_id"])].setdefault(str(table.name), []).append(row)
    person_tables = {}
    for name in PERSON_TABLES:
        table = Base.metadata.tables[name]
        where = table.c.person_id == person_id
        if "device_id" in table.c:
            where = where | one_of(table.c.device_id, device_ids)
        person_tables[name] = _rows(uow, table, where)
    return StoredRows(devices, per_device, person_tables)


def person_to_show(uow: UnitOfWork, reference: str) -> Person:
    """The person whose data the actor asks for: themself, or anyone with `read`."""
    person = find_person(uow, reference)
    actor = find_person(uow, uow.actor) if uow.actor else None
    if person is not None and actor is not None and actor.id == person.id:
        return person
    require(uow, Permission.READ)  # anyone else's data is an admin's read
    if person is None:
        raise NotFound(f"no person {reference[:254]!r}")
    return person
