"""The gate's answer for one proxied request: a lookup of the materialised decision, guarded
against the ways a device can try to get around a block (DESIGN.md §4.3, docs/gates.md).

- The device is found by its ActiveSync DeviceId (or a configured header's value).
- The authenticated mail user must own the device, or the answer is deny.
- A device never seen before is decided by `unseen_device`, except that a person who already has
  a denied device gets `unseen_device_of_blocked_person` (default deny): reinstalling the mail
  app mints a new DeviceId, and that must not lift a block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select

from appwarden.access.gate import GateRequest, normalise_user
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
    policies: list[str] = field(default_factory=list)
    reasons: list[dict[str, Any]] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return self.decision == Decision.ALLOW


def _person_for_user(uow: UnitOfWork, user: str | None) -> Person | None:
    user = normalise_user(user)
    if not user:
        return None
    if "@" in user:
        person = uow.session.scalars(select(Person).where(Person.email == user)).first()
        if person is None:
            person = uow.session.scalars(
                select(Person)
                .join(PersonAlias, PersonAlias.person_id == Person.id)
                .where(PersonAlias.email == user)
            ).first()
        return person
    # A bare account name (DOMAIN\\alice → alice): the local part of a primary email or alias.
    pattern = f"{_escape(user)}@%"
    candidates = list(
        uow.session.scalars(select(Person).where(Person.email.like(pattern, escape="\\")))
    )
    return candidates[0] if len(candidates) == 1 else None


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _owns(person: Person | None, device: Device) -> bool:
    return person is not None and device.owner_id == person.id


def answer(uow: UnitOfWork, request: GateRequest, policy: GatePolicy, now: datetime) -> GateAnswer:
    resource = request.resource
    if resource is None:
        return GateAnswer(Decision.ALLOW, "not_gated")
    person = _person_for_user(uow, request.user)
    if request.device_id is None:
        if resource == "email":
            return GateAnswer(
                Decision.DENY, "no_device_id", person=person.email if person else None
            )
        return GateAnswer(Decision.ALLOW, "no_device", person=person.email if person else None)
    value = normalise(policy.device_namespace, request.device_id)
    row = uow.session.scalars(
        select(DeviceIdentifier).where(
            DeviceIdentifier.namespace == policy.device_namespace, DeviceIdentifier.value == value
        )
    ).first()
    if row is None:
        return _unseen(uow, person, resource, policy, f"{policy.device_namespace}:{value}", now)
    device = uow.session.get(Device, row.device_id)
    assert device is not None
    label = f"{policy.device_namespace}:{value}"
    owner = uow.session.get(Person, device.owner_id) if device.owner_id else None
    if request.user is not None and not _owns(person, device):
        return GateAnswer(
            Decision.DENY,
            "user_is_not_the_owner",
            device=label,
            person=owner.email if owner else None,
        )
    decision, reasons = current_decision(uow, device, resource, now)
    denying = [str(r["policy"]) for r in reasons if r.get("effect") == "deny"]
    return GateAnswer(
        decision,
        "decided",
        device=label,
        person=owner.email if owner else None,
        policies=denying,
        reasons=reasons,
    )


def current_decision(
    uow: UnitOfWork, device: Device, resource: str, now: datetime
) -> tuple[Decision, list[dict[str, Any]]]:
    """The materialised decision while it is valid; computed when it never was materialised or
    its time has come and the worker has not caught up yet."""
    record = uow.session.get(DecisionRecord, (device.id, resource))
    if record is not None and (record.valid_until is None or now < record.valid_until):
        return Decision(record.decision), list(record.reasons)
    result = decide_for(uow, device, resource, now)
    return result.decision, list(result.reasons)


def _unseen(
    uow: UnitOfWork,
    person: Person | None,
    resource: str,
    policy: GatePolicy,
    label: str,
    now: datetime,
) -> GateAnswer:
    if person is not None:
        for device in uow.session.scalars(select(Device).where(Device.owner_id == person.id)):
            decision, reasons = current_decision(uow, device, resource, now)
            if decision == Decision.DENY:
                return GateAnswer(
                    Decision(policy.unseen_device_of_blocked_person),
                    "unseen_device_of_blocked_person",
                    device=label,
                    person=person.email,
                    policies=[str(r["policy"]) for r in reasons if r.get("effect") == "deny"],
                )
    return GateAnswer(
        Decision(policy.unseen_device),
        "unseen_device",
        device=label,
        person=person.email if person else None,
    )


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
