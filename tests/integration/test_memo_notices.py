"""The memo, announced and taken back, against a real SMTP server (docs/notices.md).

The reference organisation starts with the policy as a draft and frank's exemption already
granted; devices report daily; the author proposes, a second person approves, the memo is
published on July 1st; the worker runs at each step; carol removes TikTok on the 11th; the memo is
retracted. The mailbox is then checked message by message, by the X-Appwarden-* headers.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from appwarden.cli.main import run
from appwarden.notifications.models import Notice
from appwarden.timeutil import parse_instant
from appwarden.usecases.demo import APPROVER, AUTHOR, TIKTOK_LITE, inventory

POLICY = "tiktok-mobile-email"
CAROL_CLEAN = parse_instant("2020-07-11T08:00:00-07:00")


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def native_file(path: Path, day: datetime) -> Path:
    """The organisation's inventory as the MDM exports it each morning, in the native format;
    carol's phone is clean from the 11th."""
    devices = []
    for report in inventory(day).reports:
        device = report.device
        apps = [a for a in report.apps if not (day >= CAROL_CLEAN and a == TIKTOK_LITE)]
        devices.append(
            {
                "identifiers": [{"namespace": ns, "value": v} for ns, v in device.identifiers],
                "platform": str(device.platform),
                "form_factor": str(device.form_factor),
                "ownership": str(device.ownership),
                "owner": device.owner_email,
                "resources": list(device.resources or ()),
                "name": device.name,
                "report": {
                    "evidence_kind": str(report.evidence_kind),
                    "observed_at": iso(day),
                    "apps": [
                        {
                            "namespace": a.namespace,
                            "value": a.value,
                            "version": a.version,
                            "name": a.name,
                        }
                        for a in apps
                    ],
                },
            }
        )
    path.write_text(
        json.dumps({"format": "appwarden.inventory/v1", "source": "mdm-export", "devices": devices})
    )
    return path


@pytest.fixture
def memo(cli, store, smtp_server, monkeypatch, tmp_path):
    monkeypatch.setenv("APPWARDEN_MAILDIR", str(tmp_path / "mail"))
    assert cli("demo", "--base-time", "2020-07-10T09:00:00-07:00", "--draft").code == 0
    assert (
        cli("policy", "propose", POLICY, "--as", AUTHOR, "--at", "2020-07-01T08:00:00-07:00").code
        == 0
    )
    assert (
        cli("policy", "approve", POLICY, "--as", APPROVER, "--at", "2020-07-01T08:30:00-07:00").code
        == 0
    )
    published = cli(
        "policy", "publish", POLICY, "--as", AUTHOR, "--at", "2020-07-01T09:00:00-07:00"
    )
    assert published.code == 0, published.err

    def walk(until: str, *, carol_clean_at: datetime | None = CAROL_CLEAN) -> None:
        """Walk the days: reports each morning at 06:00 PDT, the worker at 09:00 in Berlin and
        in California (07:00Z and 16:00Z) and at the top of a few other hours."""
        end = parse_instant(until)
        moments: list[tuple[datetime, str]] = []
        day = parse_instant("2020-07-01T00:00:00Z")
        while day <= end:
            for hour, what in (
                (7, "worker"),
                (13, "report"),
                (15, "worker"),
                (16, "worker"),
                (20, "worker"),
            ):
                moment = day + timedelta(hours=hour)
                if parse_instant("2020-07-01T16:10:00Z") <= moment <= end:
                    moments.append((moment, what))
            day += timedelta(days=1)
        if carol_clean_at is not None and carol_clean_at <= end:
            moments.append((carol_clean_at, "report"))
        for moment, what in sorted(moments):
            if what == "report":
                imported = cli(
                    "import",
                    "native",
                    str(native_file(tmp_path / "inventory.json", moment)),
                    "--at",
                    iso(moment),
                )
                assert imported.code == 0, imported.err
            else:
                result = cli("worker", "--once", "--at", iso(moment))
                assert result.code == 0, result.err

    return walk


def mailbox(smtp_server) -> Counter:
    return Counter(
        (m["To"], m["X-Appwarden-Kind"])
        for m in smtp_server.messages
        if m["X-Appwarden-Policy"] == POLICY
    )


def first(smtp_server, person: str, kind: str):
    (message,) = [
        m for m in smtp_server.messages if m["To"] == person and m["X-Appwarden-Kind"] == kind
    ][:1]
    return message


