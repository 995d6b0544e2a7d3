"""The reference memo end to end on the command line, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest

BASE = "2020-07-10T09:00:00-07:00"
BEFORE = "2020-07-10T12:00:00-07:00"
AFTER = "2020-07-11T12:00:00-07:00"

DEVICES = {
    "alice iPhone": "udid:00008110-000A1B2C3D4E801E",
    "alice MacBook": "serial:C02ZK1ABMD6M",
    "bob": "enterprise_specific_id:BOB-PIXEL-7731",
    "carol": "enterprise_specific_id:CAROL-GALAXY-2210",
    "dave": "enrollment_id:D4VE-USER-ENROLLMENT-0001",
    "erin": "enterprise_specific_id:ERIN-TAB-0042",
    "frank": "udid:00008030-001F5E6A3C22802E",
}

# (device, time) -> (state, decision for email or None when not asserted)
EXPECTED = {
    ("alice iPhone", BEFORE): ("action_required", "allow"),
    ("alice iPhone", AFTER): ("non_compliant", "deny"),
    ("alice MacBook", BEFORE): ("not_applicable", "allow"),
    ("alice MacBook", AFTER): ("not_applicable", "allow"),
    ("bob", BEFORE): ("compliant", "allow"),
    ("bob", AFTER): ("compliant", "allow"),
    ("carol", BEFORE): ("action_required", "allow"),
    ("carol", AFTER): ("non_compliant", "deny"),
    ("dave", BEFORE): ("unknown", "allow"),
    ("dave", AFTER): ("unknown", "allow"),
    ("erin", BEFORE): ("not_applicable", "allow"),
    ("erin", AFTER): ("not_applicable", "allow"),
    ("frank", BEFORE): ("exempt", "allow"),
    ("frank", AFTER): ("exempt", "allow"),
}


@pytest.fixture
def memo(cli):
    result = cli("demo", "--base-time", BASE)
    assert result.code == 0, result.err
    return cli


@pytest.mark.parametrize("when", [BEFORE, AFTER])
def test_reference_table_holds_per_device_and_fleet_wide(memo, when):
    fleet = memo("status", "--policy", "tiktok-mobile-email", "--all", "--at", when, "--json")
    assert fleet.code == 0, fleet.err
    by_device = {ident: row for row in fleet.json() for ident in row["device_identifiers"]}
    for name, reference in DEVICES.items():
        state, decision = EXPECTED[(name, when)]
        assert by_device[reference]["state"] == state, name
        single = memo("status", "--device", reference, "--at", when, "--json").json()
        assert [row["state"] for row in single] == [state], name
        decided = memo("decide", reference, "email", "--at", when, "--json")
        assert decided.code == 0, decided.err
        assert decided.json()["decision"] == decision, name


def test_alice_is_non_compliant_since_the_deadline(memo):
    rows = memo("status", "--device", "udid:00008110-000A1B2C3D4E801E", "--at", AFTER, "--json")
    (row,) = rows.json()
    assert row["since"] == "2020-07-11T06:59:59Z"
    assert row["due"] == "2020-07-11T06:59:59Z"
    assert row["person"] == "alice@example.com"
    assert row["platform"] == "ios"
    assert row["version"] == 1
    assert row["device_identifiers"] == [
        "udid:00008110-000A1B2C3D4E801E",
        "eas_device_id:6F24CAD599A5BF1A690246B8C68FAE8D",
    ]
    assert row["reasons"] == ["present:apple_bundle_id:com.zhiliaoapp.musically"]


def test_status_rows_carry_the_documented_fields(memo):
    rows = memo("status", "--at", BEFORE, "--json").json()
    assert {r["person"] for r in rows} == {
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
        "dave@example.com",
        "frank@example.com",
    }
    for row in rows:
        assert {
            "policy",
            "version",
            "device",
            "device_identifiers",
            "person",
            "platform",
            "state",
            "since",
            "due",
            "reasons",
        } <= set(row)


def test_decide_accepts_a_bare_unambiguous_identifier(memo):
    decided = memo("decide", "6F24CAD599A5BF1A690246B8C68FAE8D", "email", "--at", AFTER, "--json")
    body = decided.json()
    assert body["decision"] == "deny"
    assert body["device"] == "udid:00008110-000A1B2C3D4E801E"
    assert body["reasons"][0]["policy"] == "tiktok-mobile-email"
    assert body["reasons"][0]["state"] == "non_compliant"
    assert set(body) >= {"device", "resource", "decision", "reasons", "valid_until"}


def test_before_the_deadline_the_answer_says_when_it_may_change(memo):
    body = memo("decide", DEVICES["alice iPhone"], "email", "--at", BEFORE, "--json").json()
    assert body["decision"] == "allow"
    assert body["valid_until"] == "2020-07-11T06:59:59Z"


def test_the_memo_is_loaded_once(memo):
    again = memo("demo", "--base-time", BASE)
    assert again.code == 4
    assert "already loaded" in again.err


def test_the_default_demo_is_live_three_hours_after_release(cli):
    assert cli("demo").code == 0
    rows = cli("status", "--json").json()
    states = {r["person"]: r["state"] for r in rows}
    assert states["alice@example.com"] == "action_required"
    assert states["bob@example.com"] == "compliant"
