"""The pure part of osquery's remote API: first-contact queries per platform, and chains carried
across requests written back as bodies the unchanged mapping reads into the right report."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from appwarden.sources.osquery import parse_osquery
from appwarden.sources.osquery_remote import (
    ChainState,
    carry_request,
    first_contact_queries,
    report_bodies,
)

HOST = "4C4C4544-0042-3510-8051-B7C04F4E3732"
T0 = 1772546531
ZOOM = {"name": "zoom.us.app", "bundle_identifier": "us.zoom.xos"}
TIKTOK = {"name": "TikTok.app", "bundle_identifier": "com.zhiliaoapp.musically"}


def line(diff: dict[str, list[dict[str, Any]]], counter: int, unix: int = T0) -> dict[str, Any]:
    return {"name": "apps", "unixTime": unix, "epoch": 0, "counter": counter, "diffResults": diff}


def reports_after(*requests: list[dict[str, Any]]) -> list[tuple[tuple[str, ...], set[str]]]:
    """(coverage, bundle ids) of each report the last request makes, after all the requests."""
    states: dict[str, ChainState] = {}
    for data in requests:
        for state in states.values():
            state.touched, state.removed = False, {}
        carried = carry_request(states, data, "log", HOST)
        assert not carried.problems
    out = []
    for body in report_bodies(states, HOST):
        for report in parse_osquery(orjson.dumps(body), "log").reports:
            out.append((report.coverage, {app.value for app in report.apps}))
    return out


@pytest.mark.parametrize(
    ("platform", "tables"),
    [
        ("darwin", {"apps", "chrome_extensions"}),
        ("windows", {"programs", "chrome_extensions"}),
        ("ubuntu", {"deb_packages", "rpm_packages", "chrome_extensions"}),
        (None, {"apps", "programs", "deb_packages", "rpm_packages", "chrome_extensions"}),
    ],
)
def test_first_contact_asks_who_the_host_is_and_the_app_tables_of_its_platform(platform, tables):
    names = {name for name, _ in first_contact_queries(platform)}
    expected = {"system_info", "os_version", *tables}
    assert names == {f"appwarden_first_{table}" for table in expected}


def test_a_chain_continued_in_a_later_request_is_a_full_result():
    assert reports_after(
        [line({"added": [ZOOM], "removed": []}, 0)],
        [line({"added": [TIKTOK], "removed": []}, 1, T0 + 60)],
    ) == [(("apple_bundle_id",), {"us.zoom.xos", "com.zhiliaoapp.musically"})]


def test_removing_the_last_row_still_proves_it_absent():
    """No row is left to tell the mapping the table: the removed rows of the request do."""
    assert reports_after(
        [line({"added": [ZOOM], "removed": []}, 0)],
        [line({"added": [], "removed": [ZOOM]}, 1, T0 + 60)],
    ) == [(("apple_bundle_id",), set())]


def test_a_gap_across_requests_proves_nothing_absent():
    assert reports_after(
        [line({"added": [ZOOM], "removed": []}, 0)],
        [line({"added": [TIKTOK], "removed": []}, 2, T0 + 60)],
    ) == [((), {"com.zhiliaoapp.musically"})]


def test_a_line_whose_query_cannot_be_told_breaks_every_chain():
    states: dict[str, ChainState] = {}
    carry_request(states, [line({"added": [ZOOM], "removed": []}, 0)], "log", HOST)
    carried = carry_request(states, ["not a line"], "log", HOST)
    assert carried.lost_all
    assert [str(p) for p in carried.problems] == [
        "log: $.data[0]: expected an object, not a string"
    ]
    assert states["apps"].rows == {}
    assert not states["apps"].complete


def test_only_touched_app_chains_make_reports_each_with_the_hosts_identity():
    system_info = {"uuid": HOST, "hardware_serial": "C02ZK1ABMD6M"}
    identity = {"name": "appwarden_system_info", "unixTime": T0, "snapshot": [system_info],
                "action": "snapshot"}  # fmt: skip
    states: dict[str, ChainState] = {}
    carry_request(states, [identity, line({"added": [ZOOM], "removed": []}, 0)], "log", HOST)
    for state in states.values():
        state.touched = False
    states["other"] = ChainState(table="apps", rows={}, touched=False)
    carry_request(states, [line({"added": [TIKTOK], "removed": []}, 1, T0 + 60)], "log", HOST)
    bodies = report_bodies(states, HOST)
    assert len(bodies) == 1
    batch = parse_osquery(orjson.dumps(bodies[0]), "log")
    (report,) = batch.reports
    assert dict(report.device.identifiers)["serial"] == "C02ZK1ABMD6M"
    assert report.observed_at == datetime.fromtimestamp(T0 + 60, UTC)
