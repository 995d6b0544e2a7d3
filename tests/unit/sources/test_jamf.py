"""Jamf Pro inventory pages: computers and mobile devices, evidence by enrollment, located skips."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from appwarden.devices.schemas import AppSeen, DeviceFacts, InventoryBatch, PersonFacts, ReportFacts
from appwarden.errors import InvalidInput
from appwarden.sources.jamf import parse_jamf
from appwarden.vocabulary import DeviceStatus, EvidenceKind, FormFactor, Ownership, Platform

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources" / "jamf"
ZOOM = {
    "identifier": "us.zoom.videomeetings",
    "name": "Zoom",
    "version": "6301",
    "shortVersion": "6.3.1",
}


def mobile(**overrides: Any) -> dict[str, Any]:
    """A `/api/v2/mobile-devices/detail` result; overrides replace keys (None drops)."""
    base: dict[str, Any] = {
        "mobileDeviceId": "118",
        "deviceType": "iOS",
        "hardware": {"serialNumber": "F2LXK0AAHG7F", "model": "iPhone 15"},
        "general": {
            "udid": "00008110-000A1B2C3D4E801E",
            "displayName": "Ana's iPhone",
            "supervised": True,
            "lastInventoryUpdateDate": "2026-03-02T08:00:00.123Z",
            "exchangeActiveSyncDeviceIdentifier": "BE3A1C0F9D2E4B6A8C0E1F2A3B4C5D6E",
        },
        "userAndLocation": {
            "username": "amartin",
            "realname": "Ana Martin",
            "email": "ana.martin@example.com",
        },
        "applications": [ZOOM],
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def page(*records: dict[str, Any]) -> str:
    return json.dumps({"totalCount": len(records), "results": list(records)})


def only_report(batch: InventoryBatch) -> ReportFacts:
    assert batch.skipped == ()
    assert len(batch.reports) == 1
    return batch.reports[0]


def one(record: dict[str, Any]) -> ReportFacts:
    return only_report(parse_jamf(page(record), "page.json"))


def test_computers_inventory_example_verbatim_without_report_date_is_observed_at_receipt() -> None:
    data = (FIXTURES / "computers_inventory.json").read_bytes()
    assert parse_jamf(data, "computers.json") == InventoryBatch(
        source="jamf",
        people=(PersonFacts(email="ana.martin@example.com", display_name="Ana Martin"),),
        reports=(
            ReportFacts(
                device=DeviceFacts(
                    identifiers=(
                        ("jamf_id", "computer:118"),
                        ("udid", "5E2B7F10-94C3-4C0D-8E6A-1B2C3D4E5F60"),
                    ),
                    platform=Platform.MACOS,
                    owner_email="ana.martin@example.com",
                    name="MKT-MBA-014",
                    status=DeviceStatus.ACTIVE,
                ),
                source="jamf",
                evidence_kind=EvidenceKind.INVENTORY,
                # the example has lastContactTime (a check-in) but no reportDate: received_at
                observed_at=None,
                apps=(AppSeen("apple_bundle_id", "us.zoom.xos", "6.3.6 (47101)", "zoom.us.app"),),
                coverage=("apple_bundle_id",),
                where="computers.json: $.results[0]",
            ),
        ),
    )


def computer(**general: Any) -> dict[str, Any]:
    record = json.loads((FIXTURES / "computers_inventory.json").read_text())["results"][0]
    record["general"] |= general
    return dict(record)


def test_a_computer_is_observed_at_its_report_date_and_serial_comes_from_hardware() -> None:
    record = computer(reportDate="2026-03-03T12:00:00Z") | {
        "hardware": {"serialNumber": "C02ZK1ABMD6M", "model": "MacBook Air (M2, 2022)"}
    }
    report = one(record)
    assert report.observed_at == datetime(2026, 3, 3, 12, tzinfo=UTC)
    assert ("serial", "C02ZK1ABMD6M") in report.device.identifiers
    assert report.device.form_factor == FormFactor.LAPTOP


def test_a_supervised_mobile_device_is_a_full_inventory_with_its_ids() -> None:
    report = one(mobile())
    assert report.device == DeviceFacts(
        identifiers=(
            ("jamf_id", "mobile:118"),
            ("udid", "00008110-000A1B2C3D4E801E"),
            ("serial", "F2LXK0AAHG7F"),
            ("eas_device_id", "BE3A1C0F9D2E4B6A8C0E1F2A3B4C5D6E"),
        ),
        platform=Platform.IOS,
        form_factor=FormFactor.PHONE,
        owner_email="ana.martin@example.com",
        name="Ana's iPhone",
        status=DeviceStatus.ACTIVE,
    )
    assert (report.evidence_kind, report.coverage) == (EvidenceKind.INVENTORY, ("apple_bundle_id",))
    assert report.apps == (AppSeen("apple_bundle_id", "us.zoom.videomeetings", "6.3.1", "Zoom"),)
    assert report.observed_at == datetime(2026, 3, 2, 8, 0, 0, 123000, tzinfo=UTC)


def test_computer_and_mobile_ids_never_collide() -> None:
    batch = parse_jamf(page(computer(), mobile()), "mixed.json")
    assert [r.device.identifiers[0] for r in batch.reports] == [
        ("jamf_id", "computer:118"),
        ("jamf_id", "mobile:118"),
    ]


@pytest.mark.parametrize(
    "personal",
    [
        {"general": {"deviceOwnershipLevel": "Personal"}},
        {"general": {"deviceOwnershipType": "UserEnrollment"}},
        {"general": {"enrollmentMethod": "User Enrollment (account-driven)"}},
    ],
)
def test_a_personal_or_user_enrolled_mobile_is_managed_only(personal: dict[str, Any]) -> None:
    report = one(mobile(**personal))
    assert (report.evidence_kind, report.coverage) == (EvidenceKind.MANAGED_ONLY, None)
    assert report.device.ownership == Ownership.PERSONAL
    assert report.apps == (AppSeen("apple_bundle_id", "us.zoom.videomeetings", "6.3.1", "Zoom"),)


def test_an_ipad_is_ipados_and_a_tablet() -> None:
    report = one(mobile(hardware={"model": "iPad Pro (11-inch)"}))
    assert (report.device.platform, report.device.form_factor) == (
        Platform.IPADOS,
        FormFactor.TABLET,
    )


def test_an_unknown_device_type_is_platform_unknown() -> None:
    report = one(mobile(deviceType="tvOS", hardware={"model": "Apple TV 4K"}))
    assert (report.device.platform, report.device.form_factor) == (Platform.UNKNOWN, None)


def test_a_record_without_the_applications_section_is_evidence_none() -> None:
    report = one(mobile(applications=None))
    assert (report.evidence_kind, report.coverage, report.apps) == (EvidenceKind.NONE, None, ())


def test_the_mobile_timestamp_falls_back_to_last_inventory_update_timestamp() -> None:
    record = mobile(general={"lastInventoryUpdateTimestamp": "2026-03-01T00:00:00Z"})
    assert one(record).observed_at == datetime(2026, 3, 1, tzinfo=UTC)


def test_the_username_is_not_an_account_and_the_owner_is_only_the_email() -> None:
    batch = parse_jamf(
        page(mobile(userAndLocation={"username": "amartin", "realname": "Ana"})), "p.json"
    )
    assert only_report(batch).device.owner_email is None
    assert batch.people == ()


def test_two_pages_are_read_each_on_its_own_and_an_empty_page_is_empty() -> None:
    first = parse_jamf(page(mobile()), "page-0.json")
    second = parse_jamf(page(mobile(mobileDeviceId="119")), "page-1.json")
    assert [r.device.identifiers[0][1] for r in (*first.reports, *second.reports)] == [
        "mobile:118",
        "mobile:119",
    ]
    assert parse_jamf('{"totalCount": 2, "results": []}', "page-2.json") == InventoryBatch(
        source="jamf"
    )


def test_a_malformed_record_is_skipped_with_its_location_and_strict_refuses_the_file() -> None:
    text = page(mobile(), mobile(mobileDeviceId=None, id=None), computer(reportDate="last week"))
    batch = parse_jamf(text, "page.json")
    assert len(batch.reports) == 1
    assert batch.skipped == (
        "page.json: $.results[1].id: expected the mobile id, not null",
        "page.json: $.results[2].general.reportDate: 'last week' is not an RFC 3339 time with an offset",
    )
    with pytest.raises(InvalidInput):
        parse_jamf(text, "page.json", strict=True)


@pytest.mark.parametrize("text", ['{"totalCount": 1}', '{"results": {}}', "[]", "{"])
def test_a_page_that_is_not_an_inventory_response_is_refused_whole(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_jamf(text, "page.json")


def test_hostile_strings_are_located_errors() -> None:
    bad_app = dict(ZOOM, identifier="us.zoom\x1bx")
    batch = parse_jamf(
        page(mobile(applications=[bad_app]), mobile(hardware={"serialNumber": "S" * 100_000})),
        "p.json",
    )
    assert batch.reports == ()
    assert batch.skipped == (
        "p.json: $.results[0].applications[0].identifier: contains a control character (U+001B) in 'us.zoom\\x1bx'",
        "p.json: $.results[1].hardware.serialNumber: is 100000 characters long; the limit is 512",
    )
