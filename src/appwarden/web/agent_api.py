"""The agent's routes (docs/targeted-check.md): `/agent/enroll` and `/agent/report`, the targeted
checks under `/checks/`, and `POST /v1/agent/codes` for an admin or an MDM automation to make an
enrolment code for a managed device.

`/agent/*` and `/checks/*` take no API token: enrolment spends a one-time code, and everything
after it is signed with the agent's own key (`web.auth.PUBLIC_ROUTES` names these credentials).
They answer 404 until APPWARDEN_AGENT_SECRET is set. A refused signature, replay or time is a 403
problem that changed nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Final, TypeVar

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from appwarden.db.uow import UnitOfWork
from appwarden.errors import AppwardenError, InvalidInput, NotFound, Problem
from appwarden.sources.native import parse_document, read_native, writer_problems
from appwarden.usecases import agent
from appwarden.usecases.agent import AgentOptions, SignedRequest
from appwarden.usecases.ingest import Writer
from appwarden.vocabulary import Permission
from appwarden.web import Runtime
from appwarden.web.api import decode_json, inventory_limit, read_body
from appwarden.web.auth import Principal, require, runtime_of
from appwarden.web.errors import problem_responses

MAX_SMALL_BODY_BYTES: Final = 64 * 1024  # enrolment, manifest requests and answers
MIN_AGENT_SECRET_BYTES: Final = 32
T = TypeVar("T")


class AgentMisconfigured(AppwardenError):
    """An agent secret anyone could guess: the server refuses to start."""

    exit_code = 2


def check_agent_settings(runtime: Runtime) -> None:
    secret = runtime.settings.agent_secret
    size = len(secret.get_secret_value().encode()) if secret is not None else None
    if size is not None and size < MIN_AGENT_SECRET_BYTES:
        raise AgentMisconfigured(
            f"APPWARDEN_AGENT_SECRET is {size} bytes long; it needs at least "
            f"{MIN_AGENT_SECRET_BYTES} (e.g. `openssl rand -hex 32`), or leave it unset to turn "
            "/agent/ and /checks/ off"
        )


def _options(runtime: Runtime) -> AgentOptions:
    settings = runtime.settings
    secret = settings.agent_secret
    if secret is None:
        raise NotFound("the agent routes are off: set APPWARDEN_AGENT_SECRET")
    writer = Writer(
        fact_sources=settings.fact_sources,
        organisation_domains=frozenset(settings.organisation_domains),
    )
    return AgentOptions(
        secret=secret.get_secret_value().encode(),
        writer=writer,
        minimise_personal=settings.minimise_personal_data,
    )


def _in_transaction(runtime: Runtime, work: Callable[[UnitOfWork], T]) -> T:
    with runtime.uow(runtime.now()) as uow:
        return work(uow)


async def _signed(request: Request, limit: int) -> SignedRequest:
    body = await read_body(request, limit)
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    headers = request.headers
    return SignedRequest(
        method=request.method,
        path=path,
        body=body,
        agent_id=headers.get("x-appwarden-agent"),
        timestamp=headers.get("x-appwarden-timestamp"),
        signature=headers.get("x-appwarden-signature"),
    )


async def agent_enroll(request: Request) -> dict[str, Any]:
    """Exchange a one-time enrolment code for an agent id and its key (shown once)."""
    runtime = runtime_of(request)
    options = _options(runtime)
    body = decode_json(await read_body(request, MAX_SMALL_BODY_BYTES))
    return await run_in_threadpool(
        _in_transaction, runtime, lambda uow: agent.enroll(uow, body, options)
    )


async def agent_report(request: Request) -> dict[str, Any]:
    """A native inventory report about the agent's own device, signed with its key."""
    runtime = runtime_of(request)
    options = _options(runtime)
    limit = inventory_limit(runtime.settings)
    signed = await _signed(request, limit)
    if not signed.body.strip():
        raise InvalidInput("the request body is empty", problems=[Problem("$", "expected JSON")])
    doc = read_native(signed.body, "request body", max_bytes=limit, by_path=True)
    refused = writer_problems(doc, source=agent.AGENT_SOURCE, namespaces=None)
    if refused:
        raise InvalidInput("an agent writes as the source 'agent'", problems=refused)
    batch = parse_document(doc, strict=True, writer_source=agent.AGENT_SOURCE)

    def work(uow: UnitOfWork) -> dict[str, Any]:
        caller = agent.authenticate(uow, signed, options)
        return agent.receive_report(uow, caller, batch, options)

    return await run_in_threadpool(_in_transaction, runtime, work)


