"""What inventory taught us, read over HTTP: `GET /v1/devices`, `GET /v1/devices/{device}`,
`GET /v1/people/{email}` (docs/api.md). Each needs `read`; the work is in `usecases.inventory`,
which `appwarden devices` and `appwarden people` call too, so both give the same JSON."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import Depends, FastAPI, Query, Request
from pydantic import BaseModel, Field

from appwarden.errors import InvalidInput, Problem
from appwarden.usecases.inventory import (
    DeviceFilters,
    device_detail,
    device_page,
    person_detail,
)
from appwarden.usecases.paging import DEFAULT_LIMIT, MAX_LIMIT
from appwarden.vocabulary import ComplianceState, Permission, Platform
from appwarden.web.auth import Principal, require, runtime_of
from appwarden.web.errors import problem_responses

# ── response models (what OpenAPI shows; the use cases build the same keys) ──────────────────


class StateOut(BaseModel):
    policy: str
    version: int
    state: ComplianceState
    since: str | None
    due: str | None = Field(description="When a violation is (or was) enforced")
    reasons: list[str]


class DeviceSummary(BaseModel):
    id: int = Field(description="The store's id of the device (quarantine lists name it)")
    device: str | None = Field(description="The device's first identifier, namespace:value")
    device_identifiers: list[str] = Field(description="namespace:value, in join order")
    name: str | None
    platform: Platform
    form_factor: str
    ownership: str
    status: str
    person: str | None = Field(description="The owner's email")
    sources: list[str] = Field(description="Sources that reported it or named an identifier")
    last_observed_at: str | None = Field(description="The newest `observed_at` of its reports")
    states: list[StateOut] = Field(
        description="Stored in-scope states under the versions in effect (all, or `policy`'s), "
        "read at the server's now; a device out of a policy's scope has no entry for it"
    )


class DevicePageOut(BaseModel):
    devices: list[DeviceSummary]
    next_cursor: str | None = Field(
        description="Pass back as `cursor` for the next page; null on the last page"
    )


class IdentifierOut(BaseModel):
    namespace: str
    value: str
    source: str = Field(description="The source that first named it")
    first_seen_at: str
    last_seen_at: str


class OwnerOut(BaseModel):
    email: str
    display_name: str | None


class CoverageOut(BaseModel):
    namespaces: list[str] = Field(description="App identifier namespaces the report covers")
    hash: str | None = Field(
        description="SHA-256 of the covered (namespace, identifier) pairs: for a targeted check "
        "or an attestation, which identifiers it answered for"
    )


class TokenOut(BaseModel):
    id: int
    name: str | None


class ReportOut(BaseModel):
    id: int
    source: str
    evidence_kind: str
    coverage: CoverageOut
    observed_at: str
    received_at: str
    token: TokenOut | None = Field(description="The API token that wrote it; null: a CLI import")
    app_count: int
    applied: bool = Field(description="False: older than what was stored, so it changed nothing")


class DeviceDetailOut(BaseModel):
    id: int
    device: str | None
    identifiers: list[IdentifierOut]
    name: str | None
    platform: Platform
    form_factor: str
    ownership: str
    status: str
    retired_at: str | None
    mdm_source: str | None = Field(description="The MDM of record (authoritative by default)")
    first_report_at: str | None
    owner: OwnerOut | None
    resources: list[str]
    reports: list[ReportOut] = Field(description="Newest first, at most 500")
    reports_total: int
    states: list[StateOut] = Field(
        description="Under every version in effect at the server's now, evaluated as "
        "`appwarden status --device` does (not_applicable included)"
    )
    conflicts: list[dict[str, Any]] = Field(
        description="Open fact conflicts about it, as `GET /v1/conflicts` lists them"
    )


class PersonOut(BaseModel):
    email: str
    display_name: str | None
    aliases: list[str]
    accounts: list[str]
    groups: list[str]
    time_zone: str | None
    status: str
    left_at: str | None
    devices: list[DeviceSummary]


# ── routes ────────────────────────────────────────────────────────────────────────────────────

_LIST_PARAMETERS: Final = frozenset(
    {"person", "identifier", "platform", "source", "state", "policy", "limit", "cursor"}
)


def _query_where(name: str) -> str:
    return f"query:{name}"


def _only_known_parameters(request: Request) -> None:
    """A misspelt filter (`?plaform=ios`) would silently list everything; a repeated one would
    keep only its last value. Both are refused."""
    problems = [
        Problem(_query_where(name), "unknown parameter")
        for name in request.query_params
        if name not in _LIST_PARAMETERS
    ]
    problems += [
        Problem(_query_where(name), "given more than once")
        for name in sorted(_LIST_PARAMETERS)
        if len(request.query_params.getlist(name)) > 1
    ]
    if problems:
        raise InvalidInput(f"query: {len(problems)} problem(s)", problems=problems)


def list_devices(
    request: Request,
    _: Annotated[Principal, Depends(require(Permission.READ))],
    person: Annotated[str | None, Query(description="Email, alias or account name")] = None,
    identifier: Annotated[
        str | None, Query(description="namespace:value, or a bare value (every device with it)")
    ] = None,
    platform: Annotated[str | None, Query(description="A platform")] = None,
    source: Annotated[
        str | None, Query(description="Devices with a report or identifier from this source")
    ] = None,
    state: Annotated[
        str | None, Query(description="A compliance state under some version in effect")
    ] = None,
    policy: Annotated[
        str | None,
        Query(description="A policy id: with `state`, only its version; alone, its scope"),
    ] = None,
    limit: Annotated[
        int | None,
        # The range is checked by the use case, so that one answer names every bad argument.
        Query(
            description=f"1 to {MAX_LIMIT}; default {DEFAULT_LIMIT}",
            json_schema_extra={"minimum": 1, "maximum": MAX_LIMIT},
        ),
    ] = None,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
) -> dict[str, Any]:
    """Devices in a stable order, filtered (every filter given must hold), a page at a time.
    A bad filter, limit or cursor is 422 naming it (`query:NAME`)."""
    _only_known_parameters(request)
    filters = DeviceFilters(person, identifier, platform, source, state, policy)
    runtime = runtime_of(request)
    with runtime.uow(runtime.now(), write=False) as uow:
        page = device_page(uow, filters, cursor, limit, where=_query_where)
    return page.to_json()


def show_device(
    request: Request,
    device: str,
    _: Annotated[Principal, Depends(require(Permission.READ))],
) -> dict[str, Any]:
    """`device` is `namespace:value` (URL-encoded) or a bare value naming exactly one device.
    Unknown: 404; a bare value naming several devices: 422 listing them."""
    runtime = runtime_of(request)
    with runtime.uow(runtime.now(), write=False) as uow:
        return device_detail(uow, device)


def show_person(
    request: Request,
    email: str,
    _: Annotated[Principal, Depends(require(Permission.READ))],
) -> dict[str, Any]:
    """By primary email, alias or account name (exactly, case-insensitively). Unknown: 404."""
    runtime = runtime_of(request)
    with runtime.uow(runtime.now(), write=False) as uow:
        return person_detail(uow, email)


def install(app: FastAPI) -> None:
    """Add the routes to the application itself (as `api.install` does, for the guard check)."""
    app.add_api_route(
        "/v1/devices",
        list_devices,
        methods=["GET"],
        tags=["inventory"],
        summary="List devices (filtered, a page at a time)",
        response_model=DevicePageOut,
        responses=problem_responses(422, 503),
    )
    app.add_api_route(
        "/v1/devices/{device:path}",
        show_device,
        methods=["GET"],
        tags=["inventory"],
        summary="One device: identifiers, owner, reports, states, conflicts",
        response_model=DeviceDetailOut,
        responses=problem_responses(404, 422, 503),
    )
    app.add_api_route(
        "/v1/people/{email}",
        show_person,
        methods=["GET"],
        tags=["inventory"],
        summary="One person and their devices",
        response_model=PersonOut,
        responses=problem_responses(404, 503),
    )
