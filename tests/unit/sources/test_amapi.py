"""AMAPI pages (`enterprises.devices.list`) and single Devices: the exact reports, one test per
mapping rule, and located errors for bad records, bad pages and bad user mappings."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from appwarden.devices.schemas import AppSeen, DeviceFacts, InventoryBatch, ReportFacts
from appwarden.errors import InvalidInput
from appwarden.sources.amapi import parse_amapi, read_amapi_users
from appwarden.sources.common import ImportOptions
from appwarden.vocabulary import DeviceStatus, EvidenceKind, Ownership, Platform

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources" / "amapi"
NAME = "enterprises/LC02abcd12/devices/3a8f2c1b9d7e6f50"
USER = "enterprises/LC02abcd12/users/114455667788"


def device(**fields: Any) -> dict[str, Any]:
    """A minimal fully managed device with application reports on; `fields` override."""
    record: dict[str, Any] = {
        "name": NAME,
        "managementMode": "DEVICE_OWNER",
        "state": "ACTIVE",
        "applicationReports": [],
    }
    record.update(fields)
    return {k: v for k, v in record.items() if v is not None}


def parse_page(*devices: dict[str, Any], **kwargs: Any) -> InventoryBatch:
    return parse_amapi(json.dumps({"devices": list(devices)}), "page.json", **kwargs)


def only_report(*devices: dict[str, Any], **kwargs: Any) -> ReportFacts:
    batch = parse_page(*devices, **kwargs)
    assert batch.skipped == ()
    (report,) = batch.reports
    return report


def app(package: str, state: str = "INSTALLED", version: str = "1.0") -> dict[str, Any]:
    return {"packageName": package, "versionName": version, "displayName": package, "state": state}


# ── the reference example, verbatim ────────────────────────────────────────────────────────


def test_the_formats_example_device_gives_an_android_package_inventory() -> None:
    options = ImportOptions(amapi_users={USER: "ravi.k@example.com"})
    path = FIXTURES / "formats-device.json"
    batch = parse_amapi(path.read_bytes(), "formats-device.json", options=options)
    assert batch == InventoryBatch(
        source="amapi",
        reports=(
            ReportFacts(
                device=DeviceFacts(
                    identifiers=(("amapi_name", NAME), ("serial", "39021FDH2005XY")),
                    platform=Platform.ANDROID,
                    ownership=Ownership.CORPORATE,
                    owner_email="ravi.k@example.com",
                    status=DeviceStatus.ACTIVE,
                ),
                source="amapi",
                evidence_kind=EvidenceKind.INVENTORY,
                observed_at=datetime(2026, 3, 3, 13, 58, 41, 512000, tzinfo=UTC),
                apps=(AppSeen("android_package", "com.zhiliaoapp.musically", "38.4.3", "TikTok"),),
                coverage=("android_package",),
                where="formats-device.json: $",
            ),
        ),
    )


# ── one test per mapping rule ──────────────────────────────────────────────────────────────


def test_the_device_is_named_by_its_full_name_serial_and_enterprise_specific_id() -> None:
    hardware = {"serialNumber": "R5CW30ABCDE", "enterpriseSpecificId": "ESID-77", "model": "X"}
    report = only_report(device(hardwareInfo=hardware))
    assert report.device.identifiers == (
        ("amapi_name", NAME),
        ("serial", "R5CW30ABCDE"),
        ("enterprise_specific_id", "ESID-77"),
    )


def test_a_work_profile_device_without_a_serial_is_named_by_its_enterprise_specific_id() -> None:
    report = only_report(device(hardwareInfo={"enterpriseSpecificId": "ESID-77"}))
    assert report.device.identifiers == (
        ("amapi_name", NAME),
        ("enterprise_specific_id", "ESID-77"),
    )


def test_a_work_profile_is_managed_only_it_shows_presence_and_proves_no_absence() -> None:
    report = only_report(
        device(
            managementMode="PROFILE_OWNER",
            ownership="PERSONALLY_OWNED",
            applicationReports=[app("com.ss.android.ugc.trill")],
        )
    )
    assert report.evidence_kind == EvidenceKind.MANAGED_ONLY
    assert report.coverage is None
    assert report.apps == (
        AppSeen("android_package", "com.ss.android.ugc.trill", "1.0", "com.ss.android.ugc.trill"),
    )
    assert report.device.ownership == Ownership.PERSONAL


@pytest.mark.parametrize("mode", ["DEVICE_OWNER", "PROFILE_OWNER"])
def test_without_application_reports_the_evidence_is_none_never_an_empty_inventory(
    mode: str,
) -> None:
    report = only_report(device(managementMode=mode, applicationReports=None))
    assert (report.evidence_kind, report.apps, report.coverage) == (EvidenceKind.NONE, (), None)


def test_a_fully_managed_device_with_reporting_on_and_no_apps_is_an_empty_inventory() -> None:
    report = only_report(device(applicationReports=[]))
    assert (report.evidence_kind, report.apps, report.coverage) == (
        EvidenceKind.INVENTORY,
        (),
        ("android_package",),
    )


def test_an_unspecified_management_mode_proves_nothing() -> None:
    report = only_report(
        device(managementMode="MANAGEMENT_MODE_UNSPECIFIED", applicationReports=[app("a.b")])
    )
    assert (report.evidence_kind, report.apps) == (EvidenceKind.NONE, ())


def test_a_removed_application_is_not_presence_and_a_row_without_a_package_is_dropped() -> None:
    rows = [
        app("com.zhiliaoapp.musically", state="REMOVED"),
        app("us.zoom.videomeetings"),
        {"displayName": "x"},
    ]
    report = only_report(device(applicationReports=rows))
    assert [a.value for a in report.apps] == ["us.zoom.videomeetings"]


def test_observed_at_is_the_status_report_time_never_the_policy_sync_or_enrollment() -> None:
    report = only_report(
        device(
            lastStatusReportTime="2026-03-01T10:00:00Z",
            lastPolicySyncTime="2026-03-03T10:00:00Z",
            enrollmentTime="2025-01-01T00:00:00Z",
        )
    )
    assert report.observed_at == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert only_report(device()).observed_at is None


@pytest.mark.parametrize(
    ("state", "applied", "status"),
    [
        ("DELETED", "ACTIVE", DeviceStatus.RETIRED),
        ("ACTIVE", "DELETED", DeviceStatus.RETIRED),
        ("DISABLED", "DISABLED", DeviceStatus.ACTIVE),
        ("PROVISIONING", None, DeviceStatus.ACTIVE),
        ("LOST", "LOST", DeviceStatus.ACTIVE),
    ],
)
def test_a_deleted_device_is_retired_every_other_state_is_active(
    state: str, applied: str | None, status: DeviceStatus
) -> None:
    assert only_report(device(state=state, appliedState=applied)).device.status == status


def test_the_owner_comes_from_the_organisations_user_mapping() -> None:
    options = ImportOptions(amapi_users={USER: "ravi.k@example.com"})
    assert only_report(device(userName=USER), options=options).device.owner_email == (
        "ravi.k@example.com"
    )


def test_an_unmapped_user_leaves_the_owner_unset_and_is_not_a_bad_record() -> None:
    batch = parse_page(device(userName="enterprises/LC02abcd12/users/999"))
    assert batch.skipped == ()
    assert batch.reports[0].device.owner_email is None
    assert batch.people == ()


@pytest.mark.parametrize(
    ("ownership", "expected"),
    [
        ("COMPANY_OWNED", Ownership.CORPORATE),
        ("PERSONALLY_OWNED", Ownership.PERSONAL),
        ("OWNERSHIP_UNSPECIFIED", None),
        (None, None),
    ],
)
def test_ownership(ownership: str | None, expected: Ownership | None) -> None:
    assert only_report(device(ownership=ownership)).device.ownership == expected


def test_the_platform_is_android_and_the_form_factor_is_left_unset() -> None:
    facts = only_report(device(hardwareInfo={"model": "Pixel Tablet"})).device
    assert (facts.platform, facts.form_factor, facts.resources) == (Platform.ANDROID, None, None)


# ── pages ──────────────────────────────────────────────────────────────────────────────────


def test_each_page_file_is_read_on_its_own() -> None:
    second = "enterprises/LC02abcd12/devices/ffff"
    page1 = {"devices": [device()], "nextPageToken": "abc"}
    page2 = {"devices": [device(name=second)]}
    batches = [parse_amapi(json.dumps(p), f"p{i}.json") for i, p in enumerate((page1, page2))]
    assert [b.reports[0].device.identifiers[0][1] for b in batches] == [NAME, second]
    assert batches[1].reports[0].where == "p1.json: $.devices[0]"


@pytest.mark.parametrize("page", [{}, {"nextPageToken": "abc"}, {"devices": []}])
def test_an_empty_page_has_no_reports(page: dict[str, Any]) -> None:
    assert parse_amapi(json.dumps(page), "p.json") == InventoryBatch(source="amapi")


def test_a_device_with_only_its_name_imports_with_no_evidence() -> None:
    report = only_report({"name": NAME})
    assert report.evidence_kind == EvidenceKind.NONE
    assert report.device == DeviceFacts(
        identifiers=(("amapi_name", NAME),), platform=Platform.ANDROID, status=DeviceStatus.ACTIVE
    )


@pytest.mark.parametrize(
    ("bad", "where", "message"),
    [
        ({"name": None}, "$.devices[1].name", "is required and missing or empty"),
        ({"name": "devices/x"}, "$.devices[1].name", "is not a device name"),
        ({"lastStatusReportTime": "yesterday"}, "$.devices[1].lastStatusReportTime", "RFC 3339"),
        ({"applicationReports": {"a": 1}}, "$.devices[1].applicationReports", "expected a list"),
        ({"hardwareInfo": {"serialNumber": 7}}, "$.devices[1].hardwareInfo.serialNumber", "string"),
        (
            {"hardwareInfo": {"serialNumber": "A\x07B"}},
            "$.devices[1].hardwareInfo.serialNumber",
            "control",
        ),
        (
            {"hardwareInfo": {"serialNumber": "x" * 100_000}},
            "$.devices[1].hardwareInfo.serialNumber",
            "limit is 512",
        ),
        ({"userName": "ravi"}, "$.devices[1].userName", "is not a user name"),
    ],
)
def test_a_bad_record_is_skipped_with_its_location_and_strict_refuses_the_file(
    bad: dict[str, Any], where: str, message: str
) -> None:
    good, broken = device(name="enterprises/E/devices/good"), {**device(), **bad}
    batch = parse_page(good, broken)
    assert [r.device.identifiers[0][1] for r in batch.reports] == ["enterprises/E/devices/good"]
    (skipped,) = batch.skipped
    assert skipped.startswith(f"page.json: {where}: ")
    assert message in skipped
    with pytest.raises(InvalidInput) as raised:
        parse_page(good, broken, strict=True)
    assert [p.where for p in raised.value.problems] == [f"page.json: {where}"]


def test_a_bad_single_device_is_skipped_located_at_its_root() -> None:
    batch = parse_amapi(json.dumps({"name": 5}), "one.json")
    assert batch.reports == ()
    assert batch.skipped == ("one.json: $.name: expected a string, not a number",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "page.json:1:1: not valid JSON"),
        ("[]", "expected a JSON object with a 'devices' list, not a list"),
        ('{"devices": {}}', "expected a 'devices' list, not an object"),
        ('{"kind": "admin#directory#mobiledevices"}', "the page has no 'devices' list"),
    ],
)
def test_a_page_of_the_wrong_shape_is_refused_whole(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_amapi(text, "page.json")
    assert message in str(raised.value)


# ── the organisation's user mapping ────────────────────────────────────────────────────────


def test_the_user_mapping_reads_csv_and_json_alike() -> None:
    csv_text = (
        f"user,email\r\n{USER},Ravi.K@Example.com\r\n\r\nenterprises/E/users/2,a@example.com\r\n"
    )
    json_text = json.dumps({USER: "Ravi.K@Example.com", "enterprises/E/users/2": "a@example.com"})
    expected = {USER: "ravi.k@example.com", "enterprises/E/users/2": "a@example.com"}
    assert read_amapi_users(csv_text, "users.csv") == expected
    assert read_amapi_users(json_text.encode(), "users.json") == expected


def test_every_bad_mapping_is_located_and_the_file_is_refused() -> None:
    csv_text = (
        f"user,email\n{USER},not-an-address\nravi,r@example.com\na,b,c\n{USER},x@example.com\n"
    )
    with pytest.raises(InvalidInput) as raised:
        read_amapi_users(csv_text, "users.csv")
    assert [(p.where, p.message[:30]) for p in raised.value.problems] == [
        ("users.csv:2", "'not-an-address' is not an ema"),
        ("users.csv:3", "'ravi' is not a user name ente"),
        ("users.csv:4", "expected 2 cells, not 3"),
    ]
    json_text = json.dumps({USER: 5})
    with pytest.raises(InvalidInput) as raised:
        read_amapi_users(json_text, "users.json")
    assert [p.where for p in raised.value.problems] == [f'users.json: $["{USER}"]']


def test_a_user_mapped_twice_to_different_addresses_is_refused() -> None:
    with pytest.raises(InvalidInput) as raised:
        read_amapi_users(f"user,email\n{USER},a@example.com\n{USER},b@example.com\n", "u.csv")
    assert [p.where for p in raised.value.problems] == ["u.csv:3"]


def test_a_user_mapping_without_the_header_is_refused() -> None:
    with pytest.raises(InvalidInput) as raised:
        read_amapi_users(f"{USER},a@example.com\n", "u.csv")
    assert raised.value.problems[0].where == "u.csv:1"


# ── end to end through the CLI, on both stores ─────────────────────────────────────────────


def test_importing_the_formats_example_through_the_cli(cli, monkeypatch, tmp_path: Path) -> None:
    users = tmp_path / "users.csv"
    users.write_text(f"user,email\n{USER},ravi.k@example.com\n")
    path = FIXTURES / "formats-device.json"
    result = cli("import", "amapi", "--users", str(users), str(path),
                 "--at", "2026-03-04T00:00:00Z", "--json")  # fmt: skip
    assert result.code == 0, result.err
    (summary,) = result.json()
    assert (summary["reports_applied"], summary["devices"], summary["skipped"]) == (1, 1, [])


def test_a_skipped_record_makes_the_cli_exit_non_zero(cli, monkeypatch, tmp_path: Path) -> None:
    path = tmp_path / "page.json"
    path.write_text(json.dumps({"devices": [device(), {"name": 5}]}))
    result = cli("import", "amapi", str(path), "--at", "2026-03-04T00:00:00Z", "--json")
    assert result.code != 0
    (summary,) = result.json()
    assert (summary["reports_applied"], summary["skipped"]) == (
        1,
        [
            "page.json: $.devices[1].name: expected a string, not a number".replace(
                "page.json", str(path)
            )
        ],
    )
