"""People, aliases, groups and admin roles."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select

from appwarden.db.uow import UnitOfWork
from appwarden.errors import NotFound, PermissionDenied
from appwarden.identity.models import Person, PersonAlias, PersonGroup, RoleBinding
from appwarden.identity.schemas import PersonFacts
from appwarden.vocabulary import ROLE_PERMISSIONS, Permission, PersonStatus, Role


def normalise_email(email: str) -> str:
    return email.strip().lower()


def find_person(uow: UnitOfWork, email: str) -> Person | None:
    """By primary email or alias, case-insensitively."""
    email = normalise_email(email)
    person = uow.session.scalars(select(Person).where(Person.email == email)).first()
    if person is not None:
        return person
    return uow.session.scalars(
        select(Person)
        .join(PersonAlias, PersonAlias.person_id == Person.id)
        .where(PersonAlias.email == email)
    ).first()


def get_person(uow: UnitOfWork, email: str) -> Person:
    person = find_person(uow, email)
    if person is None:
        raise NotFound(f"no person with the email or alias {email!r}")
    return person


def ensure_person(uow: UnitOfWork, email: str, display_name: str | None = None) -> Person:
    person = find_person(uow, email)
    if person is None:
        person = Person(
            email=normalise_email(email),
            display_name=display_name,
            status=PersonStatus.ACTIVE,
            created_at=uow.now,
        )
        uow.session.add(person)
        uow.session.flush()
    return person


def upsert_person(uow: UnitOfWork, facts: PersonFacts) -> Person:
    person = ensure_person(uow, facts.email, facts.display_name)
    if facts.display_name is not None:
        person.display_name = facts.display_name
    if facts.time_zone is not None:
        person.time_zone = facts.time_zone
    if facts.status != person.status:
        person.status = facts.status
        person.left_at = (facts.left_at or uow.now) if facts.status == PersonStatus.LEFT else None
    for alias in facts.aliases:
        _add_alias(uow, person, alias)
    if facts.groups is not None:
        set_groups(uow, person, facts.groups)
    uow.session.flush()
    return person


def _add_alias(uow: UnitOfWork, person: Person, alias: str) -> None:
    alias = normalise_email(alias)
    if alias == person.email:
        return
    existing = uow.session.scalars(select(PersonAlias).where(PersonAlias.email == alias)).first()
    if existing is None:
        uow.session.add(PersonAlias(person_id=person.id, email=alias))
    else:
        existing.person_id = person.id


def set_groups(uow: UnitOfWork, person: Person, groups: Iterable[str]) -> None:
    uow.session.execute(delete(PersonGroup).where(PersonGroup.person_id == person.id))
    for group in sorted(set(groups)):
        uow.session.add(PersonGroup(person_id=person.id, group_name=group))


def groups_of(uow: UnitOfWork, person_id: int) -> frozenset[str]:
    return frozenset(
        uow.session.scalars(
            select(PersonGroup.group_name).where(PersonGroup.person_id == person_id)
        )
    )


def grant_role(uow: UnitOfWork, email: str, role: Role) -> Person:
    person = ensure_person(uow, email)
    exists = uow.session.scalars(
        select(RoleBinding).where(RoleBinding.person_id == person.id, RoleBinding.role == role)
    ).first()
    if exists is None:
        uow.session.add(RoleBinding(person_id=person.id, role=role, created_at=uow.now))
        uow.session.flush()
    return person


def permissions_of(uow: UnitOfWork, person_id: int) -> frozenset[Permission]:
    roles = uow.session.scalars(select(RoleBinding.role).where(RoleBinding.person_id == person_id))
    granted: set[Permission] = set()
    for role in roles:
        granted |= ROLE_PERMISSIONS[Role(role)]
    return frozenset(granted)


def require(uow: UnitOfWork, permission: Permission) -> Person:
    """The one authorisation entry point for actions taken by a named admin (`--as`)."""
    if not uow.actor:
        raise PermissionDenied(
            f"this action needs {permission}: name the actor with --as EMAIL or APPWARDEN_ACTOR"
        )
    person = find_person(uow, uow.actor)
    if person is None:
        raise PermissionDenied(f"{uow.actor} is not a known admin; see `appwarden admin create`")
    granted = permissions_of(uow, person.id)
    if permission not in granted and Permission.ADMIN not in granted:
        raise PermissionDenied(f"{person.email} lacks the permission {permission}")
    return person
