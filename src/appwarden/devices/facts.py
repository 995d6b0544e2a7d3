"""Which source says what: a fact is applied only from the source authoritative for it.

The facts of `vocabulary.Fact` (owner, person status and groups, device status, platform, form
factor, ownership, resources) decide who is blocked, so one source must not be able to rewrite
another's: a token for a mail agent could otherwise mark a person `left`, take them out of a
group a policy names, or empty a phone's resources, and so lift a block. The authority for a fact
is the source named for it in the settings (`APPWARDEN_FACT_SOURCES`), else the record's own
source: the MDM of record of a device (the source that first reported it) or the source that
first created a person. A person created by an admin (or before sources were recorded) has no
source: only a configured source may change it.

A different value from any other source changes nothing: it is held as a `FactConflict` (one open
conflict per fact, record and source), audited when first held, and applied or discarded when an
admin settles it (docs/inventory-native.md). A fact with no stored value yet (an unknown platform,
no owner, no resources) is taken from whoever reports it first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select

from appwarden.audit.service import record
from appwarden.db.chunked import one_of
from appwarden.db.uow import UnitOfWork
from appwarden.devices.models import Device, DeviceOwnerHistory, DeviceResource, FactConflict
from appwarden.errors import Conflict, InvalidInput, NotFound
from appwarden.identity.models import Person
from appwarden.identity.service import (
    PersonLookup,
    ensure_person,
    find_person,
    new_person,
    normalise_email,
    set_groups,
)
from appwarden.timeutil import iso
from appwarden.vocabulary import ConflictStatus, DeviceStatus, Fact, PersonStatus

# Stored values that mean "nobody said yet": the first source to report the fact sets it.
UNSET_VALUES: Mapping[Fact, Any] = {
    Fact.OWNER: None,
    Fact.PERSON_GROUPS: [],
    Fact.PLATFORM: "unknown",
    Fact.FORM_FACTOR: "unknown",
    Fact.OWNERSHIP: "unknown",
    Fact.RESOURCES: [],
}
DEVICE_ATTRIBUTES: Mapping[Fact, str] = {
    Fact.PLATFORM: "platform",
    Fact.FORM_FACTOR: "form_factor",
    Fact.OWNERSHIP: "ownership",
}


@dataclass(frozen=True, slots=True)
class Authority:
    """Decides, for one writer, whether an offered value is applied or held."""

    source: str  # the source writing
    token_id: int | None = None  # the API token writing (None: a CLI import or the demo)
    fact_sources: Mapping[str, str] | None = None  # fact -> authoritative source (settings)
    # The organisation's mail domains (APPWARDEN_ORGANISATION_DOMAINS); empty: every domain.
    organisation_domains: frozenset[str] = frozenset()
    # This run offers to retire too many of the source's devices at once: hold every retirement
    # for an admin, as the mass-lockout breaker holds denials.
    hold_retirements: bool = False
    # The batch's owners looked up at once (the bulk ingest path); None: one lookup per address.
    people: PersonLookup | None = None

    def find_person(self, uow: UnitOfWork, email: str) -> Person | None:
        return self.people.find(uow, email) if self.people is not None else find_person(uow, email)

    def authoritative_source(self, fact: Fact, record_source: str | None) -> str | None:
        configured = (self.fact_sources or {}).get(str(fact))
        return configured if configured is not None else record_source

    def in_organisation(self, email: str) -> bool:
        domain = email.rpartition("@")[2].strip().lower()
        return not self.organisation_domains or domain in self.organisation_domains

    def person(self, uow: UnitOfWork, email: str, display_name: str | None = None) -> Person | None:
        """The person with this email, alias or account name; created (and owned by this source)
        if new and in the organisation's domains. None: an outside address that names nobody."""
        known = self.find_person(uow, email)
        if known is not None:
            return known
        if not self.in_organisation(email):
            return None
        if self.people is None:
            return ensure_person(uow, email, display_name, source=self.source)
        person = new_person(uow, email, display_name, source=self.source)
        self.people.remember(person)
        return person

    def admits(
        self,
        uow: UnitOfWork,
        fact: Fact,
        *,
        stored: Any,
        offered: Any,
        device: Device | None = None,
        person: Person | None = None,
    ) -> bool:
        """True: apply `offered`. False: it differs and this source is not authoritative, so it
        is held as a conflict (in the caller's transaction) and nothing else changes."""
        if offered == stored:
            return False  # nothing to change
        if self.hold_retirements and fact == Fact.DEVICE_STATUS and offered == DeviceStatus.RETIRED:
            self._hold(uow, fact, stored, offered, device, person)
            return False
        if fact in UNSET_VALUES and stored == UNSET_VALUES[fact]:
            return True
        record_source = device.mdm_source if device is not None else None
        if device is None and person is not None:
            record_source = person.source
        if self.authoritative_source(fact, record_source) == self.source:
            return True
        self._hold(uow, fact, stored, offered, device, person)
        return False

    def _hold(
        self,
        uow: UnitOfWork,
        fact: Fact,
        stored: Any,
        offered: Any,
        device: Device | None,
        person: Person | None,
    ) -> None:
        query = select(FactConflict).where(
            FactConflict.fact == str(fact),
            FactConflict.source == self.source,
            FactConflict.status == ConflictStatus.OPEN,
        )
        if device is not None:
            query = query.where(FactConflict.device_id == device.id)
        else:
            assert person is not None
            query = query.where(FactConflict.person_id == person.id)
        held = uow.session.scalars(query).first()
        if held is not None and held.offered_value == offered:
            held.last_offered_at = uow.now
            held.stored_value = stored
            held.token_id = self.token_id
            return
        if held is None:
            held = FactConflict(
                fact=str(fact),
                device_id=device.id if device is not None else None,
                person_id=person.id if person is not None and device is None else None,
                source=self.source,
                first_offered_at=uow.now,
                status=ConflictStatus.OPEN,
            )
            uow.session.add(held)
        held.stored_value = stored
        held.offered_value = offered
        held.token_id = self.token_id
        held.last_offered_at = uow.now
        uow.session.flush()
        record(
            uow,
            action="conflict.hold",
            object_type="fact_conflict",
            object_id=str(held.id),
            after=conflict_json(held),
        )


