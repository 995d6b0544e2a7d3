"""DELIVERY: N announcements through the worker's delivery to a local SMTP server, against a raw
smtplib loop sending the same pre-rendered messages over one connection, in the same run.

A scratch store holds the reference organisation (`appwarden demo`, memo released); its first
`announce` notice gives the subject and bodies every queued announcement carries (a real rendered
memo, not a stub). N people each get one pending `announce` notice (quick: fewer), then
`deliver_due` runs exactly as a worker pass runs it (`wiring.Services` units of work, so each
batch's audit entries are chained), with the channels `appwarden worker` builds from its settings:
SMTP to an aiosmtpd server in its own process, the rate limit unset (raised: no limit of
appwarden's own), batches of `APPWARDEN_WORKER_BATCH`. Measured: messages/s from the first claim
to the last commit; every notice must end `sent` and the server must have received every
Message-ID exactly once. **Bar: ≥ 100 messages/s.**

The baseline sends the same messages (built once, serialised to bytes before the clock starts)
with `smtplib.SMTP.sendmail` over one connection to the same server. Diagnostics: the same
delivery with other batch sizes (1 is the old per-message shape: a claim and a commit per
message).
"""

from __future__ import annotations

import io
import re
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.generator import BytesGenerator
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bench.fleet import BASE_TIME, run_cli, scratch_store, store_version

Note = Callable[[str], None]
Advance = Callable[[int], None]

DELIVER_AT = "2020-07-10T10:00:00-07:00"  # after the memo's release: the demo's notices are due
SENDER = "it-security@bench.example.com"
BAR_MESSAGES_PER_SECOND = 100.0
_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)

# The SMTP server, run as `python -c SINK PORT OUT`: keeps each message's Message-ID, writes them
# (one a line) to OUT when told to stop (SIGTERM). Its own process, so the sender and the server
# do not share an interpreter lock.
SINK = r"""
import asyncio, re, signal, sys
from aiosmtpd.controller import Controller

port, out = int(sys.argv[1]), sys.argv[2]
pattern = re.compile(rb"^Message-ID:\s*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)
received = []

class Keep:
    async def handle_DATA(self, server, session, envelope):
        found = pattern.search(envelope.original_content or envelope.content)
        received.append(found.group(1).decode() if found else "")
        return "250 OK"

controller = Controller(Keep(), hostname="127.0.0.1", port=port)
controller.start()
def stop(*_):
    controller.stop()
    with open(out, "w") as handle:
        handle.write("\n".join(received))
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
signal.pause()
"""


@dataclass(frozen=True)
class Params:
    notices: int
    batch: int  # APPWARDEN_WORKER_BATCH's default
    diagnostic_batches: tuple[int, ...]
    diagnostic_notices: int  # fewer: a batch of 1 takes a claim and a commit per message

    @classmethod
    def of(cls, *, quick: bool) -> Params:
        if quick:
            return cls(500, 50, diagnostic_batches=(1, 10), diagnostic_notices=200)
        return cls(5_000, 50, diagnostic_batches=(1, 10, 200), diagnostic_notices=1_000)


