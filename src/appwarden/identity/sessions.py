"""Portal sessions and sign-in flows, stored hashed.

A browser holds a random secret in a cookie; the store keeps only its SHA-256, and a request finds
its row by that digest (the secret has 256 bits, so the digest is as good as the secret for a
lookup and useless to whoever reads the table). Every instant comes from the unit of work.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import case, delete, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite

from appwarden.db.uow import UnitOfWork
from appwarden.identity.models import (
    PersonIdentity,
    PortalSession,
    SignInCounter,
    SignInFlow,
    SignInLink,
)

#: The longest cookie value looked up: a secret is 43 characters; anything longer names nothing.
MAX_SECRET_CHARS: Final = 100
#: Use is recorded at most this often (a conditional UPDATE), so most requests only read.
TOUCH_EVERY: Final = timedelta(minutes=1)
#: How long a mailed sign-in link works.
LINK_LIFETIME: Final = timedelta(minutes=15)


def new_secret() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret[:MAX_SECRET_CHARS].encode()).hexdigest()


def open_session(
    uow: UnitOfWork, person_id: int, method: str, lifetime: timedelta
) -> tuple[PortalSession, str]:
    """A new session for the person and its cookie secret (returned once, stored hashed)."""
    secret = new_secret()
    session = PortalSession(
        session_hash=digest(secret),
        person_id=person_id,
        method=method,
        csrf_token=new_secret(),
        created_at=uow.now,
        last_seen_at=uow.now,
        expires_at=uow.now + lifetime,
    )
    uow.session.add(session)
    uow.session.flush()
    return session, secret


def live_session(uow: UnitOfWork, secret: str, idle: timedelta) -> PortalSession | None:
    """The session this cookie secret opened, unless it expired or sat unused for `idle`."""
    if not secret or len(secret) > MAX_SECRET_CHARS:
        return None
    session = uow.session.scalars(
        select(PortalSession).where(PortalSession.session_hash == digest(secret))
    ).first()
    if session is None or session.expires_at <= uow.now:
        return None
    if session.last_seen_at <= uow.now - idle:
        return None
    return session


def needs_touch(session: PortalSession, now: datetime) -> bool:
    return session.last_seen_at <= now - TOUCH_EVERY


def touch_session(uow: UnitOfWork, session_id: int) -> None:
    """Record use at `uow.now` (the idle timeout counts from here)."""
    uow.session.execute(
        update(PortalSession)
        .where(PortalSession.id == session_id, PortalSession.last_seen_at < uow.now)
        .values(last_seen_at=uow.now)
        .execution_options(synchronize_session=False)
    )


def end_session(uow: UnitOfWork, secret: str) -> int | None:
    """Delete the session this secret opened; the person it belonged to, or None."""
    if not secret or len(secret) > MAX_SECRET_CHARS:
        return None
    session = uow.session.scalars(
        select(PortalSession).where(PortalSession.session_hash == digest(secret))
    ).first()
    if session is None:
        return None
    person_id = session.person_id
    uow.session.delete(session)
    uow.session.flush()
    return person_id


def open_flow(
    uow: UnitOfWork, return_to: str | None, lifetime: timedelta
) -> tuple[SignInFlow, str]:
    secret = new_secret()
    flow = SignInFlow(
        flow_hash=digest(secret),
        csrf_token=new_secret(),
        return_to=return_to,
        created_at=uow.now,
        expires_at=uow.now + lifetime,
    )
    uow.session.add(flow)
    uow.session.flush()
    return flow, secret


def live_flow(uow: UnitOfWork, secret: str) -> SignInFlow | None:
    if not secret or len(secret) > MAX_SECRET_CHARS:
        return None
    flow = uow.session.scalars(
        select(SignInFlow).where(SignInFlow.flow_hash == digest(secret))
    ).first()
    if flow is None or flow.expires_at <= uow.now:
        return None
    return flow


def end_flow(uow: UnitOfWork, flow: SignInFlow) -> None:
    uow.session.delete(flow)
    uow.session.flush()


def create_link(uow: UnitOfWork, person_id: int, return_to: str | None) -> tuple[SignInLink, str]:
    """A new sign-in link for the person and its token (returned once, stored hashed)."""
    secret = new_secret()
    link = SignInLink(
        token_hash=digest(secret),
        person_id=person_id,
        return_to=return_to,
        created_at=uow.now,
        expires_at=uow.now + LINK_LIFETIME,
    )
    uow.session.add(link)
    uow.session.flush()
    return link, secret


def usable_link(uow: UnitOfWork, secret: str) -> SignInLink | None:
    """The link this token names, if it is unused and unexpired (reading only)."""
    if not secret or len(secret) > MAX_SECRET_CHARS:
        return None
    link = uow.session.scalars(
        select(SignInLink).where(SignInLink.token_hash == digest(secret))
    ).first()
    if link is None or link.used_at is not None or link.expires_at <= uow.now:
        return None
    return link


def spend_link(uow: UnitOfWork, secret: str) -> SignInLink | None:
    """Use the link once: a conditional UPDATE, so of two simultaneous posts only one wins."""
    link = usable_link(uow, secret)
    if link is None:
        return None
    spent = uow.session.execute(
        update(SignInLink)
        .where(
            SignInLink.id == link.id,
            SignInLink.used_at.is_(None),
            SignInLink.expires_at > uow.now,
        )
        .values(used_at=uow.now)
        .execution_options(synchronize_session=False)
    )
    if not getattr(spent, "rowcount", 0):
        return None
    return link


def count_attempt(uow: UnitOfWork, key: str, window: timedelta) -> tuple[int, datetime]:
    """Count one attempt for `key` in its fixed window (a new window once the last one is over):
    the attempts so far in this window and when it started. One statement, so processes that
    count at once never lose an attempt."""
    table = SignInCounter.__table__
    stamp = literal(uow.now, type_=table.c.window_start.type)
    over = table.c.window_start <= uow.now - window
    dialect = postgresql if uow.dialect == "postgresql" else sqlite
    statement = (
        dialect.insert(table)
        .values(key=key, window_start=uow.now, attempts=1)
        .on_conflict_do_update(
            index_elements=[table.c.key],
            set_={
                "attempts": case((over, 1), else_=table.c.attempts + 1),
                "window_start": case((over, stamp), else_=table.c.window_start),
            },
        )
        .returning(table.c.attempts, table.c.window_start)
    )
    attempts, started = uow.session.execute(statement).one()
    return int(attempts), started


def identity(uow: UnitOfWork, issuer: str, subject: str) -> PersonIdentity | None:
    return uow.session.scalars(
        select(PersonIdentity).where(
            PersonIdentity.issuer == issuer, PersonIdentity.subject == subject
        )
    ).first()


def identities_at(uow: UnitOfWork, person_id: int, issuer: str) -> list[PersonIdentity]:
    return list(
        uow.session.scalars(
            select(PersonIdentity).where(
                PersonIdentity.person_id == person_id, PersonIdentity.issuer == issuer
            )
        )
    )


def keep_identity(uow: UnitOfWork, person_id: int, issuer: str, subject: str) -> PersonIdentity:
    kept = PersonIdentity(
        person_id=person_id,
        issuer=issuer,
        subject=subject,
        created_at=uow.now,
        last_sign_in_at=uow.now,
    )
    uow.session.add(kept)
    uow.session.flush()
    return kept


def purge_expired(uow: UnitOfWork, idle: timedelta, attempt_window: timedelta) -> int:
    """Delete sessions, flows, links and attempt counters that can no longer matter (the
    worker's housekeeping)."""
    removed = 0
    for statement in (
        delete(PortalSession).where(
            (PortalSession.expires_at <= uow.now) | (PortalSession.last_seen_at <= uow.now - idle)
        ),
        delete(SignInFlow).where(SignInFlow.expires_at <= uow.now),
        delete(SignInLink).where(SignInLink.expires_at <= uow.now),
        delete(SignInCounter).where(SignInCounter.window_start <= uow.now - attempt_window),
    ):
        result = uow.session.execute(statement.execution_options(synchronize_session=False))
        removed += int(getattr(result, "rowcount", 0) or 0)
    return removed
