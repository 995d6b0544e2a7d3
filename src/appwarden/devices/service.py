"""Devices: joining identifiers into devices, applying reports, and finding devices by reference.

A report replaces its feed's observations of the device within the report's coverage only, in the
caller's transaction, keeping `first_seen_at` for what is still present. A feed is (source,
evidence kind), so a targeted check never deletes what a full inventory saw. An older report
never overwrites a newer one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import bindparam, func, insert, inspect, select, update
from sqlalchemy.orm.attributes import set_committed_value

from appwarden.catalog.matching import key_matches, match_key
from appwarden.db.chunked import chunks, one_of, scalars_in
from appwarden.db.uow import UnitOfWork
from appwarden.devices.facts import (
    DEVICE_ATTRIBUTES,
    Authority,
    owner_email,
    set_device_status,
    set_owner,
    set_resources,
    stored_resources,
)
from appwarden.devices.identifiers import is_placeholder, join_rank, normalise
from appwarden.devices.models import (
    Coverage,
    Device,
    DeviceIdentifier,
    DeviceResource,
    Observation,
    Quarantine,
    Report,
)
from appwarden.devices.schemas import DeviceFacts, ReportFacts
from appwarden.errors import Ambiguous, IdentifierConflict, InvalidInput, NotFound
from appwarden.identity.service import normalise_email
from appwarden.vocabulary import (
    PLATFORM_NAMESPACES,
    DeviceNamespace,
    DeviceStatus,
    EvidenceKind,
    Fact,
    Platform,
)


@dataclass(frozen=True, slots=True)
class MinimisationSet:
    """Identifiers of every non-retired policy version: all a personal device's report may keep."""

    identifiers: frozenset[tuple[str, str, bool]]  # (namespace, key, is_pattern)

    def keeps(self, namespace: str, key: str) -> bool:
        return any(
            ns == namespace and (key_matches(ns, value, key) if pattern else value == key)
            for ns, value, pattern in self.identifiers
        )


def clean_identifiers(facts: DeviceFacts) -> list[tuple[str, str]]:
    """Normalised, de-duplicated identifiers in join order, placeholders removed."""
    seen: dict[tuple[str, str], None] = {}
    for namespace, value in facts.identifiers:
        if is_placeholder(namespace, value):
            continue
        seen[(namespace, normalise(namespace, value))] = None
    return sorted(seen, key=lambda pair: (join_rank(pair[0]), pair[1]))


# Statements a report runs every time are built once: building and keying one costs more Python
# than the SQLite query itself (W4; bench/README.md).
# The identifiers with their devices: the device a report names is read with them, not by a
# second statement (W4).
_IDENTIFIERS_BY_VALUE = (
    select(DeviceIdentifier, Device)
    .join(Device, Device.id == DeviceIdentifier.device_id)
    .where(one_of(DeviceIdentifier.value, key="values"))
)


def resolve_device(uow: UnitOfWork, facts: DeviceFacts, *, source: str) -> tuple[Device, bool]:
    """Find or create the device these identifiers name; True when that changed what is stored
    (a new device, or a new identifier for a known one).

    Identifiers that point at two different devices merge nothing: the delivery is quarantined
    (in the caller's transaction) and IdentifierConflict is raised.
    """
    identifiers = clean_identifiers(facts)
    if not identifiers:
        raise InvalidInput("the device has no usable identifier (placeholder serials are ignored)")
    wanted = set(identifiers)
    rows = uow.session.execute(
        _IDENTIFIERS_BY_VALUE, {"values": sorted({value for _, value in identifiers})}
    ).all()
    known = {(r.namespace, r.value): r for r, _ in rows if (r.namespace, r.value) in wanted}
    devices = {d.id: d for r, d in rows if (r.namespace, r.value) in wanted}
    device_ids = sorted(devices)
    if len(device_ids) > 1:
        uow.session.add(
            Quarantine(
                source=source,
                received_at=uow.now,
                identifiers=[f"{ns}:{value}" for ns, value in identifiers],
                candidate_device_ids=device_ids,
                reason="the identifiers of one report belong to different devices",
            )
        )
        uow.session.flush()
        raise IdentifierConflict(
            f"identifiers {', '.join(f'{ns}:{v}' for ns, v in identifiers)} point at devices "
            f"{device_ids}: quarantined, nothing merged",
            device_ids=tuple(device_ids),
        )
    changed = len(known) < len(identifiers)
    if device_ids:
        device = devices[device_ids[0]]
    else:
        device = Device(
            platform=Platform.UNKNOWN,
            form_factor="unknown",
            ownership="unknown",
            status=DeviceStatus.ACTIVE,
            created_at=uow.now,
            mdm_source=source,  # the MDM of record: authoritative for its facts by default
        )
        uow.session.add(device)
        uow.session.flush()
    for namespace, value in identifiers:
        row = known.get((namespace, value))
        if row is None:
            uow.session.add(
                DeviceIdentifier(
                    device_id=device.id,
                    namespace=namespace,
                    value=value,
                    source=source,
                    first_seen_at=uow.now,
                    last_seen_at=uow.now,
                )
            )
        elif row.last_seen_at < uow.now:
            row.last_seen_at = uow.now
    uow.session.flush()
    return device, changed


