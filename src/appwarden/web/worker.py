"""The worker embedded in `appwarden serve` (the SQLite default): a thread that, every
`worker_interval_seconds`, does one pass of what `appwarden worker --once` does, at the clock's
now: releases whose time came, decisions whose valid_until came (deadlines flip decisions without
a new report), exemption expiry warnings, delivery of notices and webhooks, then the scheduled
syncs that are due.

A failing pass is logged and the next one runs on schedule; `stop()` lets the pass in progress
finish and closes the channels.
"""

from __future__ import annotations

import logging
import threading
from functools import partial

from appwarden.usecases.deliver import Delivery, delivery_from_settings
from appwarden.usecases.sync import SyncSchedule, runner_name
from appwarden.usecases.worker import PassResult, worker_pass
from appwarden.web import Runtime

log = logging.getLogger("appwarden.worker")


class EmbeddedWorker:
    def __init__(
        self, runtime: Runtime, *, interval: float | None = None, delivery: Delivery | None = None
    ) -> None:
        self.runtime = runtime
        self.interval = (
            interval if interval is not None else runtime.settings.worker_interval_seconds
        )
        self._delivery = delivery
        self._syncs = (
            SyncSchedule(runtime.settings, runner=runner_name("serve"))
            if runtime.settings.sync_intervals
            else None
        )
        self._stop = threading.Event()
        self._wake = threading.Event()  # set: run the next pass now (a sign-in mail waits)
        self._thread: threading.Thread | None = None
        self.passes = 0

    @property
    def delivery(self) -> Delivery:
        if self._delivery is None:
            self._delivery = delivery_from_settings(
                self.runtime.settings, self.runtime.notice_config
            )
        return self._delivery

    def run_once(self) -> PassResult:
        """One pass at the clock's now."""
        runtime = self.runtime
        now = runtime.now()
        result = worker_pass(
            partial(runtime.uow, now),
            runtime.notice_config,
            self.delivery,
            now,
            syncs=self._syncs,
            sessions=runtime.session_rules,
        )
        runtime.chain_audit(now)
        self.passes += 1
        return result

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                result = self.run_once()
            except Exception:
                log.exception("worker pass failed; the next one runs in %ss", self.interval)
            else:
                if result.decision_changes or result.delivery.sent or result.delivery.webhooks:
                    log.info(
                        "worker pass: %d decision change(s), %d notice(s) sent, %d webhook(s)",
                        result.decision_changes,
                        result.delivery.sent,
                        result.delivery.webhooks,
                    )
            self._wake.wait(self.interval)
            self._wake.clear()

    def wake(self) -> None:
        """Run the next pass now rather than at the next interval: someone waits for a mail."""
        self._wake.set()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="appwarden-worker", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("worker did not stop within %ss", timeout)
            self._thread = None
        if self._delivery is not None:
            self._delivery.close()
            self._delivery = None
