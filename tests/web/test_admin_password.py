"""Admins' local passwords: set with `appwarden admin create EMAIL --role R --password-stdin`,
stored as an argon2id hash, and the one way besides single sign-on to a session that carries
roles; wrong addresses and passwords answer alike and count against the rate limits."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import select
from tests.conftest import table_digest
from tests.portal_harness import MORNING, TimeFile, csrf_of, https_client, portal_settings

from appwarden.audit.models import AuditEntry
from appwarden.db.uow import unit_of_work
from appwarden.identity.models import AdminPassword, PortalSession
from appwarden.web.app import create_app

PASSWORD = "correct horse battery staple"


def _create(cli, monkeypatch, stdin: str, *args: str):
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return cli("admin", "create", "grace@example.com", "--role", "admin", "--password-stdin", *args)


@pytest.fixture
def app(store, demo, cli, monkeypatch, tmp_path):
    assert _create(cli, monkeypatch, PASSWORD + "\n").code == 0
    clock = TimeFile(tmp_path / "now")
    clock.set(MORNING)
    app = create_app(portal_settings(store, clock, tmp_path))
    with https_client(app):
        yield app


def _post(browser, email: str, password: str):
    page = browser.get("/auth/password")
    form = {"email": email, "password": password, "csrf": csrf_of(page.text)}
    return browser.post("/auth/password", data=form)


def test_the_password_is_stored_as_an_argon2id_hash_and_audited(store, app):
    with unit_of_work(store.engine, now=MORNING, write=False) as uow:
        [stored] = uow.session.scalars(select(AdminPassword))
        actions = list(uow.session.scalars(select(AuditEntry.action)))
    assert stored.password_hash.startswith("$argon2id$")
    assert PASSWORD not in stored.password_hash
    assert "admin.password" in actions


def test_a_short_password_is_refused_and_changes_nothing(store, demo, cli, monkeypatch):
    before = table_digest(store.engine)
    result = _create(cli, monkeypatch, "short\n")
    assert result.code == 2
    assert "at least 12 characters" in result.err
    assert table_digest(store.engine) == before


def test_an_admin_signs_in_with_the_password_and_reaches_the_admin_pages(store, app):
    browser = https_client(app)
    browser.get("/admin/")  # no session: the page is remembered
    signed = _post(browser, "grace@example.com", PASSWORD)
    assert signed.status_code == 303
    assert signed.headers["location"] == "/admin/"
    admin = browser.get("/admin/")
    assert admin.status_code == 200
    assert "your admin password" in admin.text
    with unit_of_work(store.engine, now=MORNING, write=False) as uow:
        assert list(uow.session.scalars(select(PortalSession.method))) == ["password"]


def test_a_wrong_password_and_an_unknown_address_answer_alike_and_are_limited(store, app):
    browser = https_client(app)
    wrong = _post(browser, "grace@example.com", "not the password at all")
    unknown = _post(browser, "nobody@example.com", PASSWORD)
    nopassword = _post(browser, "ciso@example.com", PASSWORD)  # an approver without a password
    for refused in (wrong, unknown, nopassword):
        assert refused.status_code == 403
        assert "do not match an administrator" in refused.text
    for _ in range(4):  # five wrong tries of this address in all
        _post(browser, "grace@example.com", "still not the password")
    limited = _post(browser, "grace@example.com", PASSWORD)  # the sixth try of this address
    assert limited.status_code == 429
    with unit_of_work(store.engine, now=MORNING, write=False) as uow:
        assert list(uow.session.scalars(select(PortalSession))) == []


def test_the_password_form_needs_its_flow_token(app):
    browser = https_client(app)
    answer = browser.post(
        "/auth/password", data={"email": "grace@example.com", "password": PASSWORD}
    )
    assert answer.status_code == 403
    assert "security token" in answer.text
