"""osquery results logs and POSTed bodies: exact reports, rebuilt differentials, located skips."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from appwarden.devices.schemas import AppSeen, DeviceFacts, InventoryBatch, ReportFacts
from appwarden.errors import InvalidInput
from appwarden.sources.osquery import infer_table, parse_osquery
from appwarden.vocabulary import DeviceStatus, EvidenceKind, Platform

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources" / "osquery"
HOST = "4C4C4544-0042-3510-8051-B7C04F4E3732"
T0 = 1772546531
MAC_APPS = ("apple_bundle_id",)
WINDOWS_ALL = (
    "windows_upgrade_code",
    "windows_product_code",
    "windows_package_family",
    "windows_program",
)
TIKTOK = {"name": "TikTok.app", "bundle_identifier": "com.zhiliaoapp.musically"}
ZOOM = {"name": "zoom.us.app", "bundle_identifier": "us.zoom.xos", "bundle_short_version": "6.3"}
SLACK = {"name": "Slack.app", "bundle_identifier": "com.tinyspeck.slackmacgap"}


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def line(
    action: str = "added",
    rows: Any = None,
    *,
    name: str = "pack_inventory_macos_apps",
    counter: Any = 0,
    epoch: Any = 0,
    unix: Any = T0,
    host: str | None = HOST,
    **extra: Any,
) -> str:
    """One result line as osqueryd writes it (event format unless `diffResults` is given)."""
    entry: dict[str, Any] = {
        "name": name,
        "hostIdentifier": "jdoe-mbp.local",
        "calendarTime": "Tue Mar  3 14:02:11 2026 UTC",
        "unixTime": unix,
        "epoch": epoch,
        "counter": counter,
        "numerics": False,
    }
    if host is not None:
        entry["decorations"] = {"host_uuid": host, "hostname": "jdoe-mbp.local"}
    if action == "snapshot":
        entry |= {"action": "snapshot", "snapshot": rows}
    elif action in ("added", "removed"):
        entry |= {"action": action, "columns": rows}
    entry |= extra
    return json.dumps(entry)


def parse(*lines: str, strict: bool = False) -> InventoryBatch:
    return parse_osquery("\n".join(lines) + "\n", "osqueryd.results.log", strict=strict)


def only_report(batch: InventoryBatch) -> ReportFacts:
    assert batch.skipped == ()
    assert len(batch.reports) == 1
    return batch.reports[0]


def bundle_ids(report: ReportFacts) -> set[str]:
    return {app.value for app in report.apps}


def read(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# ── the formats.md examples, verbatim ───────────────────────────────────────────────────────


def test_event_line_example_is_one_added_app_proving_no_absence() -> None:
    batch = parse_osquery(read("event_line.log"), "event_line.log")
    assert batch == InventoryBatch(
        source="osquery",
        reports=(
            ReportFacts(
                device=DeviceFacts(
                    identifiers=(("osquery_host", HOST),),
                    platform=Platform.MACOS,
                    status=DeviceStatus.ACTIVE,
                ),
                source="osquery",
                evidence_kind=EvidenceKind.INVENTORY,
                observed_at=at(1772546531),
                apps=(
                    AppSeen("apple_bundle_id", "com.zhiliaoapp.musically", "38.4.0", "TikTok.app"),
                ),
                # counter 3 with no counter-0 run in the file: the rows known present, no absence
                coverage=(),
                where="event_line.log:1",
            ),
        ),
    )


def test_snapshot_line_example_names_no_host_so_it_is_skipped_not_keyed_by_hostname() -> None:
    batch = parse_osquery(read("snapshot_line.log"), "snapshot_line.log")
    assert batch.reports == ()
    assert batch.devices == ()
    assert batch.skipped == (
        "snapshot_line.log:1: $.decorations: no host_uuid decoration and no system_info uuid: "
        "the line names no host (hostIdentifier is not used, it is the hostname by default)",
    )
    with pytest.raises(InvalidInput) as raised:
        parse_osquery(read("snapshot_line.log"), "snapshot_line.log", strict=True)
    assert raised.value.problems[0].where == "snapshot_line.log:1: $.decorations"


def test_logger_post_example_is_read_as_lines_and_its_undecorated_line_is_skipped() -> None:
    batch = parse_osquery(read("logger_post.json"), "logger_post.json")
    assert batch.reports == ()
    assert [s.split(": ")[:2] for s in batch.skipped] == [
        ["logger_post.json", "$.data[0].decorations"]
    ]


def test_snapshot_example_with_a_host_decoration_covers_the_windows_namespaces() -> None:
    entry = json.loads(read("snapshot_line.log"))
    entry["decorations"] = {"host_uuid": "8E1A3C55-0000-4000-8000-00000000AA01"}
    report = only_report(parse(json.dumps(entry)))
    assert report.device.identifiers == (("osquery_host", "8E1A3C55-0000-4000-8000-00000000AA01"),)
    assert report.device.platform == Platform.WINDOWS
    assert report.observed_at == at(1772546700)
    assert report.coverage == WINDOWS_ALL
    name = "Zoom Workplace (64-bit)"
    assert report.apps == (
        AppSeen("windows_upgrade_code", "{C819B794-A45C-4F27-9860-0C86492A52CC}", "6.3.6", name),
        AppSeen("windows_product_code", "{0A1B2C3D-1111-2222-3333-444455556666}", "6.3.6", name),
        AppSeen("windows_program", f"{name}|Zoom Video Communications, Inc.", "6.3.6", name),
    )


def test_logger_post_lines_with_decorations_are_read_like_file_lines() -> None:
    body = {"node_key": "nk_1", "log_type": "result", "data": [json.loads(line("added", ZOOM))]}
    report = only_report(parse_osquery(json.dumps(body), "post.json"))
    assert report.coverage == MAC_APPS
    assert report.where == "post.json: $.data[0]"


def test_a_status_log_body_carries_no_results() -> None:
    body = {"node_key": "nk_1", "log_type": "status", "data": [{"severity": 0, "message": "hi"}]}
    assert parse_osquery(json.dumps(body), "status.json") == InventoryBatch(source="osquery")


# ── device identifiers ──────────────────────────────────────────────────────────────────────


def test_host_identifier_is_never_an_identifier_even_when_it_looks_like_a_uuid() -> None:
    batch = parse(line("added", ZOOM, host=None, hostIdentifier=HOST))
    assert batch.reports == ()
    assert batch.skipped[0].startswith("osqueryd.results.log:1: $.decorations: no host_uuid")


def test_top_level_host_uuid_is_read_when_decorations_are_flattened() -> None:
    report = only_report(parse(line("added", ZOOM, host=None, host_uuid=HOST)))
    assert report.device.identifiers == (("osquery_host", HOST),)


def test_host_uuid_is_kept_as_given() -> None:
    report = only_report(parse(line("added", ZOOM, host="4c4c4544-aaaa")))
    assert report.device.identifiers == (("osquery_host", "4c4c4544-aaaa"),)


def test_system_info_gives_the_serial_and_names_its_own_host() -> None:
    info = {"uuid": HOST, "hardware_serial": "C02ZK1ABMD6M", "computer_name": "Jane's MacBook"}
    batch = parse(
        line("snapshot", [info], name="system_info", host=None),
        line("snapshot", [ZOOM], name="apps"),
    )
    report = only_report(batch)
    assert report.device.identifiers == (("osquery_host", HOST), ("serial", "C02ZK1ABMD6M"))
    assert report.device.name == "Jane's MacBook"
    assert batch.devices == ()  # the host has a report: no separate device entry


def test_a_host_with_only_system_info_is_a_device_without_a_report() -> None:
    info = {"uuid": HOST, "hardware_serial": "C02ZK1ABMD6M"}
    batch = parse(line("snapshot", [info], name="system_info"))
    assert batch.reports == ()
    assert batch.devices == (
        DeviceFacts(
            identifiers=(("osquery_host", HOST), ("serial", "C02ZK1ABMD6M")),
            status=DeviceStatus.ACTIVE,
        ),
    )


# ── tables, coverage and platform ───────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("columns", "table"),
    [
        ({"name", "bundle_identifier", "path"}, "apps"),
        ({"name", "version", "identifying_number"}, "programs"),
        ({"name", "version", "upgrade_code"}, "programs"),
        ({"name", "publisher", "uninstall_string"}, "programs"),
        ({"name", "version", "arch", "maintainer"}, "deb_packages"),
        ({"name", "version", "status", "admindir"}, "deb_packages"),
        ({"name", "version", "release", "epoch", "arch"}, "rpm_packages"),
        ({"name", "version", "sha1"}, "rpm_packages"),
        ({"browser_type", "identifier", "name"}, "chrome_extensions"),
        ({"identifier", "profile", "name"}, "chrome_extensions"),
        ({"uuid", "hardware_serial", "hostname"}, "system_info"),
        ({"name", "platform", "major", "minor"}, "os_version"),
        ({"pid", "name", "path"}, None),
    ],
)
def test_the_table_is_inferred_from_the_row_columns(columns: set[str], table: str | None) -> None:
    assert infer_table(columns) == table


def test_os_version_sets_the_platform_of_every_report_of_the_host() -> None:
    os_row = {"name": "Ubuntu", "platform": "ubuntu", "major": "24", "platform_like": "debian"}
    ext = {"browser_type": "chrome", "identifier": "a" * 32, "name": "X", "version": "1"}
    batch = parse(
        line("snapshot", [os_row], name="os_version"),
        line("snapshot", [ext], name="extensions"),
    )
    assert only_report(batch).device.platform == Platform.LINUX
    assert only_report(batch).coverage == ("chrome_extension_id",)


def test_an_unknown_os_version_platform_is_unknown() -> None:
    os_row = {"name": "FreeBSD", "platform": "freebsd", "major": "14"}
    batch = parse(line("snapshot", [os_row], name="os_version"), line("snapshot", [ZOOM]))
    assert only_report(batch).device.platform == Platform.UNKNOWN


def test_chrome_extensions_alone_do_not_say_the_platform() -> None:
    ext = {"browser_type": "edge", "identifier": "b" * 32, "name": "Y"}
    assert only_report(parse(line("snapshot", [ext]))).device.platform is None


def test_each_table_of_a_host_is_its_own_report_with_its_own_coverage() -> None:
    ext = {"browser_type": "chrome", "identifier": "a" * 32, "name": "X"}
    batch = parse(line("snapshot", [ZOOM], name="apps"), line("snapshot", [ext], name="ext"))
    assert [(r.coverage, r.device.platform) for r in batch.reports] == [
        (MAC_APPS, Platform.MACOS),
        (("chrome_extension_id",), Platform.MACOS),
    ]


def test_programs_cover_only_the_namespaces_whose_columns_the_rows_have() -> None:
    old = {"name": "7-Zip", "version": "23", "publisher": "Igor Pavlov", "uninstall_string": "x"}
    report = only_report(parse(line("snapshot", [old], name="programs")))
    assert report.coverage == ("windows_program",)
    assert report.apps == (AppSeen("windows_program", "7-Zip|Igor Pavlov", "23", "7-Zip"),)


def test_a_program_id_that_is_not_a_guid_is_dropped_not_the_report() -> None:
    row = {"name": "Zoom", "identifying_number": "ZoomUMX", "publisher": "Zoom", "upgrade_code": ""}
    report = only_report(parse(line("snapshot", [row], name="programs")))
    assert [app.namespace for app in report.apps] == ["windows_program"]


def test_deb_packages_removed_but_configured_are_not_installed() -> None:
    rows = [
        {
            "name": "curl",
            "version": "8.5",
            "arch": "amd64",
            "maintainer": "x",
            "status": "install ok installed",
        },
        {
            "name": "zoom",
            "version": "6.3",
            "arch": "amd64",
            "maintainer": "x",
            "status": "deinstall ok config-files",
        },
    ]
    report = only_report(parse(line("snapshot", rows, name="debs")))
    assert report.apps == (AppSeen("deb_package", "curl", "8.5", None),)
    assert report.device.platform == Platform.LINUX


def test_rpm_versions_include_the_release_and_numerics_true_is_read() -> None:
    row = {"name": "zoom", "version": "6.3.6", "release": "1", "epoch": 0, "size": 12, "sha1": "a"}
    report = only_report(parse(line("snapshot", [row], name="rpms", numerics=True)))
    assert report.apps == (AppSeen("rpm_package", "zoom", "6.3.6-1", None),)
    assert report.coverage == ("rpm_package",)


# ── snapshots and differentials ─────────────────────────────────────────────────────────────


def test_a_counter_zero_run_then_each_next_run_rebuilds_the_full_set() -> None:
    report = only_report(
        parse(
            line("added", ZOOM, counter=0),
            line("added", TIKTOK, counter=0),
            line("removed", TIKTOK, counter=1, unix=T0 + 60),
            line("added", SLACK, counter=2, unix=T0 + 120),
        )
    )
    assert bundle_ids(report) == {"us.zoom.xos", "com.tinyspeck.slackmacgap"}
    assert report.coverage == MAC_APPS
    assert report.observed_at == at(T0 + 120)


def test_batch_diff_results_are_applied_like_events() -> None:
    report = only_report(
        parse(
            line("batch", None, counter=0, diffResults={"added": [ZOOM, TIKTOK], "removed": []}),
            line(
                "batch",
                None,
                counter=1,
                unix=T0 + 9,
                diffResults={"added": [], "removed": [TIKTOK]},
            ),
        )
    )
    assert bundle_ids(report) == {"us.zoom.xos"}
    assert report.coverage == MAC_APPS


def test_a_counter_gap_proves_no_absence_and_keeps_only_rows_added_after_it() -> None:
    report = only_report(
        parse(
            line("added", ZOOM, counter=0),
            line("added", TIKTOK, counter=3, unix=T0 + 60),
            line("added", SLACK, counter=5, unix=T0 + 120),
        )
    )
    assert bundle_ids(report) == {"com.tinyspeck.slackmacgap"}
    assert report.coverage == ()


def test_an_epoch_change_without_a_new_counter_zero_run_proves_no_absence() -> None:
    report = only_report(
        parse(
            line("added", ZOOM, counter=0), line("added", TIKTOK, counter=1, epoch=7, unix=T0 + 5)
        )
    )
    assert bundle_ids(report) == {"com.zhiliaoapp.musically"}
    assert report.coverage == ()


def test_a_later_full_run_restores_the_coverage_after_a_gap() -> None:
    report = only_report(
        parse(
            line("added", TIKTOK, counter=4),
            line("added", ZOOM, counter=0, epoch=8, unix=T0 + 60),
        )
    )
    assert bundle_ids(report) == {"us.zoom.xos"}
    assert report.coverage == MAC_APPS


def test_runs_are_rebuilt_per_host() -> None:
    other = "11111111-2222-3333-4444-555555555555"
    batch = parse(line("added", ZOOM, counter=0), line("added", TIKTOK, counter=1, host=other))
    assert [(r.device.identifiers[0][1], r.coverage) for r in batch.reports] == [
        (HOST, MAC_APPS),
        (other, ()),
    ]


def test_snapshot_event_lines_of_one_run_form_one_snapshot() -> None:
    first = line("snapshot", None, columns=ZOOM, counter=0)
    second = line("snapshot", None, columns=TIKTOK, counter=0)
    later = line("snapshot", None, columns=SLACK, counter=1, unix=T0 + 3600)
    assert bundle_ids(only_report(parse(first, second))) == {
        "us.zoom.xos",
        "com.zhiliaoapp.musically",
    }
    assert bundle_ids(only_report(parse(first, second, later))) == {"com.tinyspeck.slackmacgap"}


def test_numbers_written_as_strings_are_read() -> None:
    report = only_report(
        parse(
            line("added", ZOOM, counter="0", epoch="0", unix=str(T0)),
            line("added", TIKTOK, counter="1", epoch="0", unix=f"{T0 + 1}"),
        )
    )
    assert report.coverage == MAC_APPS
    assert report.observed_at == at(T0 + 1)


def test_calendar_time_is_the_observed_time_without_unix_time() -> None:
    report = only_report(parse(line("snapshot", [ZOOM], unix=None)))
    assert report.observed_at == datetime(2026, 3, 3, 14, 2, 11, tzinfo=UTC)


# ── distributed write bodies ────────────────────────────────────────────────────────────────


def distributed(queries: dict[str, Any], statuses: dict[str, int]) -> str:
    return json.dumps({"node_key": "nk_1", "queries": queries, "statuses": statuses})


def test_a_distributed_write_is_a_full_result_per_answered_query_at_receipt_time() -> None:
    body = distributed(
        {
            "info": [{"uuid": HOST, "hardware_serial": "C02ZK1ABMD6M"}],
            "apps": [ZOOM],
            "broken": [TIKTOK],
        },
        {"info": 0, "apps": 0, "broken": 1},
    )
    report = only_report(parse_osquery(body, "write.json"))
    assert report.device.identifiers == (("osquery_host", HOST), ("serial", "C02ZK1ABMD6M"))
    assert bundle_ids(report) == {"us.zoom.xos"}  # the failed query proves nothing
    assert report.coverage == MAC_APPS
    assert report.observed_at is None
    assert report.where == "write.json: $.queries.apps"


def test_a_distributed_write_without_system_info_names_no_host() -> None:
    batch = parse_osquery(distributed({"apps": [ZOOM]}, {"apps": 0}), "write.json")
    assert batch.reports == ()
    assert batch.skipped[0].startswith("write.json: $.queries: no system_info row")


# ── bad input ───────────────────────────────────────────────────────────────────────────────


def test_a_line_that_is_not_json_is_skipped_and_no_report_of_the_file_proves_absence() -> None:
    batch = parse(line("snapshot", [ZOOM]), "{not json")
    assert batch.skipped == (
        "osqueryd.results.log:2:2: not valid JSON: Expecting property name enclosed in double quotes",
    )
    assert only_report_of(batch).coverage == ()
    with pytest.raises(InvalidInput):
        parse(line("snapshot", [ZOOM]), "{not json", strict=True)


def only_report_of(batch: InventoryBatch) -> ReportFacts:
    assert len(batch.reports) == 1
    return batch.reports[0]


def test_a_bad_line_breaks_only_its_own_query() -> None:
    bad = line("added", TIKTOK, counter=1, unix="soon")
    ext = {"browser_type": "chrome", "identifier": "a" * 32}
    batch = parse(line("added", ZOOM, counter=0), bad, line("snapshot", [ext], name="ext"))
    assert batch.skipped == (
        "osqueryd.results.log:2: $.unixTime: 'soon' is not a number of seconds since 1970",
    )
    assert [(r.coverage, bundle_ids(r)) for r in batch.reports] == [
        ((), set()),
        (("chrome_extension_id",), {"a" * 32}),
    ]


def test_a_hostile_value_in_a_row_skips_that_report_at_its_line() -> None:
    hostile = {"name": "x", "bundle_identifier": "com.evil\x07app"}
    batch = parse(line("snapshot", [ZOOM, hostile]))
    assert batch.reports == ()
    assert batch.skipped == (
        "osqueryd.results.log:1: $.snapshot[1].bundle_identifier: "
        "contains a control character (U+0007) in 'com.evil\\x07app'",
    )


def test_a_huge_host_uuid_is_a_located_error() -> None:
    batch = parse(line("snapshot", [ZOOM], host="A" * 100_000))
    assert batch.skipped == (
        "osqueryd.results.log:1: $.decorations.host_uuid: is 100000 characters long; the limit is 512",
    )


def test_a_line_that_is_no_result_shape_is_located() -> None:
    batch = parse(json.dumps({"name": "q", "decorations": {"host_uuid": HOST}}))
    assert batch.skipped == (
        "osqueryd.results.log:1: $.action: "
        "expected action snapshot, added or removed, or a diffResults object",
    )


def test_a_file_with_no_json_object_at_all_is_not_a_results_log() -> None:
    with pytest.raises(InvalidInput, match="not an osquery results log"):
        parse_osquery("name,version\nzoom,6\n", "apps.csv")


def test_an_empty_file_is_an_empty_batch() -> None:
    assert parse_osquery("", "empty.log") == InventoryBatch(source="osquery")
