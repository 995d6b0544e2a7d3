"""Many reports at once: the bulk ingest path (docs/architecture.md, "Bulk ingest").

The same rules as `devices.service` applies one report at a time (stale parts, repeated
reports, coverage, `first_seen_at` kept), applied set-wise:

- `DeviceResolver` finds the devices of every report of a batch with one identifier query per
  chunk of values, creates the new ones in one flush and their identifiers in one insert; only a
  report whose identifiers name two devices takes the one-by-one path (it quarantines).
- `ReportWriter` loads the stored observations, coverage and latest report of every feed the
  batch touches in one query each and diffs each report in memory (in batch order, so two
  reports of one device see each other). Observations are written by a thread on the same
  connection (`observations_written`) while the caller goes on applying the batch and evaluates
  its devices: a first load's new rows as each report is applied, the rest once it is done
  (`finish_observations`): the deletions, rows seen again or changed by id, new rows, with `COPY`
  on PostgreSQL and a JSON array per statement on SQLite. Reports and coverage are written
  last, with one multi-row insert and one upsert (`write_reports`).
"""

from __future__ import annotations

import sqlite3
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from itertools import chain
from queue import Empty, SimpleQueue
from typing import Any

import orjson
from sqlalchemy import event, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from appwarden.db.background import in_background
from appwarden.db.chunked import chunks, one_of, scalars_in
from appwarden.db.ids import insert_rows
from appwarden.db.uow import UnitOfWork
from appwarden.devices.models import Coverage, Device, DeviceIdentifier, Observation, Report
from appwarden.devices.schemas import ReportFacts
from appwarden.devices.service import (
    Apps,
    DeviceRows,
    MinimisationSet,
    ReportOutcome,
    app_unchanged,
    clean_identifiers,
    coverage_hash,
    feed_repeats,
    reported_apps,
    resolve_device,
    stale_part,
)
from appwarden.errors import InvalidInput
from appwarden.vocabulary import DeviceStatus, EvidenceKind, Platform

# ── devices ──────────────────────────────────────────────────────────────────────────────────


class NeedsOneByOne(Exception):
    """The report's identifiers name more than one device: resolve it on its own (quarantine)."""


@dataclass
class DeviceResolver:
    """The devices of a batch's reports, resolved set-wise (see the module docstring).

    `prepare` loads what the batch's identifiers name; `resolve` then answers report by report
    in batch order, as `devices.service.resolve_device` would."""

    uow: UnitOfWork
    _known: dict[tuple[str, str], Device] = field(default_factory=dict)
    _identifier_rows: dict[tuple[str, str], tuple[int, datetime]] = field(default_factory=dict)
    _new_identifiers: list[tuple[Device, str, str, str]] = field(default_factory=list)
    _touched_identifiers: set[int] = field(default_factory=set)

    def prepare(self, reports: Iterable[ReportFacts]) -> None:
        values = sorted(
            {value for report in reports for _, value in clean_identifiers(report.device)}
        )
        found: list[tuple[int, int, str, str, datetime]] = []
        for part in chunks(values):
            found += [
                (row.id, row.device_id, row.namespace, row.value, row.last_seen_at)
                for row in self.uow.session.execute(
                    select(
                        DeviceIdentifier.id,
                        DeviceIdentifier.device_id,
                        DeviceIdentifier.namespace,
                        DeviceIdentifier.value,
                        DeviceIdentifier.last_seen_at,
                    ).where(one_of(DeviceIdentifier.value, part))
                )
            ]
        device_ids = {device_id for _, device_id, _, _, _ in found}
        devices = {
            d.id: d for d in scalars_in(self.uow.session, select(Device), Device.id, device_ids)
        }
        for row_id, device_id, namespace, value, last_seen_at in found:
            self._known[(namespace, value)] = devices[device_id]
            self._identifier_rows[(namespace, value)] = (row_id, last_seen_at)

    def resolve(self, report: ReportFacts) -> tuple[Device, bool]:
        """The report's device and whether that changed what is stored; raises InvalidInput
        (no usable identifier) or NeedsOneByOne."""
        identifiers = clean_identifiers(report.device)
        if not identifiers:
            raise InvalidInput(
                "the device has no usable identifier (placeholder serials are ignored)"
            )
        named = {id(d): d for pair in identifiers if (d := self._known.get(pair)) is not None}
        if len(named) > 1:
            raise NeedsOneByOne
        if named:
            (device,) = named.values()
        else:
            device = Device(
                platform=Platform.UNKNOWN,
                form_factor="unknown",
                ownership="unknown",
                status=DeviceStatus.ACTIVE,
                created_at=self.uow.now,
                mdm_source=report.source,  # the MDM of record: authoritative for its facts
            )
            self.uow.session.add(device)
        changed = False
        for pair in identifiers:
            stored = self._identifier_rows.get(pair)
            if pair not in self._known:
                changed = True
                self._known[pair] = device
                self._new_identifiers.append((device, pair[0], pair[1], report.source))
            elif stored is not None and stored[1] < self.uow.now:
                self._touched_identifiers.add(stored[0])
        return device, changed

    def resolve_one_by_one(self, report: ReportFacts) -> tuple[Device, bool]:
        """The per-device path for a report the set-wise one cannot answer: what this resolver
        holds is written first, so that path sees the store as the batch left it."""
        self.flush()
        device, changed = resolve_device(self.uow, report.device, source=report.source)
        for pair in clean_identifiers(report.device):
            self._known[pair] = device
            self._identifier_rows.pop(pair, None)  # touched by resolve_device itself
        return device, changed

    def flush(self) -> None:
        """Write the new devices, their identifiers and the identifiers seen again."""
        self.uow.session.flush()  # new devices get their ids, in the order they were named
        session, now = self.uow.session, self.uow.now
        if self._new_identifiers:
            session.execute(
                insert(DeviceIdentifier),
                [
                    {
                        "device_id": device.id,
                        "namespace": namespace,
                        "value": value,
                        "source": source,
                        "first_seen_at": now,
                        "last_seen_at": now,
                    }
                    for device, namespace, value, source in self._new_identifiers
                ],
            )
            self._new_identifiers.clear()
        for part in chunks(sorted(self._touched_identifiers)):
            session.execute(
                update(DeviceIdentifier)
                .where(one_of(DeviceIdentifier.id, part))
                .values(last_seen_at=now)
                .execution_options(synchronize_session=False)
            )
        self._identifier_rows = {
            pair: (row_id, now if row_id in self._touched_identifiers else seen)
            for pair, (row_id, seen) in self._identifier_rows.items()
        }
        self._touched_identifiers.clear()