@dataclass
class Sink:
    port: int
    process: subprocess.Popen[bytes]
    out: Path

    def received(self) -> list[str]:
        """Stop the server; the Message-IDs it received, in order."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        text = self.out.read_text()
        return text.split("\n") if text else []


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def smtp_sink(workdir: Path, name: str) -> Iterator[Sink]:
    """A fresh aiosmtpd server in its own process, up when this yields."""
    port = _free_port()
    out = workdir / f"{name}.received"
    process = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "-c", SINK, str(port), str(out)], stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("bench: the local SMTP server did not start") from None
                time.sleep(0.05)
        yield Sink(port, process, out)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def _settings(url: str, workdir: Path, port: int, batch: int) -> Any:
    from appwarden.settings import Settings

    return Settings(
        env="test",
        database_url=url,
        maildir=workdir / "mail",
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_sender=SENDER,
        worker_batch=batch,
    )


def _queue(url: str, count: int, tag: str) -> list[str]:
    """`count` pending announcements to new people, carrying the demo's first announcement's
    subject and bodies; their Message-IDs."""
    from appwarden.db.engine import make_engine
    from appwarden.db.uow import unit_of_work
    from appwarden.identity.models import Person
    from appwarden.notifications import service
    from appwarden.notifications.models import Notice
    from appwarden.timeutil import parse_instant

    at = parse_instant(DELIVER_AT)
    engine = make_engine(url)
    try:
        with unit_of_work(engine, now=at) as uow:
            model = uow.session.scalars(
                select(Notice).where(Notice.kind == "announce").order_by(Notice.id).limit(1)
            ).one()
            rendered = service.Rendered(
                model.subject or "", model.body_text or "", model.body_html or ""
            )
            people = [
                Person(email=f"{tag}{i:06d}@bench.example.com", status="active", created_at=at)
                for i in range(count)
            ]
            uow.session.add_all(people)
            uow.session.flush()
            ids = []
            for person in people:
                notice = service.enqueue(
                    uow,
                    person_id=person.id,
                    address=person.email,
                    policy_id=model.policy_id,
                    version_id=model.version_id,
                    kind="announce",
                    due_slot=f"bench-{tag}",
                    due_at=at,
                    rendered=rendered,
                    domain="bench.example.com",
                )
                assert notice is not None
                ids.append(notice.message_id)
            return ids
    finally:
        engine.dispose()


def _deliver(url: str, workdir: Path, sink: Sink, batch: int) -> tuple[float, int]:
    """Seconds for `deliver_due` to drain the queue, as a worker pass runs it; notices sent."""
    from appwarden.db.engine import make_engine
    from appwarden.timeutil import parse_instant
    from appwarden.usecases.deliver import deliver_due, delivery_from_settings
    from appwarden.wiring import Services

    settings = _settings(url, workdir, sink.port, batch)
    engine = make_engine(url)
    services = Services(settings, engine)
    delivery = delivery_from_settings(settings, services.notice_config)
    at = parse_instant(DELIVER_AT)
    try:
        started = time.perf_counter()
        stats = deliver_due(partial(services.uow, at), delivery)
        seconds = time.perf_counter() - started
    finally:
        delivery.close()
        engine.dispose()
    return seconds, stats.sent


def _prerendered(url: str, message_ids: list[str]) -> list[tuple[str, bytes]]:
    """(recipient, message bytes) of the queued notices, built as delivery builds them."""
    from appwarden.db.engine import make_engine
    from appwarden.notifications.messages import RenderedMessage, build_email
    from appwarden.notifications.models import Notice
    from appwarden.timeutil import parse_instant

    at = parse_instant(DELIVER_AT)
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            rows = list(
                session.scalars(
                    select(Notice).where(Notice.message_id.in_(message_ids)).order_by(Notice.id)
                )
            )
    finally:
        engine.dispose()
    built = []
    for row in rows:
        message = build_email(
            RenderedMessage(row.subject or "", row.body_text or "", row.body_html or ""),
            sender=SENDER,
            recipient=row.address,
            message_id=row.message_id,
            kind=row.kind,
            policy_id=row.policy_id,
            notice_id=row.id,
            sent_at=at,
        )
        with io.BytesIO() as data:  # serialised as smtplib's send_message does
            BytesGenerator(data).flatten(message, linesep="\r\n")
            built.append((row.address, data.getvalue()))
    return built


def _raw_smtplib(messages: list[tuple[str, bytes]], port: int) -> float:
    """Seconds to send pre-rendered messages over one smtplib connection."""
    started = time.perf_counter()
    client = smtplib.SMTP("127.0.0.1", port, timeout=30)
    try:
        client.ehlo()
        for recipient, data in messages:
            client.sendmail(SENDER, [recipient], data)
    finally:
        client.quit()
    return time.perf_counter() - started


def _count_status(url: str, message_ids: list[str]) -> dict[str, int]:
    from sqlalchemy import func

    from appwarden.db.engine import make_engine
    from appwarden.notifications.models import Notice

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(Notice.status, func.count())
                .where(Notice.message_id.in_(message_ids))
                .group_by(Notice.status)
            ).all()
            return {str(status): int(count) for status, count in rows}
    finally:
        engine.dispose()


def _one_run(url: str, workdir: Path, notices: int, batch: int, tag: str) -> dict[str, Any]:
    """Queue `notices` announcements and deliver them with batches of `batch`."""
    expected = _queue(url, notices, tag)
    with smtp_sink(workdir, tag) as sink:
        seconds, sent = _deliver(url, workdir, sink, batch)
        received = sink.received()
    statuses = _count_status(url, expected)
    exactly_once = sorted(received) == sorted(expected)
    return {
        "batch": batch,
        "notices": len(expected),
        "seconds": round(seconds, 3),
        "messages_per_second": round(len(expected) / seconds, 1),
        "ms_per_message": round(1000 * seconds / len(expected), 3),
        "sent": sent,
        "statuses": statuses,
        "received": len(received),
        "every_message_id_once": exactly_once,
        "_expected": expected,
    }


def run(db: str | None, params: Params, note: Note, advance: Advance) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="appwarden-delivery-") as tmp:
        workdir = Path(tmp)
        with scratch_store(db, workdir) as (url, backend):
            note("loading the reference organisation")
            run_cli(url, workdir, "demo", "--base-time", BASE_TIME)
            version = store_version(url)
            note("warm-up: the reference organisation's own notices")
            with smtp_sink(workdir, "warm-up") as sink:
                _deliver(url, workdir, sink, params.batch)
                sink.received()
            note(f"delivering {params.notices:,} announcements, batches of {params.batch}")
            measured = _one_run(url, workdir, params.notices, params.batch, "main")
            advance(1)
            note("raw smtplib over one connection, the same messages")
            messages = _prerendered(url, measured.pop("_expected"))
            with smtp_sink(workdir, "raw") as sink:
                raw_seconds = _raw_smtplib(messages, sink.port)
                raw_received = sink.received()
            advance(1)
            diagnostics = []
            for batch in params.diagnostic_batches:
                note(f"diagnostic: batches of {batch}")
                diagnostic = _one_run(url, workdir, params.diagnostic_notices, batch, f"b{batch}")
                diagnostic.pop("_expected")
                diagnostics.append(diagnostic)
                advance(1)
    raw_rate = len(messages) / raw_seconds
    return _result(
        params,
        backend,
        version,
        measured,
        raw_seconds,
        raw_rate,
        raw_received,
        messages,
        diagnostics,
    )


def _result(
    params: Params,
    backend: str,
    version: str,
    measured: dict[str, Any],
    raw_seconds: float,
    raw_rate: float,
    raw_received: list[str],
    messages: list[tuple[str, bytes]],
    diagnostics: list[dict[str, Any]],
) -> dict[str, Any]:
    rate = float(measured["messages_per_second"])
    delivered = bool(
        measured["every_message_id_once"] and measured["statuses"] == {"sent": params.notices}
    )
    raw_ok = len(raw_received) == len(messages)
    return {
        "workload": "DELIVERY",
        "what": f"deliver_due of {params.notices:,} announcements to a local SMTP server, "
        f"batches of {params.batch}, no rate limit of appwarden's own",
        "baseline": "smtplib sendmail of the same pre-rendered messages over one connection",
        "parameters": {
            "notices": params.notices,
            "batch": params.batch,
            "backend": backend,
            "store": version,
            "smtp_server": "aiosmtpd, its own process, 127.0.0.1",
        },
        "measured": {
            **measured,
            "raw_seconds": round(raw_seconds, 3),
            "raw_messages_per_second": round(raw_rate, 1),
            "raw_received": len(raw_received),
            "ratio": round(rate / raw_rate, 4),
            "mean_message_bytes": round(sum(len(m) for _, m in messages) / max(len(messages), 1)),
        },
        "diagnostics": {"other_batch_sizes": diagnostics},
        "bars": {
            "messages_per_second": {
                "bar": f">= {BAR_MESSAGES_PER_SECOND:g} messages/s",
                "value": rate,
                "pass": rate >= BAR_MESSAGES_PER_SECOND,
            },
            "delivered": {
                "bar": "every notice sent, every Message-ID received exactly once",
                "value": delivered,
                "pass": delivered and raw_ok,
            },
        },
        "pass": rate >= BAR_MESSAGES_PER_SECOND and delivered and raw_ok,
    }
