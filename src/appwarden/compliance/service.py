"""Compliance: evaluating devices under the versions in effect, fleet status, and the stored
states and first-seen times that evaluation maintains."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import bindparam, select

from appwarden.compliance.evaluate import (
    DeviceView,
    Evaluation,
    ExemptionWindow,
    PolicyRules,
    Watched,
    due_time,
    evaluate,
)
from appwarden.compliance.fleet import FleetRow, fleet_rows
from appwarden.compliance.models import ComplianceRecord
from appwarden.compliance.rules import (
    Owners,
    device_views,
    exemption_windows,
    granted_exemptions,
    granted_exemptions_of,
    granted_to_device,
    rules_of,
    stored_first_seen,
    stored_first_seens,
    views_in_memory,
)
from appwarden.db.chunked import chunks, one_of
from appwarden.db.uow import UnitOfWork
from appwarden.devices.models import Device
from appwarden.devices.service import DeviceRows
from appwarden.exemptions.models import Exemption
from appwarden.policies.models import PolicyFirstSeen, PolicyVersion
from appwarden.policies.service import in_effect, released_versions
from appwarden.vocabulary import ComplianceState


@dataclass(frozen=True, slots=True)
class Outcome:
    version: PolicyVersion
    rules: PolicyRules
    evaluation: Evaluation


def evaluate_view(
    uow: UnitOfWork, rules: PolicyRules, view: DeviceView, owner_id: int | None, now: datetime
) -> Evaluation:
    return evaluate(
        rules,
        view,
        now=now,
        exemptions=exemption_windows(uow, rules.policy_id, view, owner_id),
        stored_first_seen=stored_first_seen(uow, rules.policy_id, view.device_id),
    )


def evaluate_device(uow: UnitOfWork, device: Device, at: datetime) -> list[Outcome]:
    """The device under every version in effect at `at` (not_applicable included)."""
    return DeviceEvaluator(uow, device).at(at)


@dataclass
class SharedReads:
    """What evaluating many devices reads once for all of them: the released versions, their
    rules, each policy's granted exemptions, and the devices' views (`prefetch`)."""

    released: list[PolicyVersion] | None = None
    rules: dict[int, PolicyRules] = field(default_factory=dict)
    granted: dict[str, Sequence[Exemption]] = field(default_factory=dict)
    views: dict[int, DeviceView] = field(default_factory=dict)
    # Devices whose rows a report just wrote (`devices.service.apply_report`): their views are
    # built from these instead of reading observations and coverage again.
    observed: dict[int, DeviceRows] = field(default_factory=dict)
    # The prefetched devices' stored states and first sightings, by device id (every prefetched
    # device has an entry, empty when it has none), so that neither `DeviceEvaluator` nor
    # `record_outcomes` asks the store about them device by device. Held here, the rows also
    # stay in the session's identity map.
    records: dict[int, dict[int, ComplianceRecord]] = field(default_factory=dict)
    first_seens: dict[int, dict[str, PolicyFirstSeen]] = field(default_factory=dict)
    # Many devices are evaluated (`prefetch` was called): a policy's granted exemptions are
    # read once for all of them rather than each device's own.
    batch: bool = False

    def prefetch(self, uow: UnitOfWork, devices: Sequence[Device], chunk: int = 2_000) -> None:
        """The views, stored states and first sightings of these devices (the session holds
        them: they are not read again), in a fixed number of queries per chunk of them, and
        every policy's granted exemptions (read once): evaluating the devices then reads nothing."""
        watched = self._read_policies(uow)
        for start in range(0, len(devices), chunk):
            loaded = devices[start : start + chunk]
            ids = [device.id for device in loaded]
            self.views.update(
                device_views(uow, ids, loaded=loaded, observed=self.observed, watched=watched)
            )
            self._read_records(uow, ids)

    def read_ahead(
        self, uow: UnitOfWork, devices: Sequence[Device], people: Collection[int]
    ) -> Owners:
        """What `prefetch` reads but the views, for devices whose facts a batch is yet to apply
        (`usecases.ingest`): their views are built once it has (`build_views`), from memory,
        while its observation rows are being written. Returns the people who may own them
        then, with their groups: their owners now and `people` (those the batch names)."""
        self._read_policies(uow)
        self._read_records(uow, [device.id for device in devices])
        owners = {device.owner_id for device in devices if device.owner_id is not None}
        return Owners.of(uow, owners | set(people))

    def build_views(
        self,
        uow: UnitOfWork,
        devices: Sequence[Device],
        owners: Owners,
        resources: Mapping[int, Collection[str]],
    ) -> None:
        """The views of devices `read_ahead` read for, from their objects, `owners`, their
        `resources` and their rows in `observed`."""
        watched = Watched.by(self.every_rules(uow))
        self.views.update(views_in_memory(uow, devices, owners, resources, self.observed, watched))

    def _read_policies(self, uow: UnitOfWork) -> Watched:
        """Every released version's rules and every policy's granted exemptions, read once;
        returns what the rules can look at."""
        self.batch = True
        every = self.every_rules(uow)
        unread = {rules.policy_id for rules in every} - self.granted.keys()
        self.granted.update(granted_exemptions_of(uow, unread))
        return Watched.by(every)

    def _read_records(self, uow: UnitOfWork, ids: Sequence[int]) -> None:
        for device_id in ids:
            self.records[device_id] = {}
            self.first_seens[device_id] = {}
        for part in chunks(ids):
            for record in uow.session.scalars(
                select(ComplianceRecord).where(one_of(ComplianceRecord.device_id, part))
            ):
                self.records[record.device_id][record.version_id] = record
            for first in uow.session.scalars(
                select(PolicyFirstSeen).where(one_of(PolicyFirstSeen.device_id, part))
            ):
                self.first_seens[first.device_id][first.policy_id] = first

    def versions(self, uow: UnitOfWork) -> list[PolicyVersion]:
        """Every version ever released, read once."""
        if self.released is None:
            self.released = released_versions(uow)
        return self.released

    def rules_of(self, uow: UnitOfWork, version: PolicyVersion) -> PolicyRules:
        """The version's rules, read once."""
        rules = self.rules.get(version.id)
        if rules is None:
            rules = self.rules[version.id] = rules_of(uow, version)
        return rules

    def every_rules(self, uow: UnitOfWork) -> list[PolicyRules]:
        """The rules of every released version: what the devices may be evaluated under (the
        prefetched views hold only what these can look at)."""
        return [self.rules_of(uow, version) for version in self.versions(uow)]

    def clear(self) -> None:
        """Forget the prefetched devices (the versions, rules and exemptions stay)."""
        self.views.clear()
        self.records.clear()
        self.first_seens.clear()


