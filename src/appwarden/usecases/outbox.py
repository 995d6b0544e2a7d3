"""The outbox as the fronts see it: how much is waiting to go out (the metrics), and the notices
themselves (the CLI's `notices`)."""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import Engine, func, select

from appwarden.db.uow import UnitOfWork
from appwarden.identity.models import Person
from appwarden.notifications.models import Notice, OutboxEvent
from appwarden.timeutil import iso
from appwarden.vocabulary import NoticeStatus

WAITING: Final = (NoticeStatus.PENDING, NoticeStatus.SENDING)


def depth(engine: Engine) -> dict[str, int]:
    """Notices and webhooks waiting to be delivered, by kind. Read on a connection of its own
    (a scrape is no request's transaction); raises the store's error when it does not answer."""
    with engine.connect().execution_options(appwarden_write=False) as connection:
        notices = connection.execute(
            select(func.count()).select_from(Notice).where(Notice.status.in_(WAITING))
        ).scalar_one()
        webhooks = connection.execute(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.status.in_(WAITING))
        ).scalar_one()
    return {"notice": notices, "webhook": webhooks}


def notice_rows(
    uow: UnitOfWork, *, policy: str | None = None, status: str | None = None
) -> list[dict[str, Any]]:
    """Every notice, oldest first, with its recipient's email; optionally one policy's or those
    in one status."""
    query = select(Notice, Person.email).join(Person, Person.id == Notice.person_id)
    if policy:
        query = query.where(Notice.policy_id == policy)
    if status:
        query = query.where(Notice.status == status)
    return [notice_row(n, email) for n, email in uow.session.execute(query.order_by(Notice.id))]


def notice_row(n: Notice, email: str | None) -> dict[str, Any]:
    """One notice as `appwarden notices --json` and the console list it (bodies left out)."""
    return {
        "id": n.id,
        "kind": n.kind,
        "person": email,
        "address": n.address,
        "policy": n.policy_id,
        "status": n.status,
        "message_id": n.message_id,
        "in_reply_to": n.in_reply_to,
        "subject": n.subject,
        "due_at": iso(n.due_at),
        "created_at": iso(n.created_at),
        "sent_at": iso(n.sent_at),
        "attempts": n.attempts,
        "last_error": n.last_error,
        "cancelled_reason": n.cancelled_reason,
    }
