"""Exchange `Get-MobileDevice | ConvertTo-Json` files: every way PowerShell writes them, the exact
reports, one test per mapping rule, and located errors."""

from __future__ import annotations

import codecs
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from appwarden.devices.schemas import DeviceFacts, InventoryBatch, PersonFacts, ReportFacts
from appwarden.errors import InputTooLarge, InvalidInput
from appwarden.sources.common import ImportOptions
from appwarden.sources.exchange import parse_exchange
from appwarden.vocabulary import EvidenceKind, FormFactor, Platform

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources" / "exchange"
RECEIVED = datetime(2026, 3, 4, tzinfo=UTC)
OPTIONS = ImportOptions(received_at=RECEIVED, email_activity_window=timedelta(days=30))
DEVICE_ID = "6F24CAD599A5BF1A690246B8C68FAE8D"


def partnership(**fields: Any) -> dict[str, Any]:
    """A device row as the export line of docs/sources/exchange.md writes it; `fields` override
    (None removes a column)."""
    record: dict[str, Any] = {
        "DeviceId": DEVICE_ID,
        "DeviceType": "iPhone",
        "DeviceOS": "iOS 18.3.1 22D72",
        "PrimarySmtpAddress": "Jane.Doe@example.com",
        "UserPrincipalName": "Jane.Doe@corp.example.com",
        "LastSuccessSync": "2026-03-03T12:10:05.0000000Z",
    }
    record.update(fields)
    return {k: v for k, v in record.items() if v is not None}


def parse(value: Any, **kwargs: Any) -> InventoryBatch:
    return parse_exchange(json.dumps(value), "devices.json", **{"options": OPTIONS, **kwargs})


def only_report(*rows: dict[str, Any]) -> ReportFacts:
    batch = parse(list(rows))
    assert batch.skipped == ()
    (report,) = batch.reports
    return report


def formats_example() -> bytes:
    return (FIXTURES / "formats-device.json").read_bytes()


# ── the reference example, verbatim ────────────────────────────────────────────────────────


def test_the_formats_example_object_is_an_unowned_iphone_with_no_evidence() -> None:
    batch = parse_exchange(formats_example(), "formats-device.json", options=OPTIONS)
    assert batch == InventoryBatch(
        source="exchange",
        reports=(
            ReportFacts(
                device=DeviceFacts(
                    identifiers=(("eas_device_id", DEVICE_ID),),
                    platform=Platform.IOS,
                    form_factor=FormFactor.PHONE,
                ),
                source="exchange",
                evidence_kind=EvidenceKind.NONE,
                observed_at=None,
                where="formats-device.json: $",
            ),
        ),
    )


# ── the ways PowerShell writes the file ────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "encode",
    [
        lambda text: codecs.BOM_UTF16_LE + text.encode("utf-16-le"),  # Windows PowerShell 5 `>`
        lambda text: codecs.BOM_UTF16_BE + text.encode("utf-16-be"),
        lambda text: codecs.BOM_UTF8 + text.encode("utf-8"),  # Out-File -Encoding utf8 (PS 5)
        lambda text: text.encode("utf-8"),  # PowerShell 7
    ],
    ids=["utf-16le-bom", "utf-16be-bom", "utf-8-bom", "utf-8"],
)
def test_every_encoding_powershell_writes_reads_the_same(encode: Any) -> None:
    text = json.dumps([partnership(FriendlyName="Jane’s iPhone")], ensure_ascii=False)
    batch = parse_exchange(encode(text), "devices.json", options=OPTIONS)
    assert batch == parse(json.loads(text))
    assert batch.reports[0].device.name == "Jane’s iPhone"


def test_utf16_without_a_byte_order_mark_is_refused_with_a_hint() -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_exchange(json.dumps([partnership()]).encode("utf-16-le"), "d.json")
    assert "looks like UTF-16 without a byte order mark" in str(raised.value)


def test_broken_utf16_is_refused() -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_exchange(codecs.BOM_UTF16_LE + b"[\x00]", "d.json")
    assert "d.json: not valid UTF-16" in str(raised.value)


def test_the_size_limit_counts_the_bytes_as_written() -> None:
    data = codecs.BOM_UTF16_LE + json.dumps([partnership()]).encode("utf-16-le")
    with pytest.raises(InputTooLarge):
        parse_exchange(data, "d.json", max_bytes=len(data) - 1)
    assert len(parse_exchange(data, "d.json", max_bytes=len(data)).reports) == 1


