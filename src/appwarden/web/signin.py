"""The sign-in routes, `/auth/*` (the allowlist entry of `web.auth.PUBLIC_ROUTES`): the sign-in
page, sign-out, and each way in (docs/portal.md).

A browser that arrives without a session gets a sign-in flow: a cookie whose secret names a row
holding the page to return to and the CSRF token of the sign-in forms. The page to return to is
taken from that row at the end, never from the final request, and only a local portal path is
ever stored (`usecases.sign_in.safe_return_to`).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from appwarden.usecases import sign_in
from appwarden.usecases.sign_in import Flow
from appwarden.web import Runtime
from appwarden.web.auth import runtime_of
from appwarden.web.pages import page, redirect
from appwarden.web.sessions import (
    check_csrf,
    clear_cookie,
    flow_cookie,
    read_form,
    session_cookie,
    set_flow_cookie,
)


@dataclass(frozen=True, slots=True)
class Started:
    flow: Flow
    secret: str
    new: bool  # the cookie must be (re)set


def _ensure_flow(runtime: Runtime, secret: str, return_to: str | None) -> Started:
    """The browser's live flow (remembering `return_to` when one is given), or a new one."""
    with runtime.uow(runtime.now()) as uow:
        flow = sign_in.flow_of(uow, secret) if secret else None
        if flow is not None:
            if return_to:
                sign_in.remember_return(uow, secret, return_to)
                flow = sign_in.flow_of(uow, secret)
            assert flow is not None
            return Started(flow, secret, new=False)
        flow, secret = sign_in.begin_flow(uow, return_to, runtime.session_rules)
        return Started(flow, secret, new=True)


async def ensure_flow(request: Request, return_to: str | None = None) -> Started:
    runtime = runtime_of(request)
    secret = request.cookies.get(flow_cookie(runtime.settings), "")
    return await run_in_threadpool(_ensure_flow, runtime, secret, return_to)


def with_flow(response: Response, runtime: Runtime, started: Started) -> Response:
    if started.new:
        set_flow_cookie(response, runtime.settings, started.secret)
    return response


async def sign_in_page(request: Request) -> Response:
    """The ways in that this installation offers. `?next=PATH` names the page to return to
    (kept server-side, and only when it is a local portal path)."""
    runtime = runtime_of(request)
    started = await ensure_flow(request, request.query_params.get("next"))
    settings = runtime.settings
    values = {
        "csrf": started.flow.csrf_token,
        "oidc": settings.oidc_name if settings.oidc_enabled else None,
        "email_links": not settings.oidc_enabled,
        "email": "",
        "problem": None,
    }
    return with_flow(page(request, "sign_in.html", values), runtime, started)


def _sign_out(runtime: Runtime, secret: str, csrf: str) -> None:
    with runtime.uow(runtime.now()) as uow:
        found = sign_in.visitor(
            uow, secret, runtime.session_rules, runtime.settings.default_time_zone
        )
        if found is None:
            return  # already over: signing out again is harmless
        check_csrf({"csrf": csrf}, found.csrf_token)
        sign_in.sign_out(uow, secret)


async def sign_out(request: Request) -> Response:
    """End this browser's session (its row is deleted) and forget the cookie."""
    runtime = runtime_of(request)
    form = await read_form(request)
    secret = request.cookies.get(session_cookie(runtime.settings), "")
    if secret:
        await run_in_threadpool(_sign_out, runtime, secret, form.get("csrf", ""))
    response = redirect("/auth/signed-out")
    clear_cookie(response, runtime.settings, session_cookie(runtime.settings))
    return response


async def signed_out(request: Request) -> Response:
    return page(request, "signed_out.html")


def install(app: FastAPI) -> None:
    app.add_api_route("/auth/sign-in", sign_in_page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/auth/sign-out", sign_out, methods=["POST"], include_in_schema=False)
    app.add_api_route("/auth/signed-out", signed_out, methods=["GET"], include_in_schema=False)
