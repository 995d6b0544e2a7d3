"""Turning stored policy versions and devices into the plain data the pure evaluation takes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from weakref import WeakKeyDictionary

from sqlalchemy import Engine, bindparam, or_, select

from appwarden.compliance.evaluate import (
    Covered,
    DeviceView,
    ExemptionWindow,
    IdentifierRule,
    Owner,
    PolicyRules,
    ScopeRule,
    Seen,
    Watched,
)
from appwarden.db.chunked import CHUNK, chunks, one_of
from appwarden.db.uow import UnitOfWork
from appwarden.devices.models import Coverage, Device, DeviceResource, Observation
from appwarden.devices.service import DeviceRows
from appwarden.exemptions.models import Exemption
from appwarden.identity.models import Person, PersonGroup
from appwarden.policies.models import PolicyFirstSeen, PolicyIdentifier, PolicyVersion
from appwarden.vocabulary import VersionState

# Statements evaluation runs for every device are built once (a statement built and keyed per
# call costs more Python than SQLite takes to run it: W4, bench/README.md).
_IDENTIFIERS_OF_VERSION = select(PolicyIdentifier).where(
    PolicyIdentifier.version_id == bindparam("version_id")
)
_DEVICES = select(Device).where(one_of(Device.id, key="ids"))
_OWNERS_AND_GROUPS = (
    select(Person, PersonGroup.group_name)
    .outerjoin(PersonGroup, PersonGroup.person_id == Person.id)
    .where(one_of(Person.id, key="ids"))
)
_RESOURCES = select(DeviceResource.device_id, DeviceResource.resource).where(
    one_of(DeviceResource.device_id, key="ids")
)
# Columns, not ORM objects: a phone has ~90 observations, and building (and identity-mapping)
# an Observation object for each cost more than the rest of its evaluation.
_OBSERVATIONS = select(
    Observation.device_id,
    Observation.source,
    Observation.evidence_kind,
    Observation.namespace,
    Observation.value,
    Observation.first_seen_at,
    Observation.last_seen_at,
).where(one_of(Observation.device_id, key="ids"))
_COVERAGE = select(
    Coverage.device_id,
    Coverage.source,
    Coverage.evidence_kind,
    Coverage.namespace,
    Coverage.value,
    Coverage.observed_at,
).where(one_of(Coverage.device_id, key="ids"))
_GRANTED_STATUSES = ("approved", "revoked")
_GRANTED = select(Exemption).where(
    Exemption.policy_id.in_(bindparam("policy_ids", expanding=True)),
    Exemption.status.in_(_GRANTED_STATUSES),
)
_GRANTED_TO_DEVICE = select(Exemption).where(
    or_(
        Exemption.device_id == bindparam("device_id"),
        Exemption.person_id == bindparam("person_id"),
    ),
    Exemption.status.in_(_GRANTED_STATUSES),
)
_FIRST_SEENS = select(PolicyFirstSeen).where(PolicyFirstSeen.device_id == bindparam("device_id"))


def _set(value: object) -> frozenset[str] | None:
    return None if value is None else frozenset(str(v) for v in value)  # type: ignore[attr-defined]


# A version that has been released can no longer be edited (a change makes a new version), so
# its identifiers never change: each process keeps them, per store, and a report's evaluation
# reads no identifier rows (W4). Keyed by engine because version ids are unique only within one
# store, and checked against the document's digest in case a store is emptied and reloaded
# under the same engine (tests do).
_FROZEN_STATES = frozenset(
    {VersionState.ACTIVE, VersionState.SUPERSEDED, VersionState.RETRACTED, VersionState.RETIRED}
)
_FROZEN_IDENTIFIERS: WeakKeyDictionary[
    Engine, dict[int, tuple[str, tuple[IdentifierRule, ...]]]
] = WeakKeyDictionary()
_FROZEN_IDENTIFIERS_MAX = 1_024


def identifier_rules(uow: UnitOfWork, version: PolicyVersion) -> tuple[IdentifierRule, ...]:
    """The version's identifiers as evaluation matches them, in a fixed order."""
    frozen = version.state in _FROZEN_STATES
    kept = _FROZEN_IDENTIFIERS.setdefault(uow.engine, {}) if frozen else {}
    known = kept.get(version.id)
    if known is not None and known[0] == version.document_hash:
        return known[1]
    rows = uow.session.scalars(_IDENTIFIERS_OF_VERSION, {"version_id": version.id}).all()
    rules = tuple(
        IdentifierRule(i.namespace, i.value, is_pattern=i.like_pattern is not None)
        for i in sorted(rows, key=lambda i: (i.namespace, i.value))
    )
    if frozen:
        if len(kept) >= _FROZEN_IDENTIFIERS_MAX:
            kept.clear()
        kept[version.id] = (version.document_hash, rules)
    return rules


