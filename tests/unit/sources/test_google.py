"""Google Workspace `mobiledevices` pages: the exact reports, one test per mapping rule, and located
errors for bad records and bad pages."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from appwarden.devices.schemas import AppSeen, DeviceFacts, InventoryBatch, PersonFacts, ReportFacts
from appwarden.errors import InvalidInput
from appwarden.sources.google import parse_google
from appwarden.vocabulary import DeviceStatus, EvidenceKind, Platform

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources" / "google"
KIND = "admin#directory#mobiledevices"


def device(**fields: Any) -> dict[str, Any]:
    """A minimal Android device with an app list; `fields` override (None removes a key)."""
    record: dict[str, Any] = {
        "kind": "admin#directory#mobiledevice",
        "resourceId": "AFiQxQ8xY2k1c3Rvb2",
        "type": "ANDROID",
        "status": "APPROVED",
        "applications": [],
    }
    record.update(fields)
    return {k: v for k, v in record.items() if v is not None}


def parse_page(*devices: dict[str, Any], **kwargs: Any) -> InventoryBatch:
    page = {"kind": KIND, "mobiledevices": list(devices)}
    return parse_google(json.dumps(page), "page.json", **kwargs)


def only_report(*devices: dict[str, Any]) -> ReportFacts:
    batch = parse_page(*devices)
    assert batch.skipped == ()
    (report,) = batch.reports
    return report


# ── the reference example, verbatim ────────────────────────────────────────────────────────


def test_the_formats_example_page_gives_an_android_package_inventory_with_email() -> None:
    path = FIXTURES / "formats-page.json"
    batch = parse_google(path.read_bytes(), "formats-page.json")
    assert batch == InventoryBatch(
        source="google",
        people=(PersonFacts(email="ravi.k@example.com", display_name="Ravi K"),),
        reports=(
            ReportFacts(
                device=DeviceFacts(
                    identifiers=(
                        ("google_resource_id", "AFiQxQ8xY2k1c3Rvb2"),
                        ("google_device_id", "b7c1e9a04f3d2e18"),
                        ("serial", "R5CW30ABCDE"),
                    ),
                    platform=Platform.ANDROID,
                    owner_email="ravi.k@example.com",
                    resources=("email",),
                    status=DeviceStatus.ACTIVE,
                ),
                source="google",
                evidence_kind=EvidenceKind.INVENTORY,
                observed_at=datetime(2026, 3, 3, 12, 10, 5, 887000, tzinfo=UTC),
                apps=(AppSeen("android_package", "com.ss.android.ugc.trill", "38.4.3", "TikTok"),),
                coverage=("android_package",),
                where="formats-page.json: $.mobiledevices[0]",
            ),
        ),
    )


# ── one test per mapping rule ──────────────────────────────────────────────────────────────


def test_the_device_is_named_by_resource_id_device_id_and_serial_never_the_imei() -> None:
    report = only_report(device(deviceId="abc", serialNumber="SER1", imei="356938035643809"))
    assert report.device.identifiers == (
        ("google_resource_id", "AFiQxQ8xY2k1c3Rvb2"),
        ("google_device_id", "abc"),
        ("serial", "SER1"),
    )


@pytest.mark.parametrize(
    ("fields", "platform"),
    [
        ({"type": "IOS_SYNC", "os": "iOS 18.3"}, Platform.IOS),
        ({"type": "IOS_SYNC", "os": "iPadOS 17.5"}, Platform.IPADOS),
        ({"type": "GOOGLE_SYNC", "os": None}, Platform.UNKNOWN),
        ({"type": "GOOGLE_SYNC", "os": "iOS 18"}, Platform.IOS),
        ({"type": "ANDROID", "applications": None}, Platform.ANDROID),
    ],
)
def test_without_an_applications_key_the_evidence_is_none_never_an_empty_inventory(
    fields: dict[str, Any], platform: Platform
) -> None:
    report = only_report(device(**{"applications": None, **fields}))
    assert (report.evidence_kind, report.apps, report.coverage) == (EvidenceKind.NONE, (), None)
    assert report.device.platform == platform


def test_an_android_app_list_is_an_inventory_of_android_packages_only() -> None:
    apps = [
        {
            "packageName": "com.zhiliaoapp.musically",
            "versionName": "38.4.3",
            "displayName": "TikTok",
        },
        {"displayName": "no package"},
        {"packageName": "us.zoom.videomeetings"},
    ]
    report = only_report(device(applications=apps))
    assert report.evidence_kind == EvidenceKind.INVENTORY
    assert report.coverage == ("android_package",)
    assert report.apps == (
        AppSeen("android_package", "com.zhiliaoapp.musically", "38.4.3", "TikTok"),
        AppSeen("android_package", "us.zoom.videomeetings"),
    )


def test_an_app_list_on_a_device_that_is_not_android_proves_nothing() -> None:
    report = only_report(device(type="IOS_SYNC", applications=[{"packageName": "a.b"}]))
    assert (report.evidence_kind, report.apps) == (EvidenceKind.NONE, ())


@pytest.mark.parametrize("kind", ["ANDROID", "IOS_SYNC", "GOOGLE_SYNC", "SOMETHING_NEW"])
def test_every_listed_device_holds_the_email_resource(kind: str) -> None:
    assert only_report(device(type=kind)).device.resources == ("email",)


def test_observed_at_is_the_last_sync_never_the_first_sync() -> None:
    report = only_report(device(firstSync="2025-10-14T09:21:44Z", lastSync="2026-03-01T08:00:00Z"))
    assert report.observed_at == datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    assert only_report(device()).observed_at is None


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("WIPED", DeviceStatus.RETIRED),
        ("WIPING", DeviceStatus.ACTIVE),  # a wipe in progress may be cancelled
        ("APPROVED", DeviceStatus.ACTIVE),
        ("BLOCKED", DeviceStatus.ACTIVE),
        (None, DeviceStatus.ACTIVE),
    ],
)
def test_only_a_finished_wipe_retires_the_device(
    status: str | None, expected: DeviceStatus
) -> None:
    assert only_report(device(status=status)).device.status == expected


def test_the_first_address_owns_the_device_and_the_first_name_names_them() -> None:
    batch = parse_page(
        device(email=["Ravi.K@Example.com", "r@other.example"], name=["Ravi K", "R"])
    )
    assert batch.reports[0].device.owner_email == "ravi.k@example.com"
    assert batch.people == (PersonFacts(email="ravi.k@example.com", display_name="Ravi K"),)


def test_a_device_without_an_address_has_no_owner_and_names_no_person() -> None:
    batch = parse_page(device(email=[], name=["Ravi K"]))
    assert batch.reports[0].device.owner_email is None
    assert batch.people == ()


def test_an_unknown_type_with_unknown_os_text_is_an_unknown_platform_not_an_error() -> None:
    facts = only_report(device(type="CHROME_OS_X", os="Fuchsia 3")).device
    assert (facts.platform, facts.form_factor) == (Platform.UNKNOWN, None)


# ── pages ──────────────────────────────────────────────────────────────────────────────────


def test_each_page_file_is_read_on_its_own() -> None:
    page1 = {"kind": KIND, "nextPageToken": "t", "mobiledevices": [device(resourceId="r1")]}
    page2 = {"kind": KIND, "mobiledevices": [device(resourceId="r2")]}
    batches = [parse_google(json.dumps(p), f"p{i}.json") for i, p in enumerate((page1, page2))]
    assert [b.reports[0].device.identifiers[0][1] for b in batches] == ["r1", "r2"]
    assert batches[1].reports[0].where == "p1.json: $.mobiledevices[0]"


@pytest.mark.parametrize("page", [{"kind": KIND}, {"kind": KIND, "etag": "x", "mobiledevices": []}])
def test_an_empty_page_has_no_reports(page: dict[str, Any]) -> None:
    assert parse_google(json.dumps(page), "p.json") == InventoryBatch(source="google")


def test_a_device_with_only_its_resource_id_imports_with_no_evidence() -> None:
    report = only_report({"resourceId": "r1"})
    assert report.evidence_kind == EvidenceKind.NONE
    assert report.device == DeviceFacts(
        identifiers=(("google_resource_id", "r1"),),
        platform=Platform.UNKNOWN,
        resources=("email",),
        status=DeviceStatus.ACTIVE,
    )


@pytest.mark.parametrize(
    ("bad", "where", "message"),
    [
        ({"resourceId": None}, "$.mobiledevices[1].resourceId", "is required"),
        ({"lastSync": "2026-03-03 12:10"}, "$.mobiledevices[1].lastSync", "RFC 3339"),
        ({"email": "ravi@example.com"}, "$.mobiledevices[1].email", "expected a list"),
        ({"email": ["not an address"]}, "$.mobiledevices[1].email[0]", "not an email address"),
        ({"name": [7]}, "$.mobiledevices[1].name[0]", "expected a string"),
        ({"name": ["x" * 100_000]}, "$.mobiledevices[1].name[0]", "the limit is 1000"),
        ({"serialNumber": "R5\x1bCW"}, "$.mobiledevices[1].serialNumber", "control character"),
        (
            {"applications": [{"packageName": 5}]},
            "$.mobiledevices[1].applications[0].packageName",
            "string",
        ),
    ],
)
def test_a_bad_record_is_skipped_with_its_location_and_strict_refuses_the_file(
    bad: dict[str, Any], where: str, message: str
) -> None:
    good, broken = device(resourceId="good"), {**device(email=["a@example.com"]), **bad}
    batch = parse_page(good, broken)
    assert [r.device.identifiers[0][1] for r in batch.reports] == ["good"]
    (skipped,) = batch.skipped
    assert skipped.startswith(f"page.json: {where}: ")
    assert message in skipped
    with pytest.raises(InvalidInput) as raised:
        parse_page(good, broken, strict=True)
    assert [p.where for p in raised.value.problems] == [f"page.json: {where}"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "page.json:1:2: not valid JSON"),
        ("[]", "expected a JSON object with a 'mobiledevices' list, not a list"),
        ('{"kind": "x", "mobiledevices": {}}', "expected a 'mobiledevices' list, not an object"),
        ('{"devices": []}', "the page has no 'mobiledevices' list"),
    ],
)
def test_a_page_of_the_wrong_shape_is_refused_whole(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_google(text, "page.json")
    assert message in str(raised.value)


# ── end to end through the CLI, on both stores ─────────────────────────────────────────────


def test_importing_the_formats_example_through_the_cli(cli, monkeypatch) -> None:
    path = FIXTURES / "formats-page.json"
    result = cli("import", "google", str(path), "--at", "2026-03-04T00:00:00Z", "--json")
    assert result.code == 0, result.err
    (summary,) = result.json()
    assert (summary["reports_applied"], summary["devices"], summary["people"]) == (1, 1, 1)


def test_a_skipped_record_makes_the_cli_exit_non_zero(cli, monkeypatch, tmp_path: Path) -> None:
    path = tmp_path / "page.json"
    path.write_text(json.dumps({"kind": KIND, "mobiledevices": [device(), {"type": "ANDROID"}]}))
    result = cli("import", "google", str(path), "--at", "2026-03-04T00:00:00Z", "--json")
    assert result.code != 0
    (summary,) = result.json()
    assert summary["reports_applied"] == 1
    assert summary["skipped"] == [
        f"{path}: $.mobiledevices[1].resourceId: is required and missing or empty"
    ]
