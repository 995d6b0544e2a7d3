"""Cookies, CSRF, forms and client addresses for the pages (the portal and sign-in).

Cookies are `HttpOnly`, `SameSite=Lax`, `Path=/` and, unless APPWARDEN_COOKIE_SECURE is false,
`Secure` with the `__Host-` name prefix (which browsers accept only from a secure origin, without
a Domain: no sibling host can set or overwrite it). Two cookies exist: the session, and the
sign-in flow a browser follows before it has one. Each holds a random secret whose SHA-256 is all
the store keeps.

Every form a cookie authenticates carries its session's CSRF token (`check_csrf`); sign-in forms
carry their flow's, so nobody can sign a browser in behind its back. Forms are read here
(`read_form`), bounded: URL-encoded, or multipart where a page offers a file upload (the console's
policy editor), parsed by the standard library.

Who the client is (for rate limits and logs) is `web.clients.client_address`.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from email import policy as email_policy
from email.parser import BytesParser
from typing import Annotated, Final
from urllib.parse import parse_qsl

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from appwarden.errors import InvalidInput, PermissionDenied, Problem
from appwarden.settings import Settings
from appwarden.usecases import sign_in
from appwarden.usecases.sign_in import Visitor
from appwarden.vocabulary import ROLE_METHODS, Permission
from appwarden.web import Runtime
from appwarden.web.api import read_body
from appwarden.web.auth import AUTHZ_KEY, PERSON_KEY, Guard, runtime_of
from appwarden.web.clients import client_address

MAX_FORM_BYTES: Final = 16 * 1024
MAX_FORM_FIELDS: Final = 20
#: How long a browser keeps a flow cookie (the flow itself expires in the store too).
FLOW_COOKIE_SECONDS: Final = 30 * 60


def session_cookie(settings: Settings) -> str:
    return "__Host-appwarden-session" if settings.cookie_secure else "appwarden-session"


def flow_cookie(settings: Settings) -> str:
    return "__Host-appwarden-sign-in" if settings.cookie_secure else "appwarden-sign-in"


def _set_cookie(
    response: Response, settings: Settings, name: str, value: str, max_age: int
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        secure=settings.cookie_secure,
        httponly=True,
        samesite="lax",
    )


def set_session_cookie(response: Response, runtime: Runtime, secret: str) -> None:
    settings = runtime.settings
    lifetime = int(runtime.session_rules.lifetime.total_seconds())
    _set_cookie(response, settings, session_cookie(settings), secret, lifetime)
    clear_cookie(response, settings, flow_cookie(settings))


def set_flow_cookie(response: Response, settings: Settings, secret: str) -> None:
    _set_cookie(response, settings, flow_cookie(settings), secret, FLOW_COOKIE_SECONDS)


def clear_cookie(response: Response, settings: Settings, name: str) -> None:
    response.delete_cookie(
        name, path="/", secure=settings.cookie_secure, httponly=True, samesite="lax"
    )


# ── forms and CSRF ────────────────────────────────────────────────────────────────────────────


async def read_form(
    request: Request, *, max_bytes: int = MAX_FORM_BYTES, files: bool = False
) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body as a dict (the first of a repeated field),
    bounded in bytes and fields; an empty body is an empty form; anything else is refused with a
    located problem. `files`: a `multipart/form-data` body (a form with a file input) is read
    too, each part as UTF-8 text, a file's by its field name and its name as `FIELD.filename`."""
    body = await read_body(request, max_bytes)
    if not body:
        return {}
    content_type = request.headers.get("content-type", "")
    kind = content_type.split(";")[0].strip().lower()
    if files and kind == "multipart/form-data":
        return _multipart(content_type, body)
    if kind != "application/x-www-form-urlencoded":
        raise InvalidInput(
            "expected a form (application/x-www-form-urlencoded)",
            problems=[form_problem("content-type", "expected a form")],
        )
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput(
            "the form is not valid", problems=[form_problem("form", "not a valid form")]
        ) from None
    form: dict[str, str] = {}
    for key, value in pairs:
        form.setdefault(key, value)
    return form


