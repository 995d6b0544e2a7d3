"""W4's path (docs/architecture.md, "Performance bars"): one device's report, from the ingest call
to the committed decision, costs a bounded number of statements on both stores, one per table
and purpose, not one per app, identifier or policy row. Counted with SQLAlchemy's cursor event,
so a change that adds a round trip per report fails here before it shows in the benchmark."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from tests.conftest import statements_sent

from appwarden.access.models import DecisionRecord
from appwarden.db.uow import unit_of_work
from appwarden.devices import bulk
from appwarden.devices.models import DeviceIdentifier, Observation
from appwarden.devices.schemas import AppSeen, DeviceFacts, InventoryBatch, ReportFacts
from appwarden.identity.models import Person
from appwarden.notifications import service as outbox
from appwarden.notifications.models import Notice
from appwarden.settings import Settings
from appwarden.usecases import ingest as ingest_module
from appwarden.usecases.ingest import IngestResult, ingest
from appwarden.vocabulary import EvidenceKind, Ownership, Platform
from appwarden.wiring import Services

IMPORTED = datetime(2020, 7, 11, 18, tzinfo=UTC)  # after the reference memo's deadline
OBSERVED = datetime(2020, 7, 10, 15, tzinfo=UTC)  # before its release: TikTok is overdue
CLEANED = datetime(2020, 7, 11, 18, 30, tzinfo=UTC)
AT = datetime(2020, 7, 11, 19, tzinfo=UTC)
TIKTOK = AppSeen("apple_bundle_id", "com.zhiliaoapp.musically", "38.4.0", "TikTok")
# The statements of one report that clears a denied phone: resolving it, storing the report
# (report, coverage, observations updated, removed and added), evaluating it, writing its state
# and decision, the "restored" notice, and the commit's stamp. Measured 22 on SQLite (its BEGIN
# IMMEDIATE included) and 21 on PostgreSQL (the stamp and the NOTIFY for the gate copies in one
# statement); a named device saves one more. 23 before a released version's identifiers were
# kept by the process; 28 before the device came with its identifiers,
# the evaluation took the rows the report had just read and written, and the notice took its
# version from the event and was queued by one INSERT ... ON CONFLICT DO NOTHING; 35 before the
# evaluator kept what it had read, owners came with their groups and the new apps went in one
# statement (one INSERT each).
BOUND = 22


def _apps(count: int) -> list[AppSeen]:
    return [
        AppSeen("apple_bundle_id", f"com.example.app{i:03d}", "1.0", None) for i in range(count)
    ]


def _report(udid: str, owner: str | None, apps: list[AppSeen], at: datetime) -> InventoryBatch:
    """A phone's inventory; without `owner`, its identifiers only (as W4's reports: an MDM's
    device facts arrive with the first one)."""
    identifiers = (("udid", udid), ("eas_device_id", f"EAS{udid}"))
    device = (
        DeviceFacts(
            identifiers=identifiers,
            platform=Platform.IOS,
            form_factor="phone",
            ownership=Ownership.CORPORATE,
            owner_email=owner,
            resources=("email",),
        )
        if owner
        else DeviceFacts(identifiers=identifiers)
    )
    return InventoryBatch(
        reports=(
            ReportFacts(
                device=device,
                source="mdm-export",
                evidence_kind=EvidenceKind.INVENTORY,
                observed_at=at,
                apps=tuple(apps),
            ),
        )
    )


def _ingested(store, services: Services, batch: InventoryBatch) -> tuple[IngestResult, list[str]]:
    """The batch ingested in one unit of work, and every statement it sent."""
    with statements_sent(store.engine) as statements, services.uow(AT) as uow:
        result = ingest(uow, batch)
    return result, statements


def _counted(store, services: Services, batch: InventoryBatch) -> list[str]:
    result, statements = _ingested(store, services, batch)
    assert result.reports_applied == 1
    assert len(result.decision_changes) == 1  # deny -> allow
    return statements


def _first_lines(statements: list[str]) -> list[str]:
    """Each statement's start, an `IN` list's parameters as one (one per row of the device)."""
    return [re.sub(r"IN \([^)]*\)", "IN (…)", " ".join(s.split()))[:100] for s in statements]


def _decision(store, udid: str) -> str:
    with unit_of_work(store.engine, now=AT, write=False) as uow:
        device_id = uow.session.scalar(
            select(DeviceIdentifier.device_id).where(DeviceIdentifier.value == udid)
        )
        record = uow.session.get(DecisionRecord, (device_id, "email"))
        assert record is not None
        return record.decision


def test_one_report_costs_a_bounded_number_of_statements(store, demo, tmp_path: Path):
    phones = {"SMALL-1": ("alice@example.com", 2), "LARGE-1": ("bob@example.com", 40)}
    with unit_of_work(store.engine, now=IMPORTED) as uow:  # both phones denied for TikTok
        for udid, (owner, apps) in phones.items():
            ingest(uow, _report(udid, owner, [TIKTOK, *_apps(apps)], OBSERVED))
    services = Services(Settings(database_url=store.url, maildir=tmp_path / "mail"), store.engine)
    counts: dict[str, list[str]] = {}
    for udid, (_, apps) in phones.items():
        assert _decision(store, udid) == "deny"
        # TikTok gone, a quarter of the other apps replaced: rows updated, added and removed
        shift = max(1, apps // 4)
        cleaned = _apps(apps + shift)[shift:]
        counts[udid] = _counted(store, services, _report(udid, None, cleaned, CLEANED))
        assert _decision(store, udid) == "allow"
    small, large = (_first_lines(counts[udid]) for udid in ("SMALL-1", "LARGE-1"))
    assert small == large, "\n".join([*small, "---", *large])  # per table, not per row
    assert len(small) <= BOUND, "\n".join(small)
    # the apps seen again move in one statement, not in a parameter set per app
    updates = [s for s in counts["LARGE-1"] if s.startswith("UPDATE observation")]
    assert len(updates) == 1, updates
    assert ("= ANY (" if store.backend == "postgresql" else "IN (") in updates[0], updates
    # the released version's identifiers were read once in this process, not again per report
    read = [s for s in counts["LARGE-1"] if "FROM policy_identifier" in " ".join(s.split())]
    assert not read, "\n".join(read)
    with unit_of_work(store.engine, now=AT, write=False) as uow:  # the reactions ran
        kinds = set(uow.session.scalars(select(Notice.kind)))
    assert "restored" in kinds


def _batch(phones: int, at: datetime) -> InventoryBatch:
    """`phones` phones with owners of their own, TikTok on every third."""
    reports = []
    for n in range(phones):
        apps = _apps(5) + ([TIKTOK] if n % 3 == 0 else [])
        owner = f"batch{phones}.{n}@example.com"
        (report,) = _report(f"BATCH{phones}-{n}", owner, apps, at).reports
        reports.append(report)
    return InventoryBatch(reports=tuple(reports))


_EVALUATION_TABLES = ("compliance_state", "decision", "notice")


def _writes(store, services: Services, batch: InventoryBatch) -> list[str]:
    """A batch's writes to the states, decisions and notices: each statement's first words."""
    writes = []
    for statement in _ingested(store, services, batch)[1]:
        words = statement.split()
        table = words[1] if words[0] == "UPDATE" else words[2] if words[0] == "INSERT" else None
        if table in _EVALUATION_TABLES:
            writes.append(" ".join(words[:3]))
    return writes


def test_a_batch_writes_states_decisions_and_notices_a_statement_per_table(
    store, demo, tmp_path: Path
):
    """A batch of reports writes its devices' states, decisions and the notices of their flips
    in a statement or two per table, however many devices there are (a flush per notice once cut
    them into a statement or two per device); the same batch again leaves the states alone."""
    services = Services(Settings(database_url=store.url, maildir=tmp_path / "mail"), store.engine)
    first, again = {}, {}
    for phones in (9, 30):
        first[phones] = _writes(store, services, _batch(phones, OBSERVED))  # a third denied
        again[phones] = _writes(store, services, _batch(phones, CLEANED))
        with unit_of_work(store.engine, now=AT, write=False) as uow:
            blocked = uow.session.scalars(
                select(Notice.person_id)
                .join(Person)
                .where(Notice.kind == "blocked", Person.email.like(f"batch{phones}.%"))
            )
            assert len(list(blocked)) == len(range(0, phones, 3))
    for writes in (first, again):  # in any order: few rows go through the flush, many not
        assert sorted(writes[9]) == sorted(writes[30]), "\n".join([*writes[9], "---", *writes[30]])
    for table in _EVALUATION_TABLES:
        assert 1 <= sum(table in s.split() for s in first[30]) <= 2, "\n".join(first[30])
    assert not [s for s in again[30] if "compliance_state" in s], "\n".join(again[30])


def test_notices_waiting_for_the_commit_are_queued_a_chunk_at_a_time(
    store, demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """However many decisions flip in one transaction, the notices waiting for its commit stay
    few: every AT_COMMIT_CHUNK of them are queued at once, the rest at the commit."""
    monkeypatch.setattr(outbox, "AT_COMMIT_CHUNK", 4)
    services = Services(Settings(database_url=store.url, maildir=tmp_path / "mail"), store.engine)
    writes = _writes(store, services, _batch(30, OBSERVED))  # ten phones denied
    # the blocked notices 4, 4 and 2 (the last at the commit), and the owners' announcements
    assert [s for s in writes if "notice" in s.split()] == ["INSERT INTO notice"] * (3 + 1)
    with unit_of_work(store.engine, now=AT, write=False) as uow:
        assert (
            len(list(uow.session.scalars(select(Notice.id).where(Notice.kind == "blocked")))) == 10
        )


def _held_back(monkeypatch: pytest.MonkeyPatch, store, statements: list[str]) -> list[int]:
    """Hold back the observation writes left once the batch is applied half a second, long
    enough to span its evaluation; returns how many statements had been sent when they began,
    and ended."""
    name = "_postgresql_writes" if store.backend == "postgresql" else "_sqlite_writes"
    writes = getattr(bulk, name)
    window: list[int] = []

    def held_back(*args: object) -> None:
        window.append(len(statements))
        time.sleep(0.5)
        writes(*args)
        window.append(len(statements))

    monkeypatch.setattr(bulk, name, held_back)
    return window


def _streamed(
    monkeypatch: pytest.MonkeyPatch,
    store,
    statements: list[str],
    *,
    delay: float = 0.3,
    opened: threading.Event | None = None,
) -> list[tuple[int, int]]:
    """Each write of new rows sent as the batch is applied (PostgreSQL: a `COPY`; SQLite: an
    insert of a few thousand rows, here `ROWS_AT_ONCE`), the first begun `delay` late so that it
    spans what the batch does meanwhile: how many statements had been sent when each began, and
    ended. `opened` is set once a `COPY` has begun on the server (the connection is its own)."""
    windows: list[tuple[int, int]] = []
    if store.backend == "sqlite":
        monkeypatch.setattr(bulk, "SQLITE_ROWS_AT_ONCE", ROWS_AT_ONCE)
        insert = bulk.SqliteStream._insert

        def slowed_insert(self: bulk.SqliteStream, cursor: Any, *args: Any) -> None:
            began = len(statements)
            time.sleep(0 if windows else delay)
            insert(self, cursor, *args)
            windows.append((began, len(statements)))

        monkeypatch.setattr(bulk.SqliteStream, "_insert", slowed_insert)
        return windows
    copy = bulk.CopyStream._copy

    class Opening:
        def __init__(self, cursor: Any) -> None:
            self._cursor = cursor

        @contextmanager
        def copy(self, statement: str) -> Iterator[Any]:
            with self._cursor.copy(statement) as begun:
                if opened is not None:
                    opened.set()
                yield begun

    def slowed(self: bulk.CopyStream, cursor: Any, rows: list[tuple[Any, ...]]) -> object:
        began = len(statements)
        time.sleep(delay)
        item = copy(self, Opening(cursor), rows)
        windows.append((began, len(statements)))
        return item

    monkeypatch.setattr(bulk.CopyStream, "_copy", slowed)
    return windows


# SQLite's thread inserts this many new rows at once in these tests (a batch of 30 phones has
# 160): some are written while the reports are still being applied.
ROWS_AT_ONCE = 40


def _stored(store, udid_like: str) -> dict[tuple[str, str], tuple[str | None, datetime]]:
    """The phones' observations: (udid, app) -> (version, last seen)."""
    with unit_of_work(store.engine, now=AT, write=False) as uow:
        rows = uow.session.execute(
            select(
                DeviceIdentifier.value,
                Observation.value,
                Observation.version,
                Observation.last_seen_at,
            )
            .join(DeviceIdentifier, DeviceIdentifier.device_id == Observation.device_id)
            .where(DeviceIdentifier.namespace == "udid", DeviceIdentifier.value.like(udid_like))
        )
        return {(udid, app): (version, seen) for udid, app, version, seen in rows}


