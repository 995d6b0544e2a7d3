"""The Apple MDM webhook: NanoMDM's envelope becomes a report through the Apple MDM mapping; a
repeated event, a wrong secret and a hostile body change nothing; registered commands make an
answer the targeted check or managed-only list it is; the path secret never reaches the logs."""

from __future__ import annotations

import base64
import json
import logging
import plistlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests.conftest import table_digest

from appwarden.devices.models import DeviceIdentifier, Observation, Report
from appwarden.settings import Settings
from appwarden.web.app import create_app
from appwarden.web.push_api import PushMisconfigured

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sources" / "apple-mdm"
SECRET = "0123456789abcdef0123456789abcdef-webhook"
WEBHOOK = f"/mdm/webhook/{SECRET}"
COMMANDS = f"/mdm/commands/{SECRET}"
UDID = "00008110-000A1B2C3D4E801E"
COMMAND_UUID = "7A1B6C0E-2D33-4B8B-9A0E-5C1F0D9E2B11"
RECEIVED = datetime(2026, 3, 3, 14, 5, 9, tzinfo=UTC)  # the envelope's created_at
LIMIT = 64 * 1024


def example() -> dict[str, Any]:
    return json.loads((FIXTURES / "envelope.json").read_text())


def with_payload(payload: bytes, **changes: Any) -> dict[str, Any]:
    envelope = example()
    envelope["acknowledge_event"]["raw_payload"] = base64.b64encode(payload).decode()
    envelope["acknowledge_event"].update(changes)
    return envelope


def answer(apps: list[dict[str, Any]]) -> bytes:
    result = {"CommandUUID": COMMAND_UUID, "Status": "Acknowledged", "UDID": UDID}
    return plistlib.dumps(result | {"InstalledApplicationList": apps})


def command(**options: Any) -> bytes:
    asked = {"RequestType": "InstalledApplicationList", **options}
    return plistlib.dumps({"CommandUUID": COMMAND_UUID, "Command": asked})


@pytest.fixture
def client(store, tmp_path) -> Iterator[TestClient]:
    settings = Settings(
        database_url=store.url,
        env="test",
        clock="fixed:2026-03-03T15:00:00Z",
        maildir=tmp_path / "mail",
        mdm_webhook_secret=SECRET,
        max_import_bytes=LIMIT,
    )
    with TestClient(create_app(settings)) as c:
        yield c


def reports(store) -> list[tuple[str, list[str], datetime]]:
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(Report.evidence_kind, Report.coverage_namespaces, Report.observed_at)
            .where(Report.source == "apple-mdm")
            .order_by(Report.id)
        ).all()
    return [(kind, list(coverage), observed) for kind, coverage, observed in rows]


def present(store) -> set[str]:
    with store.engine.connect() as connection:
        return set(
            connection.scalars(select(Observation.value).where(Observation.source == "apple-mdm"))
        )


def post(client: TestClient, envelope: Any, path: str = WEBHOOK) -> Any:
    return client.post(path, content=json.dumps(envelope).encode())


def test_the_nanomdm_envelope_is_a_report_of_the_device(store, client):
    response = post(client, example())
    assert response.status_code == 200, response.text
    assert response.json() == {
        "applied": True,
        "reason": "applied",
        "reports_applied": 1,
        "decision_changes": 0,
    }
    assert reports(store) == [("inventory", ["apple_bundle_id"], RECEIVED)]
    assert present(store) == {"com.zhiliaoapp.musically"}
    with store.engine.connect() as connection:
        identifiers = set(
            connection.execute(select(DeviceIdentifier.namespace, DeviceIdentifier.value))
        )
    assert identifiers == {("udid", UDID)}


def test_a_repeated_event_id_is_200_and_changes_nothing(store, client):
    assert post(client, example()).json()["applied"] is True
    before = table_digest(store.engine)
    # The same event again, even with another body: its event_id was applied.
    again = with_payload(answer([]))
    response = post(client, again)
    assert response.status_code == 200
    assert response.json()["applied"] is False
    assert response.json()["reason"] == "this event was already applied"
    assert table_digest(store.engine) == before


