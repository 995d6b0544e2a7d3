"""Apple MDM results: the reference plist verbatim (raw and inside a webhook envelope), each mapping
rule, results tied to the command that asked for them, and hostile plists refused."""

from __future__ import annotations

import base64
import json
import plistlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from appwarden.db.uow import unit_of_work
from appwarden.devices.schemas import AppSeen, DeviceFacts, InventoryBatch, ReportFacts
from appwarden.errors import InvalidInput
from appwarden.sources.apple_mdm import parse_apple_mdm, parse_apple_mdm_run
from appwarden.sources.registry import crawl_for, parser_for
from appwarden.usecases.ingest import ingest
from appwarden.vocabulary import EvidenceKind, FormFactor, Ownership, Platform

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources" / "apple-mdm"
UDID = "00008110-000A1B2C3D4E801E"
COMMAND = "7A1B6C0E-2D33-4B8B-9A0E-5C1F0D9E2B11"
TIKTOK = AppSeen("apple_bundle_id", "com.zhiliaoapp.musically", "38.4.0", "TikTok")
PHONE = DeviceFacts(identifiers=(("udid", UDID),))


def fixture(name: str) -> tuple[str, bytes]:
    return name, (FIXTURES / name).read_bytes()


def result(**keys: Any) -> bytes:
    """A full XML result plist (with Apple's DOCTYPE, as devices send it)."""
    body = {"CommandUUID": COMMAND, "Status": "Acknowledged", "UDID": UDID, **keys}
    return plistlib.dumps({k: v for k, v in body.items() if v is not None})


def envelope(payload: bytes, **event: Any) -> dict[str, Any]:
    ack = {"udid": UDID, "status": "Acknowledged", "command_uuid": COMMAND, **event}
    ack["raw_payload"] = base64.b64encode(payload).decode()
    return {"topic": "mdm.Acknowledge", "event_id": "e1", "created_at": "2026-03-03T14:05:09Z",
            "acknowledge_event": {k: v for k, v in ack.items() if v is not None}}  # fmt: skip


def command(**options: Any) -> bytes:
    request = {"RequestType": "InstalledApplicationList", **options}
    return plistlib.dumps({"CommandUUID": COMMAND, "Command": request})


APPS = [{"Identifier": "com.zhiliaoapp.musically", "Name": "TikTok", "ShortVersion": "38.4.0"},
        {"Identifier": "us.zoom.videomeetings", "Name": "Zoom", "Version": "6.3"},
        {"Name": "A macOS app without a bundle id"}]  # fmt: skip


# ── the reference example, verbatim ─────────────────────────────────────────────────────────


def test_the_example_plist_as_a_raw_file_is_a_full_bundle_id_inventory() -> None:
    name, text = fixture("installed-apps.plist")  # a bare <dict>: no <plist> wrapper
    assert parse_apple_mdm(text, name) == InventoryBatch(
        source="apple-mdm",
        reports=(
            ReportFacts(
                device=PHONE,
                source="apple-mdm",
                evidence_kind=EvidenceKind.INVENTORY,
                observed_at=None,  # a raw plist carries no time: the import time is used
                apps=(TIKTOK,),
                coverage=("apple_bundle_id",),
                where="installed-apps.plist: $",
            ),
        ),
    )


def test_the_example_in_a_webhook_envelope_is_stamped_with_created_at() -> None:
    name, text = fixture("envelope.json")
    (report,) = parse_apple_mdm(text, name).reports
    assert report.device == PHONE
    assert (report.evidence_kind, report.coverage, report.apps) == (
        EvidenceKind.INVENTORY,
        ("apple_bundle_id",),
        (TIKTOK,),
    )
    assert report.observed_at == datetime(2026, 3, 3, 14, 5, 9, tzinfo=UTC)
    assert report.where == "envelope.json: $.acknowledge_event"


def test_the_example_wrapped_as_a_full_plist_document_reads_the_same() -> None:
    _, bare = fixture("installed-apps.plist")
    full = plistlib.dumps(plistlib.loads(bare, fmt=plistlib.FMT_XML))
    assert full.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE plist PUBLIC')
    assert parse_apple_mdm(full, "r.plist").reports[0].apps == (TIKTOK,)
    binary = plistlib.dumps(plistlib.loads(bare, fmt=plistlib.FMT_XML), fmt=plistlib.FMT_BINARY)
    assert parse_apple_mdm(binary, "r.plist").reports[0].apps == (TIKTOK,)


# ── the command a result answers ────────────────────────────────────────────────────────────


