"""The one place errors become HTTP: `application/problem+json` (RFC 9457).

    {"type": "about:blank", "title": "Unprocessable Content", "status": 422,
     "detail": "inventory: 1 problem(s)", "instance": "/v1/inventory",
     "code": "invalid_input",
     "errors": [{"where": "$.devices[3].report.apps[0].namespace", "message": "..."}]}

`title` is the HTTP status phrase (as `about:blank` asks), `code` names the kind of error for
programs, `errors` lists every located problem (empty when there is none). AppwardenError maps by
its class (InputTooLarge 413, Ambiguous and InvalidInput 422, NotFound 404, Conflict 409,
PermissionDenied 403); a missing or bad token is 401 with `WWW-Authenticate: Bearer`; anything
unexpected is a 500 that says nothing about its cause (the log has it, under the request id).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any, Final, cast

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Send

from appwarden.errors import (
    Ambiguous,
    AppwardenError,
    Conflict,
    IdentifierConflict,
    InputTooLarge,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Problem,
    TooManyAttempts,
)

PROBLEM_JSON: Final = "application/problem+json"
#: Paths answered with HTML pages (the portal, sign-in, admin pages): their errors are pages too.
PAGE_PREFIXES: Final = ("/me/", "/auth/", "/admin/")

#: How a page path's error is answered: (request, status, code, detail) -> an HTML response.
#: `web.pages.install` sets it; without it every error is problem+json.
PageErrors = Callable[[Request, int, str, str, Mapping[str, str]], Awaitable[Response]]


def is_page(path: str) -> bool:
    return path in ("/me", "/admin") or path.startswith(PAGE_PREFIXES)


def _page_errors(request: Request) -> PageErrors | None:
    if not is_page(request.url.path):
        return None
    return cast(PageErrors | None, getattr(request.app.state, "page_errors", None))


# Most specific class first: the first match wins.
_MAPPING: Final[Sequence[tuple[type[AppwardenError], int, str]]] = (
    (InputTooLarge, 413, "input_too_large"),
    (Ambiguous, 422, "ambiguous"),
    (InvalidInput, 422, "invalid_input"),
    (NotFound, 404, "not_found"),
    (IdentifierConflict, 409, "identifier_conflict"),
    (Conflict, 409, "conflict"),
    (PermissionDenied, 403, "permission_denied"),
    (TooManyAttempts, 429, "too_many_requests"),
)


class ProblemItem(BaseModel):
    where: str = Field(description="A JSON path into the body, or `path:NAME` / `query:NAME`.")
    message: str


class ProblemBody(BaseModel):
    """The shape of every error response (Content-Type application/problem+json)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    code: str
    errors: list[ProblemItem] = Field(default_factory=list)


class Unauthenticated(Exception):
    """No token, a malformed one, an unknown one or a revoked one: 401."""

    def __init__(self, detail: str, *, invalid_token: bool) -> None:
        super().__init__(detail)
        self.detail = detail
        self.invalid_token = invalid_token