def test_without_an_event_id_a_repeated_body_is_recognised(store, client):
    """NanoMDM's webhook sends `"event_id": ""`: the body's digest stands in for it."""
    envelope = example() | {"event_id": ""}
    assert post(client, envelope).json()["applied"] is True
    before = table_digest(store.engine)
    assert post(client, envelope).json()["applied"] is False
    assert table_digest(store.engine) == before


def test_a_wrong_secret_is_404_changes_nothing_and_no_log_shows_a_secret(store, client, caplog):
    caplog.set_level(logging.INFO)
    before = table_digest(store.engine)
    wrong = SECRET[:-1] + "X"
    for path in (f"/mdm/webhook/{wrong}", f"/mdm/commands/{wrong}", "/mdm/webhook/", f"{WEBHOOK}/"):
        response = post(client, example(), path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/problem+json"
    assert table_digest(store.engine) == before
    assert post(client, example()).status_code == 200  # the right one, logged too
    access = [r for r in caplog.records if r.name == "appwarden.access"]
    assert {r.fields["path"] for r in access} == {
        "/mdm/webhook/[redacted]",
        "/mdm/commands/[redacted]",
    }
    server = [r for r in caplog.records if r.name.startswith(("appwarden", "uvicorn"))]
    logged = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in server)
    assert SECRET not in logged
    assert wrong not in logged


def test_the_webhook_is_off_without_a_secret(store, tmp_path):
    settings = Settings(database_url=store.url, env="test", maildir=tmp_path / "mail")
    with TestClient(create_app(settings)) as c:
        assert post(c, example(), "/mdm/webhook/anything").status_code == 404
        assert c.post("/mdm/commands/anything", content=command()).status_code == 404


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ("mdm_webhook_secret", "APPWARDEN_MDM_WEBHOOK_SECRET is 31 bytes long"),
        ("osquery_enroll_secret", "APPWARDEN_OSQUERY_ENROLL_SECRET is 15 bytes long"),
    ],
)
def test_a_short_secret_stops_the_server(store, setting, said):
    short = {"mdm_webhook_secret": "w" * 31, "osquery_enroll_secret": "s" * 15}[setting]
    settings = Settings(database_url=store.url, env="test", **{setting: short})
    with pytest.raises(PushMisconfigured, match=said):
        create_app(settings)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("NotNow", "the device will answer later: nothing to apply"),
        ("Idle", "the device will answer later: nothing to apply"),
        ("Error", "the device answered 'Error': nothing to apply"),
    ],
)
def test_an_answer_that_is_not_one_yet_changes_nothing(store, client, status, reason):
    before = table_digest(store.engine)
    response = post(client, with_payload(answer([]), status=status))
    assert response.status_code == 200
    assert response.json()["reason"] == reason
    assert table_digest(store.engine) == before


def test_a_check_in_changes_nothing(store, client):
    before = table_digest(store.engine)
    checkin = {"topic": "mdm.TokenUpdate", "event_id": "", "created_at": "2026-03-03T14:05:09Z",
               "checkin_event": {"udid": UDID, "raw_payload": base64.b64encode(b"<dict/>").decode()}}  # fmt: skip
    response = post(client, checkin)
    assert response.status_code == 200
    assert response.json()["applied"] is False
    assert table_digest(store.engine) == before


# ── commands ────────────────────────────────────────────────────────────────────────────────

TWO_APPS = [
    {"Identifier": "com.zhiliaoapp.musically", "Name": "TikTok", "ShortVersion": "38.4.0"},
    {"Identifier": "us.zoom.videomeetings", "Name": "Zoom", "Version": "6.3"},
]


