"""The bulk ingest path stores exactly what the one-by-one path stores (docs/architecture.md,
"Bulk ingest"): the same batches, applied once as batches (bulk) and once report by report (the
single-report path), leave every table identical, on both stores. The batches cover new devices,
a re-import with changes, stale and repeated reports, two reports of one device in one batch,
minimisation, a quarantine, a report without a usable identifier, resources changed, and owners
the import makes (before and after an owner change to somebody unknown)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tests.conftest import repeatable_digest, reset_store

from appwarden.db.uow import unit_of_work
from appwarden.devices.schemas import AppSeen, DeviceFacts, InventoryBatch, ReportFacts
from appwarden.usecases.ingest import IngestResult, ingest
from appwarden.vocabulary import EvidenceKind, Ownership, Platform

FIRST = datetime(2020, 7, 11, 18, 0, tzinfo=UTC)
SECOND = FIRST + timedelta(days=1)
TIKTOK = AppSeen("apple_bundle_id", "com.zhiliaoapp.musically", "38.4.0", "TikTok")
ZOOM = AppSeen("apple_bundle_id", "us.zoom.videomeetings", "6.3", "Zoom")
OUTLOOK = AppSeen("apple_bundle_id", "com.microsoft.Office.Outlook", "4.2", "Outlook")
SLACK = AppSeen("apple_bundle_id", "com.tinyspeck.chatlyio", "23.1", "Slack")
OWNERS = ("alice@example.com", "bob@example.com", "carol@example.com", "new.hire@example.com")


def _phone(n: int, *, ownership: Ownership = Ownership.CORPORATE, **extra: object) -> DeviceFacts:
    return DeviceFacts(
        identifiers=(("udid", f"BULK-{n}"), ("serial", f"SN-BULK-{n}")),
        platform=Platform.IOS,
        form_factor=None,
        ownership=ownership,
        owner_email=extra.pop("owner_email", OWNERS[n % len(OWNERS)]),  # type: ignore[arg-type]
        resources=extra.pop("resources", ("email",)),  # type: ignore[arg-type]
        **extra,  # type: ignore[arg-type]
    )


def _report(device: DeviceFacts, at: datetime, *apps: AppSeen, **extra: object) -> ReportFacts:
    return ReportFacts(
        device=device,
        source="mdm-export",
        evidence_kind=extra.pop("kind", EvidenceKind.INVENTORY),  # type: ignore[arg-type]
        observed_at=at,
        apps=apps,
        **extra,  # type: ignore[arg-type]
    )


def _first_batch() -> InventoryBatch:
    reports = [
        _report(_phone(n), FIRST, OUTLOOK, ZOOM, *([TIKTOK] if n % 3 == 0 else []))
        for n in range(12)
    ]
    reports += [
        _report(_phone(20, ownership=Ownership.PERSONAL), FIRST, TIKTOK, ZOOM, SLACK),
        _report(_phone(21), FIRST - timedelta(hours=2), OUTLOOK),  # then a newer one, same batch
        _report(_phone(21), FIRST, OUTLOOK, SLACK),
        _report(DeviceFacts(identifiers=(("serial", "0"),)), FIRST, OUTLOOK),  # placeholder only
        _report(
            _phone(22),
            FIRST,
            kind=EvidenceKind.TARGETED_CHECK,
            checked=(("apple_bundle_id", TIKTOK.value),),
        ),
        _report(_phone(23), FIRST, kind=EvidenceKind.NONE),
        # owners nobody knows yet: made by the import
        _report(_phone(24, owner_email="late.a@example.com"), FIRST, OUTLOOK),
        _report(_phone(25, owner_email="late.b@example.com"), FIRST, TIKTOK),
    ]
    return InventoryBatch(reports=tuple(reports))


def _second_batch() -> InventoryBatch:
    """A day later: one app changed on some phones, one removed, a stale and a repeated
    report, a report whose identifiers name two devices (quarantined), resources changed, and
    owners nobody knew."""
    reports = [
        _report(_phone(n), SECOND, OUTLOOK, *([SLACK] if n % 4 == 0 else [ZOOM])) for n in range(8)
    ]
    reports += [
        _report(_phone(8), FIRST - timedelta(days=1), OUTLOOK),  # stale: older than stored
        _report(_phone(9), FIRST, OUTLOOK, ZOOM, TIKTOK),  # repeated: exactly what is stored
        _report(_phone(23), FIRST, kind=EvidenceKind.NONE),  # repeated: the newest report's time
        _report(
            DeviceFacts(identifiers=(("udid", "BULK-10"), ("serial", "SN-BULK-11"))),
            SECOND,
            OUTLOOK,
        ),
        _report(_phone(20, ownership=Ownership.PERSONAL), SECOND, ZOOM),
        _report(_phone(30), SECOND, TIKTOK),
        _report(_phone(30), SECOND, TIKTOK),
        # resources changed on a stored phone, and a new phone's two
        _report(_phone(11, resources=("email", "vpn")), SECOND, OUTLOOK, TIKTOK),
        _report(_phone(31, resources=("vpn", "email")), SECOND, TIKTOK),
        # a new owner for phone 24 nobody knows, then a new phone's new owner and a known one
        _report(_phone(32, owner_email="late.d@example.com"), SECOND, OUTLOOK),
        _report(_phone(24, owner_email="late.c@example.com"), SECOND, OUTLOOK),
        _report(_phone(33, owner_email="late.e@example.com"), SECOND, OUTLOOK),
        _report(_phone(34, owner_email="late.a@example.com"), SECOND, OUTLOOK),
    ]
    return InventoryBatch(reports=tuple(reports))


def _apply(store, batch: InventoryBatch, at: datetime, *, one_by_one: bool) -> IngestResult:
    with unit_of_work(store.engine, now=at) as uow:
        if not one_by_one:
            return ingest(uow, batch)
        total = IngestResult()
        for report in batch.reports:  # a batch of one report takes the single-report path
            result = ingest(uow, InventoryBatch(reports=(report,)))
            total.reports_applied += result.reports_applied
            total.reports_stale += result.reports_stale
            total.reports_repeated += result.reports_repeated
            total.quarantined += result.quarantined
            total.skipped += result.skipped
        return total


def _run(store, cli, *, one_by_one: bool) -> tuple[list[tuple[int, ...]], str]:
    assert cli("demo", "--base-time", "2020-07-10T09:00:00-07:00").code == 0
    counts = []
    for batch, at in ((_first_batch(), FIRST), (_second_batch(), SECOND)):
        result = _apply(store, batch, at + timedelta(hours=1), one_by_one=one_by_one)
        counts.append(
            (
                result.reports_applied,
                result.reports_stale,
                result.reports_repeated,
                len(result.quarantined),
                len(result.skipped),
            )
        )
    return counts, repeatable_digest(store.engine)


def test_bulk_and_one_by_one_store_identical_tables(store, cli, request: pytest.FixtureRequest):
    bulk_counts, bulk_digest = _run(store, cli, one_by_one=False)
    reset_store(store, request)
    counts, digest = _run(store, cli, one_by_one=True)
    assert bulk_counts == counts
    # a stale report, three repeated ones (phones 9 and 23, phone 30 sent twice), a quarantine
    assert bulk_counts[1][1:4] == (1, 3, 1)
    assert bulk_digest == digest
