"""W5: ingest, a fresh load and a re-import with 1 % of apps changed, against raw inserts.

For each size (20,000 and 100,000 phones; `--quick`: 500), three scratch stores on the same
server (`--db`), each a migrated store with appwarden's DDL and indexes and its engine's
durability settings (SQLite: WAL, `synchronous` as appwarden sets it, `BEGIN IMMEDIATE`):

- **bulk**: the reference organisation (`appwarden demo`, the TikTok memo released), then the
  phones' native-format pages, parsed beforehand (untimed), through `usecases.ingest.ingest`, a
  transaction per page of 1,000 phones, as `appwarden import native` runs it: devices resolved,
  reports diffed and stored, every touched device evaluated and its decisions written. Timed:
  the fresh load, then the re-import (every phone again, observed a day later, 1 % of its app
  rows changed: half of those a new version, half replaced by another app).
- **end to end**: the same, from files on disk through `appwarden import native PAGE...` in this
  process (reading, orjson parsing, checking, the same ingest): the user's command.
- **raw**: for each step a new migrated store, the same devices copied in (untimed), then the
  observation rows the bulk store holds after the step, pre-built in memory, inserted into its
  empty `observation` table with the
  driver's own bulk path: `executemany` in one `BEGIN IMMEDIATE` transaction (SQLite), `COPY`
  (PostgreSQL). Two diagnostics: a bare 3-column table `(device_id, namespace, value)` takes
  the same number of rows the same way (the driver's floor), and another new store takes the
  same rows committed a page at a time, as the bulk path commits them (what the transactions
  themselves cost: on SQLite each commit waits for the write-ahead log to be copied back).

Measured: observation rows written per second (a fresh load writes every row, a re-import
touches every row: its `last_seen_at` moves). **Bars: bulk ≥ 50 % of raw rows/s; end to end
≥ 20 %**; the three stores' observation rows (all columns but the id) have the same count and
checksum.

Every phone is corporate (minimisation would drop most of a personal phone's apps), iOS or
Android, holds `email`, has 88 apps (every third one TikTok among them) and an owner, created by
the import as the source's person.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, insert, make_url, select, text

from appwarden.devices.bulk import OBSERVATION_COLUMNS
from bench.fleet import BASE_TIME, SOURCE, _environment, check_free_space, run_cli, scratch_store
from bench.fleet import store_version as version_of

APPS = 88
PAGE = 1_000
FRESH_OBSERVED_AT = "2020-07-11T12:00:00Z"
FRESH_AT = "2020-07-11T18:00:00Z"
REIMPORT_OBSERVED_AT = "2020-07-12T12:00:00Z"
REIMPORT_AT = "2020-07-12T18:00:00Z"
BULK_BAR = 0.50
END_TO_END_BAR = 0.20
Note = Callable[[str], None]
Advance = Callable[[int], None]

# Fixed names, no input: the statements of the baseline.
SELECT = f"SELECT {', '.join(OBSERVATION_COLUMNS)} FROM observation"  # noqa: S608
_KEY = "device_id, source, evidence_kind, namespace, value"  # the table's unique key
INSERT = (
    f"INSERT INTO observation ({', '.join(OBSERVATION_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' for _ in OBSERVATION_COLUMNS)})"
)
COPY = f"COPY observation ({', '.join(OBSERVATION_COLUMNS)}) FROM STDIN"
BARE_TABLE = "CREATE TABLE bare (device_id integer, namespace varchar(32), value varchar(512))"
BARE_INSERT = "INSERT INTO bare (device_id, namespace, value) VALUES (?, ?, ?)"
BARE_COPY = "COPY bare (device_id, namespace, value) FROM STDIN"


@dataclass(frozen=True)
class Params:
    sizes: tuple[int, ...]

    @classmethod
    def of(cls, *, quick: bool, sizes: tuple[int, ...] | None = None) -> Params:
        return cls(sizes or ((500,) if quick else (20_000, 100_000)))


# ── the phones ───────────────────────────────────────────────────────────────────────────────


def _changed(i: int, j: int) -> bool:
    """Is app row `j` of phone `i` one of the 1 % the re-import changes?"""
    return (i * APPS + j) % 100 == 0


def phone_entry(i: int, *, observed_at: str, reimport: bool = False) -> dict[str, Any]:
    """Phone `i`'s native-format entry: 88 apps, TikTok on every third phone; on the re-import
    its changed rows carry a new version (even rows) or another app (odd rows)."""
    android = i % 2 == 1
    namespace = "android_package" if android else "apple_bundle_id"
    apps = []
    for j in range(APPS):
        k = (i * 31 + j * 57) % 4_000  # 88 distinct apps of a pool of 4,000
        app = {"namespace": namespace, "value": f"com.vendor{k % 97}.app{k}", "version": "1.0"}
        if j == 0 and i % 3 == 0:
            app = {"namespace": namespace, "value": "com.zhiliaoapp.musically", "version": "38.4.0"}
        if reimport and _changed(i, j):
            if (i * APPS + j) % 200 == 0:
                app = {**app, "version": "2.0"}
            else:
                app = {"namespace": namespace, "value": f"com.changed.app{i}", "version": "1.0"}
        apps.append(app)
    return {
        "identifiers": [
            {"namespace": "enterprise_specific_id" if android else "udid", "value": f"W5-{i:08d}"},
            {"namespace": "serial", "value": f"W5SN{i:08d}"},
        ],
        "platform": "android" if android else "ios",
        "form_factor": "phone",
        "ownership": "corporate",
        "owner": f"w5.{i:06d}@bench.example.com",
        "resources": ["email"],
        "name": f"W5 phone {i}",
        "report": {"evidence_kind": "inventory", "observed_at": observed_at, "apps": apps},
    }


def pages(phones: int, *, reimport: bool) -> Iterator[bytes]:
    """The phones as native-format documents of PAGE phones each."""
    observed_at = REIMPORT_OBSERVED_AT if reimport else FRESH_OBSERVED_AT
    for start in range(0, phones, PAGE):
        devices = [
            phone_entry(i, observed_at=observed_at, reimport=reimport)
            for i in range(start, min(phones, start + PAGE))
        ]
        yield orjson.dumps(
            {"format": "appwarden.inventory/v1", "source": SOURCE, "devices": devices}
        )


# ── the stores ───────────────────────────────────────────────────────────────────────────────


def _bulk(
    url: str,
    workdir: Path,
    documents: list[bytes],
    at: str,
    *,
    around_page: Callable[[int], AbstractContextManager[object]] | None = None,
) -> float:
    """Seconds to ingest the pre-parsed documents as `appwarden import native` would;
    `around_page(n)` is entered around page n's unit of work (`bench.profile`)."""
    from appwarden.db.engine import make_engine
    from appwarden.settings import Settings
    from appwarden.sources.native import parse_native
    from appwarden.timeutil import parse_instant
    from appwarden.usecases.ingest import Writer, ingest
    from appwarden.wiring import Services

    batches = [parse_native(d, f"page-{n}", strict=True) for n, d in enumerate(documents)]
    env = {
        "APPWARDEN_ENV": "test",
        "APPWARDEN_DATABASE_URL": url,
        "APPWARDEN_MAILDIR": str(workdir / "mail"),
    }
    with _environment(env):
        settings = Settings()
    engine = make_engine(url)
    try:
        services = Services(settings, engine)  # the event reactions the CLI's import runs
        writer = Writer(
            fact_sources=settings.fact_sources,
            organisation_domains=frozenset(settings.organisation_domains),
        )
        now = parse_instant(at)
        started = time.perf_counter()
        for n, batch in enumerate(batches):
            with around_page(n) if around_page else nullcontext(), services.uow(now) as uow:
                result = ingest(
                    uow, batch, minimise_personal=settings.minimise_personal_data, writer=writer
                )
            if result.skipped or result.quarantined:
                raise SystemExit(f"bench: W5 ingest refused: {result}")
        return time.perf_counter() - started
    finally:
        engine.dispose()


