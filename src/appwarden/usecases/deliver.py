"""Draining the outbox in batches: claim up to `batch` due rows in one transaction, hand each to
its channel (SMTP keeps one connection across them), then record every outcome, audit entries
included, in one transaction. At least once: a claim is a lease; after a crash, what was in
flight (the claimed batch) goes out again with the same Message-ID (or webhook event id).

Per message, the cost left is the channel's; per batch, two transactions and one audit chaining
(the worker's throughput: bench/README.md, DELIVERY).

Mail that is not a notice (sign-in links, `OutboxMail`) has its own lane, drained first: someone
is waiting for it, and at a deadline the notices can be thousands. It never counts as telling a
person about a policy, and its bodies (which carry the link) are emptied once it is settled."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import Message
from functools import partial
from typing import TypeVar

import orjson
from sqlalchemy import select

from appwarden.audit.service import record
from appwarden.db.chunked import one_of
from appwarden.db.uow import UnitOfWork
from appwarden.notifications import service as outbox
from appwarden.notifications.channels import (
    Channel,
    DeliveryError,
    MaildirChannel,
    OutgoingEmail,
    OutgoingWebhook,
    RateLimiter,
    SmtpChannel,
    SmtpSettings,
    WebhookChannel,
    backoff_delay,
    origin,
)
from appwarden.notifications.messages import RenderedMessage, build_email
from appwarden.notifications.models import Notice, OutboxEvent, OutboxMail
from appwarden.settings import Settings
from appwarden.usecases.enforcement import Enforcers, Send, enforcers_from_settings, prepare
from appwarden.usecases.notices import NoticeConfig, refresh_reminder
from appwarden.usecases.retract import corrections_after_late_delivery
from appwarden.vocabulary import NoticeKind, NoticeStatus

OpenUnitOfWork = Callable[[], AbstractContextManager[UnitOfWork]]


@dataclass
class RateLimited:
    """A channel behind its per-minute limit."""

    channel: Channel
    limiter: RateLimiter
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = self.channel.name

    def send(self, item: OutgoingEmail | OutgoingWebhook) -> None:
        self.limiter.acquire()
        self.channel.send(item)

    def close(self) -> None:
        close = getattr(self.channel, "close", None)
        if close is not None:
            close()


@dataclass
class Delivery:
    mail: Channel
    webhook: Channel | None
    sender: str
    config: NoticeConfig
    lease: timedelta = timedelta(minutes=5)
    batch: int = 10
    max_attempts: int = 8
    enforcers: Enforcers | None = None
    wall_clock: Callable[[], datetime] = field(default=lambda: datetime.now().astimezone())

    def close(self) -> None:
        for channel in (self.mail, self.webhook, self.enforcers):
            close = getattr(channel, "close", None)
            if close is not None:
                close()


@dataclass
class DeliveryStats:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    cancelled: int = 0
    webhooks: int = 0
    mail: int = 0  # sign-in mail sent (not notices)


def deliver_due(open_uow: OpenUnitOfWork, delivery: Delivery) -> DeliveryStats:
    """Deliver everything due at the unit of work's time, batch by batch, until nothing is:
    the mail lane first, then notices, then webhooks."""
    stats = DeliveryStats()
    while True:
        mails, expired = _claim_mail(open_uow, delivery)
        if not mails and not expired:
            break
        _record_mail(open_uow, delivery, _send_all(delivery.mail, mails), stats)
    while True:
        claimed = _claim(open_uow, delivery, stats)
        if not claimed:
            break
        _record_notices(open_uow, delivery, _send_all(delivery.mail, claimed), stats)
    while True:
        events = _claim_webhooks(open_uow, delivery)
        if not events:
            break
        _record_webhooks(open_uow, delivery, _attempt_all(events), stats)
    return stats


Outcome = tuple[int, DeliveryError | None]  # (row id, why it failed; None: delivered)


def _send_all(channel: Channel, claimed: list[tuple[int, OutgoingEmail]]) -> list[Outcome]:
    return _attempt_all([(row_id, partial(channel.send, outgoing)) for row_id, outgoing in claimed])


def _attempt_all(calls: list[tuple[int, Send]]) -> list[Outcome]:
    """Make a claimed batch's calls one after another (an SMTP channel keeps its connection
    across them); a failure is that row's outcome, not the batch's."""
    outcomes: list[Outcome] = []
    for row_id, send in calls:
        try:
            send()
        except DeliveryError as exc:
            outcomes.append((row_id, exc))
        else:
            outcomes.append((row_id, None))
    return outcomes


def _claim(
    open_uow: OpenUnitOfWork, delivery: Delivery, stats: DeliveryStats
) -> list[tuple[int, OutgoingEmail]]:
    with open_uow() as uow:
        outbox.release_stale_claims(uow, lease=delivery.lease, wall_now=delivery.wall_clock())
        claimed = []
        for notice in outbox.claim_due(uow, limit=delivery.batch, wall_now=delivery.wall_clock()):
            if notice.kind == NoticeKind.REMINDER and not refresh_reminder(
                uow, notice, delivery.config
            ):
                stats.cancelled += 1
                continue
            claimed.append((notice.id, OutgoingEmail(_email(notice, delivery.sender, uow.now))))
        return claimed


def _claim_mail(
    open_uow: OpenUnitOfWork, delivery: Delivery
) -> tuple[list[tuple[int, OutgoingEmail]], int]:
    with open_uow() as uow:
        mails, expired = outbox.claim_mail(
            uow, limit=delivery.batch, wall_now=delivery.wall_clock()
        )
        claimed = []
        for mail in mails:
            message = RenderedMessage(mail.subject, mail.body_text or "", mail.body_html or "")
            email = build_email(
                message,
                sender=delivery.sender,
                recipient=mail.address,
                message_id=mail.message_id,
                kind=mail.purpose,
                policy_id=None,
                notice_id=None,
                sent_at=uow.now,
            )
            claimed.append((mail.id, OutgoingEmail(email)))
        return claimed, expired


def _record_mail(
    open_uow: OpenUnitOfWork, delivery: Delivery, outcomes: list[Outcome], stats: DeliveryStats
) -> None:
    with open_uow() as uow:
        mails = _by_id(uow, OutboxMail, outcomes)
        for mail_id, error in outcomes:
            mail = mails[mail_id]
            if error is None:
                mail.status, mail.sent_at, mail.last_error = NoticeStatus.SENT, uow.now, None
                outbox.redact(mail)
                stats.mail += 1
            elif error.permanent or mail.attempts >= delivery.max_attempts:
                mail.status, mail.last_error = NoticeStatus.FAILED, str(error)[:2000]
                outbox.redact(mail)
                stats.failed += 1
            else:
                mail.status, mail.last_error = NoticeStatus.PENDING, str(error)[:2000]
                mail.next_attempt_at = uow.now + timedelta(seconds=backoff_delay(mail.attempts))
                stats.retried += 1


Row = TypeVar("Row", Notice, OutboxMail, OutboxEvent)


def _by_id(uow: UnitOfWork, model: type[Row], outcomes: list[Outcome]) -> dict[int, Row]:
    """The batch's rows, in one query."""
    ids = [row_id for row_id, _ in outcomes]
    rows = {row.id: row for row in uow.session.scalars(select(model).where(one_of(model.id, ids)))}
    assert len(rows) == len(set(ids)), "a claimed row vanished"
    return rows


