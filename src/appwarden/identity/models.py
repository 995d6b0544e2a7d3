from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from appwarden.db.base import Base


class Person(Base):
    __tablename__ = "person"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)  # stored lower-cased
    display_name: Mapped[str | None] = mapped_column(String(1000))
    time_zone: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="active")
    left_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    # The source that first wrote this person: authoritative for its status by default.
    source: Mapped[str | None] = mapped_column(String(64))


class PersonAlias(Base):
    __tablename__ = "person_alias"

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)


class PersonAccount(Base):
    """An account name the mail server accepts for a person besides their addresses: a UPN
    (`alice@corp.example`) or a down-level logon name (`EXAMPLE\\alice`). The gate matches the
    name a request's credentials carry against these exactly (case-insensitively)."""

    __tablename__ = "person_account"

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(254), unique=True)  # stored case-folded


class PersonGroup(Base):
    __tablename__ = "person_group"

    person_id: Mapped[int] = mapped_column(
        ForeignKey("person.id", ondelete="CASCADE"), primary_key=True
    )
    group_name: Mapped[str] = mapped_column(String(200), primary_key=True)


class RoleBinding(Base):
    """An admin role held by a person (viewer, author, approver, admin)."""

    __tablename__ = "role_binding"
    __table_args__ = (UniqueConstraint("person_id", "role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]


class ApiToken(Base):
    """A scoped API token. The secret (`aw_<id>_<random>`) is shown once; only its SHA-256 is
    kept, and a request finds its token by the id in the secret and compares in constant time."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64))
    permissions: Mapped[list[str]] = mapped_column(JSON)
    # The one source an inventory:write token writes as (None: it may not write inventory), and
    # the device identifier namespaces it may name devices by (None: any).
    source: Mapped[str | None] = mapped_column(String(64))
    namespaces: Mapped[list[str] | None] = mapped_column(JSON)
    created_by: Mapped[str | None] = mapped_column(String(254))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
