"""A flood of made-up DeviceIds cannot starve the server (docs/gates.md, "Unknown callers cost a
bounded amount").

The proxy asks the gate before the mail server has checked any password, so anyone can make it
look up DeviceIds nobody has. This test runs `appwarden serve` as a child process (so the flood
client's Python shares no GIL with it) on the reference organisation after the memo's deadline,
opens 2,000 keep-alive connections that ask, for 30 s and as fast as the server answers, about a
new random DeviceId each time with no credentials (every one needs the store), and meanwhile,
on connections of their own, asks every 100 ms for /healthz and for two known phones.

It holds when every /healthz answers 200 within a second, every known phone gets its own answer
(carol's 403, bob's 200) within a second, the flood gets only 200 (unauthenticated: the mail
server would challenge) or 503 (the gate's store path is full), and the server still answers
afterwards. The measurements are printed and written to `flood.json` in the test's directory.
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.eas_requests import BOB, CAROL, EAS
from tests.proxy_harness import APP_START_TIMEOUT, free_port, stop_process, unavailable

pytestmark = pytest.mark.slow  # ~40 s per store

KEY = "flood-test-proxy-key-0123456789abcdef0123456789"
AFTER = "2020-07-11T12:00:00-07:00"  # past the memo's deadline: carol's phone is denied
CONNECTIONS = 2_000
FLOOD_SECONDS = 30.0
MAX_REQUESTS = 5_000_000  # a bound on the count too, whatever the machine's speed
CONNECTING_AT_ONCE = 200  # stay well inside the listen backlog while the flood opens
PROBE_EVERY = 0.1
PROBE_TIMEOUT = 1.0
FLOOD_STATUSES = {200, 503}  # unauthenticated pass; the store path is full


def sync_uri(device: str, device_type: str = "SmartPhone") -> str:
    return f"{EAS}?Cmd=Sync&DeviceId={device}&DeviceType={device_type}"


# ---------------------------------------------------------------------------------------------
# The server, as `appwarden serve` runs it


def raise_file_limit(needed: int) -> None:
    """Both the flood and the server (which inherits the limit) hold a socket per connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        unavailable("file descriptors", f"RLIMIT_NOFILE hard limit {hard} < {needed}")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@contextmanager
def appwarden_serve(database_url: str, log: Path) -> Iterator[int]:
    """`python -m appwarden serve --port P` on `database_url`, waited for (/healthz) and always
    stopped (SIGTERM, then SIGKILL); yields the port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPWARDEN_")}
    env.update(
        APPWARDEN_DATABASE_URL=database_url,
        APPWARDEN_ENV="test",
        APPWARDEN_CLOCK=f"fixed:{AFTER}",
        APPWARDEN_GATE_PROXY="nginx",
        APPWARDEN_GATE_PROXY_KEY=KEY,
        APPWARDEN_MAILDIR=str(log.parent / "mail"),  # the embedded worker's notices
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "appwarden", "serve", "--port", str(port)],
            env=env,
            cwd=log.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + APP_START_TIMEOUT
        while probe(port, "/healthz", timeout=0.5)[0] != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"appwarden serve did not start; its output:\n{log.read_text()}")
            time.sleep(0.1)
        yield port
    finally:
        stop_process(process, (signal.SIGTERM,))


def probe(
    port: int, path: str, headers: dict[str, str] | None = None, timeout: float = PROBE_TIMEOUT
) -> tuple[int, float]:
    """One request on a connection of its own: (status, seconds); status 0 when it failed or
    took longer than `timeout` (each probe opens its own connection, as a health checker does)."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        response.read()
        status = response.status
    except (OSError, http.client.HTTPException):
        status = 0
    finally:
        connection.close()
    elapsed = time.perf_counter() - started
    return (status if elapsed <= timeout else 0), elapsed


# ---------------------------------------------------------------------------------------------
# The flood: a raw asyncio client, one request at a time per keep-alive connection


@dataclass
class FloodCounts:
    statuses: Counter[int] = field(default_factory=Counter)
    connect_errors: Counter[str] = field(default_factory=Counter)
    closed_by_server: int = 0
    sent: int = 0


class FloodConnection(asyncio.Protocol):
    """Sends a gate request with a new random DeviceId, reads the answer (status line and
    Content-Length only), sends the next; stops at the deadline or the request bound."""

    def __init__(self, head: bytes, counts: FloodCounts, until: float, lost: asyncio.Event) -> None:
        self.head, self.counts, self.until, self.lost = head, counts, until, lost
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.send()

    def send(self) -> None:
        assert self.transport is not None
        if time.monotonic() >= self.until or self.counts.sent >= MAX_REQUESTS:
            self.transport.close()
            return
        self.counts.sent += 1
        self.transport.write(self.head % os.urandom(16).hex().upper().encode())

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].lower()
        length, at = 0, head.find(b"\r\ncontent-length:")
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop >= 0 else None])
        if len(self.buffer) < end + 4 + length:
            return
        self.counts.statuses[int(self.buffer[9:12])] += 1
        self.buffer = self.buffer[end + 4 + length :]
        self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if time.monotonic() < self.until and self.counts.sent < MAX_REQUESTS:
            self.counts.closed_by_server += 1
        self.lost.set()


