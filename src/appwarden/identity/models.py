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


class PortalSession(Base):
    """A signed-in browser. The cookie carries a random secret; only its SHA-256 is kept, so the
    table cannot be replayed as cookies. `method` says how it was opened (`oidc`, `password`,
    `email`): a session opened by an email link carries no role of its person
    (docs/permissions.md). Ends at `expires_at`, after `idle` without use, or at sign-out (the
    row is deleted)."""

    __tablename__ = "portal_session"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id", ondelete="CASCADE"), index=True)
    method: Mapped[str] = mapped_column(String(16))
    csrf_token: Mapped[str] = mapped_column(String(64))  # every form of the session carries it
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class SignInFlow(Base):
    """A browser on its way to a session: where it returns afterwards (a local path, kept here
    rather than in a URL), the CSRF token of its sign-in forms, and an OIDC request's state,
    nonce and PKCE verifier. The cookie carries a random secret; only its SHA-256 is kept."""

    __tablename__ = "sign_in_flow"

    id: Mapped[int] = mapped_column(primary_key=True)
    flow_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    return_to: Mapped[str | None] = mapped_column(String(1000))
    oidc_state: Mapped[str | None] = mapped_column(String(128))
    oidc_nonce: Mapped[str | None] = mapped_column(String(128))
    oidc_verifier: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class SignInLink(Base):
    """A single-use sign-in link mailed to a person: its token is stored only as a SHA-256, lives
    15 minutes, and is spent (`used_at`) by the POST of the page it opens, never by the GET that
    mail scanners also make. `return_to` is the flow's page to return to when it was asked for."""

    __tablename__ = "sign_in_link"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id", ondelete="CASCADE"), index=True)
    return_to: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None]


class SignInCounter(Base):
    """How many sign-in attempts one key (an address or a client address, each as a SHA-256) made
    in its current window: the rate limiter's state, in the store so every process shares it."""

    __tablename__ = "sign_in_counter"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(index=True)
    attempts: Mapped[int]


class PersonIdentity(Base):
    """A person's account at the OIDC provider, kept after their first sign-in with it: later
    sign-ins match the (issuer, subject) pair, whatever email the provider then sends."""

    __tablename__ = "person_identity"
    __table_args__ = (UniqueConstraint("issuer", "subject"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id", ondelete="CASCADE"), index=True)
    issuer: Mapped[str] = mapped_column(String(500))
    subject: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime]
    last_sign_in_at: Mapped[datetime]


class AdminPassword(Base):
    """An admin's local password, as an argon2id hash (`appwarden admin create EMAIL --role R
    --password-stdin`). Sign-in with it opens a session that carries the person's roles."""

    __tablename__ = "admin_password"

    person_id: Mapped[int] = mapped_column(
        ForeignKey("person.id", ondelete="CASCADE"), primary_key=True
    )
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