def _end_to_end(url: str, workdir: Path, documents: list[bytes], at: str, tag: str) -> float:
    paths = [workdir / f"{tag}-{n:04d}.json" for n in range(len(documents))]
    for path, document in zip(paths, documents, strict=True):
        path.write_bytes(document)
    started = time.perf_counter()
    run_cli(url, workdir, "import", "native", *map(str, paths), "--at", at)
    seconds = time.perf_counter() - started
    for path in paths:
        path.unlink()
    return seconds


def _rows(engine: Engine) -> list[tuple[Any, ...]]:
    """The stored observation rows as the driver returns them (SQLite's stored text for times:
    pre-built, as the raw insert writes them again)."""
    with engine.connect() as connection:
        return [tuple(row) for row in connection.exec_driver_sql(SELECT)]


def stored_digest(engine: Engine) -> tuple[int, str]:
    """Count and SHA-256 of the stored observation rows (every column but the id), streamed in
    the order of their unique key: the three stores of a size are on one backend, so their rows
    come in the same order, and no store's rows are held in memory (at 100,000 phones three
    lists of 8.8 million rows and their sorted copies took the machine's 24 GB)."""
    digest, count = hashlib.sha256(), 0
    with engine.connect().execution_options(stream_results=True, yield_per=10_000) as connection:
        for row in connection.exec_driver_sql(f"{SELECT} ORDER BY {_KEY}"):
            digest.update(repr(tuple(row)).encode())
            count += 1
    return count, digest.hexdigest()


