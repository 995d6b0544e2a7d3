"""Ingest: people, devices and reports from any source, in the caller's transaction; each touched
device is re-evaluated and its decisions updated in the same transaction (read-your-writes)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from appwarden.access.breaker import breakers
from appwarden.access.models import BreakerHold, DecisionRecord
from appwarden.access.service import refresh_decisions, stored_decisions
from appwarden.audit.service import record
from appwarden.catalog.matching import match_key
from appwarden.collector import collector_paused
from appwarden.compliance.evaluate import Evaluation
from appwarden.compliance.models import ComplianceRecord
from appwarden.compliance.rules import Owners
from appwarden.compliance.service import DeviceEvaluator, SharedReads, record_outcomes
from appwarden.db.chunked import chunks, one_of
from appwarden.db.ids import insert_new_in_bulk
from appwarden.db.statistics import publish_write_counts
from appwarden.db.uow import UnitOfWork
from appwarden.devices.bulk import (
    DeviceResolver,
    NeedsOneByOne,
    ReportWriter,
    feed_keys,
    observations_written,
)
from appwarden.devices.facts import Authority, stored_resources_of
from appwarden.devices.models import (
    Device,
    DeviceIdentifier,
    DeviceOwnerHistory,
    DeviceResource,
    Quarantine,
)
from appwarden.devices.schemas import DeviceFacts, InventoryBatch, ReportFacts
from appwarden.devices.service import (
    DeviceRows,
    MinimisationSet,
    ReportOutcome,
    apply_device_facts,
    apply_report,
    names_read,
    resolve_device,
)
from appwarden.errors import IdentifierConflict, InvalidInput
from appwarden.events import DecisionChanged, DeviceEvaluated, DevicesEvaluated
from appwarden.identity.schemas import PersonFacts
from appwarden.identity.service import (
    PersonLookup,
    groups_of,
    new_people,
    normalise_email,
    upsert_person,
)
from appwarden.policies.models import PolicyFirstSeen
from appwarden.policies.service import live_identifier_keys
from appwarden.timeutil import iso
from appwarden.vocabulary import DeviceStatus, EvidenceKind, Fact, Ownership, PersonStatus


@dataclass
class IngestResult:
    people: int = 0
    devices: int = 0
    reports_applied: int = 0
    reports_stale: int = 0
    reports_repeated: int = 0  # exactly what was already stored: nothing written
    quarantined: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    decision_changes: list[DecisionChanged] = field(default_factory=list)
    # Addresses outside the organisation's domains: no person made, devices left unowned.
    outside_domains: list[str] = field(default_factory=list)
    retirements_held: int = 0  # a mass retirement held for an admin (docs/sources/README.md)
    retired: int = 0  # devices retired by their absence from a source's complete runs
    # Every device the batch named, quarantined reports' candidates included: a live sync
    # records them as listed, so none is retired for an absence it did not have.
    listed_device_ids: set[int] = field(default_factory=set)

    def count(self, outcome: ReportOutcome) -> None:
        if outcome == ReportOutcome.APPLIED:
            self.reports_applied += 1
        elif outcome == ReportOutcome.STALE:
            self.reports_stale += 1
        else:
            self.reports_repeated += 1


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


# The source of people and device entries of a file that names none (CLI imports only: an API
# token always writes as its own source).
IMPORT_SOURCE = "import"


@dataclass(frozen=True, slots=True)
class Writer:
    """Who writes a batch: the API token (None: a CLI import or the demo) and its source."""

    token_id: int | None = None
    source: str | None = None  # a token's source; entries naming no source are written as it
    fact_sources: Mapping[str, str] = field(default_factory=dict)  # APPWARDEN_FACT_SOURCES
    organisation_domains: frozenset[str] = frozenset()  # APPWARDEN_ORGANISATION_DOMAINS

    def authority(self, source: str, *, hold_retirements: bool = False) -> Authority:
        return Authority(
            source,
            self.token_id,
            self.fact_sources,
            organisation_domains=self.organisation_domains,
            hold_retirements=hold_retirements,
        )


def _person(uow: UnitOfWork, facts: PersonFacts, authority: Authority) -> bool:
    """Apply a person entry; False when its address is outside the organisation and names
    nobody known (no person is made)."""
    person = authority.person(uow, facts.email, facts.display_name)
    if person is None:
        return False
    if facts.status is not None and not authority.admits(
        uow,
        Fact.PERSON_STATUS,
        stored=person.status,
        offered=str(facts.status),
        person=person,
    ):  # unchanged, or held as a conflict: keep the stored status and left_at
        facts = replace(facts, status=PersonStatus(person.status), left_at=person.left_at)
    if facts.groups is not None and not authority.admits(
        uow,
        Fact.PERSON_GROUPS,
        stored=sorted(groups_of(uow, person.id)),
        offered=sorted(set(facts.groups)),
        person=person,
    ):  # unchanged, or held: memberships stay as they are
        facts = replace(facts, groups=None)
    upsert_person(uow, facts)
    return True


# Retiring more than this share of a source's devices in one run (or more than the floor) is
# held for an admin: a source that lost its data must not retire the fleet.
MASS_RETIREMENT_SHARE = 0.05
MASS_RETIREMENT_FLOOR = 50
# How long a mail partnership that no identifier joins waits for an admin's merge before it is
# announced to on its own.
JOIN_WAIT = timedelta(days=7)


def _mass_retirements(uow: UnitOfWork, batch: InventoryBatch, entry_source: str) -> dict[str, int]:
    """The sources whose retirements in this batch exceed max(50, 5 % of their devices), with
    how many each offered (audited as one hold per source and run)."""
    offered: Counter[str] = Counter()
    for facts in batch.devices:
        if facts.status == DeviceStatus.RETIRED:
            offered[entry_source] += 1
    for report in batch.reports:
        if report.device.status == DeviceStatus.RETIRED:
            offered[report.source] += 1
    return {
        source: count
        for source, count in offered.items()
        if _holds_mass_retirement(uow, source, count)
    }


def _holds_mass_retirement(uow: UnitOfWork, source: str, count: int) -> bool:
    """Retiring `count` of the source's devices at once is too many: held, and audited."""
    if count <= MASS_RETIREMENT_FLOOR:
        return False
    owned = uow.session.scalar(
        select(func.count()).select_from(Device).where(Device.mdm_source == source)
    )
    if count <= MASS_RETIREMENT_SHARE * (owned or 0):
        return False
    record(
        uow,
        action="retirement.hold",
        object_type="source",
        object_id=source,
        after={"offered": count, "devices": owned},
    )
    return True


