"""The preview runs the same code as the release: what it promises is what is queued, notice
for notice, including a new version's update and no-longer-affected notices."""

from __future__ import annotations

from sqlalchemy import select

from appwarden.db.uow import unit_of_work
from appwarden.identity.models import Person
from appwarden.notifications.models import Notice
from appwarden.timeutil import parse_instant
from appwarden.usecases.demo import APPROVER, AUTHOR, policy_text

POLICY = "tiktok-mobile-email"
BASE = parse_instant("2020-07-10T09:00:00-07:00")


def queued(store, version_number=None):
    with unit_of_work(store.engine, now=BASE, write=False) as uow:
        rows = uow.session.execute(
            select(Notice, Person.email).join(Person, Person.id == Notice.person_id)
        ).all()
        return sorted(
            (email, n.kind, n.due_at.isoformat().replace("+00:00", "Z"), n.subject, n.body_text)
            for n, email in rows
            if n.status != "cancelled"
            and (
                version_number is None
                or n.due_slot.startswith(f"v{version_number}")
                or n.due_slot in ("announce",)
                or n.due_slot.startswith("granted")
            )
        )


def promised(preview):
    return sorted(
        (n["person"], n["kind"], n["due_at"], n["subject"], n["text"]) for n in preview["notices"]
    )


def approve(cli, at):
    assert cli("policy", "propose", POLICY, "--as", AUTHOR, "--at", at).code == 0
    result = cli("policy", "approve", POLICY, "--as", APPROVER, "--at", at)
    assert result.code == 0, result.err


def test_preview_equals_release_for_a_first_and_a_second_version(cli, store, tmp_path, monkeypatch):
    monkeypatch.setenv("APPWARDEN_MAILDIR", str(tmp_path / "mail"))
    assert cli("demo", "--base-time", "2020-07-10T09:00:00-07:00", "--draft").code == 0
    approve(cli, "2020-07-01T08:00:00-07:00")
    preview = cli("policy", "preview", POLICY, "--at", "2020-07-01T09:00:00-07:00", "--json")
    assert preview.code == 0, preview.err
    plan = preview.json()
    assert plan["release_at"] == "2020-07-01T16:10:00Z"
    assert plan["counts"] == {"action_required": 2, "unknown": 1, "exempt": 1, "compliant": 1}
    assert plan["recipients"] == [
        "alice@example.com",
        "carol@example.com",
        "dave@example.com",
        "frank@example.com",
    ]
    assert plan["audience"]["announce"] == [
        "alice@example.com",
        "carol@example.com",
        "dave@example.com",
    ]
    variants = {
        n["person"]: [d["variant"] for d in n["devices"]]
        for n in plan["notices"]
        if n["kind"] == "announce"
    }
    assert variants == {
        "alice@example.com": ["violating"],
        "carol@example.com": ["violating"],
        "dave@example.com": ["unverified"],
    }
    losing = {(r["person"], r["resource"], r["at"]) for r in plan["losing_access"]}
    assert losing == {
        ("alice@example.com", "email", "2020-07-11T06:59:59Z"),
        ("carol@example.com", "email", "2020-07-11T06:59:59Z"),
    }

    assert (
        cli("policy", "publish", POLICY, "--as", AUTHOR, "--at", "2020-07-01T09:00:00-07:00").code
        == 0
    )
    assert cli("worker", "--once", "--at", "2020-07-01T09:10:00-07:00").code == 0
    assert queued(store) == promised(plan)

    # Version 2: a later deadline, and the sales team (alice, carol) is out of scope.
    text = (
        policy_text(BASE)
        .replace("2020-07-11T06:59:59Z", "2020-07-17T23:59:00Z")
        .replace(
            "    access: [email]\n", "    access: [email]\n    people: {exclude_groups: [sales]}\n"
        )
    )
    path = tmp_path / "v2.yaml"
    path.write_text(text)
    applied = cli(
        "policy", "apply", str(path), "--as", AUTHOR, "--at", "2020-07-03T09:00:00-07:00", "--json"
    )
    assert applied.json()["version"] == 2
    approve(cli, "2020-07-03T09:30:00-07:00")
    second = cli("policy", "preview", POLICY, "--at", "2020-07-03T10:00:00-07:00", "--json").json()
    assert second["audience"]["announce"] == []
    assert second["audience"]["update"] == ["dave@example.com"]
    assert second["audience"]["no_longer_affected"] == ["alice@example.com", "carol@example.com"]
    subjects = {(n["person"], n["subject"]) for n in second["notices"] if n["kind"] == "update"}
    assert subjects == {
        ("dave@example.com", "Updated: Mandatory removal of TikTok"),
        ("alice@example.com", "No longer affected: Mandatory removal of TikTok"),
        ("carol@example.com", "No longer affected: Mandatory removal of TikTok"),
    }
    before = set(queued(store))
    assert (
        cli("policy", "publish", POLICY, "--as", AUTHOR, "--at", "2020-07-03T10:00:00-07:00").code
        == 0
    )
    assert cli("worker", "--once", "--at", "2020-07-03T10:10:00-07:00").code == 0
    after = set(queued(store))
    assert sorted(after - before) == promised(second)
    # Version 1's reminders were cancelled by the release of version 2.
    with unit_of_work(store.engine, now=BASE, write=False) as uow:
        reasons = {
            n.cancelled_reason
            for n in uow.session.scalars(
                select(Notice).where(Notice.kind == "reminder", Notice.due_slot.startswith("v1"))
            )
        }
    assert reasons == {"superseded"}


def test_preview_changes_nothing(cli, store, tmp_path, monkeypatch):
    from tests.conftest import table_digest

    monkeypatch.setenv("APPWARDEN_MAILDIR", str(tmp_path / "mail"))
    assert cli("demo", "--base-time", "2020-07-10T09:00:00-07:00", "--draft").code == 0
    before = table_digest(store.engine)
    assert cli("policy", "preview", POLICY, "--at", "2020-07-01T09:00:00-07:00", "--json").code == 0
    assert cli("policy", "preview", POLICY, "--at", "2020-07-01T09:00:00-07:00").code == 0
    assert table_digest(store.engine) == before
