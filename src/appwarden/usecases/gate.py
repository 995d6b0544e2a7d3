"""The gate's answer for one proxied request: a lookup of the materialised decision, guarded
against the ways a device can try to get around a block (DESIGN.md §4.3, docs/gates.md).

- The device is found by its ActiveSync DeviceId (or a configured header's value).
- The authenticated mail user must own the device, or the answer is deny.
- A device never seen before is decided by `unseen_device`, except that a person who already has
  a denied device gets `unseen_device_of_blocked_person` (default deny): reinstalling the mail
  app mints a new DeviceId, and that must not lift a block.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, Protocol

from sqlalchemy import select

from appwarden.access.gate import GateRequest, normalise_user
from appwarden.access.index import DecisionIndex, DecisionRef, DeviceRef, PersonRef
from appwarden.access.models import DecisionRecord
from appwarden.access.service import decide_for
from appwarden.db.uow import UnitOfWork
from appwarden.devices.identifiers import normalise
from appwarden.devices.models import Device, DeviceIdentifier
from appwarden.identity.models import Person, PersonAlias
from appwarden.vocabulary import Decision, DeviceNamespace


@dataclass(frozen=True)
class GatePolicy:
    unseen_device: Literal["allow", "deny"] = "allow"
    unseen_device_of_blocked_person: Literal["allow", "deny"] = "deny"
    device_namespace: str = DeviceNamespace.EAS_DEVICE_ID
    portal_url: str = ""


@dataclass
class GateAnswer:
    decision: Decision
    reason: str
    device: str | None = None
    person: str | None = None
    policies: Sequence[str] = ()

    @property
    def allowed(self) -> bool:
        return self.decision == Decision.ALLOW


class NeedStore(Exception):
    """The in-memory copy cannot answer this request with certainty: ask the store."""


class GateFacts(Protocol):
    """Where `answer` reads its facts: the store (`StoreFacts`) or the in-memory copy
    (`IndexFacts`). Both follow the same rules, so the two paths cannot disagree."""

    def person(self, user: str) -> PersonRef | None:
        """The person a normalised mail user names: an address (primary, then alias), or a bare
        account name matching the local part of exactly one primary address."""
        ...

    def device(self, namespace: str, value: str) -> DeviceRef | None: ...

    def decision(self, device: DeviceRef, resource: str) -> DecisionRef: ...

    def devices_of(self, person: PersonRef) -> Iterable[DeviceRef]: ...


def answer(facts: GateFacts, request: GateRequest, policy: GatePolicy) -> GateAnswer:
    resource = request.resource
    if resource is None:
        return GateAnswer(Decision.ALLOW, "not_gated")
    user = normalise_user(request.user)
    person = facts.person(user) if user else None
    email = person.email if person else None
    if request.device_id is None:
        if resource == "email":
            return GateAnswer(Decision.DENY, "no_device_id", person=email)
        return GateAnswer(Decision.ALLOW, "no_device", person=email)
    value = normalise(policy.device_namespace, request.device_id)
    label = f"{policy.device_namespace}:{value}"
    device = facts.device(policy.device_namespace, value)
    if device is None:
        return _unseen(facts, person, resource, policy, label)
    owner = device.owner.email if device.owner else None
    if request.user is not None and (
        person is None or device.owner is None or device.owner.id != person.id
    ):
        return GateAnswer(Decision.DENY, "user_is_not_the_owner", device=label, person=owner)
    decided = facts.decision(device, resource)
    return GateAnswer(
        decided.decision,
        "decided",
        device=label,
        person=owner,
        policies=decided.denying,
    )


def _unseen(
    facts: GateFacts, person: PersonRef | None, resource: str, policy: GatePolicy, label: str
) -> GateAnswer:
    if person is not None:
        for device in facts.devices_of(person):
            decided = facts.decision(device, resource)
            if decided.decision == Decision.DENY:
                return GateAnswer(
                    Decision(policy.unseen_device_of_blocked_person),
                    "unseen_device_of_blocked_person",
                    device=label,
                    person=person.email,
                    policies=decided.denying,
                )
    return GateAnswer(
        Decision(policy.unseen_device),
        "unseen_device",
        device=label,
        person=person.email if person else None,
    )


def _denying(reasons: Iterable[Mapping[str, Any]]) -> list[str]:
    return [str(r["policy"]) for r in reasons if r.get("effect") == "deny"]


class StoreFacts:
    """The facts as the store holds them, read in the caller's unit of work."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    def person(self, user: str) -> PersonRef | None:
        session = self.uow.session
        if "@" in user:
            person = session.scalars(select(Person).where(Person.email == user)).first()
            if person is None:
                person = session.scalars(
                    select(Person)
                    .join(PersonAlias, PersonAlias.person_id == Person.id)
                    .where(PersonAlias.email == user)
                ).first()
            return _person_ref(person)
        # A bare account name (DOMAIN\\alice → alice). A LIKE scan: the in-memory copy answers
        # this in the common case; the store is asked only when the copy could not answer.
        pattern = f"{_escape(user)}@%"
        candidates = list(
            session.scalars(select(Person).where(Person.email.like(pattern, escape="\\")).limit(2))
        )
        return _person_ref(candidates[0]) if len(candidates) == 1 else None

    def device(self, namespace: str, value: str) -> DeviceRef | None:
        session = self.uow.session
        device_id = session.scalars(
            select(DeviceIdentifier.device_id).where(
                DeviceIdentifier.namespace == namespace, DeviceIdentifier.value == value
            )
        ).first()
        if device_id is None:
            return None
        device = session.get(Device, device_id)
        assert device is not None
        return self._ref(device)

    def decision(self, device: DeviceRef, resource: str) -> DecisionRef:
        row = self.uow.session.get(Device, device.id)
        assert row is not None
        decision, reasons = current_decision(self.uow, row, resource, self.uow.now)
        return DecisionRef(decision, None, tuple(_denying(reasons)))

    def devices_of(self, person: PersonRef) -> Iterable[DeviceRef]:
        devices = self.uow.session.scalars(
            select(Device).where(Device.owner_id == person.id).order_by(Device.id)
        )
        return [self._ref(d) for d in devices]

    def _ref(self, device: Device) -> DeviceRef:
        owner = self.uow.session.get(Person, device.owner_id) if device.owner_id else None
        return DeviceRef(device.id, _person_ref(owner))


