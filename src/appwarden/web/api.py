"""The JSON API under /v1/: inventory in, decisions out (docs/api.md).

Every route here is declared with `Depends(require(Permission.X))`. Bodies are read by the route
itself, after authentication and under a byte limit, so an anonymous or oversized request is
refused before anything is buffered or parsed.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Final, cast

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from appwarden.db.uow import UnitOfWork
from appwarden.devices.schemas import InventoryBatch
from appwarden.documents import strict_json
from appwarden.errors import AppwardenError, InputTooLarge, InvalidInput, PermissionDenied, Problem
from appwarden.settings import Settings
from appwarden.sources.native import (
    FieldError,
    check_resource,
    parse_document,
    read_native,
    writer_problems,
)
from appwarden.usecases.conflicts import conflict_rows
from appwarden.usecases.ingest import IngestResult, Writer, ingest, refuse_write
from appwarden.usecases.status import decision_row
from appwarden.vocabulary import Decision, Permission
from appwarden.web import Runtime
from appwarden.web.auth import Principal, require, runtime_of
from appwarden.web.errors import invalid_body, problem_dict, problem_responses, status_of
from appwarden.web.observability import Metrics

MAX_HTTP_BODY_BYTES: Final = 16 * 1024 * 1024
MAX_DECISION_BODY_BYTES: Final = 1024 * 1024
MAX_DECISION_QUERIES: Final = 1000
MAX_DEVICE_CHARS: Final = 600


def inventory_limit(settings: Settings) -> int:
    """The largest inventory body accepted: the smaller of the HTTP cap and the import limit."""
    return min(MAX_HTTP_BODY_BYTES, settings.max_import_bytes)


def metrics_of(request: Request) -> Metrics:
    return cast(Metrics, request.app.state.metrics)


def _too_large(limit: int, size: int | None) -> InputTooLarge:
    said = f"{size} bytes" if size is not None else "over the limit"
    return InputTooLarge(
        f"request body: {said}; the limit is {limit} bytes",
        problems=[Problem("$", f"the body is {said}; the limit is {limit} bytes")],
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit`: from
    Content-Length before reading, and by counting what arrives (chunked bodies have no length)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidInput("Content-Length is not a number")
        if int(declared) > limit:
            raise _too_large(limit, int(declared))
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise _too_large(limit, None)
        chunks.append(chunk)
    return b"".join(chunks)


def decode_json(body: bytes) -> Any:
    """A JSON request body, read as strictly as inventory: a repeated key is refused, not won
    by its last value (`documents.strict_json`)."""
    if not body.strip():
        raise InvalidInput("the request body is empty", problems=[Problem("$", "expected JSON")])
    try:
        return strict_json(body)
    except ValueError as exc:
        raise InvalidInput(
            f"the request body is not acceptable JSON: {exc}", problems=[Problem("$", str(exc))]
        ) from None


# ── inventory ─────────────────────────────────────────────────────────────────────────────────


class InventoryResult(BaseModel):
    people: int = Field(description="People entries applied")
    devices: int = Field(description="Devices touched")
    reports_applied: int
    reports_stale: int = Field(description="Reports older than what is stored (ignored)")
    reports_repeated: int = Field(
        description="Reports exactly as already stored (the same batch again): nothing written"
    )
    quarantined: list[str] = Field(
        description="Reports whose identifiers point at two devices: held for an admin"
    )
    decision_changes: int = Field(description="Decisions that changed, committed before replying")


_LOCATED = re.compile(r"(\$\S*): (.*)", re.DOTALL)


def _skipped_problem(text: str) -> Problem:
    match = _LOCATED.fullmatch(text)
    return Problem(match.group(1), match.group(2)) if match else Problem("", text)


def _apply_inventory(runtime: Runtime, batch: InventoryBatch, principal: Principal) -> IngestResult:
    """One unit of work at the clock's now: all or nothing, committed before the reply."""
    writer = Writer(principal.token_id, principal.source, runtime.settings.fact_sources)
    with runtime.uow(runtime.now(), actor=principal.actor) as uow:
        result = ingest(
            uow,
            batch,
            minimise_personal=runtime.settings.minimise_personal_data,
            writer=writer,
        )
        if result.skipped:
            problems = [_skipped_problem(s) for s in result.skipped]
            raise InvalidInput(
                f"inventory: {len(problems)} problem(s); nothing was applied", problems=problems
            )
    return result


_INVENTORY_BODY: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "description": "A native inventory document, format `appwarden.inventory/v1` "
        "(docs/inventory-native.md; JSON Schema: docs/native-inventory.schema.json).",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["format"],
                    "properties": {
                        "format": {"const": "appwarden.inventory/v1"},
                        "source": {"type": "string"},
                        "people": {"type": "array", "items": {"type": "object"}},
                        "devices": {"type": "array", "items": {"type": "object"}},
                    },
                }
            }
        },
    }
}