def _fingerprint(device: Device) -> tuple[object, ...]:
    return (
        device.platform,
        device.form_factor,
        device.ownership,
        device.owner_id,
        device.status,
        device.name,
        device.unmatched_owner,
    )


def apply_device_facts(
    uow: UnitOfWork,
    device: Device,
    facts: DeviceFacts,
    authority: Authority,
    *,
    resources: dict[int, list[str]] | None = None,
) -> bool:
    """Apply what `facts` say about the device; a fact from a source that is not authoritative
    for it is held as a conflict instead (devices/facts.py). True when the device changed.

    `resources`: a batch's devices' stored resources (`stored_resources_of`), kept up to date
    here; the writes then wait for the session's next flush, so that a batch's facts cost no
    query and no flush of their own per device."""
    before = _fingerprint(device)
    resources_changed = False
    for fact, attribute in DEVICE_ATTRIBUTES.items():
        value = getattr(facts, attribute)
        stored = getattr(device, attribute)
        if value is not None and authority.admits(
            uow, fact, stored=stored, offered=str(value), device=device
        ):
            setattr(device, attribute, str(value))
    if facts.name is not None:
        device.name = facts.name
    if facts.status is not None and authority.admits(
        uow, Fact.DEVICE_STATUS, stored=device.status, offered=str(facts.status), device=device
    ):
        set_device_status(uow, device, facts.status)
    if facts.owner_email is not None:
        _apply_owner(uow, device, facts.owner_email, authority)
    if facts.resources is not None:
        offered = sorted(set(facts.resources))
        stored_list = (
            stored_resources(uow, device) if resources is None else resources.get(device.id, [])
        )
        if authority.admits(
            uow, Fact.RESOURCES, stored=stored_list, offered=offered, device=device
        ):
            set_resources(uow, device, offered, stored=stored_list)
            resources_changed = True
            if resources is not None:
                resources[device.id] = offered
    if resources is None:
        uow.session.flush()
    return resources_changed or _fingerprint(device) != before


def _apply_owner(uow: UnitOfWork, device: Device, email: str, authority: Authority) -> None:
    current = owner_email(uow, device)
    named = authority.find_person(uow, email)
    if named is None and not authority.in_organisation(email):
        # Not one of ours: the device stays as it is, and admins see the address it offered.
        device.unmatched_owner = normalise_email(email)
        return
    device.unmatched_owner = None
    if named is not None and named.id == device.owner_id:
        return  # the same person, perhaps by an alias
    offered = named.email if named is not None else normalise_email(email)
    if authority.admits(uow, Fact.OWNER, stored=current, offered=offered, device=device):
        person = authority.person(uow, email)
        assert person is not None  # in the organisation, so created if new
        set_owner(uow, device, person)


def _coverage_of(report: ReportFacts, platform: str) -> list[tuple[str, str]]:
    """(namespace, value) pairs the report lists completely; value "" = the whole namespace."""
    kind = report.evidence_kind
    if kind == EvidenceKind.NONE:
        return []
    if kind in (EvidenceKind.TARGETED_CHECK, EvidenceKind.ATTESTATION):
        return sorted({(ns, match_key(ns, value)) for ns, value in report.checked})
    if report.coverage is not None:
        return [(ns, "") for ns in sorted(set(report.coverage))]
    return [(ns.value, "") for ns in sorted(PLATFORM_NAMESPACES[Platform(platform)])]