# ── reports and observations ─────────────────────────────────────────────────────────────────

FeedKey = tuple[int, str, str]  # (device id, source, evidence kind)


@dataclass(slots=True)
class StoredObservation:
    """An observation as the diff holds it; `id` None: not stored yet."""

    id: int | None
    raw_value: str
    version: str | None
    name: str | None
    first_seen_at: datetime
    last_seen_at: datetime
    dirty: bool = False  # a stored row whose values changed (or a new one)
    seen_again: bool = False  # a stored row of which only `last_seen_at` moved


@dataclass(slots=True)
class StoredCoverage:
    """A coverage part; `report` indexes the batch's new reports, or None (stored, unchanged)."""

    observed_at: datetime
    report: int | None = None


@dataclass
class FeedState:
    observations: dict[tuple[str, str], StoredObservation] = field(default_factory=dict)
    coverage: dict[tuple[str, str], StoredCoverage] = field(default_factory=dict)
    latest_report: datetime | None = None
    deleted: list[int] = field(default_factory=list)

    def empty(self) -> bool:
        return not self.observations and not self.coverage and self.latest_report is None


@dataclass
class ReportWriter:
    """Diffs a batch's reports against their feeds in memory, then writes set-wise."""

    uow: UnitOfWork
    token_id: int | None = None
    feeds: dict[FeedKey, FeedState] = field(default_factory=dict)
    _reports: list[dict[str, Any]] = field(default_factory=list)
    # New observations in the order the one-by-one path would insert them (a later report of
    # the batch may drop one again: `new_rows` skips those).
    _new: list[tuple[FeedKey, tuple[str, str], StoredObservation]] = field(default_factory=list)
    # Devices whose every feed is in `feeds` (read by `prepare`), so that `device_rows` can
    # tell their rows as they stand afterwards.
    _devices: set[int] = field(default_factory=set)
    # Where the observation writes go on PostgreSQL (`observations_written`): the new rows of
    # a report whose feed nothing stored and no other report of the batch names are final at
    # once, so they are sent as it is applied (as long as every earlier report's were), the
    # rest by `finish_observations`.
    stream: ObservationStream | None = None
    _fresh: set[FeedKey] = field(default_factory=set)  # feeds whose new rows are final at once
    _streaming: bool = True

    def prepare(self, keys: Iterable[FeedKey]) -> None:
        """Load the stored state of these feeds' devices, every feed of them: one query per
        table and chunk of devices."""
        named = Counter(keys)
        wanted = {key: None for key in named if key not in self.feeds}  # in batch order
        for key in wanted:
            self.feeds[key] = FeedState()
        device_ids = sorted({device_id for device_id, _, _ in wanted} - self._devices)
        self._devices.update(device_ids)
        # Core, not the ORM session: the rows are plain values here, and the ORM's loading
        # layer would cost a fifth of the re-import's reading (nothing pending concerns them).
        connection = self.uow.session.connection()
        for part in chunks(device_ids):
            for o in connection.execute(
                select(
                    Observation.id,
                    Observation.device_id,
                    Observation.source,
                    Observation.evidence_kind,
                    Observation.namespace,
                    Observation.value,
                    Observation.raw_value,
                    Observation.version,
                    Observation.name,
                    Observation.first_seen_at,
                    Observation.last_seen_at,
                ).where(one_of(Observation.device_id, part))
            ).all():  # fetched at once (a re-import page's read: 555 -> 519 ms against one
                # by one) and unpacked by position (a hundred thousand rows read by name slowly)
                (
                    row_id,
                    device_id,
                    source,
                    kind,
                    namespace,
                    value,
                    raw,
                    version,
                    name,
                    first,
                    last,
                ) = o
                state = self.feeds.setdefault((device_id, source, kind), FeedState())
                state.observations[(namespace, value)] = StoredObservation(
                    row_id, raw, version, name, first, last
                )
            for c in connection.execute(
                select(
                    Coverage.device_id,
                    Coverage.source,
                    Coverage.evidence_kind,
                    Coverage.namespace,
                    Coverage.value,
                    Coverage.observed_at,
                ).where(one_of(Coverage.device_id, part))
            ).all():
                state = self.feeds.setdefault((c.device_id, c.source, c.evidence_kind), FeedState())
                state.coverage[(c.namespace, c.value)] = StoredCoverage(c.observed_at)
            for device_id, source, kind, latest in connection.execute(
                select(
                    Report.device_id,
                    Report.source,
                    Report.evidence_kind,
                    func.max(Report.observed_at),
                )
                .where(one_of(Report.device_id, part))
                .group_by(Report.device_id, Report.source, Report.evidence_kind)
            ):
                self.feeds.setdefault((device_id, source, kind), FeedState()).latest_report = latest
        self._fresh.update(key for key in wanted if named[key] == 1 and self.feeds[key].empty())

    def apply(
        self, device: Device, report: ReportFacts, *, minimise: MinimisationSet | None
    ) -> ReportOutcome:
        """What `devices.service.apply_report` does, held in memory until `flush`."""
        now = self.uow.now
        observed_at = min(report.observed_at or now, now)
        kind = report.evidence_kind
        key = (device.id, report.source, str(kind))
        state = self.feeds.setdefault(key, FeedState())
        apps, covered = reported_apps(report, device.platform, minimise)
        if feed_repeats(
            observed_at,
            apps,
            covered,
            state.observations,
            state.coverage,
            latest_report=lambda: state.latest_report,
        ):
            return ReportOutcome.REPEATED
        index = len(self._reports)
        row = {
            "device_id": device.id,
            "source": report.source,
            "evidence_kind": str(kind),
            "observed_at": observed_at,
            "received_at": now,
            "coverage_namespaces": sorted({ns for ns, _ in covered}),
            "coverage_hash": coverage_hash(covered) if covered else None,
            "app_count": len(apps),
            "applied": True,
            "token_id": self.token_id,
        }
        self._reports.append(row)
        if state.latest_report is None or observed_at > state.latest_report:
            state.latest_report = observed_at
        if device.first_report_at is None or observed_at < device.first_report_at:
            device.first_report_at = observed_at
        replaced = self._replace_coverage(state, covered, observed_at, index)
        start = len(self._new)
        observed = self._observe(key, state, apps, observed_at, replaced)
        if self.stream is not None and len(self._new) > start:
            self._send(key, start)
        row["applied"] = bool(replaced) or observed or kind == EvidenceKind.NONE
        return ReportOutcome.APPLIED if row["applied"] else ReportOutcome.STALE

    @staticmethod
    def _replace_coverage(
        state: FeedState, covered: list[tuple[str, str]], observed_at: datetime, index: int
    ) -> list[tuple[str, str]]:
        replaced = []
        for part in covered:
            current = state.coverage.get(part)
            if current is not None and current.observed_at > observed_at:
                continue  # a newer report already spoke for this part
            replaced.append(part)
            state.coverage[part] = StoredCoverage(observed_at, index)
        return replaced

    def _observe(
        self,
        key: FeedKey,
        state: FeedState,
        apps: Apps,
        observed_at: datetime,
        replaced: list[tuple[str, str]],
    ) -> bool:
        """As `devices.service._apply_observations`, on the feed's state in memory."""
        for pair in [
            pair
            for pair in state.observations
            if pair not in apps
            and any(ns == pair[0] and value in ("", pair[1]) for ns, value in replaced)
        ]:
            gone = state.observations.pop(pair)
            if gone.id is not None:
                state.deleted.append(gone.id)
        applied_any = False
        # Only a newer report's coverage can make a part stale: a feed's first report, and any
        # report newer than what its feed holds, need not ask for each app.
        newer = any(part.observed_at > observed_at for part in state.coverage.values())
        for pair, (raw, version, name) in apps.items():
            seen = state.observations.get(pair)
            if seen is None:
                if newer and stale_part(state.coverage, pair[0], pair[1], observed_at):
                    continue
                applied_any = True
                new = StoredObservation(None, raw, version, name, observed_at, observed_at, True)
                state.observations[pair] = new
                self._new.append((key, pair, new))
            elif observed_at >= seen.last_seen_at:
                applied_any = True
                seen.last_seen_at = observed_at
                if app_unchanged(seen, version, name):
                    seen.seen_again = True  # the usual re-import row: the app is still there
                else:
                    seen.version = version
                    seen.name = name or seen.name
                    seen.dirty = True
            elif observed_at < seen.first_seen_at:
                seen.first_seen_at = observed_at  # an older report proves an earlier sighting
                seen.dirty = True
        return applied_any

    def _send(self, key: FeedKey, start: int) -> None:
        """Send the new rows the report just added, if they are final and every earlier
        report's were (so the rows keep the batch's order, and the ids the one-by-one path
        gives); else keep them, and those of every later report, for `finish_observations`."""
        assert self.stream is not None
        if not self._streaming:
            return
        if key not in self._fresh:
            self._streaming = False
            self.stream.pause()  # the connection is free again
            return
        self.stream.send([_new_row(*new) for new in self._new[start:]])
        del self._new[start:]

    def finish_observations(self) -> None:
        """Once every report is applied: the rest of what they changed in `observation`, in
        the caller's transaction, by the thread of `observations_written`. The rows no report
        lists any longer are deleted first (a later report of the batch may list the same app
        anew), then rows are updated or inserted."""
        assert self.stream is not None, "called inside observations_written"
        deleted = sorted(i for state in self.feeds.values() for i in state.deleted)
        # Built where they are written, in the thread, beside the evaluation (a fresh page's
        # 88,000 rows take 0.1 s to build). Nothing changes the diff's containers once the
        # batch is applied (`write_reports` starts anew with its own).
        changed, new = changed_rows(self.feeds), new_rows(self.feeds, self._new)
        writes = _postgresql_writes if self.uow.dialect == "postgresql" else _sqlite_writes
        self.stream.finish(partial(writes, deleted, self._seen_again(), changed, new))

    def write_reports(self) -> None:
        """Write the batch's reports and their coverage, and start anew."""
        report_ids = insert_rows(self.uow.session, Report, self._reports)
        self._write_coverage(report_ids)
        self._reports = []
        self._new = []
        self.feeds = {}
        self._devices = set()
        self._fresh = set()
        self._streaming = True

    def device_rows(self) -> dict[int, DeviceRows]:
        """The prepared devices' observation and coverage rows as the batch leaves them (their
        evaluation in the same transaction takes them instead of reading the two tables)."""
        observations: dict[int, list[tuple[str, str, str, str, datetime, datetime]]] = {
            device_id: [] for device_id in self._devices
        }
        coverage: dict[int, list[tuple[str, str, str, str, datetime]]] = {
            device_id: [] for device_id in self._devices
        }
        for (device_id, source, kind), state in self.feeds.items():
            if device_id not in self._devices:
                continue
            observations[device_id] += [
                (source, kind, namespace, value, o.first_seen_at, o.last_seen_at)
                for (namespace, value), o in state.observations.items()
            ]
            coverage[device_id] += [
                (source, kind, namespace, value, part.observed_at)
                for (namespace, value), part in state.coverage.items()
            ]
        return {
            device_id: DeviceRows(tuple(observations[device_id]), tuple(coverage[device_id]))
            for device_id in self._devices
        }

    def _write_coverage(self, report_ids: list[int]) -> None:
        rows = [
            {
                "device_id": device_id,
                "source": source,
                "evidence_kind": kind,
                "namespace": namespace,
                "value": value,
                "observed_at": part.observed_at,
                "report_id": report_ids[part.report],
            }
            for (device_id, source, kind), state in self.feeds.items()
            for (namespace, value), part in state.coverage.items()
            if part.report is not None
        ]
        if not rows:
            return
        statement = (
            postgresql_insert(Coverage)
            if self.uow.dialect == "postgresql"
            else sqlite_insert(Coverage)
        )
        statement = statement.on_conflict_do_update(
            index_elements=["device_id", "source", "evidence_kind", "namespace", "value"],
            set_={
                "observed_at": statement.excluded.observed_at,
                "report_id": statement.excluded.report_id,
            },
        )
        self.uow.session.execute(statement, rows)

    def _seen_again(self) -> dict[datetime, list[int]]:
        """The stored rows of which only `last_seen_at` moved: their ids by that instant."""
        ids: dict[datetime, list[int]] = defaultdict(list)
        for state in self.feeds.values():
            for o in state.observations.values():
                if o.seen_again and not o.dirty and o.id is not None:
                    ids[o.last_seen_at].append(o.id)
        return ids


