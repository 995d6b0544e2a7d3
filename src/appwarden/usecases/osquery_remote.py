"""osquery's TLS remote API (docs/sources/osquery.md, "Live: the remote API"): enroll, config,
logger and distributed read/write, one transaction per request.

Every request but enroll carries a node key; an unknown one is answered `{"node_invalid": true}`
(osquery enrolls again) and changes nothing. What a host sends goes through the unchanged osquery
mapping (`sources/osquery.py`) and `ingest`, as `appwarden import osquery` would read it: a
distributed write body as it is (with the node's host named first), and each logger request as the
bodies `sources/osquery_remote.py` writes from the chains it carried across requests.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from appwarden.db.uow import UnitOfWork
from appwarden.devices.models import OsqueryChain, OsqueryNode
from appwarden.devices.push import (
    chains_of,
    enroll_node,
    hand_out_queries,
    node_by_key,
    outstanding_queries,
    queue_queries,
    save_chain,
)
from appwarden.devices.schemas import InventoryBatch
from appwarden.errors import InvalidInput, Problem
from appwarden.sources.common import FieldError, Fields
from appwarden.sources.native import MAX_NAME_CHARS
from appwarden.sources.osquery import infer_table, parse_osquery
from appwarden.sources.osquery_remote import (
    HOST_TABLES,
    ChainState,
    carry_request,
    distributed_body,
    first_contact_queries,
    remote_config,
    report_bodies,
)
from appwarden.usecases.ingest import IngestResult, Writer, ingest

log = logging.getLogger("appwarden.osquery")

NODE_INVALID: Final[dict[str, Any]] = {"node_invalid": True}
ENROLL_NAMES: Final = {"system_info": "enroll.system_info", "os_version": "enroll.os_version"}


@dataclass(frozen=True, slots=True)
class IngestOptions:
    """How what a host sends is applied (the settings `ingest` takes)."""

    writer: Writer = field(default_factory=Writer)
    minimise_personal: bool = True


@dataclass
class Received:
    """What one request did: the answer for osquery, and what to count."""

    answer: dict[str, Any]
    node_invalid: bool = False
    status_lines: int = 0
    reports_applied: int = 0
    skipped: list[str] = field(default_factory=list)


def _body(body: Any, what: str) -> Fields:
    if not isinstance(body, dict):
        raise InvalidInput(
            f"{what}: expected a JSON object", problems=[Problem("$", "expected a JSON object")]
        )
    return Fields(body, what, ())


def _invalid(exc: FieldError, what: str) -> InvalidInput:
    where, _, message = exc.message.partition(": ")
    return InvalidInput(f"{what}: {exc.message}", problems=[Problem(where, message)])


def _node(uow: UnitOfWork, fields: Fields) -> OsqueryNode | None:
    node = node_by_key(uow, fields.raw("node_key"))
    if node is not None:
        node.last_seen_at = uow.now
    return node


# ── enroll and config ───────────────────────────────────────────────────────────────────────


def _required(fields: Fields, key: str) -> Fields:
    value = fields.obj(key)
    if value is None:
        raise fields.fail(key, "is required: osquery sends the host's system_info in it")
    return value


def _host_row(details: Fields, table: str) -> dict[str, str] | None:
    """A `host_details` table as a result row (string values only, as osquery logs rows)."""
    row = details.obj(table)
    if row is None:
        return None
    values = {k: v for k, v in row.data.items() if isinstance(v, str)}
    return values or None


def enroll(uow: UnitOfWork, body: Any, *, secret: str) -> Received:
    """Enroll a host: with the right enroll secret (compared in constant time), a new node key
    bound to `host_details.system_info.uuid`, the host's identity kept, and the queries of a first
    contact queued. A wrong secret stores nothing."""
    fields = _body(body, "enroll")
    given = fields.raw("enroll_secret")
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), secret.encode()):
        log.warning("osquery enroll refused: wrong enroll secret")
        return Received(NODE_INVALID, node_invalid=True)
    try:
        details = _required(fields, "host_details")
        host_uuid = _required(details, "system_info").required_text("uuid")
        identifier = fields.text("host_identifier", max_chars=MAX_NAME_CHARS)
        os_version = details.obj("os_version")
        platform = os_version.text("platform", max_chars=64) if os_version is not None else None
    except FieldError as exc:
        raise _invalid(exc, "enroll") from None
    node, node_key = enroll_node(uow, host_uuid, identifier, platform)
    stored = chains_of(uow, node)
    for table, name in ENROLL_NAMES.items():
        row = _host_row(details, table)
        if row is not None:
            save_chain(uow, node, stored, name, _state_values(_full(table, [row], uow)))
    queue_queries(uow, node, first_contact_queries(platform))
    return Received({"node_key": node_key, "node_invalid": False})


def config(uow: UnitOfWork, body: Any) -> Received:
    node = _node(uow, _body(body, "config"))
    if node is None:
        return Received(NODE_INVALID, node_invalid=True)
    return Received({**remote_config(), "node_invalid": False})


# ── chains ──────────────────────────────────────────────────────────────────────────────────


def _full(table: str, rows: list[dict[str, Any]], uow: UnitOfWork) -> ChainState:
    """A full result received now (an enrolment's host details, an ad-hoc query's answer)."""
    return ChainState.stored(
        table=table,
        snapshot=True,
        epoch=None,
        counter=None,
        run_at=uow.now,
        complete=True,
        rows=rows,
    )


def _loaded(row: OsqueryChain) -> ChainState:
    return ChainState.stored(
        table=row.table_name,
        snapshot=row.snapshot,
        epoch=row.epoch,
        counter=row.counter,
        run_at=row.run_at,
        complete=row.complete,
        rows=row.rows,
    )


def _state_values(state: ChainState) -> dict[str, Any]:
    return {
        "table_name": state.table,
        "snapshot": state.snapshot,
        "epoch": state.epoch,
        "counter": state.counter,
        "run_at": state.run_at,
        "complete": state.complete,
        "rows": list(state.rows.values()),
    }


def _apply(uow: UnitOfWork, batch: InventoryBatch, options: IngestOptions) -> IngestResult:
    return ingest(uow, batch, minimise_personal=options.minimise_personal, writer=options.writer)


def _read(body: dict[str, Any], what: str) -> InventoryBatch:
    return parse_osquery(orjson.dumps(body), what)


# ── the logger ──────────────────────────────────────────────────────────────────────────────


def receive_log(uow: UnitOfWork, body: Any, *, options: IngestOptions) -> Received:
    """A logger request. Status lines are counted, not stored. Result lines are carried into
    the node's chains (`sources/osquery_remote.py`); each app chain they touched becomes one
    report through the osquery mapping. A line that cannot be read is skipped with its location
    and breaks its chain; the request itself succeeds (osquery would otherwise send it again and
    again)."""
    fields = _body(body, "log")
    node = _node(uow, fields)
    if node is None:
        return Received(NODE_INVALID, node_invalid=True)
    data = fields.raw("data")
    if not isinstance(data, list):
        raise InvalidInput(
            "log: $.data: expected a list of log lines",
            problems=[Problem("$.data", "expected a list of log lines")],
        )
    log_type = fields.raw("log_type")
    if log_type != "result":  # osquery's own log (or a kind this version does not know): no rows
        return Received({"node_invalid": False}, status_lines=len(data) * (log_type == "status"))
    stored = chains_of(uow, node)
    states = {name: _loaded(row) for name, row in stored.items()}
    carried = carry_request(states, data, "log", node.host_uuid)
    received = Received({"node_invalid": False}, skipped=[str(p) for p in carried.problems])
    for name, state in states.items():
        if state.touched and (state.table is not None or name in stored):
            save_chain(uow, node, stored, name, _state_values(state))
    for report_body in report_bodies(states, node.host_uuid):
        result = _apply(uow, _read(report_body, "log"), options)
        received.reports_applied += result.reports_applied
        received.skipped += result.skipped
    return received


# ── distributed queries ─────────────────────────────────────────────────────────────────────


def distributed_read(uow: UnitOfWork, body: Any) -> Received:
    """The node's queued ad-hoc queries (its first contact's, until answered)."""
    node = _node(uow, _body(body, "distributed/read"))
    if node is None:
        return Received(NODE_INVALID, node_invalid=True)
    return Received({"queries": hand_out_queries(uow, node), "node_invalid": False})


def _answers(uow: UnitOfWork, node: OsqueryNode, fields: Fields) -> dict[str, Any]:
    """The answers to the queries this node was asked, each marked answered with its status;
    answers to queries it was not asked are ignored. Status 0 is a full result."""
    try:
        queries, statuses = fields.obj("queries"), fields.obj("statuses")
    except FieldError as exc:
        raise _invalid(exc, "distributed/write") from None
    if queries is None:
        raise InvalidInput(
            "distributed/write: $.queries: expected an object of query results",
            problems=[Problem("$.queries", "expected an object of query results")],
        )
    answers: dict[str, Any] = {}
    for name, query in outstanding_queries(uow, node).items():
        if name not in queries.data and (statuses is None or name not in statuses.data):
            continue  # not in this write: still outstanding
        status = statuses.raw(name) if statuses is not None else 0
        query.answered_at = uow.now
        query.status = status if isinstance(status, int) and not isinstance(status, bool) else -1
        if status in (0, "0") and name in queries.data:
            answers[name] = queries.raw(name)
    return answers


def distributed_write(uow: UnitOfWork, body: Any, *, options: IngestOptions) -> Received:
    """Answers to ad-hoc queries: read by the osquery mapping as one distributed write body of
    this node's host; answers naming who the host is are kept for the reports that follow."""
    fields = _body(body, "distributed/write")
    node = _node(uow, fields)
    if node is None:
        return Received(NODE_INVALID, node_invalid=True)
    answers = _answers(uow, node, fields)
    stored = chains_of(uow, node)
    states = {name: _loaded(row) for name, row in stored.items()}
    received = Received({"node_invalid": False})
    if not answers:
        return received
    for name, rows in answers.items():
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            continue  # the mapping locates it
        table = infer_table({column for row in rows for column in row})
        if table in HOST_TABLES:
            state = _full(table, rows, uow)
            save_chain(uow, node, stored, name, _state_values(state))
    batch = _read(distributed_body(answers, states, node.host_uuid), "distributed/write")
    result = _apply(uow, batch, options)
    received.reports_applied = result.reports_applied
    received.skipped = result.skipped
    return received
