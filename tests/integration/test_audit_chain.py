"""The audit hash chain on the command line: real commands build it, SQL tampers with it, and
`audit verify` names the sequence number of every altered, removed or reordered entry; an anchor
exported with `audit anchor` makes truncation and rewriting of the tail detectable."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from itertools import pairwise

import orjson
import pytest
from sqlalchemy import func, select, text, update

from appwarden.audit.models import AuditEntry
from appwarden.audit.service import GENESIS, chain, entry_digest, record
from appwarden.audit.verify import Anchor
from appwarden.db.uow import unit_of_work

AUTHOR = "author@example.com"
APPROVER = "approver@example.com"
AT = "2030-01-01T09:00:00Z"
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
ENTRIES = 7  # what `built` writes: apply, 2 edits, propose, approval, approve, publish


def step(cli, *args, actor=AUTHOR, at=AT):
    result = cli(*args, "--as", actor, "--at", at)
    assert result.code == 0, result.err
    return result


@pytest.fixture
def built(cli, tmp_path):
    """A chain of ENTRIES entries written by real policy commands, each chained after commit."""
    assert cli("admin", "create", AUTHOR, "--role", "author").code == 0
    assert cli("admin", "create", APPROVER, "--role", "approver").code == 0
    path = tmp_path / "policy.yaml"
    for deadline in ("2030-01-20T17:00:00Z", "2030-01-21T17:00:00Z", "2030-01-22T17:00:00Z"):
        path.write_text(POLICY.format(deadline=deadline))
        step(cli, "policy", "apply", str(path))
    step(cli, "policy", "propose", "no-capcut")
    step(cli, "policy", "approve", "no-capcut", actor=APPROVER)
    step(cli, "policy", "publish", "no-capcut")
    return tmp_path


def verify(cli, *args):
    result = cli("audit", "verify", *args, "--json")
    report = result.json()
    assert isinstance(report, dict)
    assert (result.code == 0) is report["ok"]
    return report


def problems(report):
    return [(p["seq"], p["message"]) for p in report["problems"]]


def sql(store, statement, **params):
    with store.engine.begin() as connection:
        connection.execute(text(statement) if isinstance(statement, str) else statement, params)


def swap(store, a, b):
    """Exchange two entries' sequence numbers (three steps: seq is unique at every statement)."""
    sql(store, "UPDATE audit_entry SET seq = -1 WHERE seq = :a", a=a)
    sql(store, "UPDATE audit_entry SET seq = :a WHERE seq = :b", a=a, b=b)
    sql(store, "UPDATE audit_entry SET seq = :b WHERE seq = -1", b=b)


def export_anchor(cli, directory):
    out = directory / "anchor.json"
    result = cli("audit", "anchor", "--out", str(out), "--at", "2030-01-01T10:00:00Z")
    assert result.code == 0, result.err
    return out


# ── an untouched chain ────────────────────────────────────────────────────────────────────────


def test_real_commands_build_a_chain_that_verifies(cli, built, store):
    result = cli("audit", "verify")
    assert result.code == 0, result.err
    assert len(result.err.strip().splitlines()) == 1
    assert result.err.startswith(f"ok: {ENTRIES} entries checked, head seq {ENTRIES} ")
    assert result.out == ""
    report = verify(cli)
    assert report | {"head_hash": None} == {
        "ok": True,
        "entries_checked": ENTRIES,
        "head_seq": ENTRIES,
        "head_hash": None,
        "pending": 0,
        "anchor": None,
        "problems": [],
    }
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(
                AuditEntry.seq, AuditEntry.action, AuditEntry.prev_hash, AuditEntry.hash
            ).order_by(AuditEntry.seq)
        ).all()
    assert [r.seq for r in rows] == list(range(1, ENTRIES + 1))
    assert [r.action for r in rows] == [
        "policy.apply",
        "policy.edit",
        "policy.edit",
        "policy.propose",
        "policy.approval",
        "policy.approve",
        "policy.publish",
    ]
    assert rows[0].prev_hash == GENESIS
    assert all(later.prev_hash == earlier.hash for earlier, later in pairwise(rows))
    assert report["head_hash"] == rows[-1].hash


def test_an_empty_chain_verifies_and_anchors_at_genesis(cli):
    result = cli("audit", "verify")
    assert result.code == 0, result.err
    assert "the audit chain is empty" in result.err
    anchored = cli("audit", "anchor", "--at", AT)
    assert anchored.code == 0
    assert anchored.json() == {
        "seq": 0,
        "hash": GENESIS,
        "at": None,
        "exported_at": "2030-01-01T09:00:00Z",
    }


