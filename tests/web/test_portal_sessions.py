"""Portal sessions: stored hashed, cookies Secure/HttpOnly/SameSite=Lax, absolute and idle
expiry, sign-out deletes, CSRF on cookie-authenticated forms, no referrer, the page to return to
kept server-side, and a session's rights (docs/portal.md, docs/permissions.md)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from tests.portal_harness import (
    FLOW_COOKIE,
    MORNING,
    SESSION_COOKIE,
    csrf_of,
    https_client,
    open_session,
    portal_settings,
    set_cookies,
    signed_in,
)

from appwarden.db.uow import unit_of_work
from appwarden.errors import PermissionDenied
from appwarden.identity import sessions
from appwarden.identity.models import PortalSession, SignInFlow
from appwarden.identity.service import require
from appwarden.usecases.sign_in import HOME, safe_return_to
from appwarden.vocabulary import Permission
from appwarden.web.app import create_app


@pytest.fixture
def portal(store, demo, clock, tmp_path):
    with https_client(create_app(portal_settings(store, clock, tmp_path))) as client:
        yield client


def _rows(store, model) -> list:
    with unit_of_work(store.engine, now=MORNING, write=False) as uow:
        return list(uow.session.scalars(select(model)))


def test_without_a_session_a_page_sends_the_browser_to_sign_in_and_keeps_the_page(store, portal):
    response = portal.get("/me/devices/1?policy=tiktok-mobile-email")
    assert response.status_code == 303
    assert response.headers["location"] == "/auth/sign-in"  # nothing about the page in the URL
    cookie = set_cookies(response)[FLOW_COOKIE]
    for attribute in ("Secure", "HttpOnly", "SameSite=lax", "Path=/"):
        assert attribute.lower() in cookie.lower(), cookie
    assert "domain=" not in cookie.lower()  # a __Host- cookie never names a domain
    [flow] = _rows(store, SignInFlow)
    assert flow.return_to == "/me/devices/1?policy=tiktok-mobile-email"  # kept server-side
    secret = portal.cookies[FLOW_COOKIE]
    assert flow.flow_hash == sessions.digest(secret)
    assert secret not in flow.flow_hash


def test_a_session_is_stored_hashed_and_opens_the_portal(store, portal):
    secret = open_session(store, "alice@example.com", MORNING)
    [row] = _rows(store, PortalSession)
    assert row.session_hash == sessions.digest(secret)
    assert secret not in (row.session_hash, row.csrf_token)
    page = signed_in(portal, secret).get("/me/")
    assert page.status_code == 200
    assert "Alice&#39;s iPhone" in page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    # An unknown or overlong cookie is no session.
    for bad in ("nope", "x" * 5000):
        portal.cookies.clear()
        assert signed_in(portal, bad).get("/me/").status_code == 303


def test_sessions_end_at_their_lifetime_and_after_sitting_idle(store, portal, clock):
    secret = open_session(store, "alice@example.com", MORNING)
    signed_in(portal, secret)
    for step in range(1, 12):  # used every hour: alive until 12 hours after sign-in
        clock.set(MORNING + timedelta(hours=step))
        assert portal.get("/me/").status_code == 200, step
    clock.set(MORNING + timedelta(hours=12))
    assert portal.get("/me/").status_code == 303

    idle = open_session(store, "bob@example.com", MORNING)
    portal.cookies.clear()
    signed_in(portal, idle)
    clock.set(MORNING + timedelta(minutes=119))
    assert portal.get("/me/").status_code == 200
    clock.set(MORNING + timedelta(minutes=119 + 120))  # two hours unused
    assert portal.get("/me/").status_code == 303


def test_sign_out_needs_the_csrf_token_and_deletes_the_session(store, portal):
    secret = open_session(store, "alice@example.com", MORNING)
    page = signed_in(portal, secret).get("/me/")
    token = csrf_of(page.text)

    for form in ({}, {"csrf": "forged"}, {"csrf": token + "x"}):
        refused = portal.post("/auth/sign-out", data=form)
        assert refused.status_code == 403, form
        assert "security token" in refused.text
        assert len(_rows(store, PortalSession)) == 1

    out = portal.post("/auth/sign-out", data={"csrf": token})
    assert out.status_code == 303
    assert out.headers["location"] == "/auth/signed-out"
    assert "max-age=0" in set_cookies(out)[SESSION_COOKIE].lower()
    assert _rows(store, PortalSession) == []
    portal.cookies.clear()
    assert signed_in(portal, secret).get("/me/").status_code == 303  # the old cookie is dead


def test_the_worker_purges_sessions_and_flows_that_can_no_longer_be_used(store, cli, clock, portal):
    open_session(store, "alice@example.com", MORNING)
    portal.get("/me/")  # a flow
    assert cli("worker", "--once", "--at", "2020-07-10T23:00:00-07:00").code == 0
    with unit_of_work(store.engine, now=MORNING, write=False) as uow:
        left = [
            uow.session.scalar(select(func.count()).select_from(m))
            for m in (PortalSession, SignInFlow)
        ]
    assert left == [0, 0]


@pytest.mark.parametrize(
    ("asked", "kept"),
    [
        ("/me/devices/3?policy=tiktok-mobile-email", "/me/devices/3?policy=tiktok-mobile-email"),
        ("/me", HOME),
        ("/me/data", "/me/data"),
        ("/admin/", "/admin/"),
        ("//evil.example.com/me/", HOME),
        ("/\\evil.example.com", HOME),
        ("%2F%2Fevil.example.com", HOME),
        ("/%2F%2Fevil.example.com", HOME),
        ("/%5Cevil.example.com", HOME),
        ("https://evil.example.com/me/", HOME),
        ("http:evil.example.com", HOME),
        ("javascript:alert(1)", HOME),
        ("/me/\r\nSet-Cookie: x=1", HOME),
        ("/me/../auth/sign-out", HOME),
        ("/auth/sign-out", HOME),
        ("/v1/devices", HOME),
        ("", HOME),
        (None, HOME),
        ("/me/" + "a" * 2000, HOME),
    ],
)
def test_only_a_local_portal_path_is_kept_to_return_to(asked, kept):
    assert safe_return_to(asked) == kept


def test_an_employee_only_unit_of_work_carries_no_role(store, demo):
    with (
        unit_of_work(
            store.engine, now=MORNING, actor="ciso@example.com", employee_only=True, write=False
        ) as uow,
        pytest.raises(PermissionDenied, match="email link"),
    ):
        require(uow, Permission.EXEMPTIONS_DECIDE)
    with unit_of_work(store.engine, now=MORNING, actor="ciso@example.com", write=False) as uow:
        require(uow, Permission.EXEMPTIONS_DECIDE)  # the same person, acting as an approver


def test_the_replaced_portal_url_setting_stops_start_up_with_a_clear_error(monkeypatch):
    from pydantic import ValidationError

    from appwarden.settings import Settings

    monkeypatch.setenv("APPWARDEN_PORTAL_URL", "https://appwarden.example.com/me/")
    with pytest.raises(ValidationError, match="replaced by APPWARDEN_PUBLIC_URL"):
        Settings()
    monkeypatch.delenv("APPWARDEN_PORTAL_URL")
    assert Settings(public_url="https://appwarden.example.com/").portal_url == (
        "https://appwarden.example.com/me/"
    )
    with pytest.raises(ValidationError, match="not an origin"):
        Settings(public_url="https://appwarden.example.com/portal")


def test_a_bad_setting_is_a_located_error_on_the_command_line(cli, monkeypatch):
    monkeypatch.setenv("APPWARDEN_PORTAL_URL", "https://appwarden.example.com/me/")
    result = cli("status")
    assert result.code == 2
    assert "APPWARDEN_PUBLIC_URL" in result.err
    assert "Traceback" not in result.err
    monkeypatch.delenv("APPWARDEN_PORTAL_URL")
    monkeypatch.setenv("APPWARDEN_SESSION_HOURS", "forever")
    result = cli("status")
    assert result.code == 2
    assert "APPWARDEN_SESSION_HOURS" in result.err
