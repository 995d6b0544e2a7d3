"""Request ids, one JSON access-log line per request, and Prometheus metrics.

The access log (logger `appwarden.access`) carries: time, request_id, method, path (without the
query string: query strings may carry secrets; a sign-in link's token and the MDM webhook's path
secret are replaced by `[redacted]`), route, status, duration_ms, the token's name, the signed-in
person (`person:<id>`, never an address) and the client's address (`web.clients`: the socket peer,
or what a trusted proxy forwarded). It never carries a header: not `Authorization`, not `Cookie`,
not the token secret.

Metrics live in a per-application `CollectorRegistry` (not the process-global one), so many
applications can coexist in one process (tests):

    appwarden_request_seconds{route,method,status}   histogram
    appwarden_decisions_total{decision}              counter: decisions answered over the API
    appwarden_ingest_reports_total{result}           counter: applied, stale, repeated, quarantined
    appwarden_outbox_depth{kind}                     gauge, counted at scrape time (notice, webhook)
    appwarden_source_last_complete_run_timestamp_seconds{source}
                                                     gauge: when the source's last complete sync
                                                     run ended (absent: it never completed one)
    appwarden_source_devices{source}                 gauge: active devices it is MDM of record of
    appwarden_source_stale{source}                   gauge: 1 while past its staleness bound
    appwarden_breaker_open{policy}                   gauge: 1 while the breaker holds denies

The source and breaker gauges are read at scrape time with a few index lookups per source
(`usecases/health.py`), the clock's now deciding staleness.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appwarden.clock import Clock, SystemClock
from appwarden.staleness import Staleness
from appwarden.usecases import outbox
from appwarden.usecases.breakers import breakers_open
from appwarden.usecases.health import health_on
from appwarden.web.auth import PERSON_KEY, TOKEN_KEY, route_path
from appwarden.web.clients import Network, client_address
from appwarden.web.errors import send_problem
from appwarden.web.loop_metrics import LoopCounter, LoopHistogram

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
            waiting = outbox.depth(self.engine)
        except SQLAlchemyError:
            log.warning("outbox depth not available: the store did not answer")
            return
        for kind, count in waiting.items():
            family.add_metric([kind], count)
        yield family


_SOURCE_GAUGES: Final = (
    (
        "appwarden_source_last_complete_run_timestamp_seconds",
        "When the source's last complete sync run ended (Unix time)",
    ),
    ("appwarden_source_devices", "Active devices whose MDM of record the source is"),
    ("appwarden_source_stale", "1 while the source is past its staleness bound"),
)
_BREAKER_GAUGE: Final = (
    "appwarden_breaker_open",
    "1 while the policy's mass-lockout breaker holds denies",
)


class SourceHealthGauges(Collector):
    """Each source's health and each policy's breaker, read when Prometheus scrapes."""

    def __init__(self, engine: Engine, staleness: Staleness, clock: Clock) -> None:
        self.engine = engine
        self.staleness = staleness
        self.clock = clock

    def _families(self) -> tuple[list[GaugeMetricFamily], GaugeMetricFamily]:
        sources = [GaugeMetricFamily(n, h, labels=["source"]) for n, h in _SOURCE_GAUGES]
        return sources, GaugeMetricFamily(*_BREAKER_GAUGE, labels=["policy"])

    def describe(self) -> Iterator[GaugeMetricFamily]:
        sources, breaker = self._families()
        yield from (*sources, breaker)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        (completed, devices, stale), breaker = self._families()
        try:
            health = health_on(self.engine, self.staleness, self.clock.now())
            open_ = breakers_open(self.engine)
        except SQLAlchemyError:
            log.warning("source health not available: the store did not answer")
            return
        for source in health:
            if source.last_complete_at is not None:
                completed.add_metric([source.source], source.last_complete_at.timestamp())
            devices.add_metric([source.source], source.devices)
            stale.add_metric([source.source], int(source.stale))
        for policy_id, holding in sorted(open_.items()):
            breaker.add_metric([policy_id], int(holding))
        yield from (completed, devices, stale, breaker)


#: The methods a metric label may name; anything else a client sends is counted as "other" (a
#: label per made-up method would grow the registry without bound).
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in _METHODS else "other"


class Metrics:
    def __init__(
        self,
        engine: Engine,
        *,
        staleness: Staleness | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # changed on the event loop only (`web.loop_metrics`): every request passes here
        self.request_seconds = LoopHistogram(
            "appwarden_request_seconds",
            "HTTP request latency by route template, method and status",
            ["route", "method", "status"],
            buckets=_LATENCY_BUCKETS,
        )
        self.decisions = LoopCounter(
            "appwarden_decisions", "Decisions answered over the API, by outcome", ["decision"]
        )
        self.registry.register(self.request_seconds)
        self.registry.register(self.decisions)
        self.gate_would_deny = Counter(
            "appwarden_gate_would_deny",
            "Gate answers allowed in report mode that enforce mode would have denied, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.ingest_reports = Counter(
            "appwarden_ingest_reports",
            "Inventory reports received over HTTP, by result",
            ["result"],
            registry=self.registry,
        )
        self.osquery_requests = Counter(
            "appwarden_osquery_requests",
            "osquery remote API requests, by endpoint and outcome (ok, node_invalid)",
            ["endpoint", "outcome"],
            registry=self.registry,
        )
        self.osquery_status_lines = Counter(
            "appwarden_osquery_status_lines",
            "osquery status log lines received (counted, not stored)",
            registry=self.registry,
        )
        self.mdm_events = Counter(
            "appwarden_mdm_webhook_events",
            "Apple MDM webhook events, by outcome (applied, ignored)",
            ["outcome"],
            registry=self.registry,
        )
        self.registry.register(OutboxDepth(engine))
        self.registry.register(
            SourceHealthGauges(engine, staleness or Staleness(), clock or SystemClock())
        )


# New request ids: a random per-process prefix and a counter (unique, and no syscall each time);
# a forked worker draws its own prefix.
_id_prefix = os.urandom(8).hex()
_id_counter = itertools.count(1)


def _new_id_prefix() -> None:
    global _id_prefix, _id_counter
    _id_prefix, _id_counter = os.urandom(8).hex(), itertools.count(1)


os.register_at_fork(after_in_child=_new_id_prefix)


def request_id_from(offered: str | None) -> str:
    """The caller's X-Request-ID when it is sane, else a new one."""
    if offered is not None and _SANE_ID.fullmatch(offered):
        return offered
    return f"{_id_prefix}{next(_id_counter):016x}"


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            return request_id_from(bytes(value).decode("latin-1"))
    return request_id_from(None)