def test_the_memo_announced_enforced_and_retracted(cli, memo, smtp_server):
    memo("2020-07-11T18:00:00Z")
    retracted = cli(
        "policy",
        "retract",
        POLICY,
        "--message",
        "The TikTok memo was sent in error. There is no change to our policies.",
        "--as",
        AUTHOR,
        "--at",
        "2020-07-11T12:00:00-07:00",
        "--json",
    )
    assert retracted.code == 0, retracted.err
    assert retracted.json()["corrections"] == 4
    assert cli("worker", "--once", "--at", "2020-07-11T12:05:00-07:00").code == 0

    assert mailbox(smtp_server) == Counter(
        {
            ("alice@example.com", "announce"): 1,
            ("alice@example.com", "reminder"): 2,
            ("alice@example.com", "blocked"): 1,
            ("alice@example.com", "correction"): 1,
            ("carol@example.com", "announce"): 1,
            ("carol@example.com", "reminder"): 2,
            ("carol@example.com", "blocked"): 1,
            ("carol@example.com", "restored"): 1,
            ("carol@example.com", "correction"): 1,
            ("dave@example.com", "announce"): 1,
            ("dave@example.com", "reminder"): 2,
            ("dave@example.com", "correction"): 1,
            ("frank@example.com", "exemption"): 1,
            ("frank@example.com", "correction"): 1,
        }
    )
    assert len(smtp_server.messages) == 17

    # Corrections are threaded to the first message each person got.
    for person, kind in (
        ("alice@example.com", "announce"),
        ("carol@example.com", "announce"),
        ("dave@example.com", "announce"),
        ("frank@example.com", "exemption"),
    ):
        correction = first(smtp_server, person, "correction")
        original = first(smtp_server, person, kind)
        assert correction["In-Reply-To"] == original["Message-ID"]
        assert correction["References"] == original["Message-ID"]

    assert (
        first(smtp_server, "alice@example.com", "announce")["Subject"]
        == "Action required: Mandatory removal of TikTok"
    )
    dave = first(smtp_server, "dave@example.com", "announce").get_body(("plain",)).get_content()
    assert "cannot see" in dave.lower()

    # Reminders went out at 09:00 in each recipient's zone.
    notices = cli("notices", "--policy", POLICY, "--json").json()
    due = sorted((n["person"], n["due_at"]) for n in notices if n["kind"] == "reminder")
    assert due == [
        ("alice@example.com", "2020-07-07T16:00:00Z"),
        ("alice@example.com", "2020-07-09T16:00:00Z"),
        ("carol@example.com", "2020-07-07T07:00:00Z"),
        ("carol@example.com", "2020-07-09T07:00:00Z"),
        ("dave@example.com", "2020-07-07T16:00:00Z"),
        ("dave@example.com", "2020-07-09T16:00:00Z"),
    ]
    assert all(n["status"] != "pending" for n in notices)
    decided = cli(
        "decide",
        "udid:00008110-000A1B2C3D4E801E",
        "email",
        "--at",
        "2020-07-11T12:30:00-07:00",
        "--json",
    )
    assert decided.json()["decision"] == "allow"


def test_retraction_between_reminders_cancels_the_rest(cli, memo, smtp_server):
    memo("2020-07-08T18:00:00Z")
    retracted = cli(
        "policy",
        "retract",
        POLICY,
        "--message",
        "Sent in error.",
        "--as",
        AUTHOR,
        "--at",
        "2020-07-08T12:00:00-07:00",
    )
    assert retracted.code == 0, retracted.err
    assert cli("worker", "--once", "--at", "2020-07-12T00:00:00Z").code == 0
    kinds = Counter(m["X-Appwarden-Kind"] for m in smtp_server.messages)
    assert kinds == Counter({"announce": 3, "exemption": 1, "reminder": 3, "correction": 4})
    assert len(smtp_server.messages) == 11
    notices = cli("notices", "--policy", POLICY, "--json").json()
    p1d = [n for n in notices if n["kind"] == "reminder" and n["due_at"].startswith("2020-07-09")]
    assert {n["status"] for n in p1d} == {"cancelled"}
    assert not [n for n in notices if n["kind"] == "blocked"]


def test_cancel_inside_the_undo_window_sends_nothing(
    cli, store, smtp_server, tmp_path, monkeypatch
):
    monkeypatch.setenv("APPWARDEN_MAILDIR", str(tmp_path / "mail"))
    assert cli("demo", "--base-time", "2020-07-10T09:00:00-07:00", "--draft").code == 0
    assert (
        cli("policy", "propose", POLICY, "--as", AUTHOR, "--at", "2020-07-01T08:00:00-07:00").code
        == 0
    )
    assert (
        cli("policy", "approve", POLICY, "--as", APPROVER, "--at", "2020-07-01T08:30:00-07:00").code
        == 0
    )
    assert (
        cli("policy", "publish", POLICY, "--as", AUTHOR, "--at", "2020-07-01T09:00:00-07:00").code
        == 0
    )
    assert (
        cli("policy", "cancel", POLICY, "--as", AUTHOR, "--at", "2020-07-01T09:05:00-07:00").code
        == 0
    )
    assert cli("worker", "--once", "--at", "2020-07-02T09:00:00-07:00").code == 0
    assert smtp_server.messages == []
    assert cli("notices", "--json").json() == []


def test_two_installations_never_share_a_message_id(sqlite_template, tmp_path, monkeypatch):
    """Gmail silently drops a message whose Message-ID it has seen: two installations (or one
    after a database reset) planning the same memo for the same people must not repeat ids."""
    monkeypatch.setenv("APPWARDEN_MAILDIR", str(tmp_path / "mail"))
    ids = []
    for name in ("first", "second"):
        path = tmp_path / f"{name}.db"
        shutil.copy(sqlite_template, path)
        url = f"sqlite:///{path}"
        assert run(["--db", url, "demo", "--base-time", "2020-07-10T09:00:00-07:00"]) == 0
        engine = create_engine(url)
        with engine.connect() as connection:
            ids.append(set(connection.scalars(select(Notice.message_id)).all()))
        engine.dispose()
    assert ids[0]
    assert len(ids[0]) == len(ids[1])
    assert not ids[0] & ids[1]
