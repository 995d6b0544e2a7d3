"""Retraction of a policy sent in error (docs/architecture.md), in one transaction:

1. its live and scheduled versions become `retracted`;
2. pending notices and reminders are cancelled;
3. every decision it caused is recomputed (blocks lifted; no `restored`: the correction says it);
4. each person told gets exactly one `correction`, to the address of their first notice, threaded
   to it. People never told are not told; inside the undo window nobody was told.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from appwarden.access.models import DecisionRecord
from appwarden.audit.service import record
from appwarden.compliance.models import ComplianceRecord
from appwarden.db.chunked import chunks, scalars_in
from appwarden.db.uow import UnitOfWork
from appwarden.errors import Conflict, InvalidInput
from appwarden.identity.models import Person
from appwarden.identity.service import require
from appwarden.notifications import service as outbox
from appwarden.notifications.models import Notice
from appwarden.policies.document import PolicyDocument
from appwarden.policies.lifecycle import next_state
from appwarden.policies.models import PolicyVersion
from appwarden.policies.service import document_of, get_policy, versions_of
from appwarden.timeutil import iso
from appwarden.usecases.ingest import reevaluate_ids
from appwarden.usecases.notices import NoticeConfig, render_notice
from appwarden.vocabulary import NoticeKind, Permission, VersionState

# People whose corrections are rendered and queued with one statement.
CORRECTION_CHUNK = 1_000


@dataclass
class RetractResult:
    versions: list[int] = field(default_factory=list)
    cancelled: int = 0
    corrections: int = 0
    decisions_changed: int = 0


def retract(
    uow: UnitOfWork, policy_id: str, *, message: str, config: NoticeConfig
) -> RetractResult:
    require(uow, Permission.POLICIES_RETRACT)
    if not message or not message.strip():
        raise InvalidInput("retract needs --message: the correction people who were told will read")
    get_policy(uow, policy_id)
    live = [
        v
        for v in versions_of(uow, policy_id)
        if v.state in (VersionState.SCHEDULED, VersionState.ACTIVE)
    ]
    if not live:
        raise Conflict(f"{policy_id} has no scheduled or active version to retract")
    result = RetractResult()
    for version in live:
        before = version.state
        version.state = next_state(version.state, "retract")
        version.ended_at = uow.now
        version.end_reason = message.strip()
        result.versions.append(version.number)
        record(
            uow,
            action="policy.retract",
            object_type="policy_version",
            object_id=f"{policy_id}@{version.number}",
            before={"state": before},
            after={"state": version.state, "message": message.strip()},
        )
    uow.session.flush()
    result.cancelled = outbox.cancel_pending(uow, policy_id, "retracted")
    result.decisions_changed = _lift(uow, policy_id, [v.id for v in live])
    result.corrections = _correct_everyone_told(uow, live[-1], message.strip(), config)
    return result


def _told(uow: UnitOfWork, policy_id: str) -> list[Notice]:
    """Per person who was told about the policy, their first notice that went out."""
    return [n for n in outbox.first_notices(uow, policy_id).values() if n.status == "sent"]


def correction_recipients(uow: UnitOfWork, policy_id: str) -> list[dict[str, Any]]:
    """Who a retraction of the policy now would send the correction to (the same selection
    `retract` makes), each with the address of their first notice, threaded to it: what the
    console shows before the retraction is confirmed."""
    require(uow, Permission.POLICIES_RETRACT)
    get_policy(uow, policy_id)
    told = _told(uow, policy_id)
    people = {
        p.id: p
        for p in scalars_in(uow.session, select(Person), Person.id, {n.person_id for n in told})
    }
    recipients = [
        {
            "person": people[n.person_id].email,
            "name": people[n.person_id].display_name,
            "address": n.address,
            "first_notice": n.kind,
            "first_sent_at": iso(n.sent_at),
        }
        for n in told
    ]
    return sorted(recipients, key=lambda r: r["person"])


def _lift(uow: UnitOfWork, policy_id: str, version_ids: list[int]) -> int:
    """Recompute every decision the policy touched."""
    device_ids = set(
        uow.session.scalars(
            select(ComplianceRecord.device_id).where(ComplianceRecord.version_id.in_(version_ids))
        )
    )
    # Plain rows, not ORM objects: every decision of the fleet is looked at.
    for device_id, reasons in uow.session.execute(
        select(DecisionRecord.device_id, DecisionRecord.reasons)
    ):
        if any(r.get("policy") == policy_id for r in reasons):
            device_ids.add(device_id)
    return len(reevaluate_ids(uow, device_ids))


def _correct_everyone_told(
    uow: UnitOfWork, version: PolicyVersion, message: str, config: NoticeConfig
) -> int:
    """A correction for each person told, rendered and queued `CORRECTION_CHUNK` people at a
    time (a memo's audience may be a whole company: one statement per chunk, and no more
    rendered messages in memory at once). Returns how many were queued."""
    told = _told(uow, version.policy_id)
    document = document_of(version)
    for part in chunks(told, CORRECTION_CHUNK):
        people = {
            p.id: p
            for p in scalars_in(uow.session, select(Person), Person.id, {n.person_id for n in part})
        }
        outbox.enqueue_all(
            uow,
            [
                _correction(uow, people[n.person_id], n, version, document, message, config)
                for n in part
            ],
        )
    return (
        uow.session.scalar(
            select(func.count()).where(
                Notice.policy_id == version.policy_id,
                Notice.kind == NoticeKind.CORRECTION,
                Notice.due_slot == _correction_slot(version),
            )
        )
        or 0
    )


def _correction_slot(version: PolicyVersion) -> str:
    return f"retraction:v{version.number}"


def _correction(
    uow: UnitOfWork,
    person: Person,
    first: Notice,
    version: PolicyVersion,
    document: PolicyDocument,
    message: str,
    config: NoticeConfig,
) -> dict[str, Any]:
    """The person's correction (`outbox.enqueue`'s arguments): to the address of their first
    notice, threaded to it."""
    rendered = render_notice(
        config,
        person,
        version,
        document,
        kind="correction",
        template="correction",
        devices=(),
        correction_message=message,
    )
    return {
        "person_id": person.id,
        "address": first.address,
        "policy_id": version.policy_id,
        "version_id": version.id,
        "kind": NoticeKind.CORRECTION,
        "due_slot": _correction_slot(version),
        "due_at": uow.now,
        "rendered": rendered,
        "domain": config.domain,
        "payload": {"template": "correction", "message": message},
        "in_reply_to": first.message_id,
    }


def enqueue_correction(
    uow: UnitOfWork, first: Notice, version: PolicyVersion, message: str, config: NoticeConfig
) -> bool:
    """The correction of one person, unless they have it already (a notice that went out after
    the retraction)."""
    person = uow.session.get(Person, first.person_id)
    assert person is not None
    correction = _correction(uow, person, first, version, document_of(version), message, config)
    return outbox.enqueue(uow, **correction) is not None


def corrections_after_late_delivery(
    uow: UnitOfWork, notices: list[Notice], config: NoticeConfig
) -> int:
    """Notices that were in flight when their policy was retracted and then went out each get
    their own correction (unless the person already has one). A batch of sent notices asks for
    each policy's versions once: almost always none is retracted."""
    corrections = 0
    by_policy: dict[str, list[Notice]] = {}
    for notice in notices:
        if notice.kind != NoticeKind.CORRECTION:
            by_policy.setdefault(notice.policy_id, []).append(notice)
    for policy_id, sent in by_policy.items():
        retracted = [v for v in versions_of(uow, policy_id) if v.state == VersionState.RETRACTED]
        if not retracted:
            continue
        version = max(retracted, key=lambda v: v.number)
        for notice in sent:
            if version.ended_at is None or notice.created_at > version.ended_at:
                continue
            first = outbox.first_notices(uow, policy_id).get(notice.person_id, notice)
            corrections += enqueue_correction(uow, first, version, version.end_reason or "", config)
    return corrections
