"""Confirming removal from the portal and through `POST /v1/attestations` (the person's own
session and CSRF token only), the ways out of `unknown` on the device page, and the privacy page."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import api_token, bearer, table_digest
from tests.portal_harness import (
    csrf_of,
    device_named,
    https_client,
    person_client,
)

from appwarden.vocabulary import Permission

POLICY = "tiktok-mobile-email"
ROOT = Path(__file__).resolve().parents[2]
UNCHANGED = ("portal_session",)  # a page view may touch the session's last use


def test_dave_confirms_removal_on_his_phones_page(store, app, clock):
    dave = person_client(app, store, "dave@example.com", clock.now())
    phone = device_named(store, "Dave's iPhone")
    page = dave.get(f"/me/devices/{phone}?policy={POLICY}")
    assert "Run the check app (on a phone or tablet) or the agent" in page.text
    assert f'id="attest-{POLICY}"' in page.text
    assert 'href="/me/privacy"' in page.text
    posted = dave.post(
        f"/me/devices/{phone}/attestations", data={"csrf": csrf_of(page.text), "policy": POLICY}
    )
    assert posted.status_code == 303
    assert posted.headers["location"] == f"/me/devices/{phone}?policy={POLICY}&attested=1"
    after = dave.get(posted.headers["location"]).text
    assert "your confirmation is recorded" in after
    assert "All good" in after
    assert f'id="attest-{POLICY}"' not in after


def test_a_violating_device_cannot_be_confirmed_away(store, app, clock):
    alice = person_client(app, store, "alice@example.com", clock.now())
    phone = device_named(store, "Alice's iPhone")
    token = csrf_of(alice.get(f"/me/devices/{phone}").text)
    before = table_digest(store.engine, exclude=UNCHANGED)
    refused = alice.post(
        f"/me/devices/{phone}/attestations", data={"csrf": token, "policy": POLICY}
    )
    assert refused.status_code == 422
    assert "shows the app" in refused.text
    assert table_digest(store.engine, exclude=UNCHANGED) == before


def test_nobody_confirms_for_someone_elses_device(store, app, clock):
    alice = person_client(app, store, "alice@example.com", clock.now())
    phone = device_named(store, "Dave's iPhone")
    token = csrf_of(alice.get("/me/").text)
    before = table_digest(store.engine, exclude=UNCHANGED)
    answers = [
        alice.post(f"/me/devices/{ref}/attestations", data={"csrf": token, "policy": POLICY})
        for ref in (phone, 999999, "abc")
    ]
    assert {a.status_code for a in answers} == {404}
    assert len({a.text for a in answers}) == 1
    assert "Dave" not in answers[0].text
    api = [
        alice.post(
            "/v1/attestations",
            json={"device": str(ref), "policy": POLICY},
            headers={"X-CSRF-Token": token},
        )
        for ref in (phone, "enrollment_id:D4VE-USER-ENROLLMENT-0001", 999999)
    ]
    assert {a.status_code for a in api} == {404}
    assert len({a.json()["detail"].split("'")[0] for a in api}) == 1
    assert table_digest(store.engine, exclude=UNCHANGED) == before


def test_the_api_takes_the_persons_session_and_its_csrf_token_only(store, app, clock):
    dave = person_client(app, store, "dave@example.com", clock.now())
    token = csrf_of(dave.get("/me/").text)
    body = {"device": "enrollment_id:D4VE-USER-ENROLLMENT-0001", "policy": POLICY}
    admin = bearer(api_token(store, Permission.ADMIN, name="admin"))
    before = table_digest(store.engine, exclude=UNCHANGED)
    for headers in ({}, {"X-CSRF-Token": "not-it"}):
        assert dave.post("/v1/attestations", json=body, headers=headers).status_code == 403
    with https_client(app) as anonymous:
        assert anonymous.post("/v1/attestations", json=body, headers=admin).status_code == 401
    bad = dave.post("/v1/attestations", json={"device": 5}, headers={"X-CSRF-Token": token})
    assert bad.status_code == 422
    assert {e["where"] for e in bad.json()["errors"]} == {"$.device"}
    assert table_digest(store.engine, exclude=UNCHANGED) == before

    done = dave.post("/v1/attestations", json=body, headers={"X-CSRF-Token": token})
    assert done.status_code == 201, done.text
    assert done.json()["state"] == "compliant"
    assert done.json()["identifiers"] == [
        "apple_bundle_id:com.ss.iphone.ugc.ame",
        "apple_bundle_id:com.zhiliaoapp.musically",
    ]


def test_the_privacy_page_is_docs_privacy_md(store, app, clock):
    shipped = ROOT / "src" / "appwarden" / "web" / "privacy.md"
    assert shipped.read_text() == (ROOT / "docs" / "privacy.md").read_text(), (
        "copy docs/privacy.md to src/appwarden/web/privacy.md"
    )
    dave = person_client(app, store, "dave@example.com", clock.now())
    page = dave.get("/me/privacy")
    assert page.status_code == 200
    assert "<h1>Your devices and your privacy</h1>" in page.text
    assert "<table>" in page.text
    assert "only the apps the organisation installed itself" in page.text
    with https_client(app) as anonymous:
        assert anonymous.get("/me/privacy").status_code == 303  # sign in first