def changed_rows(feeds: Mapping[FeedKey, FeedState]) -> Iterator[tuple[Any, ...]]:
    """The stored rows whose values changed: `(id, *_CHANGED)`."""
    for state in feeds.values():
        for o in state.observations.values():
            if o.dirty and o.id is not None:
                yield (o.id, o.raw_value, o.version, o.name, o.first_seen_at, o.last_seen_at)


def new_rows(
    feeds: Mapping[FeedKey, FeedState],
    new: Iterable[tuple[FeedKey, tuple[str, str], StoredObservation]],
) -> Iterator[tuple[Any, ...]]:
    """The new rows, `OBSERVATION_COLUMNS`, in the order they were seen, without those a later
    report of the batch dropped again."""
    for key, pair, o in new:
        if feeds[key].observations.get(pair) is o:
            yield _new_row(key, pair, o)


def _new_row(key: FeedKey, pair: tuple[str, str], o: StoredObservation) -> tuple[Any, ...]:
    return (*key, *pair, o.raw_value, o.version, o.name, o.first_seen_at, o.last_seen_at)


# ── the observation writes: COPY (PostgreSQL), JSON arrays (SQLite) ───────────────────────────

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
_COLUMNS = ", ".join(OBSERVATION_COLUMNS)
_CHANGED = ("raw_value", "version", "name", "first_seen_at", "last_seen_at")
# Fixed column names, no input: the statements every observation row goes through. A row seen
# before is updated by its id and a new one inserted (an upsert would spend an id on every
# row it updates on PostgreSQL, so new rows would not get the ids the one-by-one path gives).
#
# New rows go straight into the table, in the batch's order, so they get their ids in the
# order the one-by-one path gives. On PostgreSQL by `COPY`; rows seen before go through a
# staging table that lives as long as the connection and is emptied by every commit, then one
# `UPDATE … FROM` by id.
POSTGRESQL_COPY = f"COPY observation ({_COLUMNS}) FROM STDIN"
POSTGRESQL_STAGE = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS observation_stage (id integer, raw_value varchar(512), "
    "version varchar(200), name varchar(1000), first_seen_at timestamptz, "
    "last_seen_at timestamptz) ON COMMIT DELETE ROWS"
)
POSTGRESQL_STAGE_COPY = f"COPY observation_stage (id, {', '.join(_CHANGED)}) FROM STDIN"
POSTGRESQL_UPDATE = (
    "UPDATE observation AS o SET "  # noqa: S608
    f"{', '.join(f'{c} = s.{c}' for c in _CHANGED)} "
    "FROM observation_stage AS s WHERE o.id = s.id"
)
# Rows of which only `last_seen_at` moved (most of a re-import): their ids as one array, sent
# as its text (`_integer_array`): psycopg dumps a list element by element in Python, 170 ms for
# a page's 88,000 ids against 56 ms for the joined text, on the interpreter the evaluation
# shares with these writes.
POSTGRESQL_SEEN_AGAIN = "UPDATE observation SET last_seen_at = %s WHERE id = ANY(%s::integer[])"
POSTGRESQL_DELETE = "DELETE FROM observation WHERE id = ANY(%s::integer[])"
# On SQLite each write takes its rows as one JSON array that SQLite unpacks itself
# (`json_each`), so that one call runs it whole without this interpreter: the thread of
# `observations_written` then writes while the caller applies and evaluates the batch. An
# `executemany` takes the interpreter's lock back for every row, which the busy caller holds:
# the thread would get a row in per switch interval (5 ms). The rows' order is the array's.
#
# New rows come in groups that share a report's columns (`_sqlite_groups`): each group is
# `[device_id, source, evidence_kind, first_seen_at, last_seen_at, [[namespace, value,
# raw_value, version, name], …]]`, so SQLite extracts five values per row, not ten. The groups
# are materialised first: a column read from a group row inside the join would render the
# group, apps included, back to text for every app row (three times slower than one flat
# array; `MATERIALIZED` needs SQLite 3.35).
SQLITE_INSERT = (
    "WITH report AS MATERIALIZED (SELECT "  # noqa: S608
    + ", ".join(f"json_extract(value, '$[{i}]') AS c{i}" for i in range(6))
    + f" FROM json_each(?)) INSERT INTO observation ({_COLUMNS}) SELECT c0, c1, c2, "
    + ", ".join(f"json_extract(app.value, '$[{i}]')" for i in range(5))
    + ", c3, c4 FROM report, json_each(report.c5) AS app"
)
SQLITE_UPDATE = (
    "UPDATE observation AS o SET "  # noqa: S608
    + ", ".join(f"{c} = json_extract(s.value, '$[{i}]')" for i, c in enumerate(_CHANGED, 1))
    + " FROM json_each(?) AS s WHERE o.id = json_extract(s.value, '$[0]')"
)
SQLITE_SEEN_AGAIN = (
    "UPDATE observation SET last_seen_at = ? WHERE id IN (SELECT value FROM json_each(?))"
)
SQLITE_DELETE = "DELETE FROM observation WHERE id IN (SELECT value FROM json_each(?))"
# The same rows one by one, for the rare batch holding text with a NUL character, which
# SQLite's JSON functions cut short (JSON's `\u0000`).
SQLITE_INSERT_ROWS = (
    f"INSERT INTO observation ({_COLUMNS}) "  # noqa: S608
    f"VALUES ({', '.join('?' for _ in OBSERVATION_COLUMNS)})"
)
SQLITE_UPDATE_ROWS = (
    "UPDATE observation SET "  # noqa: S608
    + ", ".join(f"{c} = ?{i}" for i, c in enumerate(_CHANGED, 2))
    + " WHERE id = ?1"
)
_JSON_NUL = b"\\u0000"