def rules_of(
    uow: UnitOfWork, version: PolicyVersion, *, release_at: datetime | None = None
) -> PolicyRules:
    """The evaluation rules of a version. `release_at` stands in for an unreleased version."""
    scope = version.document["spec"].get("scope") or {}
    people = scope.get("people") or {}
    released = version.release_at or release_at
    if released is None:
        raise ValueError(f"version {version.id} is not released: pass release_at")
    return PolicyRules(
        version_id=version.id,
        policy_id=version.policy_id,
        release_at=released,
        deadline=version.deadline,
        grace=timedelta(seconds=version.grace_seconds),
        max_evidence_age=timedelta(seconds=version.max_evidence_age_seconds),
        evidence=frozenset(version.evidence),
        unknown_deny=version.unknown_deny,
        deny=frozenset(version.deny_resources),
        identifiers=identifier_rules(uow, version),
        scope=ScopeRule(
            platforms=_set(scope.get("platforms")),
            form_factors=_set(scope.get("form_factors")),
            ownership=_set(scope.get("ownership")),
            access=_set(scope.get("access")),
            include_groups=_set(people.get("include_groups")),
            exclude_groups=_set(people.get("exclude_groups")) or frozenset(),
            exclude_people=frozenset(e.lower() for e in people.get("exclude") or ()),
        ),
    )


def device_views(
    uow: UnitOfWork,
    device_ids: Collection[int],
    *,
    loaded: Collection[Device] = (),
    keep: list[object] | None = None,
    observed: Mapping[int, DeviceRows] | None = None,
    watched: Watched | None = None,
) -> dict[int, DeviceView]:
    """Everything evaluation needs about these devices, in a fixed number of queries.

    `loaded`: devices the caller holds already (not read again when they are all of them);
    `keep` receives the owners read, so that the caller's later `session.get` of one finds it
    in the session instead of reading it again (the session holds its objects weakly);
    `observed`: devices' observations and coverage as the caller just wrote them
    (`devices.service.apply_report`, `devices.bulk.ReportWriter.flush`), not read again;
    `watched`: keep only the observations these rules can look at (the views are then fit only
    for evaluation under them)."""
    ids = list(device_ids)
    if not ids:
        return {}
    if len(ids) > CHUNK:  # `status` asks for every device in scope (`db.chunked`)
        views: dict[int, DeviceView] = {}
        for part in chunks(ids):
            views |= device_views(
                uow, part, loaded=loaded, keep=keep, observed=observed, watched=watched
            )
        return views
    session = uow.session
    held = {d.id: d for d in loaded}
    devices = (
        [held[i] for i in ids]
        if all(i in held for i in ids)
        else session.scalars(_DEVICES, {"ids": ids}).all()
    )
    owners = Owners.of(uow, {d.owner_id for d in devices if d.owner_id is not None})
    if keep is not None:
        keep.extend(owners.people.values())
    resources: dict[int, set[str]] = defaultdict(set)
    for device_id, resource in session.execute(_RESOURCES, {"ids": ids}):
        resources[device_id].add(resource)
    seen, covered = _observations(uow, ids, observed, watched)
    return {d.id: _view(d, owners, resources[d.id], seen[d.id], covered[d.id]) for d in devices}


@dataclass
class Owners:
    """People who own devices, and their groups: what the devices' views say of their owners."""

    people: dict[int, Person] = field(default_factory=dict)
    groups: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))

    @classmethod
    def of(cls, uow: UnitOfWork, person_ids: Collection[int]) -> Owners:
        """These people and their groups, in one statement."""
        owners = cls()
        owners.read(uow, person_ids)
        return owners

    def read(self, uow: UnitOfWork, person_ids: Collection[int]) -> None:
        """Add these people and their groups, in one statement."""
        for member, group in uow.session.execute(_OWNERS_AND_GROUPS, {"ids": sorted(person_ids)}):
            self.people[member.id] = member
            if group is not None:
                self.groups[member.id].add(group)

    def owner(self, device: Device) -> Owner | None:
        person = self.people.get(device.owner_id) if device.owner_id is not None else None
        if person is None:
            return None
        return Owner(person.email, person.status, frozenset(self.groups[person.id]))


def views_in_memory(
    uow: UnitOfWork,
    devices: Sequence[Device],
    owners: Owners,
    resources: Mapping[int, Collection[str]],
    observed: Mapping[int, DeviceRows],
    watched: Watched,
) -> dict[int, DeviceView]:
    """`device_views` of devices whose every part the caller holds: the devices themselves, their
    owners (read before, `Owners.of`; one the caller did not read is read here), their
    resources and their rows (`observed`); the bulk path builds them while its observation rows
    are still being written. Fit only for evaluation under the rules `watched` was made of."""
    unread = {d.owner_id for d in devices if d.owner_id is not None} - owners.people.keys()
    if unread:  # an owner the facts named that the caller did not foresee
        owners.read(uow, unread)
    ids = [d.id for d in devices]
    seen, covered = _observations(uow, ids, observed, watched)
    return {
        d.id: _view(d, owners, resources.get(d.id, ()), seen[d.id], covered[d.id]) for d in devices
    }


