"""The performance tables of README.md and bench/README.md, generated from bench/results/*.json.

    python -m bench.report            rewrite both tables from the committed results
    python -m bench.report --check    exit 1, naming the file, when a table differs from them

Every store's latest result per workload is listed, failing ones included, bar by bar, with the
bar it was held to (as recorded in the results file) and pass or FAIL; bench/README.md then lists
every results file in detail. Quoting a number by hand is how a README ends up showing only the
runs that passed: the tables are written here and nowhere else, and a test checks that the
committed files equal what this module generates (`bench.run` calls it after every run).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
TABLE_START = "<!-- results:start -->"
TABLE_END = "<!-- results:end -->"
# What each recorded bar measures, in the words of bench/README.md.
BAR_LABELS = {
    ("W2", "throughput_ratio"): "gate / constant, max requests/s",
    ("W2", "throughput_ratio_denied"): "gate / constant, max requests/s, denied phones only",
    ("W2", "throughput_ratio_unknown"): "gate / constant, max requests/s, unseen DeviceIds only",
    ("W2", "gate_p99_at_half_max"): "gate p99 at half the gate's max rate (open loop)",
    ("W2", "sample_matches_api"): "gate answers that differ from the API on the sample",
    ("W2", "no_errors"): "wrk's runs",
    ("W4", "p99"): "p99, one device's report from the ingest call to the commit",
    ("W4", "committed"): "reports whose committed decision is not allow",
    ("W6", "same_process_read_your_writes"): "same process: flips not seen by the next answer",
    ("W6", "other_process_p99"): "other process: p99 until the answer flips",
    (
        "DELIVERY",
        "messages_per_second",
    ): "announcements delivered per second to a local SMTP server",
    ("DELIVERY", "delivered"): "every notice sent, every Message-ID received once",
    ("CLI", "help_seconds"): "`appwarden --help`, median wall time of a new process",
    ("CLI", "decide_ratio"): "`appwarden decide` on the demo database / `import sqlalchemy.orm`",
    **{
        ("W5", f"{path}_{step}_{size}"): f"{size:,} phones, {label}: {what}"
        for size in (500, 2_000, 20_000, 100_000)
        for step, label in (("fresh", "fresh load"), ("reimport", "re-import, 1 % changed"))
        for path, what in (
            ("bulk", "bulk rows/s / raw"),
            ("end_to_end", "`appwarden import native` rows/s / raw"),
            ("rows_equal", "stored rows equal (count, checksum)"),
        )
    },
    ("EVAL", "ratio"): "full evaluation right after an import, PostgreSQL / SQLite (first run)",
    ("EVAL", "rows_equal"): "both stores evaluate the same rows",
}


@dataclass(frozen=True, slots=True)
class Result:
    name: str  # the file's name under bench/results/
    data: dict[str, Any]

    @property
    def workload(self) -> str:
        return str(self.data["workload"])

    @property
    def store(self) -> str:
        """`SQLite 3.40.1`, `PostgreSQL 15.20`: the store's name and version, nothing else."""
        return str(self.data["machine"]["store"]).split(" (")[0].split(",")[0]

    @property
    def finished(self) -> str:
        return str(self.data["finished_at"])

    @property
    def scope(self) -> tuple[str, str, tuple[int, ...]]:
        """What a newer result replaces: the same workload on the same store (for W5, at the
        same fleet sizes: a run may measure some of them only)."""
        sizes = self.data["parameters"].get("phones", ()) if self.workload == "W5" else ()
        return self.workload, self.store.split(" ")[0], tuple(sizes)

    def label(self, *, store: bool = False) -> str:
        mode = "quick" if self.data.get("quick") else "full"
        when = self.finished[:16].replace("T", " ")
        return f"`{self.name}` ({mode}, {f'{self.store}, ' if store else ''}{when}Z)"


