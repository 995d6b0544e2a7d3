from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from appwarden.db.base import Base


class ComplianceRecord(Base):
    """The materialised state of (policy version, device). Only in-scope states are stored:
    `not_applicable` is computed."""

    __tablename__ = "compliance_state"
    __table_args__ = (Index("ix_compliance_state_due", "due_at"),)

    version_id: Mapped[int] = mapped_column(
        ForeignKey("policy_version.id", ondelete="CASCADE"), primary_key=True
    )
    # Indexed on its own: a report reads its device's states by device, which the primary
    # key (version first) can only answer by scanning every device's.
    device_id: Mapped[int] = mapped_column(
        ForeignKey("device.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    state: Mapped[str] = mapped_column(String(16))
    since: Mapped[datetime]
    due_at: Mapped[datetime | None]
    reasons: Mapped[list[Any]] = mapped_column(JSON)


class ComplianceCount(Base):
    """How many devices were in each compliance state of a policy's version at an instant: the
    history the console's chart draws. The worker writes a row per counted state every hour and
    at every release or retraction; nothing is backfilled (docs/console.md)."""

    __tablename__ = "compliance_counts"
    __table_args__ = (Index("ix_compliance_counts_at", "at"),)

    policy_id: Mapped[str] = mapped_column(
        ForeignKey("policy.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(primary_key=True)
    state: Mapped[str] = mapped_column(String(16), primary_key=True)
    n: Mapped[int]
