"""Who is told what, and when (docs/notices.md). The preview and the release run this same code:
`plan_release` decides every notice, `materialise` queues it.

    announce     people with a device in action_required, non_compliant or unknown at release
    update       the remaining audience of a new version when deadline, apps, scope or
                 remediation changed; "no longer affected" to those who left the audience
    reminder     one row per (told person, offset), at `send_at` in their zone
    exemption    an exemption granted before release, announced to its holder at release
    blocked /    from DecisionChanged, at most one of each per person and policy per hour
    restored
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from appwarden.catalog.model import Catalog
from appwarden.compliance.evaluate import Evaluation, evaluate
from appwarden.compliance.rules import (
    device_views,
    exemption_windows,
    granted_exemptions,
    rules_of,
)
from appwarden.compliance.service import evaluate_view, fleet_status
from appwarden.db.chunked import one_of, scalars_in
from appwarden.db.uow import UnitOfWork
from appwarden.devices.models import Device, DeviceResource
from appwarden.devices.service import device_identifiers, device_name
from appwarden.events import DecisionChanged
from appwarden.exemptions.models import Exemption
from appwarden.exemptions.service import holder
from appwarden.identity.models import Person
from appwarden.notifications import service as outbox
from appwarden.notifications.messages import DeviceLine, NoticeContext, render
from appwarden.notifications.models import Notice
from appwarden.policies.document import PolicyDocument
from appwarden.policies.models import PolicyFirstSeen, PolicyVersion
from appwarden.policies.service import document_of, live_among, live_version, versions_of
from appwarden.timeutil import iso
from appwarden.vocabulary import ComplianceState, NoticeKind, NoticeStatus, VersionState

AUDIENCE_STATES = frozenset(
    {ComplianceState.ACTION_REQUIRED, ComplianceState.NON_COMPLIANT, ComplianceState.UNKNOWN}
)
STILL_REQUIRED = frozenset({ComplianceState.ACTION_REQUIRED, ComplianceState.UNKNOWN})


@dataclass(frozen=True)
class NoticeConfig:
    catalog: Catalog
    domain: str = "appwarden.local"
    organisation: str = "Example Corp"
    default_time_zone: str = "UTC"
    public_url: str = "http://127.0.0.1:8000"  # the origin every link in mail starts with

    @property
    def portal_url(self) -> str:
        """The portal's home; a device's page is `{portal_url}devices/{id}?policy=…`."""
        return f"{self.public_url}/me/"


@dataclass(frozen=True)
class PlannedNotice:
    person_id: int
    person: str
    kind: str
    template: str
    due_slot: str
    due_at: datetime
    devices: tuple[DeviceLine, ...]
    subject: str
    text: str
    html: str
    address: str
    payload: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "person": self.person,
            "address": self.address,
            "kind": self.kind,
            "template": self.template,
            "due_at": iso(self.due_at),
            "devices": [
                {"name": d.name, "platform": d.platform, "variant": d.variant, "due": iso(d.due)}
                for d in self.devices
            ],
            "subject": self.subject,
            "text": self.text,
        }


@dataclass
class ReleasePlan:
    policy_id: str
    version: int
    release_at: datetime
    counts: dict[str, int]
    notices: list[PlannedNotice]
    losing_access: list[dict[str, Any]]
    ownerless: list[str]
    audience: dict[str, list[str]]

    def as_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy_id,
            "version": self.version,
            "release_at": iso(self.release_at),
            "counts": self.counts,
            "recipients": sorted({n.person for n in self.notices}),
            "notices": [n.as_json() for n in self.notices],
            "losing_access": self.losing_access,
            "in_scope_without_owner": self.ownerless,
            "audience": self.audience,
        }


# ── building blocks ───────────────────────────────────────────────────────────────────────────


def app_names(doc: PolicyDocument, catalog: Catalog) -> tuple[str, ...]:
    names = [catalog.get(slug).name for slug in doc.apps if slug in catalog]
    names += [ref.value for ref in doc.identifiers]
    return tuple(dict.fromkeys(names))


def reminder_at(deadline: datetime, offset: timedelta, time_zone: str, send_at: str) -> datetime:
    """`send_at` local time of the recipient, at or before `deadline - offset`."""
    zone = ZoneInfo(time_zone)
    target = (deadline - offset).astimezone(zone)
    hour, minute = (int(part) for part in send_at.split(":"))
    candidate = datetime.combine(target.date(), time(hour, minute), tzinfo=zone)
    if candidate > target:
        candidate -= timedelta(days=1)
        candidate = datetime.combine(candidate.date(), time(hour, minute), tzinfo=zone)
    return candidate.astimezone(deadline.tzinfo)


def _variant(state: ComplianceState) -> str:
    if state in (ComplianceState.ACTION_REQUIRED, ComplianceState.NON_COMPLIANT):
        return "violating"
    return {ComplianceState.UNKNOWN: "unverified", ComplianceState.EXEMPT: "exempt"}.get(
        state, "compliant"
    )


@dataclass
class _Audience:
    """In-scope devices of a version at an instant, grouped by owner."""

    by_person: dict[int, list[tuple[Device, Evaluation]]]
    people: dict[int, Person]
    counts: dict[str, int]
    ownerless: list[int]


def speaks_for_owner(device: Device, at: datetime) -> bool:
    """Does this device speak for its owner in notices? Not a mail partnership still waiting for
    an admin to merge it into the device it is (it would tell people about a phone twice)."""
    return device.join_pending_until is None or device.join_pending_until <= at


def _audience(
    uow: UnitOfWork, version: PolicyVersion, at: datetime, release_at: datetime
) -> _Audience:
    rules = rules_of(uow, version, release_at=release_at)
    evaluations = fleet_status(uow, rules, at)
    devices = {
        d.id: d
        for d in scalars_in(
            uow.session, select(Device), Device.id, [device_id for device_id, _ in evaluations]
        )
    }
    by_person: dict[int, list[tuple[Device, Evaluation]]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    for device_id, evaluation in evaluations:
        device = devices[device_id]
        counts[str(evaluation.state)] += 1
        if device.owner_id is not None and speaks_for_owner(device, at):
            by_person[device.owner_id].append((device, evaluation))
    people = {p.id: p for p in scalars_in(uow.session, select(Person), Person.id, by_person)}
    ownerless = sorted(d.id for d in devices.values() if d.owner_id is None)
    return _Audience(by_person, people, dict(counts), ownerless)


def _lines(
    uow: UnitOfWork,
    entries: list[tuple[Device, Evaluation]],
    apps: tuple[str, ...],
    identifiers: Mapping[int, list[str]] | None = None,
) -> tuple[DeviceLine, ...]:
    """`identifiers`: those of the unnamed devices, when the caller read them for many people."""
    ids = (
        _identifiers_of_unnamed(uow, (d for d, _ in entries))
        if identifiers is None
        else identifiers
    )
    lines = []
    for device, evaluation in sorted(entries, key=lambda e: (e[0].name or "", e[0].id)):
        variant = _variant(evaluation.state)
        named_by = ids.get(device.id)
        lines.append(
            DeviceLine(
                name=device.name or (named_by[0] if named_by else f"device {device.id}"),
                platform=device.platform,
                variant=variant,
                apps_found=apps if variant == "violating" else (),
                due=evaluation.due,
                device_id=device.id,
            )
        )
    return tuple(lines)


def render_notice(
    config: NoticeConfig,
    person: Person,
    version: PolicyVersion,
    doc: PolicyDocument,
    *,
    kind: str,
    template: str,
    devices: tuple[DeviceLine, ...],
    **extra: Any,
) -> outbox.Rendered:
    """One notice of `kind` for `person` about `version`, rendered with its template (text and
    HTML), in the person's time zone. Used by every use case that writes to people."""
    context = NoticeContext(
        kind=kind,
        template=template,
        person_name=person.display_name or person.email,
        person_email=person.email,
        time_zone=person.time_zone or config.default_time_zone,
        policy_id=version.policy_id,
        policy_title=doc.title,
        app_names=app_names(doc, config.catalog),
        deadline=doc.deadline,
        devices=devices,
        remediation=doc.remediation,
        allowed_alternatives=doc.allowed_alternatives,
        rationale=doc.rationale.text if doc.rationale else None,
        portal_url=config.portal_url,
        organisation=config.organisation,
        evidence=tuple(doc.evidence),
        **extra,
    )
    message = render(context)
    return outbox.Rendered(message.subject, message.text, message.html)