def _email(notice: Notice, sender: str, now: datetime) -> Message:
    return build_email(
        RenderedMessage(notice.subject or "", notice.body_text or "", notice.body_html or ""),
        sender=sender,
        recipient=notice.address,
        message_id=notice.message_id,
        kind=notice.kind,
        policy_id=notice.policy_id,
        notice_id=notice.id,
        in_reply_to=notice.in_reply_to,
        sent_at=now,
    )


def _record_notices(
    open_uow: OpenUnitOfWork, delivery: Delivery, outcomes: list[Outcome], stats: DeliveryStats
) -> None:
    """Every outcome of a batch and its audit entry, in one transaction."""
    with open_uow() as uow:
        notices = _by_id(uow, Notice, outcomes)
        sent: list[Notice] = []
        for notice_id, error in outcomes:
            notice = notices[notice_id]
            if error is not None:
                _failed(uow, notice, error, delivery, stats)
                continue
            notice.status = NoticeStatus.SENT
            notice.sent_at = uow.now
            notice.last_error = None
            record(
                uow,
                action="notice.sent",
                object_type="notice",
                object_id=str(notice.id),
                after={
                    "kind": notice.kind,
                    "message_id": notice.message_id,
                    "attempts": notice.attempts,
                },
            )
            sent.append(notice)
        corrections_after_late_delivery(uow, sent, delivery.config)
        stats.sent += len(sent)


def _failed(
    uow: UnitOfWork, notice: Notice, exc: DeliveryError, delivery: Delivery, stats: DeliveryStats
) -> None:
    notice.last_error = str(exc)[:2000]
    if exc.permanent or notice.attempts >= delivery.max_attempts:
        notice.status = NoticeStatus.FAILED
        stats.failed += 1
        record(
            uow,
            action="notice.failed",
            object_type="notice",
            object_id=str(notice.id),
            after={"kind": notice.kind, "error": notice.last_error, "attempts": notice.attempts},
        )
    else:
        notice.status = NoticeStatus.PENDING
        notice.next_attempt_at = uow.now + timedelta(seconds=backoff_delay(notice.attempts))
        stats.retried += 1


