"""Every route outside the closed allowlist authenticates and checks a permission
(docs/architecture.md, the web layer).

The route table is enumerated from the application itself, so a new route that is not added to
EXPECTED here fails, and a route without `Depends(require(...))` stops the application from
starting at all.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Mount
from tests.conftest import api_token, bearer

from appwarden.db.uow import unit_of_work
from appwarden.identity.tokens import revoke
from appwarden.settings import Settings
from appwarden.vocabulary import Permission
from appwarden.web.app import create_app
from appwarden.web.auth import (
    PUBLIC_ROUTES,
    UnguardedRoute,
    check_guarded,
    is_public,
    require,
    required_permissions,
    route_path,
)
from appwarden.web.errors import is_page

NOW = datetime(2020, 7, 11, 19, 0, tzinfo=UTC)

# (method, route template) -> the permission it must check. A new route must be added here.
EXPECTED = {
    ("POST", "/v1/inventory"): Permission.INVENTORY_WRITE,
    ("POST", "/v1/agent/codes"): Permission.INVENTORY_WRITE,
    ("GET", "/v1/conflicts"): Permission.READ,
    ("GET", "/v1/devices"): Permission.READ,
    ("GET", "/v1/devices/{device:path}"): Permission.READ,
    ("GET", "/v1/people/{email}"): Permission.READ,
    ("GET", "/v1/decisions/{device:path}/{resource}"): Permission.DECISIONS_READ,
    ("POST", "/v1/decisions"): Permission.DECISIONS_READ,
    ("GET", "/metrics"): Permission.READ,
    ("GET", "/openapi.json"): Permission.READ,
}
# Pages: (method, route template) -> what their session guard checks. Without a session a page
# sends the browser to sign in; an API token opens no page.
PAGES = {
    ("GET", "/me/"): "session",
    ("GET", "/admin/"): "session:read",
    ("GET", "/admin/policies"): "session:read",
    ("POST", "/admin/policies"): "session:policies:author",
    ("GET", "/admin/editor"): "session:policies:author",
    ("GET", "/admin/policies/{policy_id}"): "session:read",
    ("GET", "/admin/policies/{policy_id}/edit"): "session:policies:author",
    ("GET", "/admin/policies/{policy_id}/preview"): "session:read",
    ("POST", "/admin/policies/{policy_id}/propose"): "session:policies:author",
    ("POST", "/admin/policies/{policy_id}/approve"): "session:policies:approve",
    ("POST", "/admin/policies/{policy_id}/publish"): "session:policies:author",
    ("POST", "/admin/policies/{policy_id}/cancel"): "session:policies:author",
    ("POST", "/admin/policies/{policy_id}/retire"): "session:policies:retract",
    ("GET", "/admin/policies/{policy_id}/retract"): "session:policies:retract",
    ("POST", "/admin/policies/{policy_id}/retract/review"): "session:policies:retract",
    ("POST", "/admin/policies/{policy_id}/retract"): "session:policies:retract",
    ("GET", "/admin/approvals"): "session:read",
    # the console's device, people and operations pages (web.console_fleet, .console_operations)
    ("GET", "/admin/devices"): "session:read",
    ("GET", "/admin/devices/{device_id}"): "session:read",
    ("POST", "/admin/devices/{device_id}/merge"): "session:admin",
    ("GET", "/admin/people"): "session:read",
    ("GET", "/admin/conflicts"): "session:read",
    ("POST", "/admin/conflicts/{conflict_id}/settle"): "session:admin",
    ("GET", "/admin/quarantine"): "session:read",
    ("POST", "/admin/quarantine/{held_id}/settle"): "session:admin",
    ("GET", "/admin/sources"): "session:read",
    ("GET", "/admin/notices"): "session:read",
    ("POST", "/admin/notices/retry"): "session:notices:retry",
    ("GET", "/admin/exemptions"): "session:read",
    ("POST", "/admin/exemptions/{exemption_id}/decide"): "session:exemptions:decide",
    ("GET", "/admin/settings"): "session:admin",
    ("GET", "/admin/audit"): "session:read",
    ("GET", "/me/devices/{device}"): "session",
    ("POST", "/me/devices/{device}/exemptions"): "session",
    ("POST", "/me/devices/{device}/agent-code"): "session",
    ("GET", "/me/data"): "session",
    ("POST", "/me/devices/{device}/attestations"): "session",
    ("GET", "/me/privacy"): "session",
}
# JSON routes a person calls with their own portal session (never an API token): 401 without one.
PERSON_API = {("POST", "/v1/attestations"): "session"}


def _settings(store, **overrides) -> Settings:
    return Settings(
        database_url=store.url, env="test", clock="fixed:2020-07-11T12:00:00-07:00", **overrides
    )


def _concrete(path: str) -> str:
    """A request path for a route template: {device:path} -> udid:X, any other {name} -> email."""
    path = re.sub(r"\{[a-z_]+:path\}", "udid:00008110-000A1B2C3D4E801E", path)
    return re.sub(r"\{[a-z_]+\}", "email", path)


def _routes(app: FastAPI) -> list[tuple[str, str]]:
    found = []
    for route in app.routes:
        path = route_path(route)
        if isinstance(route, APIRoute):
            found += [(m, path) for m in sorted(route.methods) if m != "HEAD"]
        else:
            found.append(("*", path))
    return found


def test_every_route_outside_the_allowlist_needs_a_token_and_its_permission(store):
    app = create_app(_settings(store))
    routes = _routes(app)
    guarded = {r for r in routes if not is_public(r[1])}
    assert guarded == set(EXPECTED) | set(PAGES) | set(PERSON_API), (
        "a route was added or removed: review it"
    )
    exact = {path for _, path in routes if path in PUBLIC_ROUTES}
    assert exact | {"/auth/*"} == set(PUBLIC_ROUTES)
    assert any(path.startswith("/auth/") for _, path in routes)
    for route in app.routes:
        path = route_path(route)
        if is_public(path):
            continue
        assert isinstance(route, APIRoute)
        for method in route.methods - {"HEAD"}:
            expected = (
                EXPECTED.get((method, path))
                or PAGES.get((method, path))
                or PERSON_API[(method, path)]
            )
            assert required_permissions(route) == [expected]

    revoked = api_token(store, Permission.ADMIN, name="revoked")
    with unit_of_work(store.engine, now=NOW) as uow:
        revoke(uow, int(revoked.split("_")[1]))
    wrong = {
        needed: api_token(
            store, *(set(Permission) - {needed, Permission.ADMIN}), name=f"all-but-{needed}"
        )
        for needed in set(EXPECTED.values())
    }
    # The brief's pairs as well: a read-only token on write routes, a writer on read routes.
    narrow = {
        Permission.INVENTORY_WRITE: api_token(store, Permission.READ, name="reader"),
        Permission.DECISIONS_READ: api_token(store, Permission.INVENTORY_WRITE, name="writer"),
        Permission.READ: api_token(
            store, Permission.INVENTORY_WRITE, Permission.DECISIONS_READ, name="machine"
        ),
    }
    with TestClient(app) as client:
        for (method, template), needed in EXPECTED.items():
            url = _concrete(template)
            anonymous = client.request(method, url)
            assert anonymous.status_code == 401, (method, url)
            assert anonymous.headers["www-authenticate"].startswith("Bearer")
            assert anonymous.headers["content-type"] == "application/problem+json"
            assert anonymous.json()["status"] == 401

            for bad in ("Bearer aw_1_nope", "Bearer " + revoked, "Basic dXNlcjpwYXNz", "Bearer"):
                response = client.request(method, url, headers={"Authorization": bad})
                assert response.status_code == 401, (method, url, bad)
                assert response.headers["www-authenticate"].startswith("Bearer")

            for token in (wrong[needed], narrow[needed]):
                response = client.request(method, url, headers=bearer(token))
                assert response.status_code == 403, (method, url)
                assert response.headers["content-type"] == "application/problem+json"
                body = response.json()
                assert body["code"] == "permission_denied"
                assert str(needed) in body["detail"]

        for method, template in PAGES:
            for headers in ({}, bearer(api_token(store, Permission.ADMIN, name="page-admin"))):
                response = client.request(
                    method, _concrete(template), headers=headers, follow_redirects=False
                )
                assert response.status_code == 303, (method, template)
                assert response.headers["location"] == "/auth/sign-in"

        for method, template in PERSON_API:
            admin = bearer(api_token(store, Permission.ADMIN, name="person-api-admin"))
            for headers in ({}, admin):
                response = client.request(method, template, headers=headers, json={})
                assert response.status_code == 401, (method, template)
                assert response.headers["content-type"] == "application/problem+json"

        # The public probes answer without a token (the store is migrated and reachable here).
        for path in ("/healthz", "/readyz"):
            assert client.get(path).status_code == 200, path
        # The gate's own credential: the proxy key. Without it, or with a wrong one: 401.
        for path in ("/gate/forward", "/gate/forward/Microsoft-Server-ActiveSync", "/gate/explain"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={"X-Appwarden-Proxy-Key": "wrong"}).status_code == 401
        # The push sources are off until their credential is configured.
        for path in PUSH_ROUTES:
            assert client.post(_concrete(path), json={}).status_code == 404, path
        # So are the agent's, until APPWARDEN_AGENT_SECRET is set.
        for path in AGENT_ROUTES:
            assert client.post(f"{path}?policy=p", json={}).status_code == 404, path


PUSH_ROUTES = [path for path in PUBLIC_ROUTES if path.startswith(("/osquery/", "/mdm/"))]
AGENT_ROUTES = [path for path in PUBLIC_ROUTES if path.startswith(("/agent/", "/checks/"))]


def test_push_routes_refuse_a_wrong_credential_of_their_own(store):
    """Configured, each push route still answers nothing without its own credential: a wrong
    enroll secret or node key gets osquery's `node_invalid`, a wrong path secret a 404."""
    settings = _settings(store, osquery_enroll_secret="s" * 16, mdm_webhook_secret="w" * 32)
    with TestClient(create_app(settings)) as client:
        for path in PUSH_ROUTES:
            body = {"enroll_secret": "s" * 15, "node_key": "nope", "data": [], "queries": {}}
            response = client.post(_concrete(path), json=body)
            if path.startswith("/osquery/"):
                assert response.json() == {"node_invalid": True}, path
            else:
                assert response.status_code == 404, path


