"""Email sign-in links (docs/portal.md): one answer for every address, rate limits per address
and per client held in the store, a token stored hashed that a GET never spends and a POST spends
once within 15 minutes, mail through the outbox's own lane (never a notice, its body emptied once
sent), no token in the logs, and no role for the session it opens."""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta

import pytest
from sqlalchemy import select
from tests.conftest import table_digest
from tests.portal_harness import (
    FLOW_COOKIE,
    MORNING,
    SESSION_COOKIE,
    ask_for_link,
    csrf_of,
    follow_link,
    https_client,
    link_in,
    portal_settings,
    set_cookies,
)

from appwarden.db.uow import unit_of_work
from appwarden.identity.models import PortalSession, SignInLink
from appwarden.notifications.models import Notice, OutboxMail
from appwarden.timeutil import iso
from appwarden.web.app import create_app
from appwarden.web.clients import client_address


@pytest.fixture
def app(store, demo, clock, tmp_path):
    app = create_app(portal_settings(store, clock, tmp_path))
    with https_client(app):  # the application's start-up and shutdown, once
        yield app


@pytest.fixture
def browser(app):
    """A browser: a client of its own (cookies), on the running application."""
    return https_client(app)


def _rows(store, model) -> list:
    with unit_of_work(store.engine, now=MORNING, write=False) as uow:
        return list(uow.session.scalars(select(model).execution_options(populate_existing=True)))


def _deliver(cli, clock) -> None:
    result = cli("worker", "--once", "--at", iso(clock.now()))
    assert result.code == 0, result.err


def test_every_address_gets_the_same_answer_and_only_a_person_gets_mail(
    store, app, cli, clock, smtp_server
):
    answers = []
    notices = table_digest(
        store.engine, exclude=("sign_in_flow", "sign_in_counter", "sign_in_link", "outbox_mail")
    )
    for address in (
        "alice@example.com",
        "nobody@example.com",
        "ALICE@EXAMPLE.COM",
        "x@elsewhere.org",
    ):
        client = https_client(app)
        if True:
            response = ask_for_link(client, address)
            answers.append((response.status_code, response.headers["location"]))
            shown = client.get(response.headers["location"])
            answers[-1] += (shown.text,)
    assert len(set(answers)) == 1
    assert answers[0][:2] == (303, "/auth/check-email")
    assert "If that address belongs to someone here" in answers[0][2]
    mails = _rows(store, OutboxMail)
    assert [(m.address, m.purpose) for m in mails] == [("alice@example.com", "sign-in")] * 2
    # Asking for a link wrote no notice and changed nothing else.
    assert (
        table_digest(
            store.engine, exclude=("sign_in_flow", "sign_in_counter", "sign_in_link", "outbox_mail")
        )
        == notices
    )


def test_the_link_travels_in_its_own_lane_first_and_its_body_is_emptied_once_sent(
    store, app, browser, cli, clock, smtp_server
):
    ask_for_link(browser, "alice@example.com")
    _deliver(cli, clock)  # the memo's announcements are due too: the sign-in mail goes first
    first = smtp_server.messages[0]
    assert first["To"] == "alice@example.com"
    assert first["X-Appwarden-Kind"] == "sign-in"
    assert first["X-Appwarden-Policy"] is None
    assert first["Subject"] == "Your sign-in link for Example Corp devices"
    assert (
        "Friday, July 10, 2020 at 10:15 AM PDT"
        in first.get_body(preferencelist=("plain",)).get_content()
    )
    assert len(smtp_server.messages) > 1  # the notices followed
    token = link_in(first).rsplit("/", 1)[1]
    [mail] = _rows(store, OutboxMail)
    assert mail.status == "sent"
    assert mail.body_text is None
    assert mail.body_html is None
    [link] = _rows(store, SignInLink)
    assert link.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert link.expires_at == MORNING + timedelta(minutes=15)
    # It is not a notice: alice's notices are the memo's, nothing about signing in.
    with unit_of_work(store.engine, now=MORNING, write=False) as uow:
        kinds = set(uow.session.scalars(select(Notice.kind)))
    assert kinds <= {"announce", "reminder", "exemption"}


def test_a_get_never_spends_the_link_and_a_post_spends_it_once(
    store, app, browser, cli, clock, smtp_server
):
    ask_for_link(browser, "alice@example.com", start="/me/?from=mail")
    _deliver(cli, clock)
    path = link_in(smtp_server.by_header("To", "alice@example.com")[0])
    scanner = https_client(app)  # a mail scanner opens the link first
    if True:
        for _ in range(2):
            opened = scanner.get(path)
            assert opened.status_code == 200
            assert ">Sign in</button>" in opened.text
    [link] = _rows(store, SignInLink)
    assert link.used_at is None

    signed = follow_link(browser, path)
    assert signed.status_code == 303
    assert signed.headers["location"] == "/me/?from=mail"  # the page the flow began at
    cookies = set_cookies(signed)
    session = cookies[SESSION_COOKIE]
    for attribute in ("secure", "httponly", "samesite=lax", "path=/", "max-age=43200"):
        assert attribute in session.lower(), session
    assert "max-age=0" in cookies[FLOW_COOKIE].lower()  # the flow is over
    assert browser.get("/me/").status_code == 200
    [session_row] = _rows(store, PortalSession)
    assert session_row.method == "email"

    other = https_client(app)
    assert other.get(path).status_code == 400  # used
    assert "no longer works" in other.get(path).text