def coverage_hash(pairs: Iterable[tuple[str, str]]) -> str:
    lines = sorted(f"{ns}:{value}" for ns, value in pairs)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


Apps = dict[tuple[str, str], tuple[str, str | None, str | None]]  # (ns, key) → raw, version, name


@dataclass(frozen=True, slots=True)
class _Feed:
    """Where one report's rows go: the device's feed (source, evidence kind) as of a time."""

    device_id: int
    source: str
    kind: EvidenceKind
    observed_at: datetime


class ReportOutcome(StrEnum):
    APPLIED = "applied"
    STALE = "stale"  # every part of it older than what is stored: nothing changed
    REPEATED = (
        "repeated"  # the feed already holds exactly this: nothing written, not even a receipt
    )


_FEED_OBSERVATIONS = select(Observation).where(
    Observation.device_id == bindparam("device_id"),
    Observation.source == bindparam("source"),
    Observation.evidence_kind == bindparam("kind"),
)
_FEED_COVERAGE = select(Coverage).where(
    Coverage.device_id == bindparam("device_id"),
    Coverage.source == bindparam("source"),
    Coverage.evidence_kind == bindparam("kind"),
)


_DEVICE_OBSERVATIONS = select(Observation).where(Observation.device_id == bindparam("device_id"))
_DEVICE_COVERAGE = select(Coverage).where(Coverage.device_id == bindparam("device_id"))


@dataclass(frozen=True, slots=True)
class DeviceRows:
    """Every observation and coverage row of a device as `apply_report` left them, as plain
    tuples: the device's evaluation in the same transaction takes them instead of reading the
    two tables again (W4). Evaluation's `Seen` and `Covered` fields, in their order."""

    # (source, evidence kind, namespace, value, first seen, last seen)
    observations: tuple[tuple[str, str, str, str, datetime, datetime], ...]
    # (source, evidence kind, namespace, value, observed at)
    coverage: tuple[tuple[str, str, str, str, datetime], ...]


def apply_report(
    uow: UnitOfWork,
    device: Device,
    report: ReportFacts,
    *,
    minimise: MinimisationSet | None = None,
    token_id: int | None = None,
    rows: dict[int, DeviceRows] | None = None,
) -> ReportOutcome:
    """Store one report's facts. With `minimise`, only identifiers of some live policy are kept
    and the coverage shrinks to exactly those identifiers. With `rows`, the device's rows of
    every feed are read (in as many statements as the feed's) and left in `rows[device.id]`
    as they stand afterwards; nothing else may write them before they are used."""
    observed_at = min(report.observed_at or uow.now, uow.now)
    feed = _Feed(device.id, report.source, report.evidence_kind, observed_at)
    apps, covered = reported_apps(report, device.platform, minimise)
    if rows is None:
        where: dict[str, object] = {
            "device_id": feed.device_id,
            "source": feed.source,
            "kind": feed.kind,
        }
        observations = uow.session.scalars(_FEED_OBSERVATIONS, where).all()
        coverage = uow.session.scalars(_FEED_COVERAGE, where).all()
    else:
        observations = uow.session.scalars(_DEVICE_OBSERVATIONS, {"device_id": device.id}).all()
        coverage = uow.session.scalars(_DEVICE_COVERAGE, {"device_id": device.id}).all()
    existing = {(o.namespace, o.value): o for o in observations if _in_feed(o, feed)}
    stored_coverage = {(c.namespace, c.value): c for c in coverage if _in_feed(c, feed)}
    added: list[dict[str, Any]] = []
    new_coverage: list[tuple[str, str]] = []
    outcome = ReportOutcome.REPEATED
    if not _repeats(uow, feed, apps, covered, existing, stored_coverage):
        row = _record_report(uow, device, feed, covered, app_count=len(apps), token_id=token_id)
        replaced = _replace_coverage(uow, feed, covered, stored_coverage, report_id=row.id)
        new_coverage = [part for part in replaced if part not in stored_coverage]
        observed = _apply_observations(uow, feed, apps, existing, stored_coverage, replaced, added)
        applied_any = bool(replaced) or observed or feed.kind == EvidenceKind.NONE
        row.applied = applied_any
        uow.session.flush()
        outcome = ReportOutcome.APPLIED if applied_any else ReportOutcome.STALE
    if rows is not None:
        rows[device.id] = _rows_after(feed, observations, coverage, added, new_coverage)
    return outcome


