"""A release, the deadline's refresh and a retraction re-evaluate the devices they name a chunk at
a time (`usecases.ingest.reevaluate_ids`: shared reads, one event per chunk). Whatever the chunk,
they must leave every table as evaluating the devices one by one does (a chunk of one takes
`reevaluate_device`), on both stores; so must the retraction's corrections, queued a chunk of
people at a time."""

from __future__ import annotations

from datetime import timedelta

import pytest
from tests.conftest import repeatable_digest, reset_store

from appwarden.timeutil import iso, parse_instant
from appwarden.usecases import ingest, retract
from appwarden.usecases.demo import APPROVER, POLICY_ID

RELEASE = parse_instant("2020-07-10T09:00:00-07:00")


def _at(hours: float) -> str:
    return iso(RELEASE + timedelta(hours=hours)) or ""


def _lifecycle(store, cli) -> str:
    """The demo (its release), the worker past the deadline, then the retraction: what the
    store holds after it (`repeatable_digest`)."""
    assert cli("demo", "--base-time", "2020-07-10T09:00:00-07:00").code == 0
    assert cli("worker", "--once", "--at", _at(30)).code == 0
    retracted = cli(
        "policy", "retract", POLICY_ID, "--message", "Sent in error.", "--as", APPROVER,
        "--at", _at(31),
    )  # fmt: skip
    assert retracted.code == 0, retracted.err
    return repeatable_digest(store.engine)


@pytest.mark.parametrize("chunk", [3, ingest.EVALUATION_CHUNK])
def test_chunked_reevaluation_leaves_the_tables_one_by_one_does(
    store, cli, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, chunk: int
):
    monkeypatch.setattr(ingest, "EVALUATION_CHUNK", 1)
    monkeypatch.setattr(retract, "CORRECTION_CHUNK", 1)
    one_by_one = _lifecycle(store, cli)
    assert "blocked" in one_by_one
    assert "correction" in one_by_one
    reset_store(store, request)
    monkeypatch.setattr(ingest, "EVALUATION_CHUNK", chunk)
    monkeypatch.setattr(retract, "CORRECTION_CHUNK", chunk)
    assert _lifecycle(store, cli) == one_by_one
