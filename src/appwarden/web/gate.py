"""`/gate/forward`: the forward-auth endpoint for nginx `auth_request`, Caddy `forward_auth`,
Traefik ForwardAuth and Envoy ext_authz (HTTP service), and `/gate/explain`, the body nginx
fetches for a 403.

Its credential is the proxy's, not an API token: `X-Appwarden-Proxy-Key` compared in constant
time with `APPWARDEN_GATE_PROXY_KEY` (at least 32 bytes, or the server refuses to start), or (when
`APPWARDEN_GATE_TRUST_LOOPBACK` is set) a caller whose socket peer is on the loopback interface —
`appwarden serve` never lets forwarded headers rewrite the peer. With neither configured the gate
refuses every call (fail closed). Allow = 200 (Envoy treats any other 2xx as a deny) with
`X-Appwarden-Device` and, when the asking person was identified, `X-Appwarden-Person`; deny = 403
with a problem+json body naming the policy and the portal, never another person.

Unknown callers cost a bounded amount: answers about callers the gate knows nothing about are
paced (`Pacer`: wait for a turn, 503 past ~2 s); answers that need the store run on the gate's
own few threads (`StorePath`, the same wait-then-503), never the pool that serves /v1; and what the
store said it does not know is remembered for a second (`NotFoundCache`).

Two paths give the same answer (`usecases.gate.answer` over two sources of facts):

- `GateFastPath`, a thin ASGI layer in front of the whole application (it writes the same access
  line and latency sample as `web.observability` does for every other request), answers a trusted
  request from the process's in-memory copy (`web.live_index`) on the event loop, when the copy
  is current and knows everything the answer needs. That is nearly every request: a dictionary
  lookup. A current copy holds every identifier and every person's devices, so a known person's
  unseen DeviceId is answered from it too. Otherwise (a copy that must catch up first, a name it
  does not know, a device never decided for the resource, a decision whose time has come) it
  asks `Gate.decide` on the store path: catch up, ask the copy again, then the store; with the
  store down, `on_store_failure` decides. What the copy answered is remembered by the request's
  exact bytes (`AnswerCache`) while the copy and the decisions it read stay as they were: a
  client asks the same thing again and again.
- The `/gate/...` routes answer the rest: an untrusted caller (401), and any request the fast
  path failed on (the same `Gate.decide`).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import random
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Final, NamedTuple, TypeVar

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from sqlalchemy.exc import DBAPIError
from starlette.types import ASGIApp, Receive, Scope, Send

from appwarden.access.gate import GateConfig, GateRequest, parse_gate_request
from appwarden.access.index import DecisionRef, DeviceRef, PersonRef
from appwarden.caches import remembered
from appwarden.db.uow import UnitOfWork
from appwarden.errors import AppwardenError
from appwarden.settings import Settings
from appwarden.usecases.gate import (
    EXPLANATIONS,
    BlockingDevice,
    GateAnswer,
    GatePolicy,
    IndexFacts,
    NeedStore,
    StoreFacts,
    answer,
    problem_body,
)
from appwarden.vocabulary import Decision
from appwarden.web import Runtime
from appwarden.web.errors import PROBLEM_JSON, ServiceUnavailable, Unauthenticated, problem_dict
from appwarden.web.live_index import LiveIndex
from appwarden.web.observability import (
    REQUEST_ID_HEADER,
    AccessLine,
    Metrics,
    log_access_line,
    log_request,
    method_label,
    request_id_from,
)

log = logging.getLogger("appwarden.web")
PROXY_KEY_HEADER: Final = "x-appwarden-proxy-key"
_PROXY_KEY: Final = PROXY_KEY_HEADER.encode()
METHODS: Final = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
FORWARD_PATH: Final = "/gate/forward"
EXPLAIN_PATH: Final = "/gate/explain"
#: The shortest proxy key accepted (a 256-bit secret; `openssl rand -hex 32` gives 64 bytes).
MIN_PROXY_KEY_BYTES: Final = 32
#: How long "the store does not know this DeviceId / name" is believed: the bound within which
#: another process's write must reach this one's gate (docs/gates.md).
NOT_FOUND_SECONDS: Final = 1.0
NOT_FOUND_ENTRIES: Final = 100_000
#: Decisions the store computed for devices that have none materialised (`Gate.computed`).
COMPUTED_ENTRIES: Final = 10_000
#: Answers of the in-memory copy remembered by request (`AnswerCache`): at most this many, and
#: requests of at most `ANSWER_BYTES` in all (a mail client's is 0.3-2 kB, its bearer token most).
ANSWER_ENTRIES: Final = 100_000
ANSWER_BYTES: Final = 64 * 1024 * 1024
#: A request larger than this is answered but not remembered (nginx's default header buffers
#: hold 32 kB; a mail client's request is far smaller).
ANSWER_REQUEST_BYTES: Final = 16 * 1024
#: 403 bodies remembered by what they say (a blocked phone asks again and again).
_PROBLEMS_CACHED: Final = 4096
#: How long a request that needs the store waits for a place on the gate's store path before it
#: is answered 503 (`StorePath`); below the proxies' read timeouts in docs/gates.md (5 s).
BUSY_WAIT_SECONDS: Final = 2.0
BUSY_REPORT_SECONDS: Final = 10.0
BUSY_DETAIL: Final = "the gate is busy with unknown devices; retry"
#: The reason of an answer for a DeviceId no device has, asked without credentials (paced).
UNAUTHENTICATED: Final = "unauthenticated"

T = TypeVar("T")
#: The reasons a metric label may take (a closed set, whatever callers send).
_REASONS: Final = {reason: reason for reason in EXPLANATIONS}


class GateMisconfigured(AppwardenError):
    """A gate setting that would make the gate unsafe: the server refuses to start."""

    exit_code = 2


def check_gate_settings(settings: Settings) -> None:
    """Refuse to start with a proxy key anyone could guess (an unset variable in a compose file
    gives an empty one) or a webmail rule that cannot know the person."""
    key = settings.gate_proxy_key
    if key is not None and len(key.get_secret_value().encode()) < MIN_PROXY_KEY_BYTES:
        raise GateMisconfigured(
            f"APPWARDEN_GATE_PROXY_KEY is {len(key.get_secret_value().encode())} bytes long; the "
            f"gate needs at least {MIN_PROXY_KEY_BYTES} (e.g. `openssl rand -hex 32`), or leave it "
            "unset to refuse every proxy call"
        )
    if settings.gate_webmail_rule == "person" and not settings.gate_user_header:
        raise GateMisconfigured(
            "APPWARDEN_GATE_WEBMAIL_RULE=person needs APPWARDEN_GATE_USER_HEADER: webmail's forms "
            "sign-in sends no credentials the gate can read, so the proxy must name the user"
        )


def read_headers(raw: Iterable[tuple[bytes, bytes]]) -> tuple[dict[str, str], frozenset[str]]:
    """ASGI headers as a mapping, and the names that came more than once (a mapping keeps one
    value; for credentials and the proxy's headers the gate must know there were two)."""
    headers: dict[str, str] = {}
    duplicated: set[str] | None = None
    for key, value in raw:
        name = key.decode("latin-1")
        if name in headers:
            duplicated = duplicated or set()
            duplicated.add(name)
        headers[name] = value.decode("latin-1")
    return headers, frozenset(duplicated) if duplicated else frozenset()


class NotFoundCache:
    """DeviceIds and names the store said it does not know, believed for `NOT_FOUND_SECONDS`, so a
    flood of made-up ones that repeat costs a dictionary lookup. Emptied when this process writes
    devices (a new eas_device_id must not be answered as unseen); another process's write is
    seen within the lifetime of an entry."""

    def __init__(self, seconds: float = NOT_FOUND_SECONDS, size: int = NOT_FOUND_ENTRIES) -> None:
        self.seconds = seconds
        self.size = size
        self._entries: OrderedDict[object, float] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, key: object) -> None:
        with self._lock:
            self._entries[key] = time.monotonic() + self.seconds
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def knows(self, key: object) -> bool:
        expires = self._entries.get(key)
        return expires is not None and time.monotonic() < expires

    def clear(self, _written: object = None) -> None:
        with self._lock:
            self._entries.clear()