def retire_absent(
    uow: UnitOfWork, devices: list[Device], *, source: str, writer: Writer
) -> IngestResult:
    """Retire devices their MDM of record stopped listing, through the same authority as a
    retirement the source reports: held as conflicts when too many at once, or when the
    device's status belongs to another source (`APPWARDEN_FACT_SOURCES`)."""
    result = IngestResult()
    held = _holds_mass_retirement(uow, source, len(devices))
    authority = writer.authority(source, hold_retirements=held)
    retired = DeviceFacts(identifiers=(), status=DeviceStatus.RETIRED)
    for device in devices:
        if apply_device_facts(uow, device, retired, authority):
            result.retired += 1
            result.decision_changes += reevaluate_device(uow, device)
    result.retirements_held = len(devices) if held else 0
    return result


def _awaits_join(uow: UnitOfWork, device: Device, report: ReportFacts) -> None:
    """A device first reported by a mail partnership and known by nothing but its ActiveSync
    DeviceId (evidence `none`): it waits for an admin to merge it into the device it is,
    announcing nobody meanwhile."""
    if device.first_report_at is not None or report.evidence_kind != EvidenceKind.NONE:
        return
    namespaces = set(
        uow.session.scalars(
            select(DeviceIdentifier.namespace).where(DeviceIdentifier.device_id == device.id)
        )
    )
    if namespaces == {"eas_device_id"}:
        device.join_pending_until = uow.now + JOIN_WAIT


