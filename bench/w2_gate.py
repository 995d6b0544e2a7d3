"""W2: the HTTP gate's decision against a constant-response endpoint on the same server.

1. Throughput (closed loop, wrk pinned to core 1, the server to core 0): max requests/s of
   `/bench/constant` and of `/gate/forward`, whose requests rotate over every phone of the fleet
   (a wrk Lua script). Both get the same requests (proxy key and X-Original-URI headers), only
   the path differs, so the baseline pays the same HTTP parsing. The ratio gate / constant is
   held to >= 0.70.
2. Latency (open loop): requests are sent at a fixed rate, half of the gate's max, and each one is
   timed from its *scheduled* start, so a server that falls behind is charged for the queueing
   (no coordinated omission). p50, p99 and max for the gate and for the constant endpoint at the
   same rate; the gate's p99 is held to <= 5 ms.
3. Correctness on a sample: the gate's 200/403 for 100 phones equals the decision the API
   (`GET /v1/decisions/{device}/email`, what `appwarden decide` prints) gives at the same clock.
"""

from __future__ import annotations

import json
import random
import selectors
import socket
import subprocess
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.fleet import BENCH_AT, PROXY_KEY, Fleet, gate_uri, has_tiktok
from bench.server_app import CONSTANT_PATH, pin, running

BAR_RATIO = 0.70
BAR_P99_MS = 5.0
GATE_PATH = "/gate/forward"
SAMPLE = 100

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Params:
    extra_devices: int
    wrk_seconds: int
    wrk_rounds: int
    warmup_seconds: int
    wrk_threads: int = 2
    wrk_connections: int = 32
    open_loop_seconds: float = 10.0
    server_core: int = 0
    client_core: int = 1
    access_log: bool = True

    @classmethod
    def of(cls, *, quick: bool, access_log: bool = True) -> Params:
        if quick:
            return cls(1_000, 3, 1, 1, open_loop_seconds=3.0, access_log=access_log)
        return cls(10_000, 10, 2, 2, open_loop_seconds=10.0, access_log=access_log)


# ── summaries ─────────────────────────────────────────────────────────────────────────────────


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


def latency_summary(values_s: Sequence[float]) -> dict[str, float | int]:
    ordered = sorted(values_s)
    ms = [v * 1000 for v in ordered]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "p999_ms": round(percentile(ms, 99.9), 3),
        "max_ms": round(ms[-1], 3) if ms else float("nan"),
        "mean_ms": round(sum(ms) / len(ms), 3) if ms else float("nan"),
    }


# ── wrk ───────────────────────────────────────────────────────────────────────────────────────

_WRK_SCRIPT = """
local key = "%(key)s"
local phones = {
%(phones)s
}
local requests = {}
local index = 0
local threads = {}
local counter = 0

setup = function(thread)
  counter = counter + 1
  thread:set("offset", counter * 7919)
  table.insert(threads, thread)
end

init = function(args)
  for i, p in ipairs(phones) do
    requests[i] = wrk.format("GET", "%(path)s", {
      ["X-Appwarden-Proxy-Key"] = key,
      ["X-Original-URI"] = "/Microsoft-Server-ActiveSync?Cmd=Sync"%(user)s
        .. "&DeviceId=" .. p[2] .. "&DeviceType=iPhone",
    })
  end
  index = offset %% #requests
  s200 = 0
  s403 = 0
  sother = 0
end

request = function()
  index = index %% #requests + 1
  return requests[index]
end

response = function(status, headers, body)
  if status == 200 then s200 = s200 + 1
  elseif status == 403 then s403 = s403 + 1
  else sother = sother + 1 end
end
"""