class DeviceEvaluator:
    """One device under the versions in effect at each instant asked for; what does not depend
    on the instant (its observations, the versions' rules, exemptions, stored first sightings)
    is read once, so the instants `access.service.next_decision` asks about cost no query; with
    `shared`, what is not the device's own is read once for every device evaluated with the same
    `SharedReads`.

    The first sightings are those stored when the evaluator first looked: `record_outcomes`
    stores the first sighting the evaluation at that instant found, and a later instant with the
    same facts finds the same one, so reading them again would not change an evaluation."""

    def __init__(self, uow: UnitOfWork, device: Device, shared: SharedReads | None = None) -> None:
        self.uow = uow
        self.device = device
        self._shared = shared or SharedReads()
        self._windows: dict[str, list[ExemptionWindow]] = {}
        self._own_granted: dict[str, list[Exemption]] | None = None
        self._first_seen: dict[str, PolicyFirstSeen] | None = None
        self._outcomes: dict[datetime, list[Outcome]] = {}
        self._held: list[object] = []  # the owner, so that event reactions find it in the session

    @property
    def view(self) -> DeviceView:
        """The device's view: the shared one where `SharedReads.prefetch` read it, else read here
        with the device (and its owner, kept) already in the session."""
        device = self.device
        view = self._shared.views.get(device.id)
        if view is None:
            views = device_views(
                self.uow,
                [device.id],
                loaded=[device],
                keep=self._held,
                observed=self._shared.observed,
            )
            view = self._shared.views[device.id] = views[device.id]
        return view

    def _stored_first_seen(self, policy_id: str) -> datetime | None:
        if self._first_seen is None:
            prefetched = self._shared.first_seens.get(self.device.id)
            self._first_seen = (
                stored_first_seens(self.uow, self.device.id) if prefetched is None else prefetched
            )
        row = self._first_seen.get(policy_id)
        return None if row is None else row.first_seen_at

    def _granted(self, rules: PolicyRules) -> Sequence[Exemption]:
        """The policy's granted exemptions that may cover this device: for a batch, every one
        of the policy's (read once for all its devices); for one device, the device's own."""
        shared = self._shared
        granted = shared.granted.get(rules.policy_id)
        if granted is None and shared.batch:
            granted = shared.granted[rules.policy_id] = granted_exemptions(
                self.uow, rules.policy_id
            )
        if granted is None:
            if self._own_granted is None:
                self._own_granted = granted_to_device(
                    self.uow, self.device.id, self.device.owner_id
                )
            granted = self._own_granted.get(rules.policy_id, ())
        return granted

    def at(self, instant: datetime) -> list[Outcome]:
        known = self._outcomes.get(instant)
        if known is not None:
            return known
        uow, device, shared = self.uow, self.device, self._shared
        view = self.view
        outcomes = []
        for version in in_effect(shared.versions(uow), instant):
            rules = shared.rules_of(uow, version)
            windows = self._windows.get(rules.policy_id)
            if windows is None:
                windows = exemption_windows(
                    uow, rules.policy_id, view, device.owner_id, granted=self._granted(rules)
                )
                self._windows[rules.policy_id] = windows
            evaluation = evaluate(
                rules,
                view,
                now=instant,
                exemptions=windows,
                stored_first_seen=self._stored_first_seen(rules.policy_id),
            )
            outcomes.append(Outcome(version, rules, evaluation))
        self._outcomes[instant] = outcomes
        return outcomes


