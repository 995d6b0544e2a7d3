"""The decisions API on the reference organisation, API tokens (CLI and HTTP), `serve`, and the
embedded worker."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests.conftest import api_token, bearer

from appwarden.audit.models import AuditEntry
from appwarden.db.uow import unit_of_work
from appwarden.identity.models import ApiToken
from appwarden.settings import Settings
from appwarden.vocabulary import Permission
from appwarden.web.app import create_app, openapi_document
from appwarden.web.worker import EmbeddedWorker

ALICE_PHONE = "udid:00008110-000A1B2C3D4E801E"
BOB_PHONE = "enterprise_specific_id:BOB-PIXEL-7731"
AFTER_DEADLINE = "2020-07-11T12:00:00-07:00"
NOW = datetime(2020, 7, 11, 19, 0, tzinfo=UTC)


def _settings(store, tmp_path: Path, clock: str = AFTER_DEADLINE) -> Settings:
    return Settings(
        database_url=store.url, env="test", clock=f"fixed:{clock}", maildir=tmp_path / "mail"
    )


def test_single_decisions_on_the_reference_memo(store, demo, tmp_path):
    secret = api_token(store, Permission.DECISIONS_READ, name="gate")
    writer = api_token(store, Permission.INVENTORY_WRITE, name="mdm")
    with TestClient(create_app(_settings(store, tmp_path))) as client:
        alice = client.get(f"/v1/decisions/{ALICE_PHONE}/email", headers=bearer(secret))
        assert alice.status_code == 200, alice.text
        body = alice.json()
        assert body["decision"] == "deny"
        assert body["device"] == ALICE_PHONE
        assert body["person"] == "alice@example.com"
        assert body["at"] == "2020-07-11T19:00:00Z"
        assert body["remediation_url"] == "http://127.0.0.1:8000/me/"
        [reason] = body["reasons"]
        assert reason["policy"] == "tiktok-mobile-email"
        assert reason["state"] == "non_compliant"
        assert reason["effect"] == "deny"
        assert reason["since"] == "2020-07-11T06:59:59Z"
        assert "valid_until" in body

        # URL-encoded, and a bare value that names one device.
        encoded = client.get(
            f"/v1/decisions/{quote(ALICE_PHONE, safe='')}/email", headers=bearer(secret)
        )
        assert encoded.json()["decision"] == "deny"
        bob = client.get("/v1/decisions/BOB-PIXEL-7731/email", headers=bearer(secret))
        assert bob.status_code == 200
        assert bob.json()["decision"] == "allow"
        assert bob.json()["remediation_url"] is None
        assert bob.json()["person"] == "bob@example.com"

        unknown = client.get("/v1/decisions/udid:NO-SUCH-DEVICE/email", headers=bearer(secret))
        assert unknown.status_code == 404
        assert unknown.headers["content-type"] == "application/problem+json"
        problem = unknown.json()
        assert problem["status"] == 404
        assert problem["code"] == "not_found"
        assert problem["instance"] == "/v1/decisions/udid:NO-SUCH-DEVICE/email"
        assert "NO-SUCH-DEVICE" in problem["detail"]

        bad_resource = client.get(f"/v1/decisions/{ALICE_PHONE}/E%20MAIL", headers=bearer(secret))
        assert bad_resource.status_code == 422
        assert bad_resource.json()["errors"][0]["where"] == "path:resource"

        # A second device whose serial is bob's bare value makes the bare value ambiguous.
        doc = {
            "format": "appwarden.inventory/v1",
            "devices": [
                {
                    "identifiers": [{"namespace": "serial", "value": "BOB-PIXEL-7731"}],
                    "platform": "android",
                    "owner": "bob@example.com",
                }
            ],
        }
        added = client.post("/v1/inventory", content=orjson.dumps(doc), headers=bearer(writer))
        assert added.status_code == 200, added.text
        ambiguous = client.get("/v1/decisions/BOB-PIXEL-7731/email", headers=bearer(secret))
        assert ambiguous.status_code == 422
        assert ambiguous.json()["code"] == "ambiguous"
        assert "serial:BOB-PIXEL-7731" in ambiguous.json()["detail"]
        assert BOB_PHONE in ambiguous.json()["detail"]


def test_batch_decisions_answer_each_query(store, demo, tmp_path):
    admin = api_token(store, Permission.ADMIN, name="ops")  # admin implies decisions:read
    queries = [
        {"device": ALICE_PHONE, "resource": "email"},
        {"device": "udid:NO-SUCH-DEVICE", "resource": "email"},
        {"device": BOB_PHONE, "resource": "email"},
        {"device": ALICE_PHONE, "resource": "not a resource"},
    ]
    with TestClient(create_app(_settings(store, tmp_path))) as client:
        response = client.post("/v1/decisions", json={"queries": queries}, headers=bearer(admin))
        assert response.status_code == 200, response.text
        alice, unknown, bob, bad = response.json()["results"]
        assert alice["decision"] == "deny"
        assert alice["reasons"][0]["policy"] == "tiktok-mobile-email"
        assert unknown == {
            "device": "udid:NO-SUCH-DEVICE",
            "resource": "email",
            "error": {
                "status": 404,
                "title": "Not Found",
                "code": "not_found",
                "detail": "no device with the identifier udid:NO-SUCH-DEVICE",
            },
        }
        assert bob["decision"] == "allow"
        assert bad["error"]["status"] == 422

        too_many = client.post(
            "/v1/decisions",
            json={"queries": [{"device": BOB_PHONE, "resource": "email"}] * 1001},
            headers=bearer(admin),
        )
        assert too_many.status_code == 422
        assert too_many.json()["errors"][0]["where"] == "$.queries"

        shapeless = client.post(
            "/v1/decisions", json={"queries": [{"device": 3}], "extra": 1}, headers=bearer(admin)
        )
        assert shapeless.status_code == 422
        wheres = {e["where"] for e in shapeless.json()["errors"]}
        assert wheres == {"$.queries[0].device", "$.queries[0].resource", "$.extra"}

        not_json = client.post("/v1/decisions", content=b"{", headers=bearer(admin))
        assert not_json.status_code == 422
        assert not_json.headers["content-type"] == "application/problem+json"

        # a repeated key is refused, never won by its last value; a byte order mark is fine
        query = f'{{"device": "{BOB_PHONE}", "resource": "email"}}'
        doubled = f'{{"queries": [{query}], "queries": []}}'.encode()
        refused = client.post("/v1/decisions", content=doubled, headers=bearer(admin))
        assert refused.status_code == 422
        assert "duplicate key 'queries'" in refused.json()["detail"]
        marked = f'\ufeff{{"queries": [{query}]}}'.encode()
        assert (
            client.post("/v1/decisions", content=marked, headers=bearer(admin)).status_code == 200
        )


def test_tokens_from_the_cli_are_hashed_audited_and_revocable(store, cli, tmp_path):
    created = cli("token", "create", "nginx-gate", "--permission", "decisions:read", "--json")
    assert created.code == 0, created.err
    out = created.json()
    secret = out["token"]
    assert secret.startswith(f"aw_{out['id']}_")
    assert out["permissions"] == ["decisions:read"]

    plain = cli("token", "create", "other", "-p", "read")
    assert plain.code == 0
    assert plain.out.strip().startswith("aw_")
    assert "only time" in plain.err

    with unit_of_work(store.engine, now=NOW, write=False) as uow:
        rows = uow.session.scalars(select(ApiToken)).all()
        assert all(len(r.token_hash) == 64 and secret not in r.token_hash for r in rows)
        entries = uow.session.scalars(select(AuditEntry)).all()
        assert [e.action for e in entries] == ["token.create", "token.create"]
        assert entries[0].after == {
            "name": "nginx-gate",
            "permissions": ["decisions:read"],
            "source": None,
            "namespaces": None,
        }
        assert all(secret not in orjson.dumps([e.before, e.after]).decode() for e in entries)

    assert cli("token", "create", "x", "-p", "superuser").code == 2
    assert cli("token", "create", "", "-p", "read").code == 2

    app = create_app(_settings(store, tmp_path))
    with TestClient(app) as client:
        first = client.get("/v1/decisions/udid:NONE/email", headers=bearer(secret))
        assert first.status_code == 404  # authenticated and authorised: the device is unknown
        client.get("/v1/decisions/udid:NONE/email", headers=bearer(secret))
        with unit_of_work(store.engine, now=NOW, write=False) as uow:
            token = uow.session.get(ApiToken, out["id"])
            assert token is not None
            assert token.last_used_at == NOW  # the clock's now, written once

        listed = cli("token", "list", "--json")
        assert [t["name"] for t in listed.json()] == ["nginx-gate", "other"]
        assert "token" not in listed.json()[0]

        revoked = cli("token", "revoke", str(out["id"]), "--json")
        assert revoked.code == 0
        assert revoked.json()["revoked_at"] is not None
        after = client.get("/v1/decisions/udid:NONE/email", headers=bearer(secret))
        assert after.status_code == 401
        assert 'error="invalid_token"' in after.headers["www-authenticate"]
    assert cli("token", "revoke", "999").code == 3


def test_openapi_document_lists_the_api_behind_read(store, tmp_path):
    reader = api_token(store, Permission.READ, name="reader")
    with TestClient(create_app(_settings(store, tmp_path))) as client:
        assert client.get("/openapi.json").status_code == 401
        doc = client.get("/openapi.json", headers=bearer(reader)).json()
    assert set(doc["paths"]) == {
        "/v1/inventory",
        "/v1/conflicts",
        "/v1/devices",
        "/v1/devices/{device}",
        "/v1/people/{email}",
        "/v1/attestations",
        "/v1/decisions",
        "/v1/decisions/{device}/{resource}",
        "/healthz",
        "/readyz",
        "/metrics",
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
        "/v1/agent/codes",
    }
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    get = doc["paths"]["/v1/decisions/{device}/{resource}"]["get"]
    assert get["security"] == [{"HTTPBearer": []}]
    assert set(get["responses"]["404"]["content"]) == {"application/problem+json"}
    assert "requestBody" in doc["paths"]["/v1/inventory"]["post"]
    assert "security" not in doc["paths"]["/healthz"]["get"]
    for signed in ("/agent/report", "/checks/answer"):  # the device's key, no token: 403, no 401
        assert "security" not in doc["paths"][signed]["post"]
        assert "401" not in doc["paths"][signed]["post"]["responses"]
    for push in ("/osquery/log", "/mdm/webhook/{secret}"):  # their own credentials, no token
        assert "security" not in doc["paths"][push]["post"]
        assert not {"401", "403"} & set(doc["paths"][push]["post"]["responses"])


OPENAPI_SNAPSHOT = Path(__file__).with_name("openapi.json")


def _serialised_openapi(store, tmp_path: Path) -> str:
    """A fresh application's document as canonical JSON; the package version is left out so a
    release does not count as an API change."""
    app = create_app(_settings(store, tmp_path))
    try:
        doc = openapi_document(app)
    finally:
        app.state.runtime.close()
    doc["info"].pop("version")
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2).decode() + "\n"


def test_openapi_document_is_stable(store, tmp_path):
    """The document equals the committed snapshot, so any change to the API shows up as a failing
    test and a reviewed diff. After an intended change, regenerate the snapshot with
    `APPWARDEN_UPDATE_OPENAPI=1 pytest tests/web/test_api.py -k openapi_document_is_stable`."""
    first = _serialised_openapi(store, tmp_path)
    assert _serialised_openapi(store, tmp_path) == first  # two applications, one document
    if os.environ.get("APPWARDEN_UPDATE_OPENAPI") == "1":
        OPENAPI_SNAPSHOT.write_text(first)
    assert first == OPENAPI_SNAPSHOT.read_text(), (
        f"the OpenAPI document differs from {OPENAPI_SNAPSHOT.name}: review the API change, "
        "then regenerate the snapshot (APPWARDEN_UPDATE_OPENAPI=1)"
    )


def test_serve_runs_uvicorn_with_the_app_and_says_where_to_look(store, cli, monkeypatch):
    import uvicorn

    from appwarden.web import observability

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    monkeypatch.setattr(observability, "configure_logging", lambda: None)
    result = cli("serve", "--port", "8123")
    assert result.code == 0, result.err
    [(app, kwargs)] = calls
    assert kwargs["host"] == "127.0.0.1"
    assert kwargs["port"] == 8123
    assert kwargs["access_log"] is False
    # the socket's peer is the client: forwarded headers never rewrite it (loopback trust)
    assert (kwargs["proxy_headers"], kwargs["forwarded_allow_ips"]) == (False, "")
    assert "http://127.0.0.1:8123" in result.err
    assert "appwarden token create" in result.err
    # The embedded worker is the SQLite default; with PostgreSQL it runs beside the replicas.
    assert (app.state.worker is not None) == (store.backend == "sqlite")
    app.state.runtime.close()

    calls.clear()
    assert cli("serve", "--no-worker").code == 0
    assert calls[0][0].state.worker is None
    calls[0][0].state.runtime.close()


def test_serve_refuses_an_unmigrated_database(tmp_path, monkeypatch, capsys):
    import uvicorn

    from appwarden.cli.main import run

    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: pytest.fail("must not start"))
    code = run(["--db", f"sqlite:///{tmp_path / 'empty.db'}", "serve"])
    assert code == 4
    assert "appwarden db upgrade" in capsys.readouterr().err


def test_the_embedded_worker_flips_decisions_whose_deadline_came(store, demo, tmp_path):
    """No new report: the deadline alone turns alice's materialised decision to deny, and the
    blocked notice goes out through the outbox."""
    settings = _settings(store, tmp_path)
    app = create_app(settings)
    worker = EmbeddedWorker(app.state.runtime, interval=3600)
    try:
        first = worker.run_once()
        assert first.at == NOW
        assert first.decision_changes >= 1
        assert first.delivery.sent >= 1
        assert list((tmp_path / "mail").rglob("*"))
        again = worker.run_once()
        assert again.decision_changes == 0
    finally:
        worker.stop()
        app.state.runtime.close()


def test_the_worker_thread_starts_and_stops_with_the_application(store, demo, tmp_path):
    app = create_app(_settings(store, tmp_path), worker=True)
    worker = app.state.worker
    with TestClient(app) as client:
        assert worker.running
        assert client.get("/healthz").status_code == 200
        deadline = time.monotonic() + 30
        while worker.passes < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert not worker.running
    assert worker.passes >= 1