def _claim_webhooks(open_uow: OpenUnitOfWork, delivery: Delivery) -> list[tuple[int, Send]]:
    """Claim due outbox events; each becomes a call that talks to its receiver (a signed
    webhook, or a mail provider told the device's current decision)."""
    with open_uow() as uow:
        events = outbox.claim_webhooks(uow, limit=delivery.batch, wall_now=delivery.wall_clock())
        return [(event.id, _sender(uow, event, delivery)) for event in events]


def _sender(uow: UnitOfWork, event: OutboxEvent, delivery: Delivery) -> Send:
    def refuse(error: DeliveryError) -> Send:
        def raise_it() -> None:
            raise error

        return raise_it

    if event.event_type.startswith("enforce."):
        if delivery.enforcers is None:
            return refuse(DeliveryError("enforcement is not configured", permanent=True))
        try:
            return prepare(uow, event, delivery.enforcers)
        except DeliveryError as exc:
            return refuse(exc)
    webhook = delivery.webhook
    if webhook is None:
        return refuse(DeliveryError("no webhook channel is configured", permanent=True))
    outgoing = OutgoingWebhook(
        url=event.url, body=orjson.dumps(event.body), event_id=event.event_id
    )
    return lambda: webhook.send(outgoing)


def _record_webhooks(
    open_uow: OpenUnitOfWork, delivery: Delivery, outcomes: list[Outcome], stats: DeliveryStats
) -> None:
    with open_uow() as uow:
        events = _by_id(uow, OutboxEvent, outcomes)
        for event_pk, error in outcomes:
            event = events[event_pk]
            if error is None:
                event.status, event.sent_at, event.last_error = NoticeStatus.SENT, uow.now, None
                stats.webhooks += 1
            elif error.permanent or event.attempts >= delivery.max_attempts:
                event.status, event.last_error = NoticeStatus.FAILED, str(error)[:2000]
                stats.failed += 1
                record(
                    uow,
                    action="webhook.failed",
                    object_type="outbox_event",
                    object_id=event.event_id,
                    after={
                        "url": origin(event.url),  # paths often carry a token
                        "error": event.last_error,
                        "attempts": event.attempts,
                    },
                )
            else:
                event.status, event.last_error = NoticeStatus.PENDING, str(error)[:2000]
                event.next_attempt_at = uow.now + timedelta(seconds=backoff_delay(event.attempts))
                stats.retried += 1


def retry_failed(uow: UnitOfWork, *, notice_ids: list[int] | None = None) -> int:
    """Put failed notices and webhooks back in the queue (`notices retry`)."""
    count = 0
    query = select(Notice).where(Notice.status == NoticeStatus.FAILED)
    if notice_ids:
        query = query.where(Notice.id.in_(notice_ids))
    for notice in uow.session.scalars(query):
        notice.status, notice.attempts, notice.next_attempt_at = NoticeStatus.PENDING, 0, uow.now
        count += 1
    if not notice_ids:
        for event in uow.session.scalars(
            select(OutboxEvent).where(OutboxEvent.status == NoticeStatus.FAILED)
        ):
            event.status, event.attempts, event.next_attempt_at = NoticeStatus.PENDING, 0, uow.now
            count += 1
    record(uow, action="notice.retry", object_type="notice", object_id="*", after={"count": count})
    return count


def delivery_from_settings(settings: Settings, config: NoticeConfig) -> Delivery:
    """Channels from the settings: SMTP when a host is set, else the local maildir (the same
    choice `appwarden worker` makes)."""
    mail: Channel
    if settings.smtp_host:
        mail = SmtpChannel(
            SmtpSettings(
                host=settings.smtp_host,
                port=settings.smtp_port,
                starttls=settings.smtp_starttls,
                ssl=settings.smtp_ssl,
                username=settings.smtp_username,
                password=settings.smtp_password.get_secret_value()
                if settings.smtp_password
                else None,
                sender=settings.smtp_sender,
            )
        )
    else:
        mail = MaildirChannel(settings.maildir)
    webhook = (
        WebhookChannel(settings.webhook_secret.get_secret_value().encode())
        if settings.webhook_url and settings.webhook_secret
        else None
    )
    batch = settings.worker_batch
    if settings.smtp_max_per_minute is not None:
        mail = RateLimited(mail, RateLimiter(settings.smtp_max_per_minute))
        # A batch must go out well within its lease, or another worker would claim it again.
        in_half_a_lease = settings.smtp_max_per_minute * settings.notice_lease_seconds // 120
        batch = max(1, min(batch, in_half_a_lease))
    return Delivery(
        mail=mail,
        webhook=webhook,
        sender=settings.smtp_sender,
        config=config,
        lease=timedelta(seconds=settings.notice_lease_seconds),
        batch=batch,
        max_attempts=settings.max_delivery_attempts,
        enforcers=enforcers_from_settings(settings),
    )