@dataclass
class _BatchReports:
    """A batch's reports applied one by one (`devices.service`) or in bulk (`devices.bulk`):
    the same rules, the same tables written, the same outcomes counted."""

    uow: UnitOfWork
    writer: Writer
    result: IngestResult
    authority: Callable[[str], Authority]
    minimise_personal: bool
    on_report: Callable[[], None] | None
    touched: dict[int, Device] = field(default_factory=dict)  # changed: re-evaluated
    seen: dict[int, Device] = field(default_factory=dict)  # reported, changed or not
    # The rows the reports left, by device (the devices' evaluation reads no more).
    observed: dict[int, DeviceRows] = field(default_factory=dict)
    _minimisation: MinimisationSet | None = None
    _people: PersonLookup | None = None  # the bulk path's owners, looked up at once
    _resources: dict[int, list[str]] | None = None  # the bulk path's devices' stored resources

    def _checked(self, report: ReportFacts) -> bool:
        problem = _check_values(report)
        if problem:
            self.result.skipped.append(f"{report.where}: {problem}".lstrip(": "))
        return problem is None

    def _refused(self, report: ReportFacts, exc: IdentifierConflict | InvalidInput) -> None:
        if isinstance(exc, IdentifierConflict):
            self.result.quarantined.append(f"{report.where}: {exc.message}".lstrip(": "))
            self.result.listed_device_ids.update(exc.device_ids)
        else:
            self.result.skipped.append(f"{report.where}: {exc.message}".lstrip(": "))

    def _facts(self, device: Device, report: ReportFacts) -> tuple[bool, MinimisationSet | None]:
        """Apply the report's device facts; whether the device changed, and the minimisation
        its report goes through."""
        _awaits_join(self.uow, device, report)
        authority = self.authority(report.source)
        if self._people is not None:
            authority = replace(authority, people=self._people)
        changed = apply_device_facts(
            self.uow, device, report.device, authority, resources=self._resources
        )
        if not (self.minimise_personal and device.ownership == Ownership.PERSONAL):
            return changed, None
        if self._minimisation is None:
            self._minimisation = MinimisationSet(frozenset(live_identifier_keys(self.uow)))
        return changed, self._minimisation

    def _counted(
        self, device: Device, outcome: ReportOutcome, *, changed: bool, joined: bool
    ) -> None:
        self.result.count(outcome)
        self.seen[device.id] = device
        if changed or joined or outcome == ReportOutcome.APPLIED:
            self.touched[device.id] = device
        if self.on_report is not None:
            self.on_report()

    def _create_owners(self, resolved: Sequence[tuple[ReportFacts, Device, bool]]) -> None:
        """Make at once, in batch order, the people `apply_device_facts` would make one by one
        (a flush each): the unknown in-organisation owners of devices without one, whose owner
        fact is then unset and so admitted from any source. It stops at the first report that
        would make a person otherwise (a device whose owner changes to somebody unknown): that
        one and those after it are made one by one, so the ids come out in the same order."""
        assert self._people is not None
        owned: set[int] = set()  # devices an earlier report of the batch gives an owner
        new: dict[str, tuple[str, str | None, str | None]] = {}
        for report, device, _ in resolved:
            email = report.device.owner_email
            if email is None:
                continue
            authority = self.authority(report.source)
            unknown = (
                self._people.find(self.uow, email) is None and normalise_email(email) not in new
            )
            if device.owner_id is None and device.id not in owned:
                owned.add(device.id)
                if unknown and authority.in_organisation(email):
                    new[normalise_email(email)] = (email, None, authority.source)
            elif unknown and authority.in_organisation(email):
                break
        for person in new_people(self.uow, list(new.values())) if new else ():
            self._people.remember(person)

    def apply_one_by_one(self, reports: Iterable[ReportFacts]) -> None:
        for report in reports:
            if not self._checked(report):
                continue
            try:
                device, joined = resolve_device(self.uow, report.device, source=report.source)
            except (IdentifierConflict, InvalidInput) as exc:
                self._refused(report, exc)
                continue
            changed, minimise = self._facts(device, report)
            outcome = apply_report(
                self.uow,
                device,
                report,
                minimise=minimise,
                token_id=self.writer.token_id,
                rows=self.observed,
            )
            self._counted(device, outcome, changed=changed, joined=joined)

    def apply_in_bulk(
        self, reports: Sequence[ReportFacts], touched: Mapping[int, Device]
    ) -> list[DecisionChanged]:
        """Apply the reports set-wise (`devices.bulk`), and evaluate the devices they changed
        after `touched` (the batch's changed device entries); returns the decisions changed.

        Everything the evaluation reads is read before the reports are applied: from then on
        the connection is their observation rows' (`devices.bulk.observations_written`), while
        this process applies the reports' facts and diffs, then evaluates the devices from
        memory. Their facts, reports, states and decisions are written after."""
        resolved = self._resolve(reports)
        writer = ReportWriter(self.uow, token_id=self.writer.token_id)
        writer.prepare(feed_keys((device, report) for report, device, _ in resolved))
        self._people = PersonLookup.of(
            self.uow, [r.device.owner_email for r, _, _ in resolved if r.device.owner_email]
        )
        self._create_owners(resolved)
        reported = list({device.id: device for _, device, _ in resolved}.values())
        self._resources = stored_resources_of(self.uow, sorted(d.id for d in reported))
        candidates = list({**touched, **{d.id: d for d in reported}}.values())
        evaluation = _BatchEvaluation(self.uow)
        owners = evaluation.read_ahead(candidates, reported, self._people.person_ids())
        with names_read(self.uow, candidates), observations_written(writer):
            for report, device, joined in resolved:
                changed, minimise = self._facts(device, report)
                outcome = writer.apply(device, report, minimise=minimise)
                self._counted(device, outcome, changed=changed, joined=joined)
            writer.finish_observations()
            evaluation.shared.observed.update(writer.device_rows())
            evaluation.shared.build_views(self.uow, reported, owners, self._resources)
            # Only what changed: the same page twice changes nothing.
            evaluation.evaluate(list({**touched, **self.touched}.values()))
        evaluation.write()  # and the facts the reports changed
        writer.write_reports()
        return evaluation.publish()

    def _resolve(self, reports: Sequence[ReportFacts]) -> list[tuple[ReportFacts, Device, bool]]:
        """The reports' devices (made where new), with whether that changed what is stored."""
        checked = [report for report in reports if self._checked(report)]
        resolver = DeviceResolver(self.uow)
        resolver.prepare(checked)
        resolved: list[tuple[ReportFacts, Device, bool]] = []
        for report in checked:
            try:
                try:
                    device, joined = resolver.resolve(report)
                except NeedsOneByOne:
                    device, joined = resolver.resolve_one_by_one(report)
            except (IdentifierConflict, InvalidInput) as exc:
                self._refused(report, exc)
                continue
            resolved.append((report, device, joined))
        resolver.flush()
        return resolved