def _copy_devices(source: Engine, target: Engine) -> None:
    """The devices the observations belong to (their foreign key), untimed."""
    from appwarden.devices.models import Device

    with source.connect() as connection:
        devices = [
            {**row._mapping, "owner_id": None}  # people are not copied: only the device FK counts
            for row in connection.execute(select(Device.__table__))
        ]
    with target.begin() as connection:
        connection.execute(insert(Device), devices)


def _raw_insert(
    engine: Engine,
    backend: str,
    rows: list[tuple[Any, ...]],
    *,
    bare: bool = False,
    transactions: int = 1,
) -> float:
    """Seconds to insert `rows` into an empty `observation` (or `bare`) table with the driver's
    own bulk path, in `transactions` transactions of equal size (in order), each begun as
    appwarden's engine begins one."""
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS bare"))
        connection.execute(text(BARE_TABLE))
    if bare:
        rows = [(row[0], row[3], row[4]) for row in rows]
    size = max(1, -(-len(rows) // transactions))
    dbapi = engine.raw_connection()
    try:
        cursor = dbapi.cursor()
        started = time.perf_counter()
        for start in range(0, len(rows), size):
            part = rows[start : start + size]
            if backend == "postgresql":
                with cursor.copy(BARE_COPY if bare else COPY) as copy:
                    for row in part:
                        copy.write_row(row)
            else:  # appwarden's engine runs pysqlite in autocommit and begins explicitly
                cursor.execute("BEGIN IMMEDIATE")
                cursor.executemany(BARE_INSERT if bare else INSERT, part)
            dbapi.commit()
        return time.perf_counter() - started
    finally:
        dbapi.close()


@dataclass
class Step:
    """One step (fresh load or re-import) at one size: seconds per path, rows, checksums."""

    rows: int
    bulk_seconds: float
    end_to_end_seconds: float
    raw_seconds: float
    bare_seconds: float
    raw_paged_seconds: float
    pages: int
    equal: bool

    def as_dict(self) -> dict[str, Any]:
        def rate(seconds: float) -> int:
            return round(self.rows / seconds)

        raw = rate(self.raw_seconds)
        return {
            "rows": self.rows,
            "bulk": {
                "seconds": round(self.bulk_seconds, 2),
                "rows_per_second": rate(self.bulk_seconds),
            },
            "end_to_end": {
                "seconds": round(self.end_to_end_seconds, 2),
                "rows_per_second": rate(self.end_to_end_seconds),
            },
            "raw": {"seconds": round(self.raw_seconds, 3), "rows_per_second": raw},
            "bare_3_columns": {
                "seconds": round(self.bare_seconds, 3),
                "rows_per_second": rate(self.bare_seconds),
            },
            "raw_a_page_at_a_time": {
                "transactions": self.pages,
                "seconds": round(self.raw_paged_seconds, 3),
                "rows_per_second": rate(self.raw_paged_seconds),
            },
            "bulk_ratio": round(self.raw_seconds / self.bulk_seconds, 4),
            "end_to_end_ratio": round(self.raw_seconds / self.end_to_end_seconds, 4),
            "rows_equal": self.equal,
        }


def _size(db: str | None, phones: int, workdir: Path, note: Note) -> dict[str, Any]:
    from appwarden.db.engine import make_engine

    steps: dict[str, Step] = {}
    with (
        scratch_store(_named(db, workdir, "bulk"), workdir, tag="_bulk") as (bulk_url, backend),
        scratch_store(_named(db, workdir, "e2e"), workdir, tag="_e2e") as (e2e_url, _),
    ):
        for url in (bulk_url, e2e_url):
            run_cli(url, workdir, "demo", "--base-time", BASE_TIME)
        bulk, e2e = make_engine(bulk_url), make_engine(e2e_url)
        try:
            for step, at, reimport in (("fresh", FRESH_AT, False), ("reimport", REIMPORT_AT, True)):
                documents = list(pages(phones, reimport=reimport))
                note(f"W5 {phones:,} phones, {step}: bulk")
                bulk_seconds = _bulk(bulk_url, workdir, documents, at)
                note(f"W5 {phones:,} phones, {step}: end to end")
                e2e_seconds = _end_to_end(e2e_url, workdir, documents, at, step)
                page_count = len(documents)
                del documents
                stored = _rows(bulk)
                note(f"W5 {phones:,} phones, {step}: raw insert of {len(stored):,} rows")
                raw, bare, paged, equal = _raw_step(
                    db, workdir, step, stored, bulk, e2e, pages=page_count
                )
                steps[step] = Step(
                    len(stored), bulk_seconds, e2e_seconds, raw, bare, paged, page_count, equal
                )
                del stored
        finally:
            for engine in (bulk, e2e):
                engine.dispose()
    return {step: s.as_dict() for step, s in steps.items()} | {"backend": backend}


def _raw_step(
    db: str | None,
    workdir: Path,
    step: str,
    stored: list[tuple[Any, ...]],
    bulk: Engine,
    e2e: Engine,
    *,
    pages: int,
) -> tuple[float, float, float, bool]:
    """The raw and bare inserts of the step's rows, in a store made for the step, the raw insert
    again a page at a time in another, and whether the three stores hold the same rows. Each
    store is new because a table that an earlier step filled and a DELETE emptied is no empty
    table: on PostgreSQL its indexes still hold the dead rows, and each insert of a key they
    hold visits the heap to find them dead: each earlier fill made the re-import's raw insert
    ~10 % slower (3,000 phones, 2.23 -> 2.52 -> 2.78 -> 3.02 s), which flattered the
    re-import's ratio; on SQLite the emptied pages sit on the file's free list."""
    with _raw_store(db, workdir, f"raw-{step}", bulk) as (raw, backend):
        raw_seconds = _raw_insert(raw, backend, stored)
        equal = len({stored_digest(engine) for engine in (bulk, raw, e2e)}) == 1
        bare_seconds = _raw_insert(raw, backend, stored, bare=True)
    with _raw_store(db, workdir, f"raw-paged-{step}", bulk) as (raw, backend):
        paged_seconds = _raw_insert(raw, backend, stored, transactions=pages)
    return raw_seconds, bare_seconds, paged_seconds, equal


@contextmanager
def _raw_store(
    db: str | None, workdir: Path, name: str, bulk: Engine
) -> Iterator[tuple[Engine, str]]:
    """A migrated scratch store holding the bulk store's devices (the observations' foreign
    key), with its backend's name; its SQLite file removed afterwards (each is as large as the
    bulk store: at 100,000 phones four of them would take 12 GB)."""
    from appwarden.db import migrate
    from appwarden.db.engine import make_engine

    with scratch_store(_named(db, workdir, name), workdir, tag=f"_{name.replace('-', '_')}") as (
        url,
        backend,
    ):
        engine = make_engine(url)
        try:
            migrate.upgrade(engine)
            _copy_devices(bulk, engine)
            yield engine, backend
        finally:
            engine.dispose()
            if backend == "sqlite":
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{make_url(url).database}{suffix}").unlink(missing_ok=True)


def _named(db: str | None, workdir: Path, name: str) -> str | None:
    """Each store's place: its own SQLite file, or a database on the same PostgreSQL server."""
    if db is None or db.startswith("sqlite"):
        return f"sqlite:///{workdir / f'{name}.db'}"
    return db


def run(db: str | None, params: Params, note: Note, advance: Advance) -> dict[str, Any]:
    sizes: dict[str, Any] = {}
    backend = "sqlite"
    version = ""
    for phones in params.sizes:
        with tempfile.TemporaryDirectory(prefix="appwarden-w5-") as tmp:
            workdir = Path(tmp)
            check_free_space(workdir, needed=(phones // 20_000 + 1) << 31)
            measured = _size(db, phones, workdir, note)
            backend = measured.pop("backend")
            if not version:
                version = _version(db, workdir)
        sizes[str(phones)] = measured
        advance(phones)
    return _result(params, backend, version, sizes)


def _version(db: str | None, workdir: Path) -> str:
    with scratch_store(_named(db, workdir, "version"), workdir, tag="_version") as (url, _):
        return version_of(url)


def _result(params: Params, backend: str, version: str, sizes: dict[str, Any]) -> dict[str, Any]:
    bars: dict[str, Any] = {}
    for phones, steps in sizes.items():
        for step in ("fresh", "reimport"):
            s = steps[step]
            bars[f"bulk_{step}_{phones}"] = {
                "bar": f">= {BULK_BAR:.2f}",
                "value": s["bulk_ratio"],
                "pass": s["bulk_ratio"] >= BULK_BAR,
            }
            bars[f"end_to_end_{step}_{phones}"] = {
                "bar": f">= {END_TO_END_BAR:.2f}",
                "value": s["end_to_end_ratio"],
                "pass": s["end_to_end_ratio"] >= END_TO_END_BAR,
            }
            bars[f"rows_equal_{step}_{phones}"] = {
                "bar": "count and checksum of the bulk, end-to-end and raw stores' rows equal",
                "value": s["rows_equal"],
                "pass": s["rows_equal"],
            }
    return {
        "workload": "W5",
        "what": "ingest of N phones x 88 apps: a fresh load and a re-import with 1 % changed",
        "baseline": "raw executemany (SQLite) / COPY (PostgreSQL) of the same observation rows",
        "parameters": {
            "phones": list(params.sizes),
            "apps_per_phone": APPS,
            "page": PAGE,
            "backend": backend,
            "store": version,
        },
        "sizes": sizes,
        "bars": bars,
        "pass": all(bar["pass"] for bar in bars.values()),
    }
