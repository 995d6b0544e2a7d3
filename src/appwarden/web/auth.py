"""Who is calling, and may they? Bearer tokens, the permission check, and the closed allowlist.

`Principal` (the caller) and how a bearer secret becomes one live in `usecases.tokens`.

Every route is declared with a `Guard` dependency: `Depends(require(Permission.X))` for the API
(a bearer token), or the pages' session guard (`web.sessions.SessionGuard`: a session cookie,
with a permission for admin pages). The exceptions are the routes of `PUBLIC_ROUTES`, each of
which names the credential it relies on instead (docs/architecture.md); an entry ending in `/*`
covers every route under that prefix (the sign-in routes, `/auth/*`).
Two backstops make forgetting the check fail closed rather than open:

1. `check_guarded(app)` walks every route when the application is built and again at start-up,
   and refuses to run if a route outside the allowlist has no guard dependency (a Mount, a
   plain Starlette route or a websocket outside the allowlist is refused outright: it cannot
   carry one).
2. `AuthzBackstop`, a middleware: a `require` that passed marks the request; a response of a
   non-allowlisted route that is about to succeed (status < 400) without that mark is replaced
   by a 500 problem and logged, so a route that escaped the first check still leaks nothing.
   (A page whose guard found no session answers a redirect to sign in: that handler marks the
   request itself, as it reveals nothing but the sign-in page's address.)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated, Any, Final, cast

from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appwarden.errors import PermissionDenied
from appwarden.usecases import tokens
from appwarden.usecases.tokens import Principal as Principal  # the routes' dependency type
from appwarden.vocabulary import Permission
from appwarden.web import Runtime
from appwarden.web.errors import Unauthenticated, send_problem

log = logging.getLogger("appwarden.web")

# The closed allowlist: route path -> the credential it relies on instead of an API token.
# Adding an entry means naming its credential (docs/architecture.md); test_routes_are_guarded
# enumerates every route so nothing escapes. /metrics and /openapi.json are NOT here: they need
# `read`.
PUBLIC_ROUTES: Final[Mapping[str, str]] = {
    "/healthz": "none: liveness answers {status: ok} and reveals nothing else",
    "/readyz": "none: readiness answers ready or unavailable, without error details",
    "/gate/forward": "the proxy's: X-Appwarden-Proxy-Key (32+ bytes, constant time) or a "
    "loopback socket peer",
    "/gate/forward/{rest:path}": "the proxy's, as /gate/forward (Envoy's path_prefix form)",
    "/gate/explain": "the proxy's, as /gate/forward (nginx fetches the 403 explanation here)",
    "/osquery/enroll": "osquery's enroll secret (APPWARDEN_OSQUERY_ENROLL_SECRET, 16+ bytes, "
    "constant time); the route is off while it is unset",
    "/osquery/config": "an osquery node key issued by /osquery/enroll (stored as SHA-256)",
    "/osquery/log": "an osquery node key, as /osquery/config",
    "/osquery/distributed/read": "an osquery node key, as /osquery/config",
    "/osquery/distributed/write": "an osquery node key, as /osquery/config",
    "/mdm/webhook/{secret}": "the path secret APPWARDEN_MDM_WEBHOOK_SECRET (32+ bytes, constant "
    "time; redacted in the access log); the route is off while it is unset",
    "/mdm/commands/{secret}": "the path secret, as /mdm/webhook/{secret}",
    "/agent/enroll": "a one-time enrolment code (stored as SHA-256, 15 minutes, bound to one "
    "device); the route is off while APPWARDEN_AGENT_SECRET is unset",
    "/agent/report": "the agent's per-device key: HMAC-SHA256 over method, path, time and body "
    "digest, time within 5 minutes; writes only its own device",
    "/checks/manifest": "the agent's per-device key, as /agent/report",
    "/checks/answer": "the answer's own MAC under the device's key, a single-use nonce of a "
    "manifest issued to that device, and a time newer than its last answer",
    "/auth/*": "the sign-in's own: an OIDC answer matched to its flow's state and nonce, a "
    "single-use emailed link consumed by POST, or an admin password; each form carries its "
    "flow's CSRF token, attempts are rate-limited; sign-out needs the session and its CSRF token",
    "/assets/{name}": "none: the pages' stylesheet and script, the same for everyone",
}


def is_public(path: str) -> bool:
    """Is this route template (or request path) on the allowlist?"""
    if path in PUBLIC_ROUTES:
        return True
    return any(
        key.endswith("/*") and path.startswith(key[:-1]) for key in PUBLIC_ROUTES if key != "/*"
    )


# Scope keys this module writes (the request's scope dict is shared by middleware and routes).
AUTHZ_KEY: Final = "appwarden.authz"
TOKEN_KEY: Final = "appwarden.token"  # noqa: S105 - a scope key, not a secret
PERSON_KEY: Final = "appwarden.person"  # a session's person, as `person:<id>` (never an address)

_bearer = HTTPBearer(
    auto_error=False,
    description="An API token: `Authorization: Bearer aw_<id>_<secret>` "
    "(create one with `appwarden token create`).",
)


def runtime_of(request: Request) -> Runtime:
    return cast(Runtime, request.app.state.runtime)


def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Resolve the bearer token; 401 unless it is a live token. Records use at most once a
    minute (a conditional UPDATE), so authentication is a read on almost every request."""
    if credentials is None:
        raise Unauthenticated(
            "this route needs an API token: Authorization: Bearer <token>", invalid_token=False
        )
    runtime = runtime_of(request)
    now = runtime.now()
    with runtime.uow(now, write=False) as uow:
        caller = tokens.authenticate(uow, credentials.credentials)
    if caller is None:
        raise Unauthenticated("the token is unknown or revoked", invalid_token=True)
    principal = caller.principal
    if caller.stale:
        with runtime.uow(now) as uow:
            tokens.touch(uow, principal.token_id)
    request.scope[TOKEN_KEY] = principal.name
    return principal


