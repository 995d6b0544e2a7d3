"""What the employee portal shows a person about their own devices, and the one thing they can
ask for there (an exemption). Read models are plain frozen values, built inside the unit of work:
the pages render them after it has closed, and run no query of their own.

A device is one of the person's own or it does not exist: `NotFound` says the same for someone
else's device as for one that never was, so changing the number in a URL reveals nothing.

States are evaluated afresh, as `appwarden status --device` and `GET /v1/devices/{device}` do
(`compliance.service.evaluate_device`); a device's access is decided as the gate would
(`access.service.decide_for`). A retracted policy the person was told about stays visible, as
"no action needed" with the correction, on the devices it covered.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from sqlalchemy import func, select

from appwarden.access.service import decide_for
from appwarden.compliance.evaluate import DeviceView, not_applicable_reason
from appwarden.compliance.rules import device_views, rules_of
from appwarden.compliance.service import Outcome, evaluate_device
from appwarden.db.uow import UnitOfWork
from appwarden.devices.models import Device, DeviceResource, Report
from appwarden.errors import Conflict, InvalidInput, NotFound
from appwarden.exemptions import service as exemptions
from appwarden.exemptions.models import Exemption
from appwarden.identity.models import Person
from appwarden.notifications.messages import platform_label, ways_out
from appwarden.notifications.models import Notice
from appwarden.policies.document import PolicyDocument
from appwarden.policies.models import PolicyVersion
from appwarden.policies.service import document_of, effective_versions, versions_of
from appwarden.usecases.agent import create_code
from appwarden.usecases.inventory import device_resources, identifiers_of, newest_reports
from appwarden.usecases.notices import NoticeConfig, app_names
from appwarden.usecases.transparency import StoredRows, stored_rows
from appwarden.vocabulary import ComplianceState, NoticeStatus, VersionState

#: States that ask something of the person.
NEEDS_ACTION: Final = frozenset(
    {ComplianceState.ACTION_REQUIRED, ComplianceState.NON_COMPLIANT, ComplianceState.UNKNOWN}
)
WITHDRAWN: Final = "withdrawn"  # the card of a retracted policy (not a compliance state)
MAX_DATA_REPORTS: Final = 20
_NO_DEVICE: Final = "no such device"


@dataclass(frozen=True, slots=True)
class ExemptionView:
    id: int
    status: str  # requested | approved | denied | revoked
    reason: str
    requested_at: datetime
    decided_at: datetime | None
    starts_at: datetime | None
    ends_at: datetime | None
    note: str | None  # the approver's note (a grant's, or why it was denied or revoked)
    covers_now: bool  # approved, and its window holds now


@dataclass(frozen=True, slots=True)
class PolicyText:
    """What a policy version says to the people it concerns."""

    policy_id: str
    title: str
    deadline: datetime
    apps: tuple[str, ...]
    remediation: str | None
    allowed_alternatives: str | None
    rationale: str | None
    denies: tuple[str, ...]  # resources lost after the due time
    unknown_denies: bool  # an unverified device loses them too
    attestation: bool  # the policy accepts the person's own word (`usecases.attest`)
    evidence: tuple[str, ...]  # what the policy accepts as proof of absence


@dataclass(frozen=True, slots=True)
class PolicyView:
    """One policy's word on one device."""

    text: PolicyText
    state: str  # a compliance state, or "withdrawn"
    since: datetime | None
    due: datetime | None  # when the app must be gone (a violation's own due time)
    underlying: str | None  # exempt: the state beneath the exemption
    blocked: tuple[str, ...]  # resources this policy denies the device right now
    exemptions: tuple[ExemptionView, ...]
    can_request: bool  # an exemption can be asked for now
    correction: str | None  # withdrawn: the message that took it back
    ways: tuple[str, ...] = ()  # unknown: its ways out (`notifications.messages.ways_out`)

    @property
    def policy_id(self) -> str:
        return self.text.policy_id

    @property
    def needs_action(self) -> bool:
        return self.state in NEEDS_ACTION


