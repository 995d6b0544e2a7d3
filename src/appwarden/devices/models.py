from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from appwarden.db.base import Base


class Device(Base):
    __tablename__ = "device"
    # Devices per MDM of record, read by every scrape of /metrics (appwarden_source_devices).
    __table_args__ = (Index("ix_device_mdm_source", "mdm_source", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(16), default="unknown")
    form_factor: Mapped[str] = mapped_column(String(16), default="unknown")
    ownership: Mapped[str] = mapped_column(String(16), default="unknown")
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("person.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(1000))
    status: Mapped[str] = mapped_column(String(16), default="active")
    retired_at: Mapped[datetime | None]
    first_report_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    # The MDM of record: the source that first reported the device, authoritative by default.
    mdm_source: Mapped[str | None] = mapped_column(String(64))
    # An address a source named as owner outside the organisation's domains: listed for admins.
    unmatched_owner: Mapped[str | None] = mapped_column(String(254))
    # A mail partnership no identifier joins to a device: it announces nobody until an admin
    # merges it into its device (`appwarden devices merge`) or this time passes.
    join_pending_until: Mapped[datetime | None]


class DeviceOwnerHistory(Base):
    __tablename__ = "device_owner_history"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("device.id", ondelete="CASCADE"), index=True)
    person_id: Mapped[int | None] = mapped_column(ForeignKey("person.id"))
    since: Mapped[datetime]


class DeviceResource(Base):
    __tablename__ = "device_resource"

    device_id: Mapped[int] = mapped_column(
        ForeignKey("device.id", ondelete="CASCADE"), primary_key=True
    )
    resource: Mapped[str] = mapped_column(String(64), primary_key=True)


class DeviceIdentifier(Base):
    __tablename__ = "device_identifier"
    __table_args__ = (UniqueConstraint("namespace", "value"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("device.id", ondelete="CASCADE"), index=True)
    namespace: Mapped[str] = mapped_column(String(32))
    value: Mapped[str] = mapped_column(String(512), index=True)
    source: Mapped[str] = mapped_column(String(64))
    first_seen_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]


class Quarantine(Base):
    """A report whose identifiers point at two or more devices: merged nowhere, shown to admins."""

    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime]
    identifiers: Mapped[list[Any]] = mapped_column(JSON, default=list)
    candidate_device_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    reason: Mapped[str] = mapped_column(String(1000))
    resolved_at: Mapped[datetime | None]


class Report(Base):
    __tablename__ = "report"
    __table_args__ = (Index("ix_report_device_source", "device_id", "source", "evidence_kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("device.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(64))
    evidence_kind: Mapped[str] = mapped_column(String(16))
    observed_at: Mapped[datetime]
    received_at: Mapped[datetime]
    coverage_namespaces: Mapped[list[Any]] = mapped_column(JSON)
    coverage_hash: Mapped[str | None] = mapped_column(String(64))
    app_count: Mapped[int] = mapped_column(default=0)
    applied: Mapped[bool] = mapped_column(default=True)  # False: older than what is stored
    token_id: Mapped[int | None] = mapped_column(ForeignKey("api_token.id"))  # None: CLI import


class Coverage(Base):
    """The latest moment each feed (source, evidence kind) listed a namespace completely for a
    device, or answered for one identifier (`value` non-empty: targeted check, attestation)."""

    __tablename__ = "coverage"

    device_id: Mapped[int] = mapped_column(
        ForeignKey("device.id", ondelete="CASCADE"), primary_key=True
    )
    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    evidence_kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    namespace: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(512), primary_key=True, default="")
    observed_at: Mapped[datetime]
    report_id: Mapped[int] = mapped_column(ForeignKey("report.id", ondelete="CASCADE"), index=True)