def test_a_used_or_expired_link_is_refused(store, app, cli, clock, smtp_server):
    first = https_client(app)
    ask_for_link(first, "alice@example.com")
    ask_for_link(first, "bob@example.com")
    _deliver(cli, clock)
    used = link_in(smtp_server.by_header("To", "alice@example.com")[0])
    late = link_in(smtp_server.by_header("To", "bob@example.com")[0])
    browser = https_client(app)
    page = browser.get(used)
    token = used.rsplit("/", 1)[1]
    csrf = csrf_of(page.text)
    assert browser.post("/auth/link", data={"token": token, "csrf": csrf}).status_code == 303
    browser.cookies.delete(SESSION_COOKIE)
    page = browser.get("/auth/sign-in")
    replay = browser.post("/auth/link", data={"token": token, "csrf": csrf_of(page.text)})
    assert replay.status_code == 400
    assert SESSION_COOKIE not in set_cookies(replay)
    clock.advance(timedelta(minutes=15))
    assert https_client(app).get(late).status_code == 400
    assert https_client(app).get(late).status_code == 400
    assert [s.person_id for s in _rows(store, PortalSession)] == [
        _person_id(store, "alice@example.com")
    ]


def _person_id(store, email):
    from appwarden.identity.models import Person

    with unit_of_work(store.engine, now=MORNING, write=False) as uow:
        return uow.session.scalars(select(Person.id).where(Person.email == email)).one()


def test_the_link_posts_need_their_flow_and_csrf_token(
    store, app, browser, cli, clock, smtp_server
):
    ask_for_link(browser, "alice@example.com")
    _deliver(cli, clock)
    path = link_in(smtp_server.messages[0])
    token = path.rsplit("/", 1)[1]
    attacker = https_client(app)  # a cross-site post: no flow cookie, or a wrong token
    assert attacker.post("/auth/link", data={"token": token}).status_code == 403
    attacker.get(path)
    assert attacker.post("/auth/link", data={"token": token, "csrf": "x"}).status_code == 403
    fresh = https_client(app)
    assert fresh.post("/auth/email", data={"email": "alice@example.com"}).status_code == 403
    [link] = _rows(store, SignInLink)
    assert link.used_at is None


def test_an_email_link_session_never_reaches_an_admin_page(
    store, app, browser, cli, clock, smtp_server
):
    ask_for_link(browser, "ciso@example.com")  # an approver
    _deliver(cli, clock)
    follow_link(browser, link_in(smtp_server.by_header("To", "ciso@example.com")[0]))
    assert browser.get("/me/").status_code == 200
    admin = browser.get("/admin/")
    assert admin.status_code == 403
    assert "email link never carries" in admin.text


def test_attempts_are_limited_per_address_and_per_client_across_processes(
    store, demo, clock, tmp_path, cli
):
    settings = portal_settings(store, clock, tmp_path)
    one, two = create_app(settings), create_app(settings)  # two servers, one store
    with https_client(one, ("192.0.2.1", 1)) as a, https_client(two, ("192.0.2.2", 1)) as b:
        for attempt in range(5):
            client = a if attempt % 2 else b
            assert ask_for_link(client, "nobody@example.com").status_code == 303
        refused = ask_for_link(a, "NOBODY@example.com")
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) > 0
        assert "Too many sign-in attempts" in refused.text
        assert ask_for_link(b, "nobody@example.com").status_code == 429
        c = https_client(one, ("192.0.2.3", 1))
        answers = [ask_for_link(c, f"p{i}@example.com").status_code for i in range(21)]
        assert answers == [303] * 20 + [429]
        clock.advance(timedelta(minutes=15))
        c = https_client(two, ("192.0.2.3", 1))
        assert ask_for_link(c, "nobody@example.com").status_code == 303


