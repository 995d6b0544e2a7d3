"""Policy versions on the command line: apply, four eyes bound to content, publish with an undo
window, cancel, retire; every refusal is clear and changes nothing."""

from __future__ import annotations

import pytest
from tests.conftest import table_digest

AUTHOR = "author@example.com"
APPROVER = "approver@example.com"
POLICY = """\
apiVersion: appwarden/v1
kind: AppPolicy
metadata:
  id: no-capcut
  title: Remove CapCut
spec:
  apps: [capcut]
  scope: {{platforms: [android, ios], access: [email]}}
  deadline: {deadline}
  enforcement: {{deny: [email]}}
"""
APPLY_AT = "2030-01-01T09:00:00Z"


@pytest.fixture
def admins(cli, tmp_path):
    assert cli("admin", "create", AUTHOR, "--role", "author").code == 0
    assert cli("admin", "create", APPROVER, "--role", "approver").code == 0

    def write(deadline="2030-01-20T17:00:00Z", name="policy.yaml", extra=""):
        path = tmp_path / name
        path.write_text(POLICY.format(deadline=deadline) + extra)
        return str(path)

    return write


def step(cli, *args, actor=AUTHOR, at=APPLY_AT):
    return cli(*args, "--as", actor, "--at", at, "--json")


def approved(cli, write, **kw):
    assert step(cli, "policy", "apply", write(**kw)).code == 0
    assert step(cli, "policy", "propose", "no-capcut").code == 0
    result = step(cli, "policy", "approve", "no-capcut", actor=APPROVER)
    assert result.code == 0, result.err
    assert result.json()["state"] == "approved"


def test_apply_stores_a_draft_and_identical_content_is_a_no_op(cli, admins, store):
    first = step(cli, "policy", "apply", admins())
    assert first.json() | {"content_hash": None} == {
        "policy": "no-capcut",
        "version": 1,
        "state": "draft",
        "changed": True,
        "content_hash": None,
    }
    before = table_digest(store.engine)
    again = step(cli, "policy", "apply", admins(name="reformatted.yaml", extra="# a comment\n"))
    assert again.json()["changed"] is False
    assert table_digest(store.engine) == before


def test_show_prints_the_resolved_identifier_set(cli, admins):
    step(cli, "policy", "apply", admins())
    shown = cli("policy", "show", "no-capcut", "--json").json()
    keys = {(i["namespace"], i["value"]) for i in shown["identifiers"]}
    assert ("android_package", "com.lemon.lvoverseas") in keys
    assert all(i["app"] == "capcut" for i in shown["identifiers"])


def test_the_author_cannot_approve_their_own_version(cli, admins, store):
    step(cli, "policy", "apply", admins())
    step(cli, "policy", "propose", "no-capcut")
    assert cli("admin", "create", AUTHOR, "--role", "approver").code == 0
    before = table_digest(store.engine)
    refused = step(cli, "policy", "approve", "no-capcut", actor=AUTHOR)
    assert refused.code == 5
    assert "a different person must approve it" in refused.err
    assert table_digest(store.engine) == before


def test_an_org_catalog_change_voids_the_approval(cli, admins, store, tmp_path, monkeypatch):
    approved(cli, admins)
    org = tmp_path / "org-catalog.yaml"
    org.write_text(
        "apiVersion: appwarden/v1\nkind: AppCatalog\napps:\n"
        "  - slug: capcut\n    extends: true\n"
        "    identifiers: [{namespace: android_package, value: com.lemon.lvoverseas.beta}]\n"
    )
    monkeypatch.setenv("APPWARDEN_CATALOG_FILE", str(org))
    before = table_digest(store.engine)
    refused = step(cli, "policy", "publish", "no-capcut")
    assert refused.code == 4
    assert "approvals are void" in refused.err
    assert table_digest(store.engine) == before
    shown = cli("policy", "show", "no-capcut", "--json").json()
    assert shown["content_current"] is False
    assert [a["valid"] for a in shown["approvals"]] == [False]
    # Applying again picks up the new identifiers as a fresh draft that needs new approval.
    reapplied = step(cli, "policy", "apply", admins())
    assert reapplied.json()["state"] == "draft"
    assert reapplied.json()["changed"] is True


def test_publish_schedules_release_after_the_undo_window(cli, admins):
    approved(cli, admins)
    published = step(cli, "policy", "publish", "no-capcut")
    assert published.json() == {
        "policy": "no-capcut",
        "version": 1,
        "state": "scheduled",
        "release_at": "2030-01-01T09:10:00Z",
    }
    # In effect from release_at, without any worker having run.
    assert (
        cli("policy", "list", "--at", "2030-01-01T09:09:59Z", "--json").json()[0]["in_effect"]
        is None
    )
    assert (
        cli("policy", "list", "--at", "2030-01-01T09:10:00Z", "--json").json()[0]["in_effect"] == 1
    )


def test_cancel_inside_the_undo_window_returns_to_approved(cli, admins):
    approved(cli, admins)
    step(cli, "policy", "publish", "no-capcut")
    cancelled = step(cli, "policy", "cancel", "no-capcut", at="2030-01-01T09:05:00Z")
    assert cancelled.json()["state"] == "approved"
    assert (
        cli("policy", "list", "--at", "2030-01-02T00:00:00Z", "--json").json()[0]["in_effect"]
        is None
    )


