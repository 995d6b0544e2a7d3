"""`appwarden attest`: only the owner, only under a policy that accepts it, audited, and valid
for exactly the identifiers it covered (both stores)."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import select
from tests.conftest import release_policy, table_digest

from appwarden.audit.models import AuditEntry
from appwarden.db.uow import unit_of_work
from appwarden.devices.models import Coverage, Report
from appwarden.timeutil import parse_instant
from appwarden.usecases.demo import APPROVER, AUTHOR, POLICY_ID, policy_text

BASE = "2020-07-10T09:00:00-07:00"
DAVE_PHONE = "enrollment_id:D4VE-USER-ENROLLMENT-0001"
ALICE_PHONE = "udid:00008110-000A1B2C3D4E801E"
NOON = "2020-07-10T12:00:00-07:00"
LATER = "2020-07-10T13:00:00-07:00"


def state(cli, device: str, at: str) -> str:
    (row,) = cli("status", "--device", device, "--at", at, "--json").json()
    return row["state"]


def attest(cli, device: str, who: str, *, policy: str = POLICY_ID, at: str = NOON):
    return cli("attest", device, "--policy", policy, "--as", who, "--at", at, "--json")


def release(cli, tmp_path, text: str, at: str, *, name: str = "policy.yaml") -> None:
    release_policy(cli, tmp_path / name, text, at, author=AUTHOR, approver=APPROVER)


def demo_text() -> str:
    return policy_text(parse_instant(BASE))


def test_the_owner_attests_and_leaves_unknown_audited(cli, demo, store):
    assert state(cli, DAVE_PHONE, NOON) == "unknown"
    done = attest(cli, DAVE_PHONE, "dave@example.com")
    assert done.code == 0, done.err
    body = done.json()
    assert body["state"] == "compliant"
    assert body["identifiers"] == [
        "apple_bundle_id:com.ss.iphone.ugc.ame",
        "apple_bundle_id:com.zhiliaoapp.musically",
    ]
    assert state(cli, DAVE_PHONE, NOON) == "compliant"
    with unit_of_work(store.engine, now=datetime.now().astimezone()) as uow:
        report = uow.session.scalars(
            select(Report).where(Report.evidence_kind == "attestation")
        ).one()
        assert (report.source, report.coverage_hash) == ("attestation", body["coverage_hash"])
        assert report.received_at == parse_instant(NOON)
        covered = uow.session.scalars(
            select(Coverage.value).where(Coverage.report_id == report.id)
        ).all()
        assert sorted(covered) == ["com.ss.iphone.ugc.ame", "com.zhiliaoapp.musically"]
        (entry,) = uow.session.scalars(
            select(AuditEntry).where(AuditEntry.action == "device.attest")
        ).all()
        assert entry.actor == "dave@example.com"
        assert entry.object_id == str(report.device_id)
        assert entry.before["state"] == "unknown"
        assert entry.after["state"] == "compliant"
    assert cli("audit", "verify").code == 0


@pytest.mark.parametrize("who", ["alice@example.com", "ciso@example.com", "nobody@example.com"])
def test_nobody_attests_for_someone_elses_device(cli, demo, store, who):
    before = table_digest(store.engine)
    refused = attest(cli, DAVE_PHONE, who)
    missing = attest(cli, "enrollment_id:NO-SUCH-DEVICE", "alice@example.com")
    assert refused.code != 0
    assert table_digest(store.engine) == before
    if who == "nobody@example.com":
        assert "not an active person" in refused.err
        return
    # The same words as for a device that does not exist: nothing is learnt about dave's.
    assert refused.code == missing.code == 3
    assert refused.err.replace(DAVE_PHONE, "X") == missing.err.replace(
        "enrollment_id:NO-SUCH-DEVICE", "X"
    )


def test_attest_names_oneself(cli, demo, store):
    before = table_digest(store.engine)
    unnamed = cli("attest", DAVE_PHONE, "--policy", POLICY_ID, "--at", NOON)
    assert unnamed.code != 0
    assert "--as" in unnamed.err
    assert table_digest(store.engine) == before


def test_refused_where_the_policy_does_not_accept_it(cli, demo, store, tmp_path):
    text = demo_text().replace(
        "evidence: [inventory, targeted_check, attestation]", "evidence: [inventory]"
    )
    release(cli, tmp_path, text, "2020-07-10T11:00:00-07:00")
    assert state(cli, DAVE_PHONE, NOON) == "unknown"
    before = table_digest(store.engine)
    refused = attest(cli, DAVE_PHONE, "dave@example.com")
    assert refused.code == 2
    assert "does not accept your confirmation" in refused.err
    assert table_digest(store.engine) == before


def test_refused_for_a_policy_not_in_effect(cli, demo, store):
    before = table_digest(store.engine)
    refused = attest(cli, DAVE_PHONE, "dave@example.com", policy="no-such-policy")
    assert refused.code == 3
    assert table_digest(store.engine) == before


def test_a_later_version_adding_an_identifier_is_unknown_again(cli, demo, tmp_path):
    assert attest(cli, DAVE_PHONE, "dave@example.com").code == 0
    same_set = demo_text().replace(
        "title: Mandatory removal of TikTok", "title: Mandatory removal of TikTok (v2)"
    )
    release(cli, tmp_path, same_set, "2020-07-10T12:10:00-07:00", name="v2.yaml")
    assert state(cli, DAVE_PHONE, LATER) == "compliant"  # the same resolved set: still covered

    grown = same_set.replace(
        "  apps: [tiktok]\n",
        "  apps: [tiktok]\n  identifiers:\n"
        "    - {namespace: apple_bundle_id, value: com.example.tiktok.companion}\n",
    )
    release(cli, tmp_path, grown, "2020-07-10T12:30:00-07:00", name="v3.yaml")
    assert state(cli, DAVE_PHONE, LATER) == "unknown"
    # Confirming again covers the new set.
    again = attest(cli, DAVE_PHONE, "dave@example.com", at=LATER)
    assert again.code == 0, again.err
    assert "apple_bundle_id:com.example.tiktok.companion" in again.json()["identifiers"]
    assert state(cli, DAVE_PHONE, LATER) == "compliant"


def test_the_gate_flips_in_the_same_process(cli, demo, tmp_path):
    """`unknown: deny`: dave's phone is denied mail after the deadline until he confirms."""
    text = demo_text().replace("unknown: allow", "unknown: deny")
    release(cli, tmp_path, text, "2020-07-10T11:00:00-07:00")
    after_deadline = "2020-07-12T09:00:00-07:00"
    decide = ("decide", DAVE_PHONE, "email", "--at", after_deadline, "--json")
    assert cli(*decide).json()["decision"] == "deny"
    assert attest(cli, DAVE_PHONE, "dave@example.com", at=after_deadline).code == 0
    assert cli(*decide).json()["decision"] == "allow"
