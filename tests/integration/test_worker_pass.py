"""The worker's pass at a deadline: decisions whose time came are re-evaluated in batches, each
committed on its own, until none is due; the notices they cause are queued and delivered."""

from __future__ import annotations

from functools import partial

from sqlalchemy import event, func, select

from appwarden.access.models import DecisionRecord
from appwarden.cli.context import AppContext
from appwarden.notifications.models import Notice
from appwarden.settings import Settings
from appwarden.timeutil import parse_instant
from appwarden.usecases.release import expired_count
from appwarden.usecases.worker import worker_pass

BEFORE = "2020-07-10T12:00:00-07:00"
AFTER = "2020-07-11T12:00:00-07:00"


def test_a_deadline_is_refreshed_in_batches(store, cli, tmp_path, demo):
    assert cli("worker", "--once", "--at", BEFORE).code == 0
    context = AppContext(Settings(database_url=store.url, maildir=tmp_path / "mail"))
    now = parse_instant(AFTER)
    with context.uow(now, write=False) as uow:
        due = expired_count(uow)
        denied_before = uow.session.scalar(
            select(func.count())
            .select_from(DecisionRecord)
            .where(DecisionRecord.decision == "deny")
        )
    assert due >= 2  # alice's and carol's phones at least: TikTok still there at the deadline
    commits: list[object] = []
    event.listen(context.engine, "commit", lambda connection: commits.append(connection))
    result = worker_pass(
        partial(context.uow, now), context.notice_config, context.delivery(), now, batch=1
    )
    with context.uow(now, write=False) as uow:
        assert expired_count(uow) == 0
        denied_after = uow.session.scalar(
            select(func.count())
            .select_from(DecisionRecord)
            .where(DecisionRecord.decision == "deny")
        )
        blocked = uow.session.scalars(select(Notice).where(Notice.kind == "blocked")).all()
    assert result.decision_changes == denied_after - denied_before >= 2
    assert len(commits) >= due + 2  # the release pass, one per due device, the warnings, ...
    assert {n.status for n in blocked} == {"sent"}
    assert len(blocked) >= 2
    context.close()