def _planned(
    person: Person,
    kind: str,
    template: str,
    slot: str,
    due_at: datetime,
    devices: tuple[DeviceLine, ...],
    rendered: outbox.Rendered,
    **payload: Any,
) -> PlannedNotice:
    return PlannedNotice(
        person_id=person.id,
        person=person.email,
        kind=kind,
        template=template,
        due_slot=slot,
        due_at=due_at,
        devices=devices,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        address=person.email,
        payload=payload,
    )


def _told_announce(uow: UnitOfWork, policy_id: str) -> set[int]:
    """People announced for the policy (queued or sent, not cancelled)."""
    return set(
        uow.session.scalars(
            select(Notice.person_id).where(
                Notice.policy_id == policy_id,
                Notice.kind == NoticeKind.ANNOUNCE,
                Notice.status != NoticeStatus.CANCELLED,
            )
        )
    )


def _previous_live(uow: UnitOfWork, version: PolicyVersion) -> PolicyVersion | None:
    older = [
        v
        for v in versions_of(uow, version.policy_id)
        if v.number < version.number
        and v.release_at is not None
        and v.state != VersionState.RETRACTED
        and v.state in (VersionState.ACTIVE, VersionState.SCHEDULED, VersionState.SUPERSEDED)
    ]
    return older[-1] if older else None


