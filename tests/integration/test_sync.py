"""Live syncs end to end on both stores, against a loopback stand-in of each vendor's API: every
page read with the import mappings and ingested, the run recorded; an interrupted run is
incomplete, retires nothing, and the next run completes it; absence from 3 consecutive complete
runs retires (2 do not, an incomplete run does not count), under the mass-retirement hold;
credentials reach no output, log or run; one claim per source; the worker's schedule."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from sqlalchemy import func, select
from tests.vendor_api_harness import (
    FLEET_TOKEN,
    Answer,
    VendorApi,
    fill,
    fleet_host,
    start_vendor_api,
    sync_settings,
)

from appwarden.audit.models import AuditEntry
from appwarden.cli.context import AppContext
from appwarden.devices import runs
from appwarden.devices.models import (
    Device,
    DeviceIdentifier,
    FactConflict,
    SourceClaim,
    SourceRun,
)
from appwarden.settings import Settings
from appwarden.usecases.sync import SyncOutcome, SyncSchedule, sync_claimed, sync_source
from appwarden.usecases.worker import worker_pass

NOW = datetime(2026, 3, 4, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
# Pages and devices of one run over 5 records per vendor, 2 per page.
EXPECTED = {
    "fleet": (4, 5, "fleet_id"),
    "intune": (7, 5, "intune_id"),
    "google": (3, 5, "google_resource_id"),
    "amapi": (3, 5, "amapi_name"),
    "jamf": (6, 10, "jamf_id"),
}


@pytest.fixture
def api() -> Iterator[VendorApi]:
    with start_vendor_api() as server:
        yield server


class Syncs:
    """Runs against one store, each an hour after the last."""

    def __init__(self, store: Any, api: VendorApi, tmp_path: Any, monkeypatch: Any) -> None:
        for name, value in sync_settings(api, tmp_path).items():
            monkeypatch.setenv(name, value)
        self.api = api
        self.context = AppContext(Settings(database_url=store.url, maildir=tmp_path / "mail"))
        self.at = NOW

    def run(self, source: str = "fleet") -> SyncOutcome:
        self.at += HOUR
        outcome = sync_claimed(
            partial(self.context.uow, self.at),
            self.context.settings,
            source,
            now=self.at,
            runner="test-runner",
            sleep=lambda _seconds: None,
        )
        assert outcome is not None
        return outcome

    def read(self, query: Any) -> list[Any]:
        with self.context.uow(self.at, write=False) as uow:
            return list(uow.session.execute(query).all())

    def status_of_host(self, index: int) -> str:
        (row,) = self.read(
            select(Device.status)
            .join(DeviceIdentifier, DeviceIdentifier.device_id == Device.id)
            .where(
                DeviceIdentifier.namespace == "fleet_id",
                DeviceIdentifier.value == str(412 + index),
            )
        )
        return str(row[0])


@pytest.fixture
def syncs(store, api, tmp_path, monkeypatch) -> Iterator[Syncs]:
    helper = Syncs(store, api, tmp_path, monkeypatch)
    yield helper
    helper.context.close()


@pytest.mark.parametrize("source", list(EXPECTED))
def test_a_sync_reads_every_page_and_records_a_complete_run(syncs, api, source):
    fill(api, 5)
    outcome = syncs.run(source)
    pages, devices, namespace = EXPECTED[source]
    assert (outcome.complete, outcome.error, outcome.pages) == (True, None, pages)
    assert outcome.devices == devices
    assert outcome.reports > 0
    ((run,),) = syncs.read(select(SourceRun))
    assert (run.source, run.complete, run.pages, run.devices) == (source, True, pages, devices)
    assert run.runner == "test-runner"
    assert run.finished_at >= run.started_at == syncs.at
    identified = syncs.read(
        select(func.count())
        .select_from(DeviceIdentifier)
        .where(DeviceIdentifier.namespace == namespace)
    )
    assert identified[0][0] == devices


def test_an_interrupted_run_is_incomplete_retires_nothing_and_the_next_completes_it(syncs, api):
    fill(api, 6)  # pages 0, 1, 2 of two hosts, then the empty page 3
    assert syncs.run().complete
    api.records.fleet = api.records.fleet[:4]  # hosts 4 and 5 gone...
    api.fail("page=2&", *[Answer(500)] * 100)  # ...but the third page fails on every run
    for _ in range(3):
        broken = syncs.run()
        assert not broken.complete
        assert broken.pages == 2  # pages 0 and 1 were ingested, and stay
        assert broken.error == (
            "Fleet GET /api/v1/fleet/hosts page 2 answered 500 (gave up after 6 attempts)"
        )
        assert broken.retired == 0
    assert [syncs.status_of_host(i) for i in range(6)] == ["active"] * 6
    api.faults.clear()
    api.records.fleet = [fleet_host(n) for n in range(6)]
    repaired = syncs.run()
    assert (repaired.complete, repaired.pages, repaired.devices, repaired.retired) == (
        True,
        4,
        6,
        0,
    )
    complete = syncs.read(select(SourceRun.complete).order_by(SourceRun.id))
    assert [row[0] for row in complete] == [True, False, False, False, True]


def test_absence_from_three_complete_runs_retires_and_from_two_does_not(syncs, api):
    fill(api, 4)
    assert syncs.run().complete
    api.records.fleet = api.records.fleet[:3]  # host 3 stops being listed
    for _ in range(2):
        assert syncs.run().retired == 0
        assert syncs.status_of_host(3) == "active"  # absent from 2 complete runs only
    third = syncs.run()
    assert third.retired == 1
    assert syncs.status_of_host(3) == "retired"
    assert [syncs.status_of_host(i) for i in range(3)] == ["active"] * 3
    (entry,) = syncs.read(select(AuditEntry.after).where(AuditEntry.action == "retirement.absence"))
    assert entry[0]["retired"] == 1
    api.records.fleet = [fleet_host(n) for n in range(4)]  # listed again: back in scope
    assert syncs.run().retired == 0
    assert syncs.status_of_host(3) == "active"


def test_an_incomplete_run_does_not_count_towards_absence(syncs, api):
    fill(api, 4)
    assert syncs.run().complete
    api.records.fleet = api.records.fleet[:3]
    assert syncs.run().complete
    api.fail("page=1&", *[Answer(503)] * 6)
    assert not syncs.run().complete  # absent here too, but an incomplete run proves nothing
    assert syncs.run().retired == 0  # complete runs without host 3: two
    assert syncs.status_of_host(3) == "active"
    assert syncs.run().retired == 1  # three
    assert syncs.status_of_host(3) == "retired"


def test_retiring_too_many_by_absence_at_once_is_held_for_an_admin(syncs, api, monkeypatch):
    monkeypatch.setenv("APPWARDEN_FLEET_PAGE_SIZE", "100")
    syncs.context.settings = Settings(database_url=syncs.context.settings.database_url)
    api.records.fleet = [fleet_host(n) for n in range(60)]
    assert syncs.run().devices == 60
    api.records.fleet = []  # a source that lost its data
    assert syncs.run().retired == 0
    assert syncs.run().retired == 0
    held = syncs.run()
    assert (held.complete, held.retired, held.retirements_held) == (True, 0, 60)
    retired = syncs.read(select(func.count()).select_from(Device).where(Device.status == "retired"))
    assert retired[0][0] == 0
    conflicts = syncs.read(
        select(func.count()).select_from(FactConflict).where(FactConflict.fact == "device_status")
    )
    assert conflicts[0][0] == 60
    holds = syncs.read(select(AuditEntry.action).where(AuditEntry.action == "retirement.hold"))
    assert len(holds) == 1


def test_credentials_reach_no_output_log_or_run(cli, syncs, api, caplog):
    caplog.set_level(logging.DEBUG)
    fill(api, 4)
    api.fail("page=1&", Answer(403, {"message": f"API token {FLEET_TOKEN} may not list hosts"}))
    result = cli("sync", "fleet")
    assert result.code == 1
    assert "INCOMPLETE" in result.err
    assert "answered 403: API token *** may not list hosts" in result.err
    (error,) = syncs.read(select(SourceRun.error))
    assert error[0].endswith("answered 403: API token *** may not list hosts")
    for text in (result.out, result.err, caplog.text, error[0]):
        assert FLEET_TOKEN not in text


def test_the_command_prints_the_run_and_exits_non_zero_when_incomplete(cli, syncs, api):
    fill(api, 3)
    done = cli("sync", "fleet", "--json", "--at", "2026-03-04T12:00:00Z")
    assert done.code == 0, done.err
    summary = done.json()
    assert summary["complete"] is True
    assert (summary["pages"], summary["devices"], summary["error"]) == (3, 3, None)
    api.fail("page=0&", Answer(404, {"message": "not found"}))
    failed = cli("sync", "fleet", "--json")
    assert failed.code == 1
    assert failed.json()["complete"] is False
    unknown = cli("sync", "exchange")
    assert unknown.code == 2
    assert "cannot be synced" in unknown.err


def test_a_source_without_settings_is_refused_before_any_run(cli, store, monkeypatch):
    monkeypatch.delenv("APPWARDEN_JAMF_URL", raising=False)
    result = cli("sync", "jamf")
    assert result.code == 2
    assert "jamf is not configured for a sync: set APPWARDEN_JAMF_URL" in result.err


def test_a_source_claimed_by_another_process_is_not_synced(cli, syncs, api):
    fill(api, 2)
    wall = datetime.now(UTC)
    with syncs.context.uow(syncs.at) as uow:
        assert runs.claim(uow, "fleet", "worker on host-b", wall_now=wall, lease=HOUR)
    refused = cli("sync", "fleet")
    assert refused.code == 4
    assert "fleet is being synced by worker on host-b" in refused.err
    assert api.gets() == []
    with syncs.context.uow(syncs.at) as uow:  # its lease ran out: the source is free again
        uow.session.get(SourceClaim, "fleet").lease_until = wall - timedelta(seconds=1)
    assert syncs.run().complete


def test_a_claim_is_renewed_only_by_its_holder_and_taken_once_its_lease_ran_out(syncs):
    wall = datetime.now(UTC)
    lease = timedelta(seconds=30)
    with syncs.context.uow(syncs.at) as uow:
        assert runs.claim(uow, "jamf", "a", wall_now=wall, lease=lease)
        assert not runs.claim(uow, "jamf", "b", wall_now=wall + timedelta(seconds=29), lease=lease)
        assert runs.renew(uow, "jamf", "a", wall_now=wall + timedelta(seconds=29), lease=lease)
        assert not runs.claim(uow, "jamf", "b", wall_now=wall + timedelta(seconds=58), lease=lease)
        assert runs.claim(uow, "jamf", "b", wall_now=wall + timedelta(seconds=60), lease=lease)
        assert not runs.renew(uow, "jamf", "a", wall_now=wall + timedelta(seconds=61), lease=lease)


def test_a_run_whose_claim_is_lost_stops_incomplete(syncs, api):
    from appwarden.connectors.client import ConnectorError

    fill(api, 4)

    def lost() -> None:
        raise ConnectorError("the claim on fleet ran out and another process took it; stopped")

    outcome = sync_source(
        partial(syncs.context.uow, syncs.at),
        syncs.context.settings,
        "fleet",
        now=syncs.at,
        runner="test-runner",
        heartbeat=lost,
    )
    assert (outcome.complete, outcome.pages) == (False, 0)
    assert outcome.error == "the claim on fleet ran out and another process took it; stopped"


def test_a_crawl_checks_its_claim_while_its_fetched_pages_are_ingested(syncs, api):
    from appwarden.connectors.client import ConnectorError

    fill(api, 5)  # Intune: 7 pages, all fetched (7 requests) before the first is ingested
    checks: list[int] = []

    def claim_lost_after_the_first_page() -> None:
        checks.append(len(api.gets()))
        if len(checks) > 8:
            raise ConnectorError("the claim on intune ran out and another process took it")

    outcome = sync_source(
        partial(syncs.context.uow, syncs.at),
        syncs.context.settings,
        "intune",
        now=syncs.at,
        runner="test-runner",
        heartbeat=claim_lost_after_the_first_page,
    )
    assert checks[:7] == list(range(7))  # before each request
    assert (outcome.complete, outcome.pages) == (False, 1)  # then before each page's ingest
    assert outcome.error == "the claim on intune ran out and another process took it"


def test_the_worker_syncs_a_scheduled_source_once_per_interval(syncs, api, monkeypatch):
    monkeypatch.setenv("APPWARDEN_SYNC_FLEET_INTERVAL", "PT6H")
    settings = Settings(database_url=syncs.context.settings.database_url)
    schedule = SyncSchedule(settings, runner="worker-a", sleep=lambda _seconds: None)
    fill(api, 2)
    delivery = syncs.context.delivery()

    def worker_at(at: datetime) -> tuple[SyncOutcome, ...]:
        open_uow = partial(syncs.context.uow, at)
        return worker_pass(
            open_uow, syncs.context.notice_config, delivery, at, syncs=schedule
        ).syncs

    (first,) = worker_at(NOW)
    assert (first.source, first.complete, first.runner) == ("fleet", True, "worker-a")
    assert worker_at(NOW + 5 * HOUR) == ()  # not due yet
    (second,) = worker_at(NOW + 6 * HOUR)
    assert second.complete
    delivery.close()
    assert len(syncs.read(select(SourceRun.id))) == 2