async def checks_manifest(request: Request, policy: str) -> dict[str, Any]:
    """A manifest for the policy's version in effect, MAC'd with the agent's key."""
    runtime = runtime_of(request)
    options = _options(runtime)
    signed = await _signed(request, MAX_SMALL_BODY_BYTES)

    def work(uow: UnitOfWork) -> dict[str, Any]:
        caller = agent.authenticate(uow, signed, options)
        return agent.issue_manifest(uow, caller, policy, options)

    return await run_in_threadpool(_in_transaction, runtime, work)


async def checks_answer(request: Request) -> dict[str, Any]:
    """A device's answer to a manifest, MAC'd with its key: stored as a `targeted_check` report."""
    runtime = runtime_of(request)
    options = _options(runtime)
    body = decode_json(await read_body(request, MAX_SMALL_BODY_BYTES))
    return await run_in_threadpool(
        _in_transaction, runtime, lambda uow: agent.receive_answer(uow, body, options)
    )


class CodeRequest(BaseModel):
    device: str = Field(
        description="A device reference: `namespace:value`, or an unambiguous value"
    )


def _code_for(runtime: Runtime, principal: Principal, device: str) -> dict[str, Any]:
    with runtime.uow(runtime.now(), actor=principal.actor) as uow:
        return agent.token_code(uow, device, principal.token_id)


async def post_agent_code(
    body: CodeRequest,
    request: Request,
    principal: Annotated[Principal, Depends(require(Permission.INVENTORY_WRITE))],
) -> dict[str, Any]:
    """A one-time enrolment code (15 minutes) for a managed device, to deliver through the MDM's
    managed app configuration (key `appwarden_enrolment_code`)."""
    runtime = runtime_of(request)
    return await run_in_threadpool(_code_for, runtime, principal, body.device)


_RESPONSES: Final = {
    status: response
    for status, response in problem_responses(403, 404, 413, 422, 503).items()
    if status != 401
}
_JSON_BODY: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


def install(app: FastAPI) -> None:
    """Add the agent routes to the application itself (PUBLIC_ROUTES names their credentials)."""
    check_agent_settings(app.state.runtime)
    for path, endpoint, summary in (
        ("/agent/enroll", agent_enroll, "Agent: enrol with a one-time code"),
        ("/agent/report", agent_report, "Agent: report its own device's inventory (signed)"),
        ("/checks/answer", checks_answer, "Targeted check: a device's signed answer"),
    ):
        app.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            tags=["agent"],
            summary=summary,
            responses=_RESPONSES,
            openapi_extra=_JSON_BODY,
        )
    for method in ("GET", "POST"):  # POST for clients that cannot sign a GET's empty body
        app.add_api_route(
            "/checks/manifest",
            checks_manifest,
            methods=[method],
            tags=["agent"],
            summary="Targeted check: the manifest for a policy (signed request)",
            responses=_RESPONSES,
            operation_id=f"checks_manifest_{method.lower()}",
        )
    app.add_api_route(
        "/v1/agent/codes",
        post_agent_code,
        methods=["POST"],
        tags=["agent"],
        summary="Make a one-time agent enrolment code for a device",
        responses=problem_responses(404, 422, 503),
    )