def _changes(old: PolicyDocument, new: PolicyDocument, config: NoticeConfig) -> tuple[str, ...]:
    changes = []
    if old.deadline != new.deadline:
        changes.append("deadline")
    if (
        set(app_names(old, config.catalog)) != set(app_names(new, config.catalog))
        or old.identifiers != new.identifiers
    ):
        changes.append("apps")
    if old.scope != new.scope:
        changes.append("scope")
    if old.remediation != new.remediation:
        changes.append("remediation")
    return tuple(changes)


def reminders_for(
    config: NoticeConfig,
    person: Person,
    version: PolicyVersion,
    doc: PolicyDocument,
    devices: tuple[DeviceLine, ...],
    after: datetime,
) -> list[PlannedNotice]:
    planned = []
    zone = person.time_zone or config.default_time_zone
    for offset in doc.notices.reminders:
        due_at = reminder_at(doc.deadline, offset, zone, doc.notices.send_at)
        if due_at <= after:
            continue  # its time passed before the person was told
        label = (
            f"P{int(offset.total_seconds() // 86400)}D"
            if offset.total_seconds() % 86400 == 0
            else str(int(offset.total_seconds())) + "S"
        )
        rendered = render_notice(
            config, person, version, doc, kind="reminder", template="reminder", devices=devices
        )
        planned.append(
            _planned(
                person,
                "reminder",
                "reminder",
                f"v{version.number}:{label}",
                due_at,
                devices,
                rendered,
                offset=label,
            )
        )
    return planned


# ── release ───────────────────────────────────────────────────────────────────────────────────