def _refuse(runtime: Runtime, principal: Principal, reason: str, problems: list[Problem]) -> None:
    """Audit the refusal in its own transaction (the write itself changes nothing), then 403."""
    with runtime.uow(runtime.now(), actor=principal.actor) as uow:
        refuse_write(uow, principal.token_id, reason, [str(p) for p in problems])
    raise PermissionDenied(reason, problems=problems)


def _bound_source(runtime: Runtime, principal: Principal) -> str:
    """The source this token writes as; a token without one (created before tokens were bound
    to a source) may not write inventory at all: it could write as any source."""
    if principal.source is not None:
        return principal.source
    reason = (
        f"the token {principal.name!r} is not bound to a source, so it may not write inventory: "
        "re-create it with `appwarden token create NAME --permission inventory:write "
        "--source SOURCE` and revoke this one"
    )
    _refuse(runtime, principal, reason, [Problem("$", reason)])
    raise AssertionError("unreachable")  # pragma: no cover - _refuse raises


async def post_inventory(
    request: Request,
    principal: Annotated[Principal, Depends(require(Permission.INVENTORY_WRITE))],
) -> InventoryResult:
    """Apply a batch of people, devices and reports. All or nothing: any invalid item rejects the
    batch with 422 naming every problem's JSON path. Each touched device is re-evaluated and its
    decisions updated in the same transaction, committed before the reply (read-your-writes)."""
    runtime = runtime_of(request)
    source = await run_in_threadpool(_bound_source, runtime, principal)
    limit = inventory_limit(runtime.settings)
    body = await read_body(request, limit)
    if not body.strip():
        raise InvalidInput("the request body is empty", problems=[Problem("$", "expected JSON")])
    doc = read_native(body, "request body", max_bytes=limit, by_path=True)
    refused = writer_problems(doc, source=source, namespaces=principal.namespaces)
    if refused:
        reason = f"the token {principal.name!r} may not write this: {len(refused)} problem(s)"
        await run_in_threadpool(_refuse, runtime, principal, reason, refused)
    batch = parse_document(doc, strict=True, writer_source=source)
    result = await run_in_threadpool(_apply_inventory, runtime, batch, principal)
    counter = metrics_of(request).ingest_reports
    counter.labels("applied").inc(result.reports_applied)
    counter.labels("stale").inc(result.reports_stale)
    counter.labels("repeated").inc(result.reports_repeated)
    counter.labels("quarantined").inc(len(result.quarantined))
    return InventoryResult(
        people=result.people,
        devices=result.devices,
        reports_applied=result.reports_applied,
        reports_stale=result.reports_stale,
        reports_repeated=result.reports_repeated,
        quarantined=result.quarantined,
        decision_changes=len(result.decision_changes),
    )


# ── decisions ─────────────────────────────────────────────────────────────────────────────────


class DecisionOut(BaseModel):
    device: str = Field(description="The device's first identifier, namespace:value")
    device_identifiers: list[str]
    person: str | None = Field(description="The owner's email")
    resource: str
    decision: Decision
    reasons: list[dict[str, Any]] = Field(
        description="One per active policy that denies this resource: policy, version, state, "
        "since, due, effect (allow or deny); a deny the mass-lockout breaker holds has effect "
        "allow, reason breaker_open and its cause (mass_deny, source_stale:<source>)"
    )
    valid_until: str | None = Field(
        description="The next instant the answer may change without new facts (cache until then)"
    )
    at: str = Field(description="The instant the decision was made for")
    remediation_url: str | None = Field(description="Where the person can fix it (when denied)")


class DecisionQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: str = Field(min_length=1, max_length=MAX_DEVICE_CHARS)
    resource: str = Field(min_length=1, max_length=64)


class DecisionBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queries: list[DecisionQuery] = Field(min_length=1, max_length=MAX_DECISION_QUERIES)


class ItemError(BaseModel):
    status: int
    title: str
    code: str
    detail: str | None


class DecisionFailed(BaseModel):
    device: str
    resource: str
    error: ItemError


class DecisionResults(BaseModel):
    results: list[DecisionOut | DecisionFailed] = Field(
        description="In the order of the queries; an item that cannot be answered (unknown or "
        "ambiguous device, bad resource name) carries `error` instead of a decision"
    )


def _resource(value: str) -> str:
    try:
        return check_resource(value)
    except FieldError as exc:
        raise InvalidInput(exc.message, problems=[Problem("path:resource", exc.message)]) from None


def _decide(
    runtime: Runtime, uow: UnitOfWork, device: str, resource: str, at: datetime
) -> dict[str, Any]:
    row = decision_row(uow, device.strip(), _resource(resource), at)
    row["remediation_url"] = (
        runtime.settings.portal_url if row["decision"] == Decision.DENY else None
    )
    return row