def _in_feed(row: Observation | Coverage, feed: _Feed) -> bool:
    return row.source == feed.source and row.evidence_kind == feed.kind


def _rows_after(
    feed: _Feed,
    observations: Iterable[Observation],
    coverage: Iterable[Coverage],
    added: list[dict[str, Any]],
    new_coverage: list[tuple[str, str]],
) -> DeviceRows:
    """The device's rows once the report's writes are flushed: those read, less the deleted,
    with what it added (observations went in by one INSERT, so no ORM object holds them)."""
    kind, at = str(feed.kind), feed.observed_at.astimezone(UTC)  # as the store returns it
    return DeviceRows(
        observations=(
            *(
                (o.source, o.evidence_kind, o.namespace, o.value, o.first_seen_at, o.last_seen_at)
                for o in observations
                if not inspect(o).was_deleted
            ),
            *((feed.source, kind, a["namespace"], a["value"], at, at) for a in added),
        ),
        coverage=(
            *((c.source, c.evidence_kind, c.namespace, c.value, c.observed_at) for c in coverage),
            *((feed.source, kind, ns, value, at) for ns, value in new_coverage),
        ),
    )


class _Sighting(Protocol):
    """A stored observation, as an ORM row or as the bulk path's diff holds it."""

    @property
    def version(self) -> str | None: ...
    @property
    def name(self) -> str | None: ...
    @property
    def last_seen_at(self) -> datetime: ...


class _Spoken(Protocol):
    """A stored coverage part: when the report that speaks for it observed."""

    @property
    def observed_at(self) -> datetime: ...


def _repeats(
    uow: UnitOfWork,
    feed: _Feed,
    apps: Apps,
    covered: list[tuple[str, str]],
    existing: Mapping[tuple[str, str], _Sighting],
    stored: Mapping[tuple[str, str], _Spoken],
) -> bool:
    """Does the feed already hold exactly this report (the same page imported again)?"""

    def latest_report() -> datetime | None:
        return uow.session.scalar(
            select(func.max(Report.observed_at)).where(
                Report.device_id == feed.device_id,
                Report.source == feed.source,
                Report.evidence_kind == feed.kind,
            )
        )

    return feed_repeats(
        feed.observed_at, apps, covered, existing, stored, latest_report=latest_report
    )


def feed_repeats(
    at: datetime,
    apps: Apps,
    covered: list[tuple[str, str]],
    existing: Mapping[tuple[str, str], _Sighting],
    stored: Mapping[tuple[str, str], _Spoken],
    *,
    latest_report: Callable[[], datetime | None],
) -> bool:
    """Does a feed holding `existing` and `stored` already hold exactly this report, observed
    `at`? `latest_report`: when the feed's newest report observed (asked only for a report
    with neither coverage nor apps)."""
    if any((current := stored.get(part)) is None or current.observed_at != at for part in covered):
        return False
    for key, (_, version, name) in apps.items():
        seen = existing.get(key)
        if seen is None or seen.last_seen_at != at or seen.version != version:
            return False
        if name is not None and seen.name != name:
            return False
    if any(
        key not in apps and any(ns == key[0] and value in ("", key[1]) for ns, value in covered)
        for key in existing
    ):
        return False  # it would remove what it no longer lists
    if covered or apps:
        return True
    latest = latest_report()
    return latest is not None and latest == at


def reported_apps(
    report: ReportFacts, platform: str, minimise: MinimisationSet | None
) -> tuple[Apps, list[tuple[str, str]]]:
    """The apps the report saw, by match key, and the coverage it proves; with `minimise`, both
    cut down to the identifiers of some live policy."""
    apps: Apps = {}
    for app in report.apps:
        key = match_key(app.namespace, app.value)
        apps[(app.namespace, key)] = (app.value, app.version, app.name)
    covered = _coverage_of(report, platform)
    if minimise is not None:
        apps = {k: v for k, v in apps.items() if minimise.keeps(*k)}
        covered = sorted(
            {
                (ns, value)
                for ns, value, _ in minimise.identifiers
                if any(c_ns == ns and c_value in ("", value) for c_ns, c_value in covered)
            }
        )
    return apps, covered