def test_agent_routes_refuse_a_missing_credential_of_their_own(store):
    """Configured, each agent route still accepts nothing without its own credential: no code,
    no signature, no MAC is a 403 or 422 problem, never a 401 (they take no token)."""
    settings = _settings(store, agent_secret="a" * 32)
    with TestClient(create_app(settings)) as client:
        for path in AGENT_ROUTES:
            body = {"code": "NOPE"} if path.endswith("enroll") else {}
            response = client.post(f"{path}?policy=p", json=body)
            assert response.status_code in (403, 422), (path, response.text)


def test_the_allowlist_is_closed_and_names_each_credential():
    assert set(PUBLIC_ROUTES) == {
        "/healthz",
        "/readyz",
        "/gate/forward",
        "/gate/forward/{rest:path}",
        "/gate/explain",
        "/osquery/enroll",
        "/osquery/config",
        "/osquery/log",
        "/osquery/distributed/read",
        "/osquery/distributed/write",
        "/mdm/webhook/{secret}",
        "/mdm/commands/{secret}",
        "/agent/enroll",
        "/agent/report",
        "/checks/manifest",
        "/checks/answer",
        "/auth/*",
        "/assets/{name}",
    }
    assert all(credential.strip() for credential in PUBLIC_ROUTES.values())
    # The prefix entry covers what is under /auth/ and nothing else.
    assert is_public("/auth/sign-in")
    assert not is_public("/authx")
    assert not is_public("/me/")
    assert not is_public("/auth")