# ── altered, removed, reordered ───────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE audit_entry SET actor = 'mallory@example.com' WHERE seq = 3",
        "UPDATE audit_entry SET action = 'policy.noop' WHERE seq = 3",
        "UPDATE audit_entry SET object_id = 'no-capcut@2' WHERE seq = 3",
        update(AuditEntry).where(AuditEntry.seq == 3).values(after={"state": "approved"}),
        update(AuditEntry).where(AuditEntry.seq == 3).values(before={"state": "draft"}),
        update(AuditEntry)
        .where(AuditEntry.seq == 3)
        .values(at=datetime(2029, 12, 31, 9, 0, tzinfo=UTC)),
    ],
    ids=["actor", "action", "object", "after", "before", "time"],
)
def test_an_altered_entry_is_reported_at_its_seq(cli, built, store, change):
    sql(store, change)
    result = cli("audit", "verify")
    assert result.code == 1
    assert "seq 3: altered: the entry does not match its hash" in result.err
    assert problems(verify(cli)) == [(3, "altered: the entry does not match its hash")]


def test_an_altered_entry_whose_hash_was_recomputed_breaks_the_next_link(cli, built, store):
    sql(store, "UPDATE audit_entry SET actor = 'mallory@example.com' WHERE seq = 3")
    with unit_of_work(store.engine, now=datetime(2030, 1, 1, tzinfo=UTC)) as uow:
        entry = uow.session.scalars(select(AuditEntry).where(AuditEntry.seq == 3)).one()
        assert entry.prev_hash is not None
        entry.hash = entry_digest(entry.prev_hash, entry)
    report = verify(cli)
    assert [seq for seq, _ in problems(report)] == [4]
    assert "does not follow seq 3" in problems(report)[0][1]


@pytest.mark.parametrize("seq", [1, 4, ENTRIES - 1])
def test_a_removed_entry_is_reported_at_its_seq(cli, built, store, seq):
    sql(store, "DELETE FROM audit_entry WHERE seq = :seq", seq=seq)
    result = cli("audit", "verify")
    assert result.code == 1
    assert f"seq {seq}: removed" in result.err
    assert problems(verify(cli)) == [
        (seq, f"removed: seq {seq} missing (the chain jumps to {seq + 1})")
    ]


def test_several_removed_entries_are_one_gap(cli, built, store):
    sql(store, "DELETE FROM audit_entry WHERE seq IN (3, 4, 5)")
    assert problems(verify(cli)) == [(3, "removed: seq 3–5 missing (the chain jumps to 6)")]


def test_a_removed_entry_whose_successors_were_renumbered_is_still_found(cli, built, store):
    sql(store, "DELETE FROM audit_entry WHERE seq = 4")
    for seq in range(5, ENTRIES + 1):
        sql(store, "UPDATE audit_entry SET seq = :new WHERE seq = :old", new=seq - 1, old=seq)
    report = verify(cli)
    assert not report["ok"]
    assert problems(report)[0][0] == 4


def test_an_entry_stripped_of_its_seq_is_not_taken_for_a_pending_one(cli, built, store):
    sql(store, "UPDATE audit_entry SET seq = NULL WHERE seq = 4")
    report = verify(cli)
    assert report["pending"] == 0
    found = problems(report)
    assert found[0] == (4, "removed: seq 4 missing (the chain jumps to 5)")
    assert found[1][0] is None
    assert "lost its sequence number" in found[1][1]


@pytest.mark.parametrize(("a", "b"), [(3, 4), (2, 5), (1, ENTRIES)])
def test_reordered_entries_are_reported_at_both_seqs(cli, built, store, a, b):
    swap(store, a, b)
    result = cli("audit", "verify")
    assert result.code == 1
    assert f"seq {a}: reordered" in result.err
    assert f"seq {b}: reordered" in result.err
    assert problems(verify(cli)) == [
        (a, f"reordered: this entry was seq {b}, now found at {a}"),
        (b, f"reordered: this entry was seq {a}, now found at {b}"),
    ]


def test_every_problem_is_printed_one_per_line(cli, built, store):
    sql(store, "UPDATE audit_entry SET actor = 'mallory@example.com' WHERE seq = 2")
    sql(store, "DELETE FROM audit_entry WHERE seq = 5")
    result = cli("audit", "verify")
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert lines[:2] == [
        "seq 2: altered: the entry does not match its hash",
        "seq 5: removed: seq 5 missing (the chain jumps to 6)",
    ]
    assert lines[2].startswith("2 problem(s):")


# ── anchors ───────────────────────────────────────────────────────────────────────────────────


def test_anchor_exports_the_head_to_a_file_atomically(cli, built, store):
    (built / "anchors").mkdir()
    out = built / "anchors" / "anchor.json"
    out.write_text("an older anchor\n")
    result = cli("audit", "anchor", "--out", str(out), "--at", "2030-01-01T10:00:00Z")
    assert result.code == 0, result.err
    assert result.out == ""
    assert f"anchored seq {ENTRIES}" in result.err
    assert os.listdir(built / "anchors") == ["anchor.json"]  # no temporary left behind
    data = orjson.loads(out.read_bytes())
    with store.engine.connect() as connection:
        head = connection.execute(select(AuditEntry).where(AuditEntry.seq == ENTRIES)).one()
    assert data == {
        "seq": ENTRIES,
        "hash": head.hash,
        "at": "2030-01-01T09:00:00Z",
        "exported_at": "2030-01-01T10:00:00Z",
    }
    assert Anchor.from_json(out.read_text()).to_dict() == data
    printed = cli("audit", "anchor", "--at", "2030-01-01T10:00:00Z")
    assert printed.json() == data
    as_json = cli("audit", "anchor", "--out", str(out), "--json", "--at", "2030-01-01T10:00:00Z")
    assert as_json.json() == data | {"file": str(out)}


