"""Planner statistics after an inventory write of many rows (`appwarden import`, a sync run):
the tables ingest fills, analysed on PostgreSQL where they are missing or stale, so the next fleet
evaluation is planned from what the tables hold now (db/statistics.py says why)."""

from __future__ import annotations

from appwarden.access.models import DecisionRecord
from appwarden.compliance.fleet import FLEET_TABLES
from appwarden.compliance.models import ComplianceRecord
from appwarden.db.statistics import refresh_statistics
from appwarden.db.uow import UnitOfWork
from appwarden.devices.models import DeviceIdentifier, DeviceOwnerHistory, DeviceSource, Report

# What ingest writes besides what the fleet evaluation reads.
INVENTORY_TABLES: tuple[str, ...] = tuple(
    sorted(
        {
            *FLEET_TABLES,
            *(
                model.__tablename__
                for model in (
                    DeviceIdentifier,
                    DeviceOwnerHistory,
                    DeviceSource,
                    Report,
                    ComplianceRecord,
                    DecisionRecord,
                )
            ),
        }
    )
)


def refresh_inventory_statistics(uow: UnitOfWork) -> list[str]:
    """Analyse the inventory tables whose statistics are missing or stale (their committed rows:
    call it after the writes' own transactions); returns the tables analysed."""
    return refresh_statistics(uow.engine, INVENTORY_TABLES, only_stale=True)
