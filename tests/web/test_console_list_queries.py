"""Every console list page renders one page of rows in a bounded number of SQL statements with
100,000 devices in the store, on SQLite and on PostgreSQL: the same count for a page of 10 rows
as for a page of 50, and for a next page as for the first.

The fleet is written directly (executemany on SQLite, COPY on PostgreSQL), not through ingest:
20,000 people, 100,000 devices with a serial each, a stored state and a decision per device
under the reference policy, 10,000 observations, 20,000 notices, 5,000 fact conflicts,
quarantined reports and exemption requests, and 100,000 audit entries — on top of the reference
organisation (`appwarden demo`), whose policy is in effect.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, Table, func, select, text
from tests.conftest import migrated_postgres_database
from tests.portal_harness import (
    MORNING,
    TimeFile,
    https_client,
    open_session,
    portal_settings,
    statements_while_rendering,
)

from appwarden.cli.main import run
from appwarden.db.engine import make_engine
from appwarden.policies.models import PolicyVersion
from appwarden.vocabulary import SignInMethod
from appwarden.web.app import create_app
from appwarden.wiring import metadata

DEVICES = 100_000
PEOPLE = 20_000
ADMIN = "it.admin@example.com"
#: The most statements a list page may cost, session check included.
MAX_STATEMENTS = 16
#: The tables the fleet writes ids into.
ID_TABLES = (
    "person", "device", "device_identifier", "observation", "notice", "fact_conflict",
    "quarantine", "exemption", "audit_entry",
)  # fmt: skip
#: Console list pages, with the filters that make them read the most.
LISTS = (
    "/admin/devices",
    "/admin/devices?state=action_required",
    "/admin/devices?platform=android",
    "/admin/devices?identifier=BULK0049999",
    "/admin/people",
    "/admin/people?status=left",
    "/admin/conflicts",
    "/admin/quarantine",
    "/admin/notices",
    "/admin/notices?status=failed",
    "/admin/exemptions",
    "/admin/exemptions?status=",
    "/admin/audit",
    "/admin/audit?action=bulk.test",
    "/admin/sources",
    "/admin/",
    "/admin/policies",
    "/admin/approvals",
)
#: Lists long enough to have a next page.
PAGED = (
    "/admin/devices",
    "/admin/people",
    "/admin/conflicts",
    "/admin/quarantine",
    "/admin/notices",
    "/admin/exemptions",
    "/admin/audit",
)


# ── the fleet ─────────────────────────────────────────────────────────────────────────────────


def _json_ready(row: dict[str, Any], table: Table) -> tuple[Any, ...]:
    """A row as COPY takes it: JSON columns as JSON text."""
    out = []
    for column in table.columns:
        value = row.get(column.name)
        if value is not None and column.type.__class__.__name__ == "JSON":
            value = orjson.dumps(value).decode()
        out.append(value)
    return tuple(out)


def _write(engine: Engine, name: str, rows: list[dict[str, Any]]) -> None:
    """`rows` into table `name`: COPY on PostgreSQL, executemany on SQLite."""
    table = metadata().tables[name]
    if engine.dialect.name != "postgresql":
        with engine.begin() as connection:
            connection.execute(table.insert(), rows)
        return
    columns = ", ".join(f'"{c.name}"' for c in table.columns)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        with cursor.copy(f'COPY "{name}" ({columns}) FROM STDIN') as copy:  # type: ignore[attr-defined]
            for row in rows:
                copy.write_row(_json_ready(row, table))
        raw.commit()
    finally:
        raw.close()


def _next_id(engine: Engine, name: str) -> int:
    with engine.connect() as connection:
        table = metadata().tables[name]
        return (
            int(connection.execute(select(func.coalesce(func.max(table.c.id), 0))).scalar_one()) + 1
        )


def _fleet(engine: Engine) -> None:
    at = MORNING - timedelta(days=1)
    due = MORNING + timedelta(days=1)
    with engine.connect() as connection:
        version_id, policy_id = connection.execute(
            select(PolicyVersion.id, PolicyVersion.policy_id).where(PolicyVersion.state == "active")
        ).one()
    person0, device0 = _next_id(engine, "person"), _next_id(engine, "device")
    _write(
        engine,
        "person",
        [
            {
                "id": person0 + n,
                "email": f"bulk{n:05d}@example.com",
                "display_name": f"Bulk {n}",
                "status": "left" if n % 10 == 0 else "active",
                "left_at": at if n % 10 == 0 else None,
                "created_at": at,
                "source": "bulk",
            }
            for n in range(PEOPLE)
        ],
    )
    devices = range(device0, device0 + DEVICES)
    _write(
        engine,
        "device",
        [
            {
                "id": d,
                "platform": "android" if d % 2 else "ios",
                "form_factor": "phone",
                "ownership": "corporate",
                "owner_id": person0 + d % PEOPLE,
                "name": f"bulk phone {d}",
                "status": "active",
                "created_at": at,
                "first_report_at": at,
                "mdm_source": "bulk",
            }
            for d in devices
        ],
    )
    identifier0 = _next_id(engine, "device_identifier")
    _write(
        engine,
        "device_identifier",
        [
            {
                "id": identifier0 + n,
                "device_id": d,
                "namespace": "serial",
                "value": f"BULK{n:07d}",
                "source": "bulk",
                "first_seen_at": at,
                "last_seen_at": at,
            }
            for n, d in enumerate(devices)
        ],
    )
    _write(
        engine,
        "compliance_state",
        [
            {
                "version_id": version_id,
                "device_id": d,
                "state": "action_required" if d % 3 == 0 else "compliant",
                "since": at,
                "due_at": due if d % 3 == 0 else None,
                "reasons": ["bulk"],
            }
            for d in devices
        ],
    )
    _write(
        engine,
        "decision",
        [
            {
                "device_id": d,
                "resource": "email",
                "decision": "allow",
                "reasons": [],
                "valid_until": due if d % 3 == 0 else None,
                "changed_at": at,
                "written_at": at,
            }
            for d in devices
        ],
    )
    observation0 = _next_id(engine, "observation")
    _write(
        engine,
        "observation",
        [
            {
                "id": observation0 + n,
                "device_id": device0 + n * 10,
                "source": "bulk",
                "evidence_kind": "inventory",
                "namespace": "android_package",
                "value": "com.zhiliaoapp.musically",
                "raw_value": "com.zhiliaoapp.musically",
                "first_seen_at": at,
                "last_seen_at": at,
            }
            for n in range(DEVICES // 10)
        ],
    )
    _queues(engine, person0, device0, policy_id, version_id, at)


def _queues(
    engine: Engine, person0: int, device0: int, policy_id: str, version_id: int, at: Any
) -> None:
    notice0 = _next_id(engine, "notice")
    _write(
        engine,
        "notice",
        [
            {
                "id": notice0 + n,
                "person_id": person0 + n,
                "policy_id": policy_id,
                "version_id": version_id,
                "kind": "announce",
                "due_slot": "bulk",
                "channel": "email",
                "address": f"bulk{n:05d}@example.com",
                "status": "failed" if n % 50 == 0 else "sent",
                "message_id": f"<bulk-{n}@example.com>",
                "subject": "A bulk notice",
                "payload": {},
                "created_at": at,
                "due_at": at,
                "sent_at": None if n % 50 == 0 else at,
                "attempts": 1,
                "last_error": "550" if n % 50 == 0 else None,
            }
            for n in range(PEOPLE)
        ],
    )
    start = _next_id(engine, "fact_conflict")
    _write(
        engine,
        "fact_conflict",
        [
            {
                "id": start + n,
                "fact": "platform",
                "device_id": device0 + n,
                "stored_value": "android",
                "offered_value": "windows",
                "source": "mail-agent",
                "first_offered_at": at,
                "last_offered_at": at,
                "status": "open",
            }
            for n in range(5_000)
        ],
    )
    start = _next_id(engine, "quarantine")
    _write(
        engine,
        "quarantine",
        [
            {
                "id": start + n,
                "source": "other-mdm",
                "received_at": at,
                "identifiers": [f"serial:BULK{n:07d}", f"serial:BULK{n + 1:07d}"],
                "candidate_device_ids": [device0 + n, device0 + n + 1],
                "reason": "the identifiers of one report belong to different devices",
            }
            for n in range(5_000)
        ],
    )
    start = _next_id(engine, "exemption")
    _write(
        engine,
        "exemption",
        [
            {
                "id": start + n,
                "policy_id": policy_id,
                "device_id": device0 + n,
                "reason": "bulk request",
                "status": "requested",
                "requested_by": person0 + n % PEOPLE,
                "created_at": at,
            }
            for n in range(5_000)
        ],
    )
    start = _next_id(engine, "audit_entry")
    _write(
        engine,
        "audit_entry",
        [
            {
                "id": start + n,
                "at": at,
                "actor": "bulk",
                "action": "bulk.test",
                "object_type": "device",
                "object_id": str(device0 + n),
                "after": {"n": n},
            }
            for n in range(DEVICES)
        ],
    )


def _organisation(url: str) -> None:
    assert run(["--db", url, "demo", "--base-time", "2020-07-10T09:00:00-07:00"]) == 0
    assert run(["--db", url, "admin", "create", ADMIN, "--role", "admin"]) == 0


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def big_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Engine, float]]:
    """A store holding the reference organisation and 100,000 more devices; how long writing
    the fleet took."""
    with ExitStack() as stack:
        if request.param == "sqlite":
            path = tmp_path_factory.mktemp("fleet") / "fleet.db"
            shutil.copy(request.getfixturevalue("sqlite_template"), path)
            url = f"sqlite:///{path}"
        else:
            url = stack.enter_context(migrated_postgres_database("appwarden_fleet"))
        engine = make_engine(url)
        stack.callback(engine.dispose)
        yield url, engine, _written(url, engine)


def _written(url: str, engine: Engine) -> float:
    """Write the reference organisation and the fleet; the seconds the fleet took."""
    _organisation(url)
    started = time.perf_counter()
    _fleet(engine)
    if engine.dialect.name == "postgresql":  # rows came with their ids: move the sequences on
        with engine.begin() as connection:
            for table in ID_TABLES:
                connection.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"
                    )
                )
            connection.execute(text("ANALYZE"))
    return time.perf_counter() - started


def _sized(path: str, size: int) -> str:
    return f"{path}{'&' if '?' in path else '?'}size={size}"


def test_every_list_page_costs_a_bounded_number_of_statements(big_store, tmp_path, monkeypatch):
    url, engine, written = big_store

    store = SimpleNamespace(url=url, engine=engine)
    clock = TimeFile(tmp_path / "now")
    clock.set(MORNING)
    with engine.connect() as connection:
        assert connection.execute(text("select count(*) from device")).scalar_one() > DEVICES
    app = create_app(portal_settings(store, clock, tmp_path))
    secret = open_session(store, ADMIN, MORNING, method=SignInMethod.PASSWORD)
    browser = https_client(app)
    browser.cookies.set("__Host-appwarden-session", secret)
    try:
        _measure(browser, engine, written, lambda: statements_while_rendering(app, monkeypatch))
    finally:
        browser.close()
        app.state.runtime.close()


def _measure(browser: Any, engine: Engine, written: float, counting: Any) -> None:
    """Each list's statements (none of them while its template renders) for 10 and 50 rows,
    and for its next page."""
    browser.get("/admin/")  # warm up: schema check, catalog, templates
    costs: dict[str, tuple[int, int, float]] = {}
    for path in LISTS:
        counted = []
        for size in (10, 50):
            started = time.perf_counter()
            with counting() as statements:
                response = browser.get(_sized(path, size))
            elapsed = time.perf_counter() - started
            assert response.status_code == 200, (path, response.text[:1500])
            assert statements["during"] == 0, path
            counted.append((statements["outside"], elapsed))
        costs[path] = (counted[0][0], counted[1][0], max(counted[0][1], counted[1][1]))
    for path in PAGED:
        first = browser.get(_sized(path, 10))
        found = re.search(r'href="([^"]+)" rel="next"', first.text)
        assert found, f"{path}: no next page"
        with counting() as statements:
            second = browser.get(found.group(1).replace("&amp;", "&"))
        assert second.status_code == 200
        assert statements["outside"] == costs[path][0], (path, statements, costs[path])
    report = "\n".join(
        f"{path}: {small} / {large} statements, {seconds * 1000:.0f} ms"
        for path, (small, large, seconds) in costs.items()
    )
    print(f"\n{engine.dialect.name}: fleet written in {written:.1f} s\n{report}")
    for path, (small, large, _) in costs.items():
        assert small == large, f"{path}: a longer page cost more statements\n{report}"
        assert small <= MAX_STATEMENTS, f"{path}: too many statements\n{report}"