def test_an_array_gives_one_report_per_partnership_located_by_index() -> None:
    batch = parse([partnership(), partnership(DeviceId="ANDROIDC123")])
    assert [r.device.identifiers for r in batch.reports] == [
        (("eas_device_id", DEVICE_ID),),
        (("eas_device_id", "ANDROIDC123"),),
    ]
    assert [r.where for r in batch.reports] == ["devices.json: $[0]", "devices.json: $[1]"]


def test_the_value_and_count_wrapper_of_windows_powershell_5_is_unwrapped() -> None:
    batch = parse({"value": [partnership(), partnership(DeviceId="X2")], "Count": 2})
    assert [r.where for r in batch.reports] == [
        "devices.json: $.value[0]",
        "devices.json: $.value[1]",
    ]


# ── times and the email resource ───────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "written",
    [
        r'"\/Date(1772539805000)\/"',  # Windows PowerShell 5: ms since 1970, UTC
        r'"\/Date(1772539805000+0100)\/"',  # with the writer's offset: the same instant
        '"2026-03-03T12:10:05.0000000Z"',  # PowerShell 7 / the export line's UTC form
        '"2026-03-03T13:10:05+01:00"',
    ],
)
def test_both_date_forms_give_the_same_instant_and_confer_email(written: str) -> None:
    text = json.dumps(partnership(LastSuccessSync="TIME")).replace('"TIME"', written)
    batch = parse_exchange(text, "d.json", options=OPTIONS)
    assert batch.skipped == ()
    assert batch.reports[0].device.resources == ("email",)
    edge = ImportOptions(
        received_at=datetime(2026, 3, 3, 12, 10, 5, tzinfo=UTC) + timedelta(days=30)
    )
    assert parse_exchange(text, "d.json", options=edge).reports[0].device.resources == ("email",)
    later = ImportOptions(received_at=edge.received_at + timedelta(seconds=1))
    assert parse_exchange(text, "d.json", options=later).reports[0].device.resources is None


def test_a_partnership_older_than_the_window_does_not_confer_email() -> None:
    old = (RECEIVED - timedelta(days=31)).isoformat()
    assert only_report(partnership(LastSuccessSync=old)).device.resources is None


@pytest.mark.parametrize(
    "row", [partnership(LastSuccessSync=None), {**partnership(), "LastSuccessSync": None}]
)
def test_without_statistics_or_a_successful_sync_email_is_not_conferred(
    row: dict[str, Any],
) -> None:
    assert only_report(row).device.resources is None


def test_a_time_without_an_offset_skips_the_record_it_could_be_any_zone() -> None:
    batch = parse([partnership(LastSuccessSync="2026-03-03T12:10:05")])
    assert batch.reports == ()
    (skipped,) = batch.skipped
    assert skipped.startswith("devices.json: $[0].LastSuccessSync: '2026-03-03T12:10:05' is not")


def test_observed_at_is_never_a_sync_time() -> None:
    report = only_report(partnership(FirstSyncTime="2025-11-02T09:15:40Z"))
    assert (report.observed_at, report.evidence_kind, report.apps) == (None, EvidenceKind.NONE, ())


# ── owners, accounts, platforms ────────────────────────────────────────────────────────────


def test_the_mailbox_address_owns_the_device_and_its_account_names_are_kept() -> None:
    batch = parse([partnership(LogonName="CORP\\JDoe", FriendlyName="Jane's iPhone")])
    assert batch.people == (
        PersonFacts(
            email="jane.doe@example.com", accounts=("jane.doe@corp.example.com", "corp\\jdoe")
        ),
    )
    assert batch.reports[0].device.owner_email == "jane.doe@example.com"
    assert batch.reports[0].device.name == "Jane's iPhone"


def test_without_a_mailbox_address_the_device_is_unowned_and_names_no_person() -> None:
    batch = parse([partnership(PrimarySmtpAddress=None, UserDisplayName="Jane Doe")])
    assert batch.skipped == ()
    assert batch.people == ()
    assert batch.reports[0].device.owner_email is None


@pytest.mark.parametrize(
    ("columns", "platform", "form_factor"),
    [
        ({"DeviceType": "iPhone", "DeviceOS": "iOS 18.3.1 22D72"}, Platform.IOS, FormFactor.PHONE),
        ({"DeviceType": "iPad", "DeviceOS": "iOS 17.5 21F79"}, Platform.IPADOS, FormFactor.TABLET),
        ({"DeviceType": "Outlook", "DeviceOS": "iOS 18.3"}, Platform.IOS, None),
        ({"DeviceType": "Outlook", "DeviceOS": "Android 14"}, Platform.ANDROID, None),
        ({"DeviceType": "Android", "DeviceOS": None}, Platform.ANDROID, None),
        ({"DeviceType": "WindowsMail", "DeviceOS": "Windows 10.0.19045"}, Platform.WINDOWS, None),
        ({"DeviceType": "SAMSUNGSMS918B", "DeviceOS": "TizenX 1"}, Platform.UNKNOWN, None),
        ({"DeviceType": None, "DeviceOS": None}, Platform.UNKNOWN, None),
    ],
)
def test_the_platform_comes_from_the_device_type_and_os(
    columns: dict[str, Any], platform: Platform, form_factor: FormFactor | None
) -> None:
    facts = only_report(partnership(**columns)).device
    assert (facts.platform, facts.form_factor, facts.ownership, facts.status) == (
        platform,
        form_factor,
        None,
        None,
    )


