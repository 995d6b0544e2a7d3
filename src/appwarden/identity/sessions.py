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

from sqlalchemy import delete, select, update

from appwarden.db.uow import UnitOfWork
from appwarden.identity.models import PortalSession, SignInFlow

#: The longest cookie value looked up: a secret is 43 characters; anything longer names nothing.
MAX_SECRET_CHARS: Final = 100
#: Use is recorded at most this often (a conditional UPDATE), so most requests only read.
TOUCH_EVERY: Final = timedelta(minutes=1)


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


def purge_expired(uow: UnitOfWork, idle: timedelta) -> int:
    """Delete sessions and flows that can no longer be used (the worker's housekeeping)."""
    removed = 0
    for statement in (
        delete(PortalSession).where(
            (PortalSession.expires_at <= uow.now) | (PortalSession.last_seen_at <= uow.now - idle)
        ),
        delete(SignInFlow).where(SignInFlow.expires_at <= uow.now),
    ):
        result = uow.session.execute(statement.execution_options(synchronize_session=False))
        removed += int(getattr(result, "rowcount", 0) or 0)
    return removed