def _record_report(
    uow: UnitOfWork,
    device: Device,
    feed: _Feed,
    covered: list[tuple[str, str]],
    *,
    app_count: int,
    token_id: int | None,
) -> Report:
    """The Report row (the delivery's receipt), and the device's first report moved earlier."""
    row = Report(
        device_id=feed.device_id,
        source=feed.source,
        evidence_kind=feed.kind,
        observed_at=feed.observed_at,
        received_at=uow.now,
        coverage_namespaces=sorted({ns for ns, _ in covered}),
        coverage_hash=coverage_hash(covered) if covered else None,
        app_count=app_count,
        token_id=token_id,
    )
    uow.session.add(row)
    uow.session.flush()
    if device.first_report_at is None or feed.observed_at < device.first_report_at:
        device.first_report_at = feed.observed_at
    return row


def _replace_coverage(
    uow: UnitOfWork,
    feed: _Feed,
    covered: list[tuple[str, str]],
    stored: dict[tuple[str, str], Coverage],
    *,
    report_id: int,
) -> list[tuple[str, str]]:
    """Move the feed's coverage to this report wherever no newer report already spoke; returns
    the parts it now speaks for."""
    replaced: list[tuple[str, str]] = []
    for namespace, value in covered:
        current = stored.get((namespace, value))
        if current is not None and current.observed_at > feed.observed_at:
            continue  # a newer report already spoke for this part
        replaced.append((namespace, value))
        if current is None:
            uow.session.add(
                Coverage(
                    device_id=feed.device_id,
                    source=feed.source,
                    evidence_kind=feed.kind,
                    namespace=namespace,
                    value=value,
                    observed_at=feed.observed_at,
                    report_id=report_id,
                )
            )
        else:
            current.observed_at = feed.observed_at
            current.report_id = report_id
    return replaced


def _apply_observations(
    uow: UnitOfWork,
    feed: _Feed,
    apps: Apps,
    existing: dict[tuple[str, str], Observation],
    stored: dict[tuple[str, str], Coverage],
    replaced: list[tuple[str, str]],
    added: list[dict[str, Any]],
) -> bool:
    """Delete what the replaced coverage no longer shows, add (to `added` too) or refresh what
    the report saw; returns whether any sighting was newer than what is stored."""
    observed_at = feed.observed_at
    for (namespace, key), gone in existing.items():
        if (namespace, key) not in apps and any(
            ns == namespace and value in ("", key) for ns, value in replaced
        ):
            uow.session.delete(gone)
    applied_any = False
    seen_again: list[int] = []
    for (namespace, key), (raw, version, name) in apps.items():
        observation = existing.get((namespace, key))
        if observation is None:
            if stale_part(stored, namespace, key, observed_at):
                continue
            applied_any = True
            added.append(
                {
                    "device_id": feed.device_id,
                    "source": feed.source,
                    "evidence_kind": feed.kind,
                    "namespace": namespace,
                    "value": key,
                    "raw_value": raw,
                    "version": version,
                    "name": name,
                    "first_seen_at": observed_at,
                    "last_seen_at": observed_at,
                }
            )
        elif observed_at >= observation.last_seen_at:
            applied_any = True
            if observed_at > observation.last_seen_at and app_unchanged(observation, version, name):
                seen_again.append(observation.id)
                set_committed_value(observation, "last_seen_at", observed_at)
                continue
            observation.last_seen_at = observed_at
            observation.version = version
            observation.name = name or observation.name
            observation.first_seen_at = min(observation.first_seen_at, observed_at)
        elif observed_at < observation.first_seen_at:
            observation.first_seen_at = observed_at  # an older report proves an earlier sighting
    if added:  # one statement for the report's new apps (the session adds one per object)
        uow.session.flush()
        uow.session.execute(insert(Observation), added)
    # The usual report: a statement (per chunk of ids), not an UPDATE per app through the ORM.
    for part in chunks(seen_again):
        uow.session.execute(_SEEN_AGAIN, {"ids": part, "seen": observed_at})
    return applied_any


