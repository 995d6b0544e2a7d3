"""The application factory: `create_app(settings)`.

    app = create_app(Settings())                 # what `appwarden serve` runs (with worker=True)
    with TestClient(create_app(settings)) as c:  # tests: many apps per process, one registry each

Routes: the /v1 API (`web.api`), `/healthz` and `/readyz` (public: see `web.auth.PUBLIC_ROUTES`),
`/metrics` and `/openapi.json` (token with `read`), the gate (`web.gate`), and the push sources
under /osquery/ and /mdm/ (`web.push_api`; public too, each with its own credential). Layers,
outermost first: the gate's in-memory fast path (`web.gate.GateFastPath`), then FastAPI and
Starlette's own, request ids, access log and the bare 500 (`web.observability`), the
authorisation backstop (`web.auth`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from appwarden.clock import Clock, clock_from_spec
from appwarden.db.engine import Checkpointer, make_engine
from appwarden.db.migrate import is_current
from appwarden.settings import Settings
from appwarden.vocabulary import Permission
from appwarden.web import (
    Runtime,
    agent_api,
    api,
    attestations,
    console,
    console_fleet,
    console_operations,
    console_policies,
    gate,
    inventory_api,
    pages,
    portal,
    privacy,
    push_api,
    signin,
)
from appwarden.web import errors as web_errors
from appwarden.web.auth import AuthzBackstop, check_guarded, require, runtime_of
from appwarden.web.errors import PROBLEM_JSON, problem_response
from appwarden.web.gate import Gate, GateFastPath
from appwarden.web.live_index import LiveIndex
from appwarden.web.observability import Metrics, Observability
from appwarden.web.worker import EmbeddedWorker


def _version() -> str:
    try:
        return version("appwarden")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"


def create_app(settings: Settings, *, clock: Clock | None = None, worker: bool = False) -> FastAPI:
    """Build the application. `clock` defaults to the one `settings.clock` names (fixed and file
    clocks only in the test and demo environments); `worker` runs the embedded worker thread
    while the application is up (the SQLite default of `appwarden serve`)."""
    clock = clock or clock_from_spec(settings.clock, env=settings.env)
    engine = make_engine(settings.database_url, background_checkpoints=True)
    runtime = Runtime(settings=settings, engine=engine, clock=clock)
    checkpointer = Checkpointer(engine)
    metrics = Metrics(runtime.engine, staleness=runtime.services.staleness, clock=clock)
    embedded = EmbeddedWorker(runtime) if worker else None
    live = LiveIndex(runtime.engine, interval=settings.gate_index_seconds)
    runtime.on_decisions_written.append(live.reload_devices)
    gate_ = Gate(runtime, live, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        check_guarded(app)  # again: routes may have been added after create_app returned
        checkpointer.start()
        await run_in_threadpool(live.start)
        if embedded is not None:
            embedded.start()
        try:
            yield
        finally:
            if embedded is not None:
                await run_in_threadpool(embedded.stop)
            await run_in_threadpool(live.stop)
            await run_in_threadpool(gate_.store_path.stop)
            await run_in_threadpool(checkpointer.stop)
            if app.state.oidc is not None:
                app.state.oidc.close()
            runtime.close()

    app = _Application(
        title="appwarden",
        version=_version(),
        description="Conditional access for a banned app: inventory in, decisions out. "
        "Every route needs `Authorization: Bearer <token>` except /healthz, /readyz, the gate "
        "(the proxy's key) and the push sources under /osquery/ and /mdm/ (their own credentials).",
        openapi_url=None,  # served below, behind the `read` permission
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        # Starlette would answer `/healthz/` with a redirect to `/healthz`: a response of no
        # route that checked a permission, which the backstop blocks as a 500. A path is a route
        # or a 404 problem; clients use the documented paths.
        redirect_slashes=False,
    )
    app.state.runtime = runtime
    app.state.metrics = metrics
    app.state.worker = embedded
    app.state.live_index = live
    app.state.gate = gate_
    web_errors.install(app)
    api.install(app)
    inventory_api.install(app)
    push_api.install(app)
    agent_api.install(app)
    gate.install(app)
    pages.install(app)
    signin.install(app)
    portal.install(app)
    attestations.install(app)
    privacy.install(app)
    console.install(app, console_policies.ROUTES, console_fleet.ROUTES, console_operations.ROUTES)
    _operational_routes(app)
    app.add_middleware(AuthzBackstop)
    # added last: outermost
    app.add_middleware(Observability, metrics=metrics, networks=runtime.trusted_networks)
    app.install_fast_path(gate_, metrics)
    check_guarded(app)
    return app


#: How `appwarden serve` runs uvicorn (`uvicorn.run(app, host=…, port=…, **SERVER_OPTIONS)`).
#: The client address is the socket's peer: uvicorn's proxy-header handling is off, whatever
#: FORWARDED_ALLOW_IPS says, because the gate trusts a loopback peer
#: (APPWARDEN_GATE_TRUST_LOOPBACK) and an `X-Forwarded-For: 127.0.0.1` from anyone must not make
#: them one.
SERVER_OPTIONS: Final[Mapping[str, Any]] = {
    "proxy_headers": False,
    "forwarded_allow_ips": "",
    "log_config": None,
    "access_log": False,
}


class _Application(FastAPI):
    """FastAPI with the gate's fast path (`web.gate.GateFastPath`) in front of everything, FastAPI's
    own per-request work included: the path most requests take pays for no layer it does not use."""

    fast_path: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast_path is not None:
            await self.fast_path(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    def install_fast_path(self, gate: Gate, metrics: Metrics) -> None:
        self.fast_path = GateFastPath(super().__call__, gate, metrics)


def _operational_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["operations"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        """Always 200 while the process serves requests (on the event loop: no thread to wait
        for, so a busy thread pool cannot make a live process look dead)."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Readiness",
        responses={503: {"description": "The store is unreachable or its schema is not current"}},
    )
    def readyz(request: Request) -> Response:
        """200 when the store answers and its schema is at the current migration, else 503."""
        runtime = runtime_of(request)
        try:
            with runtime.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            current = is_current(runtime.engine)
        except SQLAlchemyError:
            return problem_response(
                503, "unavailable", "the store is not reachable", instance="/readyz"
            )
        if not current:
            return problem_response(
                503, "unavailable", "the database schema is not current", instance="/readyz"
            )
        return JSONResponse({"status": "ready"})

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        dependencies=[Depends(require(Permission.READ))],
        responses=web_errors.problem_responses(),
    )
    def metrics(request: Request) -> Response:
        registry = request.app.state.metrics.registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/openapi.json",
        include_in_schema=False,
        dependencies=[Depends(require(Permission.READ))],
    )
    def openapi(request: Request) -> JSONResponse:
        return JSONResponse(openapi_document(request.app))


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with problem responses declared only as application/problem+json."""
    schema = app.openapi()
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for response in operation.get("responses", {}).values():
                content = response.get("content", {})
                if PROBLEM_JSON in content:
                    content.pop("application/json", None)
    return schema
