"""`appwarden import osquery|fleet|jamf FILE` through the CLI, on both stores."""

from __future__ import annotations

import json
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sources"
AT = "2026-03-04T00:00:00Z"


def summary(result) -> dict:
    [entry] = result.json()
    return entry


def test_import_osquery_results_log(cli, tmp_path: Path) -> None:
    line = json.loads((FIXTURES / "osquery" / "event_line.log").read_text())
    base = dict(line, counter=0, unixTime=line["unixTime"] - 60)
    path = tmp_path / "osqueryd.results.log"
    path.write_text(json.dumps(base) + "\n" + (FIXTURES / "osquery" / "event_line.log").read_text())
    result = cli("import", "osquery", str(path), "--at", AT, "--json")
    assert result.code == 0, result.err
    assert (summary(result)["reports_applied"], summary(result)["devices"]) == (1, 1)


def test_import_osquery_example_without_a_host_uuid_is_skipped(cli) -> None:
    path = FIXTURES / "osquery" / "snapshot_line.log"
    result = cli("import", "osquery", str(path), "--at", AT, "--json")
    assert result.code != 0
    assert summary(result)["reports_applied"] == 0
    assert summary(result)["skipped"][0].startswith(f"{path}:1: $.decorations: no host_uuid")


def test_import_fleet_hosts_page(cli) -> None:
    result = cli(
        "import", "fleet", str(FIXTURES / "fleet" / "hosts_page.json"), "--at", AT, "--json"
    )
    assert result.code == 0, result.err
    entry = summary(result)
    assert (entry["reports_applied"], entry["devices"], entry["people"]) == (1, 1, 1)


def test_import_jamf_computers_page(cli) -> None:
    path = FIXTURES / "jamf" / "computers_inventory.json"
    result = cli("import", "jamf", str(path), "--at", AT, "--json")
    assert result.code == 0, result.err
    entry = summary(result)
    assert (entry["reports_applied"], entry["devices"], entry["people"]) == (1, 1, 1)
