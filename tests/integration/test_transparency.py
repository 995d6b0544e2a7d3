"""`appwarden transparency PERSON --json`: exactly the rows stored about the person's devices,
compared with a direct query of every table, and nothing about anyone else (both stores)."""

from __future__ import annotations

from datetime import datetime

import orjson
from sqlalchemy import select
from tests.conftest import metadata, table_digest

from appwarden.timeutil import iso

DAVE = "dave@example.com"
AT = "2020-07-10T12:00:00-07:00"
OTHERS = (
    "alice@example.com",
    "bob@example.com",
    "carol@example.com",
    "erin@example.com",
    "frank@example.com",
)


def plain(row) -> dict:
    return {k: iso(v) if isinstance(v, datetime) else v for k, v in row.items()}


def stored(store, table, where) -> list[dict]:
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(table).where(where).order_by(*table.primary_key.columns)
        ).mappings()
        return [plain(r) for r in rows]


def ids_of(store, email: str) -> tuple[int, list[int]]:
    tables = metadata().tables
    person, device = tables["person"], tables["device"]
    with store.engine.connect() as connection:
        person_id = connection.execute(select(person.c.id).where(person.c.email == email)).scalar()
        devices = connection.execute(
            select(device.c.id).where(device.c.owner_id == person_id).order_by(device.c.id)
        ).scalars()
        return person_id, list(devices)


def test_dave_sees_exactly_the_rows_stored_about_his_devices(cli, demo, store):
    # Something of every kind: dave's own statement (an attestation report with its coverage).
    confirmed = cli(
        "attest",
        "enrollment_id:D4VE-USER-ENROLLMENT-0001",
        "--policy",
        "tiktok-mobile-email",
        "--as",
        DAVE,
        "--at",
        AT,
    )
    assert confirmed.code == 0, confirmed.err
    before = table_digest(store.engine)
    shown = cli("transparency", DAVE, "--as", DAVE, "--at", AT, "--json")
    assert shown.code == 0, shown.err
    assert table_digest(store.engine) == before  # reading changes nothing
    body = shown.json()
    person_id, device_ids = ids_of(store, DAVE)
    assert device_ids
    assert [d["device"]["id"] for d in body["devices"]] == device_ids

    tables = metadata().tables
    per_device = [t for t in tables.values() if "device_id" in t.c and t.name != "device"]
    listed_tables = set()
    for entry in body["devices"]:
        device_id = entry["device"]["id"]
        (row,) = stored(store, tables["device"], tables["device"].c.id == device_id)
        assert entry["device"] == row
        for table in per_device:
            if table.name in ("notice", "exemption", "fact_conflict"):
                continue
            expected = stored(store, table, table.c.device_id == device_id)
            assert entry["tables"].get(table.name, []) == expected, table.name
            if expected:
                listed_tables.add(table.name)
    for name in ("notice", "exemption", "fact_conflict"):
        table = tables[name]
        where = table.c.person_id == person_id
        if "device_id" in table.c:
            where = where | table.c.device_id.in_(device_ids)
        assert body[name] == stored(store, table, where), name
    # What the memo stored about dave's phone, each row with its source where it has one.
    assert {"device_identifier", "report", "coverage", "compliance_state", "decision"} <= (
        listed_tables
    )
    (phone,) = [d for d in body["devices"] if d["device"]["platform"] == "ios"]
    assert {r["source"] for r in phone["tables"]["report"]} == {"mdm-export", "attestation"}
    assert {(r["source"], r["evidence_kind"]) for r in phone["tables"]["coverage"]} >= {
        ("attestation", "attestation")
    }
    assert len(body["notice"]) >= 1
    # Nothing about anyone else.
    text = shown.out.lower()
    for other in OTHERS:
        assert other not in text
    assert all(n["person_id"] == person_id for n in body["notice"])


def test_only_oneself_or_a_reader_sees_a_persons_data(cli, demo, store):
    before = table_digest(store.engine)
    for actor in ("alice@example.com", None):
        args = ("transparency", DAVE, "--json", *(("--as", actor) if actor else ()))
        refused = cli(*args)
        assert refused.code == 5, refused.err
        assert "dave" not in refused.out
    assert cli("transparency", "nobody@example.com", "--as", "alice@example.com").code == 5
    reader = cli("transparency", DAVE, "--as", "ciso@example.com", "--json")
    assert reader.code == 0, reader.err
    assert orjson.loads(reader.out)["person"] == DAVE
    missing = cli("transparency", "nobody@example.com", "--as", "ciso@example.com")
    assert missing.code == 3
    assert table_digest(store.engine) == before
