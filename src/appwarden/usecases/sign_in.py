"""Sign-in and sessions as the portal sees them: who a session cookie belongs to and what they may
do, the flow a browser follows before it has a session, and where it returns afterwards.

Only a session opened with single sign-on (OIDC) or an admin password carries the person's roles;
one opened by an email link carries none (docs/permissions.md). The page to return to is kept in
the store with the flow, never taken from a URL at the end, and only a local portal path is ever
kept (`safe_return_to`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Final
from urllib.parse import unquote, urlsplit

from appwarden.audit.service import record
from appwarden.db.uow import UnitOfWork
from appwarden.errors import PermissionDenied, TooManyAttempts
from appwarden.identity import passwords, sessions
from appwarden.identity.models import Person
from appwarden.identity.service import normalise_email, permissions_of, person_by_address
from appwarden.notifications.messages import SignInContext, render_sign_in
from appwarden.notifications.service import Rendered, enqueue_mail
from appwarden.settings import Settings
from appwarden.usecases.notices import NoticeConfig
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
    # Sign-in attempts (email links, passwords) allowed per address and per client in a window.
    per_address: int = 5
    per_client: int = 20
    attempt_window: timedelta = timedelta(minutes=15)

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionRules:
        return cls(
            lifetime=timedelta(hours=settings.session_hours),
            idle=timedelta(minutes=settings.session_idle_minutes),
            per_address=settings.sign_in_per_address,
            per_client=settings.sign_in_per_client,
            attempt_window=timedelta(minutes=settings.sign_in_window_minutes),
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
    return sessions.purge_expired(uow, rules.idle, rules.attempt_window)


# ── rate limits ───────────────────────────────────────────────────────────────────────────────


def _key(kind: str, value: str) -> str:
    """A counter's key: what is counted, hashed (the table holds no address)."""
    return f"{kind}:{hashlib.sha256(value.encode()).hexdigest()[:64]}"


def count_attempt(uow: UnitOfWork, address: str, client: str | None, rules: SessionRules) -> None:
    """Count a sign-in attempt for this address and this client; TooManyAttempts once either
    is over its limit in the window (whether or not the address belongs to anyone)."""
    for key, limit in (
        (_key("address", normalise_email(address)), rules.per_address),
        (_key("client", client or "unknown"), rules.per_client),
    ):
        attempts, started = sessions.count_attempt(uow, key, rules.attempt_window)
        if attempts > limit:
            wait = started + rules.attempt_window - uow.now
            raise TooManyAttempts(
                "Too many sign-in attempts. Please wait a few minutes, then try again.",
                retry_after=int(wait.total_seconds()) + 1,
            )


# ── email links ───────────────────────────────────────────────────────────────────────────────

SIGN_IN_PURPOSE: Final = "sign-in"
MAX_ADDRESS_CHARS: Final = 254


def looks_like_address(value: str) -> bool:
    value = value.strip()
    local, at, domain = value.rpartition("@")
    return (
        bool(at and local and "." in domain)
        and len(value) <= MAX_ADDRESS_CHARS
        and value.isprintable()
        and not any(c.isspace() for c in value)
    )


def request_link(
    uow: UnitOfWork,
    address: str,
    *,
    client: str | None,
    return_to: str | None,
    rules: SessionRules,
    config: NoticeConfig,
) -> bool:
    """Someone asks for a sign-in link for `address`. Counted against the address and the client
    first (TooManyAttempts past a limit); then, only if the address is an active person's, a
    link is made and its mail queued in the outbox's mail lane. The caller answers the same
    whatever this returns (True: a mail was queued), so nobody learns who works here."""
    count_attempt(uow, address, client, rules)
    person = person_by_address(uow, address)
    if person is None or person.status != PersonStatus.ACTIVE:
        return False
    link, secret = sessions.create_link(uow, person.id, safe_return_to(return_to))
    rendered = render_sign_in(
        SignInContext(
            person_name=person.display_name or person.email,
            time_zone=person.time_zone or config.default_time_zone,
            link=f"{config.public_url}/auth/link/{secret}",
            expires_at=link.expires_at,
            organisation=config.organisation,
        )
    )
    enqueue_mail(
        uow,
        purpose=SIGN_IN_PURPOSE,
        person_id=person.id,
        address=person.email,
        rendered=Rendered(rendered.subject, rendered.text, rendered.html),
        domain=config.domain,
        expires_at=link.expires_at,
    )
    return True


def link_usable(uow: UnitOfWork, token: str) -> bool:
    """Would this link sign someone in now? Reading only: a GET never spends a link."""
    return sessions.usable_link(uow, token) is not None


@dataclass(frozen=True, slots=True)
class SignedIn:
    secret: str  # the new session's cookie secret
    return_to: str


