"""What every real-proxy harness needs (test helper): free ports, a proxy child process that is
started, waited for and stopped, a stand-in mail server that records what reaches it, threaded
HTTP servers for fakes, the appwarden application served on a port, and the rule that a missing
proxy binary skips the test (or fails it under APPWARDEN_REQUIRE_SERVICES=1, as in CI).

The proxies themselves live in tests/nginx_harness.py and tests/caddy_harness.py.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self, TypeVar

import pytest
import uvicorn

from appwarden.web.app import SERVER_OPTIONS

REQUIRE_SERVICES = os.environ.get("APPWARDEN_REQUIRE_SERVICES") == "1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
APP_START_TIMEOUT = 20.0

P = TypeVar("P", bound="ProxyProcess")


def unavailable(service: str, reason: str) -> NoReturn:
    """Skip the test because `service` cannot run here; fail it instead when the run requires
    every service (CI), so a missing proxy never turns into a silently green suite."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{service} is required (APPWARDEN_REQUIRE_SERVICES=1): {reason}")
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the proxy starters retry on a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def check_proxy_key(proxy_key: str) -> str:
    """The shared secret is pasted into a configuration file between quotes: only a plain token
    can be, without escaping rules of its own in each proxy's syntax (nginx `;`, Caddy `{}`)."""
    if not re.fullmatch(r"[A-Za-z0-9._~+/=-]+", proxy_key):
        raise ValueError(
            "proxy key must be a plain token (no quotes, spaces, braces or semicolons)"
        )
    return proxy_key


class Stoppable:
    """A context manager whose exit calls `stop()`: a proxy process, a threaded server."""

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# A proxy running as a child process


class ProxyProcess(Stoppable):
    """A proxy running in the foreground as a child process, everything it writes under `prefix`
    (`url`, `log`, `stop()`); also a context manager that stops it on exit. Holding the child's
    own process id means stopping it never depends on a pid file and leaves nothing behind."""

    log_name = "error.log"  # under the prefix
    graceful: tuple[signal.Signals, ...] = (signal.SIGTERM,)

    def __init__(
        self,
        prefix: Path,
        port: int,
        process: subprocess.Popen[bytes] | None = None,
        config: str = "",
    ) -> None:
        self.prefix = Path(prefix)
        self.port = port
        self.process = process
        self.config = config

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        path = self.prefix / self.log_name
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """The graceful signals, then SIGKILL; idempotent."""
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, self.graceful)


def start_proxy(launch: Callable[[int], P], *, service: str, attempts: int = 5) -> P:
    """`launch(port)` (write the configuration for `port`, start the child) on a free port until
    the proxy listens; retries on a port race, else fails the test with the proxy's own log."""
    problem = ""
    for _ in range(attempts):
        proxy = launch(free_port())
        assert proxy.process is not None
        if wait_until_listening(proxy.process, proxy.port):
            return proxy
        proxy.stop()
        problem = proxy.log[-4000:]
        if "address already in use" not in problem.lower():
            break
    pytest.fail(f"{service} did not start; its log:\n{problem}")


def wait_until_listening(process: subprocess.Popen[bytes], port: int) -> bool:
    """True once 127.0.0.1:`port` accepts connections; False when the process exits first or
    START_TIMEOUT passes."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            time.sleep(0.05)
        else:
            return True
    return False


def stop_process(
    process: subprocess.Popen[bytes],
    graceful: tuple[signal.Signals, ...] = (signal.SIGTERM,),
) -> None:
    """The `graceful` signals in turn, then SIGKILL, each given STOP_TIMEOUT; a process that has
    already exited is left alone."""
    for sig in (*graceful, signal.SIGKILL):
        if process.poll() is not None:
            break
        process.send_signal(sig)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            continue
    if process.stdout is not None:
        process.stdout.close()


# ---------------------------------------------------------------------------------------------
# Threaded HTTP servers for the fakes


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # as received: path and query
    headers: dict[str, str]  # lower-case names
    body: bytes


def record_request(handler: BaseHTTPRequestHandler) -> RecordedRequest:
    """What `handler` received, body included (Content-Length or chunked)."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        body = _read_chunked(handler)
    else:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
    return RecordedRequest(
        method=handler.command,
        path=handler.path,
        headers={key.lower(): value for key, value in handler.headers.items()},
        body=body,
    )


def _read_chunked(handler: BaseHTTPRequestHandler) -> bytes:
    chunks: list[bytes] = []
    while True:
        size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            handler.rfile.readline()  # the blank line after the last chunk (no trailers)
            return b"".join(chunks)
        chunks.append(handler.rfile.read(size))
        handler.rfile.readline()


@dataclass
class ThreadedServer(Stoppable):
    """A ThreadingHTTPServer on 127.0.0.1 served by a daemon thread; `stop()` or `with`."""

    server: ThreadingHTTPServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join(timeout=STOP_TIMEOUT)
        self.server.server_close()


def serve_http(
    handler: type[BaseHTTPRequestHandler], name: str
) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """`handler` on a free 127.0.0.1 port, already serving from a daemon thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
    )
    thread.start()
    return server, thread


@dataclass
class Upstream(ThreadedServer):
    """The stand-in mail server: answers 200 "mail upstream" to anything and records it."""

    requests: list[RecordedRequest] = field(default_factory=list)


def start_upstream(body: bytes = b"mail upstream") -> Upstream:
    """Start the stand-in mail server on a free 127.0.0.1 port; stop it (or use `with`)."""
    recorded: list[RecordedRequest] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            request = record_request(self)
            with lock:
                recorded.append(request)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_OPTIONS = do_HEAD = _answer  # noqa: N815 - the handler's names

        def log_message(self, format: str, *args: object) -> None:
            return

    server, thread = serve_http(Handler, "mail-upstream")
    return Upstream(server=server, thread=thread, requests=recorded)


# ---------------------------------------------------------------------------------------------
# The appwarden application behind the proxy


@contextmanager
def serve_app(app: Any, port: int | None = None) -> Iterator[int]:
    """Serve the ASGI `app` with uvicorn on `port` (default: a free 127.0.0.1 port), yielded,
    from a thread, as `appwarden serve` runs it (`SERVER_OPTIONS`: the client is the socket's
    peer)."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **SERVER_OPTIONS)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="appwarden", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + APP_START_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise AssertionError("the appwarden server did not start")
            time.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=APP_START_TIMEOUT)
