"""POST /v1/inventory: the native format over HTTP, all or nothing, size-limited, and committed
before the reply so the next decision already sees it."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from tests.conftest import api_token, as_one_source, bearer, table_digest, wait_until_current

from appwarden.settings import Settings
from appwarden.vocabulary import Permission
from appwarden.web.api import MAX_HTTP_BODY_BYTES, inventory_limit
from appwarden.web.app import create_app
from appwarden.web.worker import EmbeddedWorker

VALID = Path(__file__).parent.parent / "fixtures" / "inventory" / "valid.json"
ALICE_PHONE = "udid:00008110-000A1B2C3D4E801E"
ALICE_EAS = "6F24CAD599A5BF1A690246B8C68FAE8D"
GATE_KEY = "inventory-test-proxy-key-0123456789abcdef"


def _settings(store, tmp_path: Path, **overrides) -> Settings:
    return Settings(
        database_url=store.url,
        env="test",
        clock="fixed:2020-07-11T12:00:00-07:00",
        maildir=tmp_path / "mail",
        **overrides,
    )


@pytest.fixture
def client(store, tmp_path) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(store, tmp_path, max_import_bytes=4096))) as c:
        yield c


@pytest.fixture
def writer(store, client) -> dict[str, str]:
    headers = bearer(api_token(store, Permission.INVENTORY_WRITE, name="mdm"))
    # The first use records last_used_at; later ones within the minute write nothing.
    assert client.post("/v1/inventory", content=b"", headers=headers).status_code == 422
    return headers


def test_a_valid_document_is_applied_and_counted(client, writer):
    response = client.post("/v1/inventory", content=as_one_source(VALID), headers=writer)
    assert response.status_code == 200, response.text
    # The same counts as `appwarden import native` of this file: the managed_only and `none`
    # reports of personal devices keep nothing while no policy exists, so they count as stale.
    assert response.json() == {
        "people": 3,
        "devices": 5,
        "reports_applied": 2,
        "reports_stale": 2,
        "reports_repeated": 0,
        "quarantined": [],
        "decision_changes": 0,
    }


def test_malformed_json_is_422_and_changes_nothing(store, client, writer):
    before = table_digest(store.engine)
    for body in (b'{"format": "appwarden.inventory/v1",', b"[]", b"\xff\xfe", b"   "):
        response = client.post("/v1/inventory", content=body, headers=writer)
        assert response.status_code == 422, body
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"][0]["where"] == "$"
    assert table_digest(store.engine) == before


def test_an_invalid_item_rejects_the_batch_naming_its_path(store, client, writer):
    doc = orjson.loads(as_one_source(VALID))
    bad = copy.deepcopy(doc)
    bad["devices"][1]["report"]["apps"][0]["namespace"] = "apple_bundle"
    bad["devices"][3]["platform"] = "nokia"
    before = table_digest(store.engine)
    response = client.post("/v1/inventory", content=orjson.dumps(bad), headers=writer)
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "invalid_input"
    wheres = [e["where"] for e in problem["errors"]]
    assert "$.devices[1].report.apps[0].namespace" in wheres
    assert "$.devices[3].platform" in wheres
    assert table_digest(store.engine) == before  # the valid entries were not applied either


def test_a_report_the_store_refuses_rejects_the_whole_batch(store, client, writer):
    """Problems found only while applying (here a placeholder serial) roll back everything."""
    doc = orjson.loads(as_one_source(VALID))
    doc["devices"].append(
        {
            "identifiers": [{"namespace": "serial", "value": "To be filled by O.E.M."}],
            "platform": "windows",
            "report": {"evidence_kind": "inventory", "apps": []},
        }
    )
    before = table_digest(store.engine)
    response = client.post("/v1/inventory", content=orjson.dumps(doc), headers=writer)
    assert response.status_code == 422, response.text
    assert any(e["where"].startswith("$.devices[5]") for e in response.json()["errors"])
    assert table_digest(store.engine) == before


def test_an_oversized_body_is_413_before_it_is_read(store, client, writer):
    assert inventory_limit(Settings(max_import_bytes=4096)) == 4096
    assert inventory_limit(Settings()) == MAX_HTTP_BODY_BYTES == 16 * 1024 * 1024
    body = VALID.read_bytes() + b" " * 5000
    before = table_digest(store.engine)

    declared = client.post("/v1/inventory", content=body, headers=writer)
    assert declared.status_code == 413
    assert declared.headers["content-type"] == "application/problem+json"
    assert f"{len(body)} bytes" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    streamed = client.post("/v1/inventory", content=chunks(), headers=writer)
    assert streamed.status_code == 413
    assert "over the limit" in streamed.json()["detail"]  # counted: there was no length

    anonymous = client.post("/v1/inventory", content=body)
    assert anonymous.status_code == 401  # who asks is checked before anything is read
    assert table_digest(store.engine) == before


def test_read_your_writes_after_the_deadline(store, tmp_path, demo):
    """Alice removes TikTok after the deadline: her next check-in is committed before the reply,
    and the very next decision is allow, at the gate too (which had answered her phone's
    request from memory, and remembered that answer)."""
    headers = bearer(
        api_token(store, Permission.INVENTORY_WRITE, Permission.DECISIONS_READ, name="mdm")
    )
    app = create_app(_settings(store, tmp_path, gate_proxy_key=GATE_KEY))
    gate_request = {
        "X-Appwarden-Proxy-Key": GATE_KEY,
        "X-Original-URI": f"/Microsoft-Server-ActiveSync?Cmd=Sync&DeviceId={ALICE_EAS}",
    }
    EmbeddedWorker(app.state.runtime).run_once()  # the deadline flipped the stored decision
    report = {
        "format": "appwarden.inventory/v1",
        "source": "mdm-export",
        "devices": [
            {
                "identifiers": [{"namespace": "udid", "value": "00008110-000A1B2C3D4E801E"}],
                "platform": "ios",
                "report": {
                    "evidence_kind": "inventory",
                    "observed_at": "2020-07-11T11:30:00-07:00",
                    "apps": [{"namespace": "apple_bundle_id", "value": "com.apple.mobilemail"}],
                },
            }
        ],
    }
    with TestClient(app) as client:
        wait_until_current(app)
        url = f"/v1/decisions/{ALICE_PHONE}/email"
        assert client.get(url, headers=headers).json()["decision"] == "deny"
        for _ in range(2):
            assert client.get("/gate/forward", headers=gate_request).status_code == 403
        assert len(app.fast_path.answers) == 1
        posted = client.post("/v1/inventory", content=orjson.dumps(report), headers=headers)
        assert posted.status_code == 200, posted.text
        assert posted.json()["reports_applied"] == 1
        assert posted.json()["decision_changes"] == 1
        after = client.get(url, headers=headers).json()
        assert after["decision"] == "allow"
        assert after["reasons"][0]["state"] == "compliant"
        assert client.get("/gate/forward", headers=gate_request).status_code == 200
