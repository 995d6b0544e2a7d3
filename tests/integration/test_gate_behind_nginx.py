"""The forward-auth gate behind a real nginx, in front of a stub mail server, with the reference
organisation and a clock the test moves (APPWARDEN_CLOCK=file:…): before the deadline alice's
phone gets mail; after it alice and carol are refused; the first request after alice's clean
inventory POST returned is let through; a retraction lets carol back in; the base64 ActiveSync
form gets the same answers; another user on alice's phone and a new phone of carol's are refused.
"""

from __future__ import annotations

import time
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.eas_requests import ALICE, CAROL, base64, plain
from tests.nginx_harness import start_nginx
from tests.proxy_harness import serve_app, start_upstream

from appwarden.db.uow import unit_of_work
from appwarden.identity.tokens import create_token
from appwarden.settings import Settings
from appwarden.timeutil import parse_instant
from appwarden.web.app import create_app

KEY = "gate-test-proxy-key-0123456789abcdef"


@pytest.fixture
def gate(store, tmp_path: Path, demo) -> Iterator[dict]:
    clock = tmp_path / "clock"
    clock.write_text("2020-07-10T12:00:00-07:00")
    settings = Settings(
        database_url=store.url,
        env="test",
        clock=f"file:{clock}",
        gate_proxy_key=KEY,
        public_url="https://appwarden.example.com",
        maildir=tmp_path / "mail",
        gate_proxy="nginx",
        gate_user_header="X-Forwarded-User",
    )
    with unit_of_work(store.engine, now=parse_instant("2020-07-10T12:00:00-07:00")) as uow:
        _, secret = create_token(uow, "mdm-push", ["inventory:write"], source="mdm-export")
    with (
        serve_app(create_app(settings)) as port,
        start_upstream() as upstream,
        start_nginx(tmp_path, upstream.port, port, KEY) as nginx,
        httpx.Client(base_url=nginx.url, timeout=10) as client,
    ):
        yield {
            "client": client,
            "upstream": upstream,
            "clock": clock,
            "api": f"http://127.0.0.1:{port}",
            "token": secret,
            "backend": store.backend,
        }


def test_mail_access_follows_the_policy(gate, cli):
    client, upstream, clock = gate["client"], gate["upstream"], gate["clock"]

    before = client.get(plain("alice", ALICE))
    assert before.status_code == 200
    assert before.text == "mail upstream"
    assert upstream.requests[-1].headers.get("x-appwarden-device") == f"eas_device_id:{ALICE}"

    clock.write_text("2020-07-11T12:00:00-07:00")  # past the deadline
    for form in (plain, base64):
        for user, device in (("alice", ALICE), ("carol", CAROL)):
            refused = client.get(form(user, device))
            assert refused.status_code == 403, (form.__name__, user)
            assert refused.json()["policies"] == ["tiktok-mobile-email"]
            assert refused.json()["portal_url"] == "https://appwarden.example.com/me/"
    assert client.get(plain("bob", ALICE)).status_code == 403  # not alice's phone's owner
    signed_in = {"Authorization": "Basic " + b64encode(b"EXAMPLE\\carol:secret").decode()}
    new_phone = plain("carol", "NEWPHONE0000000000000000000000001")
    assert (
        client.get(new_phone, headers=signed_in).status_code == 403
    )  # a new DeviceId while blocked
    seen = len(upstream.requests)

    # Alice removes TikTok: her inventory is pushed, and the very next request is let through.
    clean = {
        "format": "appwarden.inventory/v1",
        "source": "mdm-export",
        "devices": [
            {
                "identifiers": [{"namespace": "udid", "value": "00008110-000A1B2C3D4E801E"}],
                "report": {
                    "evidence_kind": "inventory",
                    "observed_at": "2020-07-11T11:59:00-07:00",
                    "apps": [
                        {"namespace": "apple_bundle_id", "value": "com.microsoft.Office.Outlook"}
                    ],
                },
            }
        ],
    }
    pushed = httpx.post(
        f"{gate['api']}/v1/inventory",
        json=clean,
        headers={"Authorization": f"Bearer {gate['token']}"},
    )
    assert pushed.status_code == 200, pushed.text
    assert client.get(plain("alice", ALICE)).status_code == 200
    assert client.get(base64("alice", ALICE)).status_code == 200
    assert client.get(plain("carol", CAROL)).status_code == 403
    assert len(upstream.requests) == seen + 2

    # The memo was sent in error: retracting it lets carol back in.
    retracted = cli(
        "policy",
        "retract",
        "tiktok-mobile-email",
        "--message",
        "Sent in error.",
        "--as",
        "security.lead@example.com",
        "--at",
        "2020-07-11T12:00:00-07:00",
    )
    assert retracted.code == 0, retracted.err
    # The CLI is another writer than the server: SQLite's data_version tells the server before
    # its next answer; PostgreSQL's NOTIFY travels on its own connection, which may take up to a
    # second (docs/architecture.md, how the gate stays current; benchmark W6).
    allowed = client.get(plain("carol", CAROL)).status_code == 200
    if gate["backend"] == "postgresql":
        deadline = time.monotonic() + 1.0
        while not allowed and time.monotonic() < deadline:
            time.sleep(0.01)
            allowed = client.get(plain("carol", CAROL)).status_code == 200
    assert allowed


def test_the_gate_refuses_a_caller_without_the_proxy_key(gate):
    refused = httpx.get(
        f"{gate['api']}/gate/forward",
        headers={"X-Original-URI": plain("alice", ALICE)},
    )
    assert refused.status_code == 401
    wrong = httpx.get(
        f"{gate['api']}/gate/forward",
        headers={"X-Original-URI": plain("alice", ALICE), "X-Appwarden-Proxy-Key": "nope"},
    )
    assert wrong.status_code == 401