def plan_release(
    uow: UnitOfWork, version: PolicyVersion, release_at: datetime, config: NoticeConfig
) -> ReleasePlan:
    """Everything the release of `version` at `release_at` will do, without doing it."""
    doc = document_of(version)
    apps = app_names(doc, config.catalog)
    audience = _audience(uow, version, release_at, release_at)
    told = _told_announce(uow, version.policy_id)
    previous = _previous_live(uow, version)
    changes = _changes(document_of(previous), doc, config) if previous else ()
    notices: list[PlannedNotice] = []
    diff: dict[str, list[str]] = {
        "announce": [],
        "update": [],
        "no_longer_affected": [],
        "unchanged": [],
    }
    members = _members(audience)
    for pid in sorted(members, key=lambda p: audience.people[p].email):
        person = audience.people[pid]
        entries = [(d, e) for d, e in audience.by_person[pid] if e.state in AUDIENCE_STATES]
        devices = _lines(uow, entries, apps)
        bucket, notice = _member_notice(
            config, person, version, doc, devices, told=pid in told, changes=changes, at=release_at
        )
        diff[bucket].append(person.email)
        notices += [notice] if notice is not None else []
        notices += reminders_for(config, person, version, doc, devices, release_at)
    for pid in sorted(told - members):
        leaver = uow.session.get(Person, pid)
        assert leaver is not None
        notices.append(_leaver_notice(config, leaver, version, doc, at=release_at))
        diff["no_longer_affected"].append(leaver.email)
    notices += _exemption_notices(uow, config, version, doc, release_at)
    return ReleasePlan(
        policy_id=version.policy_id,
        version=version.number,
        release_at=release_at,
        counts=audience.counts,
        notices=notices,
        losing_access=_losing_access(uow, doc, audience),
        ownerless=[
            ident
            for ids in device_identifiers(uow, audience.ownerless).values()
            for ident in ids[:1]
        ],
        audience=diff,
    )


def _members(audience: _Audience) -> set[int]:
    """Active people with at least one device the release asks something of."""
    return {
        pid
        for pid, entries in audience.by_person.items()
        if audience.people[pid].status == "active"
        and any(e.state in AUDIENCE_STATES for _, e in entries)
    }


def _member_notice(
    config: NoticeConfig,
    person: Person,
    version: PolicyVersion,
    doc: PolicyDocument,
    devices: tuple[DeviceLine, ...],
    *,
    told: bool,
    changes: tuple[str, ...],
    at: datetime,
) -> tuple[str, PlannedNotice | None]:
    """What a member of the audience is sent at release, and the audience bucket they fall in:
    an announcement if never told, an update if the version changed what they were told."""
    if not told:
        template = doc.notices.announce_template
        rendered = render_notice(
            config, person, version, doc, kind="announce", template=template, devices=devices
        )
        return "announce", _planned(person, "announce", template, "announce", at, devices, rendered)
    if not changes:
        return "unchanged", None
    rendered = render_notice(
        config,
        person,
        version,
        doc,
        kind="update",
        template="update",
        devices=devices,
        changes=changes,
    )
    return "update", _planned(
        person,
        "update",
        "update",
        f"v{version.number}",
        at,
        devices,
        rendered,
        changes=list(changes),
    )


def _leaver_notice(
    config: NoticeConfig,
    person: Person,
    version: PolicyVersion,
    doc: PolicyDocument,
    *,
    at: datetime,
) -> PlannedNotice:
    """The "no longer affected" update to someone told before who left the audience."""
    rendered = render_notice(
        config, person, version, doc, kind="update", template="no-longer-affected", devices=()
    )
    return _planned(person, "update", "no-longer-affected", f"v{version.number}", at, (), rendered)


def _exemption_notices(
    uow: UnitOfWork, config: NoticeConfig, version: PolicyVersion, doc: PolicyDocument, at: datetime
) -> list[PlannedNotice]:
    planned = []
    for exemption in uow.session.scalars(
        select(Exemption)
        .where(Exemption.policy_id == version.policy_id, Exemption.status == "approved")
        .order_by(Exemption.id)
    ):
        if exemption.ends_at is None or exemption.ends_at <= at:
            continue
        person = holder(uow, exemption)
        if person is None or outbox.find(
            uow, person.id, version.policy_id, "exemption", f"granted:{exemption.id}"
        ):
            continue
        rendered = render_notice(
            config,
            person,
            version,
            doc,
            kind="exemption",
            template="exemption-granted",
            devices=(),
            exemption_ends=exemption.ends_at,
            exemption_reason=exemption.reason,
        )
        planned.append(
            _planned(
                person,
                "exemption",
                "exemption-granted",
                f"granted:{exemption.id}",
                at,
                (),
                rendered,
                exemption=exemption.id,
            )
        )
    return planned


