"""Single sign-on (OpenID Connect) against a local provider (tests/oidc_provider.py): a person is
matched by email only when the configured issuer says the email is verified, the (issuer, subject)
pair is kept and matches later sign-ins, and another issuer, an unverified email, another
request's nonce or a forged state are refused (docs/portal.md)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, start_provider
from tests.portal_harness import MORNING, TimeFile, https_client, portal_settings

from appwarden.db.uow import unit_of_work
from appwarden.identity.models import Person, PersonIdentity, PortalSession
from appwarden.web.app import create_app

ALICE = {"sub": "00u-alice", "email": "alice@example.com", "email_verified": True}


@pytest.fixture
def provider():
    with start_provider() as running:
        running.user = dict(ALICE)
        yield running


@pytest.fixture
def app(store, demo, tmp_path, provider):
    clock = TimeFile(tmp_path / "now")
    clock.set(MORNING)
    settings = portal_settings(
        store,
        clock,
        tmp_path,
        oidc_issuer=provider.issuer,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=CLIENT_SECRET,
        oidc_name="Example SSO",
    )
    app = create_app(settings)
    with https_client(app):
        yield app


def sign_in_with_sso(browser, start: str = "/auth/oidc/start"):
    """The browser's round trip: to the provider, back to the callback; the callback's answer."""
    to_provider = browser.get(start)
    assert to_provider.status_code == 303, to_provider.text
    back = httpx.get(to_provider.headers["location"], follow_redirects=False)
    assert back.status_code == 302
    callback = urlsplit(back.headers["location"])
    assert callback.path == "/auth/oidc/callback"
    return browser.get(f"{callback.path}?{callback.query}")


def _identities(store) -> list[tuple[str, str, str]]:
    with unit_of_work(store.engine, now=MORNING, write=False) as uow:
        rows = uow.session.execute(
            select(Person.email, PersonIdentity.issuer, PersonIdentity.subject).join(
                Person, Person.id == PersonIdentity.person_id
            )
        )
        return [tuple(r) for r in rows]


def _sessions(store) -> list[str]:
    with unit_of_work(store.engine, now=MORNING, write=False) as uow:
        return list(uow.session.scalars(select(PortalSession.method)))


def test_a_verified_email_signs_in_and_the_subject_is_kept(store, app, provider):
    browser = https_client(app)
    page = browser.get("/auth/sign-in")
    assert "Sign in with Example SSO" in page.text
    assert "Email me a sign-in link" not in page.text
    start = browser.get("/auth/oidc/start")
    request = parse_qs(urlsplit(start.headers["location"]).query)
    assert request["code_challenge_method"] == ["S256"]
    assert request["redirect_uri"] == ["https://appwarden.example.com/auth/oidc/callback"]
    assert request["state"][0] != request["nonce"][0]

    signed = sign_in_with_sso(browser)
    assert signed.status_code == 303
    assert signed.headers["location"] == "/me/"
    assert browser.get("/me/").status_code == 200
    assert _identities(store) == [("alice@example.com", provider.issuer, "00u-alice")]
    assert _sessions(store) == ["oidc"]

    # Later the provider sends another (even unverified) email: the subject still names alice.
    provider.user = {
        "sub": "00u-alice",
        "email": "alice.adams@elsewhere.org",
        "email_verified": False,
    }
    again = https_client(app)
    assert sign_in_with_sso(again).status_code == 303
    assert "Alice&#39;s iPhone" in again.get("/me/").text


def test_the_page_asked_for_is_where_single_sign_on_returns(app):
    browser = https_client(app)
    browser.get("/me/?policy=tiktok-mobile-email")  # no session: a flow remembers the page
    assert sign_in_with_sso(browser).headers["location"] == "/me/?policy=tiktok-mobile-email"


@pytest.mark.parametrize(
    ("user", "says"),
    [
        ({"sub": "u1", "email": "alice@example.com", "email_verified": False}, "did not confirm"),
        ({"sub": "u1", "email": "alice@example.com"}, "did not confirm"),
        ({"sub": "u1", "email": "alice@example.com", "email_verified": "true"}, "did not confirm"),
        ({"sub": "u1", "email": "stranger@example.com", "email_verified": True}, "nobody here"),
        ({"sub": "u1", "email_verified": True}, "did not confirm"),
    ],
)
def test_an_unverified_or_unknown_email_is_refused(store, app, provider, user, says):
    provider.user = user
    refused = sign_in_with_sso(https_client(app))
    assert refused.status_code == 403
    assert says in refused.text
    assert _identities(store) == []
    assert _sessions(store) == []


def test_an_id_token_of_another_issuer_or_another_request_is_refused(store, app, provider):
    provider.token_issuer = "https://login.elsewhere.example"
    refused = sign_in_with_sso(https_client(app))
    assert refused.status_code == 403
    assert "not acceptable" in refused.text
    provider.token_issuer = None
    provider.nonce = "someone-elses-nonce"
    refused = sign_in_with_sso(https_client(app))
    assert refused.status_code == 403
    assert "nonce" in refused.text
    assert _identities(store) == []
    assert _sessions(store) == []


def test_a_forged_or_replayed_answer_is_refused(store, app, provider):
    browser = https_client(app)
    start = browser.get("/auth/oidc/start")
    back = urlsplit(
        httpx.get(start.headers["location"], follow_redirects=False).headers["location"]
    )
    answer = parse_qs(back.query)
    # Another browser (no flow of its own) presents the answer: not its sign-in.
    assert https_client(app).get(f"{back.path}?{back.query}").status_code == 403
    # A state that is not this flow's.
    forged = f"{back.path}?code={answer['code'][0]}&state=forged"
    assert browser.get(forged).status_code == 403
    assert browser.get(f"{back.path}?{back.query}").status_code == 303
    assert browser.get(f"{back.path}?{back.query}").status_code == 403  # the flow is over
    assert browser.get("/auth/oidc/callback?error=access_denied").status_code == 403
    assert _sessions(store) == ["oidc"]


def test_a_second_account_with_the_same_email_is_not_linked(store, app, provider):
    assert sign_in_with_sso(https_client(app)).status_code == 303
    provider.user = {"sub": "00u-impostor", "email": "alice@example.com", "email_verified": True}
    refused = sign_in_with_sso(https_client(app))
    assert refused.status_code == 403
    assert "another account" in refused.text
    assert [s for _, _, s in _identities(store)] == ["00u-alice"]


def test_a_single_sign_on_session_carries_the_persons_roles(store, app, provider):
    provider.user = {"sub": "00u-ciso", "email": "ciso@example.com", "email_verified": True}
    browser = https_client(app)
    sign_in_with_sso(browser)
    admin = browser.get("/admin/")
    assert admin.status_code == 200
    assert "exemptions:decide" in admin.text
    alice = https_client(app)
    provider.user = dict(ALICE)
    sign_in_with_sso(alice)
    assert alice.get("/admin/").status_code == 403  # no role: signed in, but not an admin


def test_an_unreachable_provider_is_a_page_not_a_crash(store, demo, tmp_path):
    clock = TimeFile(tmp_path / "now")
    clock.set(MORNING)
    settings = portal_settings(
        store,
        clock,
        tmp_path,
        oidc_issuer="http://127.0.0.1:9",
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=CLIENT_SECRET,
    )
    with https_client(create_app(settings)) as browser:
        answer = browser.get("/auth/oidc/start")
        assert answer.status_code == 403
        assert "not available right now" in answer.text