@dataclass(frozen=True, slots=True)
class DeviceCard:
    id: int
    name: str
    platform: str  # "iOS"; "" when unknown
    form_factor: str
    ownership: str
    last_report_at: datetime | None
    evidence_kinds: tuple[str, ...]  # of its reports
    policies: tuple[PolicyView, ...]

    @property
    def needs_action(self) -> bool:
        return any(p.needs_action for p in self.policies)


@dataclass(frozen=True, slots=True)
class Portal:
    """A page's worth: whose it is, the instant it shows, their devices."""

    now: datetime
    time_zone: str
    devices: tuple[DeviceCard, ...]
    focus: str | None = None  # the policy a notice's link named


# ── reading ───────────────────────────────────────────────────────────────────────────────────


def _own_device(uow: UnitOfWork, person_id: int, device_id: str) -> Device:
    """The person's device with this id; NotFound, worded alike, for any other id."""
    if not device_id.isdecimal() or len(device_id) > 18:
        raise NotFound(_NO_DEVICE)
    device = uow.session.get(Device, int(device_id))
    if device is None or device.owner_id != person_id:
        raise NotFound(_NO_DEVICE)
    return device


def _exemption_views(uow: UnitOfWork, device: Device, policy_id: str) -> tuple[ExemptionView, ...]:
    rows = uow.session.scalars(
        select(Exemption)
        .where(
            Exemption.policy_id == policy_id,
            (Exemption.device_id == device.id) | (Exemption.person_id == device.owner_id),
        )
        .order_by(Exemption.id)
    )
    now = uow.now
    return tuple(
        ExemptionView(
            id=e.id,
            status=e.status,
            reason=e.reason,
            requested_at=e.created_at,
            decided_at=e.decided_at,
            starts_at=e.starts_at,
            ends_at=e.ends_at,
            note=e.decision_note,
            covers_now=e.status == "approved"
            and e.starts_at is not None
            and e.ends_at is not None
            and e.starts_at <= now < e.ends_at,
        )
        for e in rows
    )


def _live_view(
    uow: UnitOfWork, device: Device, outcome: Outcome, config: NoticeConfig, blocked: set[str]
) -> PolicyView:
    version, evaluation = outcome.version, outcome.evaluation
    doc = document_of(version)
    state = str(evaluation.state)
    underlying = next(
        (r.partition(":")[2] for r in evaluation.reasons if r.startswith("underlying:")), None
    )
    held = _exemption_views(uow, device, version.policy_id)
    open_request = any(e.status == "requested" or e.covers_now for e in held)
    return PolicyView(
        text=_text(version, doc, config),
        state=state,
        since=evaluation.since,
        due=evaluation.due,
        underlying=underlying,
        blocked=tuple(sorted(blocked)),
        exemptions=held,
        can_request=state in NEEDS_ACTION and not open_request,
        correction=None,
        ways=ways_out(device.platform, doc.evidence) if state == ComplianceState.UNKNOWN else (),
    )


def _text(version: PolicyVersion, doc: PolicyDocument, config: NoticeConfig) -> PolicyText:
    return PolicyText(
        policy_id=version.policy_id,
        title=doc.title,
        deadline=doc.deadline,
        apps=app_names(doc, config.catalog),
        remediation=doc.remediation,
        allowed_alternatives=doc.allowed_alternatives,
        rationale=doc.rationale.text if doc.rationale else None,
        denies=tuple(doc.deny),
        unknown_denies=doc.unknown == "deny",
        attestation="attestation" in doc.evidence,
        evidence=tuple(doc.evidence),
    )


def _withdrawn_view(version: PolicyVersion, config: NoticeConfig) -> PolicyView:
    return PolicyView(
        text=_text(version, document_of(version), config),
        state=WITHDRAWN,
        since=version.ended_at,
        due=None,
        underlying=None,
        blocked=(),
        exemptions=(),
        can_request=False,
        correction=version.end_reason,
    )


def _withdrawn_versions(uow: UnitOfWork, person_id: int) -> list[PolicyVersion]:
    """Per policy the person was told about that has nothing in effect now and whose last live
    version was retracted: that version."""
    told = set(
        uow.session.scalars(
            select(Notice.policy_id).where(
                Notice.person_id == person_id, Notice.status == NoticeStatus.SENT
            )
        )
    )
    live = {v.policy_id for v in effective_versions(uow, uow.now)}
    found = []
    for policy_id in sorted(told - live):
        retracted = [v for v in versions_of(uow, policy_id) if v.state == VersionState.RETRACTED]
        if retracted:
            found.append(max(retracted, key=lambda v: v.number))
    return found