class Guard:
    """A route's check, as a dependency. `label` names what it checks (a permission, or a
    session): `check_guarded` accepts a route that depends on at least one."""

    label: str = ""


class Require(Guard):
    """The permission check as a dependency: `Depends(require(Permission.X))`."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission
        self.label = str(permission)

    def __repr__(self) -> str:
        return f"require({self.permission})"

    def __call__(
        self, request: Request, principal: Annotated[Principal, Depends(authenticate)]
    ) -> Principal:
        if not principal.allows(self.permission):
            raise PermissionDenied(
                f"the token {principal.name!r} lacks the permission {self.permission}"
            )
        request.scope[AUTHZ_KEY] = str(self.permission)
        return principal


def require(permission: Permission) -> Require:
    return Require(permission)


def _requirements(dependant: Dependant) -> list[str]:
    found = []
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, Guard):
            found.append(dependency.call.label)
        found += _requirements(dependency)
    return found


def required_permissions(route: BaseRoute) -> list[str]:
    """What a route checks: permissions (`read`), sessions (`session`, `session:read`); empty:
    nothing."""
    if isinstance(route, APIRoute):
        return _requirements(route.dependant)
    return []


def route_path(route: BaseRoute) -> str:
    return str(getattr(route, "path", "") or getattr(route, "path_format", ""))


class UnguardedRoute(RuntimeError):
    """A route outside the allowlist does not check a permission: the application refuses to run."""


def _describe(route: BaseRoute) -> str:
    path = route_path(route)
    if not path:  # e.g. FastAPI's wrapper of an included router: its routes cannot be inspected
        return f"{type(route).__name__} (add routes to the app itself, not via include_router)"
    return f"{','.join(sorted(getattr(route, 'methods', None) or ['*']))} {path}"


def check_guarded(app: FastAPI) -> None:
    """Raise UnguardedRoute unless every route outside PUBLIC_ROUTES checks a permission."""
    unguarded = [
        _describe(route)
        for route in app.routes
        if not is_public(route_path(route)) and not required_permissions(route)
    ]
    if unguarded:
        raise UnguardedRoute(
            "routes without a permission check (declare Depends(require(Permission.X)) or a "
            "session guard, or add the path to PUBLIC_ROUTES naming its credential): "
            + "; ".join(unguarded)
        )


class AuthzBackstop:
    """Fail closed at run time: see the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        blocked = False

        async def guarded_send(message: Message) -> None:
            nonlocal blocked
            if blocked:
                return
            if message["type"] == "http.response.start" and message["status"] < 400:
                route: Any = scope.get("route")
                path = route_path(route) if route is not None else scope.get("path", "")
                if not is_public(path) and AUTHZ_KEY not in scope:
                    blocked = True
                    log.error("route %s answered without a permission check: blocked", path)
                    await send_problem(
                        send,
                        500,
                        "internal_error",
                        "internal error",
                        str(scope.get("path", "")),
                    )
                    return
            await send(message)

        await self.app(scope, receive, guarded_send)
