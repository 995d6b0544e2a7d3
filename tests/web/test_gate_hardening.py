"""The gate's ways in that an attack on the running server found, each closed as a class:
Envoy's raw path read through the ASGI application exactly as Envoy sends it; a proxy key that
is short or empty refuses to start; loopback trust judged on the socket's peer, never on
forwarded headers; a doubled credential or proxy header refused; report mode; metric labels from
a closed set; and what the store said it does not know, remembered (the store path's bounds:
tests/web/test_gate_store_path.py)."""

from __future__ import annotations

import asyncio
import base64
import logging
from pathlib import Path

import pytest
import uvicorn
from starlette.testclient import TestClient
from tests.conftest import wait_until_current

from appwarden.cli.main import run
from appwarden.settings import Settings
from appwarden.timeutil import parse_instant
from appwarden.usecases.gate import IndexFacts, NeedStore
from appwarden.web.app import SERVER_OPTIONS, create_app
from appwarden.web.gate import GateMisconfigured, Pacer

KEY = "hardening-test-proxy-key-0123456789abcdef"
EAS = "/Microsoft-Server-ActiveSync"
CAROL = "CA201C0FFEE0000000000000000A2210"
BOB = "B0B0A1D2E3F4A5B6C7D8E9F0A1B2C3D4"
AFTER = "2020-07-11T12:00:00-07:00"


def settings_for(store, tmp_path: Path, **extra) -> Settings:
    values = {
        "database_url": store.url,
        "env": "test",
        "clock": f"fixed:{AFTER}",
        "gate_proxy_key": KEY,
        "maildir": tmp_path / "mail",
        **extra,
    }
    return Settings(**values)


def basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:pw".encode()).decode()


def test_envoy_raw_path_is_read_as_envoy_sends_it(store, demo, tmp_path):
    app = create_app(settings_for(store, tmp_path, gate_proxy="envoy"))
    key = {"X-Appwarden-Proxy-Key": KEY}
    query = f"Cmd=Sync&User=carol&DeviceId={CAROL}&DeviceType=x"
    with TestClient(app) as client:
        # the original path and query after /gate/forward, percent-encoding untouched
        assert client.get(f"/gate/forward{EAS}?{query}", headers=key).status_code == 403
        bob = f"/gate/forward{EAS}?Cmd=Sync&DeviceId={BOB}&DeviceType=x"
        assert client.get(bob, headers=key).status_code == 200
        # %252e%252e is "%2e%2e" to the mail server, no dot segment: still ActiveSync, still denied
        sneaky = f"/gate/forward{EAS}/%252e%252e/owa/?{query}"
        assert client.get(sneaky, headers=key).status_code == 403
        # a client's X-Original-URI is not Envoy's: never read
        forged = {**key, "X-Original-URI": "/owa/"}
        assert client.get(f"/gate/forward{EAS}?{query}", headers=forged).status_code == 403
        assert client.options(f"/gate/forward{EAS}", headers=key).status_code == 200


@pytest.mark.parametrize("key", ["", "short", "x" * 31])
def test_a_short_or_empty_proxy_key_refuses_to_start(store, tmp_path, key, monkeypatch, capsys):
    with pytest.raises(GateMisconfigured, match="at least 32"):
        create_app(settings_for(store, tmp_path, gate_proxy_key=key))
    monkeypatch.setenv("APPWARDEN_DATABASE_URL", store.url)
    monkeypatch.setenv("APPWARDEN_GATE_PROXY_KEY", key)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("started"))
    assert run(["serve"]) == 2
    assert "APPWARDEN_GATE_PROXY_KEY" in capsys.readouterr().err


def test_webmail_by_person_needs_a_user_header(store, tmp_path):
    with pytest.raises(GateMisconfigured, match="USER_HEADER"):
        create_app(settings_for(store, tmp_path, gate_webmail_rule="person"))


def test_loopback_trust_is_the_socket_peer_whatever_forwarded_headers_say(
    store, demo, tmp_path, monkeypatch
):
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    app = create_app(settings_for(store, tmp_path, gate_proxy_key=None, gate_trust_loopback=True))
    config = uvicorn.Config(app, **SERVER_OPTIONS)
    config.load()  # what uvicorn wraps the application in, as `appwarden serve` runs it
    uri = f"{EAS}?Cmd=Sync&DeviceId={BOB}&DeviceType=x"

    def status(client: tuple[str, int], forwarded: str) -> int:
        headers = [
            (b"x-original-uri", uri.encode()),
            (b"x-forwarded-for", forwarded.encode()),
            (b"host", b"gate"),
        ]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/gate/forward",
            "raw_path": b"/gate/forward",
            "query_string": b"",
            "headers": headers,
            "client": client,
            "server": ("127.0.0.1", 8000),
        }
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        asyncio.run(config.loaded_app(scope, receive, send))
        return sent[0]["status"]

    with TestClient(app):  # runs the lifespan (the copy, the store path)
        # a stranger claiming to be the proxy on the loopback interface
        assert status(("203.0.113.9", 40000), "127.0.0.1") == 401
        # nginx on the same host, passing the real client's address (the documented config)
        assert status(("127.0.0.1", 40000), "203.0.113.9") == 200


