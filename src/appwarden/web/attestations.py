"""A person confirms removal for one of their own devices (`usecases.attest`): the portal's form
on `/me/devices/{device}` and the JSON route `POST /v1/attestations` (docs/api.md).

Both speak only with the person's own portal session and its CSRF token: an API token is the
organisation's credential, not a person's word, so no token (not even an admin's) can attest.
The unit of work runs as the person, as an employee only, so no role of theirs lets them speak
for someone else's device.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any, Final
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from appwarden.errors import InvalidInput, NotFound, PermissionDenied, Problem
from appwarden.usecases import attest, portal
from appwarden.usecases.sign_in import Visitor
from appwarden.web import Runtime
from appwarden.web.api import decode_json, read_body
from appwarden.web.auth import runtime_of
from appwarden.web.errors import Unauthenticated
from appwarden.web.pages import page, redirect
from appwarden.web.portal import MAX_POLICY_CHARS, device_values, read_as_person, sentence
from appwarden.web.sessions import (
    Employee,
    SessionGuard,
    SignInRequired,
    check_csrf,
    read_form,
)

MAX_BODY_BYTES: Final = 4096
CSRF_HEADER: Final = "x-csrf-token"


class PersonSession(SessionGuard):
    """An API route a person calls with their own portal session: 401 (not a redirect to sign
    in) without one."""

    async def __call__(self, request: Request) -> Visitor:
        try:
            return await super().__call__(request)
        except SignInRequired:
            raise Unauthenticated(
                "this route needs your own portal session and its CSRF token: sign in at "
                "/auth/sign-in; an API token cannot speak for a person",
                invalid_token=False,
            ) from None


Person = Annotated[Visitor, Depends(PersonSession())]


def _confirm(runtime: Runtime, visitor: Visitor, device: str, policy: str) -> attest.Attested:
    with runtime.uow(runtime.now(), actor=visitor.email, employee_only=True) as uow:
        return attest.attest(uow, device, policy)


def _field(body: Any, name: str) -> str:
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(
            f"{name}: expected a non-empty string",
            problems=[Problem(f"$.{name}", "expected a non-empty string")],
        )
    return value


async def post_attestation(request: Request, visitor: Person) -> Response:
    """`{"device": "namespace:value" | device number, "policy": "ID"}` with the session's CSRF
    token in `X-CSRF-Token`: the person confirms the policy's apps are not on their device."""
    offered = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(offered.encode(), visitor.csrf_token.encode()):
        raise PermissionDenied("the X-CSRF-Token header is missing or is not this session's")
    body = decode_json(await read_body(request, MAX_BODY_BYTES))
    device, policy = _field(body, "device"), _field(body, "policy")
    runtime = runtime_of(request)
    done = await run_in_threadpool(_confirm, runtime, visitor, device, policy)
    return JSONResponse(done.as_json(), status_code=201)


async def attest_from_portal(request: Request, device: str, visitor: Employee) -> Response:
    """The portal's "I have removed it" form for one policy on one of the person's devices."""
    runtime = runtime_of(request)
    form = await read_form(request)
    check_csrf(form, visitor.csrf_token)
    policy = form.get("policy", "")[:MAX_POLICY_CHARS]
    if not device.isdecimal() or len(device) > 18:
        raise NotFound("no such device")
    try:
        await run_in_threadpool(_confirm, runtime, visitor, device, policy)
    except InvalidInput as exc:
        shown = await run_in_threadpool(
            read_as_person, runtime, visitor, portal.my_device, device, focus=policy
        )
        values = device_values(
            visitor, shown, problem=sentence(exc), problem_policy=policy, problem_form="attest"
        )
        return page(request, "device.html", values, status=422)
    return redirect(f"/me/devices/{device}?policy={quote(policy, safe='')}&attested=1")


def install(app: FastAPI) -> None:
    app.add_api_route(
        "/v1/attestations",
        post_attestation,
        methods=["POST"],
        status_code=201,
        summary="Confirm removal for one of your own devices (your portal session and CSRF token)",
        tags=["attestations"],
    )
    app.add_api_route(
        "/me/devices/{device}/attestations",
        attest_from_portal,
        methods=["POST"],
        include_in_schema=False,
    )