def _one(runtime: Runtime, device: str, resource: str) -> dict[str, Any]:
    now = runtime.now()
    with runtime.uow(now, write=False) as uow:
        return _decide(runtime, uow, device, resource, now)


def _many(runtime: Runtime, queries: list[DecisionQuery]) -> list[dict[str, Any]]:
    now = runtime.now()
    out: list[dict[str, Any]] = []
    with runtime.uow(now, write=False) as uow:
        for query in queries:
            try:
                out.append(_decide(runtime, uow, query.device, query.resource, now))
            except AppwardenError as exc:
                status, code = status_of(exc)
                problem = problem_dict(status, code, exc.message)
                error = {k: problem[k] for k in ("status", "title", "code", "detail")}
                out.append({"device": query.device, "resource": query.resource, "error": error})
    return out


def _count(request: Request, rows: list[dict[str, Any]]) -> None:
    counter = metrics_of(request).decisions.threads  # a synchronous route's thread
    for row in rows:
        if "decision" in row:
            counter.labels(str(row["decision"])).inc()


def get_decision(
    request: Request,
    device: str,
    resource: str,
    _: Annotated[Principal, Depends(require(Permission.DECISIONS_READ))],
) -> dict[str, Any]:
    """`device` is `namespace:value` or a bare value naming exactly one device (URL-encoded; it
    may contain `/`, the resource is the last path segment). Unknown device: 404; a bare value
    naming several devices: 422 listing the candidates."""
    if len(device) > MAX_DEVICE_CHARS:
        raise InvalidInput(
            "device reference too long",
            problems=[Problem("path:device", f"at most {MAX_DEVICE_CHARS} characters")],
        )
    row = _one(runtime_of(request), device, resource)
    _count(request, [row])
    return row


_DECISIONS_BODY: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["queries"],
                    "additionalProperties": False,
                    "properties": {
                        "queries": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": MAX_DECISION_QUERIES,
                            "items": {
                                "type": "object",
                                "required": ["device", "resource"],
                                "additionalProperties": False,
                                "properties": {
                                    "device": {"type": "string", "maxLength": MAX_DEVICE_CHARS},
                                    "resource": {"type": "string", "maxLength": 64},
                                },
                            },
                        }
                    },
                }
            }
        },
    }
}


async def post_decisions(
    request: Request,
    _: Annotated[Principal, Depends(require(Permission.DECISIONS_READ))],
) -> dict[str, Any]:
    """Up to 1000 queries, answered at one instant. A query that cannot be answered gets an
    `error` object; the batch itself fails only when its shape is invalid."""
    body = await read_body(request, MAX_DECISION_BODY_BYTES)
    try:
        batch = DecisionBatch.model_validate(decode_json(body))
    except ValidationError as exc:
        raise invalid_body(exc) from None
    rows = await run_in_threadpool(_many, runtime_of(request), batch.queries)
    _count(request, rows)
    return {"results": rows}


# ── conflicts ─────────────────────────────────────────────────────────────────────────────────


def _conflicts(runtime: Runtime, include_settled: bool) -> list[dict[str, Any]]:
    with runtime.uow(runtime.now(), write=False) as uow:
        return conflict_rows(uow, include_settled=include_settled)


async def get_conflicts(
    request: Request,
    _: Annotated[Principal, Depends(require(Permission.READ))],
    include_settled: bool = False,
) -> dict[str, Any]:
    """Facts a source offered that it is not authoritative for: held, changing nothing, until an
    admin settles them (`appwarden conflicts settle ID --accept|--reject`). Open ones only unless
    `include_settled=true`."""
    rows = await run_in_threadpool(_conflicts, runtime_of(request), include_settled)
    return {"conflicts": rows}


def install(app: FastAPI) -> None:
    """Add the /v1 routes to the application itself (not through an included router, so that
    `app.routes` lists each route with its dependencies for the guard check)."""
    app.add_api_route(
        "/v1/inventory",
        post_inventory,
        methods=["POST"],
        tags=["inventory"],
        summary="Report inventory (native format)",
        response_model=InventoryResult,
        responses=problem_responses(403, 413, 422, 503),
        openapi_extra=_INVENTORY_BODY,
    )
    app.add_api_route(
        "/v1/conflicts",
        get_conflicts,
        methods=["GET"],
        tags=["inventory"],
        summary="Held fact conflicts",
        responses=problem_responses(503),
    )
    app.add_api_route(
        "/v1/decisions/{device:path}/{resource}",
        get_decision,
        methods=["GET"],
        tags=["decisions"],
        summary="Decide one (device, resource)",
        response_model=DecisionOut,
        responses=problem_responses(404, 422, 503),
    )
    app.add_api_route(
        "/v1/decisions",
        post_decisions,
        methods=["POST"],
        tags=["decisions"],
        summary="Decide a batch of (device, resource) pairs",
        response_model=DecisionResults,
        responses=problem_responses(413, 422, 503),
        openapi_extra=_DECISIONS_BODY,
    )
