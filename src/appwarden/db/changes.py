"""The store's change feed: has anything been committed, by any process, since we last looked?

A port of its own, so that an adapter keeping a copy of the store's data (the gate's index,
`web.live_index`) decides only *when* to reload, never how to watch a database file or hold a
PostgreSQL connection open:

- `DataVersion` (SQLite): a marker that changes exactly when any connection, in any process,
  commits to the file;
- `Notifications` (PostgreSQL): a connection LISTENing on a channel; `wait` says whether a
  NOTIFY arrived. Losing the connection raises `ChangeFeedLost`.
"""

from __future__ import annotations

import mmap
import sqlite3
import sys
import threading
from types import TracebackType
from typing import Final

import psycopg
from sqlalchemy import Engine

__all__ = ["ChangeFeedLost", "DataVersion", "Notifications", "sqlite_data_version"]


class ChangeFeedLost(Exception):
    """The feed cannot say what changed: until it is back, nothing may be assumed current."""


class DataVersion:
    """Whether any connection, in any process, committed to the SQLite file since the last look.

    Read on every gate request, so it must cost next to nothing. The WAL-index header (the first
    48 bytes of the `-shm` file, https://sqlite.org/walformat.html) holds `iChange`, incremented
    by every write transaction, and the WAL's frame count and salts: those bytes change exactly
    when something was committed (or the WAL restarted). Reading them through a shared mapping
    costs a fraction of a microsecond. The header says which format it is (`iVersion` 3007000);
    for any other, or when the file cannot be mapped, `PRAGMA data_version` on a connection of
    our own answers instead (a few microseconds: it takes SQLite's read lock). Our connection also
    keeps the `-shm` file in existence while we map it."""

    _HEADER: Final = 48
    _FORMAT: Final = 3007000

    def __init__(self, path: str) -> None:
        self._connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._connection.execute("PRAGMA data_version").fetchone()  # opens the WAL index
        self._map: mmap.mmap | None = None
        try:
            with open(f"{path}-shm", "rb") as shm:
                mapped = mmap.mmap(shm.fileno(), self._HEADER, access=mmap.ACCESS_READ)
            if int.from_bytes(mapped[0:4], sys.byteorder) == self._FORMAT:
                self._map = mapped
            else:
                mapped.close()
        except (OSError, ValueError):
            self._map = None

    def read(self) -> bytes:
        """The current marker: equal to an earlier one iff nothing was committed in between.
        Raises `ChangeFeedLost` when the file cannot be read."""
        if self._map is not None:
            return self._map[0 : self._HEADER]
        try:
            with self._lock:
                version = self._connection.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error as exc:
            raise ChangeFeedLost(str(exc)) from exc
        return int(version).to_bytes(8, "little")

    def close(self) -> None:
        with self._lock:
            if self._map is not None:
                self._map.close()
                self._map = None
            self._connection.close()


def sqlite_data_version(engine: Engine) -> DataVersion | None:
    """The change marker of the engine's SQLite file; None for PostgreSQL or an in-memory
    database (nothing else can commit to it, and nothing can be watched)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or database in (None, "", ":memory:"):
        return None
    return DataVersion(str(database))


class Notifications:
    """A PostgreSQL connection of its own, LISTENing on `channel` (a constant of ours, never
    user input). Use it as a context manager; every failure to reach the store raises
    `ChangeFeedLost`."""

    def __init__(self, engine: Engine, channel: str, *, connect_timeout: int = 5) -> None:
        self._conninfo = engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        self._channel = channel
        self._connect_timeout = connect_timeout
        self._connection: psycopg.Connection[tuple[object, ...]] | None = None

    def __enter__(self) -> Notifications:
        try:
            self._connection = psycopg.connect(
                self._conninfo, autocommit=True, connect_timeout=self._connect_timeout
            )
            self._connection.execute(f"LISTEN {self._channel}")
        except (psycopg.Error, OSError) as exc:
            self.__exit__(None, None, None)
            raise ChangeFeedLost(str(exc)) from exc
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _open(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._connection is None:
            raise ChangeFeedLost("not listening")
        return self._connection

    def wait(self, timeout: float) -> bool:
        """True when a notification arrived within `timeout` seconds."""
        told = False
        try:
            for _ in self._open().notifies(timeout=timeout, stop_after=1):
                told = True  # drained to the end: the generator holds the connection's lock
        except (psycopg.Error, OSError) as exc:
            raise ChangeFeedLost(str(exc)) from exc
        return told

    def ping(self) -> None:
        """Raise `ChangeFeedLost` unless the store still answers on this connection."""
        try:
            self._open().execute("SELECT 1")
        except (psycopg.Error, OSError) as exc:
            raise ChangeFeedLost(str(exc)) from exc
