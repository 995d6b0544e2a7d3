"""Checking the audit hash chain, and anchors that make truncation detectable.

`check(rows)` is pure: it takes the entries (chained and waiting) and says what is wrong with the
chain. `verify(session)` reads the table and calls it; `anchor(session)` reads the head.

The chain (see `audit.service`): entries are numbered 1, 2, 3, … by the appender and
`hash = sha256(prev_hash + canonical JSON of the entry, seq included)`, with `prev_hash` the hash
of the entry before it (`GENESIS` for the first). So

- an **altered** entry no longer matches its own hash;
- a **removed** entry leaves a gap in `seq`, or — if the rest was renumbered or rehashed — a
  `prev_hash` that is no entry's hash;
- a **reordered** entry (its `seq` swapped with another's) no longer matches its own hash with
  its new `seq`, but does with the position its `prev_hash` links it to;
- removing the newest entries (or rewriting the whole chain) leaves a chain that is consistent in
  itself: only an **anchor** (the head's `seq` and `hash`, exported earlier to somewhere the
  database cannot reach) shows it.

Entries without `seq` and `hash` are waiting for the appender: they are counted, never errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from appwarden.audit.models import AuditEntry
from appwarden.audit.service import GENESIS, entry_digest
from appwarden.timeutil import iso, parse_instant

_HASH = re.compile(r"^[0-9a-f]{64}$")


class Problem(NamedTuple):
    """One thing wrong with the chain, at the sequence number where it shows (None: the entry
    has no sequence number left to name it by)."""

    seq: int | None
    message: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.message}" if self.seq is not None else self.message


@dataclass(frozen=True)
class Anchor:
    """The head of the chain at a moment: keep it where the database cannot reach.

    `at` is the time of the head entry (None for an empty chain); `exported_at` when the anchor
    was taken.
    """

    seq: int
    hash: str
    at: datetime | None
    exported_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "hash": self.hash,
            "at": iso(self.at),
            "exported_at": iso(self.exported_at),
        }

    def to_json(self) -> str:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Anchor:
        """Parse an anchor; any malformed field raises ValueError naming it."""
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object with seq, hash, at and exported_at")
        missing = [k for k in ("seq", "hash", "exported_at") if k not in data]
        if missing:
            raise ValueError(f"missing field(s): {', '.join(missing)}")
        seq, hash_ = data["seq"], data["hash"]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ValueError(f"seq: expected a non-negative integer, got {seq!r}")
        if not isinstance(hash_, str) or not _HASH.match(hash_):
            raise ValueError(f"hash: expected 64 lowercase hex digits, got {hash_!r}")
        if seq == 0 and hash_ != GENESIS:
            raise ValueError("seq 0 (an empty chain) must carry the genesis hash")
        return cls(
            seq=seq,
            hash=hash_,
            at=None if data.get("at") is None else _instant(data["at"], "at"),
            exported_at=_instant(data["exported_at"], "exported_at"),
        )


def _instant(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected an RFC 3339 time, got {value!r}")
    try:
        return parse_instant(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from exc


@dataclass
class VerifyReport:
    ok: bool
    entries_checked: int
    head_seq: int | None
    head_hash: str | None
    problems: list[Problem] = field(default_factory=list)
    pending: int = 0
    anchor: Anchor | None = None

    def summary(self) -> str:
        if self.head_seq is None:
            chain = "the audit chain is empty"
        else:
            chain = f"{self.entries_checked} entries checked, head seq {self.head_seq}"
            chain += f" {self.head_hash}"
        if self.anchor is not None and self.ok:
            chain += f", anchor seq {self.anchor.seq} holds"
        waiting = f"; {self.pending} waiting to be chained" if self.pending else ""
        if self.ok:
            return f"ok: {chain}{waiting}"
        return f"{len(self.problems)} problem(s): {chain}{waiting}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries_checked": self.entries_checked,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "pending": self.pending,
            "anchor": self.anchor.to_dict() if self.anchor is not None else None,
            "problems": [{"seq": p.seq, "message": p.message} for p in self.problems],
        }


def _is_pending(entry: AuditEntry) -> bool:
    return entry.seq is None and entry.hash is None and entry.prev_hash is None


def _link_depths(chained: Sequence[AuditEntry]) -> dict[int, int]:
    """Position of each entry as its `prev_hash` links say (`id(entry)` → 1-based depth), for
    the entries whose links lead back to the genesis hash."""
    by_hash = {e.hash: e for e in chained if e.hash is not None}
    depth: dict[int, int] = {}
    for start in chained:
        path: list[AuditEntry] = []
        seen: set[int] = set()
        entry: AuditEntry | None = start
        base: int | None = None
        while entry is not None and id(entry) not in seen:
            if id(entry) in depth:
                base = depth[id(entry)]
                break
            seen.add(id(entry))
            path.append(entry)
            if entry.prev_hash == GENESIS:
                base = 0
                break
            entry = by_hash.get(entry.prev_hash) if entry.prev_hash is not None else None
        if base is None:
            continue  # the links end in a hash no entry has (or loop): no position
        for offset, linked in enumerate(reversed(path), start=1):
            depth[id(linked)] = base + offset
    return depth


def _matches_at(entry: AuditEntry, seq: int) -> bool:
    """Would the entry match its hash if it still had sequence number `seq`?"""
    if entry.prev_hash is None or entry.hash is None:
        return False
    moved = AuditEntry(  # a detached copy: the row itself is never touched
        seq=seq,
        at=entry.at,
        actor=entry.actor,
        action=entry.action,
        object_type=entry.object_type,
        object_id=entry.object_id,
        before=entry.before,
        after=entry.after,
    )
    return entry_digest(entry.prev_hash, moved) == entry.hash


def check(rows: Iterable[AuditEntry], *, anchor: Anchor | None = None) -> VerifyReport:
    """Verify the chain formed by `rows` (any order; entries need not be attached to a session).

    Every problem is reported at the sequence number where it shows, in seq order (problems
    without a sequence number last).
    """
    entries = list(rows)
    chained = sorted((e for e in entries if e.seq is not None), key=lambda e: e.seq or 0)
    problems = _unchained_problems(entries) + _chain_problems(chained)
    head = chained[-1] if chained else None
    if anchor is not None:
        anchor_problem = _check_anchor(chained, anchor)
        if anchor_problem is not None:
            problems.append(anchor_problem)
    problems.sort(key=lambda p: (p.seq is None, p.seq or 0))
    return VerifyReport(
        ok=not problems,
        entries_checked=len(chained),
        head_seq=head.seq if head is not None else None,
        head_hash=head.hash if head is not None else None,
        problems=problems,
        pending=sum(1 for e in entries if _is_pending(e)),
        anchor=anchor,
    )


def _unchained_problems(entries: Iterable[AuditEntry]) -> list[Problem]:
    """Entries that lost their sequence number but keep a chain hash: unchained after the fact."""
    return [
        Problem(
            None,
            f"entry id {e.id} lost its sequence number but keeps its chain hash "
            f"{e.hash or e.prev_hash}: it was unchained after being chained",
        )
        for e in entries
        if e.seq is None and not _is_pending(e)
    ]


def _own_hash_verdicts(chained: Sequence[AuditEntry]) -> tuple[set[int], dict[int, int]]:
    """Each entry against its own hash: the ids of the intact ones, and for each moved one the
    seq it was chained with. An entry that matches its hash only at the position its links give
    it was moved there (reordered); one that matches nowhere was altered."""
    depth = _link_depths(chained)
    intact: set[int] = set()
    moved: dict[int, int] = {}  # id(entry) → the seq it was chained with
    for e in chained:
        if e.hash is None or e.prev_hash is None:
            continue
        if entry_digest(e.prev_hash, e) == e.hash:
            intact.add(id(e))
            continue
        original = depth.get(id(e))
        if original is not None and original != e.seq and _matches_at(e, original):
            moved[id(e)] = original
    return intact, moved


def _chain_problems(chained: Sequence[AuditEntry]) -> list[Problem]:
    """Walk the chained entries in seq order: numbering, each entry's hash, and each link."""
    by_hash = {e.hash: e for e in chained if e.hash is not None}
    intact, moved = _own_hash_verdicts(chained)
    problems: list[Problem] = []
    expected = 1
    prev_hash = GENESIS
    prev_seq = 0
    prev_moved = False
    for e in chained:
        seq = e.seq
        assert seq is not None
        gap = seq != expected
        problems += _numbering_problems(seq, expected)
        if e.hash is None or e.prev_hash is None:
            problems.append(Problem(seq, "has a sequence number but no hash"))
        elif id(e) in moved:
            problems.append(
                Problem(seq, f"reordered: this entry was seq {moved[id(e)]}, now found at {seq}")
            )
        elif id(e) not in intact:
            problems.append(Problem(seq, "altered: the entry does not match its hash"))
        if not gap and e.prev_hash is not None and e.prev_hash != prev_hash:
            predecessor = by_hash.get(e.prev_hash)
            explained = (  # a reorder reported at its own seq explains the broken link
                prev_moved
                or id(e) in moved
                or (predecessor is not None and id(predecessor) in moved)
            )
            if not explained:
                problems.append(_broken_link(seq, predecessor, prev_seq))
        expected = max(expected, seq + 1)
        prev_hash = e.hash or ""
        prev_seq = seq
        prev_moved = id(e) in moved
    return problems


