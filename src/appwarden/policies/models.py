from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from appwarden.db.base import Base


class Policy(Base):
    """A policy id. First-seen times, exemptions, notice history and the set of people told belong
    here, not to a version."""

    __tablename__ = "policy"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[datetime]


class PolicyVersion(Base):
    __tablename__ = "policy_version"
    __table_args__ = (
        UniqueConstraint("policy_id", "number"),
        Index("ix_policy_version_state", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    policy_id: Mapped[str] = mapped_column(ForeignKey("policy.id"), index=True)
    number: Mapped[int]
    state: Mapped[str] = mapped_column(String(16))
    document: Mapped[dict[str, Any]] = mapped_column(JSON)  # canonical form of the document
    source_text: Mapped[str] = mapped_column(Text)
    source_name: Mapped[str] = mapped_column(String(1000))
    content_hash: Mapped[str] = mapped_column(String(64))
    document_hash: Mapped[str] = mapped_column(String(64))
    author_id: Mapped[int | None] = mapped_column(ForeignKey("person.id"))
    created_at: Mapped[datetime]
    proposed_at: Mapped[datetime | None]
    approved_at: Mapped[datetime | None]
    published_at: Mapped[datetime | None]
    release_at: Mapped[datetime | None]
    short_notice: Mapped[bool] = mapped_column(Boolean, default=False)
    ended_at: Mapped[datetime | None]  # superseded, retracted or retired
    end_reason: Mapped[str | None] = mapped_column(Text)
    # Denormalised from the document so fleet evaluation can run as one SQL statement.
    deadline: Mapped[datetime]
    grace_seconds: Mapped[int]
    max_evidence_age_seconds: Mapped[int]
    unknown_deny: Mapped[bool] = mapped_column(Boolean)
    evidence: Mapped[list[Any]] = mapped_column(JSON)
    deny_resources: Mapped[list[Any]] = mapped_column(JSON)


class PolicyIdentifier(Base):
    """The resolved identifier set of a version (catalog apps expanded, plus explicit ones)."""

    __tablename__ = "policy_identifier"

    version_id: Mapped[int] = mapped_column(
        ForeignKey("policy_version.id", ondelete="CASCADE"), primary_key=True
    )
    namespace: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(512), primary_key=True)  # match key, may be a glob
    like_pattern: Mapped[str | None] = mapped_column(String(1100))  # set when value is a glob
    app_slug: Mapped[str | None] = mapped_column(String(64))
    # An apple_bundle_id an absent ios_url_scheme of its catalog entry proves absent (the entry's
    # `url_scheme_covers` opt-in): a targeted check on iOS asks for it with the entry's schemes.
    covered_by_scheme: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class PolicyApproval(Base):
    __tablename__ = "policy_approval"
    __table_args__ = (UniqueConstraint("version_id", "approver_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("policy_version.id"), index=True)
    approver_id: Mapped[int] = mapped_column(ForeignKey("person.id"))
    content_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    voided_at: Mapped[datetime | None]
    void_reason: Mapped[str | None] = mapped_column(Text)


class PolicyFirstSeen(Base):
    """When a violation of the policy was first seen on a device. Survives removals, so a
    reinstall never earns a new grace period."""

    __tablename__ = "policy_first_seen"

    policy_id: Mapped[str] = mapped_column(ForeignKey("policy.id"), primary_key=True)
    # Indexed on its own, as compliance_state's: a report reads its device's first sightings.
    device_id: Mapped[int] = mapped_column(
        ForeignKey("device.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    first_seen_at: Mapped[datetime]