def test_a_doubled_authorization_header_is_refused(store, demo, tmp_path):
    app = create_app(settings_for(store, tmp_path, gate_proxy="nginx"))
    uri = f"{EAS}?Cmd=Sync&DeviceId=NEW0000000000000000000000000001&DeviceType=x"
    headers = [
        ("X-Appwarden-Proxy-Key", KEY),
        ("X-Original-URI", uri),
        ("Authorization", basic("EXAMPLE\\bob")),
        ("Authorization", basic("EXAMPLE\\carol")),
    ]
    with TestClient(app) as client:
        refused = client.get("/gate/forward", headers=headers)
        assert refused.status_code == 403
        assert refused.json()["reason"] == "duplicate_credentials"
        once = client.get("/gate/forward", headers=headers[:3])
        assert once.status_code == 200


def test_report_mode_allows_and_records_what_enforce_would_deny(store, demo, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="appwarden.web")
    app = create_app(settings_for(store, tmp_path, gate_proxy="nginx", gate_mode="report"))
    uri = f"{EAS}?Cmd=Sync&DeviceId={CAROL}&DeviceType=x"
    with TestClient(app) as client:
        answered = client.get(
            "/gate/forward", headers={"X-Appwarden-Proxy-Key": KEY, "X-Original-URI": uri}
        )
        assert answered.status_code == 200
        assert answered.headers["x-appwarden-would-deny"] == "decided"
        metrics = app.state.metrics.registry.get_sample_value(
            "appwarden_gate_would_deny_total", {"reason": "decided"}
        )
        assert metrics == 1.0
    assert "would deny" in caplog.text


def test_metric_labels_take_only_known_methods(store, tmp_path):
    app = create_app(settings_for(store, tmp_path))
    with TestClient(app) as client:
        for method in ("FOO", "BAR0", "x" * 200):
            client.request(method, "/healthz")
            client.request(method, "/gate/forward", headers={"X-Appwarden-Proxy-Key": KEY})
        registry = app.state.metrics.registry
        methods = {
            sample.labels.get("method")
            for metric in registry.collect()
            for sample in metric.samples
            if "method" in sample.labels
        }
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
    assert "other" in methods


def test_an_unknown_name_asks_the_store_once_a_second(store, demo, tmp_path):
    """A current copy answers an unseen DeviceId of a known person itself; a name it does not
    know goes to the store, and the store's "nobody by that name" is remembered for a second."""
    app = create_app(settings_for(store, tmp_path, gate_proxy="nginx"))
    unknown = ("eas_device_id", "FEEDFACE00000000000000000000BEEF")
    uri = f"{EAS}?Cmd=Sync&DeviceId={unknown[1]}&DeviceType=x"
    headers = {"X-Appwarden-Proxy-Key": KEY, "X-Original-URI": uri}
    with TestClient(app) as client:
        wait_until_current(app)
        gate = app.state.gate
        signed_in = {**headers, "Authorization": basic("EXAMPLE\\bob")}
        assert client.get("/gate/forward", headers=signed_in).status_code == 200  # unseen_device
        assert not gate.not_found.knows(unknown)  # answered from the copy, not the store
        stranger = {**headers, "Authorization": basic("nobody@example.com")}
        answered = client.get("/gate/forward", headers=stranger)
        assert (answered.status_code, answered.json()["reason"]) == (
            403,
            "unseen_device_of_unknown_person",
        )
        assert gate.not_found.knows("nobody@example.com")
        # remembered: the copy answers "nobody" without deferring to the store
        facts = IndexFacts(
            gate.live.index, parse_instant(AFTER), authoritative=False, not_found=gate.not_found
        )
        assert facts.people("nobody@example.com") == ()
        gate.not_found.clear()
        with pytest.raises(NeedStore):
            facts.people("nobody@example.com")


def test_only_strangers_are_paced_not_known_devices_while_the_copy_catches_up(
    store, demo, tmp_path, monkeypatch
):
    app = create_app(settings_for(store, tmp_path, gate_proxy="nginx"))
    key = {"X-Appwarden-Proxy-Key": KEY}
    known = {**key, "X-Original-URI": f"{EAS}?Cmd=Sync&DeviceId={CAROL}&DeviceType=x"}
    with TestClient(app) as client:
        wait_until_current(app)
        gate = app.state.gate
        gate.pacer = Pacer(per_second=0.001, wait=0.01)  # one stranger, then none for ages
        stranger = {**key, "X-Original-URI": f"{EAS}?Cmd=Sync&DeviceId=AB12&DeviceType=x"}
        assert client.get("/gate/forward", headers=stranger).status_code == 200  # its turn
        assert client.get("/gate/forward", headers=stranger).status_code == 503  # paced
        # the copy must catch up (another process wrote): carol's phone is still answered
        monkeypatch.setattr(gate.live, "fresh", lambda: False)
        for _ in range(3):
            assert client.get("/gate/forward", headers=known).status_code == 403
