"""Scoped API tokens: created by an operator, carried as `Authorization: Bearer aw_<id>_<random>`.

Only the SHA-256 of the secret is stored. A request finds its token by the id inside the secret
and compares hashes in constant time, so neither the secret nor a guessable prefix of it is ever
looked up in the database. A token carries a named subset of the permissions of docs/permissions.md;
`admin` implies all of them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import or_, select, update

from appwarden.audit.service import record
from appwarden.db.uow import UnitOfWork
from appwarden.errors import InvalidInput, NotFound, Problem
from appwarden.identity.models import ApiToken
from appwarden.timeutil import iso
from appwarden.vocabulary import SOURCE_NAME, DeviceNamespace, Permission

PREFIX: Final = "aw"
MAX_NAME_CHARS: Final = 100
MAX_SECRET_CHARS: Final = 200
TOUCH_EVERY: Final = timedelta(minutes=1)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:@/-]*")
_SECRET = re.compile(r"aw_([1-9][0-9]{0,17})_([A-Za-z0-9_-]{20,})")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_permissions(values: Iterable[str]) -> list[str]:
    """Validated, deduplicated and sorted permission names; at least one."""
    granted: set[str] = set()
    problems = []
    for value in values:
        try:
            granted.add(str(Permission(value.strip())))
        except ValueError:
            choices = ", ".join(p.value for p in Permission)
            problems.append(Problem("permissions", f"{value!r} is not one of: {choices}"))
    if problems:
        raise InvalidInput("unknown permission", problems=problems)
    if not granted:
        raise InvalidInput("a token needs at least one permission (--permission P)")
    return sorted(granted)


def permissions_of(token: ApiToken) -> frozenset[Permission]:
    return frozenset(
        Permission(p) for p in token.permissions if p in Permission.__members__.values()
    )


def allows(token: ApiToken, permission: Permission) -> bool:
    granted = permissions_of(token)
    return permission in granted or Permission.ADMIN in granted


def parse_binding(
    granted: list[str], source: str | None, namespaces: Iterable[str] | None
) -> tuple[str | None, list[str] | None]:
    """The source an inventory writer is bound to and the device identifier namespaces it may
    use (None: all). An inventory:write token must name its source: without one, a token could
    write as any source and so change any fact (docs/permissions.md)."""
    namespaces = list(namespaces or [])
    if source is None:
        if Permission.INVENTORY_WRITE in granted:
            raise InvalidInput(
                "an inventory:write token writes as exactly one source: add --source NAME "
                "(e.g. --source intune)"
            )
        if namespaces:
            raise InvalidInput("--namespace limits an inventory writer: give --source too")
        return None, None
    source = source.strip()
    if not SOURCE_NAME.match(source):
        raise InvalidInput(f"{source!r} is not a source name: use 1 to 64 of a-z 0-9 . _ -")
    if Permission.INVENTORY_WRITE not in granted and Permission.ADMIN not in granted:
        raise InvalidInput("--source binds an inventory writer: grant inventory:write too")
    bad = [n for n in namespaces if n.strip() not in DeviceNamespace.__members__.values()]
    if bad:
        choices = ", ".join(n.value for n in DeviceNamespace)
        raise InvalidInput(
            "unknown device identifier namespace",
            problems=[Problem("namespaces", f"{n!r} is not one of: {choices}") for n in bad],
        )
    return source, sorted({n.strip() for n in namespaces}) or None


def create_token(
    uow: UnitOfWork,
    name: str,
    permissions: Iterable[str],
    *,
    source: str | None = None,
    namespaces: Iterable[str] | None = None,
) -> tuple[ApiToken, str]:
    """A new token and its secret. The secret is returned once and never stored."""
    name = name.strip()
    if not _NAME.fullmatch(name) or len(name) > MAX_NAME_CHARS:
        raise InvalidInput(
            f"{name!r} is not a token name: 1 to {MAX_NAME_CHARS} of letters, digits, "
            "space . _ : @ / - (starting with a letter or digit)"
        )
    granted = parse_permissions(permissions)
    source, allowed = parse_binding(granted, source, namespaces)
    token = ApiToken(
        name=name,
        token_hash="",  # set below, once the id that is part of the secret is known
        permissions=granted,
        source=source,
        namespaces=allowed,
        created_by=uow.actor,
        created_at=uow.now,
    )
    uow.session.add(token)
    uow.session.flush()
    secret = f"{PREFIX}_{token.id}_{secrets.token_urlsafe(32)}"
    token.token_hash = hash_secret(secret)
    uow.session.flush()
    record(
        uow,
        action="token.create",
        object_type="api_token",
        object_id=str(token.id),
        after={
            "name": token.name,
            "permissions": granted,
            "source": source,
            "namespaces": allowed,
        },
    )
    return token, secret


def token_id_of(secret: str) -> int | None:
    """The id part of a well-formed secret, else None."""
    if len(secret) > MAX_SECRET_CHARS:
        return None
    match = _SECRET.fullmatch(secret)
    return int(match.group(1)) if match else None


def authenticate(uow: UnitOfWork, secret: str) -> ApiToken | None:
    """The live token this secret belongs to, or None (unknown, malformed or revoked)."""
    digest = hash_secret(secret[:MAX_SECRET_CHARS])
    token_id = token_id_of(secret)
    token = uow.session.get(ApiToken, token_id) if token_id is not None else None
    stored = token.token_hash if token is not None else "0" * 64
    matches = hmac.compare_digest(stored.encode(), digest.encode())
    if token is None or not matches or token.revoked_at is not None:
        return None
    return token


def touch(uow: UnitOfWork, token_id: int) -> bool:
    """Record use at `uow.now`, at most once per TOUCH_EVERY (one conditional UPDATE)."""
    result = uow.session.execute(
        update(ApiToken)
        .where(
            ApiToken.id == token_id,
            or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= uow.now - TOUCH_EVERY),
        )
        .values(last_used_at=uow.now)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def needs_touch(token: ApiToken, now: datetime) -> bool:
    return token.last_used_at is None or token.last_used_at <= now - TOUCH_EVERY


def get_token(uow: UnitOfWork, token_id: int) -> ApiToken:
    token = uow.session.get(ApiToken, token_id)
    if token is None:
        raise NotFound(f"no API token with the id {token_id}")
    return token


def revoke(uow: UnitOfWork, token_id: int) -> ApiToken:
    """Revoke a token; it stops working at once. Revoking a revoked token changes nothing."""
    token = get_token(uow, token_id)
    if token.revoked_at is not None:
        return token
    token.revoked_at = uow.now
    uow.session.flush()
    record(
        uow,
        action="token.revoke",
        object_type="api_token",
        object_id=str(token.id),
        before={"name": token.name, "revoked_at": None},
        after={"name": token.name, "revoked_at": iso(uow.now)},
    )
    return token


def list_tokens(uow: UnitOfWork) -> list[ApiToken]:
    return list(uow.session.scalars(select(ApiToken).order_by(ApiToken.id)))
