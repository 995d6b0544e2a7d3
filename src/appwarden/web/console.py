"""The admin console, `/admin/` (docs/console.md): what the command line does for an admin, in a
browser, through the same use cases.

Each console module (`web.console_policies`, …) lists its routes as `Route`s; `install(app,
…)` adds them under `/admin/`. A route's endpoint declares what it needs with one dependency:

    async def page(request: Request, visitor: Annotated[Visitor, signed_in(Permission.READ)]):
    async def act(request: Request, posted: Annotated[Posted, posted(Permission.POLICIES_APPROVE)]):

`signed_in` is the session guard (`web.sessions.SessionGuard`): no session, sign in; a session
without the permission (an emailed link's never has one), 403. `posted` adds the form, read
bounded, and its CSRF check, both before anything touches the store. The use case checks the
permission again as the actor (`run_as`): the page's check is what shows or hides a button, the
use case's is what holds.

Work runs with `run_as`: a unit of work at the clock's now whose actor is the visitor's email,
exactly as `appwarden … --as EMAIL` would run it, so the audit log reads the same whichever front
acted. Lists page with `window_of` (a bounded `usecases.paging.Window` from the query) and
`next_page_url`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, Response

from appwarden.errors import InvalidInput, Problem
from appwarden.usecases.paging import DEFAULT_PAGE_SIZE, Page, Window
from appwarden.usecases.sign_in import Visitor
from appwarden.vocabulary import Permission
from appwarden.web.auth import Guard, runtime_of
from appwarden.web.pages import page
from appwarden.web.sessions import MAX_FORM_BYTES, SessionGuard, check_csrf, read_form

PREFIX: Final = "/admin/"

#: The console's navigation: (label, path). Every console page shows it.
NAV: Final[tuple[tuple[str, str], ...]] = (
    ("Dashboard", "/admin/"),
    ("Policies", "/admin/policies"),
    ("Approvals", "/admin/approvals"),
    ("Devices", "/admin/devices"),
    ("People", "/admin/people"),
    ("Conflicts", "/admin/conflicts"),
    ("Quarantine", "/admin/quarantine"),
    ("Sources", "/admin/sources"),
    ("Notices", "/admin/notices"),
    ("Exemptions", "/admin/exemptions"),
    ("Settings", "/admin/settings"),
    ("Audit", "/admin/audit"),
)


@dataclass(frozen=True, slots=True)
class Route:
    """A console route: `path` below /admin/ ("" is the dashboard), its endpoint and method."""

    path: str
    endpoint: Callable[..., Awaitable[Response]]
    method: str = "GET"


def signed_in(permission: Permission) -> Any:
    """The dependency of a console page: the visitor, whose session allows `permission`."""
    return Depends(SessionGuard(permission))


@dataclass(frozen=True, slots=True)
class Posted:
    """A console form that passed its checks: who posted it, and its fields."""

    visitor: Visitor
    form: Mapping[str, str]

    def field(self, name: str, *, max_chars: int = 200) -> str:
        """A field's value, at most `max_chars` (longer is refused, located, nothing changed)."""
        value = self.form.get(name, "")
        if len(value) > max_chars:
            raise InvalidInput(
                f"{name}: at most {max_chars} characters",
                problems=[Problem(f"form:{name}", f"at most {max_chars} characters")],
            )
        return value


class _PostedForm(Guard):
    """`posted`'s dependency: the session guard, then the bounded form and its CSRF check."""

    def __init__(self, permission: Permission, max_bytes: int, files: bool) -> None:
        self.session = SessionGuard(permission)
        self.label = self.session.label
        self.max_bytes = max_bytes
        self.files = files

    def __repr__(self) -> str:
        return f"posted({self.label})"

    async def __call__(self, request: Request) -> Posted:
        visitor = await self.session(request)
        form = await read_form(request, max_bytes=self.max_bytes, files=self.files)
        check_csrf(form, visitor.csrf_token)
        return Posted(visitor, form)


def posted(permission: Permission, *, max_bytes: int = MAX_FORM_BYTES, files: bool = False) -> Any:
    """The dependency of a console action (a POST): the session allows `permission`, the form
    (at most `max_bytes`; `files`: a multipart form with a file input too) carries the session's
    CSRF token."""
    return Depends(_PostedForm(permission, max_bytes, files))


async def run_as(
    request: Request,
    visitor: Visitor,
    work: Callable[..., Any],
    *args: Any,
    write: bool = True,
    **kwargs: Any,
) -> Any:
    """`work(uow, *args, **kwargs)` in one unit of work at the clock's now, as the visitor (the
    actor the use case checks and the audit log records), off the event loop."""
    runtime = runtime_of(request)

    def run() -> Any:
        with runtime.uow(runtime.now(), actor=visitor.email, write=write) as uow:
            return work(uow, *args, **kwargs)

    return await run_in_threadpool(run)


def window_of(request: Request, *, size: int = DEFAULT_PAGE_SIZE) -> Window:
    """The page a list is asked for: `?size=N` (bounded) and `?after=CURSOR`."""
    asked = request.query_params.get("size", "")
    if asked and not asked.isdigit():
        raise InvalidInput("size: expected a number", problems=[Problem("size", "not a number")])
    return Window(size=int(asked) if asked else size, after=request.query_params.get("after"))


def next_page_url(request: Request, shown: Page[Any]) -> str | None:
    """This list's next page, with its other query parameters (filters) kept."""
    if shown.next_after is None:
        return None
    query = {k: v for k, v in request.query_params.items() if k != "after"}
    query["after"] = shown.next_after
    return f"{request.url.path}?{urlencode(query)}"


def console_page(
    request: Request,
    template: str,
    visitor: Visitor,
    values: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
) -> HTMLResponse:
    """A console page (its template extends `_console.html`): `values`, the visitor, the nav."""
    context = {"visitor": visitor, "nav": NAV, **(values or {})}
    return page(request, template, context, status=status)


def install(app: FastAPI, *route_sets: Iterable[Route]) -> None:
    """Add each console module's routes under /admin/."""
    for routes in route_sets:
        for route in routes:
            app.add_api_route(
                PREFIX + route.path,
                route.endpoint,
                methods=[route.method],
                include_in_schema=False,
            )