def _losing_access(
    uow: UnitOfWork, doc: PolicyDocument, audience: _Audience
) -> list[dict[str, Any]]:
    losing = []
    for pid, entries in audience.by_person.items():
        for device, evaluation in entries:
            resources = set(
                uow.session.scalars(
                    select(DeviceResource.resource).where(DeviceResource.device_id == device.id)
                )
            ) & set(doc.deny)
            when: datetime | None = None
            if evaluation.state in (ComplianceState.ACTION_REQUIRED, ComplianceState.NON_COMPLIANT):
                when = evaluation.due
            elif evaluation.state == ComplianceState.UNKNOWN and doc.unknown == "deny":
                first = device.first_report_at
                when = doc.deadline if first is None else max(doc.deadline, first + doc.grace)
            if when is None:
                continue
            for resource in sorted(resources):
                losing.append(
                    {
                        "person": audience.people[pid].email,
                        "device": device.name,
                        "resource": resource,
                        "at": iso(when),
                    }
                )
    return sorted(losing, key=lambda r: (r["at"], r["person"], r["device"] or ""))


def materialise(
    uow: UnitOfWork, version: PolicyVersion, notices: list[PlannedNotice], config: NoticeConfig
) -> list[Notice]:
    queued = []
    for planned in notices:
        notice = outbox.enqueue(uow, **_queued_as(version, planned, config))
        if notice is not None:
            queued.append(notice)
    return queued


def _queued_as(
    version: PolicyVersion, planned: PlannedNotice, config: NoticeConfig
) -> dict[str, Any]:
    """The outbox's arguments for a planned notice of the version."""
    return {
        "person_id": planned.person_id,
        "address": planned.address,
        "policy_id": version.policy_id,
        "version_id": version.id,
        "kind": planned.kind,
        "due_slot": planned.due_slot,
        "due_at": planned.due_at,
        "rendered": outbox.Rendered(planned.subject, planned.text, planned.html),
        "domain": config.domain,
        "payload": {"template": planned.template, **planned.payload},
    }


def on_release(uow: UnitOfWork, version: PolicyVersion, config: NoticeConfig) -> list[Notice]:
    """Side effects of a release: queue the planned notices; older versions' reminders go."""
    assert version.release_at is not None
    for older in versions_of(uow, version.policy_id):
        if older.number < version.number:
            for notice in uow.session.scalars(
                select(Notice).where(
                    Notice.version_id == older.id,
                    Notice.kind == "reminder",
                    Notice.status == NoticeStatus.PENDING,
                )
            ):
                outbox.cancel(uow, notice, "superseded")
    plan = plan_release(uow, version, version.release_at, config)
    return materialise(uow, version, plan.notices, config)


# ── after release: late entrants, reminders, blocked/restored ─────────────────────────────────


def released(version: PolicyVersion) -> bool:
    """The release side effects ran (the worker recorded it), so later changes notify."""
    return version.state == VersionState.ACTIVE


def announce_entrant(
    uow: UnitOfWork, person: Person, version: PolicyVersion, config: NoticeConfig
) -> list[Notice]:
    """A person who enters the audience after release is announced then, with their own due."""
    if not released(version) or person.status != "active":
        return []
    if _was_announced(uow, version.policy_id, person.id):
        return []
    entries = _person_entries(uow, version, person)
    return materialise(uow, version, _announcement(uow, person, version, config, entries), config)


