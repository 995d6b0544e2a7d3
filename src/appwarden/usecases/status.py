"""Read models for `status` and `decide` (CLI `--json` and, later, the HTTP API)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import select

from appwarden.access.breaker import judged_view
from appwarden.access.service import decide_for
from appwarden.compliance.evaluate import Evaluation, PolicyRules, Watched, self_reported
from appwarden.compliance.rules import device_views, rules_of
from appwarden.compliance.service import evaluate_device, evaluate_view, fleet_status
from appwarden.db.chunked import scalars_in
from appwarden.db.uow import UnitOfWork
from appwarden.devices.models import Device
from appwarden.devices.service import device_identifiers, find_device
from appwarden.errors import Conflict
from appwarden.identity.models import Person
from appwarden.policies.models import PolicyVersion
from appwarden.policies.service import effective_versions, get_policy, versions_of
from appwarden.timeutil import iso
from appwarden.vocabulary import ComplianceState

Row = dict[str, Any]


def _row(
    version: PolicyVersion,
    device: Device,
    identifiers: list[str],
    owner: Person | None,
    evaluation: Evaluation,
) -> Row:
    return {
        "policy": version.policy_id,
        "version": version.number,
        "device": identifiers[0] if identifiers else None,
        "device_name": device.name,
        "device_identifiers": identifiers,
        "person": owner.email if owner else None,
        "platform": device.platform,
        "form_factor": device.form_factor,
        "ownership": device.ownership,
        "state": str(evaluation.state),
        "since": iso(evaluation.since),
        "due": iso(evaluation.due),
        "reasons": list(evaluation.reasons),
    }


def _with_self_report(
    uow: UnitOfWork, rules: PolicyRules, evaluations: list[tuple[int, Evaluation]], at: datetime
) -> list[tuple[int, Evaluation]]:
    """Compliant evaluations that rest on a device's own answer or its owner's word say so with
    the reason `self_reported`: the state is the same, the proof is weaker."""
    compliant = [d for d, e in evaluations if e.state == ComplianceState.COMPLIANT]
    if not compliant:
        return evaluations
    views = device_views(uow, compliant, watched=Watched.by([rules]))
    return [
        (
            device_id,
            replace(evaluation, reasons=(*evaluation.reasons, "self_reported"))
            if device_id in views and self_reported(rules, views[device_id], at)
            else evaluation,
        )
        for device_id, evaluation in evaluations
    ]


def _owners(uow: UnitOfWork, devices: list[Device]) -> dict[int, Person]:
    ids = {d.owner_id for d in devices if d.owner_id is not None}
    return {p.id: p for p in scalars_in(uow.session, select(Person), Person.id, ids)}


def _rows_for(
    uow: UnitOfWork, version: PolicyVersion, evaluations: list[tuple[int, Evaluation]]
) -> list[Row]:
    ids = [device_id for device_id, _ in evaluations]
    devices = {d.id: d for d in scalars_in(uow.session, select(Device), Device.id, ids)}
    owners = _owners(uow, list(devices.values()))
    identifiers = device_identifiers(uow, ids)
    rows = []
    for device_id, evaluation in evaluations:
        device = devices[device_id]
        owner = owners.get(device.owner_id) if device.owner_id is not None else None
        rows.append(_row(version, device, identifiers[device_id], owner, evaluation))
    return rows


def _version_in_effect(uow: UnitOfWork, policy_id: str, at: datetime) -> PolicyVersion:
    get_policy(uow, policy_id)
    for version in effective_versions(uow, at):
        if version.policy_id == policy_id:
            return version
    states = ", ".join(f"v{v.number} {v.state}" for v in versions_of(uow, policy_id))
    raise Conflict(f"{policy_id} has no version in effect at {iso(at)} ({states})")


def status_rows(
    uow: UnitOfWork,
    at: datetime,
    *,
    policy_id: str | None = None,
    device_ref: str | None = None,
    include_all: bool = False,
) -> list[Row]:
    """States at `at`. Per policy: in-scope devices from the set-based fleet evaluation; with
    `include_all`, every device, not_applicable ones with their reason."""
    if device_ref is not None:
        device = find_device(uow, device_ref)
        outcomes = evaluate_device(uow, device, at)
        if policy_id is not None:
            outcomes = [o for o in outcomes if o.version.policy_id == policy_id]
        identifiers = device_identifiers(uow, [device.id])[device.id]
        owner = uow.session.get(Person, device.owner_id) if device.owner_id else None
        return [
            _row(o.version, device, identifiers, owner, evaluation)
            for o in outcomes
            for _, evaluation in _with_self_report(uow, o.rules, [(device.id, o.evaluation)], at)
        ]
    versions = (
        [_version_in_effect(uow, policy_id, at)] if policy_id else effective_versions(uow, at)
    )
    rows: list[Row] = []
    for version in versions:
        rules = rules_of(uow, version)
        evaluations = fleet_status(uow, rules, at)
        if include_all:
            scoped = {device_id for device_id, _ in evaluations}
            others = [
                d
                for d in uow.session.scalars(select(Device).order_by(Device.id))
                if d.id not in scoped
            ]
            views = device_views(uow, [d.id for d in others], watched=Watched.by([rules]))
            for device in others:
                evaluation = evaluate_view(uow, rules, views[device.id], device.owner_id, at)
                evaluations.append((device.id, evaluation))
        rows += _rows_for(uow, version, _with_self_report(uow, rules, evaluations, at))
    return rows


def decision_row(uow: UnitOfWork, device_ref: str, resource: str, at: datetime) -> Row:
    device = find_device(uow, device_ref)
    result = judged_view(uow, device, resource, at, decide_for(uow, device, resource, at))
    identifiers = device_identifiers(uow, [device.id])[device.id]
    owner = uow.session.get(Person, device.owner_id) if device.owner_id else None
    return {
        "device": identifiers[0],
        "device_identifiers": identifiers,
        "person": owner.email if owner else None,
        "resource": resource,
        "decision": str(result.decision),
        "reasons": list(result.reasons),
        "valid_until": iso(result.valid_until),
        "at": iso(at),
    }


STATE_ORDER = [
    ComplianceState.NON_COMPLIANT,
    ComplianceState.ACTION_REQUIRED,
    ComplianceState.UNKNOWN,
    ComplianceState.EXEMPT,
    ComplianceState.COMPLIANT,
    ComplianceState.NOT_APPLICABLE,
]
