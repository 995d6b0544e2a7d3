"""Ingest: people, devices and reports from any source, in the caller's transaction; each touched
device is re-evaluated and its decisions updated in the same transaction (read-your-writes)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from appwarden.access.service import refresh_decisions
from appwarden.catalog.matching import match_key
from appwarden.compliance.service import DeviceEvaluator, record_outcomes
from appwarden.db.uow import UnitOfWork
from appwarden.devices.models import Device
from appwarden.devices.schemas import InventoryBatch, ReportFacts
from appwarden.devices.service import (
    MinimisationSet,
    apply_device_facts,
    apply_report,
    resolve_device,
)
from appwarden.errors import IdentifierConflict, InvalidInput
from appwarden.events import DecisionChanged, DeviceEvaluated
from appwarden.identity.service import upsert_person
from appwarden.policies.service import live_identifier_keys
from appwarden.vocabulary import Ownership


@dataclass
class IngestResult:
    people: int = 0
    devices: int = 0
    reports_applied: int = 0
    reports_stale: int = 0
    quarantined: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    decision_changes: list[DecisionChanged] = field(default_factory=list)


def _check_values(report: ReportFacts) -> str | None:
    for app in report.apps:
        try:
            match_key(app.namespace, app.value)
        except ValueError as exc:
            return f"{app.namespace}:{app.value}: {exc}"
    for namespace, value in report.checked:
        try:
            match_key(namespace, value)
        except ValueError as exc:
            return f"{namespace}:{value}: {exc}"
    return None


def ingest(
    uow: UnitOfWork,
    batch: InventoryBatch,
    *,
    minimise_personal: bool = True,
    on_report: Callable[[], None] | None = None,
) -> IngestResult:
    """Apply the batch; `on_report` is called after each report (to move a progress bar)."""
    result = IngestResult(skipped=list(batch.skipped))
    for person in batch.people:
        upsert_person(uow, person)
        result.people += 1
    touched: dict[int, Device] = {}
    for facts in batch.devices:
        try:
            device = resolve_device(uow, facts, source="import")
        except IdentifierConflict as exc:
            result.quarantined.append(exc.message)
            continue
        except InvalidInput as exc:
            result.skipped.append(exc.message)
            continue
        apply_device_facts(uow, device, facts)
        touched[device.id] = device
    minimisation: MinimisationSet | None = None
    for report in batch.reports:
        problem = _check_values(report)
        if problem:
            result.skipped.append(f"{report.where}: {problem}".lstrip(": "))
            continue
        try:
            device = resolve_device(uow, report.device, source=report.source)
        except IdentifierConflict as exc:
            result.quarantined.append(f"{report.where}: {exc.message}".lstrip(": "))
            continue
        except InvalidInput as exc:
            result.skipped.append(f"{report.where}: {exc.message}".lstrip(": "))
            continue
        apply_device_facts(uow, device, report.device)
        minimise = None
        if minimise_personal and device.ownership == Ownership.PERSONAL:
            if minimisation is None:
                minimisation = MinimisationSet(frozenset(live_identifier_keys(uow)))
            minimise = minimisation
        if apply_report(uow, device, report, minimise=minimise):
            result.reports_applied += 1
        else:
            result.reports_stale += 1
        touched[device.id] = device
        if on_report is not None:
            on_report()
    result.devices = len(touched)
    for device in touched.values():
        result.decision_changes += reevaluate_device(uow, device)
    return result


def reevaluate_device(uow: UnitOfWork, device: Device) -> list[DecisionChanged]:
    evaluator = DeviceEvaluator(uow, device)
    outcomes = evaluator.at(uow.now)
    record_outcomes(uow, device.id, outcomes)
    changes = refresh_decisions(uow, device, outcomes, evaluator)
    states = tuple((o.version.id, str(o.evaluation.state)) for o in outcomes)
    uow.publish(DeviceEvaluated(device.id, device.owner_id, states, uow.now))
    return changes
