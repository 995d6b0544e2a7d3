"""Fleet hosts pages: exact reports per host, evidence by platform and enrollment, located skips."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from bench.fleet_export import fleet_hosts_page

from appwarden.devices.schemas import AppSeen, DeviceFacts, InventoryBatch, PersonFacts, ReportFacts
from appwarden.errors import InvalidInput
from appwarden.sources.fleet import parse_fleet
from appwarden.vocabulary import DeviceStatus, EvidenceKind, FormFactor, Ownership, Platform

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources" / "fleet"
MAC = ("apple_bundle_id", "chrome_extension_id")


def host(**overrides: Any) -> dict[str, Any]:
    """A host of a hosts page, like the formats.md example; overrides replace keys (None drops)."""
    base: dict[str, Any] = {
        "id": 7,
        "uuid": "6F1E0C2A-8B5D-4C77-9E21-3A0B5C7D9E10",
        "hostname": "h.local",
        "platform": "darwin",
        "hardware_serial": "C02ZK1ABMD6M",
        "seen_time": "2026-03-03T14:02:11Z",
        "software_updated_at": "2026-03-03T13:55:00Z",
        "software": [],
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def page(*hosts: dict[str, Any]) -> str:
    return json.dumps({"hosts": list(hosts)})


def only_report(batch: InventoryBatch) -> ReportFacts:
    assert batch.skipped == ()
    assert len(batch.reports) == 1
    return batch.reports[0]


def one(**overrides: Any) -> ReportFacts:
    return only_report(parse_fleet(page(host(**overrides)), "hosts.json"))


def test_hosts_page_example_verbatim() -> None:
    data = (FIXTURES / "hosts_page.json").read_bytes()
    assert parse_fleet(data, "hosts_page.json") == InventoryBatch(
        source="fleet",
        people=(PersonFacts(email="jane.doe@example.com"),),
        reports=(
            ReportFacts(
                device=DeviceFacts(
                    identifiers=(
                        ("fleet_id", "412"),
                        ("osquery_host", "6F1E0C2A-8B5D-4C77-9E21-3A0B5C7D9E10"),
                        ("serial", "C02ZK1ABMD6M"),
                    ),
                    platform=Platform.MACOS,
                    form_factor=FormFactor.LAPTOP,  # hardware_model MacBookPro18,3
                    owner_email="jane.doe@example.com",
                    name="jdoe-mbp",
                    status=DeviceStatus.ACTIVE,
                ),
                source="fleet",
                evidence_kind=EvidenceKind.INVENTORY,
                observed_at=datetime(2026, 3, 3, 13, 55, tzinfo=UTC),  # software_updated_at
                apps=(
                    AppSeen("apple_bundle_id", "com.zhiliaoapp.musically", "38.4.0", "TikTok.app"),
                ),
                coverage=MAC,
                where="hosts_page.json: $.hosts[0]",
            ),
        ),
    )


def test_a_host_detail_body_is_read_like_a_page_of_one() -> None:
    batch = parse_fleet(json.dumps({"host": host()}), "host.json")
    assert only_report(batch).where == "host.json: $.host"


# ── device ids ──────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("platform", "namespace", "form_factor"),
    [
        ("darwin", "osquery_host", None),
        ("ios", "udid", FormFactor.PHONE),
        ("ipados", "udid", FormFactor.TABLET),
        ("windows", "osquery_host", None),
    ],
)
def test_uuid_is_the_udid_only_on_ios_and_ipados(
    platform: str, namespace: str, form_factor: FormFactor | None
) -> None:
    report = one(platform=platform, id=9)
    assert report.device.identifiers == (
        ("fleet_id", "9"),
        (namespace, "6F1E0C2A-8B5D-4C77-9E21-3A0B5C7D9E10"),
        ("serial", "C02ZK1ABMD6M"),
    )
    assert report.device.form_factor == form_factor


@pytest.mark.parametrize(
    ("model", "form_factor"),
    [
        ("MacBookAir10,1", FormFactor.LAPTOP),
        ("iMac21,1", FormFactor.DESKTOP),
        ("Macmini9,1", FormFactor.DESKTOP),
        ("VMware7,1", None),
    ],
)
def test_mac_form_factor_comes_from_the_model(model: str, form_factor: FormFactor | None) -> None:
    assert one(hardware_model=model).device.form_factor == form_factor


def test_the_first_device_mapping_email_is_the_owner() -> None:
    mapping = [
        {"email": "Jane.Doe@Example.com", "source": "google_chrome_profiles"},
        {"email": "x@y.z"},
    ]
    batch = parse_fleet(page(host(device_mapping=mapping)), "hosts.json")
    assert only_report(batch).device.owner_email == "jane.doe@example.com"
    assert batch.people == (PersonFacts(email="jane.doe@example.com"),)


# ── evidence ────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("platform", "platform_like", "expected", "coverage"),
    [
        ("darwin", None, Platform.MACOS, MAC),
        (
            "windows",
            None,
            Platform.WINDOWS,
            ("windows_upgrade_code", "windows_program", "chrome_extension_id"),
        ),
        ("ubuntu", "debian", Platform.LINUX, ("deb_package", "rpm_package", "chrome_extension_id")),
        (
            "pop",
            "ubuntu debian",
            Platform.LINUX,
            ("deb_package", "rpm_package", "chrome_extension_id"),
        ),
        ("chrome", None, Platform.CHROMEOS, ("chrome_extension_id",)),
        ("ios", None, Platform.IOS, ("apple_bundle_id",)),
        ("plan9", None, Platform.UNKNOWN, ()),
    ],
)
def test_coverage_is_what_fleet_collects_on_the_platform(
    platform: str, platform_like: str | None, expected: Platform, coverage: tuple[str, ...]
) -> None:
    report = one(platform=platform, platform_like=platform_like)
    assert report.device.platform == expected
    assert report.evidence_kind == EvidenceKind.INVENTORY
    assert report.coverage == coverage


def test_flatpak_and_snap_are_covered_only_when_fleet_reports_them() -> None:
    snap = {"name": "spotify", "version": "1.2", "source": "snap_packages"}
    report = one(platform="ubuntu", software=[snap])
    assert report.coverage == ("deb_package", "rpm_package", "snap_package", "chrome_extension_id")
    assert report.apps == (AppSeen("snap_package", "spotify", "1.2", "spotify"),)


def test_a_host_without_software_populated_is_evidence_none_not_an_empty_inventory() -> None:
    report = one(software=None)
    assert (report.evidence_kind, report.coverage, report.apps) == (EvidenceKind.NONE, None, ())


@pytest.mark.parametrize("status", ["On (personal)", "On (manual - personal)"])
def test_a_personal_ios_enrollment_is_managed_only(status: str) -> None:
    report = one(platform="ios", mdm={"enrollment_status": status})
    assert (report.evidence_kind, report.coverage) == (EvidenceKind.MANAGED_ONLY, None)
    assert report.device.ownership == Ownership.PERSONAL


def test_a_corporate_ipad_is_a_full_bundle_id_inventory() -> None:
    app = {
        "name": "Zoom",
        "version": "6.3",
        "source": "ipados_apps",
        "bundle_identifier": "us.zoom.videomeetings",
    }
    report = one(platform="ipados", mdm={"enrollment_status": "On (automatic)"}, software=[app])
    assert (report.evidence_kind, report.coverage) == (EvidenceKind.INVENTORY, ("apple_bundle_id",))
    assert report.device.ownership is None


def test_every_android_host_is_managed_only_with_its_packages() -> None:
    app = {
        "name": "TikTok",
        "version": "38",
        "source": "android_apps",
        "application_id": "com.zhiliaoapp.musically",
    }
    report = one(platform="android", mdm={"enrollment_status": "On (automatic)"}, software=[app])
    assert report.evidence_kind == EvidenceKind.MANAGED_ONLY
    assert report.apps == (AppSeen("android_package", "com.zhiliaoapp.musically", "38", "TikTok"),)


def test_observed_at_is_software_updated_at_never_seen_time() -> None:
    assert one(software_updated_at=None).observed_at is None
    assert one(software_updated_at="0001-01-01T00:00:00Z").observed_at is None


# ── software ────────────────────────────────────────────────────────────────────────────────


def test_each_software_source_maps_to_its_namespace() -> None:
    software = [
        {
            "name": "Zoom(64bit)",
            "version": "6.3",
            "source": "programs",
            "vendor": "Zoom Video Communications, Inc.",
            "upgrade_code": "{C819B794-A45C-4F27-9860-0C86492A52CC}",
        },
        {
            "name": "7-Zip",
            "version": "23",
            "source": "programs",
            "vendor": "Igor Pavlov",
            "upgrade_code": "",
        },
        {"name": "curl", "version": "8.5", "source": "deb_packages"},
        {"name": "zoom", "version": "6.3", "source": "rpm_packages"},
        {
            "name": "uBlock",
            "version": "1.6",
            "source": "chrome_extensions",
            "extension_id": "cjpalhdlnbpafiamejdnhcphjbkeiagm",
        },
        {"name": "Dark Reader", "version": "4", "source": "firefox_addons"},
    ]
    report = one(platform="windows", software=software)
    assert [(a.namespace, a.value) for a in report.apps] == [
        ("windows_upgrade_code", "{C819B794-A45C-4F27-9860-0C86492A52CC}"),
        ("windows_program", "Zoom(64bit)|Zoom Video Communications, Inc."),
        ("windows_program", "7-Zip|Igor Pavlov"),
        ("deb_package", "curl"),
        ("rpm_package", "zoom"),
        ("chrome_extension_id", "cjpalhdlnbpafiamejdnhcphjbkeiagm"),
    ]


def test_software_without_a_usable_identifier_is_dropped_not_the_host() -> None:
    software = [{"name": "x", "source": "chrome_extensions", "extension_id": "not-an-id"}]
    assert one(software=software).apps == ()


# ── pages and bad input ─────────────────────────────────────────────────────────────────────


def test_two_page_files_are_read_each_on_its_own() -> None:
    first = parse_fleet(page(host(id=1)), "page-1.json")
    second = parse_fleet(page(host(id=2, uuid="A2")), "page-2.json")
    assert [r.device.identifiers[0] for r in (*first.reports, *second.reports)] == [
        ("fleet_id", "1"),
        ("fleet_id", "2"),
    ]


def test_an_empty_page_is_an_empty_batch() -> None:
    assert parse_fleet('{"hosts": []}', "last.json") == InventoryBatch(source="fleet")


def test_missing_optional_fields_leave_the_facts_unset() -> None:
    report = only_report(parse_fleet(page({"id": 5, "software": []}), "hosts.json"))
    assert report.device == DeviceFacts(
        identifiers=(("fleet_id", "5"),), platform=Platform.UNKNOWN, status=DeviceStatus.ACTIVE
    )
    assert report.observed_at is None


def test_a_malformed_host_is_skipped_with_its_location_and_strict_refuses_the_file() -> None:
    text = page(host(id=1), host(id=2, software_updated_at="yesterday"), host(id=3, software="x"))
    batch = parse_fleet(text, "hosts.json")
    assert [r.device.identifiers[0][1] for r in batch.reports] == ["1"]
    assert batch.skipped == (
        "hosts.json: $.hosts[1].software_updated_at: 'yesterday' is not an RFC 3339 time with an offset",
        "hosts.json: $.hosts[2].software: expected a list, not a string",
    )
    with pytest.raises(InvalidInput) as raised:
        parse_fleet(text, "hosts.json", strict=True)
    assert len(raised.value.problems) == 2


def test_a_host_without_an_id_is_skipped() -> None:
    batch = parse_fleet(page(host(id=None)), "hosts.json")
    assert batch.skipped == ("hosts.json: $.hosts[0].id: expected the host's numeric id, not null",)


@pytest.mark.parametrize(
    "text", ['[{"id": 1}]', '{"hosts": {"id": 1}}', '{"count": 3}', "not json"]
)
def test_a_page_that_is_not_a_hosts_response_is_refused_whole(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_fleet(text, "hosts.json")


def test_hostile_strings_are_located_errors() -> None:
    batch = parse_fleet(
        page(
            host(id=1, hardware_serial="C02\x00X"),
            host(id=2, hostname="h" * 100_000, display_name=None),
        ),
        "hosts.json",
    )
    assert batch.reports == ()
    assert batch.skipped == (
        "hosts.json: $.hosts[0].hardware_serial: contains a control character (U+0000) in 'C02\\x00X'",
        "hosts.json: $.hosts[1].hostname: is 100000 characters long; the limit is 512",
    )


def test_a_generated_benchmark_page_of_50_hosts_is_read_whole() -> None:
    generated = fleet_hosts_page(50, start=100)
    assert generated == fleet_hosts_page(50, start=100)  # deterministic
    batch = parse_fleet(json.dumps(generated), "bench.json")
    assert batch.skipped == ()
    assert len(batch.reports) == 50
    platforms = {r.device.platform for r in batch.reports}
    assert platforms == {Platform.MACOS, Platform.WINDOWS, Platform.LINUX}
    assert all(
        r.evidence_kind == EvidenceKind.INVENTORY and len(r.apps) >= 40 for r in batch.reports
    )
    tiktok = [r for r in batch.reports if any("musically" in a.value for a in r.apps)]
    assert len(tiktok) == 5  # every tenth host is a Mac with TikTok (i % 5 == 0 and a Mac slot)
