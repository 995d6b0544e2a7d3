"""Run the HTTP benchmarks of docs/architecture.md ("Performance bars") and record them.

    python -m bench.run [--workload W2|W4|W5|W6|EVAL|DELIVERY|CLI|all] [--quick] [--db URL]
                        [--no-access-log]

Each run builds its own fleet in a scratch store (a SQLite file in a temporary directory, or a
scratch database on the PostgreSQL server `--db` names), runs the workloads against uvicorn
processes pinned to core 0 with the load generators on core 1, writes
`bench/results/<workload>[-postgresql][-quick].json` and regenerates the tables of README.md and
bench/README.md from every results file (`bench.report`).
A progress bar is shown on a terminal; piped, only the summary is printed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
PACKAGES = (
    "appwarden",
    "fastapi",
    "starlette",
    "uvicorn",
    "h11",
    "httptools",
    "uvloop",
    "sqlalchemy",
    "psycopg",
    "anyio",
)

stderr = Console(stderr=True, highlight=False)
stdout = Console(highlight=False)


class Reporter:
    """A rich progress bar on a terminal, nothing when stderr is piped."""

    def __init__(self) -> None:
        self.bar: Progress | None = None
        self.task: Any = None

    @contextmanager
    def session(self) -> Iterator[Reporter]:
        if not stderr.is_terminal:
            yield self
            return
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=stderr,
            transient=True,
        ) as bar:
            self.bar = bar
            try:
                yield self
            finally:
                self.bar = None

    def phase(self, description: str, total: int | None = None) -> None:
        if self.bar is None:
            return
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.task = self.bar.add_task(description, total=total)

    def note(self, description: str) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, description=description)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.advance(self.task, n)


# ── machine information ───────────────────────────────────────────────────────────────────────


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _command(args: list[str]) -> str | None:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout or done.stderr).strip() or None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine(store_version: str) -> dict[str, Any]:
    root = BENCH.parent
    commit = _command(["git", "-C", str(root), "rev-parse", "HEAD"])
    dirty = _command(["git", "-C", str(root), "status", "--porcelain", "--", "src"])
    wrk = _command(["wrk", "--version"])
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "store": store_version,
        "packages": {p: _version(p) for p in PACKAGES},
        "uvicorn_loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "uvicorn_http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "wrk": wrk.splitlines()[0] if wrk else None,
        "git_commit": commit,
        "src_modified": bool(dirty),
        "loadavg_at_start": _loadavg(),
    }


# ── results ───────────────────────────────────────────────────────────────────────────────────


def result_name(workload: str, backend: str, quick: bool) -> str:
    suffix = ("-postgresql" if backend == "postgresql" else "") + ("-quick" if quick else "")
    return f"{workload.lower()}{suffix}.json"


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    return path


# ── the run ───────────────────────────────────────────────────────────────────────────────────


def _finish(
    result: dict[str, Any], info: dict[str, Any], quick: bool, started: datetime
) -> dict[str, Any]:
    return {
        "workload": result["workload"],
        "quick": quick,
        "started_at": started.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "machine": {**info, "loadavg_at_end": _loadavg()},
        **result,
    }


Written = tuple[str, dict[str, Any]]


def _w5_workload(args: argparse.Namespace, reporter: Reporter, started: datetime) -> Written:
    """W5 builds its own scratch stores: no served fleet."""
    from bench import w5_ingest

    params = w5_ingest.Params.of(quick=args.quick, sizes=args.w5_phones)
    reporter.phase("W5: ingest, fresh and re-import", total=sum(params.sizes))
    result = w5_ingest.run(args.db, params, reporter.note, reporter.advance)
    info = machine(result["parameters"]["store"])
    name = result_name("W5", result["parameters"]["backend"], args.quick)
    if args.w5_phones:  # a run of some sizes only keeps the results of the others
        name = name.replace(".json", "".join(f"-{n // 1000}k" for n in params.sizes) + ".json")
    written = (name, _finish(result, info, args.quick, started))
    write_result(*written)
    return written


def _delivery_workload(args: argparse.Namespace, reporter: Reporter, started: datetime) -> Written:
    """DELIVERY builds its own scratch store and SMTP servers: no served fleet."""
    from bench import delivery

    params = delivery.Params.of(quick=args.quick)
    reporter.phase(
        "DELIVERY: announcements to a local SMTP server", total=2 + len(params.diagnostic_batches)
    )
    result = delivery.run(args.db, params, reporter.note, reporter.advance)
    info = machine(result["parameters"]["store"])
    name = result_name("DELIVERY", result["parameters"]["backend"], args.quick)
    written = (name, _finish(result, info, args.quick, started))
    write_result(*written)
    return written


def _cli_workload(args: argparse.Namespace, reporter: Reporter, started: datetime) -> Written:
    """CLI builds its own demo database and times new processes: no served fleet."""
    from bench import cli_start

    if args.db is not None:
        stderr.print("bench: CLI runs on its own SQLite demo database; --db is ignored")
    params = cli_start.Params.of(quick=args.quick)
    reporter.phase("CLI: start-up of appwarden --help and decide", total=params.runs)
    result = cli_start.run(params, reporter.note, reporter.advance)
    info = machine(result["parameters"]["store"])
    name = result_name("CLI", "sqlite", args.quick)
    written = (name, _finish(result, info, args.quick, started))
    write_result(*written)
    return written


def _eval_workload(args: argparse.Namespace, reporter: Reporter, started: datetime) -> Written:
    """EVAL builds a scratch store on each backend: no served fleet."""
    from bench import eval_after_import

    params = eval_after_import.Params.of(quick=args.quick)
    reporter.phase("EVAL: the full evaluation after an import", total=2 * params.phones)
    result = eval_after_import.run(args.db, params, reporter.note, reporter.advance)
    info = machine(result["parameters"]["store"])
    name = result_name("EVAL", "postgresql", args.quick)
    written = (name, _finish(result, info, args.quick, started))
    write_result(*written)
    return written


def _fleet_workloads(
    args: argparse.Namespace, workloads: list[str], reporter: Reporter, started: datetime
) -> list[Written]:
    """W2, W6 and W4 on one prepared fleet, served by uvicorn processes."""
    from bench import fleet as fleets
    from bench import w2_gate, w4_ingest, w6_flip

    access_log = not args.no_access_log
    w2_params = w2_gate.Params.of(quick=args.quick, access_log=access_log)
    w6_params = w6_flip.Params.of(quick=args.quick, access_log=access_log)
    w4_params = w4_ingest.Params.of(quick=args.quick)
    extra = max(
        w2_params.extra_devices if "W2" in workloads else 0,
        w6_params.extra_devices if "W6" in workloads else 0,
        w4_params.extra_devices if "W4" in workloads else 0,
    )
    written: list[Written] = []
    reporter.phase(f"building the fleet: demo + {extra:,} devices", total=extra)
    with fleets.prepared_fleet(args.db, extra, advance=reporter.advance) as fleet:
        info = machine(fleet.store_version)
        info["fleet"] = {
            "extra_devices": fleet.extra,
            "phones_reaching_mail": len(fleet.phones),
            "seconds_to_build": round(fleet.seconds_to_build, 1),
            "backend": fleet.backend,
        }
        runs: dict[str, tuple[str, Callable[[], dict[str, Any]], int | None]] = {
            "W2": ("W2", lambda: w2_gate.run(fleet, w2_params, reporter.note), None),
            "W6": (
                "W6: report -> flip",
                lambda: w6_flip.run(fleet, w6_params, reporter.note, reporter.advance),
                w6_params.iterations,
            ),
            "W4": (
                "W4: one report -> commit",
                lambda: w4_ingest.run(fleet, w4_params, reporter.note, reporter.advance),
                w4_params.iterations,
            ),
        }
        for workload in ("W2", "W6", "W4"):
            if workload not in workloads:
                continue
            phase, measure, total = runs[workload]
            reporter.phase(phase, total=total)
            result = measure()
            name = result_name(workload, fleet.backend, args.quick)
            written.append((name, _finish(result, info, args.quick, started)))
            write_result(*written[-1])
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--workload",
        choices=["W2", "W4", "W6", "W5", "EVAL", "DELIVERY", "CLI", "ALL"],
        default="ALL",
        type=str.upper,
    )
    parser.add_argument("--quick", action="store_true", help="1,000 extra devices, short runs")
    parser.add_argument("--db", default=None, help="sqlite:///NEW_FILE or a PostgreSQL server URL")
    parser.add_argument(
        "--w5-phones",
        type=lambda text: tuple(int(n.replace("_", "")) for n in text.split(",")),
        default=None,
        metavar="N[,N]",
        help="W5's fleet sizes (default: 20,000 and 100,000; --quick: 500)",
    )
    parser.add_argument(
        "--no-access-log",
        action="store_true",
        help="servers without appwarden's JSON access log (on by default, as `appwarden serve`)",
    )
    parser.add_argument(
        "--no-readme",
        action="store_true",
        help="do not regenerate the tables of README.md and bench/README.md",
    )
    args = parser.parse_args(argv)
    workloads = (
        ["W2", "W6", "W4", "W5", "DELIVERY", "CLI"] if args.workload == "ALL" else [args.workload]
    )
    if args.workload == "ALL" and args.db is not None and args.db.startswith("postgres"):
        workloads.append("EVAL")  # it compares with SQLite: only where a server is named
    if "W2" in workloads and shutil.which("wrk") is None:
        stderr.print("bench: W2 needs wrk (apt-get install -y wrk)")
        return 2
    if (os.cpu_count() or 1) < 2:
        stderr.print("bench: warning: one core; server and load generator will share it")

    from bench import report

    reporter = Reporter()
    written: list[tuple[str, dict[str, Any]]] = []
    started = datetime.now(UTC)
    with reporter.session():
        if "W5" in workloads:
            written.append(_w5_workload(args, reporter, started))
        if "DELIVERY" in workloads:
            written.append(_delivery_workload(args, reporter, started))
        if "CLI" in workloads:
            written.append(_cli_workload(args, reporter, started))
        if "EVAL" in workloads:
            written.append(_eval_workload(args, reporter, started))
        served = [w for w in workloads if w not in ("W5", "EVAL", "DELIVERY", "CLI")]
        if served:
            written += _fleet_workloads(args, served, reporter, started)
    if not args.no_readme:
        report.refresh()
    for name, result in written:
        for row in report.detail_rows(report.Result(name, result)):
            stdout.print(row, markup=False, soft_wrap=True)
    return 0 if all(r["pass"] for _, r in written) else 1


if __name__ == "__main__":
    sys.exit(main())