def announce_entrants(
    uow: UnitOfWork,
    candidates: Sequence[tuple[int, int]],
    config: NoticeConfig,
    evaluated: Mapping[tuple[int, int], Evaluation] | None = None,
) -> None:
    """`announce_entrant` for each (person id, version id), in order, for a batch of evaluated
    devices: what it reads per person (the people, whether they were announced, their devices'
    views and first sightings) is read once per version for all of them, and the notices are
    queued with one statement. The same notices, in the same order, as announcing them one by
    one (a notice whose (person, policy, kind, slot) is queued already is left out either way)."""
    people = {p.id: p for p in _read_in_chunks(uow, Person, [p for p, _ in candidates])}
    versions = {
        v.id: v for v in _read_in_chunks(uow, PolicyVersion, sorted({v for _, v in candidates}))
    }
    entries: dict[int, dict[int, list[tuple[Device, Evaluation]]]] = {}
    announced: dict[int, set[int]] = {}
    for version_id, version in versions.items():
        audience = [
            people[p]
            for p, v in candidates
            if v == version_id and p in people and people[p].status == "active"
        ]
        if not released(version) or not audience:
            continue
        announced[version_id] = _announced_among(uow, version.policy_id, [p.id for p in audience])
        entries[version_id] = _people_entries(
            uow,
            version,
            [p for p in audience if p.id not in announced[version_id]],
            evaluated or {},
        )
    identifiers = _identifiers_of_unnamed(
        uow, (d for people in entries.values() for rows in people.values() for d, _ in rows)
    )
    queued: list[dict[str, Any]] = []
    for person_id, version_id in candidates:
        person, version = people.get(person_id), versions.get(version_id)
        if person is None or version is None or version_id not in entries:
            continue
        if person.status != "active" or person_id in announced[version_id]:
            continue
        notices = _announcement(
            uow, person, version, config, entries[version_id].get(person_id, []), identifiers
        )
        # Announced now: a later device of theirs finds it so, as one by one. (Where a notice
        # of the same key was queued before, one by one would try again with the same
        # person's entries, and be left out again.)
        if notices:
            announced[version_id].add(person_id)
        queued += [_queued_as(version, planned, config) for planned in notices]
    outbox.enqueue_all(uow, queued)


_READ_CHUNK = 1_000


def _identifiers_of_unnamed(uow: UnitOfWork, devices: Iterable[Device]) -> dict[int, list[str]]:
    """The identifiers of the devices without a name (their notices name them by one), read a
    chunk of devices at a time."""
    unnamed = sorted({d.id for d in devices if not d.name})
    identifiers: dict[int, list[str]] = {}
    for start in range(0, len(unnamed), _READ_CHUNK):
        identifiers.update(device_identifiers(uow, unnamed[start : start + _READ_CHUNK]))
    return identifiers


def _read_in_chunks(uow: UnitOfWork, model: type[Any], ids: Sequence[int]) -> list[Any]:
    unique = sorted(set(ids))
    rows: list[Any] = []
    for start in range(0, len(unique), _READ_CHUNK):
        chunk = unique[start : start + _READ_CHUNK]
        rows += uow.session.scalars(select(model).where(one_of(model.id, chunk)))
    return rows


def _announced_among(uow: UnitOfWork, policy_id: str, person_ids: Sequence[int]) -> set[int]:
    """`_was_announced` for many people at once."""
    found: set[int] = set()
    for start in range(0, len(person_ids), _READ_CHUNK):
        found.update(
            uow.session.scalars(
                select(Notice.person_id).where(
                    Notice.policy_id == policy_id,
                    one_of(Notice.person_id, person_ids[start : start + _READ_CHUNK]),
                    Notice.kind == NoticeKind.ANNOUNCE,
                    Notice.status != NoticeStatus.CANCELLED,
                )
            )
        )
    return found


def _announcement(
    uow: UnitOfWork,
    person: Person,
    version: PolicyVersion,
    config: NoticeConfig,
    person_entries: list[tuple[Device, Evaluation]],
    identifiers: Mapping[int, list[str]] | None = None,
) -> list[PlannedNotice]:
    """The announcement and reminders a person not yet told gets, given their devices'
    evaluations now (none when no device of theirs is in the audience)."""
    doc = document_of(version)
    entries = [(d, e) for d, e in person_entries if e.state in AUDIENCE_STATES]
    if not entries:
        return []
    devices = _lines(uow, entries, app_names(doc, config.catalog), identifiers)
    rendered = render_notice(
        config,
        person,
        version,
        doc,
        kind="announce",
        template=doc.notices.announce_template,
        devices=devices,
    )
    notices = [
        _planned(
            person,
            "announce",
            doc.notices.announce_template,
            "announce",
            uow.now,
            devices,
            rendered,
        )
    ]
    notices += reminders_for(config, person, version, doc, devices, uow.now)
    return notices


