"""What the push sources keep between requests: osquery nodes (their node keys, stored as SHA-256
only), the differential chain of each of their queries, their ad-hoc queries, and the MDM
webhook's applied events and registered commands. Flushes, never commits."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import timedelta
from typing import Any, Final

from sqlalchemy import delete, select

from appwarden.db.uow import UnitOfWork
from appwarden.devices.models import MdmCommand, MdmEvent, OsqueryChain, OsqueryNode, OsqueryQuery

NODE_KEY_BYTES: Final = 32
MAX_NODE_KEY_CHARS: Final = 200
# An ad-hoc query handed out but never answered (the host restarted mid-way) is handed out again.
RESEND_AFTER: Final = timedelta(minutes=10)
# How long an applied webhook event id is remembered (a server retrying a delivery does so within
# minutes; a week is ample) and a registered command kept (its answers arrive within days).
EVENT_MEMORY: Final = timedelta(days=7)
COMMAND_MEMORY: Final = timedelta(days=90)


def _key_hash(node_key: str) -> str:
    return hashlib.sha256(node_key.encode()).hexdigest()


# ── osquery nodes ───────────────────────────────────────────────────────────────────────────


def enroll_node(
    uow: UnitOfWork, host_uuid: str, host_identifier: str | None, platform: str | None
) -> tuple[OsqueryNode, str]:
    """The node of this host with a new node key (returned once; only its hash is stored). A
    host that enrolls again keeps its node, its chains and its queries; its old key stops
    working."""
    node_key = secrets.token_urlsafe(NODE_KEY_BYTES)
    node = uow.session.scalar(select(OsqueryNode).where(OsqueryNode.host_uuid == host_uuid))
    if node is None:
        node = OsqueryNode(host_uuid=host_uuid, enrolled_at=uow.now, last_seen_at=uow.now)
        uow.session.add(node)
    node.node_key_hash = _key_hash(node_key)
    node.host_identifier = host_identifier
    node.platform = platform
    node.enrolled_at = node.last_seen_at = uow.now
    uow.session.flush()
    return node, node_key


def node_by_key(uow: UnitOfWork, node_key: object) -> OsqueryNode | None:
    """The node a node key belongs to; None for anything else. The key is 256 random bits, so
    finding it by its hash reveals nothing a guess could use."""
    if not isinstance(node_key, str) or not 0 < len(node_key) <= MAX_NODE_KEY_CHARS:
        return None
    return uow.session.scalar(
        select(OsqueryNode).where(OsqueryNode.node_key_hash == _key_hash(node_key))
    )


def chains_of(uow: UnitOfWork, node: OsqueryNode) -> dict[str, OsqueryChain]:
    rows = uow.session.scalars(select(OsqueryChain).where(OsqueryChain.node_id == node.id))
    return {row.query_name: row for row in rows}


def save_chain(
    uow: UnitOfWork,
    node: OsqueryNode,
    stored: dict[str, OsqueryChain],
    name: str,
    values: dict[str, Any],
) -> None:
    """Write one chain's state (`values`: the OsqueryChain columns but the key)."""
    row = stored.get(name)
    if row is None:
        row = stored[name] = OsqueryChain(node_id=node.id, query_name=name)
        uow.session.add(row)
    for column, value in values.items():
        setattr(row, column, value)
    row.updated_at = uow.now


def queue_queries(uow: UnitOfWork, node: OsqueryNode, queries: Iterable[tuple[str, str]]) -> None:
    """Queue ad-hoc queries for a node; one already known by name is asked again."""
    known = {
        q.name: q
        for q in uow.session.scalars(select(OsqueryQuery).where(OsqueryQuery.node_id == node.id))
    }
    for name, sql in queries:
        query = known.get(name)
        if query is None:
            query = OsqueryQuery(node_id=node.id, name=name)
            uow.session.add(query)
        query.sql, query.created_at = sql, uow.now
        query.sent_at = query.answered_at = query.status = None
    uow.session.flush()


def hand_out_queries(uow: UnitOfWork, node: OsqueryNode) -> dict[str, str]:
    """The node's unanswered queries not handed out within RESEND_AFTER, marked as handed out."""
    pending = uow.session.scalars(
        select(OsqueryQuery)
        .where(OsqueryQuery.node_id == node.id, OsqueryQuery.answered_at.is_(None))
        .order_by(OsqueryQuery.id)
    )
    out: dict[str, str] = {}
    for query in pending:
        if query.sent_at is None or query.sent_at <= uow.now - RESEND_AFTER:
            query.sent_at = uow.now
            out[query.name] = query.sql
    return out


def outstanding_queries(uow: UnitOfWork, node: OsqueryNode) -> dict[str, OsqueryQuery]:
    """The node's queries handed out and not yet answered, by name."""
    rows = uow.session.scalars(
        select(OsqueryQuery).where(
            OsqueryQuery.node_id == node.id,
            OsqueryQuery.sent_at.is_not(None),
            OsqueryQuery.answered_at.is_(None),
        )
    )
    return {row.name: row for row in rows}


# ── the MDM webhook ─────────────────────────────────────────────────────────────────────────


def first_delivery(uow: UnitOfWork, event_key: str) -> bool:
    """Record an event as applied; False when it already was (a repeated delivery: nothing is
    written). Events older than EVENT_MEMORY are forgotten on the way."""
    if uow.session.get(MdmEvent, event_key) is not None:
        return False
    uow.session.execute(delete(MdmEvent).where(MdmEvent.received_at < uow.now - EVENT_MEMORY))
    uow.session.add(MdmEvent(event_key=event_key, received_at=uow.now))
    uow.session.flush()
    return True


def register_command(
    uow: UnitOfWork,
    command_uuid: str,
    request_type: str | None,
    identifiers: list[str],
    managed_only: bool,
) -> None:
    uow.session.execute(delete(MdmCommand).where(MdmCommand.received_at < uow.now - COMMAND_MEMORY))
    command = uow.session.get(MdmCommand, command_uuid)
    if command is None:
        command = MdmCommand(command_uuid=command_uuid)
        uow.session.add(command)
    command.request_type, command.identifiers = request_type, identifiers
    command.managed_only, command.received_at = managed_only, uow.now
    uow.session.flush()


def command_by_uuid(uow: UnitOfWork, command_uuid: str | None) -> MdmCommand | None:
    if not command_uuid:
        return None
    return uow.session.get(MdmCommand, command_uuid)