def _ids_in_batch_order(store, udid_like: str) -> bool:
    """Whether the phones' observation ids ascend in the order their reports came."""
    with unit_of_work(store.engine, now=AT, write=False) as uow:
        rows = uow.session.execute(
            select(DeviceIdentifier.value, Observation.id)
            .join(DeviceIdentifier, DeviceIdentifier.device_id == Observation.device_id)
            .where(DeviceIdentifier.namespace == "udid", DeviceIdentifier.value.like(udid_like))
            .order_by(Observation.id)
        )
        phones = [int(udid.rsplit("-", 1)[1]) for udid, _ in rows]
    return phones == sorted(phones)


def test_a_first_load_writes_its_new_rows_while_its_reports_are_applied(
    store, demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A first load's new observation rows are sent to a thread as each report is applied, and
    written on the unit of work's connection while the batch goes on applying the others and
    evaluates its devices from memory (devices/bulk.py): on PostgreSQL in one `COPY`, on SQLite
    a few thousand rows to a statement. The batch reads what the evaluation needs before, and
    sends no statement until the rows are in. Slowed down, the writes span all that, so a
    statement sent meanwhile is seen; afterwards every row is stored, in the reports' order."""
    services = Services(Settings(database_url=store.url, maildir=tmp_path / "mail"), store.engine)
    with statements_sent(store.engine) as statements, services.uow(AT) as uow:
        streamed = _streamed(monkeypatch, store, statements)
        rest = _held_back(monkeypatch, store, statements)
        result = ingest(uow, _batch(30, OBSERVED))
    rows = 30 * 5 + 10  # five apps each, TikTok every third
    if store.backend == "postgresql":
        assert len(streamed) == 1, streamed
    else:  # ROWS_AT_ONCE or a few more at a time, the last of them with the rest
        assert len(streamed) == 4, streamed
    (began, _), (_, rest_ended) = streamed[0], rest
    assert statements[began:rest_ended] == [], "\n".join(_first_lines(statements))
    assert len(result.decision_changes) == 10  # a third of the phones, denied for TikTok
    assert len(_stored(store, "BATCH30-%")) == rows
    assert _ids_in_batch_order(store, "BATCH30-%")
    assert _decision(store, "BATCH30-0") == "deny"
    assert _decision(store, "BATCH30-1") == "allow"


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_a_sqlite_library_that_does_not_serialise_its_calls_gets_no_thread(
    store, demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A SQLite library built without its own locking (`sqlite3.threadsafety` below 3) must not
    be called from two threads on one connection: the batch then writes its observation rows
    itself, once its reports are applied, and stores the same."""

    def no_thread(*_: object) -> None:
        raise AssertionError("a thread was started")

    monkeypatch.setattr(bulk.sqlite3, "threadsafety", 1)
    monkeypatch.setattr(bulk, "in_background", no_thread)
    services = Services(Settings(database_url=store.url, maildir=tmp_path / "mail"), store.engine)
    with services.uow(AT) as uow:
        result = ingest(uow, _batch(30, OBSERVED))
    assert len(result.decision_changes) == 10
    assert len(_stored(store, "BATCH30-%")) == 30 * 5 + 10
    assert _ids_in_batch_order(store, "BATCH30-%")


@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
def test_a_statement_sent_while_rows_are_copied_ends_the_copy_and_waits_for_it(
    store, demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A statement the batch sends while its new rows are being copied (here a read, as a fact
    from a source that is not the device's own may need) ends the `COPY`, which holds the
    connection, and runs once the rows sent so far are in; the rows of the reports after it go
    in a `COPY` of their own, so the ids still follow the reports' order."""
    services = Services(Settings(database_url=store.url, maildir=tmp_path / "mail"), store.engine)
    facts = ingest_module._BatchReports._facts
    applied: list[ReportFacts] = []
    opened = threading.Event()

    def facts_with_a_read(self: ingest_module._BatchReports, device, report: ReportFacts):
        applied.append(report)
        if len(applied) == 12:
            assert opened.wait(5)  # the rows of the reports before are being copied
            assert self.uow.session.scalar(select(func.count()).select_from(Person)) > 0
        return facts(self, device, report)

    monkeypatch.setattr(ingest_module._BatchReports, "_facts", facts_with_a_read)
    with statements_sent(store.engine) as statements, services.uow(AT) as uow:
        copies = _streamed(monkeypatch, store, statements, delay=0, opened=opened)
        result = ingest(uow, _batch(30, OBSERVED))
    assert len(copies) == 2, copies
    assert len(result.decision_changes) == 10
    assert len(_stored(store, "BATCH30-%")) == 30 * 5 + 10
    assert _ids_in_batch_order(store, "BATCH30-%")


def test_a_batch_that_fails_while_its_rows_are_written_stores_none_of_them(
    store, demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A batch that fails while its new rows are being written fails with its own error, not
    the thread's, and leaves nothing: the `COPY` under way (PostgreSQL) or the rows inserted
    (SQLite) go with the transaction."""
    services = Services(Settings(database_url=store.url, maildir=tmp_path / "mail"), store.engine)
    apply = bulk.ReportWriter.apply
    applied: list[ReportFacts] = []

    def failing(self: bulk.ReportWriter, device, report: ReportFacts, **kwargs):
        applied.append(report)
        if len(applied) == 12:
            raise RuntimeError("the twelfth report")
        return apply(self, device, report, **kwargs)

    monkeypatch.setattr(bulk.ReportWriter, "apply", failing)
    monkeypatch.setattr(bulk, "SQLITE_ROWS_AT_ONCE", ROWS_AT_ONCE)  # some are in when it fails
    with pytest.raises(RuntimeError, match="the twelfth report"), services.uow(AT) as uow:
        ingest(uow, _batch(30, OBSERVED))
    assert _stored(store, "BATCH30-%") == {}
    with unit_of_work(store.engine, now=AT) as uow:  # the connection is usable again
        assert uow.session.scalar(select(func.count()).select_from(Person)) > 0


def test_a_re_import_is_evaluated_while_its_rows_seen_again_are_updated(
    store, demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A re-import's observation writes go to the thread once its reports are applied: the rows
    seen again (most of it: their `last_seen_at` moves), the changed rows through the staging
    table and the new rows' `COPY` (none is sent as the reports are applied: their feeds hold
    rows already). The evaluation sends nothing meanwhile, and afterwards every row stands as
    the reports left it."""
    services = Services(Settings(database_url=store.url, maildir=tmp_path / "mail"), store.engine)
    with services.uow(AT) as uow:
        ingest(uow, _batch(30, OBSERVED))
    reports = []
    for report in _batch(30, CLEANED).reports:  # TikTok gone, app000 updated, app005 new
        apps = [a for a in report.apps if a != TIKTOK]
        apps[0] = AppSeen(apps[0].namespace, apps[0].value, "2.0", None)
        reports.append(replace(report, apps=(*apps, *_apps(6)[5:])))
    with statements_sent(store.engine) as statements, services.uow(AT) as uow:
        window = _held_back(monkeypatch, store, statements)
        copies = _streamed(monkeypatch, store, statements)
        result = ingest(uow, InventoryBatch(reports=tuple(reports)))
    began, ended = window
    assert copies == []
    assert statements[began:ended] == [], "\n".join(_first_lines(statements))
    assert len(result.decision_changes) == 10  # the TikTok phones, allowed again
    stored = _stored(store, "BATCH30-%")
    assert len(stored) == 30 * 6
    assert {seen for _, seen in stored.values()} == {CLEANED}
    assert stored[("BATCH30-0", "com.example.app000")][0] == "2.0"
    assert stored[("BATCH30-0", "com.example.app001")][0] == "1.0"
    assert _decision(store, "BATCH30-0") == "allow"