def test_a_trusted_proxy_names_the_client_and_no_one_else_does(store, demo, clock, tmp_path):
    settings = portal_settings(
        store, clock, tmp_path, trusted_proxies="10.0.0.0/8", sign_in_per_client=2
    )
    app = create_app(settings)
    headers = {"X-Forwarded-For": "198.51.100.7"}
    with https_client(app, ("10.1.2.3", 1)) as proxy:
        proxy.headers.update(headers)
        assert [ask_for_link(proxy, f"q{i}@example.com").status_code for i in range(3)] == [
            303,
            303,
            429,
        ]
        proxy.headers.update({"X-Forwarded-For": "198.51.100.8"})  # another client behind it
        assert ask_for_link(proxy, "r@example.com").status_code == 303
        direct = https_client(app, ("203.0.113.9", 1))  # not a proxy: its header is ignored
        direct.headers.update({"X-Forwarded-For": "198.51.100.8"})
        assert [ask_for_link(direct, f"s{i}@example.com").status_code for i in range(3)] == [
            303,
            303,
            429,
        ]


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("203.0.113.9", "198.51.100.7", "203.0.113.9"),  # an untrusted peer: the header is ignored
        ("10.0.0.1", "198.51.100.7", "198.51.100.7"),
        (
            "10.0.0.1",
            "1.2.3.4, 198.51.100.7",
            "198.51.100.7",
        ),  # the client's own entry is not believed
        ("10.0.0.1", "198.51.100.7, 10.0.0.2", "198.51.100.7"),  # a chain of trusted proxies
        ("10.0.0.1", "", "10.0.0.1"),
        ("10.0.0.1", "not-an-address", "10.0.0.1"),
        ("::1", "198.51.100.7", "::1"),
    ],
)
def test_the_client_address_believes_only_trusted_proxies(peer, forwarded, client):
    from ipaddress import ip_network

    scope = {"client": (peer, 1), "headers": [(b"x-forwarded-for", forwarded.encode())]}
    assert client_address(scope, (ip_network("10.0.0.0/8"),)) == client


def test_sign_in_tokens_never_reach_the_logs(store, app, browser, cli, clock, smtp_server, caplog):
    ask_for_link(browser, "alice@example.com")
    _deliver(cli, clock)
    path = link_in(smtp_server.messages[0])
    token = path.rsplit("/", 1)[1]
    caplog.set_level(logging.DEBUG)
    follow_link(browser, path)
    browser.get(path)
    logged = [r for r in caplog.records if r.name == "appwarden.access"]
    assert any(r.fields["path"] == "/auth/link/[redacted]" for r in logged)
    for record in caplog.records:
        if record.name.startswith("httpx"):
            continue  # the test's own client logs what it asked for
        assert token not in record.getMessage()
        assert token not in repr(getattr(record, "fields", ""))
    assert browser.get(path).headers["referrer-policy"] == "no-referrer"


def test_a_malformed_address_is_refused_on_the_page_and_changes_nothing(store, app, browser):
    before = table_digest(store.engine, exclude=("sign_in_flow",))
    for bad in ("alice", "alice@", "a b@example.com", "x" * 300 + "@example.com"):
        response = ask_for_link(browser, bad)
        assert response.status_code == 422, bad
        assert "Enter your work email address" in response.text
    assert table_digest(store.engine, exclude=("sign_in_flow",)) == before


def test_with_oidc_configured_there_are_no_email_links(store, demo, clock, tmp_path):
    settings = portal_settings(
        store,
        clock,
        tmp_path,
        oidc_issuer="https://login.example.com",
        oidc_client_id="appwarden",
        oidc_client_secret="s",
    )
    with https_client(create_app(settings)) as browser:
        page = browser.get("/auth/sign-in")
        assert "Email me a sign-in link" not in page.text
        assert "Sign in with single sign-on" in page.text
        assert browser.post("/auth/email", data={"email": "alice@example.com"}).status_code == 404


def test_the_embedded_worker_sends_the_link_at_once(store, demo, clock, tmp_path, smtp_server):
    """`appwarden serve` with its worker: asking for a link wakes the worker, which otherwise
    would wait for its next interval (an hour here)."""
    import time

    settings = portal_settings(store, clock, tmp_path, worker_interval_seconds=3600)
    app = create_app(settings, worker=True)
    with https_client(app) as browser:
        deadline = time.monotonic() + 10
        while app.state.worker.passes < 1 and time.monotonic() < deadline:
            time.sleep(0.05)  # the first pass, at start-up (the memo's notices)
        ask_for_link(browser, "alice@example.com")
        while (
            not smtp_server.by_header("X-Appwarden-Kind", "sign-in") and time.monotonic() < deadline
        ):
            time.sleep(0.05)
    assert [m["To"] for m in smtp_server.by_header("X-Appwarden-Kind", "sign-in")] == [
        "alice@example.com"
    ]


def test_signing_in_again_ends_the_browsers_previous_session(
    store, app, browser, cli, clock, smtp_server
):
    for email in ("alice@example.com", "bob@example.com"):
        ask_for_link(browser, email)
        _deliver(cli, clock)
        [mail] = [
            m for m in smtp_server.by_header("To", email) if m["X-Appwarden-Kind"] == "sign-in"
        ]
        assert follow_link(browser, link_in(mail)).status_code == 303
    [left] = _rows(store, PortalSession)
    assert left.person_id == _person_id(store, "bob@example.com")