#: Paths that carry a secret after these prefixes (a sign-in link's token, the MDM webhook's path
#: secret): logged without it.
SECRET_PATH_PREFIXES: Final = ("/auth/link/", "/mdm/webhook/", "/mdm/commands/")


def loggable_path(path: str) -> str:
    """The path as the logs may show it: anything after a secret-carrying prefix is redacted
    (also in near misses such as a doubled slash, which match no route)."""
    for prefix in SECRET_PATH_PREFIXES:
        at = path.find(prefix)
        if at >= 0:
            return path[: at + len(prefix)] + "[redacted]"
    return path


def log_request(
    histogram: Any,
    *,
    request_id: str,
    method: str,
    path: str,
    route: str,
    status: int,
    duration: float,
    token: str | None = None,
    person: str | None = None,
    client: str | None = None,
) -> None:
    """Observe the latency on `histogram` (a labelled child) and write the access line."""
    histogram.observe(duration)
    if not access_log.isEnabledFor(logging.INFO):
        return
    fields = {
        "request_id": request_id,
        "method": method,
        "path": path,
        "route": route,
        "status": status,
        "duration_ms": round(duration * 1000, 3),
        "token": token,
        "person": person,
        "client": client,
    }
    direct = _direct_lane()
    if direct is not None:
        direct.append(_json_line(time.time_ns(), "info", access_log.name, fields))
        return
    access_log.handle(_access_record((method, path, status), fields))


