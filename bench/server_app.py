"""The server under test, and how the benchmarks run it as a separate process.

`build()` is a uvicorn factory (`uvicorn --factory bench.server_app:build`): appwarden's own
application, `create_app(Settings())` exactly as `appwarden serve` builds it (settings from the
APPWARDEN_* environment, its JSON logging), behind a tiny ASGI dispatcher that answers
`/bench/constant` itself with a constant 200. That endpoint is the baseline of W2: same process,
same event loop, same HTTP stack, but none of appwarden's middleware, routing or store. appwarden's
application is not modified, so its route guard never sees the baseline route.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CONSTANT_PATH = "/bench/constant"
_CONSTANT_BODY = b"ok"
_CONSTANT_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
}
_CONSTANT_BODY_MESSAGE = {"type": "http.response.body", "body": _CONSTANT_BODY}


def dispatcher(inner: Any) -> Any:
    """An ASGI app: `/bench/constant` answered here, everything else (lifespan too) by `inner`."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == CONSTANT_PATH:
            await send(_CONSTANT_START)
            await send(_CONSTANT_BODY_MESSAGE)
            return
        await inner(scope, receive, send)

    return app


def build() -> Any:
    """The uvicorn factory: appwarden's application (without the embedded worker, whose periodic
    passes would be noise) behind the dispatcher."""
    from appwarden.settings import Settings
    from appwarden.web.app import create_app
    from appwarden.web.observability import configure_logging

    if os.environ.get("BENCH_ACCESS_LOG", "1") == "1":
        configure_logging()  # as `appwarden serve`: one JSON access line per request on stderr
    return dispatcher(create_app(Settings()))


# ── running it ────────────────────────────────────────────────────────────────────────────────


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pin(core: int | None) -> list[str]:
    """`taskset -c CORE` when the machine has that core and taskset, else nothing."""
    if core is None or core >= (os.cpu_count() or 1) or not _has("taskset"):
        return []
    return ["taskset", "-c", str(core)]


def _has(program: str) -> bool:
    from shutil import which

    return which(program) is not None


class ServerProcess:
    """uvicorn with one worker in its own process (own process group), pinned to `core`."""

    def __init__(
        self, env: dict[str, str], log: Path, *, core: int | None = 0, access_log: bool = True
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "BENCH_ACCESS_LOG": "1" if access_log else "0"}
        self.log = log
        self.core = core
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> ServerProcess:
        command = [
            *pin(self.core),
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "bench.server_app:build",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        root = Path(__file__).resolve().parent.parent
        env = {
            **self.env,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(root), self.env.get("PYTHONPATH")])),
        }
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                command, cwd=root, env=env, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}); see {self.log}")
            if _ready(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the server did not become ready in {timeout:.0f} s; see {self.log}")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def stop(self, timeout: float = 15.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        group = process.pid  # start_new_session: the process leads its own group
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


def _ready(port: int) -> bool:
    """/readyz answers 200: the app is up and the store reachable at the current schema."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as connection:
            connection.sendall(b"GET /readyz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            head = connection.recv(64)
    except OSError:
        return False
    return head.startswith(b"HTTP/1.1 200")


@contextmanager
def running(
    env: dict[str, str], log: Path, *, core: int | None = 0, access_log: bool = True
) -> Iterator[ServerProcess]:
    server = ServerProcess(env, log, core=core, access_log=access_log)
    try:
        yield server.start()
    finally:
        server.stop()