_WRK_DONE = """
done = function(summary, latency, requests)
  local a, d, o = 0, 0, 0
  for _, t in ipairs(threads) do
    a = a + (t:get("s200") or 0)
    d = d + (t:get("s403") or 0)
    o = o + (t:get("sother") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"s200":%d,"s403":%d,"sother":%d,'
    .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
    .. '"latency_us":{"p50":%d,"p99":%d,"max":%d,"mean":%.1f}}\\n',
    summary.requests, summary.duration, summary.bytes, a, d, o,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, latency.mean))
end
"""

_CONSTANT_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,'
    .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
    .. '"latency_us":{"p50":%d,"p99":%d,"max":%d,"mean":%.1f}}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, latency.mean))
end
"""


def write_gate_script(
    phones: Sequence[tuple[str, str]],
    path: Path,
    *,
    with_user: bool = True,
    request_path: str = GATE_PATH,
) -> Path:
    """A wrk script whose requests rotate over `phones` (ActiveSync user, DeviceId). With
    `request_path=CONSTANT_PATH`, the same requests (same headers, same bytes but the path) go to
    the constant endpoint: the baseline parses what the gate parses."""
    rows = ",\n".join(f'  {{"{user}", "{device}"}}' for user, device in phones)
    values = {
        "key": PROXY_KEY,
        "phones": rows,
        "path": request_path,
        "user": ' .. "&User=" .. p[1]' if with_user else "",
    }
    path.write_text(_WRK_SCRIPT % values + _WRK_DONE)
    return path


def write_plain_script(path: Path) -> Path:
    """A wrk script for one fixed GET (the constant endpoint, /healthz)."""
    path.write_text(_CONSTANT_DONE)
    return path


def write_wrk_scripts(phones: Sequence[tuple[str, str]], directory: Path) -> tuple[Path, Path]:
    return (
        write_gate_script(phones, directory / "gate.lua"),
        write_gate_script(phones, directory / "constant.lua", request_path=CONSTANT_PATH),
    )


def run_wrk(url: str, script: Path, seconds: int, params: Params, *, path: str) -> dict[str, Any]:
    command = [
        *pin(params.client_core),
        "wrk",
        f"-t{params.wrk_threads}",
        f"-c{params.wrk_connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        f"{url}{path}",
    ]
    done = subprocess.run(  # noqa: S603 - wrk with our own arguments, bounded in time
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCHJSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    out: dict[str, Any] = json.loads(line.removeprefix("BENCHJSON "))
    out["rps"] = round(out["requests"] / (out["duration_us"] / 1e6), 1)
    out["path"] = path
    out["seconds"] = seconds
    return out


# ── the open-loop client ──────────────────────────────────────────────────────────────────────


class _Connection:
    """One keep-alive connection of the open-loop client: the request in flight (when it was
    scheduled) and what has arrived of its response."""

    __slots__ = ("buffer", "busy", "closed", "scheduled", "sock")

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buffer = bytearray()
        self.scheduled = 0.0
        self.busy = False
        self.closed = False

    def complete(self) -> int | None:
        """The status once the whole response (head and Content-Length body) has arrived."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            raise RuntimeError("response without Content-Length")
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop >= 0 else len(head)])
        if len(self.buffer) < end + 4 + length:
            return None
        if len(self.buffer) > end + 4 + length:
            raise RuntimeError("more bytes than one response (the client never pipelines)")
        return int(head[9:12])