def ingest(
    uow: UnitOfWork,
    batch: InventoryBatch,
    *,
    minimise_personal: bool = True,
    on_report: Callable[[], None] | None = None,
    writer: Writer | None = None,
) -> IngestResult:
    """Apply the batch; `on_report` is called after each report (to move a progress bar).
    Facts are applied only from the source authoritative for them (devices/facts.py). A batch
    of many reports is applied with the cycle collector paused (`collector_paused`)."""
    many = len(batch.reports) > 1 or len(batch.devices) > 1
    with collector_paused() if many else nullcontext():
        return _ingest(uow, batch, minimise_personal, on_report, writer)


def _ingest(
    uow: UnitOfWork,
    batch: InventoryBatch,
    minimise_personal: bool,
    on_report: Callable[[], None] | None,
    writer: Writer | None,
) -> IngestResult:
    writer = writer or Writer()
    entry_source = batch.source or writer.source or IMPORT_SOURCE
    result = IngestResult(skipped=list(batch.skipped))
    for person in batch.people:
        if _person(uow, person, writer.authority(entry_source)):
            result.people += 1
        else:
            result.outside_domains.append(person.email)
    held = _mass_retirements(uow, batch, entry_source)

    def authority(source: str) -> Authority:
        return writer.authority(source, hold_retirements=source in held)

    touched: dict[int, Device] = {}  # changed: re-evaluated
    seen: dict[int, Device] = {}  # reported, changed or not
    for facts in batch.devices:
        try:
            device, joined = resolve_device(uow, facts, source=entry_source)
        except IdentifierConflict as exc:
            result.quarantined.append(exc.message)
            result.listed_device_ids.update(exc.device_ids)
            continue
        except InvalidInput as exc:
            result.skipped.append(exc.message)
            continue
        seen[device.id] = device
        if apply_device_facts(uow, device, facts, authority(entry_source)) or joined:
            touched[device.id] = device
    reports = _BatchReports(uow, writer, result, authority, minimise_personal, on_report)
    bulk = len(batch.reports) > 1
    if bulk:
        result.decision_changes += reports.apply_in_bulk(batch.reports, touched)
    else:  # a single report (W4): the one-by-one path, fewest statements for one device
        reports.apply_one_by_one(batch.reports)
        touched.update(reports.touched)
        # Only what changed: the same page twice changes nothing.
        result.decision_changes += reevaluate_devices(
            uow, list(touched.values()), observed=reports.observed
        )
    seen.update(reports.seen)
    result.devices = len(seen)
    result.listed_device_ids.update(seen)
    result.retirements_held = sum(held.values())
    result.outside_domains += sorted(
        {d.unmatched_owner for d in seen.values() if d.unmatched_owner is not None}
    )
    if bulk:
        publish_write_counts(uow.session)  # the import's ANALYZE judges by these counts
    return result


