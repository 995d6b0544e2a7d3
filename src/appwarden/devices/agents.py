"""Enrolment codes, enrolled agents and the targeted-check manifests handed to them
(docs/targeted-check.md). Codes are stored as SHA-256 only; agents' keys are not stored at all
(devices.signing derives them). Flushes, never commits."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Final

from sqlalchemy import delete, select

from appwarden.db.uow import UnitOfWork
from appwarden.devices.models import (
    AgentEnrolmentCode,
    AgentKey,
    CheckManifest,
    Device,
    DeviceIdentifier,
)
from appwarden.vocabulary import DeviceNamespace

CODE_LIFETIME: Final = timedelta(minutes=15)
# A manifest not answered within this time is refused (the agent asks for a new one).
MANIFEST_LIFETIME: Final = timedelta(hours=1)
# Spent and expired manifests are forgotten after this (long enough to tell a replay apart).
MANIFEST_MEMORY: Final = timedelta(days=2)
AGENT_SOURCE: Final = "agent"
CODE_ALPHABET: Final = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud, typed
CODE_LENGTH: Final = 16  # 80 bits


def _hash(code: str) -> str:
    return hashlib.sha256(normalise_code(code).encode()).hexdigest()


def normalise_code(code: str) -> str:
    """Upper case without the dashes and spaces a person may type."""
    return "".join(c for c in code.upper() if c not in "- ")


def new_code(uow: UnitOfWork, device: Device, created_by: str) -> tuple[str, AgentEnrolmentCode]:
    """A one-time code for this device (returned once; only its hash is stored)."""
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    code = "-".join(raw[i : i + 4] for i in range(0, CODE_LENGTH, 4))
    row = AgentEnrolmentCode(
        code_hash=_hash(code),
        device_id=device.id,
        created_by=created_by,
        created_at=uow.now,
        expires_at=uow.now + CODE_LIFETIME,
    )
    uow.session.add(row)
    uow.session.flush()
    return code, row


def spend_code(uow: UnitOfWork, code: str) -> AgentEnrolmentCode | None:
    """The live code with this value, marked used; None when unknown, used or expired."""
    if not 0 < len(code) <= 64:
        return None
    row = uow.session.get(AgentEnrolmentCode, _hash(code))
    if row is None or row.used_at is not None or row.expires_at <= uow.now:
        return None
    row.used_at = uow.now
    return row


def enrol_agent(uow: UnitOfWork, device_id: int) -> AgentKey:
    """A new agent bound to the device: its id becomes the device's `agent_id` identifier."""
    agent_id = "ag_" + secrets.token_hex(16)
    agent = AgentKey(agent_id=agent_id, device_id=device_id, enrolled_at=uow.now)
    uow.session.add(agent)
    uow.session.add(
        DeviceIdentifier(
            device_id=device_id,
            namespace=DeviceNamespace.AGENT_ID.value,
            value=agent_id,
            source=AGENT_SOURCE,
            first_seen_at=uow.now,
            last_seen_at=uow.now,
        )
    )
    uow.session.flush()
    return agent


def agent_by_id(uow: UnitOfWork, agent_id: object) -> AgentKey | None:
    if not isinstance(agent_id, str) or not 0 < len(agent_id) <= 64:
        return None
    return uow.session.get(AgentKey, agent_id)


def record_manifest(
    uow: UnitOfWork,
    agent: AgentKey,
    *,
    policy_id: str,
    version: int,
    identifiers: list[str],
    nonce: str,
    manifest_hash: str,
) -> None:
    uow.session.execute(
        delete(CheckManifest).where(CheckManifest.issued_at < uow.now - MANIFEST_MEMORY)
    )
    uow.session.add(
        CheckManifest(
            nonce=nonce,
            agent_id=agent.agent_id,
            policy_id=policy_id,
            version=version,
            manifest_hash=manifest_hash,
            identifiers=identifiers,
            issued_at=uow.now,
        )
    )
    uow.session.flush()


def manifest_by_nonce(uow: UnitOfWork, nonce: object) -> CheckManifest | None:
    if not isinstance(nonce, str) or not 0 < len(nonce) <= 64:
        return None
    return uow.session.scalar(select(CheckManifest).where(CheckManifest.nonce == nonce))


def new_nonce() -> str:
    return secrets.token_hex(16)
