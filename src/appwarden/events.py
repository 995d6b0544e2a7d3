"""Domain events. Handlers are registered in `appwarden.wiring`; they run inside the unit of work
that raised the event, so reactions commit or roll back with their cause."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class DecisionChanged:
    device_id: int
    resource: str
    old: str
    new: str
    causes: tuple[str, ...]  # policies that deny now (for a deny) or denied before (for an allow)
    at: datetime
    # (policy id, version id) of the versions in effect at `at` that the decision was computed
    # from, so that a reaction finds a cause's version without reading the versions again.
    versions: tuple[tuple[str, int], ...] = field(default=(), compare=False)
    # The causes of a deny that deny for want of proof (their state is unknown), not for a
    # finding: what the "blocked" notice says, without reading the decision back.
    unverified: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class DeviceEvaluated:
    """A device's states under the versions in effect were (re)computed and stored."""

    device_id: int
    owner_id: int | None
    states: tuple[tuple[int, str], ...]  # (policy version id, state)
    at: datetime


@dataclass(frozen=True, slots=True)
class DevicesEvaluated:
    """Many devices were (re)evaluated in one batch (`usecases.ingest.reevaluate_devices`): one
    event, so that reactions read what the devices share once, not once per device."""

    devices: tuple[DeviceEvaluated, ...]  # in the order they were evaluated
    at: datetime
    # (device id, version id) → its `compliance.evaluate.Evaluation` at `at`, as stored: for
    # reactions that would otherwise evaluate the same devices again (the late entrants' notices).
    evaluations: Mapping[tuple[int, int], Any] = field(default_factory=dict, compare=False)


Event = DecisionChanged | DeviceEvaluated | DevicesEvaluated
Handler = Callable[[Any, Any], None]


@dataclass
class EventBus:
    """Synchronous, in-process dispatch: `publish(uow, event)` calls every handler for its type."""

    handlers: dict[type[Any], list[Handler]] = field(default_factory=lambda: defaultdict(list))

    def subscribe(self, event_type: type[Any], handler: Handler) -> None:
        self.handlers[event_type].append(handler)

    def publish(self, uow: Any, event: Any) -> None:
        for handler in self.handlers.get(type(event), []):
            handler(uow, event)