def test_an_unguarded_route_stops_the_application(store):
    app = create_app(_settings(store))

    @app.get("/v1/leak")
    def leak() -> dict[str, str]:
        return {"secret": "everything"}

    with pytest.raises(UnguardedRoute, match="/v1/leak"):
        check_guarded(app)
    with pytest.raises(UnguardedRoute), TestClient(app):
        pass  # start-up runs the same check


def test_a_mount_outside_the_allowlist_stops_the_application(store):
    app = create_app(_settings(store))
    app.router.routes.append(Mount("/files", app=FastAPI()))
    with pytest.raises(UnguardedRoute, match="/files"):
        check_guarded(app)
    app.state.runtime.close()


def test_an_included_router_is_refused_rather_than_trusted(store):
    """The installed FastAPI (constraints.txt) wraps an included router in one opaque route whose
    dependencies the check cannot see: even a guarded router is refused, by name, so routes are
    declared on the application itself. If a FastAPI upgrade changes this, this test fails and
    the check must be reviewed for the new shape."""
    app = create_app(_settings(store))
    router = APIRouter()

    @router.get("/v1/included", dependencies=[Depends(require(Permission.READ))])
    def included() -> dict[str, str]:
        return {}

    app.include_router(router)
    assert "/v1/included" not in {route_path(r) for r in app.routes}
    with pytest.raises(UnguardedRoute, match="not via include_router"):
        check_guarded(app)
    app.state.runtime.close()


