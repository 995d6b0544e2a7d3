"""IMPORT: a 20,000-host Fleet export imported end to end, against a raw insert of the same rows.

In a scratch store holding the reference organisation (the memo released), `appwarden import
fleet PAGE...` runs in this process exactly as on the command line, over 40 pages of 500 hosts
(`bench/fleet_export.py`; about 45 software items a host) written to a temporary directory:
reading, parsing, resolving devices, storing reports and observations, and evaluating every
touched device, a transaction per page. Measured: app rows stored per second.

The baseline, in the same run, is the same observation rows, read back from the store and
pre-built in memory, inserted raw into the same `observation` table (the DDL and indexes
appwarden's migrations write, the same durability settings: appwarden's own engine) of a second
scratch store holding the same devices: `executemany` on SQLite, `COPY` on PostgreSQL. Both
stores' rows are then compared by count and checksum.

No bar applies yet: the bulk ingest path of the scale work (W5, "≥ 50 % of raw rows/s") is
measured against exactly this baseline. The ratio is recorded so that work starts from it.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
import time
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, select, text

from bench.fleet import BASE_TIME, scratch_store, store_version
from bench.fleet_export import fleet_hosts_page

IMPORT_AT = "2020-07-11T18:00:00Z"
PAGE = 500
Note = Callable[[str], None]
Advance = Callable[[int], None]

OBSERVATION_COLUMNS = (
    "device_id",
    "source",
    "evidence_kind",
    "namespace",
    "value",
    "raw_value",
    "version",
    "name",
    "first_seen_at",
    "last_seen_at",
)


# Fixed column names, no input: the statement the baseline runs for every row.
INSERT = (
    f"INSERT INTO observation ({', '.join(OBSERVATION_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' for _ in OBSERVATION_COLUMNS)})"
)
SELECT = f"SELECT {', '.join(OBSERVATION_COLUMNS)} FROM observation"  # noqa: S608
COPY = f"COPY observation ({', '.join(OBSERVATION_COLUMNS)}) FROM STDIN"


@dataclass(frozen=True)
class Params:
    hosts: int

    @classmethod
    def of(cls, *, quick: bool) -> Params:
        return cls(2_000 if quick else 20_000)


def _cli(url: str, workdir: Path, *args: str) -> None:
    from appwarden.cli.main import run
    from bench.fleet import _environment

    env = {
        "APPWARDEN_ENV": "test",
        "APPWARDEN_DATABASE_URL": url,
        "APPWARDEN_MAILDIR": str(workdir / "mail"),
    }
    said = io.StringIO()
    with _environment(env), redirect_stderr(said), redirect_stdout(io.StringIO()):
        code = run(list(args))
    if code != 0:
        raise SystemExit(
            f"bench: `appwarden {' '.join(args[:2])}` failed ({code}): {said.getvalue()}"
        )


def _write_pages(workdir: Path, hosts: int) -> list[str]:
    paths = []
    for start in range(0, hosts, PAGE):
        path = workdir / f"hosts-{start // PAGE:04d}.json"
        path.write_text(json.dumps(fleet_hosts_page(min(PAGE, hosts - start), start)))
        paths.append(str(path))
    return paths


def _rows(engine: Engine) -> list[tuple[Any, ...]]:
    """The stored observation rows as the driver returns them (SQLite's stored text for times,
    as the raw insert writes them again: pre-built, no conversion timed)."""
    with engine.connect() as connection:
        return [tuple(row) for row in connection.exec_driver_sql(SELECT)]


def checksum(rows: list[tuple[Any, ...]]) -> str:
    digest = hashlib.sha256()
    for row in sorted(rows, key=repr):
        digest.update(repr(row).encode())
    return digest.hexdigest()


def _raw_insert(engine: Engine, backend: str, rows: list[tuple[Any, ...]]) -> float:
    """Seconds to insert `rows` into `observation` with the driver's own bulk path."""
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        started = time.perf_counter()
        if backend == "postgresql":
            with cursor.copy(COPY) as copy:
                for row in rows:
                    copy.write_row(row)
        else:  # one transaction, begun as appwarden's engine begins one (it runs in autocommit)
            cursor.execute("BEGIN IMMEDIATE")
            cursor.executemany(INSERT, rows)
        connection.commit()
        return time.perf_counter() - started
    finally:
        connection.close()


