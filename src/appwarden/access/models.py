from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String
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
