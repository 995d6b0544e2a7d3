"""Keeps this process's copy of the gate's facts (`access.index.DecisionIndex`) current.

The gate answers from the copy only while the copy is known to be current (`fresh()`, checked on
every request, costs microseconds); otherwise the request takes the slower path that catches up
first (`catch_up()`) or asks the store. How "current" is known:

- in this process, a unit of work that wrote decisions reloads those devices right after its
  commit, before its caller answers (read-your-writes: `Runtime.uow` calls `reload_devices`);
- SQLite: the WAL-index header changes whenever any connection, in any process, commits to the
  file — one sub-microsecond read per request says whether anything changed
  (`db.changes.DataVersion`);
- PostgreSQL: a thread LISTENs on `access.service.CHANGES_CHANNEL` (`db.changes.Notifications`;
  every transaction that writes decisions NOTIFYs on commit) and catches up when told; it also
  checks its connection every `interval` seconds, and while it cannot, the copy is not trusted
  (the store may be gone, and then `on_store_failure` decides); as it does, it also looks for
  new identifiers and owners (`DecisionIndex.moved`: a transaction that wrote no decision, a
  device without any, sends no NOTIFY), so those reach the copy within `interval / 2`;
- and every `FULL_RELOAD_SECONDS` the whole copy is reloaded, which also picks up what changes no
  decision (a person's new address, say).

How the store is watched is the port `db.changes`; how the copy is filled is
`usecases.gate_index`; this module decides only when to do either.

What changed is read from `decision.written_at`, stamped at commit time, with `OVERLAP` to spare
for the time between a stamp and its commit and for clocks that differ between machines.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Collection
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from appwarden.access.index import DecisionIndex
from appwarden.access.service import CHANGES_CHANNEL
from appwarden.db.changes import ChangeFeedLost, Notifications, sqlite_data_version
from appwarden.usecases import gate_index
from appwarden.vocabulary import DeviceNamespace

log = logging.getLogger("appwarden.web")
OVERLAP = timedelta(seconds=5)
FULL_RELOAD_SECONDS = 300.0


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
        self._data_version = sqlite_data_version(engine)

    # ── is the copy current? ─────────────────────────────────────────────────────────────────

    def fresh(self) -> bool:
        """True when nothing was committed anywhere since the copy last caught up."""
        if self._seen is None:
            return False
        if self._data_version is not None:
            try:
                return self._data_version.read() == self._seen
            except ChangeFeedLost:
                return False
        if self.engine.dialect.name == "postgresql":
            return self._marker == self._seen and time.monotonic() < self._verified_until
        return False  # no way to hear of other processes' changes: always ask the store

    @property
    def seen(self) -> object:
        """The change marker the copy reflects: it moves with every catch-up that follows a
        commit (None: the copy is not current)."""
        return self._seen

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
            if full or self._since is None:
                first = not self.index.loaded
                gate_index.load_all(self.engine, self.index)
                self._full_at = time.monotonic()
                if first:
                    # Start-up is over: keep the cycle collector's full passes from walking the
                    # process's long-lived objects (the modules, the application) again and
                    # again; garbage already waiting is collected first, or freezing would keep
                    # it for good. The copy itself is plain tuples the collector stops tracking
                    # on its own (`access.index.DecisionRef`): a periodic full reload needs
                    # neither, and a full collection then would stop the event loop for as
                    # long as it walks everything since.
                    gc.collect()
                    gc.freeze()
            else:
                gate_index.load_changed(self.engine, self.index, self._since - OVERLAP)
            self._since = started
            self._seen = marker

    def reload_devices(self, device_ids: Collection[int]) -> None:
        """After this process committed decisions for these devices: reload them now, so the
        next answer reflects the commit (read-your-writes)."""
        if not device_ids or self._since is None:
            return
        with self._load_lock:
            try:
                gate_index.load_devices(self.engine, self.index, device_ids)
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
        while not self._stop.is_set():
            try:
                with Notifications(self.engine, CHANGES_CHANNEL) as feed:
                    self._marker += 1  # whatever happened while not listening: catch up
                    self._vouch()
                    self.catch_up()
                    while not self._stop.is_set():
                        if feed.wait(self.interval / 2) or gate_index.moved(
                            self.engine, self.index
                        ):
                            self._marker += 1
                            self.catch_up()
                        feed.ping()  # the store still answers
                        self._vouch()
            except (ChangeFeedLost, DBAPIError):
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