def _covered(uow: UnitOfWork, version: PolicyVersion, view: DeviceView) -> bool:
    return not_applicable_reason(rules_of(uow, version), view) is None


def _card(
    uow: UnitOfWork,
    device: Device,
    view: DeviceView,
    withdrawn: Iterable[PolicyVersion],
    config: NoticeConfig,
) -> DeviceCard:
    outcomes = [
        o
        for o in evaluate_device(uow, device, uow.now)
        if o.evaluation.state != ComplianceState.NOT_APPLICABLE
    ]
    blocked = _blocked(uow, device, outcomes)
    policies = [
        _live_view(uow, device, o, config, blocked.get(o.version.policy_id, set()))
        for o in outcomes
    ]
    policies += [_withdrawn_view(v, config) for v in withdrawn if _covered(uow, v, view)]
    last, kinds = _reports_seen(uow, device.id)
    return DeviceCard(
        id=device.id,
        name=device.name or f"Device {device.id}",
        platform=platform_label(device.platform),
        form_factor=device.form_factor,
        ownership=device.ownership,
        last_report_at=last,
        evidence_kinds=kinds,
        policies=tuple(policies),
    )


def _blocked(uow: UnitOfWork, device: Device, outcomes: list[Outcome]) -> dict[str, set[str]]:
    """Per policy, the resources of the device it denies now (as the gate decides)."""
    resources = uow.session.scalars(
        select(DeviceResource.resource).where(DeviceResource.device_id == device.id)
    )
    found: dict[str, set[str]] = {}
    for resource in resources:
        result = decide_for(uow, device, resource, uow.now, outcomes)
        for reason in result.reasons:
            if reason.get("effect") == "deny":
                found.setdefault(str(reason.get("policy")), set()).add(resource)
    return found


def _reports_seen(uow: UnitOfWork, device_id: int) -> tuple[datetime | None, tuple[str, ...]]:
    newest = uow.session.scalar(
        select(func.max(Report.observed_at)).where(Report.device_id == device_id)
    )
    kinds = uow.session.scalars(
        select(Report.evidence_kind).where(Report.device_id == device_id).distinct()
    )
    return newest, tuple(sorted(kinds))


def _person(uow: UnitOfWork, person_id: int) -> Person:
    person = uow.session.get(Person, person_id)
    if person is None:
        raise NotFound(_NO_DEVICE)
    return person


def my_devices(uow: UnitOfWork, person_id: int, config: NoticeConfig) -> Portal:
    """Every device the person owns (retired ones left out), each with its policies."""
    person = _person(uow, person_id)
    devices = list(
        uow.session.scalars(
            select(Device)
            .where(Device.owner_id == person_id, Device.status == "active")
            .order_by(Device.name, Device.id)
        )
    )
    views = device_views(uow, [d.id for d in devices])
    withdrawn = _withdrawn_versions(uow, person_id)
    cards = [_card(uow, d, views[d.id], withdrawn, config) for d in devices]
    cards.sort(key=lambda card: not card.needs_action)  # what needs doing first, then by name
    return Portal(uow.now, person.time_zone or config.default_time_zone, tuple(cards))


def my_device(
    uow: UnitOfWork, person_id: int, device_id: str, config: NoticeConfig, *, focus: str | None
) -> Portal:
    """One of the person's devices (NotFound for anything else); `focus`: the policy a notice
    named, shown first."""
    person = _person(uow, person_id)
    device = _own_device(uow, person_id, device_id)
    view = device_views(uow, [device.id])[device.id]
    card = _card(uow, device, view, _withdrawn_versions(uow, person_id), config)
    if focus is not None and any(p.policy_id == focus for p in card.policies):
        ordered = sorted(card.policies, key=lambda p: p.policy_id != focus)
        card = replace(card, policies=tuple(ordered))
    else:
        focus = None
    return Portal(uow.now, person.time_zone or config.default_time_zone, (card,), focus)


