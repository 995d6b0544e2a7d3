"""The life of a policy version as the fronts drive it (`appwarden policy …` and the console):
apply a document, propose, approve, publish, cancel, retire, and the pages' views of it. One
function per step, so both fronts run the same checks and write the same audit entries.

Retraction is `usecases.retract`; the impact preview is `preview`, the same plan the release
runs (`usecases.notices.plan_release`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from sqlalchemy import select

from appwarden.catalog.model import Catalog
from appwarden.db.chunked import one_of
from appwarden.db.uow import UnitOfWork
from appwarden.errors import InvalidInput
from appwarden.identity.models import Person
from appwarden.policies import service as policies
from appwarden.policies.models import PolicyVersion
from appwarden.policies.service import ApplyResult
from appwarden.timeutil import iso
from appwarden.usecases.notices import NoticeConfig, plan_release
from appwarden.usecases.paging import Page, Window, page_of
from appwarden.usecases.policies import version_view
from appwarden.vocabulary import VersionState

#: The steps `act` performs, each the command of the same name.
ACTIONS: Final = ("propose", "approve", "publish", "cancel", "retire")


@dataclass(frozen=True)
class LifecycleRules:
    """What the steps need beyond the store: the catalog and message templates a content hash
    covers, the undo window, and how many approvals a release needs."""

    catalog: Catalog
    templates_digest: str
    undo_window: timedelta
    required_approvals: int = 1


def apply_document(
    uow: UnitOfWork, text: str | bytes, filename: str, rules: LifecycleRules
) -> ApplyResult:
    """Store a document as its policy's draft (`policies.service.apply`): identical content is
    a no-op; a problem is an InvalidInput located at FILE:LINE:COL."""
    return policies.apply(
        uow,
        text=text,
        filename=filename,
        catalog=rules.catalog,
        templates_digest=rules.templates_digest,
    )


def act(
    uow: UnitOfWork,
    action: str,
    policy_id: str,
    rules: LifecycleRules,
    *,
    short_notice: bool = False,
) -> PolicyVersion:
    """One step of ACTIONS on the policy's open (or scheduled, or live) version, as the unit of
    work's actor."""
    catalog, digest = rules.catalog, rules.templates_digest
    if action == "propose":
        return policies.propose(uow, policy_id, catalog=catalog, templates_digest=digest)
    if action == "approve":
        return policies.approve(
            uow,
            policy_id,
            catalog=catalog,
            templates_digest=digest,
            required_approvals=rules.required_approvals,
        )
    if action == "publish":
        return policies.publish(
            uow,
            policy_id,
            undo_window=rules.undo_window,
            required_approvals=rules.required_approvals,
            short_notice=short_notice,
            catalog=catalog,
            templates_digest=digest,
        )
    if action == "cancel":
        return policies.cancel(uow, policy_id)
    if action == "retire":
        return policies.retire(uow, policy_id)
    raise InvalidInput(f"unknown step {action!r}: expected one of {', '.join(ACTIONS)}")


def preview(
    uow: UnitOfWork,
    policy_id: str,
    number: int | None,
    rules: LifecycleRules,
    config: NoticeConfig,
) -> dict[str, Any]:
    """What releasing the version would do, before anyone is told (`appwarden policy
    preview --json`): counts per state, each notice with its exact text, who would lose which
    resource when, and the audience compared with the version before. A version not yet
    scheduled is planned as if published now."""
    row = policies.get_version(uow, policy_id, number)
    release_at = row.release_at or uow.now + rules.undo_window
    return plan_release(uow, row, release_at, config).as_json()


def _emails(uow: UnitOfWork, ids: set[int]) -> dict[int, str]:
    query = select(Person.id, Person.email).where(one_of(Person.id, ids))
    return {int(id_): str(email) for id_, email in uow.session.execute(query)}


def version_page(
    uow: UnitOfWork, policy_id: str, number: int | None, rules: LifecycleRules
) -> dict[str, Any]:
    """`usecases.policies.version_view` with what a page about it shows besides: every version of
    the policy, the version's author and times, and its stored document."""
    view = version_view(
        uow, policy_id, number, catalog=rules.catalog, templates_digest=rules.templates_digest
    )
    row = policies.get_version(uow, policy_id, number)
    versions = policies.versions_of(uow, policy_id)
    authors = _emails(uow, {v.author_id for v in versions if v.author_id is not None})
    view.update(
        author=authors.get(row.author_id) if row.author_id is not None else None,
        proposed_at=iso(row.proposed_at),
        approved_at=iso(row.approved_at),
        published_at=iso(row.published_at),
        ended_at=iso(row.ended_at),
        end_reason=row.end_reason,
        short_notice=row.short_notice,
        source_text=row.source_text,
        source_name=row.source_name,
        versions=[
            {
                "version": v.number,
                "state": v.state,
                "author": authors.get(v.author_id) if v.author_id is not None else None,
                "release_at": iso(v.release_at),
            }
            for v in versions
        ],
    )
    return view


def approval_queue(uow: UnitOfWork, window: Window) -> Page[dict[str, Any]]:
    """Versions waiting for approval, oldest proposal first, a page at a time (cursor: the
    version's id), each with its author."""
    query = (
        select(PolicyVersion)
        .where(PolicyVersion.state == VersionState.PROPOSED)
        .order_by(PolicyVersion.id)
        .limit(window.fetch)
    )
    if window.after is not None:
        if not window.after.isdigit():
            raise InvalidInput("after: not a cursor of this list")
        query = query.where(PolicyVersion.id > int(window.after))
    versions = list(uow.session.scalars(query))
    authors = _emails(uow, {v.author_id for v in versions if v.author_id is not None})
    rows = [
        {
            "id": v.id,
            "policy": v.policy_id,
            "version": v.number,
            "title": v.document["metadata"]["title"],
            "author": authors.get(v.author_id) if v.author_id is not None else None,
            "proposed_at": iso(v.proposed_at),
            "deadline": iso(v.deadline),
        }
        for v in versions
    ]
    return page_of(rows, window, key=lambda r: str(r["id"]))