def _view(
    device: Device,
    owners: Owners,
    resources: Collection[str],
    seen: list[Seen],
    covered: list[Covered],
) -> DeviceView:
    return DeviceView(
        device_id=device.id,
        platform=device.platform,
        form_factor=device.form_factor,
        ownership=device.ownership,
        status=device.status,
        resources=frozenset(resources),
        owner=owners.owner(device),
        first_report_at=device.first_report_at,
        observations=tuple(seen),
        coverage=tuple(covered),
    )


def _observations(
    uow: UnitOfWork,
    ids: list[int],
    observed: Mapping[int, DeviceRows] | None,
    watched: Watched | None,
) -> tuple[dict[int, list[Seen]], dict[int, list[Covered]]]:
    """The devices' observations (those `watched`, when given) and coverage: as the caller
    wrote them where it did (`observed`), else read."""
    session = uow.session
    seen: dict[int, list[Seen]] = defaultdict(list)
    covered: dict[int, list[Covered]] = defaultdict(list)
    unread = ids
    if observed is not None:
        unread = []
        for i in ids:
            rows = observed.get(i)
            if rows is None:
                unread.append(i)
            else:
                seen[i] = [
                    Seen(*row)
                    for row in rows.observations
                    if watched is None or watched.wants(row[2], row[3])
                ]
                covered[i] = [Covered(*row) for row in rows.coverage]
    if unread:
        for device_id, source, kind, namespace, value, first_at, last_at in session.execute(
            _OBSERVATIONS, {"ids": unread}
        ):
            if watched is None or watched.wants(namespace, value):
                seen[device_id].append(Seen(source, kind, namespace, value, first_at, last_at))
        for device_id, source, kind, namespace, value, observed_at in session.execute(
            _COVERAGE, {"ids": unread}
        ):
            covered[device_id].append(Covered(source, kind, namespace, value, observed_at))
    return seen, covered


def granted_exemptions(uow: UnitOfWork, policy_id: str) -> Sequence[Exemption]:
    """The policy's exemptions that were ever granted (approved, or approved then revoked)."""
    return uow.session.scalars(_GRANTED, {"policy_ids": [policy_id]}).all()


def granted_exemptions_of(
    uow: UnitOfWork, policy_ids: Collection[str]
) -> dict[str, list[Exemption]]:
    """`granted_exemptions` of each of these policies (every one has an entry), in one query."""
    granted: dict[str, list[Exemption]] = {policy_id: [] for policy_id in policy_ids}
    if granted:
        for exemption in uow.session.scalars(_GRANTED, {"policy_ids": sorted(granted)}):
            granted[exemption.policy_id].append(exemption)
    return granted


def granted_to_device(
    uow: UnitOfWork, device_id: int, owner_id: int | None
) -> dict[str, list[Exemption]]:
    """The granted exemptions of every policy that name the device or its owner, by policy:
    what one device's evaluation needs, however many exemptions the policies have."""
    granted: dict[str, list[Exemption]] = defaultdict(list)
    for exemption in uow.session.scalars(
        _GRANTED_TO_DEVICE, {"device_id": device_id, "person_id": owner_id}
    ):
        granted[exemption.policy_id].append(exemption)
    return granted


def exemption_windows(
    uow: UnitOfWork,
    policy_id: str,
    device: DeviceView,
    owner_id: int | None,
    *,
    granted: Sequence[Exemption] | None = None,
) -> list[ExemptionWindow]:
    """Approved exemptions of the policy that cover the device or its owner; `granted`: the
    policy's `granted_exemptions`, when the caller read them once for many devices."""
    rows = granted_exemptions(uow, policy_id) if granted is None else granted
    windows = []
    for e in rows:
        if not (
            e.device_id == device.device_id or (owner_id is not None and e.person_id == owner_id)
        ):
            continue
        if e.starts_at is None or e.ends_at is None:
            continue
        ends = min(e.ends_at, e.revoked_at) if e.revoked_at is not None else e.ends_at
        windows.append(ExemptionWindow(e.id, e.starts_at, ends))
    return windows


def stored_first_seens(uow: UnitOfWork, device_id: int) -> dict[str, PolicyFirstSeen]:
    """The device's stored first sightings, by policy id, in one query."""
    return {
        row.policy_id: row for row in uow.session.scalars(_FIRST_SEENS, {"device_id": device_id})
    }


def stored_first_seen(uow: UnitOfWork, policy_id: str, device_id: int) -> datetime | None:
    row = uow.session.get(PolicyFirstSeen, (policy_id, device_id))
    return None if row is None else row.first_seen_at