def kind_of(files: list[tuple[str, bytes]]) -> tuple[Any, ...]:
    reports = [r for b in parse_apple_mdm_run(files) for r in b.reports]
    (report,) = reports
    return report.evidence_kind, report.coverage, report.checked, [a.value for a in report.apps]


def test_a_command_with_identifiers_makes_the_answer_a_targeted_check() -> None:
    ask = command(Identifiers=["com.zhiliaoapp.musically", "com.ss.iphone.ugc.Ame"])
    files = [("cmd.plist", ask), ("r.plist", result(InstalledApplicationList=APPS))]
    assert kind_of(files) == (
        EvidenceKind.TARGETED_CHECK,
        None,
        (
            ("apple_bundle_id", "com.zhiliaoapp.musically"),
            ("apple_bundle_id", "com.ss.iphone.ugc.Ame"),
        ),
        ["com.zhiliaoapp.musically"],  # only what was asked about and is present
    )


def test_a_managed_apps_only_command_makes_the_answer_managed_only() -> None:
    files = [
        ("r.plist", result(InstalledApplicationList=APPS)),
        ("c.plist", command(ManagedAppsOnly=True)),
    ]
    assert kind_of(files) == (
        EvidenceKind.MANAGED_ONLY, None, (), ["com.zhiliaoapp.musically", "us.zoom.videomeetings"],
    )  # fmt: skip


def test_without_its_command_an_answer_is_a_full_inventory_of_bundle_ids() -> None:
    files = [("r.plist", result(InstalledApplicationList=APPS))]
    assert kind_of(files)[:2] == (EvidenceKind.INVENTORY, ("apple_bundle_id",))


def test_a_user_enrollment_is_personal_and_managed_only() -> None:
    payload = result(UDID=None, EnrollmentID="ENR-1", InstalledApplicationList=APPS)
    text = json.dumps(envelope(payload, udid=None, enrollment_id="ENR-1"))
    (report,) = parse_apple_mdm(text, "ue.json").reports
    assert report.device == DeviceFacts(
        identifiers=(("enrollment_id", "ENR-1"),), ownership=Ownership.PERSONAL
    )
    assert (report.evidence_kind, report.coverage) == (EvidenceKind.MANAGED_ONLY, None)


# ── device information, statuses, envelopes ─────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("model", "platform", "form_factor"),
    [
        ("iPhone", Platform.IOS, FormFactor.PHONE),
        ("iPad", Platform.IPADOS, FormFactor.TABLET),
        ("MacBook Pro", Platform.MACOS, FormFactor.LAPTOP),
        ("Mac mini", Platform.MACOS, None),
        ("Apple TV", Platform.UNKNOWN, FormFactor.UNKNOWN),
    ],
)
def test_device_information_gives_serial_eas_id_and_platform(
    model: str, platform: Platform, form_factor: FormFactor | None
) -> None:
    info = {"ModelName": model, "SerialNumber": "F2LX12345", "EASDeviceIdentifier": "EAS9",
            "DeviceName": "Jane's", "UDID": "ignored: the result's UDID names the device"}  # fmt: skip
    batch = parse_apple_mdm(result(QueryResponses=info), "info.plist")
    assert batch.reports == ()
    assert batch.devices == (
        DeviceFacts(
            identifiers=(("udid", UDID), ("serial", "F2LX12345"), ("eas_device_id", "EAS9")),
            platform=platform,
            form_factor=form_factor,
            name="Jane's",
        ),
    )


def test_not_now_and_idle_are_normal_errors_are_skipped_with_their_location() -> None:
    lines = [
        envelope(result(Status="NotNow"), status="NotNow"),
        envelope(result(Status="Idle"), status="Idle"),
        envelope(result(Status="Error"), status="Error"),
        envelope(result(Status="CommandFormatError"), status="CommandFormatError"),
        {"topic": "mdm.Authenticate", "checkin_event": {"udid": UDID}},
    ]
    text = "\n".join(json.dumps(line) for line in lines)
    batch = parse_apple_mdm(text, "events.jsonl")
    assert batch.reports == ()
    assert batch.skipped == (
        f"events.jsonl:3: $.acknowledge_event: the device answered 'Error' to command '{COMMAND}': no report",
        f"events.jsonl:4: $.acknowledge_event: the device answered 'CommandFormatError' to command '{COMMAND}': no report",
    )  # fmt: skip