def _postgresql_writes(
    deleted: Sequence[int],
    seen_again: Mapping[datetime, Sequence[int]],
    changed: Iterable[tuple[Any, ...]],
    new: Iterable[tuple[Any, ...]],
    cursor: Any,
) -> None:
    """The observation writes left once a batch is applied, on the thread's cursor: the rows no
    report lists any longer deleted, `last_seen_at` of the rows seen again moved, one statement
    per instant (most of a re-import), the changed rows, `(id, *_CHANGED)`, through the staging
    table, and the new rows, `OBSERVATION_COLUMNS`, in a single `COPY` into the table, as a raw
    bulk load of the same rows would be."""
    for part in chunks(deleted):
        cursor.execute(POSTGRESQL_DELETE, (_integer_array(part),))
    for instant, ids in seen_again.items():
        cursor.execute(POSTGRESQL_SEEN_AGAIN, (instant, _integer_array(ids)))
    staged = list(changed)
    if staged:  # only a re-import's changed rows pay for the staging table
        cursor.execute(POSTGRESQL_STAGE)
        cursor.execute("TRUNCATE observation_stage")
        with cursor.copy(POSTGRESQL_STAGE_COPY) as copy:
            for row in staged:
                copy.write_row(row)
        cursor.execute(POSTGRESQL_UPDATE)
    rows = iter(new)
    first = next(rows, None)
    if first is not None:  # a re-import page may have none: no empty `COPY`
        with cursor.copy(POSTGRESQL_COPY) as copy:
            for row in chain((first,), rows):
                copy.write_row(row)