def test_a_guarded_route_passes_the_check(store):
    app = create_app(_settings(store))

    @app.get("/v1/fine", dependencies=[Depends(require(Permission.READ))])
    def fine() -> dict[str, str]:
        return {}

    check_guarded(app)
    app.state.runtime.close()


def test_a_route_that_escaped_the_check_answers_500_not_its_data(store):
    """The run-time backstop: even if the start-up check were bypassed, a response of a route
    that never checked a permission does not leave the server."""
    app = create_app(_settings(store))

    @app.get("/v1/leak")
    def leak() -> dict[str, str]:
        return {"secret": "everything"}

    client = TestClient(app)  # no `with`: the start-up check does not run
    try:
        response = client.get("/v1/leak")
        assert response.status_code == 500
        assert "everything" not in response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["detail"] == "internal error"
    finally:
        client.close()
        app.state.runtime.close()


def _path_variants(path: str) -> list[str]:
    """Near misses of a route path: a slash added or stripped, doubled, dot segments, encoded."""
    stripped = path.rstrip("/") or "/"
    return [
        path + "/",
        stripped,
        "/" + path,
        path + "//",
        path + "/.",
        path + "/..",
        path + "/%2F",
        path + "%2F",
        path.replace("/", "//", 1),
    ]


def test_near_miss_paths_never_answer_5xx_or_redirect_around_the_check(store, caplog):
    """Starlette's redirect_slashes turned `/healthz/` into a redirect that the backstop then
    (rightly) blocked as a 500. Every route, with a slash added or stripped and other odd forms,
    answers a 4xx problem (or the route itself): never 5xx, never a redirect, never an ERROR."""
    app = create_app(_settings(store))
    token = api_token(store, Permission.ADMIN, name="admin")
    paths = {_concrete(route_path(route)) for route in app.routes}
    paths |= {"/v1/decisions/", "/v1/decisions/%2F", "/v1/decisions/x/", "//healthz", "/"}
    # The gate is being rewritten elsewhere: only its forward route's trailing slash is in scope.
    paths = {p for p in paths if not p.startswith("/gate/")}
    paths |= {"/me", "/me//", "/auth/", "/admin/"}
    caplog.set_level(logging.WARNING)
    with TestClient(app, follow_redirects=False) as client:
        probes = sorted({v for p in paths for v in _path_variants(p)} | {"/gate/forward/"})
        for probe in probes:
            for method in ("GET", "POST", "PUT", "DELETE"):
                for headers in ({}, bearer(token)):
                    response = client.request(method, probe, headers=headers)
                    assert response.status_code < 500, (method, probe, response.text)
                    page = is_page(response.request.url.path)
                    if 300 <= response.status_code < 400:
                        # Only a page redirects, and only to sign in (or after a form).
                        assert page, (method, probe)
                        assert response.headers["location"].startswith("/auth/"), probe
                    if response.status_code >= 400:
                        kind = "text/html; charset=utf-8" if page else "application/problem+json"
                        assert response.headers["content-type"] == kind, (method, probe)
        # A trailing slash is simply not the route: a 404 problem, not the route's answer.
        for probe in ("/healthz/", "/metrics/", "/v1/decisions/", "/openapi.json/"):
            response = client.get(probe, headers=bearer(token))
            assert response.status_code == 404, probe
            assert response.json()["code"] == "not_found"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