async def flood(port: int, seconds: float) -> FloodCounts:
    """CONNECTIONS keep-alive connections asking until `seconds` have passed; a connection the
    server closes early is opened again."""
    head = (
        "GET /gate/forward HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"X-Appwarden-Proxy-Key: {KEY}\r\n"
        f"X-Original-URI: {sync_uri('%s', 'x')}\r\n\r\n"
    ).encode()
    counts = FloodCounts()
    loop = asyncio.get_running_loop()
    until = time.monotonic() + seconds
    gate = asyncio.Semaphore(CONNECTING_AT_ONCE)

    async def connection() -> None:
        while time.monotonic() < until:
            lost = asyncio.Event()
            async with gate:
                try:
                    await loop.create_connection(
                        functools.partial(FloodConnection, head, counts, until, lost),
                        "127.0.0.1",
                        port,
                    )
                except OSError as exc:
                    counts.connect_errors[type(exc).__name__] += 1
                    await asyncio.sleep(0.1)
                    continue
            await lost.wait()

    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    return counts


# ---------------------------------------------------------------------------------------------
# The probes, each kind on a thread of its own


@dataclass
class Probes:
    """Every PROBE_EVERY seconds until stopped: `ask()`, recording (expected, status, seconds,
    when: seconds since the probes started)."""

    ask: Callable[[int], tuple[int, int, float]]
    results: list[tuple[int, int, float, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        n, first = 0, time.monotonic()
        while not self.stop.is_set():
            started = time.monotonic()
            self.results.append((*self.ask(n), round(started - first, 2)))
            n += 1
            self.stop.wait(max(0.0, PROBE_EVERY - (time.monotonic() - started)))


def health(port: int) -> Callable[[int], tuple[int, int, float]]:
    def ask(_: int) -> tuple[int, int, float]:
        return (200, *probe(port, "/healthz"))

    return ask


def known_devices(port: int) -> Callable[[int], tuple[int, int, float]]:
    """Carol's phone (denied after the deadline) and bob's (compliant), in turn, no credentials."""
    asks = [(403, sync_uri(CAROL)), (200, sync_uri(BOB))]

    def ask(n: int) -> tuple[int, int, float]:
        expected, uri = asks[n % 2]
        headers = {"X-Appwarden-Proxy-Key": KEY, "X-Original-URI": uri}
        return (expected, *probe(port, "/gate/forward", headers))

    return ask


def latency_summary(results: list[tuple[int, int, float, float]]) -> dict[str, float | int]:
    ordered = sorted(seconds for _, _, seconds, _ in results)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {"probes": len(ordered), "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0)}


# ---------------------------------------------------------------------------------------------


def test_a_flood_of_made_up_device_ids_starves_nothing(cli, store, tmp_path: Path) -> None:
    raise_file_limit(2 * CONNECTIONS + 256)
    assert cli("demo", "--base-time", "2020-07-10T09:00:00-07:00").code == 0
    with appwarden_serve(store.url, tmp_path / "serve.log") as port:
        kinds = {"healthz": Probes(health(port)), "known_device": Probes(known_devices(port))}
        threads = [threading.Thread(target=p.run, name=k) for k, p in kinds.items()]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        try:
            counts = asyncio.run(flood(port, FLOOD_SECONDS))
        finally:
            elapsed = time.monotonic() - started
            for kind in kinds.values():
                kind.stop.set()
            for thread in threads:
                thread.join()
        after = {"healthz": probe(port, "/healthz"), "known_device": known_devices(port)(0)[1:]}

    answered = sum(counts.statuses.values())
    report = {
        "store": store.backend,
        "flood": {
            "connections": CONNECTIONS,
            "seconds": round(elapsed, 1),
            "answers": answered,
            "answers_per_second": round(answered / elapsed),
            "statuses": {str(s): n for s, n in sorted(counts.statuses.items())},
            "connect_errors": dict(counts.connect_errors),
            "closed_by_server": counts.closed_by_server,
        },
        **{kind: latency_summary(p.results) for kind, p in kinds.items()},
        "after": {kind: {"status": s, "ms": round(t * 1000, 1)} for kind, (s, t) in after.items()},
    }
    (tmp_path / "flood.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))

    for kind, probes in kinds.items():
        late = [
            (e, s, round(t, 3), at) for e, s, t, at in probes.results if s != e or t > PROBE_TIMEOUT
        ]
        assert probes.results, kind
        assert not late, f"{kind}: {len(late)} wrong or late: {late[:20]}"
    assert after["healthz"][0] == 200, after
    assert after["known_device"][0] == 403, after
    assert set(counts.statuses) <= FLOOD_STATUSES, counts.statuses
    assert answered > CONNECTIONS, "the flood never got going"
    assert not counts.connect_errors, report["flood"]
    assert not counts.closed_by_server, report["flood"]
