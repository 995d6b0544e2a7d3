"""Live syncs: fetch every page of a source's API, read them with the same mappings as a file
import, ingest them page by page, and record the run (`source_run`).

A run is **complete** only when every page was fetched and read without error: a page that could
not be fetched (after the retries of `connectors/client.py`), a page the mapping refuses, or a
record it skips ends the run incomplete. Pages already ingested stay (they are true), but an
incomplete run retires nothing, and only complete runs count towards a retirement by absence: a
device whose MDM of record did not list it in its last 3 consecutive complete runs is retired,
through the same authority and mass-retirement hold as a retirement the source reports
(`ingest.retire_absent`).

Each page is its own transaction (`ingest`, the devices it listed, the run's counters), as a file
import does per file. Intune's pages are read together, as one crawl (`sources/registry.CRAWLS`):
they are all fetched before any is ingested.

Scheduled syncs (`run_due_syncs`, from the worker's pass): each source whose interval is set
(`APPWARDEN_SYNC_<SOURCE>_INTERVAL`) and whose last run started at least that long ago is
synced, one source at a time, under a claim (`devices/runs.claim`): two workers never sync one
source at once. The claim is a lease, renewed while the run goes on, and released at its end;
a worker that dies leaves it to run out.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from appwarden.audit.service import record
from appwarden.connectors import Connector, Page
from appwarden.connectors.client import ConnectorError
from appwarden.connectors.registry import Runtime, connector_for, secrets_of
from appwarden.db.uow import UnitOfWork
from appwarden.devices import runs
from appwarden.devices.models import SourceRun
from appwarden.devices.schemas import InventoryBatch
from appwarden.documents import read_limited
from appwarden.errors import AppwardenError, Conflict, InvalidInput
from appwarden.settings import Settings
from appwarden.sources.amapi import read_amapi_users
from appwarden.sources.common import ImportOptions
from appwarden.sources.registry import crawl_for, parse_files
from appwarden.timeutil import iso
from appwarden.usecases.deliver import OpenUnitOfWork
from appwarden.usecases.ingest import IngestResult, Writer, ingest, retire_absent
from appwarden.usecases.statistics import refresh_inventory_statistics

log = logging.getLogger("appwarden.sync")

_MAX_LISTED = 20  # skipped and quarantined records kept in an outcome (the log has them all)
_MAX_ERROR_CHARS = 2000


@dataclass
class SyncOutcome:
    """One run, as `appwarden sync --json` prints it."""

    run_id: int
    source: str
    runner: str | None
    started_at: datetime
    finished_at: datetime | None = None
    complete: bool = False
    pages: int = 0
    reports: int = 0
    devices: int = 0
    error: str | None = None
    skipped: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    retired: int = 0
    retirements_held: int = 0
    decision_changes: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "source": self.source,
            "runner": self.runner,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "complete": self.complete,
            "pages": self.pages,
            "reports": self.reports,
            "devices": self.devices,
            "error": self.error,
            "skipped": self.skipped[:_MAX_LISTED],
            "quarantined": self.quarantined[:_MAX_LISTED],
            "retired": self.retired,
            "retirements_held": self.retirements_held,
            "decision_changes": self.decision_changes,
        }


@dataclass
class _Run:
    """What a run needs while it goes on."""

    open_uow: OpenUnitOfWork
    settings: Settings
    connector: Connector
    outcome: SyncOutcome
    options: ImportOptions
    writer: Writer
    on_page: Callable[[int], None] | None = None
    heartbeat: Callable[[], None] | None = None  # renews the claim; raises when it was lost

    @property
    def source(self) -> str:
        return self.outcome.source


def runner_name(kind: str) -> str:
    """Which process runs a sync (`source_run.runner`, the claim's holder): unique per process."""
    return f"{kind} {socket.gethostname()} pid {os.getpid()}"


def sync_source(
    open_uow: OpenUnitOfWork,
    settings: Settings,
    source: str,
    *,
    now: datetime,
    runner: str,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    heartbeat: Callable[[], None] | None = None,
    on_page: Callable[[int], None] | None = None,
) -> SyncOutcome:
    """One run of `source` at logical time `now`. A source that is not configured (or an AMAPI
    user mapping that does not read) is an InvalidInput before anything is fetched or recorded;
    everything after that ends in a recorded run, complete or not."""
    options = _import_options(settings, now, source)
    http = httpx.Client(
        transport=transport, timeout=settings.sync_timeout_seconds, follow_redirects=False
    )
    try:
        runtime = Runtime(http, sleep=sleep, heartbeat=heartbeat)
        connector = connector_for(source, settings, runtime)
        with open_uow() as uow:
            run_id = runs.start_run(uow, source, runner=runner).id
        run = _Run(
            open_uow,
            settings,
            connector,
            SyncOutcome(run_id, source, runner, started_at=now),
            options,
            Writer(
                source=source,
                fact_sources=settings.fact_sources,
                organisation_domains=frozenset(settings.organisation_domains),
            ),
            on_page,
            heartbeat,
        )
        return _run(run, started=time.monotonic())
    finally:
        http.close()


def _run(run: _Run, *, started: float) -> SyncOutcome:
    try:
        _read_pages(run)
    except ConnectorError as exc:
        run.outcome.error = exc.message
    except InvalidInput as exc:  # a page the mapping refuses as a whole
        run.outcome.error = "; ".join(exc.lines()[:5])
    except Exception as exc:
        run.outcome.error = f"internal error ({type(exc).__name__}); see the log"
        _finish(run, elapsed=time.monotonic() - started)
        raise
    return _finish(run, elapsed=time.monotonic() - started)


def _import_options(settings: Settings, now: datetime, source: str) -> ImportOptions:
    users: dict[str, str] = {}
    if source == "amapi" and settings.amapi_users_file is not None:
        limit = settings.max_import_bytes
        path = settings.amapi_users_file
        users = read_amapi_users(read_limited(path, limit), str(path), max_bytes=limit)
    return ImportOptions(
        received_at=now, email_activity_window=settings.email_activity, amapi_users=users
    )


def _read_pages(run: _Run) -> None:
    """Page by page; a crawl's pages all at once (those fetched before a failure included: a
    crawl that lacks pages proves no absence, docs/sources/intune.md)."""
    if crawl_for(run.source) is None:
        for page in run.connector.pages():
            _ingest_pages(run, [page])
        return
    fetched: list[Page] = []
    failure: ConnectorError | None = None
    try:
        fetched.extend(run.connector.pages())
    except ConnectorError as exc:
        failure = exc
    if fetched:
        _ingest_pages(run, fetched)
    if failure is not None:
        raise failure


def _ingest_pages(run: _Run, pages: list[Page]) -> None:
    limit = run.settings.max_import_bytes
    files = [(page.label, page.body) for page in pages]
    parsed, refused = parse_files(
        run.source, files, strict=False, max_bytes=limit, options=run.options
    )
    if refused:
        raise refused[0][1]
    for _, batch in parsed:
        if run.heartbeat is not None:  # a crawl's pages are ingested after its last request
            run.heartbeat()
        with run.open_uow() as uow:
            result = ingest(
                uow,
                batch,
                minimise_personal=run.settings.minimise_personal_data,
                writer=run.writer,
            )
            runs.mark_listed(uow, run.source, run.outcome.run_id, result.listed_device_ids)
            stored = uow.session.get(SourceRun, run.outcome.run_id)
            assert stored is not None
            stored.pages += 1
            stored.reports += len(batch.reports)
        _count(run.outcome, batch, result)
        if run.on_page is not None:
            run.on_page(run.outcome.pages)


def _count(outcome: SyncOutcome, batch: InventoryBatch, result: IngestResult) -> None:
    outcome.pages += 1
    outcome.reports += len(batch.reports)
    outcome.skipped += result.skipped
    outcome.quarantined += result.quarantined
    outcome.decision_changes += len(result.decision_changes)
    for line in result.skipped:
        log.warning("%s sync run %d: skipped %s", outcome.source, outcome.run_id, line)


def _finish(run: _Run, *, elapsed: float) -> SyncOutcome:
    """Record the run's end; a complete run promotes what it listed and retires what its source
    stopped listing, in the same transaction."""
    outcome = run.outcome
    if outcome.error is None and outcome.skipped:
        outcome.error = f"{len(outcome.skipped)} record(s) skipped, the first: {outcome.skipped[0]}"
    outcome.complete = outcome.error is None
    outcome.error = _scrub(outcome.error, run.settings)
    outcome.finished_at = outcome.started_at + timedelta(seconds=elapsed)
    with run.open_uow() as uow:
        stored = uow.session.get(SourceRun, outcome.run_id)
        assert stored is not None
        stored.finished_at = outcome.finished_at
        stored.complete = outcome.complete
        stored.error = outcome.error
        stored.devices = outcome.devices = runs.listed_count(uow, outcome.source, outcome.run_id)
        uow.session.flush()
        if outcome.complete:
            runs.promote_listed(uow, outcome.source, outcome.run_id)
            _retire_absent(uow, run)
        # The pages' own transactions are committed: a run that changed many rows leaves the
        # next fleet evaluation planned from what the tables hold now.
        refresh_inventory_statistics(uow)
    _log(outcome)
    return outcome


def _retire_absent(uow: UnitOfWork, run: _Run) -> None:
    outcome = run.outcome
    absent = runs.absent_devices(uow, outcome.source)
    if not absent:
        return
    result = retire_absent(uow, absent, source=outcome.source, writer=run.writer)
    outcome.retired = result.retired
    outcome.retirements_held = result.retirements_held
    outcome.decision_changes += len(result.decision_changes)
    record(
        uow,
        action="retirement.absence",
        object_type="source",
        object_id=outcome.source,
        after={
            "run_id": outcome.run_id,
            "absent": len(absent),
            "retired": result.retired,
            "held": result.retirements_held,
            "device_ids": [device.id for device in absent[:100]],
        },
    )


def _scrub(text: str | None, settings: Settings) -> str | None:
    """No configured secret in anything a run records or prints, whatever a server echoed."""
    if text is None:
        return None
    for secret in secrets_of(settings):
        text = text.replace(secret, "***")
    return text[:_MAX_ERROR_CHARS]


def _log(outcome: SyncOutcome) -> None:
    if outcome.complete:
        log.info(
            "%s sync run %d complete: %d page(s), %d report(s), %d device(s), %d retired, "
            "%d retirement(s) held",
            outcome.source,
            outcome.run_id,
            outcome.pages,
            outcome.reports,
            outcome.devices,
            outcome.retired,
            outcome.retirements_held,
        )
    else:
        log.warning(
            "%s sync run %d incomplete after %d page(s): %s",
            outcome.source,
            outcome.run_id,
            outcome.pages,
            outcome.error,
        )


# ── claims and schedules ────────────────────────────────────────────────────────────────────


def _wall_now() -> datetime:
    return datetime.now(UTC)


class _Lease:
    """Renews a claim while its run goes on: before a request, once a third of the lease has
    passed since the last renewal. Losing the claim stops the run (incomplete)."""

    def __init__(
        self,
        open_uow: OpenUnitOfWork,
        source: str,
        holder: str,
        lease: timedelta,
        wall: Callable[[], datetime],
    ) -> None:
        self.open_uow, self.source, self.holder = open_uow, source, holder
        self.lease, self.wall = lease, wall
        self._renewed = time.monotonic()

    def __call__(self) -> None:
        if time.monotonic() - self._renewed < self.lease.total_seconds() / 3:
            return
        with self.open_uow() as uow:
            held = runs.renew(uow, self.source, self.holder, wall_now=self.wall(), lease=self.lease)
        if not held:
            raise ConnectorError(
                f"the claim on {self.source} ran out and another process took it; stopped"
            )
        self._renewed = time.monotonic()


def _claim(
    open_uow: OpenUnitOfWork,
    source: str,
    runner: str,
    *,
    now: datetime,
    due_every: timedelta | None,
    lease: timedelta,
    wall: Callable[[], datetime],
) -> bool:
    """Take the source; with `due_every`, only when its last run started that long ago. The due
    check follows the claim in one transaction, so it sees any run the previous holder started."""
    with open_uow() as uow:
        if not runs.claim(uow, source, runner, wall_now=wall(), lease=lease):
            return False
        last = runs.last_started(uow, source)
        if due_every is not None and last is not None and last + due_every > now:
            runs.release(uow, source, runner)
            return False
    return True


def sync_claimed(
    open_uow: OpenUnitOfWork,
    settings: Settings,
    source: str,
    *,
    now: datetime,
    runner: str,
    due_every: timedelta | None = None,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    wall: Callable[[], datetime] = _wall_now,
    on_page: Callable[[int], None] | None = None,
) -> SyncOutcome | None:
    """`sync_source` under the source's claim. None: another process holds it, or (with
    `due_every`) it is not due yet."""
    lease = timedelta(seconds=settings.sync_lease_seconds)
    if not _claim(open_uow, source, runner, now=now, due_every=due_every, lease=lease, wall=wall):
        return None
    try:
        return sync_source(
            open_uow,
            settings,
            source,
            now=now,
            runner=runner,
            transport=transport,
            sleep=sleep,
            heartbeat=_Lease(open_uow, source, runner, lease, wall),
            on_page=on_page,
        )
    finally:
        with open_uow() as uow:
            runs.release(uow, source, runner)


def claimed_by(
    open_uow: OpenUnitOfWork, source: str, *, wall: Callable[[], datetime] = _wall_now
) -> Conflict:
    """The error for a source another process is syncing, naming it."""
    with open_uow() as uow:
        held = runs.holder_of(uow, source, wall_now=wall())
        holder = held.holder if held is not None else "another process"
        until = iso(held.lease_until) if held is not None else None
    return Conflict(
        f"{source} is being synced by {holder}" + (f" (claimed until {until})" if until else "")
    )


@dataclass(frozen=True)
class SyncSchedule:
    """What the worker's pass needs to run the scheduled syncs."""

    settings: Settings
    runner: str
    transport: httpx.BaseTransport | None = None
    sleep: Callable[[float], None] = time.sleep
    wall: Callable[[], datetime] = _wall_now


def run_due_syncs(
    open_uow: OpenUnitOfWork, schedule: SyncSchedule, now: datetime
) -> list[SyncOutcome]:
    """Every scheduled source that is due and not claimed by another worker, one after the
    other. A source that cannot start (not configured) is logged and the others still run."""
    outcomes = []
    for source, interval in schedule.settings.sync_intervals.items():
        try:
            outcome = sync_claimed(
                open_uow,
                schedule.settings,
                source,
                now=now,
                runner=schedule.runner,
                due_every=interval,
                transport=schedule.transport,
                sleep=schedule.sleep,
                wall=schedule.wall,
            )
        except AppwardenError as exc:
            log.error("scheduled sync of %s cannot start: %s", source, exc.message)
            continue
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes
