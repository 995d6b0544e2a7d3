"""A synthetic fleet in a fresh store: the reference organisation (`appwarden demo`) plus `extra`
people, each with one phone that syncs mail over ActiveSync, imported through the native format
(`appwarden import native`'s path: parse, then one ingest per batch, then the planner-statistics
refresh the command ends with) in batches built in memory, so nothing large is ever written to
disk.

Device `i` (0-based) belongs to `bench{i:06d}@bench.example.com` (ActiveSync user `bench{i:06d}`),
has the ActiveSync DeviceId `BE` + 30 hex digits and reports an inventory observed before the
memo's release. Every third one (i % 3 == 0) has TikTok: after the deadline it is denied, the
others are allowed. After the import, the decisions whose time came are refreshed once (what the
worker does, without delivering notices), so every device has a materialised, valid decision.
"""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.engine import make_url

from appwarden.timeutil import parse_instant

#: When the memo was released in the reference organisation.
BASE_TIME = "2020-07-10T09:00:00-07:00"
#: Reports of the extra devices were observed here: before the release, so TikTok is due at the
#: deadline (2020-07-10T23:59:59-07:00) and not given a grace period.
OBSERVED_AT = "2020-07-10T08:00:00-07:00"
#: When the extra devices are imported and their decisions materialised: after the deadline.
IMPORT_AT = "2020-07-11T18:00:00Z"
#: The benchmark's clock: after the deadline, so the fleet is a mix of allow and deny.
BENCH_AT = "2020-07-11T19:00:00Z"
#: Clean reports pushed by W6 are observed here (after OBSERVED_AT, before BENCH_AT).
CLEAN_AT = "2020-07-11T18:30:00Z"

PROXY_KEY = "bench-proxy-key-0123456789abcdef"
#: The NetBIOS domain of the extra people's down-level logon names (`BENCH\bench000123`).
BENCH_DOMAIN = "BENCH"
SOURCE = "mdm-export"
EAS_PATH = "/Microsoft-Server-ActiveSync"
MIN_FREE_BYTES = 1 << 30

TIKTOK_IOS = {
    "namespace": "apple_bundle_id",
    "value": "com.zhiliaoapp.musically",
    "version": "38.4.0",
}
TIKTOK_ANDROID = {"namespace": "android_package", "value": "com.zhiliaoapp.musically"}
OUTLOOK_IOS = {"namespace": "apple_bundle_id", "value": "com.microsoft.Office.Outlook"}
OUTLOOK_ANDROID = {"namespace": "android_package", "value": "com.microsoft.office.outlook"}
GMAIL = {"namespace": "android_package", "value": "com.google.android.gm"}
SLACK_IOS = {"namespace": "apple_bundle_id", "value": "com.tinyspeck.chatlyio"}

# The reference organisation's phones that reach mail: (ActiveSync user, DeviceId).
DEMO_PHONES: tuple[tuple[str, str], ...] = (
    ("alice", "6F24CAD599A5BF1A690246B8C68FAE8D"),
    ("bob", "B0B0A1D2E3F4A5B6C7D8E9F0A1B2C3D4"),
    ("carol", "CA201C0FFEE0000000000000000A2210"),
    ("dave", "DA7E00000000000000000000000000D1"),
    ("frank", "F4A2C0DE000000000000000000F4A2C0"),
)


def user_of(i: int) -> str:
    return f"bench{i:06d}"


def eas_id_of(i: int) -> str:
    return f"BE{i:030X}"


def has_tiktok(i: int) -> bool:
    return i % 3 == 0


def gate_uri(user: str, device_id: str) -> str:
    return f"{EAS_PATH}?Cmd=Sync&User={user}&DeviceId={device_id}&DeviceType=iPhone"


def _android(i: int) -> bool:
    return i % 2 == 1


