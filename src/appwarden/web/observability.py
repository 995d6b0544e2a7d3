"""Request ids, one JSON access-log line per request, and Prometheus metrics.

The access log (logger `appwarden.access`) carries: time, request_id, method, path (without the
query string: query strings may carry secrets), route, status, duration_ms and the token's name.
It never carries a header: not `Authorization`, not `Cookie`, not the token secret.

Metrics live in a per-application `CollectorRegistry` (not the process-global one), so many
applications can coexist in one process (tests):

    appwarden_request_seconds{route,method,status}   histogram
    appwarden_decisions_total{decision}              counter: decisions answered over the API
    appwarden_ingest_reports_total{result}           counter: applied, stale, quarantined
    appwarden_outbox_depth{kind}                     gauge, counted at scrape time (notice, webhook)
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appwarden.notifications.models import Notice, OutboxEvent
from appwarden.vocabulary import NoticeStatus
from appwarden.web.auth import TOKEN_KEY, route_path
from appwarden.web.errors import send_problem

access_log = logging.getLogger("appwarden.access")
log = logging.getLogger("appwarden.web")

REQUEST_ID_HEADER: Final = "x-request-id"
REQUEST_ID_KEY: Final = "appwarden.request_id"
_SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_WAITING: Final = (NoticeStatus.PENDING, NoticeStatus.SENDING)


class OutboxDepth(Collector):
    """Notices and webhooks waiting to go out, counted when Prometheus scrapes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Describing without values keeps registration from touching the database.
        yield GaugeMetricFamily(
            "appwarden_outbox_depth", "Outbox rows waiting to be delivered", labels=["kind"]
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "appwarden_outbox_depth", "Outbox rows waiting to be delivered", labels=["kind"]
        )
        try:
            with self.engine.connect().execution_options(appwarden_write=False) as connection:
                notices = connection.execute(
                    select(func.count()).select_from(Notice).where(Notice.status.in_(_WAITING))
                ).scalar_one()
                webhooks = connection.execute(
                    select(func.count())
                    .select_from(OutboxEvent)
                    .where(OutboxEvent.status.in_(_WAITING))
                ).scalar_one()
        except SQLAlchemyError:
            log.warning("outbox depth not available: the store did not answer")
            return
        family.add_metric(["notice"], notices)
        family.add_metric(["webhook"], webhooks)
        yield family


class Metrics:
    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_seconds = Histogram(
            "appwarden_request_seconds",
            "HTTP request latency by route template, method and status",
            ["route", "method", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.decisions = Counter(
            "appwarden_decisions",
            "Decisions answered over the API, by outcome",
            ["decision"],
            registry=self.registry,
        )
        self.ingest_reports = Counter(
            "appwarden_ingest_reports",
            "Inventory reports received over HTTP, by result",
            ["result"],
            registry=self.registry,
        )
        self.registry.register(OutboxDepth(engine))


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = bytes(value).decode("latin-1")
            if _SANE_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


class Observability:
    """Outermost middleware: request id in and out, access log, latency, and a bare 500 problem
    for anything unhandled (logged with its traceback under the request id)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        scope[REQUEST_ID_KEY] = request_id
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = int(message["status"])
                headers = [
                    (k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"
                ]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception(
                "unhandled error in %s %s",
                scope.get("method"),
                scope.get("path"),
                extra={"fields": {"request_id": request_id}},
            )
            if response_started:
                raise
            status = 500
            await send_problem(
                send_with_id, 500, "internal_error", "internal error", str(scope.get("path", ""))
            )
        finally:
            duration = time.perf_counter() - started
            self._record(scope, request_id, status, duration)

    def _record(self, scope: Scope, request_id: str, status: int, duration: float) -> None:
        route: Any = scope.get("route")
        template = route_path(route) if route is not None else "unmatched"
        method = str(scope.get("method", ""))
        self.metrics.request_seconds.labels(template, method, str(status)).observe(duration)
        fields = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "request_id": request_id,
            "method": method,
            "path": str(scope.get("path", "")),
            "route": template,
            "status": status,
            "duration_ms": round(duration * 1000, 3),
            "token": scope.get(TOKEN_KEY),
        }
        access_log.info("%s %s %s", method, fields["path"], status, extra={"fields": fields})


class JsonFormatter(logging.Formatter):
    """One JSON object per line. A record's `fields` (the access log) become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] | None = getattr(record, "fields", None)
        body: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if record.name == access_log.name and fields:
            body.update(fields)
        else:
            body["message"] = record.getMessage()
            if fields:
                body.update({k: v for k, v in fields.items() if k not in body})
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(body, default=str).decode()


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on stderr for appwarden's loggers and uvicorn's error log (the server's own
    access log stays off: it would print query strings)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    for name in ("appwarden", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level)
        logger.propagate = False