# ── applying device facts ───────────────────────────────────────────────────────────────────


def owner_email(uow: UnitOfWork, device: Device) -> str | None:
    if device.owner_id is None:
        return None
    owner = uow.session.get(Person, device.owner_id)
    return owner.email if owner is not None else None


def set_owner(uow: UnitOfWork, device: Device, owner: Person) -> None:
    if device.owner_id != owner.id:
        device.owner_id = owner.id
        uow.session.add(DeviceOwnerHistory(device_id=device.id, person_id=owner.id, since=uow.now))


def stored_resources(uow: UnitOfWork, device: Device) -> list[str]:
    return sorted(
        uow.session.scalars(
            select(DeviceResource.resource).where(DeviceResource.device_id == device.id)
        )
    )


def stored_resources_of(
    uow: UnitOfWork, device_ids: Sequence[int], chunk: int = 5_000
) -> dict[int, list[str]]:
    """`stored_resources` of many devices, by device id (sorted; absent: none stored)."""
    ids = list(device_ids)
    found: dict[int, list[str]] = {}
    for start in range(0, len(ids), chunk):
        for device_id, resource in uow.session.execute(
            select(DeviceResource.device_id, DeviceResource.resource)
            .where(one_of(DeviceResource.device_id, ids[start : start + chunk]))
            .order_by(DeviceResource.device_id, DeviceResource.resource)
        ):
            found.setdefault(device_id, []).append(resource)
    return found


def set_resources(
    uow: UnitOfWork,
    device: Device,
    resources: Sequence[str],
    *,
    stored: Sequence[str] | None = None,
) -> None:
    """Replace the device's resources; `stored`: what `stored_resources` just read, when the
    caller has it: with none stored there is nothing to delete, and a new device's resources
    are only added (a DELETE is synchronised over every object in the session)."""
    if stored is None or stored:
        uow.session.execute(delete(DeviceResource).where(DeviceResource.device_id == device.id))
    for resource in sorted(set(resources)):
        uow.session.add(DeviceResource(device_id=device.id, resource=resource))


