"""The forward-auth gate behind a real Caddy (`forward_auth`), in front of a stub mail server, with
the reference organisation and a clock the test moves (APPWARDEN_CLOCK=file:…): before the
deadline alice's phone gets mail; after it alice and carol are refused with the gate's
problem+json reaching the client, in the plain and the base64 ActiveSync form, while bob's
compliant phone still gets mail; the mail server receives only the allowed requests; and a
client's own X-Original-URI cannot make appwarden judge another request than the real one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.caddy_harness import start_caddy
from tests.eas_requests import ALICE, BOB, CAROL, base64, plain
from tests.proxy_harness import Upstream, serve_app, start_upstream

from appwarden.settings import Settings
from appwarden.web.app import create_app

KEY = "caddy-gate-test-proxy-key-0123456789abcdef"
BEFORE = "2020-07-10T12:00:00-07:00"
AFTER = "2020-07-11T12:00:00-07:00"  # past the memo's deadline
PORTAL = "https://appwarden.example.com/me/"


@dataclass
class Gate:
    client: httpx.Client  # talks to Caddy
    upstream: Upstream
    clock: Path


@pytest.fixture
def clock(tmp_path: Path) -> Path:
    path = tmp_path / "clock"
    path.write_text(BEFORE)
    return path


@pytest.fixture
def settings(store, clock: Path, tmp_path: Path) -> Settings:
    """The application's settings for this module: the one place to say how the gate is run."""
    return Settings(
        database_url=store.url,
        env="test",
        clock=f"file:{clock}",
        gate_proxy_key=KEY,
        public_url="https://appwarden.example.com",
        maildir=tmp_path / "mail",
        gate_proxy="caddy",
    )


@pytest.fixture
def gate(settings: Settings, clock: Path, tmp_path: Path, demo) -> Iterator[Gate]:
    with (
        serve_app(create_app(settings)) as port,
        start_upstream() as upstream,
        start_caddy(tmp_path, upstream.port, port, KEY) as caddy,
        httpx.Client(base_url=caddy.url, timeout=10) as client,
    ):
        yield Gate(client=client, upstream=upstream, clock=clock)


def test_mail_access_follows_the_policy_through_caddy(gate: Gate) -> None:
    client, upstream = gate.client, gate.upstream

    before = client.post(plain("alice", ALICE), content=b"wbxml")
    assert before.status_code == 200, before.text
    assert before.text == "mail upstream"
    [reached] = upstream.requests
    assert reached.path == plain("alice", ALICE)
    assert reached.body == b"wbxml"
    assert reached.headers["x-appwarden-device"] == f"eas_device_id:{ALICE}"
    assert "x-appwarden-proxy-key" not in reached.headers

    gate.clock.write_text(AFTER)
    for form in (plain, base64):
        for user, device in (("alice", ALICE), ("carol", CAROL)):
            refused = client.post(form(user, device), content=b"wbxml")
            assert refused.status_code == 403, (form.__name__, user)
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["policies"] == ["tiktok-mobile-email"]
            assert refused.json()["portal_url"] == PORTAL
        allowed = client.post(form("bob", BOB), content=b"wbxml")
        assert allowed.status_code == 200, (form.__name__, allowed.text)
    assert client.get(plain("bob", ALICE)).status_code == 403  # not alice's phone's owner

    # the mail server saw alice before the deadline and bob's phone in both forms, nothing else
    assert [request.path for request in upstream.requests] == [
        plain("alice", ALICE),
        plain("bob", BOB),
        base64("bob", BOB),
    ]
    assert [request.headers["x-appwarden-device"] for request in upstream.requests[1:]] == [
        f"eas_device_id:{BOB}"
    ] * 2


def test_a_client_cannot_name_another_request_to_appwarden(gate: Gate) -> None:
    """appwarden reads X-Original-URI before X-Forwarded-Uri: Caddy must not hand it the
    client's, or alice's blocked phone would be judged as bob's compliant one."""
    gate.clock.write_text(AFTER)
    forged = {
        "X-Original-URI": plain("bob", BOB),
        "X-Forwarded-Uri": plain("bob", BOB),
        "X-Appwarden-Device": f"eas_device_id:{BOB}",
        "X-Appwarden-Proxy-Key": "guess",
    }
    refused = gate.client.post(plain("alice", ALICE), headers=forged)
    assert refused.status_code == 403
    assert refused.json()["policies"] == ["tiktok-mobile-email"]
    assert gate.upstream.requests == []
