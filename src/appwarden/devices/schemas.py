"""The neutral shape every inventory source is converted to before it touches the store.

Sources (native JSON, CSV, osquery, Fleet, Intune, ...) parse their own payloads into these frozen
records; `usecases.ingest` stores them. Values here are already validated against the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from appwarden.identity.schemas import PersonFacts
from appwarden.vocabulary import (
    DeviceStatus,
    EvidenceKind,
    FormFactor,
    Ownership,
    Platform,
)


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """What a source says about a device. `identifiers` are (namespace, value) pairs."""

    identifiers: tuple[tuple[str, str], ...]
    platform: Platform | None = None
    form_factor: FormFactor | None = None
    ownership: Ownership | None = None
    owner_email: str | None = None
    resources: tuple[str, ...] | None = None  # None: leave as they are
    name: str | None = None
    status: DeviceStatus | None = None


@dataclass(frozen=True, slots=True)
class AppSeen:
    namespace: str
    value: str
    version: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ReportFacts:
    """One delivery of facts about one device from one source.

    `coverage` is the set of app namespaces the report lists completely; None means "the default for
    the evidence kind and platform" (a native full inventory covers every app namespace of its
    platform; `managed_only` and `none` prove nothing absent). For `targeted_check` and
    `attestation`, `checked` lists the identifiers the device answered for: those are its coverage.
    """

    device: DeviceFacts
    source: str
    evidence_kind: EvidenceKind
    observed_at: datetime | None
    apps: tuple[AppSeen, ...] = ()
    coverage: tuple[str, ...] | None = None
    checked: tuple[tuple[str, str], ...] = ()
    where: str = ""  # where in the input this report came from, for error messages


@dataclass(frozen=True, slots=True)
class InventoryBatch:
    """`source` is the top-level source: the one people and device entries are written as."""

    source: str | None = None
    people: tuple[PersonFacts, ...] = ()
    devices: tuple[DeviceFacts, ...] = ()
    reports: tuple[ReportFacts, ...] = ()
    skipped: tuple[str, ...] = field(default=())  # located problems of records that were skipped


__all__ = ["AppSeen", "DeviceFacts", "InventoryBatch", "PersonFacts", "ReportFacts"]
