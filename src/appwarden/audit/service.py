"""Recording and chaining audit entries (verify and anchor come with the announcements work)."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from appwarden.audit.models import AuditEntry
from appwarden.db.uow import UnitOfWork

GENESIS = "0" * 64
_RECORDED_KEY = "appwarden.audit_recorded"


def record(
    uow: UnitOfWork,
    *,
    action: str,
    object_type: str,
    object_id: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Write an entry in the caller's transaction; it is chained after commit."""
    uow.session.info[_RECORDED_KEY] = True
    uow.session.add(
        AuditEntry(
            at=uow.now,
            actor=uow.actor or "system",
            action=action,
            object_type=object_type,
            object_id=object_id,
            before=before,
            after=after,
        )
    )


def recorded(session: Session) -> bool:
    """Did this session `record` an entry (which then waits to be chained)?"""
    return bool(session.info.get(_RECORDED_KEY))


def entry_digest(prev_hash: str, entry: AuditEntry) -> str:
    body = orjson.dumps(
        {
            "seq": entry.seq,
            "at": entry.at.isoformat(),
            "actor": entry.actor,
            "action": entry.action,
            "object_type": entry.object_type,
            "object_id": entry.object_id,
            "before": entry.before,
            "after": entry.after,
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(prev_hash.encode() + body).hexdigest()


def chain(session: Session) -> int:
    """Assign sequence numbers and hashes to unchained entries, in insertion order."""
    head = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.seq.is_not(None))
        .order_by(AuditEntry.seq.desc())
        .limit(1)
    ).first()
    seq = head.seq if head is not None and head.seq is not None else 0
    prev = head.hash if head is not None and head.hash is not None else GENESIS
    pending = session.scalars(
        select(AuditEntry).where(AuditEntry.seq.is_(None)).order_by(AuditEntry.id)
    ).all()
    for entry in pending:
        seq += 1
        entry.seq = seq
        entry.prev_hash = prev
        entry.hash = prev = entry_digest(prev, entry)
    session.flush()
    return len(pending)