def load(directory: Path = RESULTS) -> list[Result]:
    """Every results file, by name; one that cannot be read is an error naming it."""
    results = []
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            result = Result(path.name, data)
            _ = (result.workload, result.store, result.finished, data["bars"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"bench.report: {path}: not a benchmark result ({exc!r})") from exc
        results.append(result)
    return results


def latest(results: Sequence[Result]) -> list[Result]:
    """The newest result of each `Result.scope`, quick or full, in workload then store order."""
    newest: dict[tuple[str, str, tuple[int, ...]], Result] = {}
    for result in results:
        key = result.scope
        if key not in newest or result.finished > newest[key].finished:
            newest[key] = result
    return [newest[key] for key in sorted(newest)]


def _value(bar: dict[str, Any]) -> str:
    value = bar["value"]
    if isinstance(value, bool):  # the bar names what was checked; pass/fail says the rest
        return "—"
    unit = " ms" if str(bar["bar"]).endswith(" ms") else ""
    return f"{value}{unit}"


def summary(results: Sequence[Result]) -> list[str]:
    """One row per bar of each store's latest result per workload."""
    lines = [
        "| workload | store | run | measured | value | bar | |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in latest(results):
        run = f"| {result.workload} | {result.store} | {result.label()} |"
        for i, (key, bar) in enumerate(result.data["bars"].items()):
            label = BAR_LABELS.get((result.workload, key), key)
            verdict = "—" if bar["pass"] is None else "pass" if bar["pass"] else "**FAIL**"
            lines.append(
                f"{'| | | |' if i else run} {label} | {_value(bar)} | {bar['bar']} | {verdict} |"
            )
    return lines


def _ok(flag: bool) -> str:
    return "pass" if flag else "FAIL"


def _us_over(found: dict[str, Any]) -> str:
    """The microseconds the gate adds to a request (results before they were recorded: none)."""
    us = found.get("us_over_constant")
    return "" if us is None else f" (the gate adds {us} µs a request)"


def _w2_rows(result: dict[str, Any]) -> list[str]:
    bars = result["bars"]
    c, g = result["max_rps"]["constant"], result["max_rps"]["gate"]
    gate_lat = result["open_loop"]["gate"]["latency_from_scheduled_start"]
    const_lat = result["open_loop"]["constant"]["latency_from_scheduled_start"]
    sample = result["sample"]
    mixes = [
        f"W2 {mix} only, max req/s: gate {found['max_rps']['gate']:,.0f} / constant "
        f"{found['max_rps']['constant']:,.0f}{_us_over(found)} | ratio {found['ratio']:.3f} "
        f"| {bars['throughput_ratio_' + mix]['bar']} "
        f"| {_ok(bars['throughput_ratio_' + mix]['pass'])} |"
        for mix, found in result.get("mixes", {}).items()
    ]
    return [
        f"W2 max req/s: gate {g:,.0f} / constant {c:,.0f}{_us_over(result)} "
        f"| ratio {result['ratio']:.3f} "
        f"| {bars['throughput_ratio']['bar']} | {_ok(bars['throughput_ratio']['pass'])} |",
        *mixes,
        f"W2 open loop at {result['open_loop']['rate_per_s']:,.0f}/s: gate p50 "
        f"{gate_lat['p50_ms']} / p99 {gate_lat['p99_ms']} ms (constant p50 "
        f"{const_lat['p50_ms']} / p99 {const_lat['p99_ms']} ms) | p99 {gate_lat['p99_ms']} ms "
        f"| {bars['gate_p99_at_half_max']['bar']} "
        f"| {_ok(bars['gate_p99_at_half_max']['pass'])} |",
        f"W2 gate = API on {sample['sample']} phones | {bars['sample_matches_api']['value']} "
        f"mismatches | identical | {_ok(bars['sample_matches_api']['pass'])} |",
    ]


def _w4_rows(result: dict[str, Any]) -> list[str]:
    bars = result["bars"]
    lat = result["latency"]
    full = result["full_evaluation"]
    return [
        f"W4 one device's report, ingest to commit: {result['measured']} reports, "
        f"p50 {lat['p50_ms']} / p99 {lat['p99_ms']} / max {lat['max_ms']} ms (a full "
        f"evaluation: {full['seconds_best_of_3']} s, {full['times_the_p50']:,.0f}x the p50) "
        f"| p99 {lat['p99_ms']} ms | {bars['p99']['bar']} | {_ok(bars['p99']['pass'])} |",
        f"W4 decisions committed as allow | {bars['committed']['value']} wrong | "
        f"0 wrong | {_ok(bars['committed']['pass'])} |",
    ]


def _w6_rows(result: dict[str, Any]) -> list[str]:
    bars = result["bars"]
    same = result["same_process"]
    other = result["other_process"]["latency"]
    return [
        f"W6 same process: {result['measured']} flips, p50 {same['latency']['p50_ms']} / p99 "
        f"{same['latency']['p99_ms']} ms | {len(same['failures'])} failures | 0 failures | "
        f"{_ok(bars['same_process_read_your_writes']['pass'])} |",
        f"W6 other process: p50 {other['p50_ms']} / p99 {other['p99_ms']} / max "
        f"{other['max_ms']} ms ({result['other_process']['timeouts']} timeouts) | p99 "
        f"{other['p99_ms']} ms | {bars['other_process_p99']['bar']} "
        f"| {_ok(bars['other_process_p99']['pass'])} |",
    ]


def _w5_rows(result: dict[str, Any]) -> list[str]:
    rows = []
    for size, steps in result["sizes"].items():
        for step, label in (("fresh", "fresh load"), ("reimport", "re-import, 1 % changed")):
            s = steps[step]
            bulk, e2e = (
                result["bars"][f"bulk_{step}_{size}"],
                result["bars"][f"end_to_end_{step}_{size}"],
            )
            equal = result["bars"][f"rows_equal_{step}_{size}"]
            rows += [
                f"W5 {int(size):,} phones, {label}: {s['rows']:,} rows; bulk "
                f"{s['bulk']['rows_per_second']:,} rows/s, raw {s['raw']['rows_per_second']:,} "
                f"rows/s (bare 3 columns {s['bare_3_columns']['rows_per_second']:,}{_paged(s)}) "
                f"| ratio {s['bulk_ratio']} | {bulk['bar']} | {_ok(bulk['pass'])} |",
                f"W5 {int(size):,} phones, {label}: end to end "
                f"{s['end_to_end']['rows_per_second']:,} rows/s | ratio {s['end_to_end_ratio']} "
                f"| {e2e['bar']} | {_ok(e2e['pass'])} |",
                f"W5 {int(size):,} phones, {label}: rows equal (count, checksum) "
                f"| {equal['value']} | equal | {_ok(equal['pass'])} |",
            ]
    return rows


def _paged(step: dict[str, Any]) -> str:
    """The raw insert committed a page at a time, where the run measured it (since 2026-12-07)."""
    paged = step.get("raw_a_page_at_a_time")
    if paged is None:
        return ""
    return (
        f"; raw committed a page at a time as the bulk path is, {paged['transactions']:,} "
        f"transactions, {paged['rows_per_second']:,}"
    )


def _delivery_rows(result: dict[str, Any]) -> list[str]:
    m = result["measured"]
    bars = result["bars"]
    others = ", ".join(
        f"batches of {d['batch']}: {d['messages_per_second']:,}/s"
        for d in result["diagnostics"]["other_batch_sizes"]
    )
    return [
        f"DELIVERY {m['notices']:,} announcements, batches of {m['batch']}: {m['seconds']} s = "
        f"{m['messages_per_second']:,} messages/s; raw smtplib of the same messages "
        f"{m['raw_messages_per_second']:,}/s (ratio {m['ratio']}); {others} "
        f"| {m['messages_per_second']:,}/s | {bars['messages_per_second']['bar']} "
        f"| {_ok(bars['messages_per_second']['pass'])} |",
        "DELIVERY every notice sent, every Message-ID received once "
        f"| {bars['delivered']['value']} | equal | {_ok(bars['delivered']['pass'])} |",
    ]


def _cli_rows(result: dict[str, Any]) -> list[str]:
    median = result["measured"]["median_seconds"]
    bars = result["bars"]
    runs = result["parameters"]["runs"]
    return [
        f"CLI `appwarden --help`: median of {runs} runs {median['help']} s "
        f"| {bars['help_seconds']['value']} s | {bars['help_seconds']['bar']} "
        f"| {_ok(bars['help_seconds']['pass'])} |",
        f"CLI `appwarden decide` {median['decide']} s / `import sqlalchemy.orm` "
        f"{median['import_sqlalchemy_orm']} s{_libraries(median)} "
        f"| ratio {bars['decide_ratio']['value']} "
        f"| {bars['decide_ratio']['bar']} | {_ok(bars['decide_ratio']['pass'])} |",
    ]


def _libraries(median: dict[str, float]) -> str:
    """The libraries' own start (a diagnostic that results before 2026-12-02 lack)."""
    if "libraries" not in median:
        return ""
    return f" (typer, pydantic-settings and the ORM together: {median['libraries']} s)"


def _eval_rows(result: dict[str, Any]) -> list[str]:
    bars = result["bars"]
    sqlite, postgresql = result["sqlite"], result["postgresql"]

    def seconds(store: dict[str, Any]) -> str:
        runs = " / ".join(str(s) for s in store["evaluation_seconds"])
        refresh = store.get("statistics_refresh_seconds")
        analysed = f", statistics {refresh} s" if refresh is not None else ""
        return f"{runs} s (import {store['import_seconds']} s{analysed})"

    return [
        f"EVAL full evaluation right after importing {result['parameters']['phones']:,} phones: "
        f"PostgreSQL {seconds(postgresql)}, SQLite {seconds(sqlite)}; best of "
        f"{len(sqlite['evaluation_seconds'])} ratio {result['ratio_best']} "
        f"| ratio {bars['ratio']['value']} | {bars['ratio']['bar']} "
        f"| {_ok(bars['ratio']['pass'])} |",
        f"EVAL rows evaluated: {postgresql['rows']:,} PostgreSQL, {sqlite['rows']:,} SQLite "
        f"| {bars['rows_equal']['value']} | equal | {_ok(bars['rows_equal']['pass'])} |",
    ]


DETAIL = {
    "W2": _w2_rows,
    "W4": _w4_rows,
    "W6": _w6_rows,
    "W5": _w5_rows,
    "DELIVERY": _delivery_rows,
    "CLI": _cli_rows,
    "EVAL": _eval_rows,
}


def detail_rows(result: Result) -> list[str]:
    """The rows of one results file in the detailed table (and in `bench.run`'s summary)."""
    rows = DETAIL[result.workload](result.data)
    first = f"| {result.label(store=True)} | "
    return [("| | " if i else first) + row for i, row in enumerate(rows)]


def detail(results: Sequence[Result]) -> list[str]:
    lines = ["| run | measured | value | bar | |", "|---|---|---|---|---|"]
    for result in results:
        lines += detail_rows(result)
    return lines


def readme_block(results: Sequence[Result]) -> str:
    return "\n".join(summary(results))


def bench_readme_block(results: Sequence[Result]) -> str:
    return "\n".join(
        [*summary(results), "", "Every results file in bench/results/:", "", *detail(results)]
    )


TABLES = {ROOT / "README.md": readme_block, BENCH / "README.md": bench_readme_block}
_BLOCK = re.compile(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), re.DOTALL)


def rendered(path: Path, results: Sequence[Result]) -> str:
    """`path`'s text with the table between its markers generated from `results`."""
    text = path.read_text()
    if len(_BLOCK.findall(text)) != 1:
        raise SystemExit(f"bench.report: {path}: needs exactly one {TABLE_START} … {TABLE_END}")
    block = f"{TABLE_START}\n{TABLES[path](results)}\n{TABLE_END}"
    return _BLOCK.sub(lambda _m: block, text)


def refresh(results: Sequence[Result] | None = None) -> list[Path]:
    """Rewrite both tables; the files that changed."""
    results = load() if results is None else results
    changed = []
    for path in TABLES:
        text = rendered(path, results)
        if text != path.read_text():
            path.write_text(text)
            changed.append(path)
    return changed


def stale(results: Sequence[Result] | None = None) -> list[Path]:
    """The files whose table differs from what the results generate."""
    results = load() if results is None else results
    return [path for path in TABLES if rendered(path, results) != path.read_text()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only say whether a table is stale")
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale()
        for path in outdated:
            sys.stderr.write(f"{path.relative_to(ROOT)}: stale; run python -m bench.report\n")
        return 1 if outdated else 0
    for path in refresh():
        sys.stdout.write(f"rewrote the table in {path.relative_to(ROOT)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