def device_entry(
    i: int, *, tiktok: bool, observed_at: str, with_facts: bool = True
) -> dict[str, Any]:
    """The native-format device entry of extra device `i` with one inventory report."""
    android = _android(i)
    if android:
        apps = [GMAIL, OUTLOOK_ANDROID] + ([TIKTOK_ANDROID] if tiktok else [])
    else:
        apps = [OUTLOOK_IOS, SLACK_IOS] + ([TIKTOK_IOS] if tiktok else [])
    entry: dict[str, Any] = {
        "identifiers": [
            {
                "namespace": "enterprise_specific_id" if android else "udid",
                "value": f"BENCH-{i:08d}",
            },
            {"namespace": "eas_device_id", "value": eas_id_of(i)},
        ],
        "report": {"evidence_kind": "inventory", "observed_at": observed_at, "apps": apps},
    }
    if with_facts:
        entry.update(
            {
                "platform": "android" if android else "ios",
                "form_factor": "phone",
                "ownership": "personal" if i % 4 else "corporate",
                "owner": f"{user_of(i)}@bench.example.com",
                "resources": ["email"],
                "name": f"Bench phone {i}",
            }
        )
    return entry


def inventory_document(
    devices: list[dict[str, Any]], people: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "format": "appwarden.inventory/v1",
        "source": SOURCE,
        "people": people or [],
        "devices": devices,
    }


def batch_document(start: int, stop: int) -> bytes:
    people = [
        {
            "email": f"{user_of(i)}@bench.example.com",
            "display_name": f"Bench Person {i}",
            "accounts": [f"{BENCH_DOMAIN}\\{user_of(i)}"],  # the down-level logon name
        }
        for i in range(start, stop)
    ]
    devices = [
        device_entry(i, tiktok=has_tiktok(i), observed_at=OBSERVED_AT) for i in range(start, stop)
    ]
    return orjson.dumps(inventory_document(devices, people))


@dataclass
class Fleet:
    """A prepared store and what the benchmarks need to drive it."""

    url: str
    backend: str
    extra: int
    workdir: Path
    token: str  # inventory:write and decisions:read
    seconds_to_build: float = 0.0
    store_version: str = ""

    @property
    def phones(self) -> list[tuple[str, str]]:
        """(ActiveSync user, DeviceId) of every phone that reaches mail."""
        return [*DEMO_PHONES, *((user_of(i), eas_id_of(i)) for i in range(self.extra))]

    def server_env(self, clock: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("APPWARDEN_")}
        env.update(
            {
                "APPWARDEN_ENV": "test",
                "APPWARDEN_DATABASE_URL": self.url,
                "APPWARDEN_CLOCK": clock,
                "APPWARDEN_GATE_PROXY_KEY": PROXY_KEY,
                "APPWARDEN_MAILDIR": str(self.workdir / "mail"),
            }
        )
        return env


def check_free_space(path: Path, needed: int = MIN_FREE_BYTES) -> None:
    free = shutil.disk_usage(path).free
    if free < needed:
        raise SystemExit(f"bench: {path} has {free >> 20} MiB free; at least {needed >> 20} needed")


def run_cli(url: str, workdir: Path, *args: str) -> None:
    """`appwarden ARGS...` in this process on the store at `url` (test environment, mail to a
    maildir under `workdir`), quiet; a failure stops the benchmark with what the command said."""
    from appwarden.cli.main import run

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


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def scratch_store(db: str | None, workdir: Path, tag: str = "") -> Iterator[tuple[str, str]]:
    """(URL, backend) of an empty store: a new SQLite file in `workdir`, or a new PostgreSQL
    database `appwarden_bench_<pid><tag>` on the server `db` names, dropped afterwards."""
    if db is None or make_url(db).get_backend_name() == "sqlite":
        path = Path(make_url(db).database or "").resolve() if db else workdir / "bench.db"
        if db and (not make_url(db).database or path.exists()):
            raise SystemExit(f"bench: {db} must name a SQLite file that does not exist yet")
        yield f"sqlite:///{path}", "sqlite"
        return
    from appwarden.db.engine import make_engine, normalise_url

    admin_url = make_url(normalise_url(db))
    name = f"appwarden_bench_{os.getpid()}{tag}"
    admin = make_engine(
        admin_url.render_as_string(hide_password=False), isolation_level="AUTOCOMMIT"
    )
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield admin_url.set(database=name).render_as_string(hide_password=False), "postgresql"
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def store_version(url: str) -> str:
    from appwarden.db.engine import make_engine

    if make_url(url).get_backend_name() == "sqlite":
        return f"SQLite {sqlite3.sqlite_version}"
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return str(connection.execute(text("SELECT version()")).scalar_one()).split(" on ")[0]
    finally:
        engine.dispose()