class AccessLine:
    """The access line of a request whose every field but time, request id and duration is known
    beforehand (the gate's: a fixed path, no token, person or client), rendered once: `text` is
    the line `JsonFormatter` writes for it, for a few string joins instead of a dictionary and a
    JSON encoding each time."""

    _MARK: Final = "\x00mark"

    def __init__(self, method: str, path: str, route: str, status: int) -> None:
        self.args = (method, path, status)
        self.fields: dict[str, Any] = {
            "request_id": None,
            "method": method,
            "path": path,
            "route": route,
            "status": status,
            "duration_ms": None,
            "token": None,
            "person": None,
            "client": None,
        }
        marked = {**self.fields, "request_id": self._MARK, "duration_ms": self._MARK}
        quoted = orjson.dumps(self._MARK).decode()
        line = _json_line(0, "info", access_log.name, marked)
        line = line.replace(orjson.dumps(_timestamp(0)).decode(), quoted, 1)
        self._head, self._before_id, self._before_duration, self._tail = line.split(quoted)

    def text(self, created_ns: int, request_id: str, duration: float) -> str:
        # `request_id` comes from `request_id_from`: letters, digits and `._:-`, nothing a JSON
        # string must escape; a time and a float's repr need no escaping either.
        return (
            f'{self._head}"{_timestamp(created_ns)}"{self._before_id}"{request_id}"'
            f"{self._before_duration}{round(duration * 1000, 3)!r}{self._tail}"
        )


def log_access_line(histogram: Any, line: AccessLine, request_id: str, duration: float) -> None:
    """`log_request` for a request whose line is rendered beforehand (`AccessLine`)."""
    histogram.observe(duration)
    if not access_log.isEnabledFor(logging.INFO):
        return
    direct = _direct_lane()
    if direct is not None:
        direct.append(line.text(time.time_ns(), request_id, duration))
        return
    fields = {**line.fields, "request_id": request_id, "duration_ms": round(duration * 1000, 3)}
    access_log.handle(_access_record(line.args, fields))


#: The access log's handler when `configure_logging` made it and nothing was added since: its
#: lines are then written without a `LogRecord` and the logging module's dispatch (locks,
#: filters, two handler lookups), which at gate rates cost as much as a remembered answer
#: (bench/README.md, W2). The line is the same `JsonFormatter` would write.
_direct_lines: BufferedLineHandler | None = None


def _direct_lane() -> BufferedLineHandler | None:
    """`_direct_lines`, when lines may go to it directly: nothing else handles or filters them."""
    direct, handlers = _direct_lines, access_log.handlers
    if direct is not None and len(handlers) == 1 and handlers[0] is direct and _unfiltered(direct):
        return direct
    return None


def _unfiltered(handler: logging.Handler) -> bool:
    return not (access_log.filters or handler.filters or access_log.disabled)


# What every access record shares, made once: `LogRecord.__init__` looks up the caller's file,
# the thread, the process and more on every call, which at gate rates costs more than the
# answer itself. An access record is a copy of this with its time, arguments and fields; it
# is still a `LogRecord` handled by the logger's handlers and filters (pytest's caplog too).
_ACCESS_TEMPLATE: Final = vars(
    logging.LogRecord(access_log.name, logging.INFO, __file__, 0, "%s %s %s", None, None)
)


def _access_record(args: tuple[Any, ...], fields: dict[str, Any]) -> logging.LogRecord:
    record = logging.LogRecord.__new__(logging.LogRecord)
    record.__dict__.update(_ACCESS_TEMPLATE)
    now = time.time_ns()
    record.created = now / 1e9
    record.msecs = (now % 1_000_000_000) // 1_000_000
    record.relativeCreated = (
        _ACCESS_TEMPLATE["relativeCreated"] + (record.created - _ACCESS_TEMPLATE["created"]) * 1e3
    )
    record.args = args
    record.fields = fields
    return record


class Observability:
    """Outermost middleware: request id in and out, access log, latency, and a bare 500 problem
    for anything unhandled (logged with its traceback under the request id)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, networks: tuple[Network, ...] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.networks = networks  # trusted proxies (web.clients)

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
                loggable_path(str(scope.get("path", ""))),
                extra={"fields": {"request_id": request_id}},
            )
            if response_started:
                raise
            status = 500
            await send_problem(
                send_with_id,
                500,
                "internal_error",
                "internal error",
                loggable_path(str(scope.get("path", ""))),
            )
        finally:
            duration = time.perf_counter() - started
            self._record(scope, request_id, status, duration)

    def _record(self, scope: Scope, request_id: str, status: int, duration: float) -> None:
        route: Any = scope.get("route")
        template = route_path(route) if route is not None else "unmatched"
        method = str(scope.get("method", ""))
        log_request(
            self.metrics.request_seconds.labels(template, method_label(method), str(status)),
            request_id=request_id,
            method=method,
            path=loggable_path(str(scope.get("path", ""))),
            route=template,
            status=status,
            duration=duration,
            token=scope.get(TOKEN_KEY),
            person=scope.get(PERSON_KEY),
            client=client_address(scope, self.networks),
        )


class JsonFormatter(logging.Formatter):
    """One JSON object per line. A record's `fields` (the access log) become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] | None = getattr(record, "fields", None)
        body = _head(int(record.created * 1e9), record.levelname.lower(), record.name)
        if record.name == access_log.name and fields:
            body.update(fields)
        else:
            body["message"] = record.getMessage()
            if fields:
                body.update({k: v for k, v in fields.items() if k not in body})
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(body, default=str).decode()