def _integer_array(ids: Iterable[int]) -> str:
    """PostgreSQL's text form of an integer array (the ids are the store's own integers)."""
    return "{" + ",".join(map(str, ids)) + "}"


class SqliteInstants(dict[datetime, str]):
    """Instants as `db.base.UTCDateTime` stores them on SQLite, each rendered once (a batch
    holds few distinct ones: one per report at most)."""

    def __missing__(self, instant: datetime) -> str:
        text = self[instant] = instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        return text


def _sqlite_writes(
    deleted: Sequence[int],
    seen_again: Mapping[datetime, Sequence[int]],
    changed: Iterable[tuple[Any, ...]],
    new: Iterable[tuple[Any, ...]],
    cursor: Any,
) -> None:
    """`_postgresql_writes` on SQLite: a statement per kind of write (per instant for the rows
    seen again), each taking its rows as one JSON array."""
    text = SqliteInstants()
    if deleted:
        cursor.execute(SQLITE_DELETE, (orjson.dumps(deleted).decode(),))
    for instant, ids in seen_again.items():
        cursor.execute(SQLITE_SEEN_AGAIN, (text[instant], orjson.dumps(ids).decode()))
    updated = [(*row[:4], text[row[4]], text[row[5]]) for row in changed]
    _sqlite_rows(cursor, SQLITE_UPDATE, SQLITE_UPDATE_ROWS, updated)
    _sqlite_insert(cursor, list(new), text)