# ── bad records and bad files ──────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("bad", "where", "message"),
    [
        ({"DeviceId": None}, "$[1].DeviceId", "is required"),
        ({"DeviceId": 42}, "$[1].DeviceId", "expected a string"),
        ({"PrimarySmtpAddress": "Jane Doe"}, "$[1].PrimarySmtpAddress", "not an email address"),
        ({"UserPrincipalName": "jane\x00@corp"}, "$[1].UserPrincipalName", "control character"),
        ({"LogonName": "x" * 100_000}, "$[1].LogonName", "the limit is 512"),
        ({"LastSuccessSync": "last tuesday"}, "$[1].LastSuccessSync", "or /Date(ms)/"),
        ({"LastSuccessSync": "/Date(999999999999999)/"}, "$[1].LastSuccessSync", "out of range"),
    ],
)
def test_a_bad_record_is_skipped_with_its_location_and_strict_refuses_the_file(
    bad: dict[str, Any], where: str, message: str
) -> None:
    rows = [partnership(DeviceId="GOOD"), {**partnership(), **bad}]
    batch = parse(rows)
    assert [r.device.identifiers[0][1] for r in batch.reports] == ["GOOD"]
    (skipped,) = batch.skipped
    assert skipped.startswith(f"devices.json: {where}: ")
    assert message in skipped
    with pytest.raises(InvalidInput) as raised:
        parse(rows, strict=True)
    assert [p.where for p in raised.value.problems] == [f"devices.json: {where}"]


def test_an_element_that_is_not_an_object_is_a_skipped_record() -> None:
    batch = parse([partnership(), "6F24CAD5"])
    assert len(batch.reports) == 1
    assert batch.skipped == ("devices.json: $[1]: expected an object, not a string",)


def test_an_empty_array_imports_nothing() -> None:
    assert parse([]) == InventoryBatch(source="exchange")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("DeviceId : 6F24", "devices.json:1:1: not valid JSON"),  # Format-List output, not JSON
        ('"6F24"', "expected Get-MobileDevice output (an object or a list), not a string"),
        ("42", "not a number"),
    ],
)
def test_a_file_that_is_not_get_mobiledevice_json_is_refused_whole(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_exchange(text, "devices.json")
    assert message in str(raised.value)


# ── end to end through the CLI, on both stores ─────────────────────────────────────────────


def test_importing_the_formats_example_through_the_cli(cli, monkeypatch) -> None:
    path = FIXTURES / "formats-device.json"
    result = cli("import", "exchange", str(path), "--at", "2026-03-04T00:00:00Z", "--json")
    assert result.code == 0, result.err
    (summary,) = result.json()
    assert (summary["reports_applied"], summary["devices"], summary["people"]) == (1, 1, 0)


def test_a_utf16_export_with_owners_imports_through_the_cli(
    cli, monkeypatch, tmp_path: Path
) -> None:
    path = tmp_path / "devices.json"
    rows = [partnership(), partnership(DeviceId="ANDROIDC123", DeviceType="Android")]
    path.write_bytes(codecs.BOM_UTF16_LE + json.dumps(rows).encode("utf-16-le"))
    result = cli("import", "exchange", str(path), "--at", "2026-03-04T00:00:00Z", "--json")
    assert result.code == 0, result.err
    (summary,) = result.json()
    assert (summary["reports_applied"], summary["devices"], summary["people"]) == (2, 2, 1)


def test_a_skipped_record_makes_the_cli_exit_non_zero(cli, monkeypatch, tmp_path: Path) -> None:
    path = tmp_path / "devices.json"
    path.write_text(json.dumps([partnership(), partnership(DeviceId=None)]))
    result = cli("import", "exchange", str(path), "--at", "2026-03-04T00:00:00Z", "--json")
    assert result.code != 0
    (summary,) = result.json()
    assert summary["skipped"] == [f"{path}: $[1].DeviceId: is required and missing or empty"]
