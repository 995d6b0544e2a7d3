"""W6: an inventory report flips the gate's answer. Absolute bars (no baseline in the same run;
published: Intune ~8 h check-in, Fleet 1 h policy interval).

Two server processes (A and B) share the store, with a file clock after the deadline. For each of
M devices that are denied (TikTok seen before the release), the device's clean inventory is POSTed
to A's `/v1/inventory`; then

- read-your-writes: the very next `/gate/forward` on A must answer 200 (every miss is a failure);
- another process: B's `/gate/forward` is polled every 10 ms from the moment the POST returned
  until it answers 200 (at most 5 s); that delay is held to p99 <= 1 s.

A device cleaned once cannot be denied again at the same clock (TikTok seen after the release
gets its grace period), so each iteration uses a fresh denied device.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from bench.fleet import (
    BENCH_AT,
    CLEAN_AT,
    PROXY_KEY,
    Fleet,
    device_entry,
    eas_id_of,
    gate_uri,
    has_tiktok,
    inventory_document,
    user_of,
)
from bench.server_app import running
from bench.w2_gate import GATE_PATH, latency_summary

BAR_OTHER_P99_MS = 1000.0
POLL_S = 0.010
POLL_LIMIT_S = 5.0

Note = Callable[[str], None]
Advance = Callable[[int], None]


@dataclass(frozen=True)
class Params:
    iterations: int
    extra_devices: int
    server_core: int = 0
    access_log: bool = True

    @classmethod
    def of(cls, *, quick: bool, access_log: bool = True) -> Params:
        return (
            cls(30, 1_000, access_log=access_log)
            if quick
            else cls(200, 10_000, access_log=access_log)
        )


def _gate(client: httpx.Client, url: str, i: int) -> int:
    headers = {
        "X-Appwarden-Proxy-Key": PROXY_KEY,
        "X-Original-URI": gate_uri(user_of(i), eas_id_of(i)),
    }
    return client.get(f"{url}{GATE_PATH}", headers=headers).status_code


def _first_allowed(
    client: httpx.Client, url: str, i: int, since: float
) -> tuple[float | None, int]:
    """(Seconds from `since` until `url` answers 200 for device i, polls made), polling every
    POLL_S; None after POLL_LIMIT_S."""
    tick = 0
    while True:
        if _gate(client, url, i) == 200:
            return time.perf_counter() - since, tick + 1
        tick += 1
        next_poll = since + tick * POLL_S
        if next_poll - since > POLL_LIMIT_S:
            return None, tick
        pause = next_poll - time.perf_counter()
        if pause > 0:
            time.sleep(pause)


def run(fleet: Fleet, params: Params, note: Note, advance: Advance) -> dict[str, Any]:
    clock = fleet.workdir / "clock"
    clock.write_text(BENCH_AT)
    env = fleet.server_env(f"file:{clock}")
    denied = [i for i in range(fleet.extra) if has_tiktok(i)][: params.iterations]
    if len(denied) < params.iterations:
        raise SystemExit(
            f"bench: W6 needs {params.iterations} denied devices; the fleet has {len(denied)}"
        )
    auth = {"Authorization": f"Bearer {fleet.token}", "Content-Type": "application/json"}
    post_s: list[float] = []
    same_s: list[float] = []
    other_s: list[float] = []
    same_failures: list[dict[str, Any]] = []
    other_timeouts = 0
    not_denied_before = 0
    polls_needed: dict[int, int] = {}
    post_failures: list[dict[str, Any]] = []
    a_log, b_log = fleet.workdir / "w6-a.log", fleet.workdir / "w6-b.log"
    with (
        running(env, a_log, core=params.server_core, access_log=params.access_log) as a,
        running(env, b_log, core=params.server_core, access_log=params.access_log) as b,
        httpx.Client(timeout=10) as client,
    ):
        note(f"W6: {len(denied)} devices, server A :{a.port}, server B :{b.port}")
        for i in denied:
            advance(1)
            if _gate(client, a.url, i) != 403 or _gate(client, b.url, i) != 403:
                not_denied_before += 1
                continue
            body = orjson.dumps(
                inventory_document(
                    [device_entry(i, tiktok=False, observed_at=CLEAN_AT, with_facts=False)]
                )
            )
            sent = time.perf_counter()
            posted = client.post(f"{a.url}/v1/inventory", content=body, headers=auth)
            returned = time.perf_counter()
            if posted.status_code != 200 or posted.json().get("decision_changes") != 1:
                post_failures.append(
                    {"device": i, "status": posted.status_code, "body": posted.text[:300]}
                )
                continue
            post_s.append(returned - sent)
            status = _gate(client, a.url, i)
            if status == 200:
                same_s.append(time.perf_counter() - returned)
            else:
                same_failures.append({"device": i, "status": status})
            flipped, polls = _first_allowed(client, b.url, i, returned)
            polls_needed[polls] = polls_needed.get(polls, 0) + 1
            if flipped is None:
                other_timeouts += 1
            else:
                other_s.append(flipped)
    measured = len(post_s)
    same = latency_summary(same_s)
    other = latency_summary(other_s)
    other_p99 = other["p99_ms"] if other_s else float("inf")
    # Timeouts count as slower than any measured flip: the p99 must cover them too.
    other_ok = other_timeouts <= measured // 100 and other_p99 <= BAR_OTHER_P99_MS
    bars: dict[str, dict[str, Any]] = {
        "same_process_read_your_writes": {
            "bar": "0 failures",
            "value": len(same_failures),
            "pass": not same_failures and measured == params.iterations,
        },
        "other_process_p99": {
            "bar": f"<= {BAR_OTHER_P99_MS:.0f} ms",
            "value": other_p99,
            "pass": other_ok,
        },
    }
    return {
        "workload": "W6",
        "what": "inventory report -> gate answer flips (deny to allow)",
        "baseline": "none in the same run "
        "(published: Intune ~8 h check-in, Fleet 1 h policy interval)",
        "parameters": {
            **params.__dict__,
            "devices_used": len(denied),
            "clock": f"file: {BENCH_AT}",
            "poll_interval_ms": POLL_S * 1000,
            "poll_limit_s": POLL_LIMIT_S,
            "servers": "two uvicorn processes (1 worker each), same store",
        },
        "measured": measured,
        "not_denied_before": not_denied_before,
        "post_failures": post_failures,
        "post_inventory_latency": latency_summary(post_s),
        "same_process": {
            "what": "POST returned -> the next /gate/forward on the same server answered 200",
            "failures": same_failures,
            "latency": same,
        },
        "other_process": {
            "what": "POST returned on A -> B's /gate/forward first answered 200 "
            "(polled every 10 ms)",
            "timeouts": other_timeouts,
            "polls_until_allowed": {str(k): v for k, v in sorted(polls_needed.items())},
            "latency": other,
        },
        "bars": bars,
        "pass": all(x["pass"] for x in bars.values())
        and not post_failures
        and not not_denied_before,
    }
