"""API tokens as the fronts see them: who a bearer secret belongs to (the HTTP API), and the
operator's create, revoke and list (the CLI). The fronts get a `Principal` or plain rows, never
the stored token: its hash stays behind this module."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from appwarden.db.uow import UnitOfWork
from appwarden.identity import tokens
from appwarden.identity.models import ApiToken
from appwarden.timeutil import iso
from appwarden.vocabulary import Permission


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: an API token (never its secret)."""

    token_id: int
    name: str
    permissions: frozenset[Permission]
    source: str | None = None  # the one source an inventory writer writes as
    namespaces: tuple[str, ...] | None = None  # device identifier namespaces it may use (all)

    @property
    def actor(self) -> str:
        return f"token:{self.name}"

    def allows(self, permission: Permission) -> bool:
        return permission in self.permissions or Permission.ADMIN in self.permissions


@dataclass(frozen=True, slots=True)
class Caller:
    principal: Principal
    stale: bool  # its last use was recorded over `tokens.TOUCH_EVERY` ago: `touch` it


def authenticate(uow: UnitOfWork, secret: str) -> Caller | None:
    """The live token this bearer secret belongs to, or None (unknown, malformed or revoked)."""
    token = tokens.authenticate(uow, secret)
    if token is None:
        return None
    principal = Principal(
        token.id,
        token.name,
        tokens.permissions_of(token),
        token.source,
        None if token.namespaces is None else tuple(token.namespaces),
    )
    return Caller(principal, tokens.needs_touch(token, uow.now))


def touch(uow: UnitOfWork, token_id: int) -> bool:
    """Record use at `uow.now`, at most once per `tokens.TOUCH_EVERY`."""
    return tokens.touch(uow, token_id)


def token_row(token: ApiToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "permissions": list(token.permissions),
        "source": token.source,
        "namespaces": None if token.namespaces is None else list(token.namespaces),
        "created_by": token.created_by,
        "created_at": iso(token.created_at),
        "revoked_at": iso(token.revoked_at),
        "last_used_at": iso(token.last_used_at),
    }


def create(
    uow: UnitOfWork,
    name: str,
    permissions: Iterable[str],
    *,
    source: str | None = None,
    namespaces: Iterable[str] | None = None,
) -> tuple[dict[str, Any], str]:
    """A new token's row and its secret (shown once: only its hash is stored)."""
    token, secret = tokens.create_token(
        uow, name, permissions, source=source, namespaces=namespaces
    )
    return token_row(token), secret


def revoke(uow: UnitOfWork, token_id: int) -> dict[str, Any]:
    return token_row(tokens.revoke(uow, token_id))


def token_rows(uow: UnitOfWork) -> list[dict[str, Any]]:
    return [token_row(t) for t in tokens.list_tokens(uow)]
