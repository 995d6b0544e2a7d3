"""The desktop agent and targeted checks (docs/targeted-check.md): enrolment codes, enrolment,
the agent's own inventory reports, manifests and answers. One transaction per call, owned by the
caller.

Every refusal raises before anything is written, so a wrong key, a replay, an older time,
another policy's manifest or an edited one changes no table. An accepted answer is an ordinary
`targeted_check` report that goes through `ingest` like any other, so the device is re-evaluated
and its gate decisions updated in the same transaction (read-your-writes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from appwarden.audit.service import record
from appwarden.db.uow import UnitOfWork
from appwarden.devices import signing
from appwarden.devices.agents import AGENT_SOURCE as AGENT_SOURCE  # the routes' writer source
from appwarden.devices.agents import (
    MANIFEST_LIFETIME,
    agent_by_id,
    enrol_agent,
    manifest_by_nonce,
    new_code,
    new_nonce,
    record_manifest,
    spend_code,
)
from appwarden.devices.models import AgentKey, CheckManifest, Device
from appwarden.devices.schemas import AppSeen, DeviceFacts, InventoryBatch, ReportFacts
from appwarden.devices.service import clean_identifiers, device_identifiers, find_device
from appwarden.errors import Conflict, InvalidInput, NotFound, PermissionDenied, Problem
from appwarden.identity.service import require
from appwarden.policies.service import identifiers_of, live_version
from appwarden.timeutil import iso, parse_instant
from appwarden.usecases.checks import manifest_lines
from appwarden.usecases.ingest import IngestResult, Writer, ingest
from appwarden.vocabulary import DeviceNamespace, EvidenceKind, Permission

log = logging.getLogger("appwarden.agent")

# How far a signed time may be from the server's clock.
SIGNATURE_WINDOW: Final = timedelta(minutes=5)
ANSWER_KEYS: Final = frozenset({"policy", "manifest_hash", "device_id", "nonce", "at", "present"})


@dataclass(frozen=True, slots=True)
class AgentOptions:
    """What the routes take from the settings."""

    secret: bytes  # APPWARDEN_AGENT_SECRET
    writer: Writer
    minimise_personal: bool = True


class SignatureRefused(PermissionDenied):
    """A signature or MAC that does not verify, a replay, or a time outside the window."""


def _refuse(message: str, where: str = "$") -> SignatureRefused:
    log.warning("agent request refused: %s", message)
    return SignatureRefused(message, problems=[Problem(where, message)])


# ── enrolment codes ─────────────────────────────────────────────────────────────────────────


def create_code(uow: UnitOfWork, device: Device, *, created_by: str) -> dict[str, Any]:
    """A one-time enrolment code bound to this device, audited (never the code itself)."""
    code, row = new_code(uow, device, created_by)
    record(
        uow,
        action="agent.code",
        object_type="device",
        object_id=str(device.id),
        after={"created_by": created_by, "expires_at": iso(row.expires_at)},
    )
    return {"device_id": device.id, "code": code, "expires_at": iso(row.expires_at)}


def admin_code(uow: UnitOfWork, device_ref: str) -> dict[str, Any]:
    """A code made by a named admin or automation (`appwarden agent code`): needs
    `inventory:write`, for any device."""
    person = require(uow, Permission.INVENTORY_WRITE)
    return create_code(uow, find_device(uow, device_ref), created_by=f"person:{person.id}")


def token_code(uow: UnitOfWork, device_ref: str, token_id: int) -> dict[str, Any]:
    """A code made through `POST /v1/agent/codes` (the route checked `inventory:write`)."""
    return create_code(uow, find_device(uow, device_ref), created_by=f"token:{token_id}")


def enroll(uow: UnitOfWork, body: Any, options: AgentOptions) -> dict[str, Any]:
    """Exchange a code for an agent id and its key (returned once, never stored)."""
    code = body.get("code") if isinstance(body, dict) else None
    if not isinstance(code, str):
        raise InvalidInput('expected {"code": "..."}', problems=[Problem("$.code", "missing")])
    row = spend_code(uow, code)
    if row is None:
        raise _refuse("the enrolment code is unknown, already used or expired", "$.code")
    agent = enrol_agent(uow, row.device_id)
    key = signing.derive_key(options.secret, agent.agent_id)
    record(uow, action="agent.enroll", object_type="device", object_id=str(row.device_id))
    return {"agent_id": agent.agent_id, "device_key": key.hex(), "device_id": row.device_id}


# ── signed requests ─────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """The parts of an HTTP request a signature covers, and its three headers."""

    method: str
    path: str  # with its query string, as sent
    body: bytes
    agent_id: str | None
    timestamp: str | None
    signature: str | None


def _signed_time(text: object, now: datetime, where: str) -> datetime:
    if not isinstance(text, str):
        raise _refuse("the signed time is missing", where)
    try:
        at = parse_instant(text)
    except ValueError as exc:
        raise _refuse(f"the signed time cannot be read: {exc}", where) from None
    if abs(at - now) > SIGNATURE_WINDOW:
        raise _refuse(
            f"the signed time {iso(at)} is more than {SIGNATURE_WINDOW} from the server's "
            f"{iso(now)}: check the device's clock",
            where,
        )
    return at


def authenticate(uow: UnitOfWork, request: SignedRequest, options: AgentOptions) -> AgentKey:
    """The agent that signed this request; refused unless the signature verifies under its key
    and the signed time is within the window."""
    agent = agent_by_id(uow, request.agent_id)
    _signed_time(request.timestamp, uow.now, "header:x-appwarden-timestamp")
    assert request.timestamp is not None
    if agent is None:
        raise _refuse("unknown agent", "header:x-appwarden-agent")
    key = signing.derive_key(options.secret, agent.agent_id)
    expected = signing.request_mac(
        key, request.method, request.path, request.timestamp, request.body
    )
    if not signing.same_mac(expected, request.signature):
        raise _refuse("the request signature does not verify", "header:x-appwarden-signature")
    return agent


def _device_of(uow: UnitOfWork, agent: AgentKey) -> Device:
    device = uow.session.get(Device, agent.device_id)
    assert device is not None  # the agent's row goes with its device (ON DELETE CASCADE)
    return device


def _own(agent: AgentKey) -> DeviceFacts:
    return DeviceFacts(identifiers=((DeviceNamespace.AGENT_ID.value, agent.agent_id),))


def _ingest(uow: UnitOfWork, report: ReportFacts, options: AgentOptions) -> IngestResult:
    batch = InventoryBatch(source=AGENT_SOURCE, reports=(report,))
    result = ingest(uow, batch, minimise_personal=options.minimise_personal, writer=options.writer)
    if result.skipped or result.quarantined:
        problems = [Problem("$", line) for line in [*result.skipped, *result.quarantined]]
        raise InvalidInput("the report was not applied; nothing changed", problems=problems)
    return result


# ── the agent's own inventory ───────────────────────────────────────────────────────────────


def receive_report(
    uow: UnitOfWork, agent: AgentKey, batch: InventoryBatch, options: AgentOptions
) -> dict[str, Any]:
    """A native full inventory of the agent's own device: exactly one report, no people, and
    every device identifier in it the agent's own or already its device's; anything else is
    refused and changes nothing. Only the report's apps, coverage and time are taken: the device's
    facts (owner, platform, ...) stay with its MDM of record."""
    if batch.people or batch.devices or len(batch.reports) != 1:
        raise _refuse("an agent sends exactly one report, about its own device, and no people")
    (report,) = batch.reports
    if report.evidence_kind != EvidenceKind.INVENTORY:
        # A targeted check's coverage is what the server asked (/checks/*), never what the
        # device chose to answer for.
        raise InvalidInput(
            f"an agent reports evidence inventory, not {report.evidence_kind}; targeted checks "
            "answer a manifest at /checks/answer",
            problems=[Problem(report.where or "$", "expected evidence_kind inventory")],
        )
    device = _device_of(uow, agent)
    known = set(device_identifiers(uow, [device.id]).get(device.id, []))
    for pair in clean_identifiers(report.device):
        if f"{pair[0]}:{pair[1]}" not in known:
            raise _refuse(
                f"{pair[0]}:{pair[1]} is not an identifier of this agent's device; "
                "an agent writes only its own device",
                report.where or "$",
            )
    mine = ReportFacts(
        device=_own(agent),
        source=AGENT_SOURCE,
        evidence_kind=report.evidence_kind,
        observed_at=min(report.observed_at, uow.now) if report.observed_at else None,
        apps=report.apps,
        coverage=report.coverage,
        checked=report.checked,
    )
    result = _ingest(uow, mine, options)
    return {"device_id": device.id, "reports_applied": result.reports_applied}


# ── targeted checks ─────────────────────────────────────────────────────────────────────────


def issue_manifest(
    uow: UnitOfWork, agent: AgentKey, policy_id: str, options: AgentOptions
) -> dict[str, Any]:
    """The manifest for the policy's version in effect: the identifier lines the device's
    platform can answer for, nothing else; MAC'd with the agent's key and remembered by nonce."""
    version = live_version(uow, policy_id, uow.now)
    if version is None:
        raise NotFound(f"no version of policy {policy_id!r} is in effect")
    device = _device_of(uow, agent)
    lines = manifest_lines(identifiers_of(uow, version.id), device.platform)
    if not lines:
        raise Conflict(
            f"policy {policy_id!r} names nothing a device on {device.platform} can be asked about: "
            "there is no check to answer"
        )
    nonce = new_nonce()
    manifest: dict[str, Any] = {
        "policy": policy_id,
        "version": version.number,
        "identifiers": lines,
        "nonce": nonce,
        "issued_at": iso(uow.now),
        "device_id": agent.agent_id,
    }
    key = signing.derive_key(options.secret, agent.agent_id)
    record_manifest(
        uow,
        agent,
        policy_id=policy_id,
        version=version.number,
        identifiers=lines,
        nonce=nonce,
        manifest_hash=signing.manifest_hash(manifest),
    )
    return {"manifest": manifest, "mac": signing.manifest_mac(key, manifest)}


def _answer_fields(body: Any) -> tuple[dict[str, Any], object]:
    if not isinstance(body, dict) or set(body) != {"answer", "mac"}:
        raise InvalidInput(
            'expected {"answer": {...}, "mac": "..."}',
            problems=[Problem("$", "expected an object with answer and mac")],
        )
    answer = body["answer"]
    if not isinstance(answer, dict) or set(answer) != ANSWER_KEYS:
        raise InvalidInput(
            "an answer has exactly: " + ", ".join(sorted(ANSWER_KEYS)),
            problems=[Problem("$.answer", "expected " + ", ".join(sorted(ANSWER_KEYS)))],
        )
    present = answer["present"]
    if not isinstance(present, list) or not all(isinstance(p, str) for p in present):
        raise InvalidInput(
            "present must be a list of identifier lines",
            problems=[Problem("$.answer.present", "expected a list of strings")],
        )
    return answer, body["mac"]


def _check_manifest(
    answer: dict[str, Any], manifest: CheckManifest | None, agent: AgentKey, now: datetime
) -> CheckManifest:
    """The answer names a live manifest issued to this agent, for the policy it says, unedited."""
    if manifest is None or manifest.agent_id != agent.agent_id:
        raise _refuse("no manifest with this nonce was issued to this device", "$.answer.nonce")
    if manifest.answered_at is not None:
        raise _refuse("this manifest was already answered (a replay)", "$.answer.nonce")
    if manifest.issued_at + MANIFEST_LIFETIME <= now:
        raise _refuse("this manifest expired: ask for a new one", "$.answer.nonce")
    if answer["policy"] != manifest.policy_id:
        raise _refuse(
            f"the nonce belongs to a manifest of policy {manifest.policy_id!r}, "
            f"not {answer['policy']!r}",
            "$.answer.policy",
        )
    if not signing.same_mac(manifest.manifest_hash, answer["manifest_hash"]):
        raise _refuse(
            "manifest_hash is not the hash of the manifest issued with this nonce "
            "(edited, or another manifest)",
            "$.answer.manifest_hash",
        )
    return manifest


def receive_answer(uow: UnitOfWork, body: Any, options: AgentOptions) -> dict[str, Any]:
    """Verify an answer and store it as a `targeted_check` report whose coverage is exactly the
    manifest's identifiers and whose observations are the present ones."""
    answer, mac = _answer_fields(body)
    agent = agent_by_id(uow, answer["device_id"])
    if agent is None:
        raise _refuse("unknown device", "$.answer.device_id")
    key = signing.derive_key(options.secret, agent.agent_id)
    if not signing.same_mac(signing.answer_mac(key, answer), mac):
        raise _refuse("the answer's MAC does not verify under this device's key", "$.mac")
    manifest = _check_manifest(answer, manifest_by_nonce(uow, answer["nonce"]), agent, uow.now)
    at = _signed_time(answer["at"], uow.now, "$.answer.at")
    # A device that signs whole seconds may answer in the second its manifest was issued.
    issued = manifest.issued_at.replace(microsecond=0)
    if at < issued or (agent.last_signed_at is not None and at <= agent.last_signed_at):
        raise _refuse(
            "the answer's time is older than the device's last answer or its manifest",
            "$.answer.at",
        )
    asked = set(manifest.identifiers)
    unasked = sorted(set(answer["present"]) - asked)
    if unasked:
        raise _refuse(f"not in the manifest: {', '.join(unasked)}", "$.answer.present")
    manifest.answered_at, agent.last_signed_at = uow.now, at
    report = ReportFacts(
        device=_own(agent),
        source=AGENT_SOURCE,
        evidence_kind=EvidenceKind.TARGETED_CHECK,
        observed_at=min(at, uow.now),
        apps=tuple(AppSeen(*_split(line)) for line in sorted(set(answer["present"]))),
        checked=tuple(_split(line) for line in manifest.identifiers),
    )
    result = _ingest(uow, report, options)
    return {
        "accepted": True,
        "device_id": agent.device_id,
        "policy": manifest.policy_id,
        "version": manifest.version,
        "present": sorted(set(answer["present"])),
        "decision_changes": len(result.decision_changes),
    }


def _split(line: str) -> tuple[str, str]:
    namespace, _, value = line.partition(":")
    return namespace, value
