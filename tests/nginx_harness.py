"""A real nginx in front of a fake mail server, asking a gate via `auth_request` (test helper;
the parts every proxy harness shares are in tests/proxy_harness.py).

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
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.proxy_harness import (
    ProxyProcess,
    Upstream,
    check_proxy_key,
    start_proxy,
    start_upstream,
    unavailable,
)

NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
PROTECTED_LOCATIONS = ("/Microsoft-Server-ActiveSync", "/owa/")
AUTH_LOCATION = "/_appwarden_auth"
DENIED_LOCATION = "@appwarden_denied"


def nginx_binary() -> str:
    """The nginx executable with the auth_request module; skips the test when there is none
    (fails instead under APPWARDEN_REQUIRE_SERVICES=1)."""
    found = shutil.which("nginx") or next(
        (path for path in NGINX_CANDIDATES if os.access(path, os.X_OK)), None
    )
    if found is None:
        unavailable("nginx", "nginx not installed (apt-get install -y nginx)")
    if "--with-http_auth_request_module" not in _build_info(found):
        unavailable("nginx", f"{found} was built without the auth_request module")
    return found


def _build_info(binary: str) -> str:
    completed = subprocess.run(
        [binary, "-V"], capture_output=True, text=True, timeout=10, check=False
    )
    return completed.stdout + completed.stderr  # nginx prints -V to stderr


def _version(build_info: str) -> tuple[int, ...]:
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", build_info)
    return tuple(int(part) for part in match.groups()) if match else (0, 0, 0)


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
    check_proxy_key(proxy_key)
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
    # to the gate: only the headers named here (never cookies, a forged X-Forwarded-User, nor a
    # Basic password: nginx reads the Basic user name into $remote_user, and only a bearer
    # token, which names its user in a claim, is passed as it is), no body, a short timeout
    to_gate = f"""
            proxy_pass_request_headers off;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Connection "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Appwarden-Proxy-Key "{proxy_key}";
            proxy_set_header X-Forwarded-User $remote_user;
            proxy_set_header Authorization $appwarden_bearer;
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

    # the client's bearer token for the gate (empty, so not sent, for any other scheme)
    map $http_authorization $appwarden_bearer {{
        "~*^bearer " $http_authorization;
        default "";
    }}

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


class NginxProxy(ProxyProcess):
    """A running nginx; a QUIT signal lets it finish the requests in flight."""

    log_name = "error.log"
    graceful = (signal.SIGQUIT, signal.SIGTERM)


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

    def launch(port: int) -> NginxProxy:
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
        return NginxProxy(prefix, port, process, config)

    return start_proxy(launch, service="nginx", attempts=attempts)


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
