"""The gate's in-memory copy of what it needs to answer: which device an identifier names, who
owns it, the owner's addresses, and the materialised decisions.

The gate answers most requests from here without touching the store (W2 in bench/README.md). This
module only holds and loads the copy; keeping it fresh (after a commit in this process, on a
change made by another process, periodically in full) is the job of its owner, `web.live_index`.

Loads are SQLAlchemy Core reads on a plain connection; readers and the single loader meet under
one short lock, so a reader never sees half of a device's update.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, NamedTuple

from sqlalchemy import Connection, func, select

from appwarden.access.models import DecisionRecord
from appwarden.db.chunked import one_of
from appwarden.devices.models import Device, DeviceIdentifier, DeviceOwnerHistory
from appwarden.identity.models import Person, PersonAccount, PersonAlias
from appwarden.vocabulary import Decision

#: Devices per IN (...) list when loading a set of devices.
CHUNK = 500
#: How far below the highest identifier / owner-history row seen a catch-up reads again: a
#: transaction that took its row ids before another's and committed after it (PostgreSQL
#: sequences) is still read, as long as fewer than this many rows were committed in between.
ID_SLACK = 1_000


class DecisionRef(NamedTuple):
    """What the gate needs of a decision (its reasons stay in the store: a million devices'
    worth would not fit comfortably in every process). The copy holds it as a plain tuple
    (`_Tables`); the decision is the `Decision`'s value (`verdict` gives the member)."""

    decision: str  # a `Decision` value: see `verdict`
    valid_until: datetime | None
    denying: tuple[str, ...]  # the policies whose deny this decision carries
    next: DecisionRef | None = None  # what it becomes at valid_until (`DecisionRecord.next_*`)

    def at(self, now: datetime) -> DecisionRef | None:
        """The decision in force at `now`: this one, or the one prepared for when it ends; None
        when neither holds any more (the store must decide)."""
        if self.valid_until is None or now < self.valid_until:
            return self
        upcoming = self.next
        if upcoming is not None and (upcoming.valid_until is None or now < upcoming.valid_until):
            return upcoming
        return None

    @property
    def verdict(self) -> Decision:
        return _DECISIONS[self.decision]


class PersonRef(NamedTuple):
    id: int
    email: str
    names: tuple[str, ...] = ()  # aliases and account names, case-folded (the primary is `email`)


@dataclass(frozen=True, slots=True)
class DeviceRef:
    id: int
    owner: PersonRef | None


_Plain = tuple[Any, ...]


