"""Intune (Graph) pages: the reference examples verbatim, each mapping rule, and the crawl rule that
decides when a run of pages proves an app absent."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from appwarden.db.uow import unit_of_work
from appwarden.devices.schemas import AppSeen, DeviceFacts, InventoryBatch, PersonFacts, ReportFacts
from appwarden.errors import InvalidInput
from appwarden.sources.intune import parse_intune, parse_intune_crawl
from appwarden.sources.registry import crawl_for, parser_for
from appwarden.usecases.ingest import ingest
from appwarden.vocabulary import DeviceStatus, EvidenceKind, FormFactor, Ownership, Platform

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources" / "intune"
DOCS = Path(__file__).resolve().parents[3] / "docs" / "sources" / "intune.md"
GRAPH = "https://graph.microsoft.com/v1.0/$metadata#"
TIKTOK_ID = "0000a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8"
JANE_ID = "2f6f1a3e-5b7c-4d21-9f0a-0c1d2e3f4a5b"
JANE_PHONE = DeviceFacts(
    identifiers=(
        ("intune_id", JANE_ID),
        ("azure_ad_device_id", "c1a2b3c4-d5e6-47f8-9a0b-1c2d3e4f5a6b"),
        ("eas_device_id", "6F24CAD599A5BF1A690246B8C68FAE8D"),
    ),
    platform=Platform.IOS,
    form_factor=FormFactor.PHONE,
    ownership=Ownership.PERSONAL,
    owner_email="jane.doe@example.com",
    resources=("email",),
    name="Jane's iPhone",
    status=DeviceStatus.ACTIVE,
)
TIKTOK = AppSeen("display_name", "TikTok", "38.4.0", "TikTok")


def fixture(name: str) -> tuple[str, bytes]:
    return name, (FIXTURES / name).read_bytes()


def page(context: str | None, records: list[dict[str, Any]], *, more: bool = False) -> bytes:
    """A Graph collection page; `more` gives it an @odata.nextLink (it is not the last page)."""
    body: dict[str, Any] = {}
    if context is not None:
        body["@odata.context"] = GRAPH + context
    if more:
        body["@odata.nextLink"] = "https://graph.microsoft.com/v1.0/next?$skiptoken=x"
    body["value"] = records
    return json.dumps(body).encode()


def device(
    intune_id: str, system: str = "iOS", owner: str = "company", **extra: Any
) -> dict[str, Any]:
    record = {
        "id": intune_id,
        "deviceName": f"device {intune_id}",
        "operatingSystem": system,
        "managedDeviceOwnerType": owner,
        "deviceEnrollmentType": "appleBulkWithUser",
        "lastSyncDateTime": "2026-03-02T08:00:00Z",
    }
    return {**record, **extra}


def app(app_id: str, name: str, platform: str = "ios", count: int = 1) -> dict[str, Any]:
    return {
        "id": app_id,
        "displayName": name,
        "version": "1.0",
        "platform": platform,
        "publisher": "Someone",
        "deviceCount": count,
    }


def app_devices(app_id: str, *ids: str, more: bool = False) -> bytes:
    return page(
        f"deviceManagement/detectedApps('{app_id}')/managedDevices",
        [{"id": i, "deviceName": f"device {i}"} for i in ids],
        more=more,
    )


def reports_by_device(batches: list[InventoryBatch]) -> dict[str, ReportFacts]:
    return {r.device.identifiers[0][1]: r for b in batches for r in b.reports}


SYNCED = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


# ── the reference examples, verbatim ────────────────────────────────────────────────────────


def test_managed_devices_example_gives_jane_phone_facts_and_no_app_report() -> None:
    batch = parse_intune(*reversed(fixture("managed-devices.json")))
    assert batch == InventoryBatch(
        source="intune",
        people=(
            PersonFacts(
                email="jane.doe@example.com",
                display_name="Jane Doe",
                accounts=("jane.doe@example.com",),
            ),
        ),
        devices=(JANE_PHONE,),
        reports=(),  # a managedDevices page carries no app list
    )


def test_detected_apps_example_alone_names_an_app_but_reports_no_device() -> None:
    name, text = fixture("detected-apps.json")
    assert parse_intune(text, name) == InventoryBatch(source="intune")


def test_jane_personal_user_enrollment_phone_is_managed_only() -> None:
    """Personal + User Enrollment: Intune cannot see user-installed apps, so TikTok listed on her
    phone is presence from a managed-only source, stamped with her lastSyncDateTime."""
    files = [
        fixture("managed-devices.json"),
        fixture("detected-apps.json"),
        ("tiktok-devices.json", app_devices(TIKTOK_ID, JANE_ID)),
    ]
    batches = parse_intune_crawl(files)
    assert [len(b.reports) for b in batches] == [0, 0, 1]  # the run's reports: in its last file
    assert batches[2].reports[0] == ReportFacts(
        device=JANE_PHONE,
        source="intune",
        evidence_kind=EvidenceKind.MANAGED_ONLY,
        observed_at=datetime(2026, 3, 3, 13, 41, 27, tzinfo=UTC),
        apps=(TIKTOK,),
        coverage=None,
        where="managed-devices.json: $.value[0]",
    )


# ── the crawl: when absence is proved ───────────────────────────────────────────────────────


def crawl_files(*, drop: str | None = None, tiktok_count: int = 1) -> list[tuple[str, bytes]]:
    """A tenant of a corporate iPhone with TikTok, a corporate iPhone with no detected app and a
    corporate Windows laptop with Zoom; `drop` leaves one file out."""
    files = [
        ("devices.json", page("deviceManagement/managedDevices", [
            device("phone-a"), device("phone-b"), device("laptop", "Windows"),
        ])),
        ("apps-1.json", page("deviceManagement/detectedApps", [
            app(TIKTOK_ID, "TikTok", count=tiktok_count)], more=True)),
        ("apps-2.json", page("deviceManagement/detectedApps", [app("zoom", "Zoom", "windows")])),
        ("tiktok.json", app_devices(TIKTOK_ID, "phone-a")),
        ("zoom.json", app_devices("zoom", "laptop")),
    ]  # fmt: skip
    return [f for f in files if f[0] != drop]


def summary(batches: list[InventoryBatch]) -> dict[str, tuple[Any, ...]]:
    return {
        k: (r.evidence_kind, r.coverage, tuple(a.value for a in r.apps))
        for k, r in reports_by_device(batches).items()
    }


def test_a_complete_crawl_proves_absence_in_display_name_on_corporate_devices() -> None:
    assert summary(parse_intune_crawl(crawl_files())) == {
        "phone-a": (EvidenceKind.INVENTORY, ("display_name",), ("TikTok",)),
        "phone-b": (EvidenceKind.INVENTORY, ("display_name",), ()),  # no detected app at all
        "laptop": (EvidenceKind.INVENTORY, ("display_name",), ("Zoom",)),
    }


@pytest.mark.parametrize(
    ("drop", "tiktok_count"),
    [
        ("tiktok.json", 1),  # an app's devices pages are missing
        ("apps-2.json", 1),  # the tenant's last detectedApps page is missing
        (None, 2),  # TikTok was detected on 2 devices but its pages list 1: a page is missing
    ],
)
def test_an_incomplete_crawl_gives_presence_only(drop: str | None, tiktok_count: int) -> None:
    reports = summary(parse_intune_crawl(crawl_files(drop=drop, tiktok_count=tiktok_count)))
    assert "phone-b" not in reports  # nothing seen, nothing proved: no report
    assert all(coverage == () for _, coverage, _ in reports.values())
    assert all(kind == EvidenceKind.INVENTORY for kind, _, _ in reports.values())


def test_an_app_page_still_awaiting_its_next_page_leaves_the_crawl_incomplete() -> None:
    files = crawl_files()
    files[3] = ("tiktok.json", app_devices(TIKTOK_ID, "phone-a", more=True))
    assert summary(parse_intune_crawl(files))["phone-a"][1] == ()


def test_a_per_device_detected_apps_collection_is_complete_for_that_device_alone() -> None:
    apps_of_a = "deviceManagement/managedDevices('phone-a')/detectedApps"
    apps_of_b = "deviceManagement/managedDevices('phone-b')/detectedApps"
    files = [
        ("devices.json", page("deviceManagement/managedDevices", [device("phone-a"), device("phone-b")])),
        ("a.json", page(apps_of_a, [app(TIKTOK_ID, "TikTok")])),
        ("b.json", page(apps_of_b, [app("x", "Signal")], more=True)),  # its last page is missing
    ]  # fmt: skip
    assert summary(parse_intune_crawl(files)) == {
        "phone-a": (EvidenceKind.INVENTORY, ("display_name",), ("TikTok",)),
        "phone-b": (EvidenceKind.INVENTORY, (), ("Signal",)),
    }


def test_a_per_device_list_without_its_device_record_is_managed_only_presence() -> None:
    apps = page(
        "deviceManagement/managedDevices('phone-x')/detectedApps", [app(TIKTOK_ID, "TikTok")]
    )
    (report,) = parse_intune(apps, "x.json").reports
    assert report.device == DeviceFacts(identifiers=(("intune_id", "phone-x"),))
    assert (report.evidence_kind, report.coverage, report.apps) == (
        EvidenceKind.MANAGED_ONLY, None, (AppSeen("display_name", "TikTok", "1.0", "TikTok"),),
    )  # fmt: skip
    assert (report.observed_at, report.where) == (None, "x.json")


@pytest.mark.parametrize(
    ("system", "owner", "enrollment"),
    [
        ("Android", "company", "unknown"),  # all Android: Intune lists managed apps only
        ("AndroidEnterprise", "company", "unknown"),
        ("iOS", "personal", "appleBulkWithUser"),
        ("iOS", "company", "userEnrollment"),
        ("iOS", "unknown", "appleBulkWithUser"),  # not marked corporate: not a full list
    ],
)
def test_devices_intune_cannot_fully_see_are_managed_only_even_in_a_complete_crawl(
    system: str, owner: str, enrollment: str
) -> None:
    files = [
        ("devices.json", page("deviceManagement/managedDevices", [
            device("d", system, owner, deviceEnrollmentType=enrollment)])),
        ("apps.json", page("deviceManagement/detectedApps", [app(TIKTOK_ID, "TikTok", "unknown")])),
        ("tiktok.json", app_devices(TIKTOK_ID, "d")),
    ]  # fmt: skip
    assert summary(parse_intune_crawl(files)) == {
        "d": (EvidenceKind.MANAGED_ONLY, None, ("TikTok",)),
    }


def test_only_rows_whose_app_platform_fits_the_device_count() -> None:
    files = crawl_files()
    files[4] = ("zoom.json", app_devices("zoom", "laptop", "phone-a"))  # a Windows app on an iPhone
    assert summary(parse_intune_crawl(files))["phone-a"][2] == ("TikTok",)


def test_an_app_page_whose_app_is_named_nowhere_is_skipped_with_its_file() -> None:
    batches = parse_intune_crawl([("tiktok.json", app_devices(TIKTOK_ID, "phone-a"))])
    assert batches[0].reports == ()
    assert batches[0].skipped == (
        "tiktok.json: the detectedApp '0000a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8' is in no "
        "detectedApps page of this import, so its name is unknown: the 1 device(s) of this page "
        "are not reported; import the detectedApps pages with it",
    )


def test_the_kind_of_a_page_without_context_comes_from_its_records() -> None:
    files = [
        ("devices.json", page(None, [device("phone-a")])),
        fixture("detected-apps.json"),
        ("tiktok.json", app_devices(TIKTOK_ID, "phone-a")),
    ]
    batches = parse_intune_crawl(files)
    assert [d.identifiers for d in batches[0].devices] == [(("intune_id", "phone-a"),)]
    # a detectedApps page naming no context is not known to be the tenant's list: presence only
    assert summary(batches) == {"phone-a": (EvidenceKind.INVENTORY, (), ("TikTok",))}


# ── one mapping rule per test ───────────────────────────────────────────────────────────────


def one_device(record: dict[str, Any]) -> DeviceFacts:
    batch = parse_intune(page("deviceManagement/managedDevices", [record]), "p.json")
    assert batch.skipped == ()
    (facts,) = batch.devices
    return facts


def test_identifiers_map_and_placeholders_are_dropped() -> None:
    facts = one_device(
        device(
            "i",
            azureADDeviceId="00000000-0000-0000-0000-000000000000",  # not registered in Entra
            easDeviceId="EAS1",
            serialNumber="C02XK1ABJGH5",
            udid="00008110-000A1B2C3D4E801E",
        )
    )
    assert facts.identifiers == (
        ("intune_id", "i"),
        ("eas_device_id", "EAS1"),
        ("serial", "C02XK1ABJGH5"),
        ("udid", "00008110-000A1B2C3D4E801E"),
    )


def test_a_record_with_only_an_id_sets_nothing_else() -> None:
    assert one_device({"id": "i"}) == DeviceFacts(
        identifiers=(("intune_id", "i"),), status=DeviceStatus.ACTIVE
    )


@pytest.mark.parametrize(
    ("system", "model", "platform", "form_factor"),
    [
        ("iOS", "iPhone 15", Platform.IOS, FormFactor.PHONE),
        ("iOS", "iPad Air", Platform.IPADOS, FormFactor.TABLET),
        ("iPadOS", None, Platform.IPADOS, FormFactor.TABLET),
        ("macOS", "MacBook Pro", Platform.MACOS, None),
        ("Windows", None, Platform.WINDOWS, None),
        ("AndroidForWork", None, Platform.ANDROID, None),
        ("Tizen", None, Platform.UNKNOWN, FormFactor.UNKNOWN),  # unknown: never an error
    ],
)
def test_platform_and_form_factor_come_from_operating_system_and_model(
    system: str, model: str | None, platform: Platform, form_factor: FormFactor | None
) -> None:
    facts = one_device(device("i", system, model=model))
    assert (facts.platform, facts.form_factor) == (platform, form_factor)


def test_owner_falls_back_to_email_address_without_an_account_name() -> None:
    batch = parse_intune(
        page(
            "deviceManagement/managedDevices",
            [{"id": "i", "emailAddress": "Ann@Example.com", "userDisplayName": "Ann"}],
        ),
        "p.json",
    )
    assert batch.devices[0].owner_email == "ann@example.com"
    assert batch.people == (PersonFacts(email="ann@example.com", display_name="Ann"),)


def test_email_resource_only_when_exchange_activated() -> None:
    assert one_device(device("i", easActivated=False)).resources is None
    assert one_device(device("i", easActivated=True)).resources == ("email",)


def test_observed_at_is_last_sync_never_enrollment_and_docs_warn_of_the_7_day_lag() -> None:
    record = device("phone-a", enrolledDateTime="2025-01-01T00:00:00Z")
    files = [
        ("d.json", page("deviceManagement/managedDevices", [record])),
        ("a.json", page("deviceManagement/managedDevices('phone-a')/detectedApps", [app("t", "T")])),
    ]  # fmt: skip
    assert reports_by_device(parse_intune_crawl(files))["phone-a"].observed_at == SYNCED
    assert "up to 7 days" in " ".join(DOCS.read_text(encoding="utf-8").split())


def test_a_delta_removal_retires_the_device() -> None:
    delta = {
        "@odata.context": GRAPH + "Collection(microsoft.graph.managedDevice)",
        "@odata.deltaLink": "https://graph.microsoft.com/v1.0/deviceManagement/managedDevices/delta?$deltatoken=x",
        "value": [{"id": "gone", "@removed": {"reason": "deleted"}}],
    }
    batch = parse_intune(json.dumps(delta), "delta.json")
    assert batch.devices == (
        DeviceFacts(identifiers=(("intune_id", "gone"),), status=DeviceStatus.RETIRED),
    )


# ── paging, empty pages, bad records, bad pages ─────────────────────────────────────────────


def test_pages_of_one_collection_are_read_file_by_file() -> None:
    first = page("deviceManagement/managedDevices", [device("a")], more=True)
    second = page("deviceManagement/managedDevices", [device("b")])
    batches = parse_intune_crawl([("1.json", first), ("2.json", second)])
    assert [[d.identifiers[0][1] for d in b.devices] for b in batches] == [["a"], ["b"]]


def test_an_empty_page_is_an_empty_batch() -> None:
    empty = page("deviceManagement/managedDevices", [])
    assert parse_intune(empty, "e.json") == InventoryBatch(source="intune")


def test_a_bad_record_is_skipped_with_its_location_and_strict_refuses_the_run() -> None:
    text = page(
        "deviceManagement/managedDevices",
        [device("a"), device("b", lastSyncDateTime="yesterday")],
    )
    batch = parse_intune(text, "p.json")
    assert [d.identifiers[0][1] for d in batch.devices] == ["a"]
    assert batch.skipped == (
        "p.json: $.value[1].lastSyncDateTime: 'yesterday' is not an RFC 3339 time with an offset",
    )
    with pytest.raises(InvalidInput) as raised:
        parse_intune(text, "p.json", strict=True)
    assert [str(p) for p in raised.value.problems] == list(batch.skipped)


def test_a_bad_record_in_an_app_device_list_leaves_the_crawl_incomplete() -> None:
    files = crawl_files()
    bad = page(f"deviceManagement/detectedApps('{TIKTOK_ID}')/managedDevices", [{"id": 7}])
    files[3] = ("tiktok.json", bad)
    batches = parse_intune_crawl(files)
    assert batches[3].skipped == ("tiktok.json: $.value[0].id: expected a string, not a number",)
    assert summary(batches) == {"laptop": (EvidenceKind.INVENTORY, (), ("Zoom",))}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            b"{not json",
            "p.json:1:2: not valid JSON: Expecting property name enclosed in double quotes",
        ),
        (b"[]", "p.json: expected a JSON object with a 'value' list, not a list"),
        (b'{"value": {}}', "p.json: expected a 'value' list, not an object"),
        (
            b'{"@odata.context": "x#users", "value": [{"id": "u"}]}',
            "p.json: cannot tell which Graph collection this page is: its @odata.context "
            "'x#users' names none of managedDevices, detectedApps, "
            "detectedApps('ID')/managedDevices or managedDevices('ID')/detectedApps, and its "
            "records look like neither",
        ),
    ],
)
def test_a_page_of_the_wrong_shape_refuses_the_run(text: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_intune_crawl([("ok.json", page(None, [])), ("p.json", text)])
    assert [str(p) for p in raised.value.problems] == [message]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("deviceName", "Jane\x07s phone", "contains a control character (U+0007) in 'Jane\\x07s phone'"),
        ("easDeviceId", "x" * 100_000, "is 100000 characters long; the limit is 512"),
        ("userPrincipalName", "not an address", "'not an address' is not an email address: it contains a space"),
    ],
)  # fmt: skip
def test_hostile_strings_skip_the_record_with_their_location(
    field: str, value: str, message: str
) -> None:
    batch = parse_intune(
        page("deviceManagement/managedDevices", [device("i", **{field: value})]), "p.json"
    )
    assert batch.devices == ()
    assert batch.skipped == (f"p.json: $.value[0].{field}: {message}",)


def test_the_registry_finds_both_the_page_parser_and_the_crawl() -> None:
    assert parser_for("intune") is parse_intune
    assert crawl_for("intune") is parse_intune_crawl
    assert crawl_for("native") is None


# ── end to end, on both stores ──────────────────────────────────────────────────────────────

IMPORTED_AT = datetime(2026, 3, 4, tzinfo=UTC)


def jane_in_a_complete_crawl() -> list[tuple[str, bytes]]:
    files = [*crawl_files(), fixture("managed-devices.json")]
    files[3] = ("tiktok.json", app_devices(TIKTOK_ID, "phone-a", JANE_ID))
    return files


def test_a_crawl_is_stored_by_the_ingest_unchanged(store: Any) -> None:
    with unit_of_work(store.engine, now=IMPORTED_AT) as uow:
        results = [ingest(uow, batch) for batch in parse_intune_crawl(jane_in_a_complete_crawl())]
    # the three corporate reports apply; Jane's personal phone is minimised to nothing, since no
    # policy names TikTok yet, so her report changes nothing and counts as stale
    assert [(r.reports_applied, r.reports_stale, r.devices) for r in results] == [
        (0, 0, 3), (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (3, 1, 4),
    ]  # fmt: skip
    assert all(r.skipped == [] and r.quarantined == [] for r in results)


def test_the_cli_imports_a_run_of_intune_pages(cli: Any, tmp_path: Path) -> None:
    paths = []
    for name, text in jane_in_a_complete_crawl():
        paths.append(tmp_path / name)
        paths[-1].write_bytes(text)
    result = cli("import", "intune", *map(str, paths), "--at", "2026-03-04T00:00:00Z", "--json")
    assert result.code == 0, result.err
    summaries = result.json()
    assert isinstance(summaries, list)
    assert [(s["reports_applied"], s["devices"]) for s in summaries] == [
        (0, 3), (0, 0), (0, 0), (0, 0), (0, 0), (3, 4),
    ]  # fmt: skip
