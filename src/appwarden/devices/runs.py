"""Reading sources' sync runs (`source_run`) and who is whose MDM of record: what a source's
health is made of (docs/sources/README.md, "Source health").

Each read is an index lookup per source (`ix_source_run_source_started`,
`ix_device_mdm_source`), so a scrape of /metrics and the breaker's check of one device's source
stay cheap whatever the fleet's size. They take a Session or a plain Connection: the CLI reads in
its unit of work, a scrape on a connection of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from appwarden.devices.models import Device, SourceRun
from appwarden.vocabulary import DeviceStatus

Reader = Session | Connection


@dataclass(frozen=True, slots=True)
class Run:
    id: int
    started_at: datetime
    finished_at: datetime | None
    complete: bool
    pages: int
    reports: int
    devices: int
    error: str | None
    runner: str | None

    @property
    def ended_at(self) -> datetime:
        """When the run's data was complete (its start if it never recorded its end)."""
        return self.finished_at or self.started_at


_RUN_COLUMNS = (
    SourceRun.id,
    SourceRun.started_at,
    SourceRun.finished_at,
    SourceRun.complete,
    SourceRun.pages,
    SourceRun.reports,
    SourceRun.devices,
    SourceRun.error,
    SourceRun.runner,
)


def last_run(reader: Reader, source: str, *, complete: bool = False) -> Run | None:
    """The source's latest run (by start), or its latest complete one."""
    query = select(*_RUN_COLUMNS).where(SourceRun.source == source)
    if complete:
        query = query.where(SourceRun.complete.is_(True))
    row = reader.execute(query.order_by(SourceRun.started_at.desc()).limit(1)).first()
    return None if row is None else Run(*row)


def last_complete_at(reader: Reader, source: str) -> datetime | None:
    run = last_run(reader, source, complete=True)
    return None if run is None else run.ended_at


def has_runs(reader: Reader, source: str) -> bool:
    query = select(SourceRun.id).where(SourceRun.source == source).limit(1)
    return reader.execute(query).first() is not None


def run_sources(reader: Reader) -> list[str]:
    """Every source that has a run."""
    return list(reader.execute(select(SourceRun.source).distinct()).scalars())


def devices_by_source(reader: Reader) -> dict[str, int]:
    """Active devices per MDM of record."""
    rows = reader.execute(
        select(Device.mdm_source, func.count())
        .where(Device.mdm_source.is_not(None), Device.status == DeviceStatus.ACTIVE)
        .group_by(Device.mdm_source)
    )
    return {str(source): int(count) for source, count in rows}
