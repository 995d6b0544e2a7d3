"""W4: one device's inventory changes, from the ingest call to the committed decision.

In this process, on the prepared fleet, after the deadline (the fleet's clock): for each of N
phones still denied for TikTok (taken from the end of the fleet, so W6's are not touched), its
clean native-format report goes through what `POST /v1/inventory` and `appwarden import native`
run: `parse_native`, then `ingest` in a unit of work of `wiring.Services` (the event reactions and
audit chaining included), until the commit returns. Each is timed; afterwards every one of them
must read `allow` from the store (the committed decision). **Bar: p99 ≤ 10 ms.**

The baseline is a full evaluation of the same fleet at the same instant: every effective policy
version over every device, set-based in SQL as `appwarden status` does it (`fleet_rows`). The
ratio says how much cheaper the incremental path is than re-evaluating everything for one report.

The first calls warm caches (catalog, templates, SQLAlchemy's compiled statements) and are not
counted; then, as a server process does after loading its gate copy, `gc.freeze()` keeps the
collector's full passes from walking every long-lived object (they showed as 35–45 ms stalls).
The engine is the server's: WAL checkpoints in a background thread (`db.engine.Checkpointer`),
not in whichever commit crosses 1,000 pages.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from bench.fleet import (
    BENCH_AT,
    CLEAN_AT,
    Fleet,
    device_entry,
    eas_id_of,
    has_tiktok,
    inventory_document,
)
from bench.w2_gate import latency_summary

if TYPE_CHECKING:
    from datetime import datetime

    from appwarden.usecases.ingest import IngestResult
    from appwarden.wiring import Services

BAR_P99_MS = 10.0
WARM_UP = 5

Note = Callable[[str], None]
Advance = Callable[[int], None]


@dataclass(frozen=True)
class Params:
    iterations: int
    extra_devices: int
    core: int | None = 0

    @classmethod
    def of(cls, *, quick: bool) -> Params:
        return cls(60, 1_000) if quick else cls(400, 10_000)


def run(fleet: Fleet, params: Params, note: Note, advance: Advance) -> dict[str, Any]:
    from sqlalchemy import select

    from appwarden.access.models import DecisionRecord
    from appwarden.compliance.fleet import fleet_rows
    from appwarden.compliance.rules import rules_of
    from appwarden.db.engine import Checkpointer, make_engine
    from appwarden.devices.models import DeviceIdentifier
    from appwarden.policies.service import effective_versions
    from appwarden.settings import Settings
    from appwarden.timeutil import parse_instant
    from appwarden.wiring import Services

    phones = [i for i in reversed(range(fleet.extra)) if has_tiktok(i)]
    needed = params.iterations + WARM_UP
    if len(phones) < needed:
        raise SystemExit(f"bench: W4 needs {needed} denied phones; the fleet has {len(phones)}")
    phones = phones[:needed]
    pinned = _pin(params.core)
    engine = make_engine(fleet.url, background_checkpoints=True)  # as `appwarden serve`
    checkpointer = Checkpointer(engine)
    checkpointer.start()
    services = Services(Settings(database_url=fleet.url, maildir=fleet.workdir / "mail"), engine)
    at = parse_instant(BENCH_AT)
    times: list[float] = []
    try:
        for n, i in enumerate(phones):
            if n == WARM_UP:
                gc.collect()
                gc.freeze()
            report = clean_report(i)
            started = time.perf_counter()
            result = apply_report(services, at, report, f"w4-{i}")
            elapsed = time.perf_counter() - started
            if result.reports_applied != 1:
                raise SystemExit(f"bench: W4 report for phone {i} was not applied: {result}")
            if n >= WARM_UP:
                times.append(elapsed)
                advance(1)
        note("W4: reading the committed decisions")
        with services.uow(at, write=False) as uow:
            wrong = []
            for i in phones:
                device_id = uow.session.scalar(
                    select(DeviceIdentifier.device_id).where(
                        DeviceIdentifier.namespace == "eas_device_id",
                        DeviceIdentifier.value == eas_id_of(i),
                    )
                )
                record = uow.session.get(DecisionRecord, (device_id, "email"))
                if record is None or record.decision != "allow":
                    wrong.append(i)
        note("W4: the baseline, a full evaluation of the fleet")
        full: list[float] = []
        for _ in range(3):
            started = time.perf_counter()
            with services.uow(at, write=False) as uow:
                evaluated = sum(
                    len(fleet_rows(uow, rules_of(uow, version), now=uow.now))
                    for version in effective_versions(uow, uow.now)
                )
            full.append(time.perf_counter() - started)
    finally:
        gc.unfreeze()
        checkpointer.stop()
        engine.dispose()
        _unpin(pinned)
    latency = latency_summary(times)
    full_s = min(full)
    p99 = float(latency["p99_ms"])
    bars = {
        "p99": {"bar": f"<= {BAR_P99_MS} ms", "value": p99, "pass": p99 <= BAR_P99_MS},
        "committed": {"bar": "every report's decision is allow", "value": len(wrong),
                      "pass": not wrong},
    }  # fmt: skip
    return {
        "workload": "W4",
        "what": "one device's inventory report: ingest call to committed decision, in-process",
        "baseline": "a full evaluation of the fleet (fleet_rows for every effective version)",
        "parameters": {
            "iterations": params.iterations,
            "warm_up": WARM_UP,
            "core": params.core,
            "clock": BENCH_AT,
            "observed_at": CLEAN_AT,
        },
        "measured": len(times),
        "latency": latency,
        "full_evaluation": {
            "seconds_best_of_3": round(full_s, 3),
            "rows": evaluated,
            "times_the_p50": round(full_s / (float(latency["p50_ms"]) / 1000), 1),
        },
        "not_allowed_after": wrong,
        "bars": bars,
        "pass": all(b["pass"] for b in bars.values()),
    }


def clean_report(i: int) -> bytes:
    """Phone i's report without TikTok, as its MDM sends it."""
    entry = device_entry(i, tiktok=False, observed_at=CLEAN_AT, with_facts=False)
    return orjson.dumps(inventory_document([entry]))


def apply_report(services: Services, at: datetime, report: bytes, label: str) -> IngestResult:
    """What `POST /v1/inventory` runs for one report, until its commit returns."""
    from appwarden.sources.native import parse_native
    from appwarden.usecases.ingest import ingest

    parsed = parse_native(report, label, strict=True)
    with services.uow(at) as uow:
        return ingest(uow, parsed)


def _pin(core: int | None) -> set[int] | None:
    """Run on `core` (as the servers of W2 and W6 do) when the machine has it."""
    if core is None or core >= (os.cpu_count() or 1) or not hasattr(os, "sched_setaffinity"):
        return None
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    return before


def _unpin(before: set[int] | None) -> None:
    if before is not None:
        os.sched_setaffinity(0, before)