# ── what the organisation stores ──────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class StoredIdentifier:
    namespace: str
    value: str
    source: str
    first_seen_at: datetime | None
    last_seen_at: datetime | None


@dataclass(frozen=True, slots=True)
class StoredReport:
    source: str
    evidence_kind: str
    observed_at: datetime
    received_at: datetime
    app_count: int


@dataclass(frozen=True, slots=True)
class StoredDevice:
    id: int
    name: str
    platform: str
    form_factor: str
    ownership: str
    status: str
    resources: tuple[str, ...]
    identifiers: tuple[StoredIdentifier, ...]
    reports: tuple[StoredReport, ...]  # the newest MAX_DATA_REPORTS
    reports_total: int


@dataclass(frozen=True, slots=True)
class StoredData:
    now: datetime
    time_zone: str
    email: str
    name: str | None
    devices: tuple[StoredDevice, ...]
    rows: StoredRows  # every row stored about the devices, as stored (`usecases.transparency`)


def _stored(uow: UnitOfWork, device: Device) -> StoredDevice:
    identifiers = identifiers_of(uow, [device.id])[device.id]
    reports, total = newest_reports(uow, device.id, MAX_DATA_REPORTS)
    return StoredDevice(
        id=device.id,
        name=device.name or f"Device {device.id}",
        platform=platform_label(device.platform) or device.platform,
        form_factor=device.form_factor,
        ownership=device.ownership,
        status=device.status,
        resources=tuple(device_resources(uow, device.id)),
        identifiers=tuple(
            StoredIdentifier(i.namespace, i.value, i.source, i.first_seen_at, i.last_seen_at)
            for i in identifiers
        ),
        reports=tuple(
            StoredReport(r.source, r.evidence_kind, r.observed_at, r.received_at, r.app_count)
            for r, _ in reports
        ),
        reports_total=total,
    )


def my_data(uow: UnitOfWork, person_id: int, config: NoticeConfig) -> StoredData:
    """What appwarden keeps about the person's devices: a summary of each (identifiers, the
    newest reports) for the page, and every stored row about them, as stored, from which
    `appwarden transparency` and the page's details are drawn."""
    person = _person(uow, person_id)
    devices = list(
        uow.session.scalars(
            select(Device).where(Device.owner_id == person_id).order_by(Device.name, Device.id)
        )
    )
    return StoredData(
        uow.now,
        person.time_zone or config.default_time_zone,
        person.email,
        person.display_name,
        tuple(_stored(uow, d) for d in devices),
        stored_rows(uow, person_id, [d.id for d in devices]),
    )


# ── asking for an exemption ───────────────────────────────────────────────────────────────────


def request_exemption(
    uow: UnitOfWork,
    person_id: int,
    device_id: str,
    policy_id: str,
    reason: str,
    config: NoticeConfig,
) -> int:
    """The person asks for an exemption from `policy_id` for one of their devices, saying why.
    Refused for someone else's device (NotFound), a policy that asks nothing of the device, or
    while a request is pending or an exemption covers it (Conflict). Changes nothing until an
    approver decides; the unit of work's actor is the person, acting as an employee only."""
    device = _own_device(uow, person_id, device_id)
    view = my_device(uow, person_id, device_id, config, focus=None)
    policy = next((p for p in view.devices[0].policies if p.policy_id == policy_id), None)
    if policy is None or policy.state == WITHDRAWN:
        raise InvalidInput("this policy asks nothing of this device")
    if not policy.can_request:
        raise Conflict("an exemption for this device is already asked for, or in force")
    exemption = exemptions.request(uow, policy_id=policy_id, device=device, reason=reason)
    return exemption.id


# ── the agent or check app ────────────────────────────────────────────────────────────────────


def enrolment_code(uow: UnitOfWork, person_id: int, device_id: str) -> dict[str, Any]:
    """A one-time code (15 minutes) binding the agent or check app to one of the person's own
    devices (NotFound, worded alike, for any other)."""
    device = _own_device(uow, person_id, device_id)
    return create_code(uow, device, created_by=f"person:{person_id}")
