"""A worker killed mid-batch, restarted: every notice arrives, duplicates keep their Message-ID
and come only from the batch that was in flight.

1,000 notices are queued; a real `appwarden worker --once` subprocess sends them to a real SMTP
server (aiosmtpd) in this process, in batches of 50 (APPWARDEN_WORKER_BATCH): claim 50, send them,
record the 50 outcomes in one transaction. When the server has received the 275th message, half-way
through the sixth batch, it SIGKILLs the worker before answering "250 OK": messages 251-275 were
received but not recorded as sent, 276-300 were claimed but never sent. The worker is restarted with
a zero lease; the server must then have seen exactly the 1,000 expected Message-IDs, each duplicate
under the same Message-ID as its original, duplicates only among the killed batch's messages the
server had received, and the batches committed before the kill sent exactly once.
"""

from __future__ import annotations

import email.parser
import email.policy
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from tests.proxy_harness import free_port

from appwarden.db.uow import unit_of_work
from appwarden.identity.models import Person
from appwarden.notifications import service
from appwarden.notifications.models import Notice
from appwarden.policies.models import Policy

pytestmark = pytest.mark.slow  # two worker runs over 1,000 real SMTP messages

NOTICES = 1_000
BATCH = 50  # APPWARDEN_WORKER_BATCH: claimed, sent and recorded together
KILL_AT = 5 * BATCH + BATCH // 2  # the SMTP server kills the worker mid-way through batch 6
POLICY_ID = "crash-test"
DOMAIN = "test.local"
WAIT_SECONDS = 120


@dataclass
class KillingSmtpServer:
    """A real SMTP server that keeps (Message-ID, To) of every message it accepted and, when the
    `kill_at`-th arrives, SIGKILLs `victim` before answering."""

    host: str
    port: int
    kill_at: int
    received: list[tuple[str, str]] = field(default_factory=list)
    victim: subprocess.Popen | None = None
    killed_after: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[tuple[str, str]]:
        with self.lock:
            return list(self.received)


