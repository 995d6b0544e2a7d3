"""Planner statistics after large writes (db/statistics.py): `appwarden import` and the fleet
evaluation leave PostgreSQL's statistics current; SQLite is left as it is; the fleet statement
runs without JIT and with more memory, and puts the settings back."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from appwarden.compliance.fleet import FLEET_TABLES, fleet_rows
from appwarden.compliance.rules import rules_of
from appwarden.db.statistics import refresh_statistics, stale_tables
from appwarden.db.uow import unit_of_work
from appwarden.policies.service import effective_versions
from appwarden.sources.native import parse_native
from appwarden.usecases.ingest import ingest
from appwarden.usecases.statistics import INVENTORY_TABLES

AT = "2020-07-11T18:00:00Z"
PHONES = 120  # more rows than the 50 changed rows that make a table stale


def _document(count: int) -> dict[str, object]:
    return {
        "format": "appwarden.inventory/v1",
        "source": "mdm-export",
        "devices": [
            {
                "identifiers": [{"namespace": "udid", "value": f"STATS-{i:06d}"}],
                "platform": "ios",
                "form_factor": "phone",
                "ownership": "corporate",
                "owner": f"stats{i:06d}@example.com",
                "resources": ["email"],
                "report": {
                    "evidence_kind": "inventory",
                    "observed_at": "2020-07-11T08:00:00Z",
                    "apps": [
                        {"namespace": "apple_bundle_id", "value": "com.zhiliaoapp.musically"},
                        {"namespace": "apple_bundle_id", "value": "us.zoom.videomeetings"},
                    ],
                },
            }
            for i in range(count)
        ],
    }


def _analysed_since(store, started: datetime) -> set[str]:
    with store.engine.connect() as connection:  # a new snapshot of the statistics views
        rows = connection.execute(
            text(
                "SELECT relname FROM pg_stat_user_tables "
                "WHERE greatest(last_analyze, last_autoanalyze) >= :started"
            ),
            {"started": started},
        )
        return set(rows.scalars())


def _sqlite_stat_tables(store) -> int:
    with store.engine.connect() as connection:
        return int(
            connection.execute(
                text("SELECT count(*) FROM sqlite_master WHERE name LIKE 'sqlite_stat%'")
            ).scalar_one()
        )


def test_import_leaves_the_inventory_tables_analysed(store, cli, demo, tmp_path: Path):
    path = tmp_path / "phones.json"
    path.write_text(json.dumps(_document(PHONES)))
    started = datetime.now(UTC)
    result = cli("import", "native", str(path), "--at", AT)
    assert result.code == 0, result.err
    if store.backend == "postgresql":
        analysed = _analysed_since(store, started)
        assert {"device", "observation", "coverage", "report", "decision"} <= analysed
        assert stale_tables(store.engine, INVENTORY_TABLES) == []
    else:  # nothing to do on SQLite, and nothing done
        assert _sqlite_stat_tables(store) == 0


def test_fleet_evaluation_refreshes_missing_statistics_first(store, demo):
    at = datetime(2020, 7, 11, 18, tzinfo=UTC)
    with unit_of_work(store.engine, now=at) as uow:  # ingest alone analyses nothing
        applied = ingest(uow, parse_native(json.dumps(_document(PHONES)).encode(), "phones"))
    assert applied.reports_applied == PHONES
    if store.backend == "postgresql":
        assert {"device", "observation"} <= set(stale_tables(store.engine, FLEET_TABLES))
    started = datetime.now(UTC)
    with unit_of_work(store.engine, now=at, write=False) as uow:
        (version,) = effective_versions(uow, at)
        rows = fleet_rows(uow, rules_of(uow, version), now=at)
    assert len(rows) >= PHONES
    if store.backend == "postgresql":
        assert {"device", "observation", "coverage"} <= _analysed_since(store, started)
        assert stale_tables(store.engine, FLEET_TABLES) == []
    else:
        assert refresh_statistics(store.engine, FLEET_TABLES) == []
        assert _sqlite_stat_tables(store) == 0


def test_fleet_statement_runs_without_jit_and_restores_the_settings(store, demo):
    at = datetime(2020, 7, 11, 18, tzinfo=UTC)
    with unit_of_work(store.engine, now=at, write=False) as uow:
        (version,) = effective_versions(uow, at)
        rules = rules_of(uow, version)
        postgres = store.backend == "postgresql"
        if postgres:
            uow.session.execute(text("SET LOCAL jit = on"))
            uow.session.execute(text("SET LOCAL work_mem = '3MB'"))
        executed: list[str] = []
        during: list[tuple[str, ...]] = []
        original = uow.session.execute
        settings = text("SELECT current_setting('jit'), current_setting('work_mem')")

        def spy(statement, *args, **kwargs):
            executed.append(str(statement))
            if postgres and "scoped" in str(statement):
                during.append(tuple(original(settings).one()))
            return original(statement, *args, **kwargs)

        uow.session.execute = spy  # type: ignore[method-assign]
        fleet_rows(uow, rules, now=at)
        uow.session.execute = original  # type: ignore[method-assign]
        if postgres:
            assert during == [("off", "64MB")]
            assert tuple(original(settings).one()) == ("on", "3MB")
        else:  # SQLite has no such settings: the fleet statement alone, nothing set around it
            assert len(executed) == 1
            assert "scoped" in executed[0]