def _sqlite_insert(cursor: Any, rows: Sequence[tuple[Any, ...]], text: SqliteInstants) -> None:
    """Insert new rows, `OBSERVATION_COLUMNS`, in their order."""
    if not rows:
        return
    document = orjson.dumps(_sqlite_groups(rows, text))
    if _JSON_NUL in document:
        stored = [(*row[:8], text[row[8]], text[row[9]]) for row in rows]
        cursor.executemany(SQLITE_INSERT_ROWS, stored)
    else:
        cursor.execute(SQLITE_INSERT, (document.decode(),))


def _sqlite_groups(rows: Iterable[tuple[Any, ...]], text: SqliteInstants) -> list[list[Any]]:
    """`SQLITE_INSERT`'s groups: each run of rows that share their device, source, evidence
    kind and instants (a report's new rows), in order."""
    groups: list[list[Any]] = []
    shared: tuple[Any, ...] | None = None
    apps: list[tuple[Any, ...]] = []
    for row in rows:
        if (key := row[:3] + row[8:]) != shared:
            shared = key
            apps = []
            groups.append([*row[:3], text[row[8]], text[row[9]], apps])
        apps.append(row[3:8])
    return groups


def _sqlite_rows(cursor: Any, as_json: str, row_by_row: str, rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    document = orjson.dumps(rows)
    if _JSON_NUL in document:
        cursor.executemany(row_by_row, rows)
    else:
        cursor.execute(as_json, (document.decode(),))


def feed_keys(pairs: Iterable[tuple[Device, ReportFacts]]) -> list[FeedKey]:
    return [(device.id, report.source, str(report.evidence_kind)) for device, report in pairs]


# ── the thread that writes a batch's observations ────────────────────────────────────────────

_PAUSE = object()  # a statement of the caller's waits for the connection: end the `COPY`
_ABORT = object()  # the caller's block failed: stop
# How long a `COPY` waits for more rows before it gives up: rows come a report at a time, and
# a statement of the caller's ends the `COPY` first (`ObservationStream.pause`). One that did
# not would wait for the `COPY` while the `COPY` waited for rows; this turns that into an error.
STALLED_AFTER = 60.0
# How many new rows SQLite's thread gathers for one statement (about a hundred reports'), so
# that it asks for the interpreter's lock, which the caller holds while it applies reports,
# now and then rather than for every report.
SQLITE_ROWS_AT_ONCE = 8_192
# `sqlite3.threadsafety` of a library that serialises every call on a connection itself.
SQLITE_SERIALIZED = 3


class _Aborted(Exception):
    """Raised inside a `COPY` to fail it (psycopg then sends `CopyFail`)."""


class ObservationStream:
    """A batch's observation writes, sent to a thread that runs them on the unit of work's own
    connection (`observations_written`): lists of new rows while the reports are applied, then
    the rest as one function of a cursor. `CopyStream` and `SqliteStream` write them."""

    def __init__(self, dbapi: Any, *, inline: bool = False) -> None:
        self._dbapi = dbapi
        self._queue: SimpleQueue[object] = SimpleQueue()
        self._copying = False  # rows sent since the last pause (the caller's side)
        self.finished = False
        self.inline = inline  # no thread: `finish` writes everything in the caller's

    def send(self, rows: list[tuple[Any, ...]]) -> None:
        self._queue.put(rows)
        self._copying = True

    def pause(self, *_: Any) -> None:
        """A statement of the caller's is about to be sent: the `COPY` under way ends once the
        rows sent so far are in (psycopg's lock holds the statement back until then)."""
        if self._copying and not self.finished:
            self._queue.put(_PAUSE)
            self._copying = False

    def finish(self, rest: Callable[[Any], None]) -> None:
        self.finished = True
        self._queue.put(rest)
        if self.inline:
            self.run()

    def abort(self) -> None:
        self._queue.put(_ABORT)

    def run(self) -> None:
        raise NotImplementedError


class CopyStream(ObservationStream):
    """PostgreSQL: the new rows in a `COPY` that lasts until the caller pauses it."""

    def run(self) -> None:
        """The thread: `COPY` the rows as they come, then run the rest."""
        with self._dbapi.cursor() as cursor:
            item = self._queue.get()
            while item is _PAUSE or isinstance(item, list):
                try:
                    item = self._copy(cursor, item) if isinstance(item, list) else self._queue.get()
                except _Aborted:
                    return
            if item is not _ABORT:
                assert callable(item)
                item(cursor)

    def _copy(self, cursor: Any, rows: list[tuple[Any, ...]]) -> object:
        """One `COPY` of these rows and those sent after them, until something else comes."""
        item: object = rows
        with cursor.copy(POSTGRESQL_COPY) as copy:
            while isinstance(item, list):
                for row in item:
                    copy.write_row(row)
                try:
                    item = self._queue.get(timeout=STALLED_AFTER)
                except Empty:
                    raise RuntimeError(
                        f"no observation rows for {STALLED_AFTER:.0f} s while a COPY was open"
                    ) from None
            if item is _ABORT:
                raise _Aborted  # the `COPY` fails, and with it the transaction
        return item


class SqliteStream(ObservationStream):
    """SQLite: the new rows a statement per `SQLITE_ROWS_AT_ONCE` (`_sqlite_insert`). Each
    statement is whole: a statement of the caller's waits for the one running, never for rows
    still to come, so nothing needs pausing."""

    def run(self) -> None:
        """The thread: insert the rows as they come, then run the rest."""
        cursor = self._dbapi.cursor()
        text = SqliteInstants()
        try:
            item: object = self._queue.get()
            while item is _PAUSE or isinstance(item, list):
                if isinstance(item, list):
                    rows, item = self._gathered(item)
                    if item is _ABORT:
                        return
                    self._insert(cursor, rows, text)
                if item is None or item is _PAUSE:  # (a pause: no more rows before the rest)
                    item = self._queue.get()
            if item is not _ABORT:
                assert callable(item)
                item(cursor)
        finally:
            cursor.close()

    def _gathered(self, rows: list[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]], object]:
        """These rows and those sent after them, up to `SQLITE_ROWS_AT_ONCE` or until something
        else comes (returned with them; None: nothing else yet)."""
        gathered = list(rows)
        while len(gathered) < SQLITE_ROWS_AT_ONCE:
            item = self._queue.get()
            if not isinstance(item, list):
                return gathered, item
            gathered += item
        return gathered, None

    def _insert(self, cursor: Any, rows: list[tuple[Any, ...]], text: SqliteInstants) -> None:
        _sqlite_insert(cursor, rows, text)


