"""Keeps this process's copy of the gate's facts (`access.index.DecisionIndex`) current.

The gate answers from the copy only while the copy is known to be current (`fresh()`, checked on
every request, costs microseconds); otherwise the request takes the slower path that catches up
first (`catch_up()`) or asks the store. How "current" is known:

- in this process, a unit of work that wrote decisions reloads those devices right after its
  commit, before its caller answers (read-your-writes: `Runtime.uow` calls `reload_devices`);
- SQLite: the WAL-index header changes whenever any connection, in any process, commits to the
  file — one sub-microsecond read per request says whether anything changed (`_DataVersion`);
- PostgreSQL: a thread LISTENs on `access.service.CHANGES_CHANNEL` (every transaction that
  writes decisions NOTIFYs on commit) and catches up when told; it also checks its connection every
  `interval` seconds, and while it cannot, the copy is not trusted (the store may be gone, and
  then `on_store_failure` decides);
- and every `FULL_RELOAD_SECONDS` the whole copy is reloaded, which also picks up what changes no
  decision (a person's new address, say).

What changed is read from `decision.written_at`, stamped at commit time, with `OVERLAP` to spare
for the time between a stamp and its commit and for clocks that differ between machines.
"""

from __future__ import annotations

import gc
import logging
import mmap
import sqlite3
import sys
import threading
import time
from collections.abc import Collection
from datetime import UTC, datetime, timedelta

import psycopg
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from appwarden.access.index import DecisionIndex, changed_since
from appwarden.access.service import CHANGES_CHANNEL
from appwarden.vocabulary import DeviceNamespace

log = logging.getLogger("appwarden.web")
OVERLAP = timedelta(seconds=5)
FULL_RELOAD_SECONDS = 300.0


class _DataVersion:
    """Whether any connection, in any process, committed to the SQLite file since the last look.

    Read on every gate request, so it must cost next to nothing. The WAL-index header (the first
    48 bytes of the `-shm` file, https://sqlite.org/walformat.html) holds `iChange`, incremented
    by every write transaction, and the WAL's frame count and salts: those bytes change exactly
    when something was committed (or the WAL restarted). Reading them through a shared mapping
    costs a fraction of a microsecond. The header says which format it is (`iVersion` 3007000);
    for any other, or when the file cannot be mapped, `PRAGMA data_version` on a connection of
    our own answers instead (a few microseconds: it takes SQLite's read lock). Our connection also
    keeps the `-shm` file in existence while we map it."""

    _HEADER = 48
    _FORMAT = 3007000

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
        if self._map is not None:
            return self._map[0 : self._HEADER]
        with self._lock:
            version = self._connection.execute("PRAGMA data_version").fetchone()[0]
        return int(version).to_bytes(8, "little")

    def close(self) -> None:
        with self._lock:
            if self._map is not None:
                self._map.close()
                self._map = None
            self._connection.close()


