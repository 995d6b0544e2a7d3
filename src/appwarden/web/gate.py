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
import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool

from appwarden.access.gate import GateConfig, GateRequest, normalise_user, parse_gate_request
from appwarden.devices.identifiers import normalise
from appwarden.usecases.gate import GateAnswer, GatePolicy, answer, problem_body
from appwarden.vocabulary import Decision
from appwarden.web import Runtime
from appwarden.web.api import metrics_of
from appwarden.web.auth import runtime_of
from appwarden.web.errors import ServiceUnavailable, Unauthenticated
from appwarden.web.snapshot import DecisionSnapshot

log = logging.getLogger("appwarden.web")
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


def _policy(runtime: Runtime) -> GatePolicy:
    settings = runtime.settings
    return GatePolicy(
        unseen_device=settings.unseen_device,
        unseen_device_of_blocked_person=settings.unseen_device_of_blocked_person,
        portal_url=settings.portal_url,
    )


def _decide(
    runtime: Runtime, snapshot: DecisionSnapshot | None, headers: dict[str, str], path: str
) -> tuple[GateAnswer, GatePolicy]:
    policy = _policy(runtime)
    request = parse_gate_request(
        headers, path, GateConfig(device_header=runtime.settings.gate_device_header)
    )
    now = runtime.now()
    try:
        with runtime.uow(now, write=False) as uow:
            return answer(uow, request, policy, now), policy
    except (DBAPIError, ServiceUnavailable):
        log.warning(
            "gate: the store is not reachable; answering %s", runtime.settings.on_store_failure
        )
        return _without_store(runtime.settings.on_store_failure, snapshot, request, policy), policy


def _without_store(
    mode: str, snapshot: DecisionSnapshot | None, request: GateRequest, policy: GatePolicy
) -> GateAnswer:
    """on_store_failure: `allow` or `deny` everything gated, or answer from the last known copy."""
    if request.resource is None:
        return GateAnswer(Decision.ALLOW, "not_gated")
    if mode != "last_known" or snapshot is None:
        return GateAnswer(Decision(mode if mode != "last_known" else "deny"), "store_unavailable")
    user = normalise_user(request.user)
    if request.device_id is None:
        return GateAnswer(
            Decision.DENY if request.resource == "email" else Decision.ALLOW, "no_device_id"
        )
    value = normalise(policy.device_namespace, request.device_id)
    label = f"{policy.device_namespace}:{value}"
    device_id, owner, known = snapshot.lookup(policy.device_namespace, value, request.resource)
    if device_id is None:
        email = user if user and "@" in user else None
        blocked = snapshot.person_denied(email, request.resource) if email else None
        if blocked is not None:
            return GateAnswer(
                Decision(policy.unseen_device_of_blocked_person),
                "unseen_device_of_blocked_person",
                device=label,
                person=email,
            )
        return GateAnswer(Decision(policy.unseen_device), "unseen_device", device=label)
    if user is not None and not _same_person(user, owner):
        return GateAnswer(Decision.DENY, "user_is_not_the_owner", device=label, person=owner)
    if known is None:
        return GateAnswer(Decision.ALLOW, "last_known", device=label, person=owner)
    denying = [
        str(r["policy"]) for r in known.reasons if isinstance(r, dict) and r.get("effect") == "deny"
    ]
    return GateAnswer(
        Decision(known.decision), "last_known", device=label, person=owner, policies=denying
    )


def _same_person(user: str, owner: str | None) -> bool:
    if owner is None:
        return False
    return user == owner if "@" in user else owner.split("@", 1)[0] == user


async def _gate(request: Request) -> Response:
    runtime = runtime_of(request)
    if not _trusted(request, runtime):
        raise Unauthenticated(
            "the gate answers only its proxy (X-Appwarden-Proxy-Key)", invalid_token=True
        )
    headers = dict(request.headers.items())
    snapshot = getattr(request.app.state, "snapshot", None)
    result, policy = await run_in_threadpool(_decide, runtime, snapshot, headers, request.url.path)
    metrics_of(request).decisions.labels(str(result.decision)).inc()
    extra: dict[str, str] = {"X-Appwarden-Decision": str(result.decision)}
    if result.device:
        extra["X-Appwarden-Device"] = result.device
    if result.person:
        extra["X-Appwarden-Person"] = result.person
    if result.reason in ("last_known", "store_unavailable"):
        extra["X-Appwarden-Source"] = result.reason
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
