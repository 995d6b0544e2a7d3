"""Policies as the fronts show them: every policy with its versions, and one version in full."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from appwarden.catalog.model import Catalog
from appwarden.db.uow import UnitOfWork
from appwarden.identity.models import Person
from appwarden.policies import service as policies
from appwarden.policies.models import Policy, PolicyApproval
from appwarden.timeutil import iso


def policy_rows(uow: UnitOfWork, now: datetime) -> list[dict[str, Any]]:
    """Every policy: its versions and which one is in effect at `now`."""
    live = {v.policy_id: v for v in policies.effective_versions(uow, now)}
    rows: list[dict[str, Any]] = []
    for policy in uow.session.scalars(select(Policy).order_by(Policy.id)):
        versions = policies.versions_of(uow, policy.id)
        current = live.get(policy.id)
        rows.append(
            {
                "policy": policy.id,
                "title": policy.title,
                "in_effect": current.number if current else None,
                "deadline": iso(current.deadline) if current else iso(versions[-1].deadline),
                "versions": [{"version": v.number, "state": v.state} for v in versions],
            }
        )
    return rows


def version_view(
    uow: UnitOfWork,
    policy_id: str,
    number: int | None,
    *,
    catalog: Catalog,
    templates_digest: str,
) -> dict[str, Any]:
    """A version (`policies.get_version` picks it): state, times, its content hash, who approved
    which content hash, whether its content still hashes the same with today's catalog and
    templates, and its resolved identifiers."""
    row = policies.get_version(uow, policy_id, number)
    identifiers = policies.identifiers_of(uow, row.id)
    approvals = uow.session.execute(
        select(PolicyApproval, Person.email)
        .join(Person, Person.id == PolicyApproval.approver_id)
        .where(PolicyApproval.version_id == row.id)
        .order_by(PolicyApproval.created_at, PolicyApproval.id)
    ).all()
    current_hash = policies.current_content_hash(row, catalog, templates_digest)
    return {
        "policy": row.policy_id,
        "version": row.number,
        "state": row.state,
        "title": row.document["metadata"]["title"],
        "deadline": iso(row.deadline),
        "release_at": iso(row.release_at),
        "content_hash": row.content_hash,
        "content_current": current_hash == row.content_hash,
        "approvals": [
            {
                "approver": email,
                "approver_id": a.approver_id,
                "at": iso(a.created_at),
                "content_hash": a.content_hash,
                "valid": a.voided_at is None and a.content_hash == current_hash,
                "void_reason": a.void_reason,
            }
            for a, email in approvals
        ],
        "identifiers": [
            {
                "namespace": i.namespace,
                "value": i.value,
                "app": i.app_slug,
                "covered_by_scheme": i.covered_by_scheme,
            }
            for i in identifiers
        ],
        "document": row.document,
    }


def stored_document(uow: UnitOfWork, policy_id: str, number: int | None) -> str:
    """The document of a version exactly as it was applied: the text its approvals bound
    (editing an approved version makes it a draft again, voiding them)."""
    return policies.get_version(uow, policy_id, number).source_text