def test_cancel_after_the_undo_window_is_refused(cli, admins, store):
    approved(cli, admins)
    step(cli, "policy", "publish", "no-capcut")
    before = table_digest(store.engine)
    late = step(cli, "policy", "cancel", "no-capcut", at="2030-01-01T09:10:00Z")
    assert late.code == 4
    assert "undo window" in late.err
    assert table_digest(store.engine) == before


@pytest.mark.parametrize(
    ("deadline", "flags", "code", "message"),
    [
        ("2030-01-01T09:05:00Z", [], 2, "before the release"),
        ("2030-01-01T20:00:00Z", [], 2, "--short-notice"),
        ("2030-01-01T20:00:00Z", ["--short-notice"], 0, ""),
    ],
    ids=["deadline-before-release", "short-notice-needs-flag", "short-notice-allowed"],
)
def test_deadline_rules_at_publish(cli, admins, store, deadline, flags, code, message):
    approved(cli, admins, deadline=deadline)
    before = table_digest(store.engine)
    result = step(cli, "policy", "publish", "no-capcut", *flags)
    assert result.code == code, result.err
    assert message in result.err
    if code:
        assert table_digest(store.engine) == before


@pytest.mark.parametrize(
    ("args", "actor", "code", "message"),
    [
        (["policy", "approve", "no-capcut"], APPROVER, 4, "cannot approve a version that is draft"),
        (["policy", "publish", "no-capcut"], AUTHOR, 4, "cannot publish a version that is draft"),
        (["policy", "cancel", "no-capcut"], AUTHOR, 4, "cannot cancel a version that is draft"),
        (["policy", "retire", "no-capcut"], APPROVER, 4, "no version in effect"),
        (["policy", "propose", "no-such-policy"], AUTHOR, 3, "no policy 'no-such-policy'"),
        (["policy", "propose", "no-capcut"], "stranger@example.com", 5, "not a known admin"),
        (["policy", "propose", "no-capcut"], APPROVER, 5, "lacks the permission policies:author"),
    ],
    ids=[
        "approve-draft",
        "publish-draft",
        "cancel-draft",
        "retire-unreleased",
        "unknown-id",
        "unknown-actor",
        "wrong-role",
    ],
)
def test_illegal_actions_are_refused_and_change_nothing(
    cli, admins, store, args, actor, code, message
):
    step(cli, "policy", "apply", admins())
    before = table_digest(store.engine)
    result = step(cli, *args, actor=actor)
    assert result.code == code, result.err
    assert message in result.err
    assert table_digest(store.engine) == before


def test_editing_a_proposed_version_returns_it_to_draft(cli, admins):
    step(cli, "policy", "apply", admins())
    step(cli, "policy", "propose", "no-capcut")
    edited = step(cli, "policy", "apply", admins(deadline="2030-02-01T17:00:00Z"))
    assert edited.json()["version"] == 1
    assert edited.json()["state"] == "draft"


def test_a_new_version_supersedes_the_live_one_at_its_release(cli, admins):
    approved(cli, admins)
    step(cli, "policy", "publish", "no-capcut")
    assert cli("worker", "--once", "--at", "2030-01-01T10:00:00Z").code == 0
    assert (
        step(
            cli,
            "policy",
            "apply",
            admins(deadline="2030-02-01T17:00:00Z"),
            at="2030-01-02T09:00:00Z",
        ).json()["version"]
        == 2
    )
    step(cli, "policy", "propose", "no-capcut", at="2030-01-02T09:00:00Z")
    step(cli, "policy", "approve", "no-capcut", actor=APPROVER, at="2030-01-02T09:00:00Z")
    step(cli, "policy", "publish", "no-capcut", at="2030-01-02T09:00:00Z")
    listing = lambda at: cli("policy", "list", "--at", at, "--json").json()[0]  # noqa: E731
    assert listing("2030-01-02T09:09:00Z")["in_effect"] == 1
    assert listing("2030-01-02T09:10:00Z")["in_effect"] == 2
    assert cli("worker", "--once", "--at", "2030-01-02T09:10:00Z").code == 0
    states = {v["version"]: v["state"] for v in listing("2030-01-03T00:00:00Z")["versions"]}
    assert states == {1: "superseded", 2: "active"}
    # The past is still answerable: before v2's release, v1 was in effect.
    assert listing("2030-01-02T09:00:00Z")["in_effect"] == 1


def test_retire_ends_the_live_version(cli, admins):
    approved(cli, admins)
    step(cli, "policy", "publish", "no-capcut")
    retired = step(cli, "policy", "retire", "no-capcut", actor=APPROVER, at="2030-01-05T00:00:00Z")
    assert retired.json()["state"] == "retired"
    assert (
        cli("policy", "list", "--at", "2030-01-06T00:00:00Z", "--json").json()[0]["in_effect"]
        is None
    )
    assert (
        cli("policy", "list", "--at", "2030-01-04T00:00:00Z", "--json").json()[0]["in_effect"] == 1
    )
