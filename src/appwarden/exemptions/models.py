from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from appwarden.db.base import Base


class Exemption(Base):
    """A time-boxed exemption from one policy id for a person or a device.

    status: `requested` (changes nothing), `approved`, `denied`, `revoked`.
    """

    __tablename__ = "exemption"
    __table_args__ = (
        CheckConstraint("(person_id IS NULL) <> (device_id IS NULL)", name="person_xor_device"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    policy_id: Mapped[str] = mapped_column(ForeignKey("policy.id"), index=True)
    person_id: Mapped[int | None] = mapped_column(ForeignKey("person.id"), index=True)
    device_id: Mapped[int | None] = mapped_column(ForeignKey("device.id"), index=True)
    starts_at: Mapped[datetime | None]
    ends_at: Mapped[datetime | None]
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    requested_by: Mapped[int | None] = mapped_column(ForeignKey("person.id"))
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("person.id"))
    decision_note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
