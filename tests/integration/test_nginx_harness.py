"""The nginx harness works, without appwarden: a real nginx, a fake gate, a fake mail server.

The fake gate allows a request whose original URI contains `DeviceId=ALLOW` (answering with an
`X-Appwarden-Device` header) and denies everything else with 403 and a JSON body; its
`/gate/explain` answers with the problem+json the client should see.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest
from tests.nginx_harness import AUTH_LOCATION, PROTECTED_LOCATIONS, NginxProxy, start_nginx
from tests.proxy_harness import ThreadedServer, Upstream, free_port, serve_http, start_upstream

KEY = "test-proxy-key-0123456789"
EAS = "/Microsoft-Server-ActiveSync"
ALLOWED = f"{EAS}?Cmd=Sync&User=jdoe&DeviceId=ALLOW1&DeviceType=iPhone"
DENIED = f"{EAS}?Cmd=Sync&User=jdoe&DeviceId=BANNED9&DeviceType=iPhone"


@dataclass(frozen=True)
class GateCall:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class FakeGate(ThreadedServer):
    calls: list[GateCall] = field(default_factory=list)
    explain_status: int = 403
    device_header: bool = True

    def calls_to(self, path: str) -> list[GateCall]:
        return [call for call in self.calls if call.path.split("?")[0] == path]


def start_fake_gate() -> FakeGate:
    gate: FakeGate

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {key.lower(): value for key, value in self.headers.items()}
            gate.calls.append(GateCall(self.command, self.path, headers, body))
            uri = headers.get("x-original-uri", "")
            if headers.get("x-appwarden-proxy-key") != KEY:
                self._send(401, {"title": "proxy credential missing"})
            elif self.path == "/gate/forward" and "DeviceId=ALLOW" in uri:
                extra = {"X-Appwarden-Device": "device-42"} if gate.device_header else {}
                self._send(200, None, extra)
            elif self.path == "/gate/forward":
                self._send(403, {"verdict": "deny", "reason": "banned_app_present"})
            elif self.path == "/gate/explain":
                self._send(
                    gate.explain_status,
                    {"type": "about:blank", "title": "Device blocked", "detail": uri},
                )
            else:
                self._send(404, {"title": "unknown"})

        def do_POST(self) -> None:
            self.do_GET()

        def _send(self, status: int, payload: object, extra: dict[str, str] | None = None) -> None:
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/problem+json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            return

    server, thread = serve_http(Handler, "fake-gate")
    gate = FakeGate(server=server, thread=thread)
    return gate


@pytest.fixture
def gate() -> Iterator[FakeGate]:
    with start_fake_gate() as fake:
        yield fake


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with start_upstream() as server:
        yield server


@pytest.fixture
def proxy(tmp_path: Path, upstream: Upstream, gate: FakeGate) -> Iterator[NginxProxy]:
    with start_nginx(tmp_path, upstream.port, gate.port, KEY) as running:
        yield running


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as http:
        yield http


def test_allowed_request_reaches_the_upstream_with_the_gates_device_header(
    proxy: NginxProxy, upstream: Upstream, gate: FakeGate, client: httpx.Client
) -> None:
    response = client.post(
        proxy.url + ALLOWED,
        content=b"\x03\x01\x6a\x00wbxml body",
        headers={"Content-Type": "application/vnd.ms-sync.wbxml", "Cookie": "session=secret"},
        auth=("CORP\\jdoe", "mail-password"),
    )
    assert response.status_code == 200
    assert response.text == "mail upstream"

    [reached] = upstream.requests
    assert reached.method == "POST"
    assert reached.path == ALLOWED
    assert reached.body == b"\x03\x01\x6a\x00wbxml body"
    assert reached.headers["x-appwarden-device"] == "device-42"
    assert reached.headers["authorization"].startswith(
        "Basic "
    )  # the mail server still authenticates

    [asked] = gate.calls_to("/gate/forward")
    assert asked.method == "GET"  # an auth subrequest is a GET without a body
    assert asked.body == b""
    assert asked.headers.get("content-length", "0") == "0"
    assert asked.headers["x-original-uri"] == ALLOWED
    assert asked.headers["x-original-method"] == "POST"
    assert asked.headers["x-appwarden-proxy-key"] == KEY
    assert asked.headers["x-forwarded-user"] == "CORP\\jdoe"
    # the gate never sees the mail password or the webmail session
    assert "authorization" not in asked.headers
    assert "cookie" not in asked.headers
    assert gate.calls_to("/gate/explain") == []


def test_denied_request_gets_the_explanation_and_never_reaches_the_upstream(
    proxy: NginxProxy, upstream: Upstream, gate: FakeGate, client: httpx.Client
) -> None:
    response = client.post(proxy.url + DENIED, content=b"wbxml")
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {"type": "about:blank", "title": "Device blocked", "detail": DENIED}
    assert upstream.requests == []
    [explained] = gate.calls_to("/gate/explain")
    assert explained.method == "GET"
    assert explained.body == b""
    assert explained.headers["x-original-uri"] == DENIED
    assert explained.headers["x-original-method"] == "POST"
    assert explained.headers["x-appwarden-proxy-key"] == KEY


def test_request_without_a_device_id_is_denied(
    proxy: NginxProxy, upstream: Upstream, gate: FakeGate, client: httpx.Client
) -> None:
    response = client.post(f"{proxy.url}{EAS}?Cmd=Sync&User=jdoe&DeviceType=iPhone")
    assert response.status_code == 403
    assert upstream.requests == []
    assert len(gate.calls_to("/gate/forward")) == 1


def test_webmail_location_is_protected_too(
    proxy: NginxProxy, upstream: Upstream, gate: FakeGate, client: httpx.Client
) -> None:
    assert client.get(proxy.url + "/owa/").status_code == 403
    assert upstream.requests == []
    assert client.get(proxy.url + "/owa/?DeviceId=ALLOW2").status_code == 200
    assert [request.path for request in upstream.requests] == ["/owa/?DeviceId=ALLOW2"]
    assert [call.headers["x-original-uri"] for call in gate.calls_to("/gate/forward")] == [
        "/owa/",
        "/owa/?DeviceId=ALLOW2",
    ]


def test_client_cannot_forge_the_device_or_user_headers(
    proxy: NginxProxy, upstream: Upstream, gate: FakeGate, client: httpx.Client
) -> None:
    gate.device_header = False  # the gate allows but names no device
    forged = {
        "X-Appwarden-Device": "forged-device",
        "X-Remote-User": "ceo@example.com",
        "X-Forwarded-User": "ceo@example.com",
        "X-Original-URI": f"{EAS}?DeviceId=ALLOW-forged",
        "X-Appwarden-Proxy-Key": "guess",
    }
    response = client.post(proxy.url + DENIED, headers=forged)
    assert response.status_code == 403  # the forged X-Original-URI did not reach the gate
    response = client.post(proxy.url + ALLOWED, headers=forged)
    assert response.status_code == 200
    [reached] = upstream.requests
    assert "x-appwarden-device" not in reached.headers
    for asked in gate.calls_to("/gate/forward"):
        assert "x-remote-user" not in asked.headers
        assert "x-forwarded-user" not in asked.headers  # no Basic credentials: $remote_user empty
        assert asked.headers["x-appwarden-proxy-key"] == KEY


def test_the_deny_status_survives_an_explanation_answered_with_200(
    proxy: NginxProxy, upstream: Upstream, gate: FakeGate, client: httpx.Client
) -> None:
    # `error_page 403 @named` keeps the 403; `error_page 403 = @named` would pass on the 200
    gate.explain_status = 200
    response = client.post(proxy.url + DENIED)
    assert response.status_code == 403
    assert response.json()["title"] == "Device blocked"
    assert upstream.requests == []


def test_unreachable_gate_fails_closed(
    tmp_path: Path, upstream: Upstream, client: httpx.Client
) -> None:
    with start_nginx(tmp_path, upstream.port, free_port(), KEY) as proxy:
        response = client.post(proxy.url + ALLOWED)
    assert response.status_code == 500  # auth_request: any status but 2xx, 401, 403 is a 500
    assert upstream.requests == []


def test_ungated_paths_are_not_proxied(
    proxy: NginxProxy, upstream: Upstream, gate: FakeGate, client: httpx.Client
) -> None:
    assert client.get(proxy.url + "/ecp/").status_code == 404
    assert upstream.requests == []
    assert gate.calls == []


# --- the pitfall: `return` in a protected location skips auth_request ---------------------------


def _location_blocks(config: str) -> dict[str, str]:
    return {
        match["name"]: match["body"]
        for match in re.finditer(
            r"location\s+(?P<name>(?:=\s+)?[^\s{]+)\s*\{(?P<body>[^}]*)\}", config
        )
    }


def test_protected_locations_proxy_pass_and_never_return(proxy: NginxProxy) -> None:
    blocks = _location_blocks(proxy.config)
    for location in PROTECTED_LOCATIONS:
        body = blocks[location]
        assert f"auth_request {AUTH_LOCATION};" in body
        assert re.search(r"^\s*proxy_pass\s", body, re.MULTILINE)
        assert not re.search(r"^\s*return\s", body, re.MULTILINE)
    assert "internal;" in blocks[f"= {AUTH_LOCATION}"]  # clients cannot call the gate through it
    assert not re.search(r"^\s*return\s", proxy.config, re.MULTILINE)


def test_the_pitfall_is_real_a_return_skips_the_gate(
    tmp_path: Path, upstream: Upstream, gate: FakeGate, client: httpx.Client
) -> None:
    """Control: with `return` in the protected location the denied request is answered anyway
    and the gate is never asked, which is what the harness's proxy_pass avoids."""

    def with_return(config: str) -> str:
        return config.replace(
            "proxy_pass http://mail_upstream;", "return 200 'answered without asking';", 1
        )

    with start_nginx(tmp_path, upstream.port, gate.port, KEY, edit_config=with_return) as proxy:
        response = client.post(proxy.url + DENIED)
    assert response.status_code == 200
    assert gate.calls == []


def test_everything_lives_under_the_prefix_and_stop_ends_nginx(
    tmp_path: Path, upstream: Upstream, gate: FakeGate, client: httpx.Client
) -> None:
    proxy = start_nginx(tmp_path, upstream.port, gate.port, KEY)
    assert client.post(proxy.url + ALLOWED).status_code == 200
    process = proxy.process
    assert process is not None
    assert (proxy.prefix / "nginx.pid").read_text().strip() == str(process.pid)
    for name in ("error.log", "access.log", "client_body_temp", "proxy_temp"):
        assert (proxy.prefix / name).exists(), name
    assert str(tmp_path) in proxy.config
    assert "/var/" not in proxy.config
    proxy.stop()
    assert process.poll() is not None
    with pytest.raises(httpx.ConnectError):
        client.get(proxy.url + ALLOWED)
    proxy.stop()  # idempotent
