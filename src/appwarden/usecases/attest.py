"""Attestation: a person confirms that a policy's apps are not on one of their own devices.

The statement is stored as a report with evidence `attestation` from the source `attestation`,
whose coverage is the resolved identifier lines of the policy's version in effect that the
device's platform can carry. It therefore proves absence (where the policy's `evidence` lists
`attestation`, for `max_evidence_age`) for exactly those identifiers: a later version with the
same resolved set is still covered, one that adds an identifier is not, and the device is
`unknown` again for it. It never deletes what an inventory saw (its own feed).

Only the device's owner attests, as themself: an admin's roles do not let them speak for
someone else. Someone else's device is "not found" in the same words as a device that does not
exist, so a refusal tells a stranger nothing. Every refusal raises before anything is written;
an accepted statement is audited (`device.attest`) and re-evaluates the device in the same
transaction, so the gate's answer flips when it commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select

from appwarden.audit.service import record
from appwarden.compliance.service import evaluate_device
from appwarden.db.chunked import one_of
from appwarden.db.uow import UnitOfWork
from appwarden.devices.identifiers import normalise
from appwarden.devices.models import Device, DeviceIdentifier
from appwarden.devices.schemas import DeviceFacts, ReportFacts
from appwarden.devices.service import apply_report, coverage_hash
from appwarden.errors import Ambiguous, InvalidInput, NotFound, PermissionDenied
from appwarden.identity.models import Person
from appwarden.identity.service import find_person
from appwarden.policies.models import PolicyIdentifier, PolicyVersion
from appwarden.policies.service import effective_versions
from appwarden.timeutil import iso
from appwarden.usecases.ingest import reevaluate_device
from appwarden.vocabulary import (
    ComplianceState,
    DeviceNamespace,
    DeviceStatus,
    EvidenceKind,
    PersonStatus,
    platform_carries,
)

#: The source every attestation is stored as (its feed never touches an inventory's).
ATTESTATION_SOURCE: Final = "attestation"
MAX_REFERENCE_CHARS: Final = 600


@dataclass(frozen=True, slots=True)
class Attested:
    """What an accepted attestation stored and what it changed."""

    device_id: int
    policy_id: str
    version: int
    at: datetime
    identifiers: tuple[str, ...]  # the `namespace:value` lines it covers
    coverage_hash: str
    state: str  # the device's state under the policy afterwards
    outcome: str  # applied | repeated (the same statement again) | stale (a newer one stands)

    def as_json(self) -> dict[str, Any]:
        """The answer of `attest --json` and `POST /v1/attestations`."""
        return {
            "device": self.device_id,
            "policy": self.policy_id,
            "version": self.version,
            "at": iso(self.at),
            "identifiers": list(self.identifiers),
            "coverage_hash": self.coverage_hash,
            "state": self.state,
            "outcome": self.outcome,
        }


def attester(uow: UnitOfWork) -> Person:
    """The person speaking: the unit of work's actor, who must be an active person."""
    if not uow.actor:
        raise PermissionDenied("name who is attesting with --as EMAIL (yourself)")
    person = find_person(uow, uow.actor)
    if person is None or person.status != PersonStatus.ACTIVE:
        raise PermissionDenied(f"{uow.actor} is not an active person here")
    return person


def _not_yours(reference: str) -> NotFound:
    return NotFound(f"no device {reference[:80]!r} of yours")


def own_device(uow: UnitOfWork, person: Person, reference: str) -> Device:
    """A DEVICE argument (`namespace:value`, a bare identifier, or the portal's device number)
    among the person's own devices; anyone else's is not found, in the same words."""
    reference = reference.strip()[:MAX_REFERENCE_CHARS]
    if not reference:
        raise InvalidInput("name the device")
    namespace, sep, value = reference.partition(":")
    if sep and namespace in DeviceNamespace.__members__.values():
        wanted = select(DeviceIdentifier.device_id).where(
            DeviceIdentifier.namespace == namespace,
            DeviceIdentifier.value == normalise(namespace, value),
        )
    else:
        wanted = select(DeviceIdentifier.device_id).where(
            DeviceIdentifier.value.in_({reference, reference.upper()})
        )
    ids = set(uow.session.scalars(wanted))
    if reference.isdecimal() and len(reference) <= 18:
        ids.add(int(reference))
    devices = uow.session.scalars(
        select(Device).where(
            one_of(Device.id, ids),
            Device.owner_id == person.id,
            Device.status == DeviceStatus.ACTIVE,
        )
    ).all()
    if not devices:
        raise _not_yours(reference)
    if len(devices) > 1:
        numbers = ", ".join(str(d.id) for d in sorted(devices, key=lambda d: d.id))
        raise Ambiguous(f"{reference!r} names several of your devices: {numbers}")
    return devices[0]


