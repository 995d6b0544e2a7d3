"""The sign-in routes, `/auth/*` (the allowlist entry of `web.auth.PUBLIC_ROUTES`): the sign-in
page, sign-out, and each way in (docs/portal.md).

A browser that arrives without a session gets a sign-in flow: a cookie whose secret names a row
holding the page to return to and the CSRF token of the sign-in forms. The page to return to is
taken from that row at the end, never from the final request, and only a local portal path is
ever stored (`usecases.sign_in.safe_return_to`).
"""

from __future__ import annotations

import hmac
import logging
import re
from dataclasses import dataclass

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from appwarden.errors import NotFound, PermissionDenied
from appwarden.usecases import sign_in
from appwarden.usecases.sign_in import Flow, OidcClaims, OidcRequest, SignedIn
from appwarden.web import Runtime
from appwarden.web.auth import runtime_of
from appwarden.web.oidc import OidcClient, OidcFailed
from appwarden.web.pages import PAGE_HEADERS, page, redirect
from appwarden.web.sessions import (
    CsrfRefused,
    check_csrf,
    clear_cookie,
    client_of,
    flow_cookie,
    read_form,
    session_cookie,
    set_flow_cookie,
    set_session_cookie,
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


def _posted_flow(runtime: Runtime, secret: str, csrf: str) -> Flow:
    """The flow a sign-in form was posted from; CsrfRefused without its cookie and token."""
    with runtime.uow(runtime.now(), write=False) as uow:
        flow = sign_in.flow_of(uow, secret) if secret else None
    if flow is None:
        raise CsrfRefused("the sign-in form was posted without its flow")
    check_csrf({"csrf": csrf}, flow.csrf_token)
    return flow


async def posted_flow(request: Request, form: dict[str, str]) -> tuple[Flow, str]:
    runtime = runtime_of(request)
    secret = request.cookies.get(flow_cookie(runtime.settings), "")
    flow = await run_in_threadpool(_posted_flow, runtime, secret, form.get("csrf", ""))
    return flow, secret


def _sign_in_values(runtime: Runtime, flow: Flow) -> dict[str, object]:
    settings = runtime.settings
    return {
        "csrf": flow.csrf_token,
        "oidc": settings.oidc_name if settings.oidc_enabled else None,
        "email_links": not settings.oidc_enabled,
        "email": "",
        "problem": None,
    }


async def sign_in_page(request: Request) -> Response:
    """The ways in that this installation offers. `?next=PATH` names the page to return to
    (kept server-side, and only when it is a local portal path)."""
    runtime = runtime_of(request)
    started = await ensure_flow(request, request.query_params.get("next"))
    values = _sign_in_values(runtime, started.flow)
    return with_flow(page(request, "sign_in.html", values), runtime, started)


# ── email links ───────────────────────────────────────────────────────────────────────────────


def _request_link(runtime: Runtime, address: str, client: str | None, return_to: str) -> bool:
    with runtime.uow(runtime.now()) as uow:
        return sign_in.request_link(
            uow,
            address,
            client=client,
            return_to=return_to,
            rules=runtime.session_rules,
            config=runtime.notice_config,
        )


async def request_email_link(request: Request) -> Response:
    """Mail a sign-in link to an active person with this address. Every well-formed address
    gets the same answer (a redirect to "check your email"), known or not; past the rate limits,
    429 for any address."""
    runtime = runtime_of(request)
    if runtime.settings.oidc_enabled:
        raise NotFound("sign-in links are off: this installation signs in with OIDC")
    form = await read_form(request)
    flow, _ = await posted_flow(request, form)
    address = form.get("email", "").strip()
    if not sign_in.looks_like_address(address):
        values = {
            **_sign_in_values(runtime, flow),
            "email": address[:254],
            "problem": "Enter your work email address, like name@example.com.",
        }
        return page(request, "sign_in.html", values, status=422)
    queued = await run_in_threadpool(
        _request_link, runtime, address, client_of(request), flow.return_to
    )
    worker = getattr(request.app.state, "worker", None)
    if queued and worker is not None:
        worker.wake()  # the embedded worker sends it now, not at its next interval
    return redirect("/auth/check-email")


async def check_email(request: Request) -> Response:
    return page(request, "check_email.html")


def _link_usable(runtime: Runtime, token: str) -> bool:
    with runtime.uow(runtime.now(), write=False) as uow:
        return sign_in.link_usable(uow, token)


async def link_page(request: Request, token: str) -> Response:
    """The page a mailed link opens: a "Sign in" button. Opening it spends nothing (mail
    scanners open links too); only the button's POST does."""
    runtime = runtime_of(request)
    started = await ensure_flow(request)
    if not await run_in_threadpool(_link_usable, runtime, token):
        return with_flow(page(request, "link_invalid.html", status=400), runtime, started)
    values = {"csrf": started.flow.csrf_token, "token": token}
    return with_flow(page(request, "link.html", values), runtime, started)


def _spend(runtime: Runtime, token: str, flow_secret: str) -> SignedIn | None:
    with runtime.uow(runtime.now()) as uow:
        return sign_in.spend_link(uow, token, runtime.session_rules, flow_secret=flow_secret)


async def use_link(request: Request) -> Response:
    """Spend the link (once) and sign in; then the page the flow was asked from."""
    runtime = runtime_of(request)
    form = await read_form(request)
    _, flow_secret = await posted_flow(request, form)
    signed = await run_in_threadpool(_spend, runtime, form.get("token", ""), flow_secret)
    if signed is None:
        return page(request, "link_invalid.html", status=400)
    return await signed_in(request, signed)


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


def _end_session(runtime: Runtime, secret: str) -> None:
    with runtime.uow(runtime.now()) as uow:
        sign_in.sign_out(uow, secret)


async def signed_in(request: Request, signed: SignedIn) -> Response:
    """The answer to a successful sign-in: the new session's cookie, and the page to return to.
    A session this browser still held ends (its row is deleted): one browser, one session."""
    runtime = runtime_of(request)
    previous = request.cookies.get(session_cookie(runtime.settings), "")
    if previous:
        await run_in_threadpool(_end_session, runtime, previous)
    response = redirect(signed.return_to)
    set_session_cookie(response, runtime, signed.secret)
    return response


async def signed_out(request: Request) -> Response:
    return page(request, "signed_out.html")


# ── admin passwords ───────────────────────────────────────────────────────────────────────────


async def password_page(request: Request) -> Response:
    runtime = runtime_of(request)
    started = await ensure_flow(request, request.query_params.get("next"))
    values = {"csrf": started.flow.csrf_token, "email": "", "problem": None}
    return with_flow(page(request, "password.html", values), runtime, started)


def _password_sign_in(
    runtime: Runtime, address: str, password: str, client: str | None, flow_secret: str
) -> SignedIn | None:
    with runtime.uow(runtime.now()) as uow:
        return sign_in.password_sign_in(
            uow,
            address,
            password,
            client=client,
            rules=runtime.session_rules,
            flow_secret=flow_secret,
        )


async def password_sign_in(request: Request) -> Response:
    """An admin's address and password: a session carrying their roles. A wrong address and a
    wrong password get the same answer; both count against the rate limits."""
    runtime = runtime_of(request)
    form = await read_form(request)
    flow, flow_secret = await posted_flow(request, form)
    address = form.get("email", "").strip()[:254]
    signed = await run_in_threadpool(
        _password_sign_in,
        runtime,
        address,
        form.get("password", ""),
        client_of(request),
        flow_secret,
    )
    if signed is None:
        values = {
            "csrf": flow.csrf_token,
            "email": address,
            "problem": "That address and password do not match an administrator here.",
        }
        return page(request, "password.html", values, status=403)
    return await signed_in(request, signed)


# ── OpenID Connect ────────────────────────────────────────────────────────────────────────────

log = logging.getLogger("appwarden.web")
_ERROR_CODE = re.compile(r"[a-z_]{1,40}")


def oidc_of(request: Request) -> OidcClient:
    client = getattr(request.app.state, "oidc", None)
    if client is None:
        raise NotFound("single sign-on is not configured here")
    assert isinstance(client, OidcClient)
    return client


def _start_oidc(runtime: Runtime, flow_secret: str) -> OidcRequest:
    with runtime.uow(runtime.now()) as uow:
        started = sign_in.start_oidc(uow, flow_secret)
    assert started is not None  # the flow was made or found just before
    return started


async def oidc_start(request: Request) -> Response:
    """Send the browser to the provider (authorisation code flow, PKCE, state and nonce kept
    with this browser's flow)."""
    runtime = runtime_of(request)
    client = oidc_of(request)
    started = await ensure_flow(request, request.query_params.get("next"))
    expected = await run_in_threadpool(_start_oidc, runtime, started.secret)
    try:
        url = await run_in_threadpool(client.authorization_url, expected)
    except OidcFailed as exc:
        log.warning("single sign-on unavailable: %s", exc)
        raise PermissionDenied(f"Single sign-on is not available right now: {exc}.") from None
    response = RedirectResponse(url, status_code=303, headers=dict(PAGE_HEADERS))
    return with_flow(response, runtime, started)


def _expected(runtime: Runtime, flow_secret: str) -> OidcRequest | None:
    with runtime.uow(runtime.now(), write=False) as uow:
        return sign_in.expected_oidc(uow, flow_secret)


def _oidc_sign_in(runtime: Runtime, claims: OidcClaims, flow_secret: str) -> SignedIn:
    issuer = runtime.settings.oidc_issuer
    assert issuer is not None
    with runtime.uow(runtime.now()) as uow:
        return sign_in.oidc_sign_in(
            uow, claims, issuer=issuer, rules=runtime.session_rules, flow_secret=flow_secret
        )


async def oidc_callback(request: Request) -> Response:
    """The provider's answer: the state must be this browser's, the code is exchanged and the ID
    token checked (web.oidc), and the person it names is signed in (usecases.sign_in)."""
    runtime = runtime_of(request)
    client = oidc_of(request)
    flow_secret = request.cookies.get(flow_cookie(runtime.settings), "")
    expected = await run_in_threadpool(_expected, runtime, flow_secret) if flow_secret else None
    params = request.query_params
    if expected is None or not hmac.compare_digest(
        params.get("state", "").encode(), expected.state.encode()
    ):
        raise PermissionDenied(
            "This sign-in answer does not belong to a sign-in started in this browser, or it "
            "has expired. Start again."
        )
    error = params.get("error")
    if error is not None or not params.get("code"):
        shown = error if error and _ERROR_CODE.fullmatch(error) else "no code"
        raise PermissionDenied(f"The sign-in provider did not sign you in ({shown}).")
    try:
        claims = await run_in_threadpool(client.exchange, params["code"], expected)
    except OidcFailed as exc:
        log.warning("single sign-on refused: %s", exc)
        raise PermissionDenied(f"We could not sign you in: {exc}.") from None
    signed = await run_in_threadpool(_oidc_sign_in, runtime, claims, flow_secret)
    return await signed_in(request, signed)


def install(app: FastAPI) -> None:
    app.add_api_route("/auth/sign-in", sign_in_page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/auth/email", request_email_link, methods=["POST"], include_in_schema=False)
    app.add_api_route("/auth/check-email", check_email, methods=["GET"], include_in_schema=False)
    app.add_api_route("/auth/link/{token}", link_page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/auth/link", use_link, methods=["POST"], include_in_schema=False)
    app.add_api_route("/auth/password", password_page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/auth/password", password_sign_in, methods=["POST"], include_in_schema=False)
    app.add_api_route("/auth/oidc/start", oidc_start, methods=["GET"], include_in_schema=False)
    app.add_api_route(
        "/auth/oidc/callback", oidc_callback, methods=["GET"], include_in_schema=False
    )
    settings = app.state.runtime.settings
    app.state.oidc = OidcClient(settings) if settings.oidc_enabled else None
    app.add_api_route("/auth/sign-out", sign_out, methods=["POST"], include_in_schema=False)
    app.add_api_route("/auth/signed-out", signed_out, methods=["GET"], include_in_schema=False)