def evaluation_from_row(rules: PolicyRules, row: FleetRow, now: datetime) -> Evaluation:
    """Explain a fleet row the way `evaluate` explains a device: since, due, valid_until."""
    underlying = row.underlying
    reasons: tuple[str, ...]
    due: datetime | None = None
    if row.first_seen is not None:
        due = due_time(rules, row.first_seen)
        if row.exemption_ended_at is not None:
            due = max(due, row.exemption_ended_at + rules.grace)
    if underlying in (ComplianceState.ACTION_REQUIRED, ComplianceState.NON_COMPLIANT):
        assert row.first_seen is not None
        assert due is not None
        assert row.latest_presence is not None
        reasons = tuple(f"present:{ident}" for ident in row.present)
        if row.latest_presence < now - rules.max_evidence_age:
            reasons += ("evidence_stale",)
        if underlying == ComplianceState.ACTION_REQUIRED:
            since, valid_until = max(rules.release_at, row.first_seen), due
        else:
            since, valid_until = max(rules.release_at, due), None
    elif underlying == ComplianceState.COMPLIANT:
        reasons = ("absence_proven",)
        since = max(rules.release_at, row.cleared_at or rules.release_at)
        valid_until = (
            row.oldest_fresh_proof + rules.max_evidence_age if row.oldest_fresh_proof else None
        )
    else:
        reasons = tuple(f"unverified:{ident}" for ident in row.unverified)
        since, valid_until = rules.release_at, None
        if not row.never_proven and row.oldest_unproven_proof is not None:
            since = max(since, row.oldest_unproven_proof + rules.max_evidence_age)
    if row.state == ComplianceState.EXEMPT:
        assert row.exemption_starts_at is not None
        return Evaluation(
            ComplianceState.EXEMPT,
            since=max(rules.release_at, row.exemption_starts_at),
            due=due,
            first_seen=row.first_seen,
            reasons=(f"exemption:{row.exemption_id}", f"underlying:{underlying}", *reasons),
            valid_until=row.exemption_ends_at,
        )
    if row.exemption_ended_at is not None:
        since = max(since, row.exemption_ended_at)
    if row.next_exemption_at is not None:
        valid_until = min(valid_until or row.next_exemption_at, row.next_exemption_at)
    return Evaluation(
        underlying,
        since=since,
        due=due,
        first_seen=row.first_seen,
        reasons=reasons,
        valid_until=valid_until,
    )


def fleet_status(uow: UnitOfWork, rules: PolicyRules, at: datetime) -> list[tuple[int, Evaluation]]:
    """Every in-scope device of the version at `at`, evaluated set-based in the store."""
    return [
        (row.device_id, evaluation_from_row(rules, row, at))
        for row in fleet_rows(uow, rules, now=at)
    ]


# Built once: every report's evaluation runs it (W4; see `compliance.rules`).
_STATES_OF_DEVICE = select(ComplianceRecord).where(
    ComplianceRecord.device_id == bindparam("device_id")
)


def record_outcomes(
    uow: UnitOfWork,
    device_id: int,
    outcomes: list[Outcome],
    *,
    shared: SharedReads | None = None,
    flush: bool = True,
) -> None:
    """Store in-scope states and first-seen times for one device (in the caller's transaction).
    `shared`: reads that prefetched the device's stored states and first sightings (no query
    here then); `flush=False` leaves the writes to the session's next flush, so that a batch's
    go to the store together."""
    prefetched = shared.records.get(device_id) if shared is not None else None
    firsts = shared.first_seens.get(device_id) if shared is not None else None
    records = (
        {  # one query for the device's stored states, however many versions
            r.version_id: r
            for r in uow.session.scalars(_STATES_OF_DEVICE, {"device_id": device_id})
        }
        if prefetched is None
        else prefetched
    )
    for outcome in outcomes:
        evaluation = outcome.evaluation
        key = (outcome.version.id, device_id)
        if evaluation.first_seen is not None:
            policy_id = outcome.version.policy_id
            first = (
                uow.session.get(PolicyFirstSeen, (policy_id, device_id))
                if firsts is None
                else firsts.get(policy_id)
            )
            if first is None:
                first = PolicyFirstSeen(
                    policy_id=policy_id, device_id=device_id, first_seen_at=evaluation.first_seen
                )
                uow.session.add(first)
                if firsts is not None:
                    firsts[policy_id] = first
            elif evaluation.first_seen < first.first_seen_at:
                first.first_seen_at = evaluation.first_seen
        stored = records.get(key[0])
        if evaluation.state == ComplianceState.NOT_APPLICABLE:
            if stored is not None:
                uow.session.delete(stored)
                if prefetched is not None:
                    del prefetched[key[0]]
            continue
        if stored is None:
            stored = ComplianceRecord(version_id=key[0], device_id=device_id)
            uow.session.add(stored)
            if prefetched is not None:
                prefetched[key[0]] = stored
        stored.state = evaluation.state
        stored.since = evaluation.since or uow.now
        stored.due_at = evaluation.due
        stored.reasons = list(evaluation.reasons)
    if flush:
        uow.session.flush()
