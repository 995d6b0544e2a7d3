"""Who is asking, through a real nginx and a real Caddy, with the reference organisation after the
memo's deadline (its people sign in to mail as `EXAMPLE\\<local part>`).

The person comes from what the mail server itself verifies (nginx: `$remote_user` for Basic, the
bearer token as is; Caddy: the `Authorization` header), never from ActiveSync's `User=`. So a
blocked person cannot get a new DeviceId through by leaving `User=` out, doubling it, or writing
a near-miss of their address; an unblocked person's new phone passes with either kind of
credentials or none (the mail server then challenges it); `OPTIONS` before the first sync passes;
and no denial names anyone else, nor does any log line carry a password or token.
"""

from __future__ import annotations

import base64 as b64
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.caddy_harness import start_caddy
from tests.eas_requests import BOB, CAROL, EAS
from tests.nginx_harness import start_nginx
from tests.proxy_harness import Upstream, serve_app, start_upstream

from appwarden.settings import Settings
from appwarden.web.app import create_app

KEY = "identity-test-proxy-key-0123456789abcdef"
AFTER = "2020-07-11T12:00:00-07:00"  # past the memo's deadline
PASSWORD = "correct-horse-battery-staple"
NEW_PHONE = "NEWPHONE00000000000000000000F00D"
PEOPLE = ("alice", "bob", "carol", "dave", "erin", "frank")

# How each proxy is started and which headers the gate is told to read from it.
PROXIES: dict[str, tuple[Callable[..., object], dict[str, str]]] = {
    "nginx": (start_nginx, {"gate_proxy": "nginx", "gate_user_header": "X-Forwarded-User"}),
    "caddy": (start_caddy, {"gate_proxy": "caddy"}),
}


def basic(user: str) -> dict[str, str]:
    token = b64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def bearer(claims: dict[str, str]) -> dict[str, str]:
    def part(value: object) -> str:
        return b64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return {"Authorization": f"Bearer {part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"}


def sync(device: str, *users: str) -> str:
    """An ActiveSync Sync for `device`, with a `User=` parameter per user given (none, one, two)."""
    query = "".join(f"&User={user}" for user in users)
    return f"{EAS}?Cmd=Sync{query}&DeviceId={device}&DeviceType=SmartPhone"


@dataclass
class Proxy:
    client: httpx.Client
    upstream: Upstream
    denials: list[httpx.Response]

    def ask(self, uri: str, headers: dict[str, str] | None = None, method: str = "GET") -> int:
        response = self.client.request(method, uri, headers=headers or {})
        if response.status_code == 403:
            self.denials.append(response)
        return response.status_code


@pytest.fixture(params=sorted(PROXIES))
def proxy(request, cli, store, tmp_path: Path) -> Iterator[Proxy]:
    start, gate_settings = PROXIES[request.param]
    assert cli("demo", "--base-time", "2020-07-10T09:00:00-07:00").code == 0
    settings = Settings(
        database_url=store.url,
        env="test",
        clock=f"fixed:{AFTER}",
        gate_proxy_key=KEY,
        public_url="https://appwarden.example.com",
        maildir=tmp_path / "mail",
        gate_access_log="all",
        **gate_settings,
    )
    with (
        serve_app(create_app(settings)) as port,
        start_upstream() as upstream,
        start(tmp_path, upstream.port, port, KEY) as running,  # type: ignore[attr-defined]
        httpx.Client(base_url=running.url, timeout=10) as client,
    ):
        yield Proxy(client, upstream, [])


