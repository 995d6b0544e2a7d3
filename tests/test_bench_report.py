"""The performance tables of README.md and bench/README.md are exactly what `bench.report`
generates from the committed bench/results/*.json: every store's latest result per workload, the
failing ones included. A figure typed into either table by hand, or a results file committed
without regenerating them, fails here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from bench import report


def test_committed_tables_equal_the_generated_ones() -> None:
    assert report.stale() == [], "run `python -m bench.report` and commit the tables"


def test_every_store_and_workload_appears_with_its_failures() -> None:
    results = report.load()
    table = "\n".join(report.summary(results))
    for result in report.latest(results):
        assert result.label() in table
        for bar in result.data["bars"].values():
            if bar["pass"] is None:  # recorded without a bar
                assert f"| {bar['bar']} | — |" in table
            elif not bar["pass"]:
                assert f"| {bar['bar']} | **FAIL** |" in table
    assert len(report.latest(results)) == len({r.scope for r in results})


def test_the_latest_result_wins_even_when_it_fails(tmp_path: Path) -> None:
    """A newer failing run replaces an older passing one of the same workload and store."""
    shutil.copy(report.RESULTS / "w4.json", tmp_path / "w4.json")
    newer = json.loads((report.RESULTS / "w4.json").read_text())
    newer["quick"] = True
    newer["finished_at"] = "2999-01-01T00:00:00Z"
    newer["bars"]["p99"] = {"bar": "<= 10.0 ms", "value": 99.0, "pass": False}
    (tmp_path / "w4-quick.json").write_text(json.dumps(newer))
    table = "\n".join(report.summary(report.load(tmp_path)))
    assert "`w4-quick.json` (quick, 2999-01-01 00:00Z)" in table
    assert "| 99.0 ms | <= 10.0 ms | **FAIL** |" in table
    assert "`w4.json`" not in table


def test_a_table_edited_by_hand_is_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = tmp_path / "README.md"
    original = (report.ROOT / "README.md").read_text()
    flattering = "| W4 | PostgreSQL | typed by hand | p99 | 7 ms | <= 10.0 ms | pass |\n"
    readme.write_text(original.replace(report.TABLE_END, flattering + report.TABLE_END))
    monkeypatch.setattr(report, "TABLES", {readme: report.readme_block})
    assert report.stale() == [readme]
    assert report.refresh() == [readme]
    assert readme.read_text() == original
    assert report.stale() == []