def set_device_status(uow: UnitOfWork, device: Device, status: str) -> None:
    if status != device.status:
        device.status = status
        device.retired_at = uow.now if status == DeviceStatus.RETIRED else None


def set_person_status(uow: UnitOfWork, person: Person, status: str) -> None:
    if status != person.status:
        person.status = status
        person.left_at = uow.now if status == PersonStatus.LEFT else None


# ── conflicts for admins ────────────────────────────────────────────────────────────────────


def conflict_json(conflict: FactConflict) -> dict[str, Any]:
    return {
        "id": conflict.id,
        "fact": conflict.fact,
        "device_id": conflict.device_id,
        "person_id": conflict.person_id,
        "stored_value": conflict.stored_value,
        "offered_value": conflict.offered_value,
        "source": conflict.source,
        "token_id": conflict.token_id,
        "first_offered_at": iso(conflict.first_offered_at),
        "last_offered_at": iso(conflict.last_offered_at),
        "status": conflict.status,
        "resolution": conflict.resolution,
        "settled_at": iso(conflict.settled_at),
        "settled_by": conflict.settled_by,
    }


def list_conflicts(uow: UnitOfWork, *, include_settled: bool = False) -> list[FactConflict]:
    query = select(FactConflict).order_by(FactConflict.id)
    if not include_settled:
        query = query.where(FactConflict.status == ConflictStatus.OPEN)
    return list(uow.session.scalars(query))


def settle(uow: UnitOfWork, conflict_id: int, *, accept: bool) -> FactConflict:
    """Accept (apply the offered value now) or reject (discard it) an open conflict, audited.
    The caller re-evaluates the device (or the person's devices) after an accepted one."""
    conflict = uow.session.get(FactConflict, conflict_id)
    if conflict is None:
        raise NotFound(f"no fact conflict with the id {conflict_id}")
    if conflict.status != ConflictStatus.OPEN:
        raise Conflict(f"fact conflict {conflict_id} was already settled ({conflict.resolution})")
    before = conflict_json(conflict)
    if accept:
        _apply(uow, conflict)
    conflict.status = ConflictStatus.SETTLED
    conflict.resolution = "accepted" if accept else "rejected"
    conflict.settled_at = uow.now
    conflict.settled_by = uow.actor
    uow.session.flush()
    record(
        uow,
        action="conflict.accept" if accept else "conflict.reject",
        object_type="fact_conflict",
        object_id=str(conflict.id),
        before=before,
        after=conflict_json(conflict),
    )
    return conflict


def _apply(uow: UnitOfWork, conflict: FactConflict) -> None:
    fact, value = Fact(conflict.fact), conflict.offered_value
    if fact in (Fact.PERSON_STATUS, Fact.PERSON_GROUPS):
        person = uow.session.get(Person, conflict.person_id)
        if person is None:
            raise NotFound(f"the person of fact conflict {conflict.id} no longer exists")
        if fact == Fact.PERSON_STATUS:
            set_person_status(uow, person, str(value))
        else:
            set_groups(uow, person, [str(group) for group in value or []])
        return
    device = uow.session.get(Device, conflict.device_id)
    if device is None:
        raise NotFound(f"the device of fact conflict {conflict.id} no longer exists")
    if fact in DEVICE_ATTRIBUTES:
        setattr(device, DEVICE_ATTRIBUTES[fact], str(value))
    elif fact == Fact.DEVICE_STATUS:
        set_device_status(uow, device, str(value))
    elif fact == Fact.RESOURCES:
        set_resources(uow, device, [str(v) for v in value or []])
    elif fact == Fact.OWNER:
        if not isinstance(value, str):
            raise InvalidInput(f"fact conflict {conflict.id} offers no owner")
        owner = find_person(uow, value)
        if owner is None:  # offered by a source that may not create people: an admin does now
            owner = Person(
                email=normalise_email(value),
                status=PersonStatus.ACTIVE,
                created_at=uow.now,
                source=conflict.source,
            )
            uow.session.add(owner)
            uow.session.flush()
        set_owner(uow, device, owner)
    uow.session.flush()
