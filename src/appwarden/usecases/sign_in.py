"""Sign-in and sessions as the portal sees them: who a session cookie belongs to and what they may
do, the flow a browser follows before it has a session, and where it returns afterwards.

Only a session opened with single sign-on (OIDC) or an admin password carries the person's roles;
one opened by an email link carries none (docs/permissions.md). The page to return to is kept in
the store with the flow, never taken from a URL at the end, and only a local portal path is ever
kept (`safe_return_to`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Final
from urllib.parse import unquote, urlsplit

from appwarden.audit.service import record
from appwarden.db.uow import UnitOfWork
from appwarden.identity import sessions
from appwarden.identity.models import Person
from appwarden.identity.service import permissions_of
from appwarden.settings import Settings
from appwarden.vocabulary import ROLE_METHODS, Permission, PersonStatus, SignInMethod

HOME: Final = "/me/"
MAX_RETURN_CHARS: Final = 1000
#: Where a sign-in may send a browser back to: the portal's pages and the admin pages.
_RETURN_PREFIXES: Final = ("/me/", "/admin/")
_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True, slots=True)
class SessionRules:
    lifetime: timedelta  # absolute
    idle: timedelta  # unused this long, it ends
    flow_lifetime: timedelta = timedelta(minutes=30)

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionRules:
        return cls(
            lifetime=timedelta(hours=settings.session_hours),
            idle=timedelta(minutes=settings.session_idle_minutes),
        )


@dataclass(frozen=True, slots=True)
class Visitor:
    """The person behind a live session (never its secret)."""

    session_id: int
    person_id: int
    email: str
    name: str
    time_zone: str
    method: str
    permissions: frozenset[Permission]  # empty unless the method carries roles
    csrf_token: str
    stale: bool  # its last use was recorded over `sessions.TOUCH_EVERY` ago

    def allows(self, permission: Permission) -> bool:
        return permission in self.permissions or Permission.ADMIN in self.permissions


def safe_return_to(value: str | None) -> str:
    """A local portal path to return to after sign-in, or the portal's home. Anything that a
    browser could take to another origin (`//evil`, `/\\evil`, `%2F%2Fevil`, `https://…`,
    control characters) is never kept."""
    if not value or len(value) > MAX_RETURN_CHARS or not _PRINTABLE_ASCII.fullmatch(value):
        return HOME
    if "\\" in value or not value.startswith("/") or value.startswith("//"):
        return HOME
    decoded = unquote(value)
    if "\\" in decoded or decoded.startswith("//") or not _PRINTABLE_ASCII.fullmatch(decoded):
        return HOME
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or parts.fragment:
        return HOME
    path = parts.path if parts.path != "/me" else HOME
    if not path.startswith(_RETURN_PREFIXES) or "/../" in decoded or decoded.endswith("/.."):
        return HOME
    return path + (f"?{parts.query}" if parts.query else "")


def visitor(
    uow: UnitOfWork, secret: str, rules: SessionRules, default_time_zone: str
) -> Visitor | None:
    """Who the session cookie `secret` belongs to, if it is live and its person active."""
    session = sessions.live_session(uow, secret, rules.idle)
    if session is None:
        return None
    person = uow.session.get(Person, session.person_id)
    if person is None or person.status != PersonStatus.ACTIVE:
        return None
    carries_roles = session.method in ROLE_METHODS
    return Visitor(
        session_id=session.id,
        person_id=person.id,
        email=person.email,
        name=person.display_name or person.email,
        time_zone=person.time_zone or default_time_zone,
        method=session.method,
        permissions=permissions_of(uow, person.id) if carries_roles else frozenset(),
        csrf_token=session.csrf_token,
        stale=sessions.needs_touch(session, uow.now),
    )


def touch(uow: UnitOfWork, session_id: int) -> None:
    sessions.touch_session(uow, session_id)


def sign_out(uow: UnitOfWork, secret: str) -> bool:
    """End the session this cookie opened: its row is deleted. False when there was none."""
    return sessions.end_session(uow, secret) is not None


@dataclass(frozen=True, slots=True)
class Flow:
    """A browser's sign-in in progress, as the sign-in pages need it."""

    csrf_token: str
    return_to: str
    oidc_state: str | None = None
    oidc_nonce: str | None = None
    oidc_verifier: str | None = None


def begin_flow(uow: UnitOfWork, return_to: str | None, rules: SessionRules) -> tuple[Flow, str]:
    """A new flow returning to `return_to` (made safe) and its cookie secret."""
    flow, secret = sessions.open_flow(uow, safe_return_to(return_to), rules.flow_lifetime)
    return Flow(flow.csrf_token, flow.return_to or HOME), secret


def flow_of(uow: UnitOfWork, secret: str) -> Flow | None:
    flow = sessions.live_flow(uow, secret)
    if flow is None:
        return None
    return Flow(
        flow.csrf_token,
        safe_return_to(flow.return_to),
        flow.oidc_state,
        flow.oidc_nonce,
        flow.oidc_verifier,
    )


def remember_return(uow: UnitOfWork, secret: str, return_to: str | None) -> None:
    """A sign-in page asked with a page to return to: keep it (made safe) with the flow."""
    flow = sessions.live_flow(uow, secret)
    if flow is not None and return_to:
        flow.return_to = safe_return_to(return_to)


def open_session(
    uow: UnitOfWork,
    person_id: int,
    method: SignInMethod,
    rules: SessionRules,
    *,
    flow_secret: str | None = None,
) -> str:
    """Sign the person in: a new session (audited) and its cookie secret. The flow that led here
    is over, so it is deleted."""
    if flow_secret:
        flow = sessions.live_flow(uow, flow_secret)
        if flow is not None:
            sessions.end_flow(uow, flow)
    session, secret = sessions.open_session(uow, person_id, method, rules.lifetime)
    person = uow.session.get(Person, person_id)
    record(
        uow,
        action="session.open",
        object_type="person",
        object_id=person.email if person is not None else str(person_id),
        after={"method": str(method), "session": session.id},
    )
    return secret


def housekeeping(uow: UnitOfWork, rules: SessionRules) -> int:
    """Delete what can no longer sign anyone in (the worker runs it on every pass)."""
    return sessions.purge_expired(uow, rules.idle)
