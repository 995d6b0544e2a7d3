"""A real nginx in front of a fake mail server, asking a gate via `auth_request` (test helper).

    with start_upstream() as upstream, start_nginx(tmp_path, upstream.port, gate_port, key) as proxy:
        httpx.post(f"{proxy.url}/Microsoft-Server-ActiveSync?Cmd=Sync&DeviceId=…")
        upstream.requests        # what reached the mail server

nginx runs as a child process in the foreground (`daemon off; master_process off;`): one process
whose id we hold, so stopping it never depends on a pid file and leaves no orphaned workers, and it
keeps running as the test's own user (no switch to `nobody`, which could not write the temp dirs).
Everything it writes (pid, error and access logs, every *_temp_path) lives under the prefix.

The generated configuration is the one docs/gates.md recommends. The protected locations always
`proxy_pass`: a `return` there would run in the rewrite phase, before `auth_request` (access phase),
and silently skip the check.
"""

from __future__ import annotations

import os
import re
import shutil
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
from typing import NoReturn

import pytest

REQUIRE_SERVICES = os.environ.get("APPWARDEN_REQUIRE_SERVICES") == "1"
NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
PROTECTED_LOCATIONS = ("/Microsoft-Server-ActiveSync", "/owa/")
AUTH_LOCATION = "/_appwarden_auth"
DENIED_LOCATION = "@appwarden_denied"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def _unavailable(reason: str) -> NoReturn:
    if REQUIRE_SERVICES:
        pytest.fail(f"nginx is required (APPWARDEN_REQUIRE_SERVICES=1): {reason}")
    pytest.skip(reason)


def nginx_binary() -> str:
    """The nginx executable with the auth_request module; skips the test when there is none
    (fails instead under APPWARDEN_REQUIRE_SERVICES=1)."""
    found = shutil.which("nginx") or next(
        (path for path in NGINX_CANDIDATES if os.access(path, os.X_OK)), None
    )
    if found is None:
        _unavailable("nginx not installed (apt-get install -y nginx)")
    if "--with-http_auth_request_module" not in _build_info(found):
        _unavailable(f"{found} was built without the auth_request module")
    return found


def _build_info(binary: str) -> str:
    completed = subprocess.run(
        [binary, "-V"], capture_output=True, text=True, timeout=10, check=False
    )
    return completed.stdout + completed.stderr  # nginx prints -V to stderr