class RememberedAnswer(NamedTuple):
    """An answer of the in-memory copy, rendered, and how long it holds. `AnswerCache` keeps
    it as a plain tuple (`Held`) of plain values, which the cycle collector stops tracking (see
    `access.index`); a named tuple's class keeps it tracked."""

    generation: int  # the copy's (`DecisionIndex.generation`) when it was read
    expires: datetime | None  # the earliest `valid_until` of the decisions it read
    decision: str
    reason: str
    device: str | None
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


Held = tuple[
    int, datetime | None, str, str, str | None, int, tuple[tuple[bytes, bytes], ...], bytes
]


class AnswerCache:
    """The in-memory copy's answers by a request's exact bytes (`fingerprint`): a mail client
    asks the same question every few seconds, and reading its credentials and walking the copy
    again gives the same answer while the copy is unchanged and no decision the answer read has
    reached its `valid_until`. An answer that read what changes by itself (the store's recent
    "not found", a decision the store computed) is not kept. Touched only on the event loop;
    the oldest entry makes way past `size` entries or `max_bytes` of requests held."""

    def __init__(
        self,
        size: int = ANSWER_ENTRIES,
        max_bytes: int = ANSWER_BYTES,
        max_request_bytes: int = ANSWER_REQUEST_BYTES,
    ) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.max_request_bytes = max_request_bytes
        self._entries: OrderedDict[tuple[object, ...], Held] = OrderedDict()
        self._bytes = 0  # `_held_bytes` of every key held

    def get(
        self, key: tuple[object, ...], generation: int, now: Callable[[], datetime]
    ) -> Held | None:
        """The answer remembered for `key` while it holds (a `RememberedAnswer`'s fields); `now`
        is asked only of an answer that has an end."""
        found = self._entries.get(key)
        if found is None:
            return None
        expires = found[1]
        if found[0] != generation or (expires is not None and now() >= expires):
            self._forget(key)
            return None
        return found

    def put(self, key: tuple[object, ...], remembered: RememberedAnswer) -> None:
        size = _held_bytes(key)
        if size > self.max_request_bytes:
            return
        if key in self._entries:
            self._forget(key)
        r = remembered
        self._entries[key] = (
            r.generation,
            r.expires,
            r.decision,
            r.reason,
            r.device,
            r.status,
            r.headers,
            r.body,
        )
        self._bytes += size
        while len(self._entries) > self.size or self._bytes > self.max_bytes:
            self._forget(next(iter(self._entries)))

    def _forget(self, key: tuple[object, ...]) -> None:
        del self._entries[key]
        self._bytes -= _held_bytes(key)

    def __len__(self) -> int:
        return len(self._entries)


