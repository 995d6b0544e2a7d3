"""`/gate/forward`: the forward-auth endpoint for nginx `auth_request`, Traefik ForwardAuth and
Envoy ext_authz (HTTP service), and `/gate/explain`, the body nginx fetches for a 403.

Its credential is the proxy's, not an API token: `X-Appwarden-Proxy-Key` compared in constant
time with `APPWARDEN_GATE_PROXY_KEY`, or (when `APPWARDEN_GATE_TRUST_LOOPBACK` is set) a caller on
the loopback interface. With neither configured the gate refuses every call (fail closed).
Allow = 200 (Envoy treats any other 2xx as a deny) with `X-Appwarden-Device` and
`X-Appwarden-Person`; deny = 403 with a problem+json body naming the policy and the portal.

Two paths give the same answer (`usecases.gate.answer` over two sources of facts):

- `GateFastPath`, a thin ASGI layer in front of the whole application (it writes the same access
  line and latency sample as `web.observability` does for every other request), answers from the
  process's in-memory copy (`web.live_index`) on the event loop, when the copy is current and
  knows everything the answer needs. That is nearly every request: a dictionary lookup.
- Everything else reaches the `/gate/...` routes: an untrusted caller (401), a copy that must catch
  up first, an unknown device or user, a decision whose time has come. They catch up, ask the
  copy again, then the store; with the store down, `on_store_failure` decides.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Final

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from appwarden.access.gate import GateConfig, GateRequest, parse_gate_request
from appwarden.usecases.gate import (
    GateAnswer,
    GatePolicy,
    IndexFacts,
    NeedStore,
    StoreFacts,
    answer,
    problem_body,
)
from appwarden.vocabulary import Decision
from appwarden.web import Runtime
from appwarden.web.errors import PROBLEM_JSON, ServiceUnavailable, Unauthenticated
from appwarden.web.live_index import LiveIndex
from appwarden.web.observability import REQUEST_ID_HEADER, Metrics, log_request, request_id_from

log = logging.getLogger("appwarden.web")
PROXY_KEY_HEADER: Final = "x-appwarden-proxy-key"
METHODS: Final = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
FORWARD_PATH: Final = "/gate/forward"
EXPLAIN_PATH: Final = "/gate/explain"


def is_gate_path(path: str) -> bool:
    return path in (FORWARD_PATH, EXPLAIN_PATH) or path.startswith(FORWARD_PATH + "/")


class Gate:
    """What both paths share: the proxy check, the answer, and how it is written."""

    def __init__(self, runtime: Runtime, live: LiveIndex, metrics: Metrics) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.live = live
        self.policy = GatePolicy(
            unseen_device=settings.unseen_device,
            unseen_device_of_blocked_person=settings.unseen_device_of_blocked_person,
            portal_url=settings.portal_url,
        )
        self.config = GateConfig(device_header=settings.gate_device_header)
        key = settings.gate_proxy_key
        self._key = key.get_secret_value().encode() if key is not None else None
        self._trust_loopback = settings.gate_trust_loopback
        self._counters = {d: metrics.decisions.labels(str(d)) for d in Decision}
        self._problem = functools.lru_cache(maxsize=4096)(self._render_problem)

    def _render_problem(self, reason: str, device: str | None, policies: tuple[str, ...]) -> bytes:
        """The 403 body (a blocked phone asks again and again: remembered)."""
        denied = GateAnswer(Decision.DENY, reason, device=device, policies=policies)
        return orjson.dumps(problem_body(denied, self.policy))

    def trusted(self, headers: Mapping[str, str], client: tuple[str, int] | None) -> bool:
        offered = headers.get(PROXY_KEY_HEADER)
        if self._key is not None and offered is not None:
            return hmac.compare_digest(offered.encode(), self._key)
        if self._trust_loopback and client is not None:
            try:
                return ipaddress.ip_address(client[0]).is_loopback
            except ValueError:
                return False
        return False

    def from_memory(self, headers: Mapping[str, str], path: str) -> GateAnswer | None:
        """The answer from the current in-memory copy, or None when it cannot give one."""
        if not self.live.fresh():
            return None
        request = parse_gate_request(headers, path, self.config, lower_cased=True)
        facts = IndexFacts(self.live.index, self.runtime.now(), authoritative=False)
        try:
            return answer(facts, request, self.policy)
        except NeedStore:
            return None

    def decide(self, headers: Mapping[str, str], path: str) -> tuple[GateAnswer, str | None]:
        """Blocking (run it in a thread): catch up, ask the copy, then the store; with the store
        down, `on_store_failure`. Returns the answer and where it came from when that was not
        the current facts (`last_known`, `store_unavailable`)."""
        request = parse_gate_request(headers, path, self.config, lower_cased=True)
        now = self.runtime.now()
        try:
            if not self.live.fresh():
                self.live.catch_up()
            memory = IndexFacts(self.live.index, now, authoritative=False)
            try:
                return answer(memory, request, self.policy), None
            except NeedStore:
                pass
            with self.runtime.uow(now, write=False) as uow:
                return answer(StoreFacts(uow), request, self.policy), None
        except (DBAPIError, ServiceUnavailable):
            mode = self.runtime.settings.on_store_failure
            log.warning("gate: the store is not reachable; answering %s", mode)
            return self._without_store(mode, request, now)

    def _without_store(
        self, mode: str, request: GateRequest, now: datetime
    ) -> tuple[GateAnswer, str | None]:
        if mode == "last_known" and self.live.index.loaded:
            facts = IndexFacts(self.live.index, now, authoritative=True)
            return answer(facts, request, self.policy), "last_known"
        if request.resource is None:
            return GateAnswer(Decision.ALLOW, "not_gated"), None
        decision = Decision.ALLOW if mode == "allow" else Decision.DENY
        return GateAnswer(decision, "store_unavailable"), "store_unavailable"

    def render(
        self, result: GateAnswer, source: str | None
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Status, headers and body of the answer; counts it."""
        self._counters[result.decision].inc()
        headers: list[tuple[bytes, bytes]] = []
        if result.device:
            headers.append((b"x-appwarden-device", result.device.encode()))
        if result.person:
            headers.append((b"x-appwarden-person", result.person.encode()))
        if source is not None:
            headers.append((b"x-appwarden-source", source.encode()))
        if result.allowed:
            return 200, [*headers, (b"content-length", b"0")], b""
        body = self._problem(result.reason, result.device, tuple(result.policies))
        headers += [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        return 403, headers, body


class GateFastPath:
    """The outermost layer: answers a trusted gate request from memory on the event loop when it
    can, with its own access line and latency sample (the same ones `Observability` writes);
    every other request goes on, unchanged, to the application. Anything unexpected here is
    logged and the request goes on too, so the full path answers it."""

    def __init__(self, app: ASGIApp, gate: Gate, metrics: Metrics) -> None:
        self.app = app
        self.gate = gate
        logged = gate.runtime.settings.gate_access_log
        self._log_allow, self._log_deny = logged == "all", logged != "none"
        self._latency = functools.cache(
            lambda method, status: metrics.request_seconds.labels(FORWARD_PATH, method, status)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_gate_path(scope["path"]):
            started = time.perf_counter()
            try:
                answered = self._answer(scope)
            except Exception:
                log.exception("gate fast path failed; answering through the application")
                answered = None
            if answered is not None:
                request_id, status, headers, body = answered
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                latency = self._latency(scope["method"], str(status))
                duration = time.perf_counter() - started
                if not (self._log_allow if status == 200 else self._log_deny):
                    latency.observe(duration)
                    return
                log_request(
                    latency,
                    request_id=request_id or request_id_from(None),
                    method=scope["method"],
                    path=scope["path"],
                    route=FORWARD_PATH if scope["path"] != EXPLAIN_PATH else EXPLAIN_PATH,
                    status=status,
                    duration=duration,
                )
                return
        await self.app(scope, receive, send)

    def _answer(
        self, scope: Scope
    ) -> tuple[str | None, int, list[tuple[bytes, bytes]], bytes] | None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if not self.gate.trusted(headers, scope.get("client")):
            return None
        result = self.gate.from_memory(headers, scope["path"])
        if result is None:
            return None
        status, response_headers, body = self.gate.render(result, None)
        # The proxy's request id is echoed (and logged); without one, a new id goes only in the
        # log line, if there is one: the proxy would not read it.
        offered = headers.get(REQUEST_ID_HEADER)
        request_id = request_id_from(offered) if offered is not None else None
        if request_id is not None:
            response_headers.append((b"x-request-id", request_id.encode()))
        return request_id, status, response_headers, body


async def _gate(request: Request) -> Response:
    gate: Gate = request.app.state.gate
    headers = dict(request.headers.items())
    client = (request.client.host, request.client.port) if request.client else None
    if not gate.trusted(headers, client):
        raise Unauthenticated(
            "the gate answers only its proxy (X-Appwarden-Proxy-Key)", invalid_token=True
        )
    result, source = await run_in_threadpool(gate.decide, headers, request.scope["path"])
    status, response_headers, body = gate.render(result, source)
    response = Response(body, status_code=status)
    response.raw_headers = response_headers
    return response


def install(app: FastAPI) -> None:
    app.add_api_route(FORWARD_PATH, _gate, methods=METHODS, include_in_schema=False)
    app.add_api_route(
        FORWARD_PATH + "/{rest:path}", _gate, methods=METHODS, include_in_schema=False
    )
    app.add_api_route(EXPLAIN_PATH, _gate, methods=["GET"], include_in_schema=False)
