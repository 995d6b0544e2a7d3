"""Server-rendered HTML pages (the portal, sign-in, admin pages): templates, the headers every page
sends, error pages, and the two static assets.

Templates live in `web/templates/` (Jinja2, autoescaped, undefined variables are errors) and
receive plain values only: every query has run, and its unit of work closed, before `render` is
called (a test counts SQL statements around it). Wording lives in the templates; formatting of
instants and durations lives here, as filters (`instant`, `remaining`, `iso`).

Every page is sent with `Referrer-Policy: no-referrer` (a sign-in link's URL never leaves in a
Referer), a Content-Security-Policy that allows only this origin's stylesheet and script,
`Cache-Control: no-store` (pages show one person's data and carry CSRF tokens) and frame denial.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import jinja2
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse, Response

from appwarden.errors import NotFound
from appwarden.notifications.messages import format_instant
from appwarden.timeutil import iso, utc
from appwarden.usecases import sign_in
from appwarden.web import Runtime
from appwarden.web.auth import AUTHZ_KEY, runtime_of
from appwarden.web.sessions import CsrfRefused, SignInRequired, set_flow_cookie

TEMPLATE_DIR: Final = Path(__file__).parent / "templates"
ASSET_DIR: Final = Path(__file__).parent / "assets"
ASSETS: Final[Mapping[str, str]] = {
    "portal.css": "text/css; charset=utf-8",
    "portal.js": "text/javascript; charset=utf-8",
}

PAGE_HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

_TITLES: Final[Mapping[int, str]] = {
    400: "This request is not valid",
    403: "Not allowed",
    404: "Page not found",
    405: "Not allowed",
    422: "Please check what you entered",
    429: "Too many attempts",
    503: "Temporarily unavailable",
}


# ── formatting (filters) ──────────────────────────────────────────────────────────────────────


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}{'' if count == 1 else 's'}"


def remaining(due: datetime, now: datetime) -> str:
    """How long until `due`, in words a phone screen fits: "14 hours, 59 minutes left",
    "2 days, 3 hours left", "less than a minute left", or "passed 3 hours ago"."""
    seconds = int((utc(due) - utc(now)).total_seconds())
    later = seconds > 0
    minutes_total = abs(seconds) // 60
    days, rest = divmod(minutes_total, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        parts = [_plural(days, "day")] + ([_plural(hours, "hour")] if hours else [])
    elif hours:
        parts = [_plural(hours, "hour")] + ([_plural(minutes, "minute")] if minutes else [])
    elif minutes:
        parts = [_plural(minutes, "minute")]
    else:
        return "less than a minute left" if later else "just passed"
    text = ", ".join(parts)
    return f"{text} left" if later else f"passed {text} ago"


def _instant(value: datetime | None, time_zone: str) -> str:
    return "" if value is None else format_instant(value, time_zone)


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters.update(instant=_instant, remaining=remaining, iso=iso)
    return env


def render(template: str, values: Mapping[str, Any]) -> str:
    """The one place a page is rendered: plain values in, HTML out, no store access."""
    return environment().get_template(template).render(values)


# ── responses ─────────────────────────────────────────────────────────────────────────────────


def page(
    request: Request,
    template: str,
    values: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """A page: `values` plus what every page shows (the organisation, the signed-in visitor)."""
    runtime = runtime_of(request)
    context: dict[str, Any] = {
        "organisation": runtime.settings.organisation,
        "visitor": None,
        "path": request.url.path,
    }
    context.update(values or {})
    body = render(template, context)
    return HTMLResponse(body, status_code=status, headers={**PAGE_HEADERS, **(headers or {})})


def redirect(location: str) -> RedirectResponse:
    """A 303 to a local path (after a form, or to sign in), with the pages' headers."""
    return RedirectResponse(location, status_code=303, headers=dict(PAGE_HEADERS))


async def page_error(
    request: Request, status: int, code: str, detail: str, headers: Mapping[str, str]
) -> Response:
    """An error on a page path, as a page. A 404 says the same whatever is missing, so a device
    of someone else's reads exactly like one that does not exist."""
    del code  # the page says it in words
    if status == 404:
        detail = "There is nothing here, or it is not yours to see."
    elif status >= 500:
        detail = "Something went wrong on our side. Please try again in a minute."
    return page(
        request,
        "error.html",
        {"status": status, "title": _TITLES.get(status, "Something went wrong"), "detail": detail},
        status=status,
        headers=headers,
    )


def _begin(runtime: Runtime, return_to: str | None) -> str:
    with runtime.uow(runtime.now()) as uow:
        _, secret = sign_in.begin_flow(uow, return_to, runtime.session_rules)
    return secret


async def _sign_in_required(request: Request, exc: Exception) -> Response:
    """No session: remember the page asked for (server-side, with a new flow) and go sign in.
    The redirect reveals nothing, so it is allowed past the authorisation backstop."""
    assert isinstance(exc, SignInRequired)
    runtime = runtime_of(request)
    secret = await run_in_threadpool(_begin, runtime, exc.return_to)
    request.scope[AUTHZ_KEY] = "none: a redirect to sign in"
    response = redirect("/auth/sign-in")
    set_flow_cookie(response, runtime.settings, secret)
    return response


async def _csrf_refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CsrfRefused)
    detail = (
        "This form could not be accepted: it was sent without its security token, or from an "
        "old page. Go back, reload the page and try again."
    )
    return await page_error(request, 403, "csrf", detail, {})


def install(app: FastAPI) -> None:
    app.state.page_errors = page_error
    app.add_exception_handler(SignInRequired, _sign_in_required)
    app.add_exception_handler(CsrfRefused, _csrf_refused)

    @app.get("/assets/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        """The pages' stylesheet and script (public: the same for everyone)."""
        if name not in ASSETS:
            raise NotFound("no such asset")
        body = (ASSET_DIR / name).read_bytes()
        return Response(
            body,
            media_type=ASSETS[name],
            headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
        )
