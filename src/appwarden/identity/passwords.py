"""Admins' local passwords, hashed with argon2id (argon2-cffi's defaults, which follow RFC 9106's
recommendations and are re-checked on every sign-in: a hash made with weaker parameters is
replaced by one made with the current ones)."""

from __future__ import annotations

from functools import lru_cache
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from appwarden.audit.service import record
from appwarden.db.uow import UnitOfWork
from appwarden.errors import InvalidInput
from appwarden.identity.models import AdminPassword, Person

MIN_CHARS: Final = 12
MAX_CHARS: Final = 1024

_hasher = PasswordHasher()


@lru_cache(maxsize=1)
def _decoy() -> str:
    """A hash to check against when there is no password to check, so an unknown address costs
    as much time as a known one."""
    return _hasher.hash("a password that no admin has: only its timing matters")


def checked(password: str) -> str:
    """The password as given, if it is acceptable: 12 to 1024 characters, not only spaces."""
    if len(password) < MIN_CHARS or not password.strip():
        raise InvalidInput(f"a password needs at least {MIN_CHARS} characters")
    if len(password) > MAX_CHARS:
        raise InvalidInput(f"a password has at most {MAX_CHARS} characters")
    return password


def set_password(uow: UnitOfWork, person: Person, password: str) -> None:
    """Give the person this password (replacing any), audited without the hash."""
    digest = _hasher.hash(checked(password))
    stored = uow.session.get(AdminPassword, person.id)
    if stored is None:
        stored = AdminPassword(
            person_id=person.id, password_hash=digest, created_at=uow.now, updated_at=uow.now
        )
        uow.session.add(stored)
    else:
        stored.password_hash, stored.updated_at = digest, uow.now
    uow.session.flush()
    record(uow, action="admin.password", object_type="person", object_id=person.email)


def verify(uow: UnitOfWork, person: Person | None, password: str) -> bool:
    """Is this the person's password? Takes as long for an unknown person or one without a
    password. A hash with outdated parameters is upgraded on success."""
    stored = uow.session.get(AdminPassword, person.id) if person is not None else None
    try:
        _hasher.verify(stored.password_hash if stored else _decoy(), password[:MAX_CHARS])
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    if stored is None:
        return False
    if _hasher.check_needs_rehash(stored.password_hash):
        stored.password_hash, stored.updated_at = _hasher.hash(password), uow.now
    return True