def _multipart(content_type: str, body: bytes) -> dict[str, str]:
    """A multipart form, parsed by the standard library's MIME parser (the body is already
    bounded): each part's text by its field name, the first of a repeated one."""
    message = BytesParser(policy=email_policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise InvalidInput(
            "the form is not valid", problems=[form_problem("form", "not a valid form")]
        )
    form: dict[str, str] = {}
    for count, part in enumerate(message.iter_parts()):
        name = part.get_param("name", header="content-disposition")
        if count >= MAX_FORM_FIELDS or not isinstance(name, str):
            raise InvalidInput(
                "the form is not valid", problems=[form_problem("form", "not a valid form")]
            )
        payload = part.get_payload(decode=True)
        raw = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            form.setdefault(f"{name}.filename", filename)
        try:
            form.setdefault(name, raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidInput(
                f"{name}: not UTF-8 text", problems=[form_problem(name, "not UTF-8 text")]
            ) from None
    return form


def form_problem(where: str, message: str) -> Problem:
    return Problem(f"form:{where}", message)


class CsrfRefused(Exception):
    """A form posted without its page's token (or with another's): 403, nothing changed."""


def check_csrf(form: Mapping[str, str], expected: str) -> None:
    offered = form.get("csrf", "")
    if not expected or not hmac.compare_digest(offered.encode(), expected.encode()):
        raise CsrfRefused("this form's security token is missing or does not match")


def client_of(request: Request) -> str | None:
    runtime = runtime_of(request)
    return client_address(request.scope, runtime.trusted_networks)


# ── the session guard ─────────────────────────────────────────────────────────────────────────


class SignInRequired(Exception):
    """No live session: the browser is sent to sign in, returning to `return_to` afterwards."""

    def __init__(self, return_to: str | None) -> None:
        super().__init__("sign-in required")
        self.return_to = return_to


def _visitor(runtime: Runtime, secret: str) -> Visitor | None:
    now = runtime.now()
    settings = runtime.settings
    with runtime.uow(now, write=False) as uow:
        found = sign_in.visitor(uow, secret, runtime.session_rules, settings.default_time_zone)
    if found is not None and found.stale:
        with runtime.uow(now) as uow:
            sign_in.touch(uow, found.session_id)
    return found


class SessionGuard(Guard):
    """A page's check: a live session, and `permission` when one is named (which only a session
    opened with OIDC or a password can carry). Without a session the browser is sent to sign in;
    with one lacking the permission, 403."""

    def __init__(self, permission: Permission | None = None) -> None:
        self.permission = permission
        self.label = "session" if permission is None else f"session:{permission}"

    def __repr__(self) -> str:
        return f"SessionGuard({self.label})"

    async def __call__(self, request: Request) -> Visitor:
        runtime = runtime_of(request)
        secret = request.cookies.get(session_cookie(runtime.settings), "")
        found = await run_in_threadpool(_visitor, runtime, secret) if secret else None
        if found is None:
            target = request.url.path
            if request.url.query:
                target += f"?{request.url.query}"
            raise SignInRequired(target if request.method == "GET" else None)
        request.scope[PERSON_KEY] = f"person:{found.person_id}"
        if self.permission is not None and not found.allows(self.permission):
            raise PermissionDenied(_refusal(found, self.permission))
        request.scope[AUTHZ_KEY] = self.label
        return found


def _refusal(visitor: Visitor, permission: Permission) -> str:
    if visitor.method not in ROLE_METHODS:
        return (
            "This page needs an admin role, and a session opened by an email link never carries "
            "one. Sign out, then sign in with single sign-on or your admin password."
        )
    return f"Your roles do not include the permission this page needs ({permission})."


#: The dependency type of a page that needs a signed-in employee.
Employee = Annotated[Visitor, Depends(SessionGuard())]