def test_an_answer_to_a_registered_identifiers_query_is_a_targeted_check(store, client):
    response = client.post(COMMANDS, content=command(Identifiers=["com.zhiliaoapp.musically"]))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "command_uuid": COMMAND_UUID,
        "request_type": "InstalledApplicationList",
        "identifiers": ["com.zhiliaoapp.musically"],
        "managed_only": False,
    }
    assert post(client, with_payload(answer(TWO_APPS))).status_code == 200
    assert reports(store) == [("targeted_check", ["apple_bundle_id"], RECEIVED)]
    assert present(store) == {"com.zhiliaoapp.musically"}  # only what was asked


def test_an_answer_to_a_registered_managed_apps_query_is_managed_only(store, client):
    assert client.post(COMMANDS, content=command(ManagedAppsOnly=True)).status_code == 200
    assert post(client, with_payload(answer(TWO_APPS))).status_code == 200
    assert [(kind, observed) for kind, _, observed in reports(store)] == [
        ("managed_only", RECEIVED)
    ]
    assert present(store) == {"com.zhiliaoapp.musically", "us.zoom.videomeetings"}


def test_a_result_is_not_a_command(store, client):
    before = table_digest(store.engine)
    response = client.post(COMMANDS, content=answer(TWO_APPS))
    assert response.status_code == 422
    assert response.json()["errors"][0]["where"] == "$.Command"
    assert table_digest(store.engine) == before


# ── hostile bodies ──────────────────────────────────────────────────────────────────────────

LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE plist [<!ENTITY a "aaaaaaaaaa">'
    b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><plist><dict><key>Status</key>'
    b"<string>&b;</string></dict></plist>"
)
BAD_BINARY = b"bplist00" + b"\xff" * 40


@pytest.mark.parametrize(
    ("body", "status", "where"),
    [
        (b"{not json", 422, "$"),
        (b"[" * 100 + b"]" * 100, 422, "$"),
        (b'{"event_id": "a", "event_id": "b"}', 422, "$"),
        (b"[]", 422, "$"),
        (b"x" * (LIMIT + 1), 413, "$"),
        (json.dumps(example() | {"acknowledge_event": "x"}).encode(), 422, "$.acknowledge_event"),
        (json.dumps(example() | {"event_id": 7}).encode(), 422, "$.event_id"),
    ],
    ids=[
        "not-json",
        "deep",
        "duplicate-key",
        "not-an-object",
        "oversized",
        "event-not-object",
        "event-id-not-text",
    ],
)
def test_hostile_envelopes_are_a_clear_4xx_and_change_nothing(store, client, body, status, where):
    before = table_digest(store.engine)
    response = client.post(WEBHOOK, content=body)
    assert response.status_code == status, response.text
    assert response.json()["errors"][0]["where"] == where
    assert table_digest(store.engine) == before


@pytest.mark.parametrize(
    ("raw_payload", "message"),
    [
        ("not base64!", "not base64"),
        (base64.b64encode(LAUGHS).decode(), "ENTITY"),
        (base64.b64encode(BAD_BINARY).decode(), "not a valid plist"),
        (base64.b64encode(b"<dict><key>Status</key>").decode(), "not a valid plist"),
    ],
    ids=["bad-base64", "entity-bomb", "bad-binary-plist", "truncated-plist"],
)
def test_a_payload_that_is_no_plist_is_422_and_nothing_is_remembered(
    store, client, raw_payload, message
):
    before = table_digest(store.engine)
    envelope = example()
    envelope["acknowledge_event"]["raw_payload"] = raw_payload
    response = post(client, envelope)
    assert response.status_code == 422, response.text
    problem = response.json()["errors"][0]
    assert problem["where"] == "$.acknowledge_event.raw_payload"
    assert message in problem["message"]
    assert table_digest(store.engine) == before
    # Not remembered as applied: the same event, mended, is applied.
    assert post(client, example()).json()["applied"] is True


def test_hostile_command_plists_are_refused(store, client):
    before = table_digest(store.engine)
    for body, status in ((LAUGHS, 422), (BAD_BINARY, 422), (b"<" + b"x" * (1024 * 1024), 413)):
        assert client.post(COMMANDS, content=body).status_code == status
    assert table_digest(store.engine) == before
