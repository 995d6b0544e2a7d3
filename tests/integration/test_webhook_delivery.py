"""Signed `decision.changed` webhooks, delivered to a real HTTP server that checks signatures.

The receiver verifies every request with `verify_webhook` and answers 200 or 500 as told. A
failing endpoint is retried with backoff (30 s, then doubling) up to
APPWARDEN_MAX_DELIVERY_ATTEMPTS, then marked failed; `notices retry` queues it again and the next
worker run delivers it, with the same event id throughout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from appwarden.devices.models import Device
from appwarden.identity.models import Person
from appwarden.notifications.channels import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    backoff_delay,
    sign_webhook,
    verify_webhook,
)
from appwarden.notifications.models import OutboxEvent
from appwarden.timeutil import parse_instant

SECRET = b"webhook-test-secret"
MAX_ATTEMPTS = 3
POLICY = "tiktok-mobile-email"
ADMIN = "admin@example.com"
AFTER_DEADLINE = parse_instant("2020-07-11T07:00:00Z")  # past alice's and carol's deadline


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Request:
    event_id: str | None
    verified: bool
    body: dict[str, Any]
    headers: dict[str, str]
    raw: bytes


@dataclass
class Receiver:
    """An HTTP endpoint on loopback: verifies each request and answers according to `mode`
    ("ok" → 200, "fail" → 500, "kill" → SIGKILL `victim` before answering, then 200)."""

    url: str
    secret: bytes
    mode: str = "ok"
    victim: subprocess.Popen | None = None
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self) -> list[Request]:
        with self.lock:
            return list(self.requests)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            target = state["receiver"]
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = dict(self.headers.items())
            verified = verify_webhook(target.secret, headers, raw, now=time.time())
            try:
                body = json.loads(raw)
            except ValueError:
                body = {}
            with target.lock:
                target.requests.append(
                    Request(headers.get(EVENT_ID_HEADER), verified, body, headers, raw)
                )
                mode = target.mode
            if mode == "kill" and target.victim is not None:
                os.kill(target.victim.pid, signal.SIGKILL)  # before any answer
                target.victim = None
            status = 500 if mode == "fail" else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    state["receiver"] = Receiver(f"http://{host}:{port}/hooks/appwarden?token=abc", SECRET)
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield state["receiver"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        assert not thread.is_alive()


@pytest.fixture
def org(cli, store, receiver, monkeypatch, tmp_path):
    """The reference organisation, released, with webhooks on and an admin."""
    for name in ("APPWARDEN_SMTP_HOST", "APPWARDEN_NOTICE_LEASE_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("APPWARDEN_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("APPWARDEN_WEBHOOK_SECRET", SECRET.decode())
    monkeypatch.setenv("APPWARDEN_MAX_DELIVERY_ATTEMPTS", str(MAX_ATTEMPTS))
    monkeypatch.setenv("APPWARDEN_MAILDIR", str(tmp_path / "mail"))
    loaded = cli("demo", "--base-time", "2020-07-10T09:00:00-07:00")
    assert loaded.code == 0, loaded.err
    created = cli("admin", "create", ADMIN, "--role", "admin")
    assert created.code == 0, created.err
    return receiver


def outbox(store) -> list[OutboxEvent]:
    with Session(store.engine) as session:
        return list(session.scalars(select(OutboxEvent).order_by(OutboxEvent.id)))


def owners(store, device_ids: list[int]) -> list[str]:
    with store.engine.connect() as connection:
        rows = dict(
            connection.execute(
                select(Device.id, Person.email)
                .join(Person, Person.id == Device.owner_id)
                .where(Device.id.in_(device_ids))
            ).all()
        )
    return sorted(rows[device_id] for device_id in device_ids)


def worker(cli, at: datetime) -> None:
    result = cli("worker", "--once", "--at", iso(at))
    assert result.code == 0, result.err


def assert_blocks_of_alice_and_carol(store, requests: list[Request]) -> None:
    assert {r.body["type"] for r in requests} == {"decision.changed"}
    assert owners(store, [r.body["device_id"] for r in requests]) == [
        "alice@example.com",
        "carol@example.com",
    ]
    for request in requests:
        assert request.verified, request.headers
        assert request.event_id == request.body["id"]
        assert {k: request.body[k] for k in ("resource", "old", "new", "causes")} == {
            "resource": "email",
            "old": "allow",
            "new": "deny",
            "causes": [POLICY],
        }


def test_decision_changes_arrive_signed(cli, store, org):
    receiver = org
    worker(cli, AFTER_DEADLINE)

    requests = receiver.received()
    assert len(requests) == 2
    assert_blocks_of_alice_and_carol(store, requests)
    assert len({r.event_id for r in requests}) == 2
    rows = outbox(store)
    assert [(e.status, e.attempts) for e in rows] == [("sent", 1), ("sent", 1)]
    assert {e.event_id for e in rows} == {r.event_id for r in requests}

    # What arrived verifies only with the right secret and the body exactly as sent.
    request = requests[0]
    now = time.time()
    assert verify_webhook(SECRET, request.headers, request.raw, now=now)
    assert not verify_webhook(b"another-secret", request.headers, request.raw, now=now)
    tampered = request.raw.replace(b'"deny"', b'"allow"')
    assert tampered != request.raw
    assert not verify_webhook(SECRET, request.headers, tampered, now=now)

    # Delivered once: a later run sends nothing again.
    worker(cli, AFTER_DEADLINE + timedelta(hours=1))
    assert len(receiver.received()) == 2


def test_a_failing_webhook_backs_off_fails_and_is_retried_by_command(cli, store, org):
    receiver = org
    receiver.mode = "fail"
    at = AFTER_DEADLINE
    delays = []
    for attempt in range(1, MAX_ATTEMPTS + 1):
        worker(cli, at)
        rows = outbox(store)
        assert len(rows) == 2
        assert {e.attempts for e in rows} == {attempt}
        assert all("500" in (e.last_error or "") for e in rows)
        assert len(receiver.received()) == 2 * attempt
        if attempt == MAX_ATTEMPTS:
            assert {e.status for e in rows} == {"failed"}
            break
        assert {e.status for e in rows} == {"pending"}
        (next_attempt_at,) = {e.next_attempt_at for e in rows}
        delay = (next_attempt_at - at).total_seconds()
        assert delay == backoff_delay(attempt)
        delays.append(delay)
        # Not before its time: a run a second early does not try again.
        worker(cli, next_attempt_at - timedelta(seconds=1))
        assert len(receiver.received()) == 2 * attempt
        at = next_attempt_at + timedelta(seconds=1)
    assert delays == [30.0, 60.0]

    failed = receiver.received()
    assert_blocks_of_alice_and_carol(store, failed[:2])
    assert all(r.verified for r in failed)
    # Every attempt carried the same event id and the same body.
    assert Counter(r.event_id for r in failed) == Counter(
        {e.event_id: MAX_ATTEMPTS for e in outbox(store)}
    )
    bodies: dict[str | None, dict[str, Any]] = {}
    for request in failed:
        assert bodies.setdefault(request.event_id, request.body) == request.body

    # Failed is final: nothing goes out until someone retries.
    worker(cli, at + timedelta(hours=1))
    assert len(receiver.received()) == 2 * MAX_ATTEMPTS

    at += timedelta(hours=2)
    refused = cli("notices", "retry", "--as", "alice@example.com", "--at", iso(at))
    assert refused.code != 0
    assert {e.status for e in outbox(store)} == {"failed"}

    receiver.mode = "ok"
    retried = cli("notices", "retry", "--as", ADMIN, "--at", iso(at))
    assert retried.code == 0, retried.err
    assert "2 queued again" in retried.err
    rows = outbox(store)
    assert [(e.status, e.attempts) for e in rows] == [("pending", 0), ("pending", 0)]
    worker(cli, at)

    delivered = receiver.received()[2 * MAX_ATTEMPTS :]
    assert len(delivered) == 2
    assert_blocks_of_alice_and_carol(store, delivered)
    assert {r.event_id for r in delivered} == {r.event_id for r in failed}
    rows = outbox(store)
    assert [(e.status, e.attempts, e.last_error) for e in rows] == [
        ("sent", 1, None),
        ("sent", 1, None),
    ]


def test_a_webhook_in_flight_when_the_worker_dies_goes_out_again(store, org, tmp_path):
    receiver = org
    receiver.mode = "kill"
    command = [
        sys.executable,
        "-m",
        "appwarden",
        "--db",
        store.url,
        "worker",
        "--once",
        "--at",
        iso(AFTER_DEADLINE),
    ]
    env = {**os.environ, "APPWARDEN_WORKER_BATCH": "1"}
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        receiver.victim = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        first = receiver.victim
        assert first.wait(timeout=120) == -signal.SIGKILL, log.read_text()
    (in_flight,) = receiver.received()
    assert in_flight.verified
    assert [e.status for e in outbox(store) if e.event_id == in_flight.event_id] == ["sending"]

    receiver.mode = "ok"
    env["APPWARDEN_NOTICE_LEASE_SECONDS"] = "0"
    with log.open("ab") as out:
        second = subprocess.run(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=120, check=False
        )
    assert second.returncode == 0, log.read_text()
    assert {e.status for e in outbox(store)} == {"sent"}
    again = [r for r in receiver.received()[1:] if r.event_id == in_flight.event_id]
    assert len(again) == 1
    assert again[0].verified
    assert again[0].body == in_flight.body


def test_verify_webhook_rejects_tampering_wrong_secret_and_stale_timestamps():
    body = b'{"id":"e1","type":"decision.changed","new":"deny"}'
    now = time.time()
    timestamp = int(now)
    headers = {
        EVENT_ID_HEADER: "e1",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign_webhook(SECRET, timestamp, body),
    }
    assert verify_webhook(SECRET, headers, body, now=now)
    assert verify_webhook(SECRET, {k.lower(): v for k, v in headers.items()}, body, now=now)
    assert not verify_webhook(SECRET, headers, body.replace(b"deny", b"allow"), now=now)
    assert not verify_webhook(SECRET, headers, body + b" ", now=now)
    assert not verify_webhook(b"wrong-secret", headers, body, now=now)
    wrong_signer = {**headers, SIGNATURE_HEADER: sign_webhook(b"wrong-secret", timestamp, body)}
    assert not verify_webhook(SECRET, wrong_signer, body, now=now)
    # The timestamp is signed too: moving it breaks the signature.
    moved = {**headers, TIMESTAMP_HEADER: str(timestamp + 1)}
    assert not verify_webhook(SECRET, moved, body, now=now)
    assert not verify_webhook(SECRET, headers, body, now=now + 301)
    missing = {k: v for k, v in headers.items() if k != SIGNATURE_HEADER}
    assert not verify_webhook(SECRET, missing, body, now=now)
