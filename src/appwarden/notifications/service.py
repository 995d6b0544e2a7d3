"""The notice outbox: enqueue in the cause's transaction, claim, and record outcomes.

A notice is unique per (person, policy, kind, due slot), so the same cause never queues it twice,
and its Message-ID (random, globally unique) is fixed when it is queued, so a redelivery after a
crash carries the same one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from appwarden.audit.service import record
from appwarden.db.uow import UnitOfWork
from appwarden.notifications.messages import new_message_id
from appwarden.notifications.models import Notice, OutboxEvent, OutboxMail
from appwarden.vocabulary import NoticeStatus


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str


# Built once: every decision change looks for its notice (W4; see `compliance.rules`).
_NOTICE = select(Notice).where(
    Notice.person_id == bindparam("person_id"),
    Notice.policy_id == bindparam("policy_id"),
    Notice.kind == bindparam("kind"),
    Notice.due_slot == bindparam("due_slot"),
)


def find(
    uow: UnitOfWork, person_id: int, policy_id: str, kind: str, due_slot: str
) -> Notice | None:
    where = {"person_id": person_id, "policy_id": policy_id, "kind": kind, "due_slot": due_slot}
    return uow.session.scalars(_NOTICE, where).first()


def enqueue(
    uow: UnitOfWork,
    *,
    person_id: int,
    address: str,
    policy_id: str,
    version_id: int | None,
    kind: str,
    due_slot: str,
    due_at: datetime,
    rendered: Rendered | None,
    domain: str,
    payload: dict[str, Any] | None = None,
    in_reply_to: str | None = None,
    looked: bool = False,
) -> Notice | None:
    """Queue a notice unless that (person, policy, kind, slot) was already queued (`looked`: the
    caller has just found it was not, with `find` in this transaction)."""
    if not looked and find(uow, person_id, policy_id, kind, due_slot) is not None:
        return None
    notice = Notice(
        **_notice_values(
            uow,
            person_id=person_id,
            address=address,
            policy_id=policy_id,
            version_id=version_id,
            kind=kind,
            due_slot=due_slot,
            due_at=due_at,
            rendered=rendered,
            domain=domain,
            payload=payload,
            in_reply_to=in_reply_to,
        )
    )
    uow.session.add(notice)
    uow.session.flush()
    return notice


_NOTICE_KEY = ["person_id", "policy_id", "kind", "due_slot"]
_NOTICE_TABLE = cast(Table, Notice.__table__)
# `enqueue_all`'s insert, which does nothing when the notice's key is queued already.
_QUEUE_ONCE = {
    "postgresql": postgresql.insert(_NOTICE_TABLE).on_conflict_do_nothing(
        index_elements=_NOTICE_KEY
    ),
    "sqlite": sqlite.insert(_NOTICE_TABLE).on_conflict_do_nothing(index_elements=_NOTICE_KEY),
}


def enqueue_all(uow: UnitOfWork, notices: Sequence[Mapping[str, Any]]) -> None:
    """Queue these notices (`enqueue`'s keyword arguments each), in order, in one statement
    instead of a `find` and an insert each: a notice whose (person, policy, kind, slot) is
    queued already, earlier in the list or by a transaction the insert then waits for, is not
    queued again."""
    if not notices:
        return
    uow.session.flush()  # a Core statement: the session does not flush for it
    rows = [_notice_values(uow, **notice) for notice in notices]
    uow.session.execute(_QUEUE_ONCE[uow.dialect], rows)


_AT_COMMIT_KEY = "appwarden.notices_at_commit"
# Notices `enqueue_at_commit` holds at most before it queues them: rendered, each is a few kB,
# and an admin's release of a breaker can flip a whole fleet in one transaction.
AT_COMMIT_CHUNK = 1_000


def enqueue_at_commit(uow: UnitOfWork, **notice: Any) -> None:
    """`enqueue_all` this notice with the others queued so in the unit of work, as the
    transaction's last statements (or when AT_COMMIT_CHUNK of them are waiting): a batch's
    decision changes go in one insert, and the batch's states and decisions are not flushed
    once for each of them (a flush per notice cut them into a statement or two each)."""
    pending = uow.until_commit(
        _AT_COMMIT_KEY, list[Mapping[str, Any]], lambda waiting: enqueue_all(uow, waiting)
    )
    pending.append(notice)
    if len(pending) >= AT_COMMIT_CHUNK:
        enqueue_all(uow, pending)
        pending.clear()


def _notice_values(
    uow: UnitOfWork,
    *,
    person_id: int,
    address: str,
    policy_id: str,
    version_id: int | None,
    kind: str,
    due_slot: str,
    due_at: datetime,
    rendered: Rendered | None,
    domain: str,
    payload: dict[str, Any] | None,
    in_reply_to: str | None = None,
) -> dict[str, Any]:
    """A new pending notice's columns."""
    return {
        "person_id": person_id,
        "policy_id": policy_id,
        "version_id": version_id,
        "kind": kind,
        "due_slot": due_slot,
        "channel": "email",
        "address": address,
        "status": NoticeStatus.PENDING,
        "message_id": new_message_id(domain),  # stored: every (re)delivery sends this one
        "in_reply_to": in_reply_to,
        "subject": rendered.subject if rendered else None,
        "body_text": rendered.text if rendered else None,
        "body_html": rendered.html if rendered else None,
        "payload": payload or {},
        "created_at": uow.now,
        "due_at": due_at,
        "next_attempt_at": due_at,
    }


def cancel_pending(
    uow: UnitOfWork,
    policy_id: str,
    reason: str,
    *,
    person_id: int | None = None,
    kinds: tuple[str, ...] | None = None,
) -> int:
    query = select(Notice).where(
        Notice.policy_id == policy_id, Notice.status == NoticeStatus.PENDING
    )
    if person_id is not None:
        query = query.where(Notice.person_id == person_id)
    if kinds is not None:
        query = query.where(Notice.kind.in_(kinds))
    cancelled = 0
    for notice in uow.session.scalars(query):
        cancel(uow, notice, reason)
        cancelled += 1
    return cancelled


def cancel(uow: UnitOfWork, notice: Notice, reason: str) -> None:
    notice.status = NoticeStatus.CANCELLED
    notice.cancelled_reason = reason
    record(
        uow,
        action="notice.cancelled",
        object_type="notice",
        object_id=str(notice.id),
        after={"kind": notice.kind, "reason": reason},
    )


def first_notices(uow: UnitOfWork, policy_id: str) -> dict[int, Notice]:
    """Per person, the first notice about the policy that went out (or is going out)."""
    rows = uow.session.scalars(
        select(Notice)
        .where(
            Notice.policy_id == policy_id,
            Notice.status.in_([NoticeStatus.SENT, NoticeStatus.SENDING]),
            Notice.kind != "correction",
        )
        .order_by(Notice.sent_at.is_(None), Notice.sent_at, Notice.id)
    ).all()
    first: dict[int, Notice] = {}
    for notice in rows:
        first.setdefault(notice.person_id, notice)
    return first


def release_stale_claims(uow: UnitOfWork, *, lease: timedelta, wall_now: datetime) -> int:
    """A sender that died mid-delivery leaves `sending` notices and webhooks: after the lease they
    go back to pending and are sent again, with the same Message-ID or event id."""
    released = 0
    for table in (Notice, OutboxEvent, OutboxMail):
        result = uow.session.execute(
            update(table)
            .where(table.status == NoticeStatus.SENDING, table.claimed_at <= wall_now - lease)
            .values(status=NoticeStatus.PENDING)
        )
        released += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return released


def claim_due(uow: UnitOfWork, *, limit: int, wall_now: datetime) -> list[Notice]:
    """Claim up to `limit` pending notices due at the unit of work's time. PostgreSQL skips rows
    other workers hold; SQLite serialises writers anyway."""
    query = (
        select(Notice)
        .where(
            Notice.status == NoticeStatus.PENDING,
            Notice.due_at <= uow.now,
            or_(Notice.next_attempt_at.is_(None), Notice.next_attempt_at <= uow.now),
        )
        .order_by(Notice.due_at, Notice.id)
        .limit(limit)
    )
    if uow.dialect == "postgresql":
        query = query.with_for_update(skip_locked=True)
    notices = list(uow.session.scalars(query))
    for notice in notices:
        notice.status = NoticeStatus.SENDING
        notice.claimed_at = wall_now
        notice.attempts += 1
    uow.session.flush()
    return notices


def enqueue_webhook(
    uow: UnitOfWork, *, url: str, event_type: str, event_key: str, body: dict[str, Any]
) -> OutboxEvent | None:
    event_id = hashlib.sha256(f"{url}|{event_key}".encode()).hexdigest()[:32]
    exists = uow.session.scalars(
        select(OutboxEvent).where(OutboxEvent.event_id == event_id)
    ).first()
    if exists is not None:
        return None
    event = OutboxEvent(
        event_id=event_id,
        event_type=event_type,
        url=url,
        body={"id": event_id, "type": event_type, **body},
        status=NoticeStatus.PENDING,
        created_at=uow.now,
        next_attempt_at=uow.now,
    )
    uow.session.add(event)
    uow.session.flush()
    return event


def claim_webhooks(uow: UnitOfWork, *, limit: int, wall_now: datetime) -> list[OutboxEvent]:
    query = (
        select(OutboxEvent)
        .where(
            and_(OutboxEvent.status == NoticeStatus.PENDING, OutboxEvent.next_attempt_at <= uow.now)
        )
        .order_by(OutboxEvent.next_attempt_at, OutboxEvent.id)
        .limit(limit)
    )
    if uow.dialect == "postgresql":
        query = query.with_for_update(skip_locked=True)
    events = list(uow.session.scalars(query))
    for event in events:
        event.status = NoticeStatus.SENDING
        event.claimed_at = wall_now
        event.attempts += 1
    uow.session.flush()
    return events


# ── the mail lane: mail that is not a notice (sign-in links) ─────────────────────────────────


def enqueue_mail(
    uow: UnitOfWork,
    *,
    purpose: str,
    person_id: int | None,
    address: str,
    rendered: Rendered,
    domain: str,
    expires_at: datetime | None,
) -> OutboxMail:
    mail = OutboxMail(
        purpose=purpose,
        person_id=person_id,
        address=address,
        message_id=new_message_id(domain),
        subject=rendered.subject,
        body_text=rendered.text,
        body_html=rendered.html,
        status=NoticeStatus.PENDING,
        created_at=uow.now,
        expires_at=expires_at,
        next_attempt_at=uow.now,
    )
    uow.session.add(mail)
    uow.session.flush()
    return mail


def redact(mail: OutboxMail) -> None:
    """Empty the bodies: they carry a secret that is of no use once the mail is settled."""
    mail.body_text = None
    mail.body_html = None


def claim_mail(uow: UnitOfWork, *, limit: int, wall_now: datetime) -> tuple[list[OutboxMail], int]:
    """Claim up to `limit` pending mails due at the unit of work's time; those past their
    `expires_at` are cancelled (and emptied) instead. The claimed mails, and how many were
    cancelled."""
    query = (
        select(OutboxMail)
        .where(OutboxMail.status == NoticeStatus.PENDING, OutboxMail.next_attempt_at <= uow.now)
        .order_by(OutboxMail.next_attempt_at, OutboxMail.id)
        .limit(limit)
    )
    if uow.dialect == "postgresql":
        query = query.with_for_update(skip_locked=True)
    claimed = []
    cancelled = 0
    for mail in uow.session.scalars(query):
        if mail.expires_at is not None and mail.expires_at <= uow.now:
            mail.status = NoticeStatus.CANCELLED
            mail.last_error = "expired before it could be sent"
            redact(mail)
            cancelled += 1
            continue
        mail.status = NoticeStatus.SENDING
        mail.claimed_at = wall_now
        mail.attempts += 1
        claimed.append(mail)
    uow.session.flush()
    return claimed, cancelled
