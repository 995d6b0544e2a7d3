from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from appwarden.db.base import Base


class Notice(Base):
    """One message to one person about one policy: also the transactional outbox row.

    Written in the transaction of its cause; a worker claims `pending` rows whose `due_at` has
    come, marks them `sending`, delivers, and records the outcome. The Message-ID is fixed at
    creation so a redelivery after a crash carries the same one.
    """

    __tablename__ = "notice"
    __table_args__ = (
        UniqueConstraint("person_id", "policy_id", "kind", "due_slot"),
        Index("ix_notice_due", "status", "due_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id"), index=True)
    policy_id: Mapped[str] = mapped_column(ForeignKey("policy.id"), index=True)
    version_id: Mapped[int | None] = mapped_column(ForeignKey("policy_version.id"))
    kind: Mapped[str] = mapped_column(String(16))
    due_slot: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(32), default="email")
    address: Mapped[str] = mapped_column(String(254))
    status: Mapped[str] = mapped_column(String(16))
    message_id: Mapped[str] = mapped_column(String(300), unique=True)
    in_reply_to: Mapped[str | None] = mapped_column(String(300))
    subject: Mapped[str | None] = mapped_column(Text)
    body_text: Mapped[str | None] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime]
    due_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime | None]
    claimed_at: Mapped[datetime | None]  # wall-clock time of the claim: the lease of a sender
    sent_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    cancelled_reason: Mapped[str | None] = mapped_column(String(64))


class OutboxEvent(Base):
    """A signed webhook waiting to go out (notice copies, decision changes), written in the
    transaction of its cause and delivered at least once with the same event id."""

    __tablename__ = "outbox_event"
    __table_args__ = (Index("ix_outbox_event_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    event_type: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(String(2000))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime]
    claimed_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class OutboxMail(Base):
    """Mail that is not a notice (a sign-in link): written in the transaction that asked for it,
    delivered ahead of notices (its own lane), never counted as telling anyone about a policy.
    Its bodies carry a secret, so they are emptied once it is sent, fails for good, or expires
    (`expires_at`: after it, sending is pointless and the row is cancelled)."""

    __tablename__ = "outbox_mail"
    __table_args__ = (Index("ix_outbox_mail_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    purpose: Mapped[str] = mapped_column(String(32))  # sign-in
    person_id: Mapped[int | None] = mapped_column(ForeignKey("person.id", ondelete="CASCADE"))
    address: Mapped[str] = mapped_column(String(254))
    message_id: Mapped[str] = mapped_column(String(300), unique=True)
    subject: Mapped[str] = mapped_column(Text)
    body_text: Mapped[str | None] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime]
    claimed_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
