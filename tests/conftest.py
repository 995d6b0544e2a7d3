"""Shared fixtures: a migrated store on SQLite and on PostgreSQL, the CLI, and table digests.

Store tests take the `store` fixture and run once per backend. PostgreSQL comes from
APPWARDEN_TEST_POSTGRES_URL (default: the local server on 127.0.0.1:5432); when it is not
reachable the PostgreSQL variants skip, unless APPWARDEN_REQUIRE_SERVICES=1 (CI), where they fail.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine, create_engine, event, inspect, select, text
from sqlalchemy.engine import make_url

from appwarden.cli.main import run
from appwarden.db import migrate
from appwarden.db.engine import make_engine
from appwarden.db.uow import unit_of_work
from appwarden.identity.tokens import create_token
from appwarden.vocabulary import Permission
from appwarden.wiring import metadata
from tests.proxy_harness import free_port

POSTGRES_ADMIN_URL = os.environ.get(
    "APPWARDEN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_SERVICES = os.environ.get("APPWARDEN_REQUIRE_SERVICES") == "1"


@dataclass
class Store:
    url: str
    engine: Engine
    backend: str


def _postgres_available() -> str | None:
    try:
        engine = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:  # any failure to connect means "not available"
        return str(exc).splitlines()[0]
    return None


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies (cheaper than migrating every time)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()  # closing the last connection folds the WAL into the file we copy
    assert not Path(f"{path}-wal").exists()
    return path


@contextmanager
def migrated_postgres_database(prefix: str) -> Iterator[str]:
    """A new PostgreSQL database named `prefix_<random>`, migrated; its URL. Dropped on exit.
    Fails (or skips, without APPWARDEN_REQUIRE_SERVICES=1) when no server is reachable."""
    problem = _postgres_available()
    if problem:
        if REQUIRE_SERVICES:
            pytest.fail(f"PostgreSQL is required (APPWARDEN_REQUIRE_SERVICES=1): {problem}")
        pytest.skip(f"PostgreSQL not reachable: {problem}")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """One migrated PostgreSQL database for the session; tests empty it between runs."""
    with migrated_postgres_database("appwarden_test") as url:
        yield url


def _empty_postgres(engine: Engine) -> None:
    tables = [t.name for t in metadata().sorted_tables]
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))


def reset_store(store: Store, request: pytest.FixtureRequest) -> None:
    """Back to the migrated, empty store the `store` fixture gave (to run a scenario twice)."""
    store.engine.dispose()
    if store.backend == "postgresql":
        _empty_postgres(store.engine)
        return
    path = Path(str(store.engine.url.database))
    for leftover in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)
    shutil.copy(request.getfixturevalue("sqlite_template"), path)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        path = tmp_path / "appwarden.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("postgres_database")
    engine = make_engine(url)
    if request.param == "postgresql":
        _empty_postgres(engine)
    yield Store(url=url, engine=engine, backend=request.param)
    engine.dispose()


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return orjson.loads(self.out)


@pytest.fixture
def cli(store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run `appwarden --db STORE ARGS...` in-process and capture what it printed."""
    monkeypatch.delenv("APPWARDEN_ACTOR", raising=False)
    monkeypatch.setenv("COLUMNS", "200")

    def invoke(*args: str) -> CliResult:
        capsys.readouterr()
        code = run(["--db", store.url, *args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke


@pytest.fixture
def demo(cli) -> None:
    """The reference organisation (`appwarden demo`), made the day before the deadline."""
    result = cli("demo", "--base-time", "2020-07-10T09:00:00-07:00")
    assert result.code == 0, result.err


TOKEN_CREATED_AT = datetime(2020, 7, 11, 19, 0, tzinfo=UTC)


def api_token(store: Store, *permissions: Permission, name: str = "t") -> str:
    """The secret of a new API token with `permissions`. A token that may write inventory is
    bound to one source: it writes as the demo's MDM, `mdm-export`."""
    writes = {Permission.INVENTORY_WRITE, Permission.ADMIN} & set(permissions)
    with unit_of_work(store.engine, now=TOKEN_CREATED_AT) as uow:
        _, secret = create_token(
            uow, name, [str(p) for p in permissions], source="mdm-export" if writes else None
        )
    return secret


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@contextmanager
def statements_sent(engine: Engine) -> Iterator[list[str]]:
    """Every SQL statement the engine sends while the block runs, as sent."""
    sent: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


def table_digest(engine: Engine, *, exclude: tuple[str, ...] = ()) -> str:
    """A digest of every row of every table (but those excluded): equal digests mean nothing
    changed."""
    digest = hashlib.sha256()
    with engine.connect() as connection:
        for table in metadata().sorted_tables:
            if table.name in exclude:
                continue
            columns = [c.name for c in table.columns]
            rows = connection.execute(select(table).order_by(*table.primary_key.columns)).all()
            digest.update(table.name.encode())
            for row in rows:
                digest.update(repr(tuple(zip(columns, row, strict=True))).encode())
    return digest.hexdigest()


def repeatable_digest(engine: Engine) -> str:
    """`table_digest` of every table but what differs between two runs of the same steps: the
    notices' random Message-IDs (which the audit entries of sent notices record and chain) and
    the decisions' wall-clock `written_at`. Equal digests: the runs stored the same."""
    tables = metadata().tables
    decision, notice, audit = tables["decision"], tables["notice"], tables["audit_entry"]
    with engine.connect() as connection:
        decisions = connection.execute(
            select(*(c for c in decision.columns if c.name != "written_at")).order_by(
                decision.c.device_id, decision.c.resource
            )
        ).all()
        notices = connection.execute(
            select(notice.c.id, notice.c.person_id, notice.c.kind, notice.c.status).order_by(
                notice.c.id
            )
        ).all()
        entries = [
            (*row[:7], {k: v for k, v in (row.after or {}).items() if k != "message_id"})
            for row in connection.execute(
                select(
                    audit.c.id, audit.c.at, audit.c.actor, audit.c.action, audit.c.object_type,
                    audit.c.object_id, audit.c.before, audit.c.after,
                ).order_by(audit.c.id)
            )
        ]  # fmt: skip
    digest = table_digest(engine, exclude=("decision", "notice", "audit_entry"))
    return repr((digest, decisions, notices, entries))


def as_one_source(path: Path) -> bytes:
    """A native inventory file as its top-level source alone would send it over HTTP, where a
    token writes as exactly one source (report-level sources removed)."""
    doc = orjson.loads(path.read_bytes())
    for device in doc.get("devices", []):
        device.get("report", {}).pop("source", None)
    return orjson.dumps(doc)


def release_policy(cli, path: Path, text: str, at: str, *, author: str, approver: str) -> None:
    """Apply, propose, approve and publish (short notice allowed) a policy document: the
    version is in effect from `at` plus the undo window (10 minutes)."""
    path.write_text(text)
    policy_id = text.split("id: ", 1)[1].split("\n", 1)[0].strip()
    for args in (
        ("policy", "apply", str(path), "--as", author),
        ("policy", "propose", policy_id, "--as", author),
        ("policy", "approve", policy_id, "--as", approver),
        ("policy", "publish", policy_id, "--short-notice", "--as", author),
    ):
        done = cli(*args, "--at", at)
        assert done.code == 0, (args, done.err)


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


@dataclass
class SmtpServer:
    """A real SMTP server (aiosmtpd) on loopback that keeps every message it accepted."""

    host: str
    port: int
    messages: list

    def by_header(self, name: str, value: str) -> list:
        return [m for m in self.messages if m[name] == value]


@pytest.fixture
def smtp_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpServer]:
    import email
    import email.policy

    from aiosmtpd.controller import Controller

    received: list = []

    class Keep:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
            received.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
            return "250 OK"

    port = free_port()
    controller = Controller(Keep(), hostname="127.0.0.1", port=port)
    controller.start()
    monkeypatch.setenv("APPWARDEN_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("APPWARDEN_SMTP_PORT", str(port))
    monkeypatch.setenv("APPWARDEN_SMTP_SENDER", "it-security@example.com")
    try:
        yield SmtpServer("127.0.0.1", port, received)
    finally:
        controller.stop()


def wait_until_current(app) -> None:
    """Until a server's gate copy has loaded and is current (its start-up load is a thread, and
    on PostgreSQL its LISTEN connection must be up)."""
    deadline = time.monotonic() + 10
    while not app.state.live_index.fresh() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app.state.live_index.fresh()
