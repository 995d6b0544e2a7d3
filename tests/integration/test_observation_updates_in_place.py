"""On PostgreSQL a re-import rewrites its observations in place: every report moves its rows'
`last_seen_at`, and `observation` leaves half of each page free (`devices.models`) so that the
new row versions stay on their page without new index entries (heap-only tuples). Counted by
PostgreSQL itself, in the re-import's own transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from tests.conftest import _empty_postgres

from appwarden.db.engine import make_engine
from appwarden.db.uow import unit_of_work
from appwarden.devices.schemas import AppSeen, DeviceFacts, InventoryBatch, ReportFacts
from appwarden.usecases.ingest import ingest
from appwarden.vocabulary import EvidenceKind, Ownership, Platform

FIRST = datetime(2020, 7, 11, 12, 0, tzinfo=UTC)
PHONES, APPS = 40, 60


def _batch(observed_at: datetime) -> InventoryBatch:
    apps = tuple(
        AppSeen("apple_bundle_id", f"com.example.app{n}", "1.0", f"App {n}") for n in range(APPS)
    )
    return InventoryBatch(
        reports=tuple(
            ReportFacts(
                device=DeviceFacts(
                    identifiers=(("udid", f"HOT-{n}"),),
                    platform=Platform.IOS,
                    ownership=Ownership.CORPORATE,
                    owner_email=f"hot{n}@example.com",
                    resources=("email",),
                ),
                source="mdm-export",
                evidence_kind=EvidenceKind.INVENTORY,
                observed_at=observed_at,
                apps=apps,
            )
            for n in range(PHONES)
        )
    )


def test_a_reimport_updates_observations_without_new_index_entries(postgres_database: str):
    engine = make_engine(postgres_database)
    _empty_postgres(engine)
    try:
        with unit_of_work(engine, now=FIRST) as uow:
            assert ingest(uow, _batch(FIRST)).reports_applied == PHONES
        later = FIRST + timedelta(days=1)
        with unit_of_work(engine, now=later) as uow:
            assert ingest(uow, _batch(later)).reports_applied == PHONES
            updated, in_place = uow.session.execute(
                text(
                    "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables "
                    "WHERE relname = 'observation'"
                )
            ).one()
        assert updated == PHONES * APPS
        assert in_place == updated
        with engine.connect() as connection:
            options = connection.scalar(
                text("SELECT reloptions FROM pg_class WHERE relname = 'observation'")
            )
        assert options == ["fillfactor=50"]
    finally:
        engine.dispose()