@pytest.fixture
def killing_smtp() -> Iterator[KillingSmtpServer]:
    from aiosmtpd.controller import Controller

    port = free_port()
    server = KillingSmtpServer("127.0.0.1", port, KILL_AT)
    parser = email.parser.BytesHeaderParser(policy=email.policy.default)

    class KillAt:
        async def handle_DATA(self, smtp, session, envelope):  # noqa: N802 - aiosmtpd's name
            headers = parser.parsebytes(envelope.content)
            with server.lock:
                server.received.append((str(headers["Message-ID"]).strip(), str(headers["To"])))
                count = len(server.received)
            if count == server.kill_at and server.victim is not None:
                # The reply has not been written yet: the worker cannot learn this one arrived.
                os.kill(server.victim.pid, signal.SIGKILL)
                server.victim, server.killed_after = None, count
            return "250 OK"

    controller = Controller(KillAt(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


def seed(store, at: datetime) -> dict[str, str]:
    """NOTICES pending announce notices due at `at`; returns address -> expected Message-ID."""
    rendered = service.Rendered(
        "Action required: crash test", "Please read this.", "<p>Please read this.</p>"
    )
    with unit_of_work(store.engine, now=at) as uow:
        uow.session.add(Policy(id=POLICY_ID, title="Crash test", created_at=at))
        people = [
            Person(email=f"p{i}@example.com", status="active", created_at=at)
            for i in range(NOTICES)
        ]
        uow.session.add_all(people)
        uow.session.flush()
        expected = {}
        for person in people:
            notice = service.enqueue(
                uow,
                person_id=person.id,
                address=person.email,
                policy_id=POLICY_ID,
                version_id=None,
                kind="announce",
                due_slot="announce",
                due_at=at,
                rendered=rendered,
                domain=DOMAIN,
            )
            assert notice is not None
            expected[person.email] = notice.message_id
    assert len(set(expected.values())) == NOTICES
    return expected


def statuses(store) -> Counter:
    with store.engine.connect() as connection:
        return Counter(
            dict(
                connection.execute(
                    select(Notice.status, func.count()).group_by(Notice.status)
                ).all()
            )
        )


def message_ids(store, status: str) -> set[str]:
    with store.engine.connect() as connection:
        return set(
            connection.scalars(select(Notice.message_id).where(Notice.status == status)).all()
        )


def wait(process: subprocess.Popen, log: Path) -> int:
    try:
        return process.wait(timeout=WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
        pytest.fail(f"the worker did not finish in {WAIT_SECONDS}s:\n{log.read_text()}")


def test_a_killed_worker_loses_nothing_and_duplicates_keep_their_message_id(
    store, killing_smtp, tmp_path, record_property
):
    at = datetime.now(UTC).replace(microsecond=0)
    expected = seed(store, at)
    store.engine.dispose()  # the workers are alone on the database

    env = {k: v for k, v in os.environ.items() if not k.startswith("APPWARDEN_")}
    env |= {
        "APPWARDEN_SMTP_HOST": killing_smtp.host,
        "APPWARDEN_SMTP_PORT": str(killing_smtp.port),
        "APPWARDEN_SMTP_SENDER": "it-security@example.com",
        "APPWARDEN_MAILDIR": str(tmp_path / "mail"),
        "APPWARDEN_WORKER_BATCH": str(BATCH),
    }
    command = [
        sys.executable,
        "-m",
        "appwarden",
        "--db",
        store.url,
        "worker",
        "--once",
        "--at",
        at.isoformat().replace("+00:00", "Z"),
    ]

    # First run: killed by the SMTP server when message KILL_AT arrives.
    first_log = tmp_path / "worker-1.log"
    started = time.monotonic()
    with first_log.open("wb") as log:
        killing_smtp.victim = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        first = killing_smtp.victim
        code = wait(first, first_log)
    first_seconds = time.monotonic() - started
    assert code == -signal.SIGKILL, f"exit {code}:\n{first_log.read_text()}"
    assert killing_smtp.killed_after == KILL_AT

    received_before = killing_smtp.snapshot()
    assert len(received_before) == KILL_AT
    in_flight_id = received_before[-1][0]
    recorded = message_ids(store, "sent")
    claimed = message_ids(store, "sending")  # the batch the worker died in
    in_flight = {message_id for message_id, _ in received_before} - recorded
    after_crash = statuses(store)
    assert in_flight_id in in_flight  # received by the server, not recorded as sent
    # Whole batches were recorded before the kill, in one transaction each; the killed batch is
    # claimed in full, and what the server received of it is exactly what was not recorded.
    assert recorded == {message_id for message_id, _ in received_before[: KILL_AT - BATCH // 2]}
    assert len(claimed) == BATCH
    assert in_flight == {message_id for message_id, _ in received_before[-(BATCH // 2) :]}
    assert in_flight <= claimed
    assert sum(after_crash.values()) == NOTICES

    # Restart with a zero lease: the dead worker's claims go back to pending at once.
    second_log = tmp_path / "worker-2.log"
    started = time.monotonic()
    with second_log.open("wb") as log:
        second = subprocess.Popen(
            command,
            env=env | {"APPWARDEN_NOTICE_LEASE_SECONDS": "0"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        code = wait(second, second_log)
    second_seconds = time.monotonic() - started
    assert code == 0, second_log.read_text()

    received = killing_smtp.snapshot()
    ids = [message_id for message_id, _ in received]
    assert set(ids) == set(expected.values())
    assert all(message_id in set(expected.values()) for message_id in ids)
    # A duplicate is a second message to the same person: it carries the original's Message-ID.
    for message_id, to in received:
        assert message_id == expected[to], f"{to} got {message_id}, expected {expected[to]}"
    duplicates = len(ids) - len(set(ids))
    duplicated = {m for m, n in Counter(ids).items() if n > 1}
    # Duplicates only for the batch in flight: what it had sent goes out once more, nothing else.
    assert duplicated == in_flight
    assert max(Counter(ids).values()) == 2
    assert duplicates == len(in_flight) == BATCH // 2
    assert statuses(store) == Counter({"sent": NOTICES})
    with store.engine.connect() as connection:
        resent = connection.scalars(
            select(Notice.message_id).where(Notice.attempts > 1).order_by(Notice.id)
        ).all()
    assert duplicated <= set(resent)

    record_property("duplicates", duplicates)
    record_property("first_run_seconds", round(first_seconds, 2))
    record_property("restart_seconds", round(second_seconds, 2))
    print(
        f"\n[{store.backend}] {NOTICES} notices, worker killed at message {KILL_AT} "
        f"after {first_seconds:.1f}s, restart took {second_seconds:.1f}s: "
        f"{len(ids)} messages received, {duplicates} duplicate(s) "
        f"(batches of {BATCH})"
    )
