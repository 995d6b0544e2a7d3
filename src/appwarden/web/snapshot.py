"""Each process's in-memory copy of the decisions, for answering the gate when the store is
down (`on_store_failure: last_known`).

Loaded in full at start, then refreshed every `gate_snapshot_seconds` with the rows written since
the last look (`decision.written_at`, wall clock, with an overlap margin for clock skew between
processes), so a change made by any process reaches every other within about a second.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import DBAPIError

from appwarden.access.models import DecisionRecord
from appwarden.devices.models import Device, DeviceIdentifier
from appwarden.identity.models import Person

log = logging.getLogger("appwarden.web")
OVERLAP = timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class KnownDecision:
    decision: str
    reasons: tuple[Any, ...]


@dataclass
class DecisionSnapshot:
    engine: Engine
    interval: float = 1.0
    devices: dict[tuple[str, str], int] = field(default_factory=dict)
    owners: dict[int, str] = field(default_factory=dict)
    decisions: dict[tuple[int, str], KnownDecision] = field(default_factory=dict)
    loaded_at: datetime | None = None
    _since: datetime | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh(self) -> None:
        """Read what changed since the last refresh (everything, the first time)."""
        started = datetime.now(UTC)
        with self.engine.connect() as connection:
            query = select(
                DecisionRecord.device_id,
                DecisionRecord.resource,
                DecisionRecord.decision,
                DecisionRecord.reasons,
            )
            if self._since is not None:
                query = query.where(DecisionRecord.written_at >= self._since - OVERLAP)
            rows = connection.execute(query).all()
            touched = {device_id for device_id, *_ in rows}
            id_query = select(
                DeviceIdentifier.namespace, DeviceIdentifier.value, DeviceIdentifier.device_id
            )
            owner_query = select(Device.id, Person.email).join(Person, Person.id == Device.owner_id)
            if self._since is not None:  # identifiers and owners of the devices that changed
                id_query = id_query.where(DeviceIdentifier.device_id.in_(touched))
                owner_query = owner_query.where(Device.id.in_(touched))
            identifiers = connection.execute(id_query).all()
            owners = connection.execute(owner_query).all()
        with self._lock:
            for device_id, resource, decision, reasons in rows:
                self.decisions[(device_id, resource)] = KnownDecision(
                    decision, tuple(reasons or ())
                )
            for namespace, value, device_id in identifiers:
                self.devices[(namespace, value)] = device_id
            for device_id, email in owners:
                self.owners[device_id] = email
            self._since = started
            self.loaded_at = started

    def lookup(
        self, namespace: str, value: str, resource: str
    ) -> tuple[int | None, str | None, KnownDecision | None]:
        with self._lock:
            device_id = self.devices.get((namespace, value))
            if device_id is None:
                return None, None, None
            return device_id, self.owners.get(device_id), self.decisions.get((device_id, resource))

    def person_denied(self, email: str, resource: str) -> KnownDecision | None:
        with self._lock:
            for device_id, owner in self.owners.items():
                known = self.decisions.get((device_id, resource))
                if owner == email and known is not None and known.decision == "deny":
                    return known
        return None

    def start(self) -> None:
        try:
            self.refresh()
        except DBAPIError:
            log.warning("decision snapshot: the store is not reachable at start")
        self._thread = threading.Thread(target=self._run, name="appwarden-snapshot", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except DBAPIError:
                log.warning("decision snapshot: refresh failed; answering from the last copy")
            except Exception:  # keep the thread alive whatever happens in one refresh
                log.exception("decision snapshot: refresh failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