def _numbering_problems(seq: int, expected: int) -> list[Problem]:
    """A sequence number below the next one expected, or a jump past it (removed entries)."""
    if seq < expected:  # seq 0 or negative: unique constraint rules out duplicates
        return [Problem(seq, f"invalid sequence number (expected {expected} or more)")]
    if seq != expected:
        missing = f"{expected}" if seq == expected + 1 else f"{expected}–{seq - 1}"
        return [Problem(expected, f"removed: seq {missing} missing (the chain jumps to {seq})")]
    return []


def _broken_link(seq: int, predecessor: AuditEntry | None, prev_seq: int) -> Problem:
    """An entry whose prev_hash is not the hash of the entry numbered before it."""
    if predecessor is not None:
        return Problem(
            seq, f"reordered: it follows seq {predecessor.seq} in the chain, not seq {prev_seq}"
        )
    return Problem(
        seq,
        f"does not follow seq {prev_seq}: an entry before it was removed or "
        "rewritten (its prev_hash is no entry's hash)",
    )


def _check_anchor(chained: Sequence[AuditEntry], anchor: Anchor) -> Problem | None:
    reason = "truncated or rewritten before the anchor"
    if anchor.seq == 0:
        return None  # an empty chain was anchored: anything since is an extension
    at = next((e for e in chained if e.seq == anchor.seq), None)
    if at is None:
        head = chained[-1].seq if chained else 0
        return Problem(
            anchor.seq,
            f"{reason}: the anchored entry is gone (the chain now ends at seq {head})",
        )
    if at.hash != anchor.hash:
        return Problem(
            anchor.seq,
            f"{reason}: the entry has hash {at.hash}, the anchor says {anchor.hash}",
        )
    return None


def verify(session: Session, *, anchor: Anchor | None = None) -> VerifyReport:
    """Walk the whole `audit_entry` table (read only) and check the chain."""
    rows = session.scalars(select(AuditEntry).order_by(AuditEntry.seq, AuditEntry.id)).all()
    return check(rows, anchor=anchor)


def anchor(session: Session, *, now: datetime | None = None) -> Anchor:
    """The current head of the chain (read only: the appender chains after every write).

    `now` is the export time (default: the system clock). An empty chain is anchored as seq 0
    with the genesis hash.
    """
    now = now or datetime.now(UTC)
    head = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.seq.is_not(None))
        .order_by(AuditEntry.seq.desc())
        .limit(1)
    ).first()
    if head is None or head.seq is None or head.hash is None:
        return Anchor(seq=0, hash=GENESIS, at=None, exported_at=now)
    return Anchor(seq=head.seq, hash=head.hash, at=head.at, exported_at=now)
