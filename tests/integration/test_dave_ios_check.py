"""dave's iPhone in the reference organisation (`appwarden demo`): personal, `managed_only`,
so no MDM can see TikTok there and it stays `unknown`. Under a version with `unknown: deny` it
is denied; an iOS targeted check answering "no handler for TikTok's URL schemes" makes it
`compliant`, because the catalog's TikTok entries opt in to letting an absent scheme cover their
bundle ids, and the gate answer in the same process flips at once (W6: read-your-writes). A
policy naming the same scheme and bundle id itself, without the catalog's opt-in, leaves dave
`unknown` after the same answer."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select
from tests.agent_harness import AGENT_SECRET, DAVE, POLICY, enrol, publish_unknown_deny
from tests.conftest import api_token, bearer, table_digest

from appwarden.db.uow import unit_of_work
from appwarden.identity.models import Person
from appwarden.notifications.models import Notice
from appwarden.settings import Settings
from appwarden.timeutil import iso
from appwarden.usecases.demo import APPROVER, AUTHOR
from appwarden.vocabulary import Permission
from appwarden.web.app import create_app

NOW = datetime(2020, 7, 11, 19, 0, tzinfo=UTC)
EXPLICIT = "tiktok-ios-explicit"
EXPLICIT_POLICY = f"""\
apiVersion: appwarden/v1
kind: AppPolicy
metadata:
  id: {EXPLICIT}
  title: TikTok on iPhones, named without the catalog
spec:
  identifiers:
    - {{namespace: ios_url_scheme, value: snssdk1233}}
    - {{namespace: apple_bundle_id, value: com.zhiliaoapp.musically}}
  scope:
    platforms: [ios]
  deadline: 2020-07-11T12:00:00Z
  evidence: [inventory, targeted_check]
  enforcement:
    deny: []
"""


def _app(store, tmp_path: Path) -> TestClient:
    settings = Settings(
        database_url=store.url,
        env="test",
        clock=f"fixed:{iso(NOW)}",
        maildir=tmp_path / "mail",
        agent_secret=AGENT_SECRET,
    )
    return TestClient(create_app(settings))


def _publish(cli, tmp_path: Path, policy_id: str, text: str) -> None:
    path = tmp_path / f"{policy_id}.yaml"
    path.write_text(text)
    for step in (
        ("apply", str(path), "--as", AUTHOR),
        ("propose", policy_id, "--as", AUTHOR),
        ("approve", policy_id, "--as", APPROVER),
        ("publish", policy_id, "--as", AUTHOR, "--short-notice"),
    ):
        assert cli("policy", *step, "--at", "2020-07-11T10:00:00Z").code == 0, step


def _status(cli, policy: str) -> dict:
    (row,) = cli("status", "--policy", policy, "--device", DAVE, "--json", "--at", iso(NOW)).json()
    return row


def test_an_ios_check_answer_takes_daves_iphone_from_unknown_to_compliant(
    store, cli, demo, tmp_path
):
    publish_unknown_deny(cli, tmp_path, deadline="2020-07-11T12:00:00Z", at="2020-07-11T10:00:00Z")
    writer = api_token(store, Permission.INVENTORY_WRITE, name="mdm")
    reader = api_token(store, Permission.DECISIONS_READ, name="gate")
    decision_path = f"/v1/decisions/{DAVE}/email"
    with _app(store, tmp_path) as client:
        assert client.get(decision_path, headers=bearer(reader)).json()["decision"] == "deny"
        assert _status(cli, POLICY)["state"] == "unknown"
        dave = enrol(client, writer, DAVE, NOW)
        manifest = dave.manifest()
        started = time.perf_counter()
        assert dave.answer(manifest, []).status_code == 200
        flipped = client.get(decision_path, headers=bearer(reader)).json()
        elapsed = time.perf_counter() - started
    assert flipped["decision"] == "allow"
    assert elapsed < 1.0
    row = _status(cli, POLICY)
    assert row["state"] == "compliant"
    assert "self_reported" in row["reasons"]


def test_without_the_catalogs_opt_in_the_same_answer_leaves_dave_unknown(
    store, cli, demo, tmp_path
):
    _publish(cli, tmp_path, EXPLICIT, EXPLICIT_POLICY)
    writer = api_token(store, Permission.INVENTORY_WRITE, name="mdm")
    with _app(store, tmp_path) as client:
        dave = enrol(client, writer, DAVE, NOW)
        manifest = dave.manifest(EXPLICIT)
        assert manifest["identifiers"] == ["ios_url_scheme:snssdk1233"]
        assert dave.answer(manifest, []).status_code == 200
    row = _status(cli, EXPLICIT)
    assert row["state"] == "unknown"
    assert row["reasons"] == ["unverified:apple_bundle_id:com.zhiliaoapp.musically"]


def test_a_policy_naming_nothing_an_iphone_can_answer_has_no_check(store, cli, demo, tmp_path):
    android_only = EXPLICIT_POLICY.replace(EXPLICIT, "android-only").replace(
        "    - {namespace: ios_url_scheme, value: snssdk1233}\n"
        "    - {namespace: apple_bundle_id, value: com.zhiliaoapp.musically}\n",
        "    - {namespace: android_package, value: com.zhiliaoapp.musically}\n",
    )
    _publish(
        cli,
        tmp_path,
        "android-only",
        android_only.replace("platforms: [ios]", "platforms: [ios, android]"),
    )
    writer = api_token(store, Permission.INVENTORY_WRITE, name="mdm")
    with _app(store, tmp_path) as client:
        dave = enrol(client, writer, DAVE, NOW)
        before = table_digest(store.engine)
        asked = dave.signed("GET", "/checks/manifest?policy=android-only")
        assert asked.status_code == 409, asked.text
        assert "nothing a device on ios can be asked about" in asked.json()["detail"]
        assert table_digest(store.engine) == before


def test_daves_blocked_notice_says_his_iphone_could_not_be_seen(store, cli, demo, tmp_path):
    """Denied under `unknown: deny` for want of proof, not for a finding: the "blocked" notice
    the flip queues says so (the decision change carries which of its causes are unverified)."""
    publish_unknown_deny(cli, tmp_path, deadline="2020-07-11T12:00:00Z", at="2020-07-11T10:00:00Z")
    assert cli("worker", "--once", "--at", iso(NOW)).code == 0  # the flip, and its notice
    with unit_of_work(store.engine, now=NOW, write=False) as uow:
        bodies = list(
            uow.session.scalars(
                select(Notice.body_text)
                .join(Person, Person.id == Notice.person_id)
                .where(Person.email == "dave@example.com", Notice.kind == "blocked")
            )
        )
    assert len(bodies) == 1
    assert ": we cannot see its apps, so we cannot confirm that" in bodies[0]
    assert ": we found" not in bodies[0]
