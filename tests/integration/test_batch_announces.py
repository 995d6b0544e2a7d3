"""Late entrants announced for a batch (`usecases.notices.announce_entrants`, reacting to one
`DevicesEvaluated` per batch) get the notices `announce_entrant` gives them reacting to each of
the batch's devices' `DeviceEvaluated` in turn: the same people, kinds, versions, slots and
texts, on both stores. The batch covers an
owner with two violating phones (told once), one with a clean phone only (not told), one with a
violating and a clean phone (both listed), and the reference organisation's people, announced
at release already (not told again)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from tests.conftest import reset_store

from appwarden.db.uow import UnitOfWork
from appwarden.devices.schemas import AppSeen, DeviceFacts, InventoryBatch, ReportFacts
from appwarden.events import DevicesEvaluated, EventBus
from appwarden.identity.models import Person
from appwarden.notifications.models import Notice
from appwarden.settings import Settings
from appwarden.usecases.ingest import ingest
from appwarden.vocabulary import EvidenceKind, Ownership, Platform
from appwarden.wiring import Services

OBSERVED = datetime(2020, 7, 11, 12, tzinfo=UTC)
AT = datetime(2020, 7, 11, 13, tzinfo=UTC)  # after the reference memo's release
TIKTOK = AppSeen("apple_bundle_id", "com.zhiliaoapp.musically", "38.4.0", "TikTok")
ZOOM = AppSeen("apple_bundle_id", "us.zoom.videomeetings", "6.3", "Zoom")
PHONES = (  # (udid, owner, TikTok on it)
    ("LATE-1", "late.one@example.com", True),
    ("LATE-2", "late.one@example.com", True),
    ("LATE-3", "late.two@example.com", False),
    ("LATE-4", "late.three@example.com", False),
    ("LATE-5", "late.three@example.com", True),
    ("LATE-6", "alice@example.com", True),
    ("LATE-7", "bob@example.com", False),
)


def _batch() -> InventoryBatch:
    return InventoryBatch(
        reports=tuple(
            ReportFacts(
                device=DeviceFacts(
                    identifiers=(("udid", udid),),
                    platform=Platform.IOS,
                    ownership=Ownership.CORPORATE,
                    owner_email=owner,
                    resources=("email",),
                ),
                source="mdm-export",
                evidence_kind=EvidenceKind.INVENTORY,
                observed_at=OBSERVED,
                apps=(ZOOM, TIKTOK) if tiktok else (ZOOM,),
            )
            for udid, owner, tiktok in PHONES
        )
    )


class _DeviceByDevice(Services):
    """The batch's event handed to the per-device reaction, one device after the other."""

    def bus(self) -> EventBus:
        bus = super().bus()

        def each(uow: UnitOfWork, event: DevicesEvaluated) -> None:
            for evaluated in event.devices:
                bus.publish(uow, evaluated)

        bus.handlers[DevicesEvaluated] = [each]
        return bus


def _notices(store, cli, tmp_path: Path, *, per_device: bool) -> list[tuple[object, ...]]:
    assert cli("demo", "--base-time", "2020-07-10T09:00:00-07:00").code == 0
    settings = Settings(database_url=store.url, maildir=tmp_path / "mail")
    services = (_DeviceByDevice if per_device else Services)(settings, store.engine)
    with services.uow(AT) as uow:
        before = set(uow.session.scalars(select(Notice.id)))
        ingest(uow, _batch())
        uow.session.flush()
        rows = uow.session.execute(
            select(
                Person.email,
                Notice.kind,
                Notice.version_id,
                Notice.due_slot,
                Notice.subject,
                Notice.body_text,
            )
            .join(Person, Person.id == Notice.person_id)
            .where(Notice.id.not_in(before))
        ).all()
    return sorted(tuple(row) for row in rows)


def test_a_batch_announces_late_entrants_as_one_by_one(
    store, cli, tmp_path: Path, request: pytest.FixtureRequest
):
    batch = _notices(store, cli, tmp_path, per_device=False)
    reset_store(store, request)
    assert batch == _notices(store, cli, tmp_path, per_device=True)
    announced = {email for email, kind, *_ in batch if kind == "announce"}
    assert announced == {"late.one@example.com", "late.three@example.com"}