# Devices whose views one evaluation pass holds at once (their observations are all loaded).
EVALUATION_CHUNK = 1_000


def reevaluate_devices(
    uow: UnitOfWork,
    devices: Sequence[Device],
    *,
    observed: Mapping[int, DeviceRows] | None = None,
    admit: frozenset[str] = frozenset(),
) -> list[DecisionChanged]:
    """`reevaluate_device` for each, in order, reading what they share once: the versions,
    rules and exemptions for all, the devices' views a chunk at a time. `observed`: rows a
    report just wrote for some of them (`devices.service.apply_report`); `admit`: as
    `reevaluate_device`'s."""
    shared = SharedReads(observed=dict(observed or {}))
    if len(devices) <= 1:  # one report (W4): its rows are at hand, nothing to prefetch
        return [
            change
            for device in devices
            for change in reevaluate_device(uow, device, admit=admit, shared=shared)
        ]
    evaluation = _BatchEvaluation(uow, admit, shared)
    for start in range(0, len(devices), EVALUATION_CHUNK):
        chunk = devices[start : start + EVALUATION_CHUNK]
        shared.clear()
        evaluation.read(chunk)
        with names_read(uow, chunk):
            evaluation.evaluate(chunk)
        evaluation.write()
    return evaluation.publish()


# What a batch adds and nothing changes again in its unit of work: the states, first
# sightings, decisions and held denies of its evaluation (each read anew by the next one), and
# the devices' new resources and owner history (read from the store when they change again).
WRITTEN_ONCE = (
    ComplianceRecord,
    PolicyFirstSeen,
    DecisionRecord,
    BreakerHold,
    DeviceResource,
    DeviceOwnerHistory,
)


@dataclass
class _BatchEvaluation:
    """Many devices evaluated in one unit of work: what they share read once (`read`, or
    `read_ahead` for a batch of reports not applied yet), the devices evaluated without a
    query (`evaluate`), their states and decisions then written and the batch's event
    published (`publish`)."""

    uow: UnitOfWork
    admit: frozenset[str] = frozenset()
    shared: SharedReads = field(default_factory=SharedReads)
    decisions: dict[int, dict[str, DecisionRecord]] = field(default_factory=dict)
    changes: list[DecisionChanged] = field(default_factory=list)
    evaluated: list[DeviceEvaluated] = field(default_factory=list)
    evaluations: dict[tuple[int, int], Evaluation] = field(default_factory=dict)

    def read(self, devices: Sequence[Device]) -> None:
        self.shared.prefetch(self.uow, devices)
        self._read_decisions(devices)

    def read_ahead(
        self, devices: Sequence[Device], reported: Sequence[Device], people: Collection[int]
    ) -> Owners:
        """`read`, but the `reported` devices' views, built once their reports are applied
        (`SharedReads.build_views`, from the owners returned: their owners now and `people`)."""
        owners = self.shared.read_ahead(self.uow, reported, people)
        reported_ids = {device.id for device in reported}
        self.shared.prefetch(self.uow, [d for d in devices if d.id not in reported_ids])
        self._read_decisions(devices)
        return owners

    def _read_decisions(self, devices: Sequence[Device]) -> None:
        """The devices' stored decisions, and what judging their flips reads (the breakers)."""
        ids = [device.id for device in devices]
        self.decisions = stored_decisions(self.uow, ids)
        breakers(self.uow).prefetch(ids)

    def evaluate(self, devices: Sequence[Device]) -> None:
        for device in devices:
            self.changes += _reevaluate(
                self.uow,
                device,
                self.admit,
                self.shared,
                self.evaluated,
                self.decisions[device.id],
                self.evaluations,
            )

    def write(self) -> None:
        """Store what `evaluate` (and the reports' facts) left in the session: the new rows of
        `WRITTEN_ONCE` in one insert per table, without the flush's bookkeeping for each
        (`insert_new_in_bulk`), then the rest."""
        insert_new_in_bulk(self.uow.session, WRITTEN_ONCE)
        self.uow.session.flush()

    def publish(self) -> list[DecisionChanged]:
        # One event for the batch: its reactions (late entrants' notices) read what the devices
        # share once.
        self.uow.publish(DevicesEvaluated(tuple(self.evaluated), self.uow.now, self.evaluations))
        return self.changes