def build_fleet(
    url: str,
    backend: str,
    workdir: Path,
    extra: int,
    *,
    batch: int = 500,
    advance: Callable[[int], None] = lambda _n: None,
) -> Fleet:
    """Load the reference organisation, import `extra` devices in batches, materialise every
    decision at BENCH_AT and create an API token. `advance(n)` is told of each batch."""
    import time

    from appwarden.cli.main import run
    from appwarden.db.engine import make_engine
    from appwarden.db.uow import unit_of_work
    from appwarden.identity.tokens import create_token
    from appwarden.settings import Settings
    from appwarden.sources.native import parse_native
    from appwarden.usecases.ingest import ingest
    from appwarden.usecases.release import refresh_expired, release_due
    from appwarden.usecases.statistics import refresh_inventory_statistics

    started = time.perf_counter()
    env = {
        "APPWARDEN_ENV": "test",
        "APPWARDEN_DATABASE_URL": url,
        "APPWARDEN_MAILDIR": str(workdir / "mail"),
    }
    said = io.StringIO()
    with _environment(env), redirect_stderr(said):
        code = run(["demo", "--base-time", BASE_TIME])
        settings = Settings()
    if code != 0:
        raise SystemExit(f"bench: `appwarden demo` failed ({code}): {said.getvalue()}")
    # Without the event bus: ingest still re-evaluates each device and materialises its decisions
    # in the same transaction, but the late-entrant notices (which recompute the whole fleet's
    # audience for every new device, quadratic in the fleet) are not planned.
    engine = make_engine(settings.database_url)
    try:
        imported_at = parse_instant(IMPORT_AT)
        for start in range(0, extra, batch):
            stop = min(extra, start + batch)
            parsed = parse_native(batch_document(start, stop), f"bench-{start}", strict=True)
            with unit_of_work(engine, now=imported_at) as uow:
                result = ingest(uow, parsed)
            if result.skipped or result.quarantined or result.reports_applied != stop - start:
                raise SystemExit(f"bench: importing devices {start}..{stop} failed: {result}")
            advance(stop - start)
        with unit_of_work(engine, now=imported_at, write=False) as uow:
            refresh_inventory_statistics(uow)  # as `appwarden import` ends (PostgreSQL)
        at: datetime = parse_instant(BENCH_AT)
        with unit_of_work(engine, now=at) as uow:
            release_due(uow)
            refresh_expired(uow)
        _release_breakers(engine, at)
        with unit_of_work(engine, now=at, actor="bench") as uow:
            _, secret = create_token(
                uow, "bench", ["inventory:write", "decisions:read"], source=SOURCE
            )
    finally:
        engine.dispose()
    return Fleet(
        url=url,
        backend=backend,
        extra=extra,
        workdir=workdir,
        token=secret,
        seconds_to_build=time.perf_counter() - started,
        store_version=store_version(url),
    )


BENCH_ADMIN = "bench-admin@bench.example.com"


def _release_breakers(engine: Any, at: datetime) -> None:
    """Apply the denies the mass-lockout breaker held while the fleet was imported (a third of
    it turns denied at once), as an admin who checked them would: the benchmark's denied phones
    are denied."""
    from appwarden.db.uow import unit_of_work
    from appwarden.identity.service import grant_role
    from appwarden.usecases.breakers import breaker_rows, release_breaker
    from appwarden.vocabulary import Role

    with unit_of_work(engine, now=at) as uow:
        grant_role(uow, BENCH_ADMIN, Role.ADMIN)
    with unit_of_work(engine, now=at, actor=BENCH_ADMIN) as uow:
        held = [row["policy"] for row in breaker_rows(uow) if row.get("held")]
    for policy in held:
        with unit_of_work(engine, now=at, actor=BENCH_ADMIN) as uow:
            release_breaker(uow, policy)


@contextmanager
def prepared_fleet(
    db: str | None, extra: int, advance: Callable[[int], None] = lambda _n: None
) -> Iterator[Fleet]:
    """A fleet in a scratch store, removed (file or database) when the block ends."""
    workdir = Path(tempfile.mkdtemp(prefix="appwarden-bench-"))
    try:
        check_free_space(workdir)
        with scratch_store(db, workdir) as (url, backend):
            yield build_fleet(url, backend, workdir, extra, advance=advance)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
