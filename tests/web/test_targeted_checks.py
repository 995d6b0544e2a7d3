"""Targeted checks over HTTP (docs/targeted-check.md), on both stores: dave's iPhone (personal,
`managed_only`) enrols with a code an automation made, asks for the manifest of the reference
policy and answers it with the agent's own signing code. An absent answer makes it `compliant`
and flips its gate answer under `unknown: deny`; a present one makes it `action_required`. A
wrong key, a replay, an older time, another policy's manifest, a manifest edited by the device
and a line not in the manifest are each refused with every table unchanged."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from tests.agent_harness import (
    AGENT_SECRET,
    DAVE,
    POLICY,
    Device,
    enrol,
    load_agent,
    publish_unknown_deny,
)
from tests.conftest import api_token, bearer, table_digest

from appwarden.settings import Settings
from appwarden.timeutil import iso
from appwarden.vocabulary import Permission
from appwarden.web.app import create_app

OTHER_POLICY = "tiktok-everywhere"
NOW = datetime(2020, 7, 11, 19, 0, tzinfo=UTC)  # after both versions' deadlines
agent = load_agent()


@pytest.fixture
def dave(store, cli, demo, tmp_path: Path) -> Iterator[Device]:
    publish_unknown_deny(cli, tmp_path, deadline="2020-07-11T12:00:00Z", at="2020-07-11T10:00:00Z")
    other = (
        (tmp_path / "unknown-deny.yaml").read_text().replace(f"id: {POLICY}", f"id: {OTHER_POLICY}")
    )
    (tmp_path / "other.yaml").write_text(other)
    assert (
        cli(
            "policy", "apply", str(tmp_path / "other.yaml"), "--as", "security.lead@example.com"
        ).code
        == 0
    )
    for step, who in (
        ("propose", "security.lead@example.com"),
        ("approve", "ciso@example.com"),
        ("publish", "security.lead@example.com"),
    ):
        result = cli(
            "policy",
            step,
            OTHER_POLICY,
            "--as",
            who,
            "--short-notice" if step == "publish" else "--json",
            "--at",
            "2020-07-11T10:00:00Z",
        )
        assert result.code == 0, result.err
    settings = Settings(
        database_url=store.url,
        env="test",
        clock=f"fixed:{iso(NOW)}",
        maildir=tmp_path / "mail",
        agent_secret=AGENT_SECRET,
    )
    token = api_token(store, Permission.INVENTORY_WRITE)
    with TestClient(create_app(settings)) as client:
        yield enrol(client, token, DAVE, NOW)


def state_and_decision(cli, policy: str = POLICY) -> tuple[str, str]:
    (row,) = cli("status", "--policy", policy, "--device", DAVE, "--json", "--at", iso(NOW)).json()
    decided = cli("decide", DAVE, "email", "--json", "--at", iso(NOW)).json()
    return row["state"], decided["decision"]


def test_the_manifest_asks_an_iphone_only_for_schemes_and_the_bundle_ids_they_cover(dave):
    manifest = dave.manifest()
    assert manifest["identifiers"] == [
        "apple_bundle_id:com.ss.iphone.ugc.ame",
        "apple_bundle_id:com.zhiliaoapp.musically",
        "ios_url_scheme:snssdk1180",
        "ios_url_scheme:snssdk1233",
    ]
    assert (manifest["policy"], manifest["version"]) == (POLICY, 2)
    assert (manifest["device_id"], manifest["issued_at"]) == (dave.agent_id, iso(NOW))


def test_an_absent_answer_makes_the_device_compliant_and_flips_its_gate(dave, cli):
    assert state_and_decision(cli) == ("unknown", "deny")
    accepted = dave.answer(dave.manifest(), [])
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["accepted"] is True
    assert state_and_decision(cli) == ("compliant", "allow")


def test_a_present_answer_makes_the_device_action_required(dave, cli):
    accepted = dave.answer(dave.manifest(), ["ios_url_scheme:snssdk1233"])
    assert accepted.status_code == 200, accepted.text
    state, _ = state_and_decision(cli)
    assert state == "action_required"


def _edited(manifest: dict[str, Any]) -> dict[str, Any]:
    edited = copy.deepcopy(manifest)
    edited["identifiers"] = edited["identifiers"][:1]  # "only ask me about one of them"
    return edited


# Refusals that need no earlier answer: (device, manifest, another policy's manifest) -> response.
REFUSALS = {
    "wrong key": lambda d, m, other: d.client.post(
        "/checks/answer",
        json=agent.make_answer(hashlib.sha256(b"not the key").digest(), m, [], iso(NOW)),
    ),
    "another policy's manifest": lambda d, m, other: d.client.post(
        "/checks/answer", json=_with_policy(d, other, POLICY)
    ),
    "a manifest edited by the device": lambda d, m, other: d.answer(_edited(m), []),
    "a line not in the manifest": lambda d, m, other: d.client.post(
        "/checks/answer", json=_with_present(d, m, ["apple_bundle_id:com.example.other"])
    ),
}


def _with_policy(device: Device, manifest: dict[str, Any], policy: str) -> dict[str, Any]:
    body = agent.make_answer(device.key, manifest, [], iso(NOW))
    body["answer"]["policy"] = policy
    body["mac"] = agent.answer_mac(device.key, body["answer"])
    return body


def _with_present(device: Device, manifest: dict[str, Any], present: list[str]) -> dict[str, Any]:
    body = agent.make_answer(device.key, manifest, [], iso(NOW))
    body["answer"]["present"] = present
    body["mac"] = agent.answer_mac(device.key, body["answer"])
    return body


def _refused_and_unchanged(store, send) -> None:
    before = table_digest(store.engine)
    refused = send()
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert table_digest(store.engine) == before


@pytest.mark.parametrize("refusal", sorted(REFUSALS))
def test_a_refused_answer_changes_nothing(dave, store, refusal):
    manifest, other = dave.manifest(), dave.manifest(OTHER_POLICY)
    _refused_and_unchanged(store, lambda: REFUSALS[refusal](dave, manifest, other))


def test_a_replayed_answer_changes_nothing(dave, store):
    manifest = dave.manifest()
    assert dave.answer(manifest, []).status_code == 200
    _refused_and_unchanged(store, lambda: dave.answer(manifest, [], at=NOW + timedelta(seconds=1)))


def test_an_answer_older_than_the_last_one_changes_nothing(dave, store):
    assert dave.answer(dave.manifest(), []).status_code == 200
    fresh = dave.manifest()
    _refused_and_unchanged(store, lambda: dave.answer(fresh, [], at=NOW - timedelta(seconds=1)))


def test_a_wrongly_signed_manifest_request_is_refused_and_changes_nothing(dave, store):
    before = table_digest(store.engine)
    path = "/checks/manifest?" + urlencode({"policy": POLICY})
    late = dave.signed("GET", path, at=NOW - timedelta(minutes=6))
    forged = Device(dave.client, dave.agent_id, b"\0" * 32, NOW).signed("GET", path)
    assert (late.status_code, forged.status_code) == (403, 403)
    assert table_digest(store.engine) == before


def test_an_enrolment_code_works_once(store, dave):
    token = api_token(store, Permission.INVENTORY_WRITE, name="mdm")
    code = dave.client.post("/v1/agent/codes", json={"device": DAVE}, headers=bearer(token)).json()
    assert dave.client.post("/agent/enroll", json={"code": code["code"]}).status_code == 200
    before = table_digest(store.engine)
    again = dave.client.post("/agent/enroll", json={"code": code["code"]})
    assert again.status_code == 403
    assert table_digest(store.engine) == before


def _native(identifiers: list[dict], kind: str = "inventory", **report: Any) -> bytes:
    doc = {
        "format": "appwarden.inventory/v1",
        "source": "agent",
        "devices": [
            {
                "identifiers": identifiers,
                "report": {"evidence_kind": kind, "observed_at": iso(NOW), "apps": [], **report},
            }
        ],
    }
    return json.dumps(doc).encode()


def test_an_agent_writes_only_its_own_device_and_only_inventory(dave, store):
    own = [{"namespace": "agent_id", "value": dave.agent_id}]
    others = (
        _native([{"namespace": "udid", "value": "00008030-001F5E6A3C22802E"}]),  # frank's phone
        _native([*own, {"namespace": "serial", "value": "SOMEONE-ELSES"}]),
        _native(own, "targeted_check", checked=[{"namespace": "ios_url_scheme", "value": "x"}]),
    )
    for body in others:
        before = table_digest(store.engine)
        refused = dave.signed("POST", "/agent/report", body)
        assert refused.status_code in (403, 422), refused.text
        assert table_digest(store.engine) == before
    accepted = dave.signed("POST", "/agent/report", _native(own))
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["reports_applied"] == 1