def raw_request(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def open_loop(
    port: int, requests: Sequence[bytes], rate: float, seconds: float, warm: int = 32
) -> dict[str, Any]:
    """Send request i at `start + i / rate` whatever happened to the ones before (a new
    connection when every open one is busy), and time each from that scheduled instant.

    One thread on raw non-blocking sockets and epoll, busy-polling between sends: this client
    must keep its schedule at several thousand requests a second (an asyncio client could not;
    its own lag would be charged to the server). Its lag is recorded as `client_send_lag_ms`."""
    selector = selectors.DefaultSelector()
    idle: deque[_Connection] = deque()
    for _ in range(warm):
        idle.append(_Connection(port))
    for connection in idle:
        selector.register(connection.sock, selectors.EVENT_READ, connection)
    opened = warm
    total = max(1, int(rate * seconds))
    latencies: list[float] = []
    lags: list[float] = []
    statuses: dict[int, int] = {}
    failures = in_flight = sent = 0
    clock = time.perf_counter
    start = clock() + 0.05
    give_up = start + seconds + 30.0

    def close(connection: _Connection) -> None:
        nonlocal failures, in_flight
        if connection.busy:  # a request lost with it
            failures += 1
            in_flight -= 1
        connection.busy, connection.closed = False, True
        selector.unregister(connection.sock)
        connection.sock.close()

    while (sent < total or in_flight) and clock() < give_up:
        now = clock()
        while sent < total and start + sent / rate <= now:
            scheduled = start + sent / rate
            lags.append(now - scheduled)
            while idle and idle[-1].closed:  # the server closed it while idle (keep-alive timeout)
                idle.pop()
            if idle:
                connection = idle.pop()
            else:
                connection = _Connection(port)
                selector.register(connection.sock, selectors.EVENT_READ, connection)
                opened += 1
            connection.scheduled = scheduled
            connection.buffer.clear()
            connection.busy = True
            in_flight += 1
            try:
                connection.sock.sendall(requests[sent % len(requests)])
            except OSError:
                close(connection)
            sent += 1
            now = clock()
        wait = start + sent / rate - clock() if sent < total else 0.05
        # epoll waits in whole milliseconds: sleep in it only when the next send is further away.
        for key, _ in selector.select(wait - 0.0015 if wait > 0.002 else 0):
            connection = key.data
            try:
                chunk = connection.sock.recv(65536)
                if not chunk:
                    raise ConnectionResetError("closed by the server")
                if not connection.busy:
                    raise RuntimeError("bytes nobody asked for")
                connection.buffer += chunk
                status = connection.complete()
            except (OSError, RuntimeError, ValueError):
                close(connection)
                continue
            if status is None:
                continue
            latencies.append(clock() - connection.scheduled)
            statuses[status] = statuses.get(status, 0) + 1
            in_flight -= 1
            connection.busy = False
            idle.append(connection)
    failures += in_flight
    for key in list(selector.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    selector.close()
    summary = latency_summary(latencies)
    return {
        "rate_per_s": round(rate, 1),
        "seconds": seconds,
        "scheduled": total,
        "completed": len(latencies),
        "failed": failures,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "connections_opened": opened,
        "latency_from_scheduled_start": summary,
        "client_send_lag_ms": {
            "p50": round(percentile(sorted(lags), 50) * 1000, 3),
            "p99": round(percentile(sorted(lags), 99) * 1000, 3),
        },
    }


def _open_loop_in_child(
    port: int, requests: Sequence[bytes], rate: float, seconds: float, core: int, out: Path
) -> dict[str, Any]:
    """The open-loop client in its own process pinned to the client core (as wrk is)."""
    payload = out.with_suffix(".in.json")
    payload.write_text(
        json.dumps(
            {
                "port": port,
                "requests": [r.decode() for r in requests],
                "rate": rate,
                "seconds": seconds,
            }
        )
    )
    import sys

    command = [*pin(core), sys.executable, "-m", "bench.w2_gate", str(payload), str(out)]
    root = Path(__file__).resolve().parent.parent
    subprocess.run(  # noqa: S603 - our own interpreter and module
        command, cwd=root, timeout=seconds + 120, check=True
    )
    result: dict[str, Any] = json.loads(out.read_text())
    return result


# ── correctness on a sample ───────────────────────────────────────────────────────────────────


def check_sample(fleet: Fleet, url: str) -> dict[str, Any]:
    phones = fleet.phones
    sample = random.Random(2020).sample(  # noqa: S311 - a reproducible sample
        phones, min(SAMPLE, len(phones))
    )
    mismatches: list[dict[str, Any]] = []
    counts = {"allow": 0, "deny": 0}
    expected_mismatch = 0
    with httpx.Client(base_url=url, timeout=10) as client:
        for user, device in sample:
            gate = client.get(
                GATE_PATH,
                headers={
                    "X-Appwarden-Proxy-Key": PROXY_KEY,
                    "X-Original-URI": gate_uri(user, device),
                },
            )
            api = client.get(
                f"/v1/decisions/eas_device_id:{device}/email",
                headers={"Authorization": f"Bearer {fleet.token}"},
            )
            decision = api.json().get("decision") if api.status_code == 200 else None
            expected_status = {"allow": 200, "deny": 403}.get(str(decision))
            counts[str(decision)] = counts.get(str(decision), 0) + 1
            if gate.status_code != expected_status:
                mismatches.append(
                    {"device": device, "gate": gate.status_code, "api": decision or api.status_code}
                )
            if user.startswith("bench"):
                synthetic = "deny" if has_tiktok(int(user.removeprefix("bench"))) else "allow"
                expected_mismatch += synthetic != decision
    return {
        "sample": len(sample),
        "decisions": counts,
        "mismatches": mismatches,
        "synthetic_expectation_mismatches": expected_mismatch,
        "at": BENCH_AT,
        "pass": not mismatches and expected_mismatch == 0,
    }


def _diagnostics(fleet: Fleet, url: str, plain: Path, params: Params) -> dict[str, Any]:
    """Not held to a bar; they say where the gate's time goes. One wrk run each:
    - /healthz: a sync route through appwarden's middleware and the thread pool, no store;
    - the gate with `User=<email>` instead of the bare account name (an exact lookup of the
      person instead of `LIKE 'name@%'`);
    - the gate without `User=` (no person lookup, no owner check)."""
    seconds = max(2, params.wrk_seconds // 2)
    email = write_gate_script(
        [(u if "@" in u else f"{u}@{_domain(u)}", d) for u, d in fleet.phones],
        fleet.workdir / "gate-email.lua",
    )
    no_user = write_gate_script(fleet.phones, fleet.workdir / "gate-no-user.lua", with_user=False)
    out: dict[str, Any] = {"seconds": seconds}
    out["healthz_rps"] = run_wrk(url, plain, seconds, params, path="/healthz")["rps"]
    out["gate_email_user_rps"] = run_wrk(url, email, seconds, params, path=GATE_PATH)["rps"]
    out["gate_without_user_rps"] = run_wrk(url, no_user, seconds, params, path=GATE_PATH)["rps"]
    return out


def _domain(user: str) -> str:
    return "bench.example.com" if user.startswith("bench") else "example.com"


def _bar(bar: str, value: Any, passed: bool) -> dict[str, Any]:
    return {"bar": bar, "value": value, "pass": passed}


# ── the workload ──────────────────────────────────────────────────────────────────────────────


def run(fleet: Fleet, params: Params, note: Progress) -> dict[str, Any]:
    gate_script, constant_script = write_wrk_scripts(fleet.phones, fleet.workdir)
    log = fleet.workdir / "w2-server.log"
    env = fleet.server_env(f"fixed:{BENCH_AT}")
    with running(env, log, core=params.server_core, access_log=params.access_log) as server:
        note("W2: checking the gate against the API on a sample")
        sample = check_sample(fleet, server.url)
        note("W2: warming up")
        for script, path in ((constant_script, CONSTANT_PATH), (gate_script, GATE_PATH)):
            run_wrk(server.url, script, params.warmup_seconds, params, path=path)
        rounds: list[dict[str, Any]] = []
        for n in range(params.wrk_rounds):
            note(f"W2: wrk round {n + 1}/{params.wrk_rounds}: constant")
            constant = run_wrk(
                server.url, constant_script, params.wrk_seconds, params, path=CONSTANT_PATH
            )
            note(f"W2: wrk round {n + 1}/{params.wrk_rounds}: gate")
            gate = run_wrk(server.url, gate_script, params.wrk_seconds, params, path=GATE_PATH)
            ratio_of_round = gate["rps"] / constant["rps"] if constant["rps"] else 0.0
            rounds.append({"constant": constant, "gate": gate, "ratio": round(ratio_of_round, 3)})
        constant_max = max(r["constant"]["rps"] for r in rounds)
        gate_max = max(r["gate"]["rps"] for r in rounds)
        ratio = gate_max / constant_max if constant_max else 0.0
        rate = gate_max / 2
        gate_requests, constant_requests = (
            [
                raw_request(
                    path, {"X-Appwarden-Proxy-Key": PROXY_KEY, "X-Original-URI": gate_uri(u, d)}
                )
                for u, d in fleet.phones
            ]
            for path in (GATE_PATH, CONSTANT_PATH)
        )
        note(f"W2: open loop at {rate:.0f}/s: gate")
        gate_open = _open_loop_in_child(
            server.port,
            gate_requests,
            rate,
            params.open_loop_seconds,
            params.client_core,
            fleet.workdir / "open-gate.json",
        )
        note(f"W2: open loop at {rate:.0f}/s: constant")
        constant_open = _open_loop_in_child(
            server.port,
            constant_requests,
            rate,
            params.open_loop_seconds,
            params.client_core,
            fleet.workdir / "open-constant.json",
        )
        note("W2: diagnostics (framework floor, email-form users)")
        plain = write_plain_script(fleet.workdir / "plain.lua")
        diagnostics = _diagnostics(fleet, server.url, plain, params)
    p99 = gate_open["latency_from_scheduled_start"]["p99_ms"]
    open_ok = gate_open["failed"] == 0 and gate_open["completed"] == gate_open["scheduled"]
    wrk_ok = all(
        r[k]["errors"]["connect"] + r[k]["errors"]["read"] + r[k]["errors"]["timeout"] == 0
        and r[k].get("sother", 0) == 0
        for r in rounds
        for k in ("constant", "gate")
    )
    bars = {
        "throughput_ratio": _bar(f">= {BAR_RATIO}", round(ratio, 3), ratio >= BAR_RATIO),
        "gate_p99_at_half_max": _bar(f"<= {BAR_P99_MS} ms", p99, p99 <= BAR_P99_MS and open_ok),
        "sample_matches_api": _bar("identical", len(sample["mismatches"]), sample["pass"]),
        "no_errors": _bar("no socket errors or unexpected statuses", wrk_ok, wrk_ok),
    }
    return {
        "workload": "W2",
        "what": "HTTP gate decision vs a constant-response endpoint on the same server",
        "baseline": f"{CONSTANT_PATH} on the same uvicorn process (no appwarden middleware)",
        "parameters": {
            **params.__dict__,
            "phones_rotated": len(fleet.phones),
            "clock": f"fixed:{BENCH_AT}",
            "server": "uvicorn, 1 worker, bench.server_app:build (create_app, no embedded worker)",
        },
        "max_rps": {"constant": constant_max, "gate": gate_max},
        "ratio": round(ratio, 3),
        "wrk_rounds": rounds,
        "open_loop": {"rate_per_s": round(rate, 1), "gate": gate_open, "constant": constant_open},
        "sample": sample,
        "diagnostics": diagnostics,
        "bars": bars,
        "pass": all(b["pass"] for b in bars.values()),
    }


def _child(argv: list[str]) -> None:
    payload = json.loads(Path(argv[0]).read_text())
    result = open_loop(
        payload["port"],
        [r.encode() for r in payload["requests"]],
        payload["rate"],
        payload["seconds"],
    )
    Path(argv[1]).write_text(json.dumps(result))


if __name__ == "__main__":
    import sys

    _child(sys.argv[1:])
