"""Compliance over time (usecases/compliance_history.py): the worker writes the counts per state
every hour and at each release or retraction, never backfilling; the dashboard's history reads
them back oldest first."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from appwarden.compliance.models import ComplianceCount, ComplianceRecord
from appwarden.db.uow import unit_of_work
from appwarden.timeutil import iso, parse_instant
from appwarden.usecases.compliance_history import COUNTED_STATES, history
from appwarden.usecases.demo import APPROVER, POLICY_ID

RELEASE = parse_instant("2020-07-10T09:00:00-07:00")


def snapshots(store) -> list[tuple[str, int]]:
    """Each instant counted, with how many rows it has."""
    with unit_of_work(store.engine, now=RELEASE, write=False) as uow:
        rows = uow.session.execute(
            select(ComplianceCount.at, func.count())
            .group_by(ComplianceCount.at)
            .order_by(ComplianceCount.at)
        ).all()
    return [(iso(at) or "", n) for at, n in rows]


def test_counts_are_written_hourly_and_at_a_retraction_never_backfilled(store, cli, demo):
    assert snapshots(store) == []  # released by `demo`, but no worker has run: no history

    def work(minutes: int) -> None:
        at = iso(RELEASE + timedelta(minutes=minutes)) or ""
        assert cli("worker", "--once", "--at", at).code == 0

    work(5)
    first = snapshots(store)
    assert first == [(iso(RELEASE + timedelta(minutes=5)), len(COUNTED_STATES))]
    with unit_of_work(store.engine, now=RELEASE, write=False) as uow:
        counted = uow.session.scalar(select(func.sum(ComplianceCount.n)))
        in_scope = uow.session.scalar(select(func.count()).select_from(ComplianceRecord))
    assert counted == in_scope > 0

    work(30)  # within the hour, nothing released or retracted: nothing written
    assert snapshots(store) == first
    work(65)
    assert len(snapshots(store)) == 2

    retracted = cli(
        "policy", "retract", POLICY_ID, "--message", "Sent in error.", "--as", APPROVER,
        "--at", iso(RELEASE + timedelta(minutes=70)) or "",
    )  # fmt: skip
    assert retracted.code == 0, retracted.err
    work(75)  # ten minutes after the last count, but a retraction came in between
    assert [at for at, _ in snapshots(store)][-1] == iso(RELEASE + timedelta(minutes=75))

    with unit_of_work(store.engine, now=RELEASE, write=False) as uow:
        shown = history(uow, POLICY_ID)
    assert [s["at"] for s in shown] == [at for at, _ in snapshots(store)]
    assert all(set(s["counts"]) == set(COUNTED_STATES) for s in shown)
    assert {s["version"] for s in shown} == {1}