def _was_announced(uow: UnitOfWork, policy_id: str, person_id: int) -> bool:
    return (
        uow.session.scalars(
            select(Notice.id).where(
                Notice.policy_id == policy_id,
                Notice.person_id == person_id,
                Notice.kind == NoticeKind.ANNOUNCE,
                Notice.status != NoticeStatus.CANCELLED,
            )
        ).first()
        is not None
    )


def _person_entries(
    uow: UnitOfWork, version: PolicyVersion, person: Person
) -> list[tuple[Device, Evaluation]]:
    """One person's in-scope devices under the version now: evaluated device by device, so a
    late entrant or a due reminder costs that person's devices, not a pass over the fleet."""
    rules = rules_of(uow, version)
    devices = list(uow.session.scalars(select(Device).where(Device.owner_id == person.id)))
    views = device_views(uow, [d.id for d in devices])
    entries = []
    for device in devices:
        if not speaks_for_owner(device, uow.now):
            continue
        evaluation = evaluate_view(uow, rules, views[device.id], device.owner_id, uow.now)
        if evaluation.state != ComplianceState.NOT_APPLICABLE:
            entries.append((device, evaluation))
    return entries


def _people_entries(
    uow: UnitOfWork,
    version: PolicyVersion,
    people: Sequence[Person],
    evaluated: Mapping[tuple[int, int], Evaluation],
) -> dict[int, list[tuple[Device, Evaluation]]]:
    """`_person_entries` for many people, by person id: their devices, views, the policy's
    exemptions and the devices' first sightings read once for all of them. `evaluated`: the
    evaluations, now, of devices the caller has just evaluated and stored (device id, version
    id), which would come out the same (`compliance.service.DeviceEvaluator`): not again."""
    entries: dict[int, list[tuple[Device, Evaluation]]] = defaultdict(list)
    if not people:
        return entries
    rules = rules_of(uow, version)
    granted = granted_exemptions(uow, rules.policy_id)
    person_ids = sorted(p.id for p in people)
    for start in range(0, len(person_ids), _READ_CHUNK):
        devices = list(
            uow.session.scalars(
                select(Device)
                .where(one_of(Device.owner_id, person_ids[start : start + _READ_CHUNK]))
                .order_by(Device.id)
            )
        )
        ids = [d.id for d in devices if (d.id, version.id) not in evaluated]
        views = device_views(uow, ids)
        first_seen = dict(
            uow.session.execute(
                select(PolicyFirstSeen.device_id, PolicyFirstSeen.first_seen_at).where(
                    PolicyFirstSeen.policy_id == rules.policy_id,
                    one_of(PolicyFirstSeen.device_id, ids),
                )
            ).all()
        )
        for device in devices:
            if device.owner_id is None or not speaks_for_owner(device, uow.now):
                continue
            known = evaluated.get((device.id, version.id))
            if known is not None:
                if known.state != ComplianceState.NOT_APPLICABLE:
                    entries[device.owner_id].append((device, known))
                continue
            view = views[device.id]
            evaluation = evaluate(
                rules,
                view,
                now=uow.now,
                exemptions=exemption_windows(
                    uow, rules.policy_id, view, device.owner_id, granted=granted
                ),
                stored_first_seen=first_seen.get(device.id),
            )
            if evaluation.state != ComplianceState.NOT_APPLICABLE:
                entries[device.owner_id].append((device, evaluation))
    return entries


