"""Engines for the embedded SQLite default and for PostgreSQL.

SQLite runs in WAL mode with a busy timeout, and writers take the lock up front with
`BEGIN IMMEDIATE`, so the CLI, a server and a worker can share one file without "database is
locked" surprises half-way through a transaction.

On PostgreSQL, an `INSERT` of many plain rows (the ORM's flush of many new objects, or an
`execute(insert(table), rows)`) is sent as `COPY` (`copy_many_rows`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError

from appwarden.errors import AppwardenError

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: The oldest SQLite library appwarden runs on: inserts return their ids in row order with
#: `RETURNING`, and the bulk observation insert is a `MATERIALIZED` common table expression.
#: Both came with 3.35; older ones would fail on the first import with a bare syntax error.
SQLITE_OLDEST = (3, 35, 0)
log = logging.getLogger("appwarden.db")


def normalise_url(url: str) -> str:
    """Accept `postgresql://` and `postgres://` as well as the explicit psycopg 3 driver URL."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, *, background_checkpoints: bool = False, **kwargs: Any) -> Engine:
    """`background_checkpoints` (SQLite; a long-running server): commits never run the WAL
    checkpoint themselves, a `Checkpointer` thread does (see there)."""
    url = normalise_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        _check_sqlite_library()
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs
        )
        _configure_sqlite(engine, background_checkpoints=background_checkpoints)
        return engine
    engine = create_engine(url, **kwargs)
    _ping_when_idle(engine)
    event.listen(engine, "do_executemany", copy_many_rows)
    return engine


def _check_sqlite_library() -> None:
    if sqlite3.sqlite_version_info < SQLITE_OLDEST:
        oldest = ".".join(map(str, SQLITE_OLDEST))
        raise AppwardenError(
            f"appwarden needs SQLite {oldest} or newer; this Python's sqlite3 module uses "
            f"SQLite {sqlite3.sqlite_version} (use PostgreSQL, or a Python built with a newer "
            "SQLite)"
        )


# ── many rows of a plain INSERT, as COPY (PostgreSQL) ────────────────────────────────────────

#: From this many rows on, a plain INSERT's rows go as COPY. psycopg sends an `executemany` as a
#: pipeline of one parameter set per row, each adapted and queued in Python: about 18 ms for
#: 1,000 rows of a decision, against 3 ms for the same rows as `COPY` (and SQLAlchemy's
#: multi-row `VALUES`, its other way, 35 ms). A bulk import's page inserts a thousand rows or so
#: into each of a dozen tables (docs/architecture.md, "Bulk ingest").
COPY_FROM_ROWS = 32
#: What SQLAlchemy renders for an INSERT of bound values only (no SQL expression, no RETURNING,
#: no ON CONFLICT): `INSERT INTO t (a, b) VALUES (%(a)s::INTEGER, %(b)s::VARCHAR)`.
_BOUND = r"%\((\w+)\)s(?:::[A-Z][A-Z ]*)?"
_PLAIN_INSERT = re.compile(  # a pattern that reads SQLAlchemy's INSERT, not a query
    rf"INSERT INTO (?P<table>[\w.\"]+) \((?P<columns>[\w\", ]+)\) "  # noqa: S608
    rf"VALUES \((?P<values>{_BOUND}(?:, {_BOUND})*)\)"
)
_BIND_NAME = re.compile(_BOUND)
#: Statement → (the COPY statement, the bind names in column order), or None: not a plain INSERT.
#: The statements are the code's own, compiled by SQLAlchemy: a few dozen, never a caller's text.
_copies: dict[str, tuple[str, tuple[str, ...]] | None] = {}


def copy_many_rows(
    cursor: Any, statement: str, parameters: Sequence[Mapping[str, Any]], _context: Any
) -> bool:
    """SQLAlchemy's `do_executemany` hook: `COPY` the rows of a plain INSERT of at least
    `COPY_FROM_ROWS` rows, in the same transaction; True when it did (SQLAlchemy then sends
    nothing). The values are those SQLAlchemy bound (its type processing done); psycopg writes
    them as COPY text, which the server reads as the columns' types. Anything else (fewer rows,
    an UPDATE, an INSERT with an expression, RETURNING or ON CONFLICT) goes on as before."""
    if len(parameters) < COPY_FROM_ROWS or not isinstance(parameters[0], Mapping):
        return False
    if statement not in _copies:
        _copies[statement] = _copy_plan(statement)
    plan = _copies[statement]
    if plan is None:
        return False
    copy_statement, names = plan
    with cursor.copy(copy_statement) as copy:
        for row in parameters:
            copy.write_row([row[name] for name in names])
    return True


def _copy_plan(statement: str) -> tuple[str, tuple[str, ...]] | None:
    found = _PLAIN_INSERT.fullmatch(statement.strip())
    if found is None:
        return None
    columns = [c.strip() for c in found["columns"].split(",")]
    names = tuple(_BIND_NAME.findall(found["values"]))
    if len(columns) != len(names):
        return None
    return f"COPY {found['table']} ({', '.join(columns)}) FROM STDIN", names


# A pooled PostgreSQL connection is pinged on checkout only when it sat idle this long: a
# connection returned a moment ago is alive unless the server went away in that moment (then
# the statement fails, SQLAlchemy sees the disconnect and discards the pool). SQLAlchemy's
# `pool_pre_ping` pinged on every checkout, one round trip more per unit of work (W4: about 24).
PING_AFTER_IDLE_SECONDS = 1.0
_IDLE_SINCE = "appwarden.idle_since"


def _ping_when_idle(engine: Engine) -> None:
    @event.listens_for(engine, "checkin")
    def _idle_from(dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is not None:
            record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return  # a new connection, or one in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the pool replaces it and checks out again
            raise DisconnectionError(f"pooled connection failed its ping: {exc}") from exc


class Checkpointer:
    """Copies SQLite's write-ahead log back into the database file every `interval` seconds, on
    its own connection and thread.

    By default the commit that takes the log past 1,000 pages does that copy itself, and waits
    for it: in a server that is one request in every few dozen taking tens of milliseconds
    longer (W4's p99). With `make_engine(..., background_checkpoints=True)` no commit does, and
    this thread does instead (PASSIVE: it never waits for readers or writers, and SQLite releases
    the GIL while it copies). Processes without one (the CLI) keep SQLite's default.
    """

    def __init__(self, engine: Engine, *, interval: float = 1.0) -> None:
        self.engine = engine
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        database = self.engine.url.database
        if self.engine.dialect.name != "sqlite" or database in (None, "", ":memory:"):
            return
        self._thread = threading.Thread(
            target=self._run, args=(str(database),), name="appwarden-checkpoint", daemon=True
        )
        self._thread.start()

    def _run(self, path: str) -> None:
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            while not self._stop.wait(self.interval):
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    log.warning("WAL checkpoint failed; trying again in %ss", self.interval)
        finally:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            connection.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def _configure_sqlite(engine: Engine, *, background_checkpoints: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        if background_checkpoints:
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        write = connection.get_execution_options().get("appwarden_write", True)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
