"""The push sources' routes: osquery's TLS remote API under /osquery/ and the Apple MDM webhook
(docs/sources/osquery.md, docs/sources/apple-mdm.md). None takes an API token: each checks the
credential its sender has (`web.auth.PUBLIC_ROUTES` names it) and is off (404) until that
credential is configured. The work is in `usecases.osquery_remote` and `usecases.mdm_webhook`.

Bodies are read under a byte limit, gzip-compressed ones too (osquery's `--logger_tls_compress`)
with the limit applied to what they expand to; a body that cannot be read is a 4xx problem and
changes nothing.
"""

from __future__ import annotations

import hmac
import logging
import zlib
from collections.abc import Callable
from functools import partial
from typing import Any, Final

from fastapi import FastAPI, Request
from pydantic import SecretStr
from starlette.concurrency import run_in_threadpool

from appwarden.db.uow import UnitOfWork
from appwarden.errors import AppwardenError, InputTooLarge, InvalidInput, NotFound, Problem
from appwarden.usecases import mdm_webhook, osquery_remote
from appwarden.usecases.ingest import Writer
from appwarden.usecases.osquery_remote import IngestOptions, Received
from appwarden.web import Runtime
from appwarden.web.api import decode_json, inventory_limit, metrics_of, read_body
from appwarden.web.auth import runtime_of
from appwarden.web.errors import problem_responses

log = logging.getLogger("appwarden.web")

MAX_SMALL_BODY_BYTES: Final = 1024 * 1024  # enroll, config, distributed read, a command plist
MIN_WEBHOOK_SECRET_BYTES: Final = 32  # it travels in the URL: long enough never to be guessed
MIN_ENROLL_SECRET_BYTES: Final = 16
_GZIP_MAGIC: Final = b"\x1f\x8b"


class PushMisconfigured(AppwardenError):
    """A push source's secret anyone could guess: the server refuses to start."""

    exit_code = 2


def check_push_settings(runtime: Runtime) -> None:
    settings = runtime.settings
    for name, secret, least in (
        (
            "APPWARDEN_OSQUERY_ENROLL_SECRET",
            settings.osquery_enroll_secret,
            MIN_ENROLL_SECRET_BYTES,
        ),
        ("APPWARDEN_MDM_WEBHOOK_SECRET", settings.mdm_webhook_secret, MIN_WEBHOOK_SECRET_BYTES),
    ):
        size = len(secret.get_secret_value().encode()) if secret is not None else None
        if size is not None and size < least:
            raise PushMisconfigured(
                f"{name} is {size} bytes long; it needs at least {least} "
                "(e.g. `openssl rand -hex 32`), or leave it unset to turn the route off"
            )


# ── reading a body ──────────────────────────────────────────────────────────────────────────