@contextmanager
def observations_written(writer: ReportWriter) -> Iterator[None]:
    """While the block applies a batch's reports (`ReportWriter.apply`), calls
    `finish_observations` and evaluates the devices, their observation rows are written by a
    thread on the same connection (`db.background`): the new rows of a first load as the reports
    are applied, the rest once every report is applied. On PostgreSQL the new rows go in one
    `COPY` that a statement of the block's ends (it waits for the rows sent so far); on SQLite
    in a statement per few thousand rows. The block must read none of those rows from the store
    (the evaluation has them in memory)."""
    uow = writer.uow
    connection = uow.session.connection()
    dbapi = connection.connection.driver_connection
    postgresql = uow.dialect == "postgresql"
    if postgresql:
        stream: ObservationStream = CopyStream(dbapi)
        event.listen(connection, "before_cursor_execute", stream.pause)
    else:  # a library built without its own locking cannot share a connection between threads
        stream = SqliteStream(dbapi, inline=sqlite3.threadsafety != SQLITE_SERIALIZED)
    writer.stream = stream
    try:
        with nullcontext() if stream.inline else in_background(stream.run):
            try:
                yield
            finally:
                if not stream.finished:  # the block failed before it was done
                    stream.abort()
    finally:
        if postgresql:
            event.remove(connection, "before_cursor_execute", stream.pause)
        writer.stream = None