def test_a_bad_record_is_skipped_with_its_location_and_strict_refuses_the_run() -> None:
    good = envelope(result(InstalledApplicationList=APPS))
    bad_time = {**good, "created_at": "yesterday"}
    bad_base64 = envelope(b"")
    bad_base64["acknowledge_event"]["raw_payload"] = "***"
    text = "\n".join(json.dumps(x) for x in (good, bad_time, bad_base64, good)) + "\n{oops\n"
    batch = parse_apple_mdm(text, "e.jsonl")
    assert [r.where for r in batch.reports] == [
        "e.jsonl:1: $.acknowledge_event",
        "e.jsonl:4: $.acknowledge_event",
    ]
    assert batch.skipped == (
        "e.jsonl:2: $.created_at: 'yesterday' is not an RFC 3339 time with an offset",
        "e.jsonl:3: $.acknowledge_event.raw_payload: not base64: Only base64 data is allowed",
        "e.jsonl:5: not valid JSON: Expecting property name enclosed in double quotes",
    )  # fmt: skip
    with pytest.raises(InvalidInput) as raised:
        parse_apple_mdm(text, "e.jsonl", strict=True)
    assert [str(p) for p in raised.value.problems] == list(batch.skipped)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"Identifier": "com.x\x07"}, "$.InstalledApplicationList[1].Identifier: contains a control character (U+0007) in 'com.x\\x07'"),
        ({"Identifier": "x" * 100_000}, "$.InstalledApplicationList[1].Identifier: is 100000 characters long; the limit is 512"),
        ({"Identifier": 7}, "$.InstalledApplicationList[1].Identifier: expected a string, not a number"),
    ],
)  # fmt: skip
def test_hostile_values_skip_the_whole_report_located(row: dict[str, Any], message: str) -> None:
    body = {"CommandUUID": COMMAND, "Status": "Acknowledged", "UDID": UDID,
            "InstalledApplicationList": [APPS[0], row]}  # fmt: skip
    binary = plistlib.dumps(body, fmt=plistlib.FMT_BINARY)  # XML cannot carry control characters
    batch = parse_apple_mdm(binary, "r.plist")
    assert batch.reports == ()
    assert batch.skipped == (f"r.plist: {message}",)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (b'<!DOCTYPE d [<!ENTITY a "aaaa">]><dict><key>x</key><string>&a;</string></dict>',
         "f: a plist with a DOCTYPE other than Apple's, or an ENTITY, is refused"),
        (b"<dict><key>x</key>", "f: not a valid plist: no element found: line 1, column 18"),
        (b"bplist00\x00", "f: not a valid plist: Invalid file"),
        (b"not json", "f:1:1: not valid JSON: Expecting value"),
    ],
)  # fmt: skip
def test_a_file_that_is_neither_a_plist_nor_json_refuses_the_run(text: bytes, problem: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_apple_mdm_run([("ok.plist", result()), ("f", text)])
    assert [str(p) for p in raised.value.problems] == [problem]


def test_a_json_value_that_is_no_envelope_is_a_skipped_record() -> None:
    assert parse_apple_mdm(b"[1, 2]", "f").skipped == ("f: $: expected an object, not a list",)


def test_an_empty_json_lines_file_is_an_empty_batch() -> None:
    assert parse_apple_mdm(b"\n\n", "e.jsonl") == InventoryBatch(source="apple-mdm")


def test_the_registry_finds_both_the_file_parser_and_the_run() -> None:
    assert parser_for("apple-mdm") is parse_apple_mdm
    assert crawl_for("apple-mdm") is parse_apple_mdm_run


# ── end to end, on both stores ──────────────────────────────────────────────────────────────


def test_results_are_stored_by_the_ingest_unchanged(store: Any) -> None:
    files = [
        fixture("envelope.json"),
        ("info.plist", result(QueryResponses={"ModelName": "iPhone"})),
    ]
    with unit_of_work(store.engine, now=datetime(2026, 3, 4, tzinfo=UTC)) as uow:
        results = [ingest(uow, batch) for batch in parse_apple_mdm_run(files)]
    assert [(r.reports_applied, r.devices, r.skipped) for r in results] == [(1, 1, []), (0, 1, [])]


def test_the_cli_imports_apple_mdm_results(cli: Any) -> None:
    path = FIXTURES / "envelope.json"
    result = cli("import", "apple-mdm", str(path), "--at", "2026-03-04T00:00:00Z", "--json")
    assert result.code == 0, result.err
    summaries = result.json()
    assert isinstance(summaries, list)
    assert [(s["reports_applied"], s["devices"]) for s in summaries] == [(1, 1)]