@dataclass
class _Tables:
    """Every map of the copy; replaced whole by a full reload, patched by a partial one."""

    device_by_identifier: dict[tuple[str, str], int] = field(default_factory=dict)
    identifiers_of: dict[int, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    owner_of: dict[int, int | None] = field(default_factory=dict)
    devices_of: dict[int, tuple[int, ...]] = field(default_factory=dict)
    # People and decisions are held as plain tuples of plain values (`PersonRef`, `DecisionRef`
    # as `tuple(...)`), made into their named types when read: Python's cycle collector stops
    # tracking an exact tuple of untracked values after its first look, so its full passes do
    # not walk a copy of a million devices (each would stop the event loop that long).
    people: dict[int, _Plain] = field(default_factory=dict)
    # every name a person answers to (primary address, aliases, account names) → who has it
    people_by_name: dict[str, tuple[int, ...]] = field(default_factory=dict)
    decisions: dict[tuple[int, str], _Plain] = field(default_factory=dict)
    resources_of: dict[int, tuple[str, ...]] = field(default_factory=dict)
    # (platform, form factor) of every device, one shared tuple per distinct pair: what a 403
    # lists about the asking person's own blocked devices
    kind_of: dict[int, tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Loaded:
    """What one read returned: the devices it covers (all of their facts), and their owners."""

    devices: frozenset[int]
    identifiers: Sequence[tuple[str, str, int]]  # in the store's order of identifier ids
    owners: Sequence[tuple[int, int | None, str, str]]  # device, owner, platform, form factor
    people: Sequence[PersonRef]
    decisions: Sequence[tuple[int, str, DecisionRef]]


class DecisionIndex:
    """`namespaces`: the identifier namespaces the gate looks devices up by (only those are held:
    a device's other identifiers would cost memory in every process for nothing)."""

    def __init__(self, namespaces: Collection[str]) -> None:
        self.namespaces = tuple(sorted(namespaces))
        self._tables = _Tables()
        self._lock = threading.Lock()
        self.loaded = False
        #: Moves with every change to the copy (a load, a patch): what was read from it under
        #: one generation holds as long as the generation does (`web.gate.AnswerCache`).
        self.generation = 0
        # the highest identifier and owner-history row ids seen (`changed`)
        self._marks: tuple[int, int] = (0, 0)

    # ── reading ──────────────────────────────────────────────────────────────────────────────

    def device(self, namespace: str, value: str) -> DeviceRef | None:
        """The device an identifier names, with its owner; None when the copy does not know it."""
        with self._lock:
            t = self._tables
            device_id = t.device_by_identifier.get((namespace, value))
            if device_id is None:
                return None
            owner_id = t.owner_of.get(device_id)
            owner = t.people.get(owner_id) if owner_id is not None else None
            return DeviceRef(device_id, PersonRef._make(owner) if owner is not None else None)

    def people_named(self, name: str) -> list[PersonRef] | None:
        """Everyone who answers to `name` exactly (a case-folded address, alias or account
        name); None when the copy knows no one by it."""
        with self._lock:
            t = self._tables
            ids = t.people_by_name.get(name)
            return None if ids is None else [PersonRef._make(t.people[i]) for i in ids]

    def identifier_of(self, device_id: int) -> str | None:
        """One identifier value of the device in the gate's namespaces (None: it has none)."""
        with self._lock:
            keys = self._tables.identifiers_of.get(device_id, ())
            return keys[0][1] if keys else None

    def describe(self, device_id: int, namespace: str) -> tuple[str, str, str] | None:
        """Platform, form factor and first identifier value in `namespace` (by the store's
        identifier order) of a device; None when the copy holds no such identifier of it."""
        with self._lock:
            t = self._tables
            kind = t.kind_of.get(device_id)
            for held, value in t.identifiers_of.get(device_id, ()):
                if held == namespace and kind is not None:
                    return kind[0], kind[1], value
            return None

    def decision(self, device_id: int, resource: str) -> DecisionRef | None:
        with self._lock:
            held = self._tables.decisions.get((device_id, resource))
        return _decision_ref(held) if held is not None else None

    def devices_of(self, person_id: int) -> list[int]:
        with self._lock:
            return sorted(self._tables.devices_of.get(person_id, ()))

    def __len__(self) -> int:
        return len(self._tables.owner_of)

    # ── loading ──────────────────────────────────────────────────────────────────────────────

    def load_all(self, connection: Connection) -> None:
        """Replace the whole copy with what the store holds now."""
        marks = _marks(connection)  # before the rows: a later insert is re-read
        loaded = _read(connection, None, self.namespaces)
        fresh = _Tables()
        _apply(fresh, loaded)
        with self._lock:
            self._tables = fresh
            self._marks = marks
            self.loaded = True
            self.generation += 1

    def changed(self, connection: Connection, since: datetime) -> set[int]:
        """The devices a catch-up must reload: those whose decisions were written at or after
        `since`, and those that got an identifier in the copy's namespaces or a new owner since
        the last load, which the copy does not hold yet (a device with no decision at all is in
        neither of the first: without this the copy could say "unseen" of an identifier the
        store has)."""
        marks = _marks(connection)
        # SQLite has one writer at a time: rows commit in the order of their ids.
        slack = 0 if connection.dialect.name == "sqlite" else ID_SLACK
        low_identifier, low_owner = (max(0, m - slack) for m in self._marks)
        found = changed_since(connection, since)
        identifiers = connection.execute(
            select(DeviceIdentifier.device_id, DeviceIdentifier.namespace, DeviceIdentifier.value)
            .where(DeviceIdentifier.id > low_identifier)
            .where(DeviceIdentifier.namespace.in_(self.namespaces))
        ).all()
        owners = connection.execute(
            select(DeviceOwnerHistory.device_id, DeviceOwnerHistory.person_id).where(
                DeviceOwnerHistory.id > low_owner
            )
        ).all()
        with self._lock:  # rows fetched first: readers wait only for these lookups
            t = self._tables
            found.update(d for d, n, v in identifiers if t.device_by_identifier.get((n, v)) != d)
            found.update(d for d, p in owners if t.owner_of.get(d) != p)
        self._marks = marks
        return found

    def moved(self, connection: Connection) -> bool:
        """Whether an identifier of the copy's namespaces or an owner was written since the last
        load (two index lookups): on PostgreSQL a transaction that wrote no decision sends no
        NOTIFY, so the listener asks this as it checks its connection."""
        return _marks(connection) != self._marks

    def load_devices(self, connection: Connection, device_ids: Collection[int]) -> None:
        """Replace what the copy holds about these devices (and their owners) with the store's."""
        ids = sorted(set(device_ids))
        for start in range(0, len(ids), CHUNK):
            loaded = _read(connection, ids[start : start + CHUNK], self.namespaces)
            with self._lock:
                _apply(self._tables, loaded)
                self.generation += 1


def changed_since(connection: Connection, since: datetime) -> set[int]:
    """Devices whose decisions were written at or after `since` (wall clock, see
    `access.service.stamp_written`)."""
    rows = connection.execute(
        select(DecisionRecord.device_id).where(DecisionRecord.written_at >= since).distinct()
    )
    return {device_id for (device_id,) in rows}


def _marks(connection: Connection) -> tuple[int, int]:
    # The highest ids of all namespaces: a lookup at the end of the primary key, where a
    # namespace filter would walk that namespace's index entries.
    identifiers = connection.scalar(select(func.max(DeviceIdentifier.id)))
    owners = connection.scalar(select(func.max(DeviceOwnerHistory.id)))
    return int(identifiers or 0), int(owners or 0)


def _read(
    connection: Connection, device_ids: Sequence[int] | None, namespaces: Sequence[str]
) -> _Loaded:
    identifiers = select(
        DeviceIdentifier.namespace, DeviceIdentifier.value, DeviceIdentifier.device_id
    ).where(DeviceIdentifier.namespace.in_(namespaces))
    owners = select(Device.id, Device.owner_id, Device.platform, Device.form_factor)
    decisions = select(
        DecisionRecord.device_id,
        DecisionRecord.resource,
        DecisionRecord.decision,
        DecisionRecord.reasons,
        DecisionRecord.valid_until,
        DecisionRecord.next_decision,
        DecisionRecord.next_reasons,
        DecisionRecord.next_valid_until,
    )
    if device_ids is not None:
        identifiers = identifiers.where(one_of(DeviceIdentifier.device_id, device_ids))
        owners = owners.where(one_of(Device.id, device_ids))
        decisions = decisions.where(one_of(DecisionRecord.device_id, device_ids))
    identifiers = identifiers.order_by(DeviceIdentifier.id)  # as the store's 403 picks one
    owner_rows = [(d, o, p, f) for d, o, p, f in connection.execute(owners)]
    covered = frozenset(d for d, *_ in owner_rows)
    person_ids = sorted({o for _, o, *_ in owner_rows if o is not None})
    return _Loaded(
        # Every device asked for: one the store no longer has is forgotten.
        devices=covered if device_ids is None else frozenset(device_ids),
        identifiers=[(n, v, d) for n, v, d in connection.execute(identifiers)],
        owners=owner_rows,
        people=list(_people(connection, person_ids if device_ids is not None else None)),
        decisions=[
            (
                d,
                r,
                _decision(
                    decision, reasons, valid_until, _decision(*upcoming) if upcoming[0] else None
                ),
            )
            for d, r, decision, reasons, valid_until, *upcoming in connection.execute(decisions)
        ],
    )


def _people(connection: Connection, person_ids: Sequence[int] | None) -> Iterator[PersonRef]:
    names: dict[int, list[str]] = {}
    chunks: Iterable[Sequence[int] | None] = (
        [None]
        if person_ids is None
        else [person_ids[i : i + CHUNK] for i in range(0, len(person_ids), CHUNK)]
    )
    for chunk in chunks:
        people = select(Person.id, Person.email)
        other_names = [
            select(PersonAlias.person_id, PersonAlias.email),
            select(PersonAccount.person_id, PersonAccount.name),
        ]
        if chunk is not None:
            people = people.where(one_of(Person.id, chunk))
            other_names = [
                query.where(one_of(query.selected_columns[0], chunk)) for query in other_names
            ]
        for query in other_names:
            for person_id, name in connection.execute(query):
                names.setdefault(person_id, []).append(name)
        for person_id, email in connection.execute(people):
            yield PersonRef(person_id, email, tuple(sorted(names.get(person_id, ()))))


def _decision(
    decision: str, reasons: Any, valid_until: datetime | None, upcoming: DecisionRef | None = None
) -> DecisionRef:
    denying = tuple(
        sys.intern(str(r["policy"]))
        for r in (reasons or ())
        if isinstance(r, Mapping) and r.get("effect") == "deny"
    )
    return DecisionRef(_DECISIONS[decision].value, valid_until, denying, upcoming)


_DECISIONS: Final = {str(d): d for d in Decision}


#: One tuple per distinct (platform, form factor) for every device of the copy.
_KINDS: Final[dict[tuple[str, str], tuple[str, str]]] = {}


def _apply(t: _Tables, loaded: _Loaded) -> None:
    """Patch `t` so that it says exactly what `loaded` says about its devices and people."""
    for device_id in loaded.devices:
        for key in t.identifiers_of.pop(device_id, ()):
            if t.device_by_identifier.get(key) == device_id:
                del t.device_by_identifier[key]
        old_owner = t.owner_of.pop(device_id, None)
        if old_owner is not None:
            _drop(t.devices_of, old_owner, device_id)
        for resource in t.resources_of.pop(device_id, ()):
            t.decisions.pop((device_id, resource), None)
        t.kind_of.pop(device_id, None)
    for person in loaded.people:
        _forget_person(t, person.id)
        t.people[person.id] = tuple(person)
        for name in {person.email, *person.names}:
            t.people_by_name[name] = (*t.people_by_name.get(name, ()), person.id)
    for namespace, value, device_id in loaded.identifiers:
        t.device_by_identifier[(namespace, value)] = device_id
        t.identifiers_of[device_id] = (*t.identifiers_of.get(device_id, ()), (namespace, value))
    kinds = _KINDS
    for device_id, owner_id, platform, form_factor in loaded.owners:
        kind = (platform, form_factor)
        t.kind_of[device_id] = kinds.setdefault(kind, kind)
        t.owner_of[device_id] = owner_id
        if owner_id is not None:
            t.devices_of[owner_id] = (*t.devices_of.get(owner_id, ()), device_id)
    for device_id, resource, decision in loaded.decisions:
        t.decisions[(device_id, resource)] = _plain_decision(decision)
        t.resources_of[device_id] = (*t.resources_of.get(device_id, ()), sys.intern(resource))


def _plain_decision(ref: DecisionRef) -> _Plain:
    upcoming = ref.next
    return (ref.decision, ref.valid_until, ref.denying, tuple(upcoming) if upcoming else None)


def _decision_ref(held: _Plain) -> DecisionRef:
    decision, valid_until, denying, upcoming = held
    return DecisionRef(
        decision, valid_until, denying, DecisionRef._make(upcoming) if upcoming else None
    )


def _forget_person(t: _Tables, person_id: int) -> None:
    held = t.people.pop(person_id, None)
    if held is None:
        return
    old = PersonRef._make(held)
    for name in {old.email, *old.names}:
        _drop(t.people_by_name, name, person_id)


def _drop(mapping: dict[Any, tuple[int, ...]], key: Any, member: int) -> None:
    """Remove `member` from the tuple at `key` (tuples, not sets: most hold one member, and a
    set costs four times the memory in every process)."""
    rest = tuple(m for m in mapping.get(key, ()) if m != member)
    if rest:
        mapping[key] = rest
    else:
        mapping.pop(key, None)
