"""`/gate/forward`: the forward-auth endpoint for nginx `auth_request`, Traefik ForwardAuth and
Envoy ext_authz (HTTP service), and `/gate/explain`, the body nginx fetches for a 403.

Its credential is the proxy's, not an API token: `X-Appwarden-Proxy-Key` compared in constant
time with `APPWARDEN_GATE_PROXY_KEY`, or (when `APPWARDEN_GATE_TRUST_LOOPBACK` is set) a caller on
the loopback interface. With neither configured the gate refuses every call (fail closed).
Allow = 200 (Envoy treats any other 2xx as a deny) with `X-Appwarden-Device` and
`X-Appwarden-Person`; deny = 403 with a problem+json body naming the policy and the portal.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from appwarden.access.gate import GateConfig, parse_gate_request
from appwarden.usecases.gate import GateAnswer, GatePolicy, answer, problem_body
from appwarden.web import Runtime
from appwarden.web.api import metrics_of
from appwarden.web.auth import runtime_of
from appwarden.web.errors import Unauthenticated

PROXY_KEY_HEADER = "x-appwarden-proxy-key"
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _trusted(request: Request, runtime: Runtime) -> bool:
    settings = runtime.settings
    key = settings.gate_proxy_key
    offered = request.headers.get(PROXY_KEY_HEADER)
    if key is not None and offered is not None:
        return hmac.compare_digest(offered.encode(), key.get_secret_value().encode())
    if settings.gate_trust_loopback and request.client is not None:
        try:
            return ipaddress.ip_address(request.client.host).is_loopback
        except ValueError:
            return False
    return False


def _decide(runtime: Runtime, headers: dict[str, str], path: str) -> tuple[GateAnswer, GatePolicy]:
    settings = runtime.settings
    config = GateConfig(device_header=settings.gate_device_header)
    policy = GatePolicy(
        unseen_device=settings.unseen_device,
        unseen_device_of_blocked_person=settings.unseen_device_of_blocked_person,
        portal_url=settings.portal_url,
    )
    request = parse_gate_request(headers, path, config)
    now = runtime.now()
    with runtime.uow(now, write=False) as uow:
        return answer(uow, request, policy, now), policy


async def _gate(request: Request) -> Response:
    runtime = runtime_of(request)
    if not _trusted(request, runtime):
        raise Unauthenticated(
            "the gate answers only its proxy (X-Appwarden-Proxy-Key)", invalid_token=True
        )
    headers = dict(request.headers.items())
    result, policy = await run_in_threadpool(_decide, runtime, headers, request.url.path)
    metrics_of(request).decisions.labels(str(result.decision)).inc()
    extra: dict[str, str] = {"X-Appwarden-Decision": str(result.decision)}
    if result.device:
        extra["X-Appwarden-Device"] = result.device
    if result.person:
        extra["X-Appwarden-Person"] = result.person
    if result.allowed:
        return Response(status_code=200, headers=extra)
    body: dict[str, Any] = problem_body(result, policy)
    return Response(
        orjson.dumps(body),
        status_code=403,
        headers=extra,
        media_type="application/problem+json",
    )


def install(app: FastAPI) -> None:
    app.add_api_route("/gate/forward", _gate, methods=METHODS, include_in_schema=False)
    app.add_api_route("/gate/forward/{rest:path}", _gate, methods=METHODS, include_in_schema=False)
    app.add_api_route("/gate/explain", _gate, methods=["GET"], include_in_schema=False)