def _person_ref(person: Person | None) -> PersonRef | None:
    return PersonRef(person.id, person.email) if person is not None else None


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def current_decision(
    uow: UnitOfWork, device: Device, resource: str, now: datetime
) -> tuple[Decision, list[dict[str, Any]]]:
    """The materialised decision while it is valid, then the one prepared for when it ends
    (`DecisionRecord.next_*`); computed when it never was materialised or neither holds any
    more and the worker has not caught up yet."""
    record = uow.session.get(DecisionRecord, (device.id, resource))
    if record is not None:
        if record.valid_until is None or now < record.valid_until:
            return Decision(record.decision), list(record.reasons)
        upcoming = record.next_valid_until
        if record.next_decision is not None and (upcoming is None or now < upcoming):
            return Decision(record.next_decision), list(record.next_reasons or ())
    result = decide_for(uow, device, resource, now)
    return result.decision, list(result.reasons)


class IndexFacts:
    """The facts from the process's in-memory copy (`access.index`).

    `authoritative=False` (the store is up): the copy answers only from what it positively
    knows to be current; anything it does not know, or a decision whose `valid_until` has come,
    raises NeedStore, so the answer is always the store's. `authoritative=True` (the store is
    down, `on_store_failure: last_known`): the copy's last known state is the answer.
    """

    def __init__(self, index: DecisionIndex, now: datetime, *, authoritative: bool) -> None:
        self.index = index
        self.now = now
        self.authoritative = authoritative

    def person(self, user: str) -> PersonRef | None:
        if "@" in user:
            found = self.index.person_by_email(user)
            if found is not None:
                return found
        else:
            people = self.index.people_with_local_part(user)
            if len(people) > 1:
                return None  # ambiguous here, so ambiguous in the store too
            if people:
                return people[0]
        if self.authoritative:
            return None
        raise NeedStore

    def device(self, namespace: str, value: str) -> DeviceRef | None:
        found = self.index.device(namespace, value)
        if found is not None or self.authoritative:
            return found
        raise NeedStore

    def decision(self, device: DeviceRef, resource: str) -> DecisionRef:
        known = self.index.decision(device.id, resource)
        current = known.at(self.now) if known is not None else None
        if current is not None:
            return current
        if self.authoritative:
            return known or _NEVER_DECIDED  # the last known, however old
        raise NeedStore

    def devices_of(self, person: PersonRef) -> Iterable[DeviceRef]:
        if not self.authoritative:
            raise NeedStore  # the copy may not know every device of theirs
        return [DeviceRef(d, person) for d in self.index.devices_of(person.id)]


_NEVER_DECIDED: Final = DecisionRef(Decision.ALLOW, None, ())  # nothing ever applied to it


EXPLANATIONS = {
    "decided": "A policy requires a change on this device before it can reach this resource.",
    "user_is_not_the_owner": "This device belongs to someone else.",
    "no_device_id": "The request does not identify a device.",
    "unseen_device_of_blocked_person": (
        "Another of your devices is blocked; new devices are blocked too until it is fixed."
    ),
    "unseen_device": "This device is not known to appwarden.",
}


def problem_body(answer_: GateAnswer, policy: GatePolicy) -> dict[str, Any]:
    """The explanation a denied person (or their mail client's admin) reads."""
    return {
        "type": "https://appwarden.dev/problems/access-denied",
        "title": "Access denied by appwarden",
        "status": 403,
        "detail": EXPLANATIONS.get(answer_.reason, answer_.reason),
        "reason": answer_.reason,
        "device": answer_.device,
        "policies": answer_.policies,
        "portal_url": policy.portal_url,
    }