def reevaluate_ids(
    uow: UnitOfWork, device_ids: Collection[int], *, admit: frozenset[str] = frozenset()
) -> list[DecisionChanged]:
    """`reevaluate_devices` for the devices with these ids, in id order, a chunk at a time: a
    memo's release or retraction names every device in its scope, which one statement cannot
    take (PostgreSQL's protocol stops at 65,535 parameters). Each chunk is evaluated with the
    cycle collector paused, as a batch of reports is (`ingest`). `admit`: as
    `reevaluate_device`'s (a breaker's release)."""
    changes: list[DecisionChanged] = []
    for part in chunks(sorted(device_ids), EVALUATION_CHUNK):
        devices = uow.session.scalars(
            select(Device).where(one_of(Device.id, part)).order_by(Device.id)
        )
        with collector_paused():
            changes += reevaluate_devices(uow, list(devices), admit=admit)
    return changes


def reevaluate_device(
    uow: UnitOfWork,
    device: Device,
    *,
    admit: frozenset[str] = frozenset(),
    shared: SharedReads | None = None,
) -> list[DecisionChanged]:
    """Store the device's states and decisions anew; `admit`: policies whose held denies an
    admin releases (`usecases.breakers`); `shared`: reads shared with other devices evaluated
    in the same unit of work (`reevaluate_devices`)."""
    return _reevaluate(uow, device, admit, shared)


def _reevaluate(
    uow: UnitOfWork,
    device: Device,
    admit: frozenset[str],
    shared: SharedReads | None,
    evaluated: list[DeviceEvaluated] | None = None,
    decisions: dict[str, DecisionRecord] | None = None,
    evaluations: dict[tuple[int, int], Evaluation] | None = None,
) -> list[DecisionChanged]:
    """Store the device's states and decisions anew and publish that it was evaluated, or,
    given `evaluated`, add the event there for the caller to publish with the batch's (and its
    evaluations to `evaluations`); `decisions`: its stored decisions, read for the batch."""
    evaluator = DeviceEvaluator(uow, device, shared)  # holds the owner while reactions run
    outcomes = evaluator.at(uow.now)
    if evaluations is not None:
        evaluations.update(((device.id, o.version.id), o.evaluation) for o in outcomes)
    # refresh_decisions flushes the states with the decisions
    record_outcomes(uow, device.id, outcomes, shared=shared, flush=False)
    changes = refresh_decisions(
        uow, device, outcomes, evaluator, admit=admit, stored=decisions, flush=decisions is None
    )
    states = tuple((o.version.id, str(o.evaluation.state)) for o in outcomes)
    event = DeviceEvaluated(device.id, device.owner_id, states, uow.now)
    if evaluated is None:
        uow.publish(event)
    else:
        evaluated.append(event)
    return changes


def refuse_write(uow: UnitOfWork, token_id: int, reason: str, problems: list[str]) -> None:
    """Audit an inventory write refused because of who wrote it (the write itself changed
    nothing and is not audited: only refusals, held conflicts and token changes are)."""
    record(
        uow,
        action="inventory.refuse",
        object_type="api_token",
        object_id=str(token_id),
        after={"reason": reason, "problems": problems[:20]},
    )


def quarantine_rows(uow: UnitOfWork) -> list[dict[str, Any]]:
    """Reports held back because their identifiers pointed at more than one device."""
    return [
        {
            "id": q.id,
            "source": q.source,
            "received_at": iso(q.received_at),
            "identifiers": q.identifiers,
            "candidate_device_ids": q.candidate_device_ids,
            "reason": q.reason,
        }
        for q in uow.session.scalars(select(Quarantine).order_by(Quarantine.id))
    ]
