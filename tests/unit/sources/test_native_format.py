"""The native inventory format: exact records from a valid file, and exact located problems."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from appwarden.devices.schemas import AppSeen, DeviceFacts, InventoryBatch, PersonFacts, ReportFacts
from appwarden.errors import InputTooLarge, InvalidInput
from appwarden.sources import native
from appwarden.sources.native import json_path, parse_native, parse_native_value
from appwarden.vocabulary import (
    AppNamespace,
    DeviceNamespace,
    DeviceStatus,
    EvidenceKind,
    FormFactor,
    Ownership,
    PersonStatus,
    Platform,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "inventory"
SCHEMA = Path(__file__).resolve().parents[3] / "docs" / "native-inventory.schema.json"

APP_CHOICES = ", ".join(m.value for m in AppNamespace)
DEVICE_NS_CHOICES = ", ".join(m.value for m in DeviceNamespace)


def at(text: str, needle: str, filename: str = "inv.json") -> str:
    """FILE:LINE:COL of the one occurrence of `needle` in `text` (1-based, in characters)."""
    assert text.count(needle) == 1, f"{needle!r} occurs {text.count(needle)} times"
    offset = text.index(needle)
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"{filename}:{line}:{column}"


def read(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------
# A valid file gives exact records


def test_valid_fixture_gives_exact_records() -> None:
    batch = parse_native(read("valid.json"), "valid.json")
    assert batch == InventoryBatch(
        source="mdm-export",
        people=(
            PersonFacts(
                email="alice@example.com",
                display_name="Alice Adams",
                aliases=("a.adams@example.com",),
                groups=("sales", "emea"),
                time_zone="America/Los_Angeles",
                status=PersonStatus.ACTIVE,
                left_at=None,
            ),
            PersonFacts(
                email="bob@example.com",
                display_name="Bob Brown",
                groups=(),
                status=PersonStatus.ACTIVE,
            ),
            PersonFacts(
                email="carol@example.com",
                status=PersonStatus.LEFT,
                left_at=datetime(2020, 6, 30, 15, 0, tzinfo=UTC),
            ),
        ),
        devices=(
            DeviceFacts(
                identifiers=(("jamf_id", "118"),),
                platform=Platform.MACOS,
                status=DeviceStatus.RETIRED,
            ),
        ),
        reports=(
            ReportFacts(
                device=DeviceFacts(
                    identifiers=(
                        ("udid", "00008110-000A1B2C3D4E801E"),
                        ("eas_device_id", "ApplDNPXK2ABCDEF"),
                    ),
                    platform=Platform.IOS,
                    form_factor=FormFactor.PHONE,
                    ownership=Ownership.PERSONAL,
                    owner_email="alice@example.com",
                    resources=("email",),
                    name="Alice's iPhone",
                    status=DeviceStatus.ACTIVE,
                ),
                source="checks",
                evidence_kind=EvidenceKind.TARGETED_CHECK,
                observed_at=datetime(2020, 7, 10, 15, 0, tzinfo=UTC),
                apps=(AppSeen("apple_bundle_id", "com.zhiliaoapp.musically", "38.4.0", "TikTok"),),
                coverage=None,
                checked=(
                    ("apple_bundle_id", "com.zhiliaoapp.musically"),
                    ("apple_bundle_id", "com.ss.iphone.ugc.Ame"),
                ),
                where="valid.json:23:5",
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
                observed_at=datetime(2020, 7, 10, 15, 30, tzinfo=UTC),
                apps=(
                    AppSeen("apple_bundle_id", "us.zoom.xos", "6.3.6 (47101)", "zoom.us"),
                    AppSeen("chrome_extension_id", "aapocclcgogkmnckokdopfmhonfmgoek"),
                ),
                coverage=("apple_bundle_id", "chrome_extension_id"),
                where="valid.json:48:5",
            ),
            ReportFacts(
                device=DeviceFacts(
                    identifiers=(("amapi_name", "enterprises/LC0abc/devices/3f2a"),),
                    platform=Platform.ANDROID,
                    ownership=Ownership.PERSONAL,
                    owner_email="bob@example.com",
                ),
                source="mdm-export",
                evidence_kind=EvidenceKind.MANAGED_ONLY,
                observed_at=None,
                where="valid.json:65:5",
            ),
            ReportFacts(
                device=DeviceFacts(
                    identifiers=(("eas_device_id", "ANDROIDC1234567"),),
                    owner_email="bob@example.com",
                ),
                source="exchange",
                evidence_kind=EvidenceKind.NONE,
                observed_at=None,
                where="valid.json:72:5",
            ),
        ),
        skipped=(),
    )


def test_valid_fixture_is_the_same_in_strict_mode_and_from_bytes() -> None:
    text = read("valid.json")
    assert parse_native(text.encode(), "valid.json", strict=True) == parse_native(
        text, "valid.json"
    )


def test_minimal_documents() -> None:
    assert parse_native('{"format": "appwarden.inventory/v1"}', "inv.json") == InventoryBatch()
    text = '{"format": "appwarden.inventory/v1", "source": null, "people": null, "devices": []}'
    assert parse_native(text, "inv.json") == InventoryBatch()


def test_a_byte_order_mark_is_ignored_and_columns_stay_put() -> None:
    text = '{"format": "appwarden.inventory/v1", "people": [{"email": "x"}]}'
    batch = parse_native(("\ufeff" + text).encode(), "inv.json")
    where = at(text, '"x"')
    assert batch.skipped == (
        f"{where}: email: 'x' is not an email address: "
        "expected exactly one '@' between a name and a domain",
    )


# --------------------------------------------------------------------------------------------
# A bad entry skips that whole entry (skip mode) or rejects the file (strict mode)

GOOD_PERSON = '{"email": "good@example.com"}'
GOOD_DEVICE = (
    '{"identifiers": [{"namespace": "serial", "value": "GOOD-SERIAL"}], '
    '"report": {"evidence_kind": "none"}}'
)


def document(people: tuple[str, ...] = (), devices: tuple[str, ...] = ()) -> str:
    return (
        '{\n  "format": "appwarden.inventory/v1",\n  "source": "test",\n  "people": [\n    '
        + ",\n    ".join((GOOD_PERSON, *people))
        + '\n  ],\n  "devices": [\n    '
        + ",\n    ".join((*devices, GOOD_DEVICE))
        + "\n  ]\n}\n"
    )


def device(extra: str = "", value: str = "D1") -> str:
    """A device entry with one udid and extra members."""
    return '{"identifiers": [{"namespace": "udid", "value": "' + value + '"}]' + extra + "}"


def report(body: str) -> str:
    return device(', "report": ' + body)


@dataclass(frozen=True)
class Case:
    id: str
    people: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    # (needle whose position is the location, message); "{good}" in a message is replaced by the
    # location of the good person's email
    problems: tuple[tuple[str, str], ...] = ()


TOO_MANY_APPS = json.dumps(
    [{"namespace": "android_package", "value": f"com.example.app{i}"} for i in range(10_001)]
)

ENTRY_CASES = [
    Case(
        "unknown key in a person",
        people=('{"email": "p1@example.com", "nickname": "P"}',),
        problems=(
            (
                '"P"',
                "unknown key 'nickname' in a person; allowed: accounts, aliases, display_name, email, "
                "groups, left_at, status, time_zone",
            ),
        ),
    ),
    Case(
        "unknown key in a device",
        devices=(device(', "colour": "red"'),),
        problems=(
            (
                '"red"',
                "unknown key 'colour' in a device; allowed: form_factor, identifiers, name, owner, "
                "ownership, platform, report, resources, status",
            ),
        ),
    ),
    Case(
        "unknown key in a report",
        devices=(report('{"evidence_kind": "inventory", "received_at": "2020-07-10T08:00:00Z"}'),),
        problems=(
            (
                '"2020-07-10T08:00:00Z"',
                "unknown key 'received_at' in a report; allowed: apps, checked, coverage, "
                "evidence_kind, observed_at, source",
            ),
        ),
    ),
    Case(
        "unknown key in an app skips the whole device, good apps included",
        devices=(
            report(
                '{"evidence_kind": "inventory", "apps": ['
                '{"namespace": "apple_bundle_id", "value": "com.example.ok"}, '
                '{"namespace": "apple_bundle_id", "value": "com.example.bad", "size": 412338176}]}'
            ),
        ),
        problems=(
            ("412338176", "unknown key 'size' in an app; allowed: name, namespace, value, version"),
        ),
    ),
    Case(
        "unknown key in a device identifier",
        devices=('{"identifiers": [{"namespace": "udid", "value": "D5", "source": "x"}]}',),
        problems=(
            ('"x"', "unknown key 'source' in a device identifier; allowed: namespace, value"),
        ),
    ),
    Case(
        "bad device identifier namespace",
        devices=('{"identifiers": [{"namespace": "imei", "value": "356938035643809"}]}',),
        problems=(
            (
                '"imei"',
                f"namespace: 'imei' is not a valid device identifier namespace; "
                f"expected one of: {DEVICE_NS_CHOICES}",
            ),
        ),
    ),
    Case(
        "bad app namespace",
        devices=(
            report(
                '{"evidence_kind": "inventory", "apps": '
                '[{"namespace": "bundle_id", "value": "com.zhiliaoapp.musically"}]}'
            ),
        ),
        problems=(
            (
                '"bundle_id"',
                "namespace: 'bundle_id' is not a valid app identifier namespace; "
                f"expected one of: {APP_CHOICES}",
            ),
        ),
    ),
    Case(
        "naive observed_at",
        devices=(report('{"evidence_kind": "inventory", "observed_at": "2020-07-10T08:00:00"}'),),
        problems=(
            (
                '"2020-07-10T08:00:00"',
                "observed_at: expected an RFC 3339 time with an offset, like "
                "2020-07-10T23:59:59-07:00, got '2020-07-10T08:00:00'",
            ),
        ),
    ),
    Case(
        "checked on an inventory report",
        devices=(
            report(
                '{"evidence_kind": "inventory", "checked": '
                '[{"namespace": "apple_bundle_id", "value": "com.example.c9"}]}'
            ),
        ),
        problems=(
            (
                '[{"namespace": "apple_bundle_id", "value": "com.example.c9"}]',
                "checked is only allowed for targeted_check and attestation, not inventory",
            ),
        ),
    ),
    Case(
        "targeted check without checked",
        devices=(report('{"evidence_kind": "targeted_check", "source": "checks10"}'),),
        problems=(
            (
                '{"evidence_kind": "targeted_check", "source": "checks10"}',
                "a targeted_check report must list the identifiers it checked",
            ),
        ),
    ),
    Case(
        "targeted check with an empty checked list",
        devices=(report('{"evidence_kind": "targeted_check", "checked": [], "source": "c11"}'),),
        problems=(
            ('[], "source": "c11"', "a targeted_check report must list the identifiers it checked"),
        ),
    ),
    Case(
        "coverage on an attestation",
        devices=(
            report(
                '{"evidence_kind": "attestation", "coverage": ["apple_bundle_id"], "checked": '
                '[{"namespace": "apple_bundle_id", "value": "com.example.c12"}]}'
            ),
        ),
        problems=(
            (
                '["apple_bundle_id"]',
                "coverage is not allowed for attestation: the checked identifiers are its coverage",
            ),
        ),
    ),
    Case(
        "coverage on a managed_only report",
        devices=(report('{"evidence_kind": "managed_only", "coverage": ["android_package"]}'),),
        problems=(
            (
                '["android_package"]',
                "coverage is only allowed for inventory reports; "
                "managed_only proves nothing absent",
            ),
        ),
    ),
    Case(
        "an app of a targeted check that was not checked",
        devices=(
            report(
                '{"evidence_kind": "targeted_check", '
                '"checked": [{"namespace": "android_package", "value": "com.example.asked"}], '
                '"apps": [{"namespace": "android_package", "value": "com.example.other"}]}'
            ),
        ),
        problems=(
            (
                '{"namespace": "android_package", "value": "com.example.other"}',
                "android_package:com.example.other is not among the checked identifiers; "
                "a targeted_check report can only say which checked identifiers are present",
            ),
        ),
    ),
    Case(
        "apps on an evidence none report",
        devices=(
            report(
                '{"evidence_kind": "none", "apps": '
                '[{"namespace": "android_package", "value": "com.example.n19"}]}'
            ),
        ),
        problems=(
            (
                '[{"namespace": "android_package", "value": "com.example.n19"}]',
                "a report with evidence_kind none carries no apps",
            ),
        ),
    ),
    Case(
        "empty identifier list",
        devices=('{"identifiers": [], "name": "No ids"}',),
        problems=(('[], "name"', "a device needs at least one identifier"),),
    ),
    Case(
        "null identifiers",
        devices=('{"identifiers": null, "name": "Null ids"}',),
        problems=(('null, "name"', "identifiers must not be null"),),
    ),
    Case(
        "missing identifiers",
        devices=('{"name": "Missing ids"}',),
        problems=(
            ('{"name": "Missing ids"}', "a device is missing the required key 'identifiers'"),
        ),
    ),
    Case(
        "blank identifier value",
        devices=('{"identifiers": [{"namespace": "serial", "value": "   "}]}',),
        problems=(('"   "', "value: must not be empty"),),
    ),
    Case(
        "over-long identifier value",
        devices=('{"identifiers": [{"namespace": "serial", "value": "' + "S" * 513 + '"}]}',),
        problems=(('"SSSS', "value: is 513 characters long; the limit is 512"),),
    ),
    Case(
        "over-long device name",
        devices=(device(', "name": "' + "n" * 1001 + '"'),),
        problems=(('"nnnn', "name: is 1001 characters long; the limit is 1000"),),
    ),
    Case(
        "bad person email",
        people=('{"email": "alice at example.com"}',),
        problems=(
            (
                '"alice at example.com"',
                "email: 'alice at example.com' is not an email address: it contains a space",
            ),
        ),
    ),
    Case(
        "bad owner email",
        devices=(device(', "owner": "bob@@example.com"'),),
        problems=(
            (
                '"bob@@example.com"',
                "owner: 'bob@@example.com' is not an email address: "
                "expected exactly one '@' between a name and a domain",
            ),
        ),
    ),
    Case(
        "bad time zone",
        people=('{"email": "p15@example.com", "time_zone": "Mars/Olympus_Mons"}',),
        problems=(
            (
                '"Mars/Olympus_Mons"',
                "time_zone: 'Mars/Olympus_Mons' is not an IANA time zone "
                "(like Europe/Berlin or America/Los_Angeles)",
            ),
        ),
    ),
    Case(
        "wrong types",
        devices=(device(', "platform": 7, "resources": "email", "report": []'),),
        problems=(
            ("7,", "platform must be a string, not a number"),
            ('"email", "report"', "resources must be a list, not a string"),
            ("[]}", "a report must be an object, not a list"),
        ),
    ),
    Case(
        "apps and identifiers that are not objects, or lack required keys",
        devices=(
            '{"identifiers": ["udid:D30"], "platform": true, "report": {"evidence_kind": '
            '"inventory", "apps": [null, {"name": "Nameless"}]}}',
        ),
        problems=(
            ('"udid:D30"', "a device identifier must be an object, not a string"),
            ("true", "platform must be a string, not a boolean"),
            ("null, {", "an app must be an object, not null"),
            ('{"name": "Nameless"}', "an app is missing the required key 'namespace'"),
            ('{"name": "Nameless"}', "an app is missing the required key 'value'"),
        ),
    ),
    Case(
        "bad resource name",
        devices=(device(', "resources": ["email", "E-Mail"]'),),
        problems=(
            (
                '"E-Mail"',
                "resources: 'E-Mail' is not a resource name: use 1 to 64 of a-z 0-9 . _ - "
                "(like email)",
            ),
        ),
    ),
    Case(
        "entry that is not an object",
        devices=('"udid:D22"',),
        problems=(('"udid:D22"', "a device must be an object, not a string"),),
    ),
    Case(
        "control character in a name",
        devices=(device(', "name": "Alice\\u0007s phone"'),),
        problems=(
            (
                '"Alice\\u0007s phone"',
                "name: contains a control character (U+0007) in 'Alice\\x07s phone'",
            ),
        ),
    ),
    Case(
        "control character in an app value",
        devices=(
            report(
                '{"evidence_kind": "inventory", "apps": '
                '[{"namespace": "android_package", "value": "com.example\\u0000x"}]}'
            ),
        ),
        problems=(
            (
                '"com.example\\u0000x"',
                "value: contains a control character (U+0000) in 'com.example\\x00x'",
            ),
        ),
    ),
    Case(
        "too many apps",
        devices=(report('{"evidence_kind": "inventory", "apps": ' + TOO_MANY_APPS + "}"),),
        problems=(
            (
                '[{"namespace": "android_package", "value": "com.example.app0"}',
                "the report lists 10001 apps; the limit is 10000",
            ),
        ),
    ),
    Case(
        "duplicate key inside an entry",
        devices=(device(', "platform": "ios", "platform": "android"'),),
        problems=(('"platform": "android"', "duplicate key 'platform' in $.devices[0]"),),
    ),
    Case(
        "left_at on an active person",
        people=('{"email": "p23@example.com", "left_at": "2020-07-01T00:00:00Z"}',),
        problems=(('"2020-07-01T00:00:00Z"', "left_at is only allowed when status is left"),),
    ),
    Case(
        "a person listed twice",
        people=('{"email": "GOOD@example.com"}',),
        problems=(('"GOOD@example.com"', "good@example.com is listed twice; first at {good}"),),
    ),
    Case(
        "every problem of an entry is collected",
        devices=(
            report(
                '{"evidence_kind": "inventory", "apps": [{"namespace": "web", "value": ""}]}'
            ).replace("}]", '}], "platform": "iphone", "ownership": "byod"', 1),
        ),
        problems=(
            (
                '"iphone"',
                "platform: 'iphone' is not a valid platform; expected one of: android, ios, "
                "ipados, macos, windows, linux, chromeos, unknown",
            ),
            (
                '"byod"',
                "ownership: 'byod' is not a valid ownership; "
                "expected one of: corporate, personal, unknown",
            ),
            (
                '"web"',
                f"namespace: 'web' is not a valid app identifier namespace; "
                f"expected one of: {APP_CHOICES}",
            ),
            ('""}', "value: must not be empty"),
        ),
    ),
    Case(
        "bad entries of both kinds at once",
        people=('{"email": 42}',),
        devices=('{"identifiers": [{"namespace": "udid"}]}',),
        problems=(
            ("42", "email must be a string, not a number"),
            (
                '{"namespace": "udid"}',
                "a device identifier is missing the required key 'value'",
            ),
        ),
    ),
]


def expected_lines(doc: str, case: Case) -> list[str]:
    good = at(doc, '"good@example.com"')
    return [f"{at(doc, needle)}: {message.format(good=good)}" for needle, message in case.problems]


@pytest.mark.parametrize("case", ENTRY_CASES, ids=[c.id for c in ENTRY_CASES])
def test_a_bad_entry_is_skipped_and_the_others_kept(case: Case) -> None:
    doc = document(case.people, case.devices)
    batch = parse_native(doc, "inv.json")
    assert batch.skipped == tuple(expected_lines(doc, case))
    assert batch.people == (PersonFacts(email="good@example.com", status=PersonStatus.ACTIVE),)
    assert batch.devices == ()
    assert batch.reports == (
        ReportFacts(
            device=DeviceFacts(identifiers=(("serial", "GOOD-SERIAL"),)),
            source="test",
            evidence_kind=EvidenceKind.NONE,
            observed_at=None,
            where=at(doc, GOOD_DEVICE),
        ),
    )


@pytest.mark.parametrize("case", ENTRY_CASES, ids=[c.id for c in ENTRY_CASES])
def test_strict_mode_rejects_the_file_listing_every_problem(case: Case) -> None:
    doc = document(case.people, case.devices)
    with pytest.raises(InvalidInput) as caught:
        parse_native(doc, "inv.json", strict=True)
    assert caught.value.lines() == expected_lines(doc, case)
    assert caught.value.message == f"inv.json: {len(case.problems)} problem(s)"


def test_strict_mode_lists_the_problems_of_every_entry() -> None:
    doc = document(
        ('{"email": "nobody"}',),
        (device(', "platform": "phone"'), device(', "form_factor": "ios"', value="D2")),
    )
    with pytest.raises(InvalidInput) as caught:
        parse_native(doc, "inv.json", strict=True)
    nobody, phone, ios = (at(doc, needle) for needle in ('"nobody"', '"phone"', '"ios"'))
    assert caught.value.lines() == [
        f"{nobody}: email: 'nobody' is not an email address: "
        "expected exactly one '@' between a name and a domain",
        f"{phone}: platform: 'phone' is not a valid platform; expected one of: "
        "android, ios, ipados, macos, windows, linux, chromeos, unknown",
        f"{ios}: form_factor: 'ios' is not a valid form factor; expected one of: "
        "phone, tablet, laptop, desktop, unknown",
    ]


def test_skipped_fixture_keeps_the_good_entries() -> None:
    batch = parse_native(read("bad-entries.json"), "bad-entries.json")
    assert batch.people == (PersonFacts(email="bob@example.com", status=PersonStatus.ACTIVE),)
    assert [r.device.identifiers for r in batch.reports] == [(("udid", "GOOD-1"),)]
    assert batch.skipped == (
        "bad-entries.json:5:49: time_zone: 'Pacific/Atlantis' is not an IANA time zone "
        "(like Europe/Berlin or America/Los_Angeles)",
        "bad-entries.json:14:37: namespace: 'imei' is not a valid device identifier namespace; "
        f"expected one of: {DEVICE_NS_CHOICES}",
        "bad-entries.json:17:24: observed_at: expected an RFC 3339 time with an offset, like "
        "2020-07-10T23:59:59-07:00, got '2020-07-10T08:00:00'",
        "bad-entries.json:20:91: unknown key 'colour' in an app; "
        "allowed: name, namespace, value, version",
    )


def test_a_report_needs_a_source_when_the_file_has_none() -> None:
    entry = report('{"evidence_kind": "none"}')
    doc = '{"format": "appwarden.inventory/v1", "devices": [' + entry + "]}"
    batch = parse_native(doc, "inv.json")
    where = at(doc, '{"evidence_kind"')
    assert batch.skipped == (
        f"{where}: a report needs a source: give report.source or a top-level source",
    )
    assert batch.reports == ()


# --------------------------------------------------------------------------------------------
# Problems with the file as a whole always reject it

FILE_CASES: list[tuple[str, str | bytes, list[str]]] = [
    (
        "not JSON",
        read("not-json.json"),
        ["inv.json:4:59: not valid JSON: Expecting property name enclosed in double quotes"],
    ),
    (
        "wrong format tag, bad source, people not a list, unknown top-level key",
        read("wrong-format.json"),
        [
            "inv.json:5:13: unknown key 'colour' in the inventory; "
            "allowed: $schema, devices, format, people, source",
            "inv.json:2:13: format must be 'appwarden.inventory/v1', not 'appwarden/v1'",
            "inv.json:3:13: source: 'Bad Source' is not a source name: "
            "use 1 to 64 of a-z 0-9 . _ -",
            "inv.json:4:13: people must be a list, not an object",
        ],
    ),
    ("empty", "", ["inv.json:1:1: not valid JSON: Expecting value"]),
    (
        "top level not an object",
        "[]",
        ["inv.json:1:1: the inventory must be an object, not a list"],
    ),
    (
        "missing format",
        '{"devices": []}',
        ["inv.json:1:1: the inventory is missing the required key 'format'"],
    ),
    (
        "format of the wrong type",
        '{"format": ["appwarden.inventory/v1"]}',
        ["inv.json:1:12: format must be 'appwarden.inventory/v1', not ['appwarden.inventory/v1']"],
    ),
    (
        "duplicate top-level key",
        '{"format": "appwarden.inventory/v1", "format": "appwarden.inventory/v1"}',
        ["inv.json:1:38: duplicate key 'format' in $"],
    ),
    (
        "extra data after the document",
        '{"format": "appwarden.inventory/v1"}\n{}',
        ["inv.json:2:1: not valid JSON: Extra data"],
    ),
    (
        "syntax error deep inside an entry",
        '{"format": "appwarden.inventory/v1",\n'
        ' "devices": [{"identifiers": [{"namespace": udid}]}]}',
        ["inv.json:2:45: not valid JSON: Expecting value"],
    ),
    ("not UTF-8", b'{"format":\n "\xff"}', ["inv.json:2:3: not valid UTF-8 (invalid start byte)"]),
    (
        "devices not a list, with a bad person as well",
        '{"format": "appwarden.inventory/v1", "devices": {}, "people": [{"email": ""}]}',
        [
            "inv.json:1:49: devices must be a list, not an object",
            "inv.json:1:74: email: an email address must not be empty",
        ],
    ),
    (
        "nested too deeply",
        '{"format": "appwarden.inventory/v1", "devices": [' + "[" * 100_000 + "]" * 100_000 + "]}",
        ["inv.json:1:112: nested deeper than 64 levels"],
    ),
]


FILE_CASES += [
    (
        "unterminated object",
        '{"format": "appwarden.inventory/v1"',
        ["inv.json:1:36: not valid JSON: Expecting ',' delimiter"],
    ),
    ("missing colon", '{"format" "x"}', ["inv.json:1:11: not valid JSON: Expecting ':' delimiter"]),
    (
        "a key that is not a string",
        '{"format": "appwarden.inventory/v1", 5: 1}',
        ["inv.json:1:38: not valid JSON: Expecting property name enclosed in double quotes"],
    ),
    ("empty object", "{}", ["inv.json:1:1: the inventory is missing the required key 'format'"]),
    ("extra data after a string", '"x" y', ["inv.json:1:5: not valid JSON: Extra data"]),
    (
        "entries not separated by commas",
        '{"format": "appwarden.inventory/v1", "devices": [{} {}]}',
        ["inv.json:1:53: not valid JSON: Expecting ',' delimiter"],
    ),
    (
        "duplicate key inside a top-level value",
        '{"format": "appwarden.inventory/v1", "source": {"a": 1, "a": 2}}',
        ["inv.json:1:57: duplicate key 'a' in $.source"],
    ),
    (
        "syntax error after a duplicate key inside an entry",
        '{"format": "appwarden.inventory/v1", "devices": [{"x": {"a": 1, "a": 2}, "b" 3}]}',
        ["inv.json:1:78: not valid JSON: Expecting ':' delimiter"],
    ),
]


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize(
    ("text", "lines"), [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES]
)
def test_a_bad_file_is_rejected_whole(text: str | bytes, lines: list[str], strict: bool) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_native(text, "inv.json", strict=strict)
    assert caught.value.lines() == lines


@pytest.mark.parametrize("as_bytes", [False, True])
def test_an_oversized_file_is_too_large(as_bytes: bool) -> None:
    text = '{"format": "appwarden.inventory/v1", "source": "ü"}'  # 52 bytes, 51 characters
    with pytest.raises(InputTooLarge) as caught:
        parse_native(text.encode() if as_bytes else text, "inv.json", max_bytes=51)
    assert caught.value.lines() == ["inv.json: the file is 52 bytes; the limit is 51"]
    with pytest.raises(InvalidInput):  # at the limit it is read (and here rejected for 'ü')
        parse_native(text, "inv.json", max_bytes=52)


def test_an_integer_too_long_to_convert_is_not_json() -> None:
    text = '{"format": "appwarden.inventory/v1", "devices": [' + "1" * 5000 + "]}"
    with pytest.raises(InvalidInput) as caught:
        parse_native(text, "inv.json")
    assert caught.value.lines()[0].startswith("inv.json:1:50: not valid JSON: Exceeds the limit")


def test_the_default_size_limit_is_64_mib() -> None:
    assert native.MAX_BYTES == 64 * 1024 * 1024
    with pytest.raises(InputTooLarge):
        parse_native(b" " * (64 * 1024 * 1024 + 1), "inv.json")


# --------------------------------------------------------------------------------------------
# Already decoded bodies (the HTTP API)


def test_parse_native_value_locates_problems_with_json_paths() -> None:
    value = json.loads(read("bad-entries.json"))
    batch = parse_native_value(value, json_path)
    assert batch.skipped == (
        "$.people[0].time_zone: time_zone: 'Pacific/Atlantis' is not an IANA time zone "
        "(like Europe/Berlin or America/Los_Angeles)",
        "$.devices[1].identifiers[0].namespace: namespace: 'imei' is not a valid device "
        f"identifier namespace; expected one of: {DEVICE_NS_CHOICES}",
        "$.devices[1].report.observed_at: observed_at: expected an RFC 3339 time with an offset, "
        "like 2020-07-10T23:59:59-07:00, got '2020-07-10T08:00:00'",
        "$.devices[1].report.apps[1].colour: unknown key 'colour' in an app; "
        "allowed: name, namespace, value, version",
    )
    assert [r.where for r in batch.reports] == ["$.devices[0]"]
    with pytest.raises(InvalidInput) as caught:
        parse_native_value(value, json_path, strict=True)
    assert caught.value.lines() == list(batch.skipped)
    assert caught.value.message == "inventory: 4 problem(s)"


def test_parse_native_value_gives_the_same_records_as_the_file() -> None:
    text = read("valid.json")
    from_file = parse_native(text, "valid.json")
    from_value = parse_native_value(json.loads(text), json_path)
    assert [r.where for r in from_value.reports] == [
        "$.devices[0]",
        "$.devices[1]",
        "$.devices[2]",
        "$.devices[3]",
    ]
    assert from_value.people == from_file.people
    assert from_value.devices == from_file.devices
    assert [(r.device, r.apps, r.checked, r.coverage) for r in from_value.reports] == [
        (r.device, r.apps, r.checked, r.coverage) for r in from_file.reports
    ]


def test_parse_native_value_rejects_a_non_object() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_native_value("inventory", json_path)
    assert caught.value.lines() == ["$: the inventory must be an object, not a string"]


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ((), "$"),
        (("devices", 3, "report", "apps", 0, "namespace"), "$.devices[3].report.apps[0].namespace"),
        (("people", 0, "a key"), '$.people[0]["a key"]'),
    ],
)
def test_json_path(path: tuple[str | int, ...], text: str) -> None:
    assert json_path(path) == text


# --------------------------------------------------------------------------------------------
# The JSON Schema stays in step with the parser


def load_schema() -> dict[str, Any]:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert isinstance(schema, dict)
    return schema


def test_schema_is_draft_2020_12_json() -> None:
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False


def test_schema_lists_exactly_the_keys_the_parser_accepts() -> None:
    schema = load_schema()
    defs = schema["$defs"]
    assert isinstance(defs, dict)
    objects = {
        "top level": (schema, native.TOP_KEYS),
        "person": (defs["person"], native.PERSON_KEYS),
        "device": (defs["device"], native.DEVICE_KEYS),
        "device identifier": (defs["device_identifier"], native.DEVICE_IDENTIFIER_KEYS),
        "report": (defs["report"], native.REPORT_KEYS),
        "checked identifier": (defs["app_identifier"], native.CHECKED_KEYS),
        "app": (defs["app"], native.APP_KEYS),
    }
    for name, (obj, keys) in objects.items():
        assert set(obj["properties"]) == set(keys), name
        assert obj["additionalProperties"] is False, name


def test_schema_enumerations_are_the_vocabulary() -> None:
    defs = load_schema()["$defs"]
    assert isinstance(defs, dict)
    for name, enum in {
        "platform": Platform,
        "form_factor": FormFactor,
        "ownership": Ownership,
        "person_status": PersonStatus,
        "device_status": DeviceStatus,
        "evidence_kind": EvidenceKind,
        "app_namespace": AppNamespace,
        "device_namespace": DeviceNamespace,
    }.items():
        assert defs[name]["enum"] == [m.value for m in enum], name


def test_schema_limits_are_the_parsers() -> None:
    schema = load_schema()
    defs = schema["$defs"]
    assert isinstance(defs, dict)
    assert schema["properties"]["format"] == {"const": native.FORMAT}
    apps = defs["report"]["properties"]["apps"]["anyOf"][0]
    assert apps["maxItems"] == native.MAX_APPS_PER_REPORT
    assert defs["identifier"]["maxLength"] == native.MAX_IDENTIFIER_CHARS
    assert defs["name"]["maxLength"] == native.MAX_NAME_CHARS
    assert defs["email"]["maxLength"] == native.MAX_EMAIL_CHARS
    assert defs["source_name"]["pattern"] == r"^\s*[a-z0-9._-]{1,64}\s*$"
    assert native.SOURCE_NAME.pattern == r"^[a-z0-9._-]{1,64}$"