# The rows of a report's apps of which only `last_seen_at` moves (most of them, usually).
_SEEN_AGAIN = (
    update(Observation)
    .where(one_of(Observation.id, key="ids"))
    .values(last_seen_at=bindparam("seen"))
    .execution_options(synchronize_session=False)
)


def app_unchanged(seen: _Sighting, version: str | None, name: str | None) -> bool:
    """Does the stored row already say what a newer sighting of the app says (an empty name
    keeps the stored one)? Then the sighting moves only its `last_seen_at`."""
    return version == seen.version and (not name or name == seen.name)


def stale_part(
    stored: Mapping[tuple[str, str], _Spoken], namespace: str, key: str, observed_at: datetime
) -> bool:
    """Is a newer report already authoritative for this identifier? (A report speaks for it
    by covering its whole namespace, value "", or the identifier itself.) Asked for every app of
    every report: two look-ups, no generator."""
    whole = stored.get((namespace, ""))
    if whole is not None and whole.observed_at > observed_at:
        return True
    part = stored.get((namespace, key))
    return part is not None and part.observed_at > observed_at


def device_identifiers(uow: UnitOfWork, device_ids: Collection[int]) -> dict[int, list[str]]:
    """`namespace:value` strings per device, in join order."""
    result: dict[int, list[tuple[int, str, str]]] = {d: [] for d in device_ids}
    if not device_ids:
        return {}
    for row in scalars_in(
        uow.session, select(DeviceIdentifier), DeviceIdentifier.device_id, device_ids
    ):
        result[row.device_id].append((join_rank(row.namespace), row.namespace, row.value))
    return {d: [f"{ns}:{v}" for _, ns, v in sorted(rows)] for d, rows in result.items()}


_NAMES_KEY = "appwarden.devices.names"


@contextmanager
def names_read(uow: UnitOfWork, devices: Sequence[Device]) -> Iterator[None]:
    """While the block runs, `device_name` answers for these devices without a query: a batch's
    evaluation reads their names first (its flips' notices name each device), and must not query
    while it runs (`usecases.ingest` writes the batch's observation rows meanwhile)."""
    names: dict[int, str] = uow.kept(_NAMES_KEY, dict)
    unnamed = [device.id for device in devices if not device.name]
    names.update((d, ids[0]) for d, ids in device_identifiers(uow, unnamed).items() if ids)
    try:
        yield
    finally:
        names.clear()


def device_name(uow: UnitOfWork, device: Device) -> str:
    """The device's name, or, unnamed, its first identifier in join order."""
    if device.name:
        return device.name
    read: dict[int, str] = uow.kept(_NAMES_KEY, dict)
    return read.get(device.id) or device_identifiers(uow, [device.id])[device.id][0]


def find_device(uow: UnitOfWork, reference: str) -> Device:
    """A DEVICE argument: `namespace:value`, or a bare value when it names one device."""
    namespace, sep, value = reference.partition(":")
    if sep and namespace in DeviceNamespace.__members__.values():
        value = normalise(namespace, value)
        row = uow.session.scalars(
            select(DeviceIdentifier).where(
                DeviceIdentifier.namespace == namespace, DeviceIdentifier.value == value
            )
        ).first()
        if row is None:
            raise NotFound(f"no device with the identifier {namespace}:{value}")
        device = uow.session.get(Device, row.device_id)
        assert device is not None
        return device
    candidates = uow.session.scalars(
        select(DeviceIdentifier).where(
            DeviceIdentifier.value.in_({reference.strip(), reference.strip().upper()})
        )
    ).all()
    device_ids = sorted({c.device_id for c in candidates})
    if not device_ids:
        raise NotFound(f"no device has an identifier {reference!r}")
    if len(device_ids) > 1:
        listed = ", ".join(sorted(f"{c.namespace}:{c.value}" for c in candidates))
        raise Ambiguous(f"{reference!r} names several devices; use one of: {listed}")
    device = uow.session.get(Device, device_ids[0])
    assert device is not None
    return device


def resources_of(uow: UnitOfWork, device_id: int) -> frozenset[str]:
    return frozenset(
        uow.session.scalars(
            select(DeviceResource.resource).where(DeviceResource.device_id == device_id)
        )
    )
