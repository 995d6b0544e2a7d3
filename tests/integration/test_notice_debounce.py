"""A decision that flips back and forth within the hour announces itself once per person, policy
and kind (docs/notices.md): the second "restored" of the slot queues nothing, and the report
that caused it still commits (`notifications.service.enqueue_at_commit`)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from appwarden.db.uow import unit_of_work
from appwarden.devices.schemas import AppSeen, DeviceFacts, InventoryBatch, ReportFacts
from appwarden.notifications.models import Notice
from appwarden.settings import Settings
from appwarden.usecases.ingest import ingest
from appwarden.vocabulary import EvidenceKind, Ownership, Platform
from appwarden.wiring import Services

AT = datetime(2020, 7, 11, 19, 5, tzinfo=UTC)  # after the reference memo's deadline
OBSERVED = datetime(2020, 7, 10, 15, tzinfo=UTC)  # before its release: TikTok is overdue
TIKTOK = AppSeen("apple_bundle_id", "com.zhiliaoapp.musically", "38.4.0", "TikTok")


def _report(apps: tuple[AppSeen, ...], observed_at: datetime) -> InventoryBatch:
    return InventoryBatch(
        reports=(
            ReportFacts(
                device=DeviceFacts(
                    identifiers=(("udid", "FLIP-1"), ("eas_device_id", "EASFLIP1")),
                    platform=Platform.IOS,
                    form_factor="phone",
                    ownership=Ownership.CORPORATE,
                    owner_email="alice@example.com",
                    resources=("email",),
                ),
                source="mdm-export",
                evidence_kind=EvidenceKind.INVENTORY,
                observed_at=observed_at,
                apps=apps,
            ),
        )
    )


def test_a_decision_flipping_within_the_hour_notifies_once_per_kind(store, demo, tmp_path: Path):
    services = Services(Settings(database_url=store.url, maildir=tmp_path / "mail"), store.engine)
    with unit_of_work(store.engine, now=AT) as uow:  # denied, quietly (no event bus)
        ingest(uow, _report((TIKTOK,), OBSERVED))
    flips = []
    for minute, apps in enumerate([(), (TIKTOK,), ()], start=10):
        at = AT.replace(minute=minute)
        with services.uow(at) as uow:
            flips += [(c.old, c.new) for c in ingest(uow, _report(apps, at)).decision_changes]
    assert flips == [("deny", "allow"), ("allow", "deny"), ("deny", "allow")]
    with unit_of_work(store.engine, now=AT, write=False) as uow:
        kinds = list(
            uow.session.scalars(
                select(Notice.kind).where(
                    Notice.kind.in_(["blocked", "restored"]), Notice.due_slot == "2020-07-11T19"
                )
            )
        )
    assert sorted(kinds) == ["blocked", "restored"]  # two restorations, one notice
