"""Where a unit of work's time goes: the diagnostic behind bench/README.md's findings on W5 and W4.

    python -m bench.profile W5 [--phones 5000] [--reimport] [--db URL]  # a page at a time
    python -m bench.profile W4 [--db URL]                    # one report, statement by statement

No bar and no results file: it prints, for the one reading it, what a change to the bulk path
(W5) or the one-report path (W4) should look at. `--db` as `bench.run`'s (a scratch database on
that PostgreSQL server, or a new SQLite file by default).

- **W5**: the fresh load of `bench.w5_ingest` (pages of 1,000 phones, each its own unit of work),
  or with `--reimport` its re-import a day later (the fresh load first, unprofiled).
  For each page: its wall time, the time its statements took (from SQLAlchemy's cursor events,
  driver work included), when its background observation writes ran (PostgreSQL) and when the
  evaluation beside them ended (what is left of the window the page waits for). Then,
  averaged over the pages after the first (which opens the memo's breaker), the time spent in
  each phase of the bulk path (`PHASES`: the functions are wrapped by name, so a renamed one
  fails here, loudly) and the last page's statements in the order sent.
- **W4**: a small fleet, twenty warm-up reports, then one phone's clean report through what `POST
  /v1/inventory` runs: each statement with its duration and the appwarden function that sent it.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from sqlalchemy import event
from sqlalchemy.engine import Engine

#: The bulk path's phases: (module, attribute), a class's method as "Class.method".
PHASES: tuple[tuple[str, str], ...] = (
    ("appwarden.devices.bulk", "DeviceResolver.prepare"),
    ("appwarden.devices.bulk", "DeviceResolver.flush"),
    ("appwarden.devices.bulk", "ReportWriter.prepare"),
    ("appwarden.usecases.ingest", "_BatchReports._create_owners"),
    ("appwarden.usecases.ingest", "_BatchReports._facts"),
    ("appwarden.devices.bulk", "ReportWriter.apply"),
    ("appwarden.devices.bulk", "ReportWriter.finish_observations"),
    ("appwarden.devices.bulk", "ReportWriter.write_reports"),
    ("appwarden.compliance.service", "SharedReads.read_ahead"),
    ("appwarden.compliance.service", "SharedReads.prefetch"),
    ("appwarden.compliance.service", "SharedReads.build_views"),
    ("appwarden.access.breaker", "Breakers.prefetch"),
    ("appwarden.usecases.ingest", "_BatchEvaluation.evaluate"),
    ("appwarden.usecases.ingest", "_BatchEvaluation.write"),
    ("appwarden.usecases.ingest", "_BatchEvaluation.publish"),
    ("appwarden.usecases.notices", "announce_entrants"),
    ("appwarden.usecases.ingest", "_BatchReports.apply_in_bulk"),
)
#: Where `devices.bulk` starts the background write (it imported the name).
BACKGROUND = ("appwarden.devices.bulk", "in_background")
#: What this prints (never markup: statements hold brackets).
out = Console(highlight=False, markup=False, soft_wrap=True)
#: Statement text shown per line.
SHOWN = 70


@dataclass
class Statement:
    start: float
    seconds: float
    text: str
    sender: str = ""


@dataclass
class Recorder:
    """Statements, phases and background writes, kept while `on`."""

    on: bool = False
    statements: list[Statement] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    # (began, done, beside): the write's start and end, and when the caller's work beside it
    # ended (before `done`: the caller then waited for the write)
    background: list[tuple[float, float, float]] = field(default_factory=list)
    senders: bool = False  # record which appwarden function sent each statement (slow)
    _started: dict[int, float] = field(default_factory=dict)

    def clear(self) -> None:
        self.statements.clear()
        self.background.clear()

    def listen(self) -> None:
        event.listen(Engine, "before_cursor_execute", self._before)
        event.listen(Engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, _cursor: Any, *_args: Any) -> None:
        self._started[id(conn)] = time.perf_counter()

    def _after(self, conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        ended = time.perf_counter()
        started = self._started.pop(id(conn), ended)
        if self.on:
            text = " ".join(statement.split())[:SHOWN]
            self.statements.append(
                Statement(started, ended - started, text, _sender() if self.senders else "")
            )

    def wrap(self, module: str, attribute: str) -> None:
        owner: Any = importlib.import_module(module)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        original = getattr(owner, name)
        phases = self.phases

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                phases[attribute] += time.perf_counter() - started

        setattr(owner, name, timed)

    def wrap_background(self) -> None:
        module = importlib.import_module(BACKGROUND[0])
        original = getattr(module, BACKGROUND[1])
        windows = self.background

        @contextmanager
        def timed(write: Callable[[], None]) -> Iterator[None]:
            ran: list[float] = []

            def run() -> None:
                ran.append(time.perf_counter())
                write()
                ran.append(time.perf_counter())

            with original(run):
                yield
                beside = time.perf_counter()
            windows.append((ran[0], ran[1], beside))

        setattr(module, BACKGROUND[1], timed)


def _sender() -> str:
    """The two innermost appwarden frames that led to this statement (the frames walked by
    hand: `traceback` would read every source line)."""
    found: list[str] = []
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and len(found) < 2:
        filename = frame.f_code.co_filename
        if "/appwarden/" in filename:
            where = filename.rsplit("/appwarden/", 1)[1]
            found.append(f"{where}:{frame.f_lineno} {frame.f_code.co_name}")
        frame = frame.f_back
    return " < ".join(found)


# ── W5 ────────────────────────────────────────────────────────────────────────────────────────


def profile_w5(db: str | None, phones: int, *, reimport: bool = False) -> None:
    from bench import w5_ingest
    from bench.fleet import BASE_TIME, run_cli, scratch_store

    recorder = Recorder()
    recorder.listen()
    for module, attribute in PHASES:
        recorder.wrap(module, attribute)
    recorder.wrap_background()
    page_seconds: list[float] = []
    phase_totals: dict[str, float] = defaultdict(float)

    @contextmanager
    def around(n: int) -> Iterator[None]:
        recorder.clear()
        recorder.phases.clear()
        recorder.on = True
        started = time.perf_counter()
        yield
        ended = time.perf_counter()
        recorder.on = False
        page_seconds.append(ended - started)
        window = "".join(
            f", background writes {began - started:.3f} .. {done - started:.3f} s "
            f"(the work beside them ended at {beside - started:.3f} s)"
            for began, done, beside in recorder.background
        )
        sql = sum(s.seconds for s in recorder.statements)
        out.print(
            f"page {n}: {ended - started:.3f} s, {len(recorder.statements)} statements taking "
            f"{sql:.3f} s{window}"
        )
        if n > 0:
            for name, seconds in recorder.phases.items():
                phase_totals[name] += seconds
        if n == len(documents) - 1:
            _print_statements(recorder.statements, started)

    with (
        tempfile.TemporaryDirectory(prefix="appwarden-profile-") as tmp,
        scratch_store(db, Path(tmp), tag="_profile") as (url, _backend),
    ):
        workdir = Path(tmp)
        run_cli(url, workdir, "demo", "--base-time", BASE_TIME)
        documents = list(w5_ingest.pages(phones, reimport=False))
        if reimport:  # the fresh load unprofiled, then the re-import a day later
            w5_ingest._bulk(url, workdir, documents, w5_ingest.FRESH_AT)
            documents = list(w5_ingest.pages(phones, reimport=True))
        at = w5_ingest.REIMPORT_AT if reimport else w5_ingest.FRESH_AT
        w5_ingest._bulk(url, workdir, documents, at, around_page=around)
    later = max(1, len(page_seconds) - 1)
    out.print(f"\nper page after the first ({later}), averaged:")
    out.print(f"  {'wall':40s} {sum(page_seconds[1:]) / later:7.3f} s")
    for name, seconds in sorted(phase_totals.items(), key=lambda item: -item[1]):
        out.print(f"  {name:40s} {seconds / later:7.3f} s")


def _print_statements(statements: list[Statement], started: float) -> None:
    out.print("  its statements (first sent at, count, seconds in all):")
    grouped: dict[str, list[float]] = {}
    for s in statements:
        key = s.text[:50]
        first, count, seconds = grouped.get(key, [s.start - started, 0, 0.0])
        grouped[key] = [first, count + 1, seconds + s.seconds]
    for key, (first, count, seconds) in sorted(grouped.items(), key=lambda item: item[1][0]):
        out.print(f"    {first:7.3f} s  x{int(count):<4d} {seconds:6.3f} s  {key}")


# ── W4 ────────────────────────────────────────────────────────────────────────────────────────

#: Reports before the recorded one (statement caches filled, psycopg's statements prepared
#: after five uses); the median of the last ten is printed as the unrecorded time.
WARM_UP = 20


def profile_w4(db: str | None) -> None:
    from appwarden.db.engine import make_engine
    from appwarden.settings import Settings
    from appwarden.timeutil import parse_instant
    from appwarden.wiring import Services
    from bench.fleet import BENCH_AT, has_tiktok, prepared_fleet
    from bench.w4_ingest import apply_report, clean_report

    recorder = Recorder(senders=True)
    recorder.listen()
    with prepared_fleet(db, 200) as fleet:
        phones = [i for i in reversed(range(fleet.extra)) if has_tiktok(i)][: WARM_UP + 1]
        engine = make_engine(fleet.url)
        services = Services(
            Settings(database_url=fleet.url, maildir=fleet.workdir / "mail"), engine
        )
        at = parse_instant(BENCH_AT)
        unrecorded: list[float] = []
        try:
            for n, i in enumerate(phones):
                report = clean_report(i)
                recorder.on = n == WARM_UP
                started = time.perf_counter()
                apply_report(services, at, report, f"profile-{i}")
                ended = time.perf_counter()
                recorder.on = False
                unrecorded.append(ended - started)
        finally:
            engine.dispose()
    typical = statistics.median(unrecorded[WARM_UP - 10 : WARM_UP]) * 1000
    out.print(
        f"one report: {len(recorder.statements)} statements, {(ended - started) * 1000:.2f} ms "
        f"to the commit with them recorded ({typical:.2f} ms, the median of the ten "
        "reports before it, unrecorded):"
    )
    for s in recorder.statements:
        out.print(f"  {(s.start - started) * 1000:7.2f} ms {s.seconds * 1000:6.2f} ms  {s.text}")
        out.print(f"  {'':22s}{s.sender}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("workload", choices=["W4", "W5"], type=str.upper)
    parser.add_argument("--db", default=None, help="sqlite:///NEW_FILE or a PostgreSQL server URL")
    parser.add_argument("--phones", type=int, default=5_000, help="W5: phones in the fresh load")
    parser.add_argument(
        "--reimport",
        action="store_true",
        help="W5: profile the re-import instead of the fresh load",
    )
    args = parser.parse_args(argv)
    if args.workload == "W5":
        profile_w5(args.db, args.phones, reimport=args.reimport)
    else:
        profile_w4(args.db)
    return 0


if __name__ == "__main__":
    sys.exit(main())
