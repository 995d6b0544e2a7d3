"""CLI: how long `appwarden` takes to start, against importing SQLAlchemy's ORM in the same run.

In a scratch SQLite store holding the reference organisation (`appwarden demo`), each command
runs as a new process (`python -m appwarden`, the interpreter and environment of this run), 11
times (quick: 5), interleaved, and the median wall time of each is kept:

- `python -c "import sqlalchemy.orm"`: the baseline. A command that reads the store cannot start
  faster than the ORM it reads with.
- `appwarden --help`: **bar ≤ 0.3 s** (absolute).
- `appwarden decide udid:00008110-000A1B2C3D4E801E email --at …` on the demo database:
  **bar ≤ 1.5 × the baseline**.
- a diagnostic, no bar: `python -c "import typer, typer._adapters, pydantic_settings,
  sqlalchemy.orm"`, the libraries any command that reads the store loads before appwarden's
  own code runs (Typer converts parameters with pydantic; the settings are a pydantic-settings
  model). `decide` over it is what appwarden itself costs.

The processes run as an installed command runs: with bytecode caches (the untimed first run
writes them if `PYTHONDONTWRITEBYTECODE` kept them from being written before; it is removed
from the commands' environment).

Findings come from one `python -X importtime` run of each command: the top-level imports that
cost the most (cumulative microseconds, as the interpreter reports them), recorded in the results
file; bench/README.md says what was deferred because of them.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.fleet import BASE_TIME, _environment, store_version

Note = Callable[[str], None]
Advance = Callable[[int], None]

DEVICE = "udid:00008110-000A1B2C3D4E801E"  # alice's iPhone: denied after the deadline
DECIDE_AT = "2020-07-11T19:00:00Z"
HELP_BAR_SECONDS = 0.3
DECIDE_BAR_RATIO = 1.5
TOP_IMPORTS = 12
LIBRARIES = "import typer, typer._adapters, pydantic_settings, sqlalchemy.orm"


@dataclass(frozen=True)
class Params:
    runs: int

    @classmethod
    def of(cls, *, quick: bool) -> Params:
        return cls(runs=5 if quick else 11)


def _commands(url: str) -> dict[str, list[str]]:
    appwarden = [sys.executable, "-m", "appwarden", "--db", url]
    return {
        "import_sqlalchemy_orm": [sys.executable, "-c", "import sqlalchemy.orm"],
        "libraries": [sys.executable, "-c", LIBRARIES],
        "help": [sys.executable, "-m", "appwarden", "--help"],
        "decide": [*appwarden, "decide", DEVICE, "email", "--at", DECIDE_AT],
    }


def _timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, check=False)  # noqa: S603
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"bench: {' '.join(command[2:])} failed: {done.stderr.decode()[-2000:]}")
    return seconds


def top_imports(stderr: str, count: int = TOP_IMPORTS) -> list[dict[str, Any]]:
    """The top-level imports (not indented in `-X importtime`'s tree) by cumulative time."""
    rows: list[tuple[int, str]] = []
    for line in stderr.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2][1:]  # one space follows the bar; more mean a nested import
        if name.startswith(" "):
            continue
        rows.append((int(parts[1]), name))
    rows.sort(reverse=True)
    return [{"module": name, "cumulative_ms": round(us / 1000, 1)} for us, name in rows[:count]]


def _importtime(command: list[str], env: dict[str, str]) -> list[dict[str, Any]]:
    done = subprocess.run(  # noqa: S603
        [command[0], "-X", "importtime", *command[1:]], env=env, capture_output=True, check=False
    )
    return top_imports(done.stderr.decode())


def run(params: Params, note: Note, advance: Advance) -> dict[str, Any]:
    import os

    from bench.fleet import run_cli

    with tempfile.TemporaryDirectory(prefix="appwarden-cli-") as tmp:
        workdir = Path(tmp)
        url = f"sqlite:///{workdir / 'demo.db'}"
        note("loading the reference organisation")
        with _environment({"APPWARDEN_ENV": "test"}):
            run_cli(url, workdir, "demo", "--base-time", BASE_TIME)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("APPWARDEN_") and k != "PYTHONDONTWRITEBYTECODE"
        }
        env["APPWARDEN_MAILDIR"] = str(workdir / "mail")
        commands = _commands(url)
        seconds: dict[str, list[float]] = {name: [] for name in commands}
        for command in commands.values():  # warm the file cache: not timed
            _timed(command, env)
        for i in range(params.runs):
            note(f"run {i + 1} of {params.runs}")
            for name, command in commands.items():
                seconds[name].append(_timed(command, env))
            advance(1)
        note("python -X importtime")
        findings = {name: _importtime(command, env) for name, command in commands.items()}
        version = store_version(url)
    return _result(params, version, seconds, findings)


def _result(
    params: Params,
    version: str,
    seconds: dict[str, list[float]],
    findings: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    median = {name: statistics.median(values) for name, values in seconds.items()}
    baseline = median["import_sqlalchemy_orm"]
    help_s, decide_s = median["help"], median["decide"]
    ratio = decide_s / baseline
    return {
        "workload": "CLI",
        "what": "`appwarden --help` and `appwarden decide DEVICE email` on the demo database, "
        "each a new process",
        "baseline": '`python -c "import sqlalchemy.orm"` in the same run',
        "parameters": {"runs": params.runs, "backend": "sqlite", "store": version},
        "measured": {
            "median_seconds": {name: round(value, 4) for name, value in median.items()},
            "all_seconds": {
                name: [round(v, 4) for v in values] for name, values in seconds.items()
            },
            "decide_over_baseline": round(ratio, 3),
            "libraries_over_baseline": round(median["libraries"] / baseline, 3),
            "decide_over_libraries": round(decide_s / median["libraries"], 3),
        },
        "importtime_top": findings,
        "bars": {
            "help_seconds": {
                "bar": f"<= {HELP_BAR_SECONDS} s",
                "value": round(help_s, 3),
                "pass": help_s <= HELP_BAR_SECONDS,
            },
            "decide_ratio": {
                "bar": f"<= {DECIDE_BAR_RATIO}x import sqlalchemy.orm",
                "value": round(ratio, 3),
                "pass": ratio <= DECIDE_BAR_RATIO,
            },
        },
        "pass": help_s <= HELP_BAR_SECONDS and ratio <= DECIDE_BAR_RATIO,
    }
