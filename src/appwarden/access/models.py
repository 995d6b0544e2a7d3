from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from appwarden.db.base import Base


class DecisionRecord(Base):
    """The materialised decision for (device, resource), so a gate's question costs a lookup."""

    __tablename__ = "decision"

    device_id: Mapped[int] = mapped_column(
        ForeignKey("device.id", ondelete="CASCADE"), primary_key=True
    )
    resource: Mapped[str] = mapped_column(String(64), primary_key=True)
    decision: Mapped[str] = mapped_column(String(8))
    reasons: Mapped[list[Any]] = mapped_column(JSON)
    valid_until: Mapped[datetime | None]
    # What the decision becomes at `valid_until` if no fact changes before then (a deadline, the
    # end of a grace period or an exemption): prepared when it is written, so that at a deadline
    # every affected device flips at once, in every process, without waiting for the worker to
    # re-evaluate each one. Any change to the device's facts rewrites the row, this included.
    next_decision: Mapped[str | None] = mapped_column(String(8))
    next_reasons: Mapped[list[Any] | None] = mapped_column(JSON)
    next_valid_until: Mapped[datetime | None]
    changed_at: Mapped[datetime]  # logical time the decision last flipped
    # Wall-clock time of the last write, so each process can refresh its in-memory copy (the
    # gate's answer when the store is down) with "what changed since I last looked".
    written_at: Mapped[datetime | None] = mapped_column(index=True)


class Breaker(Base):
    """The mass-lockout breaker of one policy (docs/architecture.md, rule 7, "the breaker
    rule"): whether it holds denies, and the in-scope count its bound is 5 % of."""

    __tablename__ = "breaker"

    policy_id: Mapped[str] = mapped_column(
        ForeignKey("policy.id", ondelete="CASCADE"), primary_key=True
    )
    # Since when it holds at least one deny (None: it holds nothing).
    opened_at: Mapped[datetime | None]
    # When a wave of denies passed the bound: from then on every new deny of the policy is held
    # until an admin releases them (None: not tripped).
    tripped_at: Mapped[datetime | None]
    in_scope: Mapped[int] = mapped_column(default=0)
    in_scope_at: Mapped[datetime | None]  # when `in_scope` was counted (None: never)


class BreakerCount(Base):
    """How many allow→deny flips of one policy the breaker let through in one clock hour (a flip
    prepared for a later instant counts in that instant's hour)."""

    __tablename__ = "breaker_count"

    policy_id: Mapped[str] = mapped_column(
        ForeignKey("policy.id", ondelete="CASCADE"), primary_key=True
    )
    hour: Mapped[datetime] = mapped_column(primary_key=True)
    admitted: Mapped[int] = mapped_column(default=0)


class BreakerHold(Base):
    """A deny the breaker holds: the device's decision stays allow until the cause passes (a
    stale source fresh again) or an admin releases the policy's breaker."""

    __tablename__ = "breaker_hold"
    __table_args__ = (Index("ix_breaker_hold_cause", "cause", "policy_id"),)

    policy_id: Mapped[str] = mapped_column(
        ForeignKey("policy.id", ondelete="CASCADE"), primary_key=True
    )
    device_id: Mapped[int] = mapped_column(
        ForeignKey("device.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    cause: Mapped[str] = mapped_column(String(80))  # mass_deny, source_stale:<source>
    effective_at: Mapped[datetime]  # when the deny would have taken effect
    held_at: Mapped[datetime]
