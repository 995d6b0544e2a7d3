"""CSV inventories: exact records from a valid file, and exact FILE:ROW:COLUMN problems."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from appwarden.devices.schemas import AppSeen, DeviceFacts, InventoryBatch, PersonFacts, ReportFacts
from appwarden.errors import InputTooLarge, InvalidInput
from appwarden.sources import csvfile
from appwarden.sources.csvfile import parse_csv
from appwarden.vocabulary import AppNamespace, EvidenceKind, FormFactor, Ownership, Platform

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "inventory"
DOCS = Path(__file__).resolve().parents[3] / "docs" / "inventory-native.md"
APP_CHOICES = ", ".join(m.value for m in AppNamespace)


def read(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def test_valid_fixture_gives_exact_records() -> None:
    batch = parse_csv(read("valid.csv"), "valid.csv")
    alice_phone = DeviceFacts(
        identifiers=(("udid", "00008110-000A1B2C3D4E801E"), ("eas_device_id", "ApplDNPXK2ABCDEF")),
        platform=Platform.IOS,
        form_factor=FormFactor.PHONE,
        ownership=Ownership.PERSONAL,
        owner_email="alice@example.com",
        resources=("email",),
        name="Alice's iPhone",
    )
    assert batch == InventoryBatch(
        people=(
            PersonFacts(
                email="alice@example.com",
                display_name="Alice Adams",
                time_zone="America/Los_Angeles",
            ),
            PersonFacts(email="bob@example.com", display_name="Bob Brown"),
        ),
        devices=(),
        reports=(
            ReportFacts(
                device=alice_phone,
                source="mdm-export",
                evidence_kind=EvidenceKind.INVENTORY,
                observed_at=datetime(2020, 7, 10, 15, 0, tzinfo=UTC),
                apps=(
                    AppSeen("apple_bundle_id", "com.zhiliaoapp.musically", "38.4.0", "TikTok"),
                    AppSeen("apple_bundle_id", "com.apple.mobilemail", None, "Mail, by Apple"),
                ),
                where="valid.csv:2:device_identifiers",
            ),
            ReportFacts(
                device=DeviceFacts(
                    identifiers=(("serial", "C02XK1ABJGH5"),),
                    platform=Platform.MACOS,
                    form_factor=FormFactor.LAPTOP,
                    ownership=Ownership.CORPORATE,
                    owner_email="bob@example.com",
                    resources=("email", "webmail"),
                ),
                source="mdm-export",
                evidence_kind=EvidenceKind.INVENTORY,
                observed_at=None,
                apps=(),
                where="valid.csv:4:device_identifiers",
            ),
            ReportFacts(
                device=DeviceFacts(
                    identifiers=(("eas_device_id", "ANDROIDC1234567"),),
                    platform=Platform.ANDROID,
                    form_factor=FormFactor.PHONE,
                    ownership=Ownership.UNKNOWN,
                    resources=("email",),
                ),
                source="exchange",
                evidence_kind=EvidenceKind.NONE,
                observed_at=None,
                where="valid.csv:5:device_identifiers",
            ),
        ),
        skipped=(),
    )
    assert parse_csv(read("valid.csv").encode("utf-8-sig"), "valid.csv", strict=True) == batch


def test_minimal_file_and_blank_lines() -> None:
    text = "Device_Identifiers , SOURCE,evidence_kind\n\nserial:S1,mdm,inventory\n,,\n"
    assert parse_csv(text, "inv.csv") == InventoryBatch(
        reports=(
            ReportFacts(
                device=DeviceFacts(identifiers=(("serial", "S1"),)),
                source="mdm",
                evidence_kind=EvidenceKind.INVENTORY,
                observed_at=None,
                where="inv.csv:3:device_identifiers",
            ),
        )
    )


# --------------------------------------------------------------------------------------------
# A bad row skips its whole device; strict mode rejects the file with every problem

HEADER = (
    "owner_email,owner_name,device_identifiers,platform,source,evidence_kind,observed_at,"
    "app_namespace,app_value,app_version"
)
GOOD_ROW = (
    "good@example.com,Good,serial:GOOD,android,mdm,inventory,,android_package,com.example.good,1.0"
)
GOOD_REPORT = ReportFacts(
    device=DeviceFacts(
        identifiers=(("serial", "GOOD"),), platform=Platform.ANDROID, owner_email="good@example.com"
    ),
    source="mdm",
    evidence_kind=EvidenceKind.INVENTORY,
    observed_at=None,
    apps=(AppSeen("android_package", "com.example.good", "1.0"),),
    where="inv.csv:2:device_identifiers",
)

# (id, rows after the header and the good row (which is row 2), expected problems)
ROW_CASES: list[tuple[str, list[str], list[str]]] = [
    (
        "bad app namespace skips every row of the device",
        [
            "a@example.com,,serial:S1,android,mdm,inventory,,android_package,com.example.fine,",
            "a@example.com,,serial:S1,android,mdm,inventory,,bundle,com.zhiliaoapp.musically,",
        ],
        [
            "inv.csv:4:app_namespace: app_namespace: 'bundle' is not a valid app identifier "
            f"namespace; expected one of: {APP_CHOICES}",
        ],
    ),
    (
        "inconsistent device attributes",
        [
            "a@example.com,,serial:S1 udid:U1,ios,mdm,inventory,2020-07-10T08:00:00-07:00,,,",
            "a@example.com,,udid:U1  serial:S1,android,mdm,inventory,2020-07-10T16:00:00Z,,,",
        ],
        [
            "inv.csv:4:platform: platform 'android' differs from 'ios' on row 3 of the same device",
            "inv.csv:4:observed_at: observed_at '2020-07-10T16:00:00Z' differs from "
            "'2020-07-10T15:00:00+00:00' on row 3 of the same device",
        ],
    ),
    (
        "half an app",
        [
            ",,serial:S1,android,mdm,inventory,,android_package,,",
            ",,serial:S1,android,mdm,inventory,,,com.example.x,",
            ",,serial:S1,android,mdm,inventory,,,,2.0",
        ],
        [
            "inv.csv:3:app_value: app_value is empty but app_namespace is not; "
            "give both or neither",
            "inv.csv:4:app_namespace: app_namespace is empty but app_value is not; "
            "give both or neither",
            "inv.csv:5:app_version: app_version is given without an app "
            "(app_namespace and app_value)",
        ],
    ),
    (
        "bad device identifiers",
        [",,udid imei:356938035643809 serial:,android,mdm,inventory,,,,"],
        [
            "inv.csv:3:device_identifiers: device_identifiers: 'udid' is not a namespace:value "
            "pair (like serial:C02XYZ)",
            "inv.csv:3:device_identifiers: device_identifiers: 'imei' is not a valid device "
            "identifier namespace; expected one of: udid, enrollment_id, serial, eas_device_id, "
            "intune_id, azure_ad_device_id, osquery_host, fleet_id, google_resource_id, "
            "google_device_id, amapi_name, enterprise_specific_id, jamf_id, agent_id",
            "inv.csv:3:device_identifiers: device_identifiers: must not be empty",
        ],
    ),
    (
        "empty device identifiers",
        [",,  ,android,mdm,inventory,,,,"],
        ["inv.csv:3:device_identifiers: device_identifiers must not be empty"],
    ),
    (
        "apps on an evidence none device",
        [
            ",,eas_device_id:E1,ios,exchange,none,,,,",
            ",,eas_device_id:E1,ios,exchange,none,,apple_bundle_id,com.example.x,",
        ],
        ["inv.csv:4:app_namespace: a report with evidence_kind none carries no apps"],
    ),
    (
        "targeted checks need the native format",
        [",,udid:U1,ios,checks,targeted_check,,apple_bundle_id,com.zhiliaoapp.musically,"],
        [
            "inv.csv:3:evidence_kind: targeted_check reports cannot be written in CSV (they need "
            "the checked identifiers); use the native format",
        ],
    ),
    (
        "rows with the wrong number of fields",
        [
            ",,serial:S1,android,mdm,inventory,,,,,extra",
            ",,serial:S2,android,mdm",
        ],
        [
            "inv.csv:3:app_version: the row has 11 fields; the header has 10",
            "inv.csv:4:evidence_kind: the row has 5 fields; the header has 10",
            "inv.csv:4:evidence_kind: evidence_kind is required",
        ],
    ),
    (
        "missing source, naive observed_at and a control character",
        [
            ",,serial:S1,android,,inventory,2020-07-10T08:00:00,,,",
            ',,serial:S1,android,,inventory,,android_package,"com.example\x07bell",',
        ],
        [
            "inv.csv:3:observed_at: observed_at: expected an RFC 3339 time with an offset, like "
            "2020-07-10T23:59:59-07:00, got '2020-07-10T08:00:00'",
            "inv.csv:3:source: source is required",
            "inv.csv:4:app_value: app_value: contains a control character (U+0007) in "
            "'com.example\\x07bell'",
        ],
    ),
    (
        "a repeated bad value is reported once per device",
        [
            ",,serial:S1,iphone,mdm,inventory,,,,",
            ",,serial:S1,iphone,mdm,inventory,,,,",
        ],
        [
            "inv.csv:3:platform: platform: 'iphone' is not a valid platform; expected one of: "
            "android, ios, ipados, macos, windows, linux, chromeos, unknown",
        ],
    ),
    (
        "owner details that contradict another device of the same owner",
        [
            "good@example.com,,serial:S2,android,mdm,inventory,,,,",
            "good@example.com,Goody,serial:S2,android,mdm,inventory,,,,",
        ],
        [
            "inv.csv:4:owner_name: owner_name 'Goody' for good@example.com differs from "
            "'Good' on row 2",
        ],
    ),
    (
        "owner name without an owner email",
        [",Nobody,serial:S1,android,mdm,inventory,,,,"],
        ["inv.csv:3:owner_name: owner_name is given without an owner_email"],
    ),
    (
        "rows are numbered by the line they start on",
        [
            ',"Multi\nLine",serial:S1,android,mdm,inventory,,,,',
            ",,serial:S1,android,mdm,inventory,,,,",
            ",,serial:S1,android,mdm,inventory,,apple_bundle_id,,",
        ],
        [
            "inv.csv:3:owner_name: owner_name: contains a control character (U+000A) in "
            "'Multi\\nLine'",
            "inv.csv:6:app_value: app_value is empty but app_namespace is not; "
            "give both or neither",
        ],
    ),
    (
        "too many apps",
        [
            f",,serial:S1,android,mdm,inventory,,android_package,com.example.app{i},"
            for i in range(10_001)
        ],
        ["inv.csv:10003:app_value: the report lists 10001 apps; the limit is 10000"],
    ),
]


def csv_text(rows: list[str]) -> str:
    return "\r\n".join([HEADER, GOOD_ROW, *rows]) + "\r\n"


@pytest.mark.parametrize(
    ("rows", "problems"), [c[1:] for c in ROW_CASES], ids=[c[0] for c in ROW_CASES]
)
def test_a_bad_row_skips_its_device_and_keeps_the_others(
    rows: list[str], problems: list[str]
) -> None:
    batch = parse_csv(csv_text(rows), "inv.csv")
    assert batch.skipped == tuple(problems)
    assert batch.reports == (GOOD_REPORT,)
    assert batch.people == (PersonFacts(email="good@example.com", display_name="Good"),)


@pytest.mark.parametrize(
    ("rows", "problems"), [c[1:] for c in ROW_CASES], ids=[c[0] for c in ROW_CASES]
)
def test_strict_mode_rejects_the_file_with_every_problem(
    rows: list[str], problems: list[str]
) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_csv(csv_text(rows), "inv.csv", strict=True)
    assert caught.value.lines() == problems


def test_bad_rows_fixture() -> None:
    batch = parse_csv(read("bad-rows.csv"), "bad-rows.csv")
    assert [r.device.identifiers for r in batch.reports] == [(("serial", "S1"),)]
    assert batch.people == (PersonFacts(email="alice@example.com"),)
    assert batch.skipped == (
        "bad-rows.csv:4:app_namespace: app_namespace: 'bundle' is not a valid app identifier "
        f"namespace; expected one of: {APP_CHOICES}",
        "bad-rows.csv:6:platform: platform 'android' differs from 'ios' "
        "on row 5 of the same device",
    )
    with pytest.raises(InvalidInput) as caught:
        parse_csv(read("bad-rows.csv"), "bad-rows.csv", strict=True)
    assert caught.value.lines() == list(batch.skipped)


# --------------------------------------------------------------------------------------------
# Problems with the file as a whole always reject it

FILE_CASES: list[tuple[str, str | bytes, list[str]]] = [
    (
        "unknown column, missing required column, app column without its partner",
        read("bad-header.csv"),
        [
            "inv.csv:1:colour: unknown column 'colour'; the columns are: "
            + ", ".join(csvfile.COLUMNS),
            "inv.csv:1: missing required column 'source'",
            "inv.csv:1:app_namespace: column 'app_namespace' needs the 'app_value' column too",
        ],
    ),
    (
        "repeated and unnamed columns",
        "device_identifiers,source,evidence_kind,source,\nserial:S1,mdm,inventory,mdm,\n",
        [
            "inv.csv:1:source: column 'source' appears twice",
            "inv.csv:1:5: a column has no name",
        ],
    ),
    ("empty", "\n\n", ["inv.csv: the file is empty; expected a header row naming the columns"]),
    (
        "NUL byte",
        "device_identifiers,source,evidence_kind\nserial:S\x001,mdm,inventory\n",
        ["inv.csv:2: contains a NUL byte"],
    ),
    (
        "unclosed quote",
        'device_identifiers,source,evidence_kind\nserial:S1,"mdm,inventory\n',
        ["inv.csv:2: not valid CSV: unexpected end of data"],
    ),
    (
        "text after a closing quote",
        'device_identifiers,source,evidence_kind\nserial:S1,"mdm"x,inventory\n',
        ["inv.csv:2: not valid CSV: ',' expected after '\"'"],
    ),
    (
        "not UTF-8",
        b"device_identifiers,source,evidence_kind\nserial:\xe9,mdm,inventory\n",
        ["inv.csv:2:8: not valid UTF-8 (invalid continuation byte)"],
    ),
]


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize(
    ("text", "lines"), [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES]
)
def test_a_bad_file_is_rejected_whole(text: str | bytes, lines: list[str], strict: bool) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_csv(text, "inv.csv", strict=strict)
    assert caught.value.lines() == lines


def test_an_oversized_file_is_too_large() -> None:
    text = "device_identifiers,source,evidence_kind\n"
    with pytest.raises(InputTooLarge) as caught:
        parse_csv(text, "inv.csv", max_bytes=len(text) - 1)
    assert caught.value.lines() == [f"inv.csv: the file is {len(text)} bytes; the limit is 39"]
    assert parse_csv(text, "inv.csv", max_bytes=len(text)) == InventoryBatch()


def test_owner_details_from_several_devices_are_combined() -> None:
    text = (
        "owner_email,owner_name,owner_time_zone,device_identifiers,resources,source,evidence_kind\n"
        "a@example.com,,,serial:S1,email,mdm,inventory\n"
        "A@example.com,Ann,Europe/Berlin,serial:S2,email,mdm,inventory\n"
        "a@example.com,,,serial:S3,email,mdm,inventory\n"
        "a@example.com,,,serial:S3,email webmail,mdm,inventory\n"
    )
    batch = parse_csv(text, "inv.csv")
    assert batch.people == (
        PersonFacts(email="a@example.com", display_name="Ann", time_zone="Europe/Berlin"),
    )
    assert [r.device.identifiers for r in batch.reports] == [
        (("serial", "S1"),),
        (("serial", "S2"),),
    ]
    assert batch.skipped == (
        "inv.csv:5:resources: resources 'email webmail' differs from 'email' "
        "on row 4 of the same device",
    )


def test_every_column_is_documented() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    for column in csvfile.COLUMNS:
        assert f"`{column}`" in docs, column
