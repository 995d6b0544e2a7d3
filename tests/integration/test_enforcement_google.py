"""Decisions reach Google Workspace through the outbox: the worker blocks alice's phone after the
deadline and approves it again after the retraction, against a local server speaking the
Directory API (token endpoint and mobiledevices.action)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from appwarden.db.uow import unit_of_work
from appwarden.notifications.models import OutboxEvent
from appwarden.timeutil import parse_instant


@pytest.fixture
def google(tmp_path, monkeypatch):
    calls: list[tuple[str, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path == "/token":
                answer = {"access_token": "ya29.test", "expires_in": 3600, "token_type": "Bearer"}
                self._json(200, answer)
                return
            assert self.headers["Authorization"] == "Bearer ya29.test"
            calls.append((self.path, json.loads(body)))
            self._json(200, {})

        def _json(self, status, payload):
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    account = tmp_path / "service-account.json"
    account.write_text(
        json.dumps(
            {
                "type": "service_account",
                "client_email": "appwarden@example-project.iam.gserviceaccount.com",
                "private_key_id": "k1",
                "private_key": pem,
                "token_uri": f"{base}/token",
            }
        )
    )
    monkeypatch.setenv("APPWARDEN_GOOGLE_SERVICE_ACCOUNT_FILE", str(account))
    monkeypatch.setenv("APPWARDEN_GOOGLE_ADMIN_SUBJECT", "admin@example.com")
    monkeypatch.setenv("APPWARDEN_GOOGLE_API_BASE", base)
    monkeypatch.setenv("APPWARDEN_MAILDIR", str(tmp_path / "mail"))
    yield calls
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_block_after_the_deadline_and_approve_after_the_retraction(
    cli, store, google, tmp_path, demo
):
    known = tmp_path / "google.json"
    known.write_text(
        json.dumps(
            {
                "format": "appwarden.inventory/v1",
                "source": "google-workspace",
                "devices": [
                    {
                        "identifiers": [
                            {"namespace": "udid", "value": "00008110-000A1B2C3D4E801E"},
                            {"namespace": "google_resource_id", "value": "AFiQxQ8-alice"},
                        ]
                    }
                ],
            }
        )
    )
    assert cli("import", "native", str(known), "--at", "2020-07-10T10:00:00-07:00").code == 0

    assert cli("worker", "--once", "--at", "2020-07-11T12:00:00-07:00").code == 0
    action = "/admin/directory/v1/customer/my_customer/devices/mobile/AFiQxQ8-alice/action"
    assert google == [(action, {"action": "block"})]
    with unit_of_work(
        store.engine, now=parse_instant("2020-07-11T12:00:00-07:00"), write=False
    ) as uow:
        statuses = sorted(
            (e.event_type, e.status, e.last_error) for e in uow.session.scalars(select(OutboxEvent))
        )
    # carol's phone is unknown to Google: recorded as a permanent failure, not retried forever.
    assert statuses == [
        ("enforce.google", "failed", "the device has no google_resource_id"),
        ("enforce.google", "sent", None),
    ]

    retracted = cli(
        "policy",
        "retract",
        "tiktok-mobile-email",
        "--message",
        "Sent in error.",
        "--as",
        "security.lead@example.com",
        "--at",
        "2020-07-11T13:00:00-07:00",
    )
    assert retracted.code == 0, retracted.err
    assert cli("worker", "--once", "--at", "2020-07-11T13:01:00-07:00").code == 0
    assert google[-1] == (action, {"action": "approve"})
