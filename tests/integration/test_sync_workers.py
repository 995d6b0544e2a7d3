"""Two real `appwarden worker` processes against one PostgreSQL, both scheduled to sync Fleet
every second: they never sync it at once. The stand-in Fleet tells them apart by their API
tokens (each worker has its own) and answers slowly, so two runs at once would interleave in its
request log; the log must instead be whole runs, one after the other."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from itertools import groupby, pairwise
from pathlib import Path

import pytest
from sqlalchemy import select
from tests.conftest import _empty_postgres
from tests.vendor_api_harness import VendorApi, fill, start_vendor_api, sync_settings

from appwarden.db.engine import make_engine
from appwarden.devices.models import SourceRun

ROOT = Path(__file__).resolve().parents[2]
TOKENS = ("fleet-token-worker-a", "fleet-token-worker-b")
ENOUGH_RUNS = 6
DEADLINE = 90.0


@pytest.fixture
def postgres_url(postgres_database: str) -> str:
    engine = make_engine(postgres_database)
    _empty_postgres(engine)
    engine.dispose()
    return postgres_database


@pytest.fixture
def fleet() -> Iterator[VendorApi]:
    with start_vendor_api() as api:
        fill(api, 6)  # pages 0, 1, 2 of two hosts, then the empty page 3
        api.fleet_tokens = set(TOKENS)
        api.delay = 0.1
        yield api


def _worker(url: str, token: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        **env,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "APPWARDEN_DATABASE_URL": url,
        "APPWARDEN_FLEET_API_TOKEN": token,
        "APPWARDEN_SYNC_FLEET_INTERVAL": "PT1S",
        "APPWARDEN_WORKER_INTERVAL_SECONDS": "0.1",
        "APPWARDEN_MAILDIR": str(log.parent / f"mail-{token}"),
    }
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-c", "from appwarden.cli.main import main; main()", "worker"],
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def _runs(url: str) -> list[SourceRun]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(select(SourceRun).order_by(SourceRun.id)).all())
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.slow
def test_two_workers_never_sync_one_source_at_once(postgres_url, fleet, tmp_path):
    env = sync_settings(fleet, tmp_path)
    logs = [tmp_path / f"worker-{n}.log" for n in range(len(TOKENS))]
    workers = [_worker(postgres_url, t, env, log) for t, log in zip(TOKENS, logs, strict=True)]
    try:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            runs = _runs(postgres_url)
            if (
                len([r for r in runs if r.complete]) >= ENOUGH_RUNS
                and len({r.runner for r in runs}) == 2
            ):
                break
            assert all(w.poll() is None for w in workers), [p.read_text() for p in logs]
            time.sleep(0.2)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=10)
    runs = _runs(postgres_url)
    assert len([r for r in runs if r.complete]) >= ENOUGH_RUNS, [r.error for r in runs]
    assert len({r.runner for r in runs}) == 2  # both workers synced, in turn
    requests = sorted(fleet.gets("/api/v1/fleet/hosts"), key=lambda r: r.started)
    assert {r.credential for r in requests} == set(TOKENS)
    runs_in_log = [
        [r.query["page"][0] for r in group]
        for _, group in groupby(requests, key=lambda r: r.credential)
    ]
    # each worker's requests come as whole runs, pages 0 to 3, never interleaved with the other's
    # (the last run may have been cut short by the end of the test)
    whole_runs = ["0", "1", "2", "3"] * len(requests)
    for pages in runs_in_log:
        assert pages == whole_runs[: len(pages)]
    assert all(len(pages) % 4 == 0 for pages in runs_in_log[:-1])
    for earlier, later in pairwise(requests):
        if earlier.credential != later.credential:
            assert earlier.finished <= later.started  # no request of one run during another's