def test_a_blocked_person_stays_blocked_whatever_the_request_says(proxy: Proxy, caplog) -> None:
    caplog.set_level(logging.INFO)
    carol = basic("EXAMPLE\\carol")
    assert proxy.ask(sync(CAROL, "carol"), carol) == 403
    assert proxy.ask(sync(CAROL)) == 403  # no credentials: her phone is judged by itself
    for users in ((), ("carol",), ("carol", "bob"), ("carol+x@example.com",),
                  ("carol@example.com.",), ("carol%00",), ("bob",)):  # fmt: skip
        for credentials in (
            carol,
            basic("carol@example.com"),
            bearer({"upn": "carol@example.com"}),
        ):
            assert proxy.ask(sync(NEW_PHONE, *users), credentials) == 403, (users, credentials)
    # a name that is not exactly hers is nobody's: refused too (unseen_device_of_unknown_person)
    for near_miss in ("carol+x@example.com", "carol@example.com.", "EXAMPLE\\carol2"):
        assert proxy.ask(sync(NEW_PHONE), basic(near_miss)) == 403, near_miss
    # a token naming her only in preferred_username (mutable in Entra) names no one we can read
    assert proxy.ask(sync(NEW_PHONE), bearer({"preferred_username": "bob@example.com"})) == 403

    explained = proxy.denials[2].json()
    assert explained["reason"] == "unseen_device_of_blocked_person"
    assert explained["your_blocked_devices"] == [
        {
            "platform": "android",
            "form_factor": "phone",
            "device": "…2210",
            "policies": ["tiktok-mobile-email"],
        }
    ]
    assert explained["portal_url"] == "https://appwarden.example.com/me/"
    assert not [r for r in proxy.upstream.requests if NEW_PHONE in r.path]
    _nothing_secret_logged(caplog.text)


def test_an_unblocked_persons_new_phone_passes(proxy: Proxy, caplog) -> None:
    caplog.set_level(logging.INFO)
    assert proxy.ask(sync(BOB, "bob"), basic("EXAMPLE\\bob")) == 200
    assert proxy.ask(sync(NEW_PHONE, "bob"), basic("EXAMPLE\\bob")) == 200
    assert proxy.ask(sync(NEW_PHONE), bearer({"upn": "bob@example.com"})) == 200
    assert proxy.ask(sync(NEW_PHONE, "EXAMPLE\\bob"), bearer({"upn": "BOB@example.com"})) == 200
    assert proxy.ask(sync(NEW_PHONE, "bob")) == 200  # unauthenticated: the mail server challenges
    # OPTIONS before the first sync carries no DeviceId
    assert proxy.ask(EAS, method="OPTIONS") == 200
    assert proxy.ask(EAS, basic("EXAMPLE\\bob"), method="OPTIONS") == 200
    # ... but a Sync without one is refused, and bob's name cannot unlock carol's phone
    assert proxy.ask(f"{EAS}?Cmd=Sync&User=bob", basic("EXAMPLE\\bob")) == 403
    assert proxy.ask(sync(CAROL, "bob"), basic("EXAMPLE\\bob")) == 403
    # User= must agree with who signed in
    assert proxy.ask(sync(NEW_PHONE, "carol"), basic("EXAMPLE\\bob")) == 403
    assert sum(1 for r in proxy.upstream.requests if r.method == "OPTIONS") == 2
    _nothing_secret_logged(caplog.text)


def test_no_denial_names_anyone_else(proxy: Proxy) -> None:
    probes = [
        (sync(CAROL, "bob"), basic("EXAMPLE\\bob")),
        (sync(CAROL), {}),
        (sync(NEW_PHONE), basic("EXAMPLE\\carol")),
        (sync(NEW_PHONE, "alice"), basic("EXAMPLE\\carol")),
        (sync(NEW_PHONE), basic("nobody@example.com")),
    ]
    for uri, headers in probes:
        assert proxy.ask(uri, headers) == 403, uri
    for denial in proxy.denials:
        shown = denial.text + json.dumps(dict(denial.headers))
        for person in PEOPLE:
            assert f"{person}@example.com" not in shown.casefold(), (denial.request.url, shown)


def _nothing_secret_logged(logged: str) -> None:
    assert PASSWORD not in logged
    assert b64.b64encode(f"EXAMPLE\\bob:{PASSWORD}".encode()).decode() not in logged
    assert "c2lnbmF0dXJl" not in logged  # the bearer tokens' signature part
