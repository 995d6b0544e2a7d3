"""Reading commands: JSON for machines, tables for people, on both stores."""

from __future__ import annotations

from datetime import UTC, datetime

from appwarden.db.uow import unit_of_work
from appwarden.devices.schemas import DeviceFacts, InventoryBatch, ReportFacts
from appwarden.usecases.ingest import ingest
from appwarden.vocabulary import EvidenceKind


def test_catalog_list_and_show(cli):
    listed = cli("catalog", "list", "--json")
    assert listed.code == 0
    body = listed.json()
    slugs = {app["slug"] for app in body["apps"]}
    assert {"tiktok", "douyin", "capcut", "wechat", "zoom", "telegram"} <= slugs
    assert len(body["digest"]) == 64
    shown = cli("catalog", "show", "tiktok", "--json").json()
    identifiers = {(i["app"], i["identifier"]) for i in shown["identifiers"]}
    assert ("tiktok", "android_package:com.zhiliaoapp.musically") in identifiers
    assert ("tiktok-lite", "android_package:com.zhiliaoapp.musically.go") in identifiers
    assert ("trill", "android_package:com.ss.android.ugc.trill") in identifiers
    assert ("tiktok-now", "android_package:com.ss.android.ugc.now") in identifiers
    table = cli("catalog", "show", "tiktok")
    assert "com.zhiliaoapp.musically.go" in table.out


def test_an_unknown_catalog_slug_suggests_the_right_one(cli):
    result = cli("catalog", "show", "tik-tok")
    assert result.code == 3
    assert "tiktok" in result.err


def test_status_table_explains_each_state_in_words(cli, demo):
    table = cli("status", "--at", "2020-07-11T12:00:00-07:00")
    assert table.code == 0
    lines = {
        line.split("│")[1].strip(): line
        for line in table.out.splitlines()
        if "@example.com" in line
    }
    assert "non_compliant" in lines["alice@example.com"]
    assert "found com.zhiliaoapp.musically" in lines["alice@example.com"]
    assert "cannot see com.zhiliaoapp.musically" in lines["dave@example.com"]
    assert "exemption #1" in lines["frank@example.com"]
    decided = cli(
        "decide", "udid:00008110-000A1B2C3D4E801E", "email", "--at", "2020-07-11T12:00:00-07:00"
    )
    assert "deny" in decided.out
    assert "tiktok-mobile-email v1: non_compliant (deny)" in decided.out
    listing = cli("policy", "list", "--at", "2020-07-11T12:00:00-07:00", "--json").json()
    assert listing == [
        {
            "policy": "tiktok-mobile-email",
            "title": "Mandatory removal of TikTok",
            "in_effect": 1,
            "deadline": "2020-07-11T06:59:59Z",
            "versions": [{"version": 1, "state": "active"}],
        }
    ]


def test_status_of_an_unknown_policy_or_device_is_a_clear_error(cli, demo):
    missing = cli("status", "--policy", "nope")
    assert missing.code == 3
    assert "no policy 'nope'" in missing.err
    device = cli("decide", "udid:NOPE", "email")
    assert device.code == 3
    assert "no device with the identifier udid:NOPE" in device.err


def test_quarantine_lists_conflicting_reports(cli, store):
    at = datetime(2030, 1, 1, tzinfo=UTC)

    def report(*identifiers):
        return ReportFacts(
            device=DeviceFacts(identifiers=identifiers),
            source="mdm",
            evidence_kind=EvidenceKind.NONE,
            observed_at=at,
        )

    with unit_of_work(store.engine, now=at) as uow:
        ingest(uow, InventoryBatch(reports=(report(("udid", "A")), report(("serial", "S9")))))
        ingest(uow, InventoryBatch(reports=(report(("udid", "A"), ("serial", "S9")),)))
    held = cli("quarantine", "--json").json()
    assert len(held) == 1
    assert held[0]["identifiers"] == ["udid:A", "serial:S9"]
    assert held[0]["source"] == "mdm"


def test_a_schema_that_is_not_current_is_refused(cli, tmp_path):
    from appwarden.cli.main import run

    empty = tmp_path / "empty.db"
    code = run(["--db", f"sqlite:///{empty}", "status"])
    assert code == 4


def test_the_exchange_script_sets_each_device_to_its_current_decision(cli, demo):
    assert cli("worker", "--once", "--at", "2020-07-11T12:00:00-07:00").code == 0
    script = cli("enforcement", "exchange-script", "--at", "2020-07-11T12:00:00-07:00")
    assert script.code == 0
    lines = [line for line in script.out.splitlines() if line.startswith("Set-CASMailbox")]
    assert lines[0] == (
        "Set-CASMailbox -Identity 'alice@example.com' "
        "-ActiveSyncBlockedDeviceIDs @{Add='6F24CAD599A5BF1A690246B8C68FAE8D'} "
        "-ActiveSyncAllowedDeviceIDs @{Remove='6F24CAD599A5BF1A690246B8C68FAE8D'}"
    )
    assert len(lines) == 5
    assert sum("@{Add=" in line for line in lines) == 2  # alice and carol
    assert "$ErrorActionPreference = 'Stop'" in script.out