def _version(build_info: str) -> tuple[int, ...]:
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", build_info)
    return tuple(int(part) for part in match.groups()) if match else (0, 0, 0)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (start_nginx retries on a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# Configuration


def render_nginx_config(
    *,
    prefix: Path,
    port: int,
    upstream_port: int,
    gate_port: int,
    proxy_key: str,
    build_info: str = "",
) -> str:
    """The nginx.conf: two protected locations in front of the upstream, the gate subrequest and
    the named location that fetches the gate's explanation for a 403."""
    if not re.fullmatch(r"[A-Za-z0-9._~+/=-]+", proxy_key):
        raise ValueError("proxy key must be a plain token (no quotes, spaces or semicolons)")
    temp_paths = "\n".join(
        f"    {module}_temp_path {prefix / (module + '_temp')};"
        for module in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        if module == "client_body" or f"--without-http_{module}_module" not in build_info
    )
    # proxy_set_header is inherited only by levels that define none of their own, so every
    # location spells out all of its headers
    to_mail = """
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;"""
    protected = "\n".join(
        f"""
        location {location} {{
            auth_request {AUTH_LOCATION};
            auth_request_set $aw_device $upstream_http_x_appwarden_device;
            error_page 403 {DENIED_LOCATION};
            proxy_pass http://mail_upstream;{to_mail}
            proxy_set_header X-Appwarden-Device $aw_device;
        }}"""
        for location in PROTECTED_LOCATIONS
    )
    # to the gate: only the headers named here (never the client's Authorization or cookies, nor
    # a forged X-Remote-User), no body, a short timeout
    to_gate = f"""
            proxy_pass_request_headers off;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Connection "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Appwarden-Proxy-Key "{proxy_key}";
            proxy_set_header X-Forwarded-User $remote_user;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header User-Agent $http_user_agent;
            proxy_buffering on;
            proxy_connect_timeout 2s;
            proxy_read_timeout 5s;"""
    return f"""# generated by tests/nginx_harness.py
daemon off;
master_process off;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} info;

events {{
    worker_connections 128;
}}

http {{
    access_log {prefix / "access.log"};
{temp_paths}
    default_type application/octet-stream;
    server_tokens off;

    upstream mail_upstream {{
        server 127.0.0.1:{upstream_port};
    }}
    upstream appwarden_gate {{
        server 127.0.0.1:{gate_port};
        keepalive 4;
    }}

    server {{
        listen 127.0.0.1:{port};
        server_name localhost;

        # to the mail server: HTTP/1.1, unbuffered both ways (ActiveSync Ping long-polls for up
        # to half an hour; attachments are large)
        proxy_http_version 1.1;
        proxy_request_buffering off;
        proxy_buffering off;
        proxy_read_timeout 1800s;
        client_max_body_size 50m;
{protected}

        location = {AUTH_LOCATION} {{
            internal;
            proxy_pass http://appwarden_gate/gate/forward;{to_gate}
        }}

        location {DENIED_LOCATION} {{
            # a named location's proxy_pass takes no URI: set it here ("?" drops the arguments)
            rewrite ^ /gate/explain? break;
            proxy_pass http://appwarden_gate;
            proxy_method GET;{to_gate}
        }}
    }}
}}
"""


# ---------------------------------------------------------------------------------------------
# The nginx process


class NginxProxy:
    """A running nginx (`url`, `stop()`); also a context manager that stops it on exit."""

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
    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Graceful stop (SIGQUIT), then SIGTERM, then SIGKILL; idempotent."""
        process, self.process = self.process, None
        if process is None:
            return
        for sig in (signal.SIGQUIT, signal.SIGTERM, signal.SIGKILL):
            if process.poll() is not None:
                break
            process.send_signal(sig)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                continue
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> NginxProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _wait_until_listening(process: subprocess.Popen[bytes], port: int) -> bool:
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


def start_nginx(
    tmp_path: Path,
    upstream_port: int,
    gate_port: int,
    proxy_key: str,
    *,
    attempts: int = 5,
    edit_config: Callable[[str], str] | None = None,
) -> NginxProxy:
    """Start nginx under `tmp_path/nginx` on a free 127.0.0.1 port; the caller stops it (or uses
    it as a context manager). Retries on a port race; fails the test with nginx's own error log
    when it does not come up. `edit_config` rewrites the generated text (tests of the harness)."""
    binary = nginx_binary()
    build_info = _build_info(binary)
    prefix = Path(tmp_path) / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    problem = ""
    for _ in range(attempts):
        port = free_port()
        config = render_nginx_config(
            prefix=prefix,
            port=port,
            upstream_port=upstream_port,
            gate_port=gate_port,
            proxy_key=proxy_key,
            build_info=build_info,
        )
        if edit_config is not None:
            config = edit_config(config)
        conf.write_text(config)
        command = [binary, "-p", str(prefix), "-c", str(conf)]
        if _version(build_info) >= (1, 19, 5):
            command += ["-e", str(prefix / "error.log")]  # not even the default log at startup
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        proxy = NginxProxy(prefix, port, process, config)
        if _wait_until_listening(process, port):
            return proxy
        proxy.stop()
        problem = proxy.error_log[-4000:]
        if "Address already in use" not in problem:
            break
    pytest.fail(f"nginx did not start; its error log:\n{problem}")


# ---------------------------------------------------------------------------------------------
# A stand-in mail server


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # as received: path and query
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class Upstream:
    """A threaded HTTP server that answers 200 "mail upstream" to anything and records it."""

    server: ThreadingHTTPServer
    thread: threading.Thread
    requests: list[RecordedRequest] = field(default_factory=list)

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

    def __enter__(self) -> Upstream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_upstream(body: bytes = b"mail upstream") -> Upstream:
    """Start the stand-in mail server on a free 127.0.0.1 port; stop it (or use `with`)."""
    recorded: list[RecordedRequest] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                payload = _read_chunked(self)
            else:
                payload = self.rfile.read(length) if length else b""
            with lock:
                recorded.append(
                    RecordedRequest(
                        method=self.command,
                        path=self.path,
                        headers={key.lower(): value for key, value in self.headers.items()},
                        body=payload,
                    )
                )
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def do_OPTIONS(self) -> None:
            self._answer()

        def do_HEAD(self) -> None:
            self._answer()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="mail-upstream",
        daemon=True,
    )
    thread.start()
    return Upstream(server=server, thread=thread, requests=recorded)


def _read_chunked(handler: BaseHTTPRequestHandler) -> bytes:
    chunks: list[bytes] = []
    while True:
        size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            handler.rfile.readline()  # the blank line after the last chunk (no trailers)
            return b"".join(chunks)
        chunks.append(handler.rfile.read(size))
        handler.rfile.readline()


@contextmanager
def nginx_in_front(
    tmp_path: Path, gate_port: int, proxy_key: str
) -> Iterator[tuple[NginxProxy, Upstream]]:
    """An upstream and an nginx in front of it, both stopped on exit."""
    with (
        start_upstream() as upstream,
        start_nginx(tmp_path, upstream.port, gate_port, proxy_key) as proxy,
    ):
        yield proxy, upstream