def refresh_reminder(uow: UnitOfWork, notice: Notice, config: NoticeConfig) -> bool:
    """When a reminder is due: still needed? Re-render it with the devices as they are now.
    Returns False (and cancels it) when no device of the person needs action any more."""
    version = live_version(uow, notice.policy_id, uow.now)
    person = uow.session.get(Person, notice.person_id)
    if version is None or person is None:
        outbox.cancel(uow, notice, "no_longer_required")
        return False
    doc = document_of(version)
    entries = [
        (d, e) for d, e in _person_entries(uow, version, person) if e.state in STILL_REQUIRED
    ]
    if not entries:
        outbox.cancel(uow, notice, "no_longer_required")
        return False
    devices = _lines(uow, entries, app_names(doc, config.catalog))
    rendered = render_notice(
        config, person, version, doc, kind="reminder", template="reminder", devices=devices
    )
    notice.subject, notice.body_text, notice.body_html = (
        rendered.subject,
        rendered.text,
        rendered.html,
    )
    return True


def on_decision_changed(uow: UnitOfWork, event: DecisionChanged, config: NoticeConfig) -> None:
    """blocked when a policy turns a decision to deny; restored when it turns back to allow and
    nothing else denies. A retraction restores silently: its correction says what came back.
    Which policies have something to say is settled first: a retraction lifts thousands of
    blocks at once, and none of them needs its owner read."""
    kind = NoticeKind.BLOCKED if event.new == "deny" else NoticeKind.RESTORED
    in_effect = dict(event.versions)
    telling: list[tuple[str, PolicyVersion, PolicyDocument]] = []
    # Versions change only in steps that flush before they evaluate (release, retraction), so
    # reading them need not flush the batch's pending states and decisions: once per lifted
    # block, that flush was most of a retraction's time.
    with uow.session.no_autoflush:
        for policy_id in event.causes:
            version = _version_behind(uow, policy_id, event.at, in_effect.get(policy_id))
            if version is None or version.state == VersionState.RETRACTED:
                continue
            doc = document_of(version)
            if doc.notices.blocked if kind == NoticeKind.BLOCKED else doc.notices.restored:
                telling.append((policy_id, version, doc))
    if not telling:
        return
    device = uow.session.get(Device, event.device_id)
    if device is None or device.owner_id is None or not speaks_for_owner(device, event.at):
        return
    person = uow.session.get(Person, device.owner_id)
    if person is None:
        return
    # An unnamed device is called by its first identifier. Identifiers are written when a device
    # is resolved, before it is evaluated: reading them need not flush the batch's writes.
    with uow.session.no_autoflush:
        name = device_name(uow, device)
    for policy_id, version, doc in telling:
        slot = event.at.strftime("%Y-%m-%dT%H")
        line = DeviceLine(
            name=name,
            device_id=device.id,
            platform=device.platform,
            variant=_blocked_variant(event, policy_id)
            if kind == NoticeKind.BLOCKED
            else "compliant",
        )
        rendered = render_notice(
            config,
            person,
            version,
            doc,
            kind=str(kind),
            template=str(kind),
            devices=(line,),
            resource=event.resource,
        )
        outbox.enqueue_at_commit(  # debounce: one of each per person and policy per hour
            uow,
            person_id=person.id,
            address=person.email,
            policy_id=policy_id,
            version_id=version.id,
            kind=kind,
            due_slot=slot,
            due_at=event.at,
            rendered=rendered,
            domain=config.domain,
            payload={"template": str(kind), "device": device.id, "resource": event.resource},
        )


def _blocked_variant(event: DecisionChanged, policy_id: str) -> str:
    """A device blocked under `unknown: deny` is unverified, not found violating."""
    return "unverified" if policy_id in event.unverified else "violating"


def _version_behind(
    uow: UnitOfWork, policy_id: str, at: datetime, in_effect: int | None = None
) -> PolicyVersion | None:
    """The version in effect at `at`, or the one that ended exactly then (retired/retracted).
    `in_effect`: the id of the version the event says was in effect at `at` (the evaluation
    that raised it holds it in the session: no query)."""
    live = uow.session.get(PolicyVersion, in_effect) if in_effect is not None else None
    if live is not None:
        return live
    versions = versions_of(uow, policy_id)  # one query for the live version and the ended ones
    live = live_among(versions, at)
    if live is not None:
        return live
    ended = [v for v in versions if v.ended_at is not None and v.ended_at <= at]
    return max(ended, key=lambda v: v.ended_at or at) if ended else None