def _copy_devices(source: Engine, target: Engine) -> None:
    """The devices the observations belong to (their foreign key), untimed."""
    from appwarden.devices.models import Device

    with source.connect() as connection:
        devices = [
            {**row._mapping, "owner_id": None}  # people are not copied: only the device FK counts
            for row in connection.execute(select(Device.__table__))
        ]
    with target.begin() as connection:
        connection.execute(text("DELETE FROM observation"))
        connection.execute(insert(Device), devices)


def run(db: str | None, params: Params, note: Note, advance: Advance) -> dict[str, Any]:
    from appwarden.db import migrate
    from appwarden.db.engine import make_engine

    with tempfile.TemporaryDirectory(prefix="appwarden-import-") as tmp:
        workdir = Path(tmp)
        with scratch_store(db, workdir) as (url, backend):
            note("loading the reference organisation")
            _cli(url, workdir, "demo", "--base-time", BASE_TIME)
            pages = _write_pages(workdir, params.hosts)
            note(f"importing {params.hosts:,} Fleet hosts in {len(pages)} pages")
            started = time.perf_counter()
            _cli(url, workdir, "import", "fleet", *pages, "--at", IMPORT_AT)
            seconds = time.perf_counter() - started
            advance(params.hosts)
            engine = make_engine(url)
            try:
                stored = _rows(engine)
                version = store_version(url)
            finally:
                engine.dispose()
            with scratch_store(_second(db, workdir), workdir, tag="_raw") as (raw_url, _):
                raw_engine = make_engine(raw_url)
                try:
                    migrate.upgrade(raw_engine)
                    engine = make_engine(url)
                    try:
                        _copy_devices(engine, raw_engine)
                    finally:
                        engine.dispose()
                    note(f"raw insert of the same {len(stored):,} rows")
                    raw_seconds = _raw_insert(raw_engine, backend, stored)
                    raw_rows = _rows(raw_engine)
                finally:
                    raw_engine.dispose()
    return _result(params, backend, version, stored, raw_rows, seconds, raw_seconds)


def _second(db: str | None, workdir: Path) -> str | None:
    """Where the baseline's store goes: another SQLite file, or the same PostgreSQL server."""
    if db is None or db.startswith("sqlite"):
        return f"sqlite:///{workdir / 'raw.db'}"
    return db


def _result(
    params: Params,
    backend: str,
    version: str,
    stored: list[tuple[Any, ...]],
    raw_rows: list[tuple[Any, ...]],
    seconds: float,
    raw_seconds: float,
) -> dict[str, Any]:
    rate = len(stored) / seconds
    raw_rate = len(raw_rows) / raw_seconds
    same = len(stored) == len(raw_rows) and checksum(stored) == checksum(raw_rows)
    return {
        "workload": "IMPORT",
        "what": f"`appwarden import fleet` of {params.hosts:,} hosts, pages of {PAGE}, end to end",
        "baseline": "raw executemany (SQLite) / COPY (PostgreSQL) of the same observation rows",
        "parameters": {"hosts": params.hosts, "page": PAGE, "backend": backend, "store": version},
        "measured": {
            "seconds": round(seconds, 2),
            "app_rows": len(stored),
            "rows_per_second": round(rate),
            "hosts_per_second": round(params.hosts / seconds, 1),
            "raw_seconds": round(raw_seconds, 3),
            "raw_rows_per_second": round(raw_rate),
            "ratio": round(rate / raw_rate, 4),
        },
        "bars": {
            "ratio": {  # recorded, not held to a bar yet: W5's bulk ingest is measured against it
                "bar": "none yet (W5 will ask >= 0.50)",
                "value": round(rate / raw_rate, 4),
                "pass": None,
            },
            "rows_equal": {
                "bar": "stored rows' count and checksum equal the raw insert's",
                "value": same,
                "pass": same,
            },
        },
        "pass": same,
    }