def _held_bytes(key: tuple[object, ...]) -> int:
    """About what a remembered request's key holds in memory: its bytes, and an object each."""
    return sum(len(part) if isinstance(part, bytes | str) else 0 for part in key) + 64 * len(key)


class Fingerprint(NamedTuple):
    """What the fast path reads of a request before anything else."""

    key: tuple[object, ...]  # method, path, query and headers as sent (the request id left out)
    proxy_key: bytes | None  # the last X-Appwarden-Proxy-Key
    request_id: bytes | None  # the last X-Request-Id


def fingerprint(scope: Scope, echo_only: bytes | None) -> Fingerprint:
    """One pass over the request's headers. `echo_only` (the request id header) is left out
    of the key: the gate only echoes it, and proxies send a new one with every request. The key
    is the request's own bytes, names and values in order, compared whole by the dictionary that
    holds the answers: two requests share an answer only when all the gate reads is equal (no
    digest, whose collisions would have to be argued away)."""
    kept: list[object] = [
        scope["method"],
        scope.get("raw_path"),
        scope["path"],
        scope.get("query_string", b""),
    ]
    proxy_key = request_id = None
    for header in scope["headers"]:
        name = header[0]
        if name == echo_only:
            request_id = header[1]
            continue
        if name == _PROXY_KEY:
            proxy_key = header[1]
        kept += header
    return Fingerprint(tuple(kept), proxy_key, request_id)