class Observation(Base):
    """One app (or other identifier) a source saw on a device.

    Every report rewrites its rows' `last_seen_at` (no index holds it). On PostgreSQL the table
    keeps half of each page free (`fillfactor = 50`, set by migration b7c3e9d1f2a6), so the new
    row versions are written in place ("HOT") without touching the three indexes: a
    re-import's update goes about four times as fast, and the table stays about the size one
    rewrite would grow it to anyway. The option lives in the migration alone: a
    `postgresql_with` table argument here would load SQLAlchemy's PostgreSQL dialect in every
    process that imports the models, a SQLite command line's included."""

    __tablename__ = "observation"
    __table_args__ = (
        UniqueConstraint("device_id", "source", "evidence_kind", "namespace", "value"),
        Index("ix_observation_match", "namespace", "value"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("device.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(64))
    evidence_kind: Mapped[str] = mapped_column(String(16))
    namespace: Mapped[str] = mapped_column(String(32))
    value: Mapped[str] = mapped_column(String(512))  # the catalog match key
    raw_value: Mapped[str] = mapped_column(String(512))
    version: Mapped[str | None] = mapped_column(String(200))
    name: Mapped[str | None] = mapped_column(String(1000))
    first_seen_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]


class FactConflict(Base):
    """A value for a fact offered by a source that is not authoritative for it: held, changing
    nothing, until an admin accepts (applies) or rejects (discards) it."""

    __tablename__ = "fact_conflict"
    __table_args__ = (Index("ix_fact_conflict_open", "status", "fact"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    fact: Mapped[str] = mapped_column(String(32))
    device_id: Mapped[int | None] = mapped_column(
        ForeignKey("device.id", ondelete="CASCADE"), index=True
    )
    person_id: Mapped[int | None] = mapped_column(
        ForeignKey("person.id", ondelete="CASCADE"), index=True
    )
    stored_value: Mapped[Any] = mapped_column(JSON, nullable=True)
    offered_value: Mapped[Any] = mapped_column(JSON, nullable=True)
    source: Mapped[str] = mapped_column(String(64))
    token_id: Mapped[int | None] = mapped_column(ForeignKey("api_token.id"))
    first_offered_at: Mapped[datetime]
    last_offered_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16), default="open")
    resolution: Mapped[str | None] = mapped_column(String(16))  # accepted / rejected
    settled_at: Mapped[datetime | None]
    settled_by: Mapped[str | None] = mapped_column(String(254))


class SourceRun(Base):
    """One sync of one source (`appwarden sync`, or the worker on its schedule). `complete` only
    when every page was fetched and read without error: only complete runs may retire devices by
    their absence, and a source's health is the age of its last complete run."""

    __tablename__ = "source_run"
    __table_args__ = (Index("ix_source_run_source_started", "source", "started_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    complete: Mapped[bool] = mapped_column(default=False)
    pages: Mapped[int] = mapped_column(default=0)
    reports: Mapped[int] = mapped_column(default=0)
    devices: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)  # what stopped it, secrets never included
    runner: Mapped[str | None] = mapped_column(String(200))  # which process ran it


# ── push sources: what osquery hosts and an MDM server's webhook leave between requests ────────


class OsqueryNode(Base):
    """An osquery host enrolled with the enroll secret (docs/sources/osquery.md). Its node key is
    stored as a SHA-256 only; the key is bound to the host UUID osquery reported at enrolment,
    which names the host in everything the node sends. Re-enrolling the same host replaces the
    key (the old one is refused from then on)."""

    __tablename__ = "osquery_node"

    id: Mapped[int] = mapped_column(primary_key=True)
    node_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    host_uuid: Mapped[str] = mapped_column(String(512), unique=True)
    host_identifier: Mapped[str | None] = mapped_column(String(1000))
    platform: Mapped[str | None] = mapped_column(String(64))  # os_version.platform at enrolment
    enrolled_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]


class OsqueryChain(Base):
    """What one scheduled query of a node is known to return, carried from one logger request to
    the next: its differential position (epoch, counter, the run's time), whether an unbroken
    chain since a full result stands behind it (`complete`), and the rows known present. A new
    epoch replaces the row: only the current epoch's state matters."""

    __tablename__ = "osquery_chain"

    node_id: Mapped[int] = mapped_column(
        ForeignKey("osquery_node.id", ondelete="CASCADE"), primary_key=True
    )
    query_name: Mapped[str] = mapped_column(String(512), primary_key=True)
    table_name: Mapped[str | None] = mapped_column(String(32))
    snapshot: Mapped[bool] = mapped_column(default=False)
    epoch: Mapped[int | None]
    counter: Mapped[int | None]
    run_at: Mapped[datetime | None]  # the unixTime of the last run applied
    complete: Mapped[bool] = mapped_column(default=False)
    rows: Mapped[list[Any]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime]


class OsqueryQuery(Base):
    """An ad-hoc (distributed) query for one node: queued, handed out by distributed/read,
    answered by distributed/write (its SQLite status: 0 is success)."""

    __tablename__ = "osquery_query"
    __table_args__ = (UniqueConstraint("node_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    node_id: Mapped[int] = mapped_column(
        ForeignKey("osquery_node.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    sql: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    answered_at: Mapped[datetime | None]
    status: Mapped[int | None]


class MdmEvent(Base):
    """A webhook event already applied: its `event_id` (or, when the server sends none, a digest
    of the envelope), so a delivery repeated changes nothing."""

    __tablename__ = "mdm_event"

    event_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(index=True)


class MdmCommand(Base):
    """A command the MDM server was asked to send, registered so that the answer (which the
    webhook carries without its question) is read as what was asked: `Identifiers` (a targeted
    check) or `ManagedAppsOnly` (managed apps only)."""

    __tablename__ = "mdm_command"

    command_uuid: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_type: Mapped[str | None] = mapped_column(String(100))
    identifiers: Mapped[list[Any]] = mapped_column(JSON, default=list)
    managed_only: Mapped[bool] = mapped_column(default=False)
    received_at: Mapped[datetime] = mapped_column(index=True)


class DeviceSource(Base):
    """Which sync runs of a source listed a device: the latest run that listed it, and the
    latest *complete* run that did (promoted when that run completes). A device is retired by
    absence when the last 3 complete runs of its MDM of record all came after the last complete
    run that listed it (usecases/sync.py). File imports never write here: they retire nothing by
    absence. Run ids are plain numbers, not foreign keys: pruning old runs must not be blocked."""

    __tablename__ = "device_source"
    __table_args__ = (Index("ix_device_source_listed", "source", "listed_run_id"),)

    device_id: Mapped[int] = mapped_column(
        ForeignKey("device.id", ondelete="CASCADE"), primary_key=True
    )
    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    listed_run_id: Mapped[int]
    last_seen_run_id: Mapped[int | None]
    last_seen_at: Mapped[datetime | None]


class SourceClaim(Base):
    """Who is syncing a source: one row per source, held by one process until `lease_until`
    (wall-clock time), renewed while its run goes on. Two workers never sync one source at once:
    a claim is taken only when none is held or the holder's lease ran out."""

    __tablename__ = "source_claim"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(200))
    claimed_at: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]


class AgentEnrolmentCode(Base):
    """A one-time code that binds the next agent (or check app) to enrol with it to one device
    record (docs/targeted-check.md, "Enrolment"). Stored as its SHA-256 only; it expires
    (15 minutes) and is spent by its first use."""

    __tablename__ = "agent_enrolment_code"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("device.id", ondelete="CASCADE"), index=True)
    created_by: Mapped[str] = mapped_column(String(300))  # `person:<id>` or `token:<id>`
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class AgentKey(Base):
    """An enrolled agent: its id (also the device's `agent_id` identifier) and the device it may
    write. Its key is never stored: it is HMAC(APPWARDEN_AGENT_SECRET, agent id), derived again
    on every request. `last_signed_at` is the latest signed time accepted from it, so an older
    one is refused."""

    __tablename__ = "agent_key"

    agent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("device.id", ondelete="CASCADE"), index=True)
    enrolled_at: Mapped[datetime]
    last_signed_at: Mapped[datetime | None]


class CheckManifest(Base):
    """A targeted-check manifest handed to an agent: its nonce, the policy version it asks for,
    the exact identifier lines and the SHA-256 of its canonical JSON. An answer must name both;
    answering spends the nonce."""

    __tablename__ = "check_manifest"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent_id: Mapped[str] = mapped_column(
        ForeignKey("agent_key.agent_id", ondelete="CASCADE"), index=True
    )
    policy_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[int]
    manifest_hash: Mapped[str] = mapped_column(String(64))
    identifiers: Mapped[list[Any]] = mapped_column(JSON, default=list)
    issued_at: Mapped[datetime]
    answered_at: Mapped[datetime | None]