def _head(created_ns: int, level: str, logger: str) -> dict[str, Any]:
    """What every line starts with: time, level and logger."""
    return {"time": _timestamp(created_ns), "level": level, "logger": logger}


def _json_line(created_ns: int, level: str, logger: str, fields: dict[str, Any]) -> str:
    """An access line, as `JsonFormatter` writes an access record: the head, then the fields."""
    body = _head(created_ns, level, logger)
    body.update(fields)
    return orjson.dumps(body, default=str).decode()


_last_milli: tuple[int, str] = (-1, "")  # the last millisecond formatted, and its text


def _timestamp(created_ns: int) -> str:
    """`2026-12-03T12:05:02.375Z` (UTC, milliseconds). At gate rates lines come dozens a
    millisecond: the millisecond's text is made once (read and replaced as one tuple: any
    thread may format)."""
    global _last_milli
    milli = created_ns // 1_000_000
    cached = _last_milli
    if cached[0] != milli:
        second, rest = divmod(milli, 1000)
        text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        cached = _last_milli = (milli, f"{text}.{rest:03d}Z")
    return cached[1]


class BufferedLineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes formatted lines in batches from a thread of its own: when `max_bytes` have
    gathered, every `flush_seconds`, and when logging shuts down. For the access log, which at
    gate rates would otherwise cost a write(2) per request (nginx's `access_log ... buffer=
    flush=` makes the same trade: a crash may lose the last `flush_seconds` of access lines,
    never an error line).

    The caller (the event loop, for the gate) only appends: a write to a file can block for
    tens of milliseconds while the kernel writes back, and when the event loop wrote, or waited
    for this handler's lock while the thread wrote, every request behind it waited too (W2's
    open-loop p99 went from 1 ms without the access log to 5.5 ms with it)."""

    def __init__(
        self, stream: Any = None, *, flush_seconds: float = 1.0, max_bytes: int = 64 * 1024
    ) -> None:
        super().__init__(stream)
        # A deque: any thread appends at one end while the flusher takes from the other, with
        # no lock (a lock cost the gate a microsecond an answer). The byte counts only decide
        # when to wake the flusher, so a count a racing thread loses is harmless.
        self._lines: deque[str] = deque()
        self._appended = 0  # bytes appended, ever
        self._taken = 0  # `_appended` when the flusher last took the lines
        self._max_bytes = max_bytes
        self._writing = threading.Lock()  # one batch written at a time, in order
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_every, args=(flush_seconds,), name="appwarden-log", daemon=True
        )
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.append(line)

    def append(self, line: str) -> None:
        """A formatted line (`emit`'s, or `log_request`'s direct lane)."""
        self._lines.append(line)
        self._appended += len(line) + 1
        if self._appended - self._taken >= self._max_bytes and not self._wake.is_set():
            self._wake.set()

    def flush(self) -> None:
        """Write what has gathered, in the order it came."""
        with self._writing:
            self._taken = self._appended
            lines, taken = self._lines, len(self._lines)
            text = "".join([lines.popleft() + self.terminator for _ in range(taken)])
            if text and self.stream is not None:
                self.stream.write(text)
            if self.stream is not None and hasattr(self.stream, "flush"):
                self.stream.flush()

    def _flush_every(self, seconds: float) -> None:
        while not self._stop.is_set():
            self._wake.wait(seconds)
            self._wake.clear()
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self.flush()
        super().close()


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on stderr for appwarden's loggers and uvicorn's error log (the server's own
    access log stays off: it would print query strings). The access log is written in batches
    (`BufferedLineHandler`); everything else line by line."""
    formatter = JsonFormatter()
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    for name in ("appwarden", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level)
        logger.propagate = False
    buffered = BufferedLineHandler()
    buffered.setFormatter(formatter)
    for old in access_log.handlers:
        old.close()
    access_log.handlers = [buffered]
    access_log.setLevel(level)
    access_log.propagate = False
    global _direct_lines
    _direct_lines = buffered