class ServiceUnavailable(Exception):
    """The store cannot serve requests (unreachable, schema not current): 503."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


# RFC 9110 reason phrases (Python's HTTPStatus names some differently across versions).
_PHRASES: Final[Mapping[int, str]] = {
    413: "Content Too Large",
    422: "Unprocessable Content",
}


def phrase(status: int) -> str:
    return _PHRASES.get(status) or HTTPStatus(status).phrase


def status_of(error: AppwardenError) -> tuple[int, str]:
    for cls, status, code in _MAPPING:
        if isinstance(error, cls):
            return status, code
    return 400, "error"


def problem_dict(
    status: int,
    code: str,
    detail: str | None,
    *,
    instance: str | None = None,
    problems: Iterable[Problem] = (),
) -> dict[str, Any]:
    return {
        "type": "about:blank",
        "title": phrase(status),
        "status": status,
        "detail": detail,
        "instance": instance,
        "code": code,
        "errors": [{"where": p.where, "message": p.message} for p in problems],
    }


def problem_response(
    status: int,
    code: str,
    detail: str | None,
    *,
    instance: str | None = None,
    problems: Iterable[Problem] = (),
    headers: Mapping[str, str] | None = None,
) -> Response:
    body = problem_dict(status, code, detail, instance=instance, problems=problems)
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type=PROBLEM_JSON
    )


async def send_problem(send: Send, status: int, code: str, detail: str, instance: str) -> None:
    """Write a problem response straight to an ASGI `send` (for middleware)."""
    body = orjson.dumps(problem_dict(status, code, detail, instance=instance))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def json_path(loc: Sequence[str | int]) -> str:
    """A pydantic location as a JSON path: ("queries", 3, "device") -> $.queries[3].device"""
    parts = ["$"]
    for step in loc:
        parts.append(f"[{step}]" if isinstance(step, int) else f".{step}")
    return "".join(parts)


def _where(loc: Sequence[str | int]) -> str:
    if loc and loc[0] == "body":
        return json_path(loc[1:])
    if loc and loc[0] in ("path", "query", "header", "cookie"):
        return f"{loc[0]}:{'.'.join(str(s) for s in loc[1:])}"
    return json_path(loc)


def validation_problems(
    errors: Iterable[Mapping[str, Any]], *, body: bool = False
) -> list[Problem]:
    """Pydantic errors as located problems (`body`: locations are inside the request body)."""
    problems = []
    for error in errors:
        loc = tuple(error.get("loc", ()))
        where = json_path(loc) if body else _where(loc)
        problems.append(Problem(where, str(error.get("msg", "invalid"))))
    return problems


def invalid_body(exc: ValidationError) -> InvalidInput:
    problems = validation_problems(exc.errors(include_url=False, include_input=False), body=True)
    return InvalidInput(f"request body: {len(problems)} problem(s)", problems=problems)


async def _appwarden_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppwardenError)
    status, code = status_of(exc)
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyAttempts) else {}
    page = _page_errors(request)
    if page is not None:
        return await page(request, status, code, exc.message, headers)
    return problem_response(
        status,
        code,
        exc.message,
        instance=request.url.path,
        problems=exc.problems,
        headers=headers,
    )


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = validation_problems(exc.errors())
    page = _page_errors(request)
    if page is not None:
        return await page(request, 400, "invalid_input", "This request is not valid.", {})
    return problem_response(
        422,
        "invalid_input",
        f"request: {len(problems)} problem(s)",
        instance=request.url.path,
        problems=problems,
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = "not_found" if exc.status_code == 404 else "http_error"
    detail = exc.detail if isinstance(exc.detail, str) else phrase(exc.status_code)
    page = _page_errors(request)
    if page is not None:
        return await page(request, exc.status_code, code, detail, dict(exc.headers or {}))
    return problem_response(
        exc.status_code, code, detail, instance=request.url.path, headers=exc.headers
    )


async def _unauthenticated(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Unauthenticated)
    challenge = 'Bearer realm="appwarden"'
    if exc.invalid_token:
        challenge += ', error="invalid_token"'
    return problem_response(
        401,
        "unauthenticated",
        exc.detail,
        instance=request.url.path,
        headers={"WWW-Authenticate": challenge},
    )


async def _unavailable(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceUnavailable)
    page = _page_errors(request)
    if page is not None:
        return await page(
            request, 503, "unavailable", "appwarden cannot serve pages right now.", {}
        )
    return problem_response(503, "unavailable", exc.detail, instance=request.url.path)


def install(app: FastAPI) -> None:
    """Register the mapping. Unhandled exceptions are turned into a bare 500 by the
    observability middleware, which logs them under the request id."""
    app.add_exception_handler(AppwardenError, _appwarden_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Unauthenticated, _unauthenticated)
    app.add_exception_handler(ServiceUnavailable, _unavailable)


PROBLEM_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    status: {
        "model": ProblemBody,
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemBody"}}},
    }
    for status, description in (
        (401, "No token, or a malformed, unknown or revoked one"),
        (403, "The token lacks the permission this route needs"),
    )
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for a route: the common ones plus these statuses."""
    phrases = {
        404: "Unknown device (or other reference)",
        409: "A clash with stored state",
        422: "Invalid input; `errors` locates every problem",
        413: "The body is over the size limit",
        503: "The store is unavailable",
    }
    out = dict(PROBLEM_RESPONSES)
    for status in statuses:
        out[status] = {
            "model": ProblemBody,
            "description": phrases.get(status, phrase(status)),
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemBody"}}},
        }
    return out