def gunzip(body: bytes, limit: int) -> bytes:
    """One gzip member, refused (413) as soon as it expands past `limit`."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(
            f"the gzip body cannot be read: {exc}", problems=[Problem("$", "not valid gzip")]
        ) from None
    if len(out) > limit or decompressor.unconsumed_tail:
        message = f"the body expands to more than {limit} bytes"
        raise InputTooLarge(message, problems=[Problem("$", message)])
    if not decompressor.eof or decompressor.unused_data:
        message = "the gzip body is truncated or has data after its end"
        raise InvalidInput(message, problems=[Problem("$", message)])
    return out


async def read_push_body(request: Request, limit: int) -> bytes:
    """The request body, decompressed when it is gzip (by its Content-Encoding, or its magic
    bytes: osquery's compressed logger says so in a header some versions omit)."""
    body = await read_body(request, limit)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip"):
        message = f"Content-Encoding {encoding!r} is not accepted: send gzip or nothing"
        raise InvalidInput(message, problems=[Problem("header:content-encoding", message)])
    if encoding in ("gzip", "x-gzip") or body.startswith(_GZIP_MAGIC):
        return gunzip(body, limit)
    return body


# ── osquery ─────────────────────────────────────────────────────────────────────────────────


def _enroll_secret(runtime: Runtime) -> str:
    secret = runtime.settings.osquery_enroll_secret
    if secret is None:
        raise NotFound("the osquery remote API is off: set APPWARDEN_OSQUERY_ENROLL_SECRET")
    return secret.get_secret_value()


def _ingest_options(runtime: Runtime) -> IngestOptions:
    settings = runtime.settings
    writer = Writer(
        fact_sources=settings.fact_sources,
        organisation_domains=frozenset(settings.organisation_domains),
    )
    return IngestOptions(writer=writer, minimise_personal=settings.minimise_personal_data)


def _in_transaction(
    runtime: Runtime, work: Callable[[UnitOfWork, Any], Received], body: Any
) -> Received:
    with runtime.uow(runtime.now()) as uow:
        return work(uow, body)


async def _osquery(
    request: Request,
    endpoint: str,
    work: Callable[[UnitOfWork, Any], Received],
    limit: int = MAX_SMALL_BODY_BYTES,
) -> dict[str, Any]:
    """One osquery request: the body read, the use case run in one transaction, counted."""
    runtime = runtime_of(request)
    body = decode_json(await read_push_body(request, limit))
    received = await run_in_threadpool(_in_transaction, runtime, work, body)
    metrics = metrics_of(request)
    outcome = "node_invalid" if received.node_invalid else "ok"
    metrics.osquery_requests.labels(endpoint, outcome).inc()
    if received.status_lines:
        metrics.osquery_status_lines.inc(received.status_lines)
    for line in received.skipped:
        log.warning("osquery %s: skipped %s", endpoint, line)
    return received.answer


async def osquery_enroll(request: Request) -> dict[str, Any]:
    """Enroll with the enroll secret: `{"node_key": ...}`, or `{"node_invalid": true}`."""
    secret = _enroll_secret(runtime_of(request))
    return await _osquery(request, "enroll", partial(osquery_remote.enroll, secret=secret))


async def osquery_config(request: Request) -> dict[str, Any]:
    """The configuration for an enrolled node (its schedule, decorators and options)."""
    _enroll_secret(runtime_of(request))
    return await _osquery(request, "config", osquery_remote.config)


async def osquery_log(request: Request) -> dict[str, Any]:
    """Result and status logs (`--logger_plugin=tls`)."""
    runtime = runtime_of(request)
    _enroll_secret(runtime)
    work = partial(osquery_remote.receive_log, options=_ingest_options(runtime))
    return await _osquery(request, "log", work, inventory_limit(runtime.settings))


async def osquery_distributed_read(request: Request) -> dict[str, Any]:
    """The ad-hoc queries waiting for this node."""
    _enroll_secret(runtime_of(request))
    return await _osquery(request, "distributed_read", osquery_remote.distributed_read)


async def osquery_distributed_write(request: Request) -> dict[str, Any]:
    """Answers to ad-hoc queries."""
    runtime = runtime_of(request)
    _enroll_secret(runtime)
    work = partial(osquery_remote.distributed_write, options=_ingest_options(runtime))
    return await _osquery(request, "distributed_write", work, inventory_limit(runtime.settings))


# ── the Apple MDM webhook ───────────────────────────────────────────────────────────────────


def _check_webhook_secret(runtime: Runtime, given: str) -> None:
    """404 unless `given` is the webhook secret (compared in constant time): a wrong secret
    cannot be told from a path that does not exist."""
    secret: SecretStr | None = runtime.settings.mdm_webhook_secret
    if secret is None or not hmac.compare_digest(
        given.encode(), secret.get_secret_value().encode()
    ):
        raise NotFound("not found")


def _webhook(runtime: Runtime, envelope: Any, body: bytes) -> mdm_webhook.WebhookResult:
    options = _ingest_options(runtime)
    with runtime.uow(runtime.now()) as uow:
        return mdm_webhook.receive_event(
            uow,
            envelope,
            body,
            writer=options.writer,
            minimise_personal=options.minimise_personal,
            max_bytes=inventory_limit(runtime.settings),
        )


async def mdm_webhook_event(request: Request, secret: str) -> dict[str, Any]:
    """One webhook envelope from NanoMDM or MicroMDM (`-webhook-url`)."""
    runtime = runtime_of(request)
    _check_webhook_secret(runtime, secret)
    body = await read_push_body(request, inventory_limit(runtime.settings))
    envelope = decode_json(body)
    result = await run_in_threadpool(_webhook, runtime, envelope, body)
    metrics_of(request).mdm_events.labels("applied" if result.applied else "ignored").inc()
    return {
        "applied": result.applied,
        "reason": result.reason,
        "reports_applied": result.reports_applied,
        "decision_changes": result.decision_changes,
    }


def _command(runtime: Runtime, body: bytes) -> dict[str, Any]:
    with runtime.uow(runtime.now()) as uow:
        return mdm_webhook.receive_command(uow, body, max_bytes=MAX_SMALL_BODY_BYTES)


async def mdm_command(request: Request, secret: str) -> dict[str, Any]:
    """Register a command plist sent to the MDM server, so its answers are read as what it
    asked (`Identifiers`: a targeted check; `ManagedAppsOnly`: managed apps only)."""
    runtime = runtime_of(request)
    _check_webhook_secret(runtime, secret)
    body = await read_push_body(request, MAX_SMALL_BODY_BYTES)
    return await run_in_threadpool(_command, runtime, body)


# Their errors; never 401 or 403: these routes take no API token.
_RESPONSES: Final = {
    status: response
    for status, response in problem_responses(404, 413, 422, 503).items()
    if status not in (401, 403)
}
_JSON_BODY: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}
_PLIST_BODY: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "content": {"application/xml": {"schema": {"type": "string"}}},
    }
}


def install(app: FastAPI) -> None:
    """Add the push routes to the application itself (PUBLIC_ROUTES names their credentials)."""
    check_push_settings(app.state.runtime)
    for path, endpoint, summary in (
        ("/osquery/enroll", osquery_enroll, "osquery: enroll"),
        ("/osquery/config", osquery_config, "osquery: configuration"),
        ("/osquery/log", osquery_log, "osquery: result and status logs"),
        ("/osquery/distributed/read", osquery_distributed_read, "osquery: ad-hoc queries"),
        ("/osquery/distributed/write", osquery_distributed_write, "osquery: ad-hoc answers"),
    ):
        app.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            tags=["push sources"],
            summary=summary,
            responses=_RESPONSES,
            openapi_extra=_JSON_BODY,
        )
    app.add_api_route(
        "/mdm/webhook/{secret}",
        mdm_webhook_event,
        methods=["POST"],
        tags=["push sources"],
        summary="Apple MDM: a NanoMDM/MicroMDM webhook event",
        responses=_RESPONSES,
        openapi_extra=_JSON_BODY,
    )
    app.add_api_route(
        "/mdm/commands/{secret}",
        mdm_command,
        methods=["POST"],
        tags=["push sources"],
        summary="Apple MDM: register a command plist",
        responses=_RESPONSES,
        openapi_extra=_PLIST_BODY,
    )