def spend_link(
    uow: UnitOfWork, token: str, rules: SessionRules, *, flow_secret: str | None
) -> SignedIn | None:
    """Spend the link (once) and open an `email` session for its person; None when the link is
    unknown, used or expired, or its person is no longer active."""
    link = sessions.spend_link(uow, token)
    if link is None:
        return None
    person = uow.session.get(Person, link.person_id)
    if person is None or person.status != PersonStatus.ACTIVE:
        return None
    secret = open_session(uow, person.id, SignInMethod.EMAIL, rules, flow_secret=flow_secret)
    return SignedIn(secret, safe_return_to(link.return_to))


# ── admin passwords ───────────────────────────────────────────────────────────────────────────


def password_sign_in(
    uow: UnitOfWork,
    address: str,
    password: str,
    *,
    client: str | None,
    rules: SessionRules,
    flow_secret: str,
) -> SignedIn | None:
    """Sign an admin in with their password: a `password` session, which carries their roles.
    Counted like an email link (TooManyAttempts past a limit); None, with the attempt counted
    and committed, for a wrong address or password, or someone who is no longer active."""
    count_attempt(uow, address, client, rules)
    person = person_by_address(uow, address)
    if not passwords.verify(uow, person, password):
        return None
    assert person is not None
    if person.status != PersonStatus.ACTIVE:
        return None
    flow = flow_of(uow, flow_secret)
    return_to = flow.return_to if flow is not None else HOME
    secret = open_session(uow, person.id, SignInMethod.PASSWORD, rules, flow_secret=flow_secret)
    return SignedIn(secret, return_to)


# ── OpenID Connect ────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class OidcRequest:
    """What one authorisation request sent, kept with its flow until the answer comes back."""

    state: str
    nonce: str
    verifier: str  # the PKCE code verifier


@dataclass(frozen=True, slots=True)
class OidcClaims:
    """What a verified ID token says (signature, audience, expiry and nonce already checked)."""

    issuer: str
    subject: str
    email: str | None
    email_verified: bool  # only a JSON `true` counts


def start_oidc(uow: UnitOfWork, flow_secret: str) -> OidcRequest | None:
    """New state, nonce and PKCE verifier for the browser's flow (None: it has no live flow)."""
    flow = sessions.live_flow(uow, flow_secret)
    if flow is None:
        return None
    request = OidcRequest(sessions.new_secret(), sessions.new_secret(), sessions.new_secret())
    flow.oidc_state, flow.oidc_nonce, flow.oidc_verifier = (
        request.state,
        request.nonce,
        request.verifier,
    )
    return request


def expected_oidc(uow: UnitOfWork, flow_secret: str) -> OidcRequest | None:
    """The request the browser's flow sent, to check the answer against."""
    flow = sessions.live_flow(uow, flow_secret)
    if flow is None or not (flow.oidc_state and flow.oidc_nonce and flow.oidc_verifier):
        return None
    return OidcRequest(flow.oidc_state, flow.oidc_nonce, flow.oidc_verifier)


def _oidc_person(uow: UnitOfWork, claims: OidcClaims, issuer: str) -> Person:
    """The person these claims name: by the kept (issuer, subject) pair; else, the first time,
    by an email the configured issuer says it verified (and then the pair is kept)."""
    if claims.issuer != issuer:
        raise PermissionDenied("the sign-in came from another issuer than the one configured")
    kept = sessions.identity(uow, issuer, claims.subject)
    if kept is not None:
        kept.last_sign_in_at = uow.now
        person = uow.session.get(Person, kept.person_id)
        assert person is not None  # the row goes with its person (ON DELETE CASCADE)
        return person
    if not claims.email_verified or not claims.email:
        raise PermissionDenied("your sign-in provider did not confirm that it verified your email")
    person = person_by_address(uow, claims.email)
    if person is None:
        raise PermissionDenied("nobody here has the email address your sign-in provider gave")
    if sessions.identities_at(uow, person.id, issuer):
        raise PermissionDenied(
            "this person already signs in with another account of the provider; an "
            "administrator has to sort this out"
        )
    sessions.keep_identity(uow, person.id, issuer, claims.subject)
    record(
        uow,
        action="identity.link",
        object_type="person",
        object_id=person.email,
        after={"issuer": issuer, "subject": claims.subject},
    )
    return person


def oidc_sign_in(
    uow: UnitOfWork, claims: OidcClaims, *, issuer: str, rules: SessionRules, flow_secret: str
) -> SignedIn:
    """Open an `oidc` session for the person the claims name (PermissionDenied, saying why,
    when they name nobody here or came from elsewhere); then the flow's page to return to."""
    person = _oidc_person(uow, claims, issuer)
    if person.status != PersonStatus.ACTIVE:
        raise PermissionDenied("this person is no longer active here")
    flow = flow_of(uow, flow_secret)
    return_to = flow.return_to if flow is not None else HOME
    secret = open_session(uow, person.id, SignInMethod.OIDC, rules, flow_secret=flow_secret)
    return SignedIn(secret, return_to)