def test_an_intact_chain_verifies_against_its_anchor_and_may_grow(cli, built, tmp_path):
    out = export_anchor(cli, tmp_path)
    result = cli("audit", "verify", "--anchor", str(out))
    assert result.code == 0, result.err
    assert f"anchor seq {ENTRIES} holds" in result.err
    step(cli, "policy", "cancel", "no-capcut", at="2030-01-01T09:05:00Z")
    report = verify(cli, "--anchor", str(out))
    assert report["ok"]
    assert report["head_seq"] == ENTRIES + 1
    assert report["anchor"]["seq"] == ENTRIES


@pytest.mark.parametrize(
    "truncate",
    [
        "DELETE FROM audit_entry WHERE seq >= :seq",
        # Un-chaining the tail makes it look like entries waiting for the appender.
        "UPDATE audit_entry SET seq = NULL, hash = NULL, prev_hash = NULL WHERE seq >= :seq",
    ],
    ids=["deleted", "unchained"],
)
def test_a_truncated_tail_is_detected_only_with_the_anchor(cli, built, store, tmp_path, truncate):
    out = export_anchor(cli, tmp_path)
    sql(store, truncate, seq=ENTRIES - 1)
    assert verify(cli)["ok"]  # what is left is a consistent chain
    result = cli("audit", "verify", "--anchor", str(out))
    assert result.code == 1
    assert f"seq {ENTRIES}: truncated or rewritten before the anchor" in result.err
    assert problems(verify(cli, "--anchor", str(out))) == [
        (
            ENTRIES,
            "truncated or rewritten before the anchor: the anchored entry is gone "
            f"(the chain now ends at seq {ENTRIES - 2})",
        )
    ]


def test_a_rewritten_tail_is_detected_with_the_anchor(cli, built, store, tmp_path):
    out = export_anchor(cli, tmp_path)
    sql(store, "DELETE FROM audit_entry WHERE seq = :seq", seq=ENTRIES)
    # A new write is chained in the removed entry's place: a consistent chain, another head.
    step(cli, "policy", "cancel", "no-capcut", at="2030-01-01T09:05:00Z")
    assert verify(cli)["ok"]
    report = verify(cli, "--anchor", str(out))
    assert [seq for seq, _ in problems(report)] == [ENTRIES]
    assert problems(report)[0][1].startswith("truncated or rewritten before the anchor: ")


def test_an_unreadable_or_malformed_anchor_is_refused(cli, built, tmp_path):
    missing = cli("audit", "verify", "--anchor", str(tmp_path / "nope.json"))
    assert missing.code == 2
    assert "nope.json: cannot read" in missing.err
    bad = tmp_path / "bad.json"
    bad.write_text('{"seq": 3, "hash": "abc", "exported_at": "2030-01-01T10:00:00Z"}')
    refused = cli("audit", "verify", "--anchor", str(bad))
    assert refused.code == 2
    assert "bad.json: not an audit anchor: hash: expected 64 lowercase hex digits" in refused.err


# ── entries waiting for the appender ──────────────────────────────────────────────────────────


def test_entries_waiting_to_be_chained_are_pending_not_errors(cli, built, store):
    earlier = datetime(2029, 12, 31, 12, 0, tzinfo=UTC)  # older than the newest chained entry
    with unit_of_work(store.engine, now=earlier, actor="system") as uow:
        record(uow, action="test.pending", object_type="test", object_id="1")
        record(uow, action="test.pending", object_type="test", object_id="2")
    result = cli("audit", "verify")
    assert result.code == 0, result.err
    assert "2 waiting to be chained" in result.err
    report = verify(cli)
    assert (report["ok"], report["pending"], report["head_seq"]) == (True, 2, ENTRIES)
    with unit_of_work(store.engine, now=earlier) as uow:
        assert chain(uow.session) == 2
    report = verify(cli)
    assert (report["ok"], report["pending"], report["head_seq"]) == (True, 0, ENTRIES + 2)
    with store.engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(AuditEntry)) == ENTRIES + 2


def test_the_anchor_json_round_trips():
    anchor = Anchor(
        seq=12,
        hash="ab" * 32,
        at=datetime(2030, 1, 1, 9, tzinfo=UTC),
        exported_at=datetime(2030, 1, 1, 10, tzinfo=UTC),
    )
    assert Anchor.from_json(anchor.to_json()) == anchor
    with pytest.raises(ValueError, match="missing field"):
        Anchor.from_json('{"seq": 1}')
    with pytest.raises(ValueError, match="seq 0"):
        Anchor.from_json(orjson.dumps(anchor.to_dict() | {"seq": 0}))