class LiveIndex:
    def __init__(
        self,
        engine: Engine,
        *,
        interval: float = 1.0,
        namespaces: Collection[str] = (DeviceNamespace.EAS_DEVICE_ID,),
    ) -> None:
        self.engine = engine
        self.interval = interval
        self.index = DecisionIndex(namespaces)
        self._load_lock = threading.Lock()  # one loader at a time
        self._since: datetime | None = None  # the next catch-up reads what was written after this
        self._full_at = 0.0  # monotonic time of the last full load
        self._seen: object = None  # the change marker the copy reflects
        self._marker = 0  # PostgreSQL: bumped by the listener on each NOTIFY
        self._verified_until = 0.0  # PostgreSQL: monotonic time until which the listener vouches
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        database = engine.url.database
        self._data_version: _DataVersion | None = None
        if engine.dialect.name == "sqlite" and database not in (None, "", ":memory:"):
            self._data_version = _DataVersion(str(database))

    # ── is the copy current? ─────────────────────────────────────────────────────────────────

    def fresh(self) -> bool:
        """True when nothing was committed anywhere since the copy last caught up."""
        if self._seen is None:
            return False
        if self._data_version is not None:
            try:
                return self._data_version.read() == self._seen
            except sqlite3.Error:
                return False
        if self.engine.dialect.name == "postgresql":
            return self._marker == self._seen and time.monotonic() < self._verified_until
        return False  # no way to hear of other processes' changes: always ask the store

    def _current_marker(self) -> object:
        if self._data_version is not None:
            return self._data_version.read()
        return self._marker

    # ── loading ──────────────────────────────────────────────────────────────────────────────

    def catch_up(self, *, full: bool = False) -> None:
        """Bring the copy up to what the store holds now. Blocking: run it off the event loop.
        Raises the store's error when it cannot be read (the copy is left as it was)."""
        with self._load_lock:
            marker = self._current_marker()  # read before the store: a later commit re-triggers
            started = datetime.now(UTC)
            with self.engine.connect().execution_options(appwarden_write=False) as connection:
                if full or self._since is None:
                    self.index.load_all(connection)
                    self._full_at = time.monotonic()
                    # The copy is large and long-lived, and holds no reference cycles: keep the
                    # cyclic garbage collector from walking it again and again (its full passes
                    # would show as the gate's tail latency). Memory is still freed by reference
                    # counting when a later full load replaces it; garbage already waiting is
                    # collected first, or freezing would keep it for good.
                    gc.collect()
                    gc.freeze()
                else:
                    changed = changed_since(connection, self._since - OVERLAP)
                    self.index.load_devices(connection, changed)
            self._since = started
            self._seen = marker

    def reload_devices(self, device_ids: Collection[int]) -> None:
        """After this process committed decisions for these devices: reload them now, so the
        next answer reflects the commit (read-your-writes)."""
        if not device_ids or self._since is None:
            return
        with self._load_lock:
            try:
                with self.engine.connect().execution_options(appwarden_write=False) as c:
                    self.index.load_devices(c, device_ids)
            except DBAPIError:
                log.warning("gate index: reloading after a commit failed; asking the store")
                self._seen = None  # not current until the next catch-up

    # ── background ───────────────────────────────────────────────────────────────────────────

    def start(self) -> None:
        try:
            self.catch_up(full=True)
        except DBAPIError:
            log.warning("gate index: the store is not reachable at start; the gate asks the store")
        self._spawn(self._poll, "appwarden-index")
        if self.engine.dialect.name == "postgresql":
            self._spawn(self._listen, "appwarden-index-listen")

    def _spawn(self, target: object, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _poll(self) -> None:
        """The safety net: catch up whenever the copy is not current, reload it in full now and
        then."""
        while not self._stop.wait(self.interval):
            try:
                full = time.monotonic() - self._full_at >= FULL_RELOAD_SECONDS
                if full or not self.fresh():
                    self.catch_up(full=full)
            except DBAPIError:
                log.warning("gate index: catching up failed; the store is not reachable")
            except Exception:  # keep the thread alive whatever happens in one pass
                log.exception("gate index: catching up failed")

    def _listen(self) -> None:
        url = self.engine.url.set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        while not self._stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as connection:
                    connection.execute(f"LISTEN {CHANGES_CHANNEL}")
                    self._marker += 1  # whatever happened while not listening: catch up
                    self._vouch()
                    self.catch_up()
                    while not self._stop.is_set():
                        told = False
                        for _ in connection.notifies(timeout=self.interval / 2, stop_after=1):
                            told = True
                        if told:
                            self._marker += 1
                            self.catch_up()
                        connection.execute("SELECT 1")  # the store still answers
                        self._vouch()
            except (psycopg.Error, DBAPIError, OSError):
                self._verified_until = 0.0
                log.warning("gate index: lost the store's change notifications; retrying")
                self._stop.wait(self.interval)

    def _vouch(self) -> None:
        self._verified_until = time.monotonic() + 2 * self.interval

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        if self._data_version is not None:
            self._data_version.close()