def _version_in_effect(uow: UnitOfWork, policy_id: str) -> PolicyVersion:
    version = next((v for v in effective_versions(uow, uow.now) if v.policy_id == policy_id), None)
    if version is None:
        raise NotFound(f"no policy {policy_id[:64]!r} is in effect")
    return version


def attested_lines(uow: UnitOfWork, version: PolicyVersion, platform: str) -> list[tuple[str, str]]:
    """The version's resolved identifier lines the platform can carry: what a statement covers."""
    rows = uow.session.execute(
        select(PolicyIdentifier.namespace, PolicyIdentifier.value).where(
            PolicyIdentifier.version_id == version.id
        )
    )
    return sorted((ns, value) for ns, value in rows if platform_carries(platform, ns))


def attest(uow: UnitOfWork, reference: str, policy_id: str) -> Attested:
    """The actor confirms that `policy_id`'s apps are not on their device `reference`."""
    person = attester(uow)
    device = own_device(uow, person, reference)
    return confirm_removal(uow, person, device, policy_id)


def confirm_removal(uow: UnitOfWork, person: Person, device: Device, policy_id: str) -> Attested:
    """Store the person's statement for their own device (checked again here), or refuse:
    a policy not in effect, one that does not accept attestation, one that asks nothing of the
    device, a device a report shows the app on."""
    if device.owner_id != person.id or device.status != DeviceStatus.ACTIVE:
        raise _not_yours(str(device.id))
    version = _version_in_effect(uow, policy_id)
    if EvidenceKind.ATTESTATION not in version.evidence:
        raise InvalidInput(
            f"the policy {policy_id} does not accept your confirmation (its evidence is "
            f"{', '.join(version.evidence)}): run the check app or the agent, or ask for an "
            "exemption"
        )
    before = _state_of(uow, device, version)
    if before == ComplianceState.NOT_APPLICABLE:
        raise InvalidInput(f"the policy {policy_id} asks nothing of this device")
    if before in (ComplianceState.ACTION_REQUIRED, ComplianceState.NON_COMPLIANT):
        # What a report saw is not undone by a statement: the next report shows the removal.
        raise InvalidInput(
            "a report of this device shows the app: remove it, and the device's next report "
            "shows that it is gone"
        )
    lines = attested_lines(uow, version, device.platform)
    if not lines:
        raise InvalidInput(f"this device cannot carry any app the policy {policy_id} names")
    report = ReportFacts(
        device=DeviceFacts(identifiers=()),
        source=ATTESTATION_SOURCE,
        evidence_kind=EvidenceKind.ATTESTATION,
        observed_at=uow.now,
        checked=tuple(lines),
    )
    outcome = apply_report(uow, device, report)
    reevaluate_device(uow, device)
    after = _state_of(uow, device, version)
    identifiers = tuple(f"{ns}:{value}" for ns, value in lines)
    digest = coverage_hash(lines)
    record(
        uow,
        action="device.attest",
        object_type="device",
        object_id=str(device.id),
        before={"policy": policy_id, "version": version.number, "state": before},
        after={
            "policy": policy_id,
            "version": version.number,
            "state": after,
            "coverage_hash": digest,
            "identifiers": list(identifiers),
        },
    )
    return Attested(
        device_id=device.id,
        policy_id=policy_id,
        version=version.number,
        at=uow.now,
        identifiers=identifiers,
        coverage_hash=digest,
        state=after,
        outcome=str(outcome),
    )


def _state_of(uow: UnitOfWork, device: Device, version: PolicyVersion) -> str:
    outcome = next(
        (o for o in evaluate_device(uow, device, uow.now) if o.version.id == version.id), None
    )
    return str(ComplianceState.NOT_APPLICABLE if outcome is None else outcome.evaluation.state)