class _RecordingStoreFacts(StoreFacts):
    """The store's facts, remembering what it does not know."""

    def __init__(self, uow: UnitOfWork, namespace: str, not_found: NotFoundCache) -> None:
        super().__init__(uow, namespace)
        self.not_found = not_found

    def people(self, name: str) -> Sequence[PersonRef]:
        found = super().people(name)
        if not found:
            self.not_found.add(name)
        return found

    def device(self, namespace: str, value: str) -> DeviceRef | None:
        found = super().device(namespace, value)
        if found is None:
            self.not_found.add((namespace, value))
        return found


class Busy(Exception):
    """The gate's store path is full: the request is answered 503 at once."""


class StorePath:
    """The gate's own threads for answers that need the store, with a bounded queue: a flood of
    unknown DeviceIds waits here (or is turned away), not in the pool that serves everything
    else.

    A request that finds the queue full waits, in arrival order, up to `BUSY_WAIT_SECONDS` for a
    place, and only then is answered 503. Waiting costs nothing but the connection it holds,
    whereas a refusal at once invites the next request at once: a flood client that asks again
    as soon as it is answered then keeps the event loop busy doing nothing but refusing it, and
    /healthz and known devices wait behind every connection it holds (each turn of the loop
    answers all of them). Refusals come about once per connection per `BUSY_WAIT_SECONDS`. Each
    wait is drawn between half and one and a half times that, so that requests which arrived
    together (a flood opening its connections) are not all refused, and all ask again, at the
    same instant."""

    def __init__(self, workers: int, wait: float = BUSY_WAIT_SECONDS) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gate-store")
        self._limit = workers * 8
        self._outstanding = 0  # touched only on the event loop: no lock needed
        self._waiting: deque[asyncio.Future[None]] = deque()
        self.wait = wait

    async def run(self, work: Callable[..., T], *args: object) -> T:
        await self._admit()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)
        finally:
            self._release()

    async def _admit(self) -> None:
        """Take a place, or wait for one to be handed over; `Busy` after `wait` seconds."""
        while self._waiting and self._waiting[0].done():  # expired waiters
            self._waiting.popleft()
        if self._outstanding < self._limit and not self._waiting:
            self._outstanding += 1
            return
        loop = asyncio.get_running_loop()
        place: asyncio.Future[None] = loop.create_future()
        self._waiting.append(place)
        expiry = loop.call_later(spread(self.wait), _expire, place)
        try:
            await place
        except BaseException:
            if place.done() and not place.cancelled() and place.exception() is None:
                self._release()  # handed a place just as the request went away: pass it on
            raise
        finally:
            expiry.cancel()

    def _release(self) -> None:
        while self._waiting:
            place = self._waiting.popleft()
            if not place.done():
                place.set_result(None)  # the place goes to the longest waiting request
                return
        self._outstanding -= 1

    def stop(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class Pacer:
    """At most `per_second` answers for callers the gate knows nothing about (a DeviceId no
    device has, without credentials; anything that needs the store): each waits for its turn
    (`asyncio.sleep`, costing the event loop nothing), and one whose turn is more than
    `BUSY_WAIT_SECONDS` away is answered 503 after that wait instead. A flood client asks again
    only when answered, so its 2,000 connections cost the loop `per_second` answers a second,
    and /healthz and known devices — never paced — find the loop free."""

    def __init__(self, per_second: float, wait: float = BUSY_WAIT_SECONDS) -> None:
        self.interval = 1.0 / per_second
        self.wait = wait
        self._next = 0.0  # the loop time of the next free turn (touched only on the loop)

    async def turn(self) -> None:
        now = asyncio.get_running_loop().time()
        slot = max(now, self._next)
        if slot - now > self.wait:
            await asyncio.sleep(spread(self.wait))
            raise Busy
        self._next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


def spread(seconds: float) -> float:
    """A wait drawn between half and one and a half times `seconds`, so that requests that came
    together are not all refused, and do not all ask again, at the same instant."""
    return seconds * (0.5 + random.random())  # noqa: S311 - spreading timers, not a secret


def _expire(place: asyncio.Future[None]) -> None:
    if not place.done():
        place.set_exception(Busy())


def is_gate_path(path: str) -> bool:
    return path in (FORWARD_PATH, EXPLAIN_PATH) or path.startswith(FORWARD_PATH + "/")


class Gate:
    """What both paths share: the proxy check, the answer, and how it is written."""

    def __init__(self, runtime: Runtime, live: LiveIndex, metrics: Metrics) -> None:
        settings = runtime.settings
        check_gate_settings(settings)
        self.runtime = runtime
        self.live = live
        self.policy = GatePolicy(
            unseen_device=settings.unseen_device,
            unseen_device_of_blocked_person=settings.unseen_device_of_blocked_person,
            unseen_device_of_unknown_person=settings.unseen_device_of_unknown_person,
            webmail_rule=settings.gate_webmail_rule,
            portal_url=settings.portal_url,
        )
        self.config = GateConfig.for_proxy(
            settings.gate_proxy,
            uri_headers=settings.gate_uri_headers,
            method_headers=settings.gate_method_headers,
            device_header=settings.gate_device_header,
            user_header=settings.gate_user_header,
        )
        key = settings.gate_proxy_key
        self._key = key.get_secret_value().encode() if key is not None else None
        self._trust_loopback = settings.gate_trust_loopback
        self._report_only = settings.gate_mode == "report"
        self._counters = {d.value: metrics.decisions.labels(d.value) for d in Decision}
        self._would_deny = metrics.gate_would_deny
        self._problems: dict[tuple[object, ...], bytes] = {}
        self.not_found = NotFoundCache()
        self._computed: dict[tuple[int, str], tuple[object, DecisionRef]] = {}
        self.store_path = StorePath(settings.gate_store_concurrency)
        self.pacer = Pacer(settings.gate_unknown_per_second)
        runtime.on_decisions_written.append(self.not_found.clear)
        # this process's own commit: on PostgreSQL its NOTIFY comes back a moment later
        runtime.on_decisions_written.append(lambda _written: self._computed.clear())

    def _render_problem(
        self,
        reason: str,
        device: str | None,
        policies: tuple[str, ...],
        blocking: tuple[tuple[str, str, str, tuple[str, ...]], ...],
    ) -> bytes:
        """The 403 body."""
        devices = tuple(BlockingDevice(*d) for d in blocking)
        denied = GateAnswer(
            Decision.DENY, reason, device=device, policies=policies, blocking=devices
        )
        return orjson.dumps(problem_body(denied, self.policy))

    def trusted(self, offered: bytes | None, client: tuple[str, int] | None) -> bool:
        """The proxy's key (`offered`: the request's X-Appwarden-Proxy-Key, its last one), or a
        loopback socket peer. `client` must be the socket's peer: the server must not rewrite it
        from X-Forwarded-For (`appwarden serve` does not)."""
        if self._key is not None and offered is not None:
            return hmac.compare_digest(offered, self._key)
        if self._trust_loopback and client is not None:
            try:
                return ipaddress.ip_address(client[0]).is_loopback
            except ValueError:
                return False
        return False

    def parse(
        self, scope: Scope, headers: Mapping[str, str], duplicated: frozenset[str]
    ) -> GateRequest:
        raw_path = scope.get("raw_path")
        return parse_gate_request(
            headers,
            raw_path.decode("latin-1") if raw_path else scope["path"],
            self.config,
            query=scope.get("query_string", b"").decode("latin-1"),
            method=scope["method"],
            duplicated=duplicated,
            lower_cased=True,
        )

    def computed(self, device_id: int, resource: str) -> DecisionRef | None:
        """An allow the store computed for a device with no materialised decision for the
        resource (say a person's laptop, never decided for email, while their new phone asks),
        believed while the copy reflects the same commit as when the store computed it: nothing
        written since, so the store would compute the same until the decision's `valid_until`.
        Without this, every unseen DeviceId of that person would take the store path."""
        entry = self._computed.get((device_id, resource))
        if entry is None or entry[0] != self.live.seen:
            return None
        return entry[1]

    def _remember_computed(self, marker: object, facts: StoreFacts) -> None:
        if marker is None:
            return
        for device_id, resource, decision in facts.computed:
            # Only allows without a deny: a new deny is judged by the breaker, whose verdict
            # may change with time alone.
            if decision.decision == Decision.ALLOW and not decision.denying:
                if len(self._computed) >= COMPUTED_ENTRIES:
                    self._computed.clear()
                self._computed[(device_id, resource)] = (marker, decision)

    def memory_facts(self, now: datetime) -> IndexFacts:
        """The in-memory copy's facts, for a caller that knows the copy to be current
        (`live.fresh`, or it has just caught up): so complete, and what it does not hold the
        store does not have either."""
        return IndexFacts(
            self.live.index,
            now,
            authoritative=False,
            complete=self.live.index.loaded,
            namespace=self.policy.device_namespace,
            not_found=self.not_found,
            computed=self.computed,
        )

    def from_memory(self, request: GateRequest, facts: IndexFacts) -> GateAnswer | None:
        """The answer from the in-memory copy; None when it cannot give it with certainty (the
        store must)."""
        try:
            return answer(facts, request, self.policy)
        except NeedStore:
            return None

    def decide(self, request: GateRequest) -> tuple[GateAnswer, str | None]:
        """Blocking (run it on `store_path`): catch up, ask the copy, then the store; with the
        store down, `on_store_failure`. Returns the answer and where it came from when that was
        not the current facts (`last_known`, `store_unavailable`)."""
        now = self.runtime.now()
        try:
            if not self.live.fresh():
                self.live.catch_up()
            marker = self.live.seen  # before the store is read: a later commit moves it
            remembered = self.from_memory(request, self.memory_facts(now))
            if remembered is not None:
                return remembered, None
            with self.runtime.uow(now, write=False) as uow:
                facts = _RecordingStoreFacts(uow, self.policy.device_namespace, self.not_found)
                found = answer(facts, request, self.policy)
            self._remember_computed(marker, facts)
            return found, None
        except (DBAPIError, ServiceUnavailable):
            mode = self.runtime.settings.on_store_failure
            log.warning("gate: the store is not reachable; answering %s", mode)
            return self._without_store(mode, request, now)

    def _without_store(
        self, mode: str, request: GateRequest, now: datetime
    ) -> tuple[GateAnswer, str | None]:
        if mode == "last_known" and self.live.index.loaded:
            facts = IndexFacts(
                self.live.index, now, authoritative=True, namespace=self.policy.device_namespace
            )
            return answer(facts, request, self.policy), "last_known"
        if request.resource is None and request.problem is None:
            return GateAnswer(Decision.ALLOW, "not_gated"), None
        decision = Decision.ALLOW if mode == "allow" else Decision.DENY
        return GateAnswer(decision, "store_unavailable"), "store_unavailable"

    def render(
        self, result: GateAnswer, source: str | None
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Status, headers and body of the answer; counts it."""
        self.count(result.decision, result.reason, result.device)
        return self.response(result, source)

    def count(self, decision: str, reason: str, device: str | None) -> None:
        """Counts an answer given. In report mode a denial is counted and logged as what
        enforcing would have done (and allowed: `response`)."""
        self._counters[decision].inc()
        if decision != Decision.ALLOW and self._report_only:
            self._would_deny.labels(_REASONS.get(reason, "other")).inc()
            log.info("gate (report mode) would deny %s: %s", device, reason)

    def response(
        self, result: GateAnswer, source: str | None
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Status, headers and body of the answer."""
        headers: list[tuple[bytes, bytes]] = []
        if result.device:
            headers.append((b"x-appwarden-device", result.device.encode()))
        if source is not None:
            headers.append((b"x-appwarden-source", source.encode()))
        if not result.allowed and self._report_only:
            headers.append((b"x-appwarden-would-deny", result.reason.encode()))
            return 200, [*headers, (b"content-length", b"0")], b""
        if result.allowed:
            if result.person:  # the asking person, never a device's owner
                headers.append((b"x-appwarden-person", result.person.encode()))
            return 200, [*headers, (b"content-length", b"0")], b""
        blocking = tuple(
            (d.platform, d.form_factor, d.hint, d.policies) for d in result.blocking
        )  # plain tuples, as `remembered` keeps
        problem = (result.reason, result.device, tuple(result.policies), blocking)
        body = remembered(self._problems, _PROBLEMS_CACHED, problem, self._render_problem, *problem)
        headers += [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        return 403, headers, body


Rendered = tuple[int, Sequence[tuple[bytes, bytes]], bytes]  # status, headers, body


class GateFastPath:
    """The outermost layer: answers a trusted gate request itself — from memory on the event loop
    when it can, else on the gate's store path — with its own access line and latency sample (the
    same ones `Observability` writes); every other request goes on, unchanged, to the application.
    A flood of unknown DeviceIds thus costs the event loop only this layer, not the application's
    whole stack. Anything unexpected here is logged and the request goes on too, so the full path
    answers it."""

    def __init__(self, app: ASGIApp, gate: Gate, metrics: Metrics) -> None:
        self.app = app
        self.gate = gate
        logged = gate.runtime.settings.gate_access_log
        self._log_allow, self._log_deny = logged == "all", logged != "none"
        self._metrics = metrics
        self._lines: dict[tuple[str, str, int], tuple[Any, AccessLine]] = {}
        self._busy_reported = -BUSY_REPORT_SECONDS
        self.answers = AnswerCache()
        # the request id is only echoed, unless a setting makes the gate read it
        read = REQUEST_ID_HEADER in gate.config.headers_read
        self._echo_only = None if read else REQUEST_ID_HEADER.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_gate_path(scope["path"]):
            started = time.perf_counter()
            answered: Rendered | None = None
            try:
                seen = fingerprint(scope, self._echo_only)
                if self.gate.trusted(seen.proxy_key, scope.get("client")):  # else the app's 401
                    answered = self._remembered(seen.key) or await self._decide(scope, seen.key)
            except Exception:
                log.exception("gate fast path failed; answering through the application")
                answered = None
            if answered is not None:
                status, headers, body = answered
                # The proxy's request id is echoed (and logged); without one, a new id goes
                # only in the log line, if there is one: the proxy would not read it.
                offered = seen.request_id
                request_id = (
                    request_id_from(offered.decode("latin-1")) if offered is not None else None
                )
                if request_id is not None:
                    headers = [*headers, (b"x-request-id", request_id.encode())]
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                self._record(scope, status, request_id, time.perf_counter() - started)
                return
        await self.app(scope, receive, send)

    def _remembered(self, key: tuple[object, ...]) -> Rendered | None:
        """The answer remembered for this very request, counted: what nearly every request
        gets, without a coroutine of its own. None when the copy must be read, or the store
        asked, or the caller paced first (`_decide`)."""
        gate = self.gate
        if not gate.live.fresh():
            return None
        held = self.answers.get(key, gate.live.index.generation, gate.runtime.now)
        if held is None:
            return None
        _generation, _expires, decision, reason, device, status, headers, body = held
        if reason == UNAUTHENTICATED:
            return None
        gate.count(decision, reason, device)
        return status, headers, body

    def _record(self, scope: Scope, status: int, request_id: str | None, duration: float) -> None:
        """The answer's latency sample and access line, as `Observability` writes them."""
        latency, line = self._written(scope["path"], scope["method"], status)
        logged = self._log_allow if status == 200 else self._log_deny and status != 503
        if not logged:  # a 503 (busy) is timed and counted, never a line each: see _report_busy
            latency.observe(duration)
        elif line is not None:
            log_access_line(latency, line, request_id or request_id_from(None), duration)
        else:
            log_request(
                latency,
                request_id=request_id or request_id_from(None),
                method=scope["method"],
                path=scope["path"],
                route=_route_of(scope["path"]),
                status=status,
                duration=duration,
            )

    def _written(self, path: str, method: str, status: int) -> tuple[Any, AccessLine | None]:
        """The latency histogram's child for an answer, and its access line rendered once for
        the gate's own paths and the usual methods (anything else is written in full: a path or
        method a caller made up must not grow what is kept)."""
        kept = self._lines.get((path, method, status))
        if kept is not None:
            return kept
        label = method_label(method)
        latency = self._metrics.request_seconds.labels(FORWARD_PATH, label, str(status))
        if path not in (FORWARD_PATH, EXPLAIN_PATH) or label != method:
            return latency, None
        kept = self._lines[(path, method, status)] = (
            latency,
            AccessLine(method, path, _route_of(path), status),
        )
        return kept

    async def _decide(self, scope: Scope, key: tuple[object, ...]) -> Rendered:
        """From memory when the copy can answer (remembered, or read now), else on the store
        path; what concerns callers the gate knows nothing about is paced (`Pacer`). A copy
        that must catch up first (another process wrote, a checkpoint moved the WAL) is no sign
        of a stranger: that request goes to the store path unpaced. The store path's `Busy` is
        answered 503."""
        try:
            return await self._read(scope, key)
        except Busy:
            self._report_busy()
            return _busy(scope["path"])

    async def _read(self, scope: Scope, key: tuple[object, ...]) -> Rendered:
        gate = self.gate
        if not gate.live.fresh():
            return gate.render(*await gate.store_path.run(gate.decide, self._parse(scope)))
        now = gate.runtime.now()
        generation = gate.live.index.generation  # before the copy is read: a change moves it
        held = self.answers.get(key, generation, lambda: now)
        if held is None:
            request = self._parse(scope)
            facts = gate.memory_facts(now)
            result = gate.from_memory(request, facts)
            if result is None:
                await gate.pacer.turn()
                return gate.render(*await gate.store_path.run(gate.decide, request))
            status, headers, body = gate.response(result, None)
            remembered = RememberedAnswer(
                generation,
                facts.expires,
                result.decision.value,
                result.reason,
                result.device,
                status,
                tuple(headers),
                body,
            )
            if facts.lasting:
                self.answers.put(key, remembered)
        else:
            remembered = RememberedAnswer._make(held)
        if remembered.reason == UNAUTHENTICATED:
            await gate.pacer.turn()
        gate.count(remembered.decision, remembered.reason, remembered.device)
        return remembered.status, remembered.headers, remembered.body

    def _parse(self, scope: Scope) -> GateRequest:
        headers, duplicated = read_headers(scope["headers"])
        return self.gate.parse(scope, headers, duplicated)

    def _report_busy(self) -> None:
        """A warning at most every `BUSY_REPORT_SECONDS` while the store path turns requests
        away, instead of a line per refusal: a flood must not become a flood of log lines."""
        now = time.monotonic()
        if now - self._busy_reported >= BUSY_REPORT_SECONDS:
            self._busy_reported = now
            log.warning(
                "gate: the store path is full; requests for unknown devices and people are "
                'answered 503 (counted in appwarden_request_seconds{status="503"})'
            )


def _route_of(path: str) -> str:
    """The route template an answer on this gate path is logged under."""
    return EXPLAIN_PATH if path == EXPLAIN_PATH else FORWARD_PATH


def _busy(path: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The 503 problem the application writes for `Busy` (see `_gate`)."""
    body = orjson.dumps(problem_dict(503, "unavailable", BUSY_DETAIL, instance=path))
    headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    return 503, headers, body


async def _gate(request: Request) -> Response:
    gate: Gate = request.app.state.gate
    headers, duplicated = read_headers(request.scope["headers"])
    client = (request.client.host, request.client.port) if request.client else None
    offered = headers.get(PROXY_KEY_HEADER)
    if not gate.trusted(offered.encode("latin-1") if offered is not None else None, client):
        raise Unauthenticated(
            "the gate answers only its proxy (X-Appwarden-Proxy-Key)", invalid_token=True
        )
    parsed = gate.parse(request.scope, headers, duplicated)
    try:
        result, source = await gate.store_path.run(gate.decide, parsed)
    except Busy:
        raise ServiceUnavailable(BUSY_DETAIL) from None
    status, response_headers, body = gate.render(result, source)
    response = Response(body, status_code=status)
    response.raw_headers = response_headers
    return response


def install(app: FastAPI) -> None:
    app.add_api_route(FORWARD_PATH, _gate, methods=METHODS, include_in_schema=False)
    app.add_api_route(
        FORWARD_PATH + "/{rest:path}", _gate, methods=METHODS, include_in_schema=False
    )
    app.add_api_route(EXPLAIN_PATH, _gate, methods=["GET"], include_in_schema=False)
