"""Exemptions through their whole life, and retraction refusals, on both stores."""

from __future__ import annotations

import pytest
from tests.conftest import table_digest

POLICY = "tiktok-mobile-email"
APPROVER = "ciso@example.com"
AUTHOR = "security.lead@example.com"
ALICE_PHONE = "udid:00008110-000A1B2C3D4E801E"


@pytest.fixture
def memo(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("APPWARDEN_MAILDIR", str(tmp_path / "mail"))
    assert cli("demo", "--base-time", "2020-07-10T09:00:00-07:00").code == 0
    assert cli("worker", "--once", "--at", "2020-07-10T09:01:00-07:00").code == 0
    return cli


def state(cli, device, at):
    (row,) = cli("status", "--device", device, "--at", at, "--json").json()
    return row


def test_a_request_changes_nothing_until_granted(memo, smtp_server):
    asked = memo(
        "exemption",
        "request",
        "--policy",
        POLICY,
        "--device",
        ALICE_PHONE,
        "--reason",
        "I need TikTok for the social media campaign.",
        "--as",
        "alice@example.com",
        "--at",
        "2020-07-10T10:00:00-07:00",
        "--json",
    )
    assert asked.code == 0, asked.err
    request_id = asked.json()["id"]
    assert asked.json()["status"] == "requested"
    assert state(memo, ALICE_PHONE, "2020-07-11T12:00:00-07:00")["state"] == "non_compliant"

    granted = memo(
        "exemption",
        "grant",
        str(request_id),
        "--until",
        "2020-08-01T00:00:00-07:00",
        "--as",
        APPROVER,
        "--at",
        "2020-07-10T11:00:00-07:00",
        "--json",
    )
    assert granted.code == 0, granted.err
    assert granted.json()["status"] == "approved"
    row = state(memo, ALICE_PHONE, "2020-07-11T12:00:00-07:00")
    assert row["state"] == "exempt"
    assert row["reasons"][:2] == [f"exemption:{request_id}", "underlying:non_compliant"]
    assert (
        memo("decide", ALICE_PHONE, "email", "--at", "2020-07-11T12:00:00-07:00", "--json").json()[
            "decision"
        ]
        == "allow"
    )
    assert memo("worker", "--once", "--at", "2020-07-10T11:05:00-07:00").code == 0
    granted_mail = [
        m
        for m in smtp_server.messages
        if m["To"] == "alice@example.com" and m["X-Appwarden-Kind"] == "exemption"
    ]
    assert len(granted_mail) == 1
    assert granted_mail[0]["Subject"] == "Exemption granted: Mandatory removal of TikTok"


def test_an_employee_cannot_ask_for_someone_else(memo, store):
    before = table_digest(store.engine)
    refused = memo(
        "exemption",
        "request",
        "--policy",
        POLICY,
        "--person",
        "carol@example.com",
        "--reason",
        "please",
        "--as",
        "alice@example.com",
    )
    assert refused.code == 5
    assert "exemptions:decide" in refused.err
    assert table_digest(store.engine) == before


def test_deny_and_revoke(memo):
    asked = memo(
        "exemption",
        "request",
        "--policy",
        POLICY,
        "--device",
        ALICE_PHONE,
        "--reason",
        "please",
        "--as",
        "alice@example.com",
        "--at",
        "2020-07-10T10:00:00-07:00",
        "--json",
    ).json()
    denied = memo(
        "exemption",
        "deny",
        str(asked["id"]),
        "--reason",
        "Not a business need.",
        "--as",
        APPROVER,
        "--at",
        "2020-07-10T10:30:00-07:00",
    )
    assert denied.code == 0, denied.err
    listed = {
        e["id"]: e["status"] for e in memo("exemption", "list", "--policy", POLICY, "--json").json()
    }
    assert listed[asked["id"]] == "denied"
    again = memo("exemption", "deny", str(asked["id"]), "--reason", "again", "--as", APPROVER)
    assert again.code == 4

    # frank's exemption is revoked after the deadline: he gets the grace period from then.
    frank = "udid:00008030-001F5E6A3C22802E"
    frank_id = next(
        e["id"] for e in memo("exemption", "list", "--json").json() if e["status"] == "approved"
    )
    revoked = memo(
        "exemption",
        "revoke",
        str(frank_id),
        "--reason",
        "Campaign over.",
        "--as",
        APPROVER,
        "--at",
        "2020-07-12T09:00:00-07:00",
    )
    assert revoked.code == 0, revoked.err
    row = state(memo, frank, "2020-07-12T10:00:00-07:00")
    assert (row["state"], row["due"], row["since"]) == (
        "action_required",
        "2020-07-13T16:00:00Z",
        "2020-07-12T16:00:00Z",
    )
    assert state(memo, frank, "2020-07-13T10:00:00-07:00")["state"] == "non_compliant"


def test_a_warning_goes_out_seven_days_before_an_exemption_ends(memo, smtp_server):
    assert memo("worker", "--once", "--at", "2020-12-20T00:00:00Z").code == 0
    assert not [m for m in smtp_server.messages if m["Subject"].startswith("Exemption ending soon")]
    assert memo("worker", "--once", "--at", "2020-12-26T00:00:00Z").code == 0
    assert memo("worker", "--once", "--at", "2020-12-27T00:00:00Z").code == 0
    warnings = [
        m
        for m in smtp_server.messages
        if m["Subject"] == "Exemption ending soon: Mandatory removal of TikTok"
    ]
    assert [m["To"] for m in warnings] == ["frank@example.com"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["policy", "retract", POLICY, "--as", AUTHOR], 2, "needs --message"),
        (["policy", "retract", POLICY, "--message", "  ", "--as", AUTHOR], 2, "needs --message"),
        (
            ["policy", "retract", "no-such-policy", "--message", "x", "--as", AUTHOR],
            3,
            "no policy 'no-such-policy'",
        ),
        (
            ["policy", "retract", POLICY, "--message", "x", "--as", "bob@example.com"],
            5,
            "lacks the permission policies:retract",
        ),
    ],
    ids=["no-message", "blank-message", "unknown-policy", "not-allowed"],
)
def test_retract_refusals_change_nothing(memo, store, args, code, message):
    before = table_digest(store.engine)
    result = memo(*args, "--at", "2020-07-10T12:00:00-07:00")
    assert result.code == code, result.err
    assert message in result.err
    assert table_digest(store.engine) == before


def test_retract_twice_is_a_conflict(memo, store):
    assert (
        memo(
            "policy",
            "retract",
            POLICY,
            "--message",
            "in error",
            "--as",
            AUTHOR,
            "--at",
            "2020-07-10T12:00:00-07:00",
        ).code
        == 0
    )
    before = table_digest(store.engine)
    again = memo(
        "policy",
        "retract",
        POLICY,
        "--message",
        "in error",
        "--as",
        AUTHOR,
        "--at",
        "2020-07-10T12:01:00-07:00",
    )
    assert again.code == 4
    assert table_digest(store.engine) == before
