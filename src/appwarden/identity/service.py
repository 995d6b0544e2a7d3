"""People, aliases, groups and admin roles."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import delete, select

from appwarden.audit.service import record
from appwarden.db.chunked import one_of
from appwarden.db.uow import UnitOfWork
from appwarden.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from appwarden.identity.models import (
    Person,
    PersonAccount,
    PersonAlias,
    PersonGroup,
    RoleBinding,
)
from appwarden.identity.schemas import PersonFacts
from appwarden.vocabulary import ROLE_PERMISSIONS, Permission, PersonStatus, Role


def normalise_email(email: str) -> str:
    return email.strip().lower()


#: The longest account name kept (an address's limit; a down-level name is far shorter).
MAX_ACCOUNT_CHARS = 254


def normalise_account(name: str) -> str:
    """An account name as stored and matched: stripped and case-folded (Active Directory and
    Entra compare logon names case-insensitively). Raises InvalidInput for a name the gate could
    never match safely: empty, over-long, or with control characters."""
    folded = name.strip().casefold()
    if not folded or len(folded) > MAX_ACCOUNT_CHARS or not folded.isprintable():
        raise InvalidInput(
            f"account name {name[:80]!r}: expected 1 to {MAX_ACCOUNT_CHARS} printable characters, "
            "e.g. EXAMPLE\\alice or alice@corp.example"
        )
    return folded


def people_named(uow: UnitOfWork, name: str) -> list[int]:
    """The ids of everyone an identity names exactly: by primary address, alias or account name
    (case-insensitive, nothing else: no local-part or near-miss matching). More than one id means
    the name is ambiguous, and the gate refuses it."""
    folded = name.strip().casefold()
    found: set[int] = set()
    for column, key in (
        (Person.id, Person.email),
        (PersonAlias.person_id, PersonAlias.email),
        (PersonAccount.person_id, PersonAccount.name),
    ):
        found.update(uow.session.scalars(select(column).where(key == folded).limit(2)))
    return sorted(found)


def _claim_name(uow: UnitOfWork, person: Person, name: str, what: str) -> None:
    """Refuse to give `person` a name someone else already answers to (as address, alias or
    account): the gate would find two people behind one sign-in name, and a source could take a
    name from its owner."""
    others = [i for i in people_named(uow, name) if i != person.id]
    if others:
        owner = uow.session.get(Person, others[0])
        raise Conflict(
            f"the {what} {name!r} already belongs to {owner.email if owner else 'someone'}; "
            f"it cannot also name {person.email}"
        )


def set_account(uow: UnitOfWork, person: Person, name: str) -> None:
    """Give `person` the account `name` (refused when someone else answers to it)."""
    folded = normalise_account(name)
    _claim_name(uow, person, folded, "account name")
    existing = uow.session.scalars(
        select(PersonAccount).where(PersonAccount.name == folded)
    ).first()
    if existing is None:
        uow.session.add(PersonAccount(person_id=person.id, name=folded))
        uow.session.flush()


def remove_account(uow: UnitOfWork, person: Person, name: str) -> bool:
    """Take the account `name` from `person`; False when they did not have it."""
    folded = normalise_account(name)
    removed = uow.session.execute(
        delete(PersonAccount).where(
            PersonAccount.person_id == person.id, PersonAccount.name == folded
        )
    )
    return bool(getattr(removed, "rowcount", 0))


def change_accounts(
    uow: UnitOfWork, email: str, *, add: Iterable[str], remove: Iterable[str]
) -> list[str]:
    """An admin gives or takes a person's account names (audited); returns their names after."""
    require(uow, Permission.ADMIN)
    person = get_person(uow, email)
    before = accounts_of(uow, person.id)
    for name in add:
        set_account(uow, person, name)
    for name in remove:
        if not remove_account(uow, person, name):
            raise NotFound(f"{person.email} has no account name {normalise_account(name)!r}")
    after = accounts_of(uow, person.id)
    if after != before:
        record(
            uow,
            action="person.accounts",
            object_type="person",
            object_id=person.email,
            before={"accounts": before},
            after={"accounts": after},
        )
    return after


def accounts_of(uow: UnitOfWork, person_id: int) -> list[str]:
    return list(
        uow.session.scalars(
            select(PersonAccount.name)
            .where(PersonAccount.person_id == person_id)
            .order_by(PersonAccount.name)
        )
    )


def find_person(uow: UnitOfWork, email: str) -> Person | None:
    """By primary email, alias or account name (a source may name a person by their UPN),
    case-insensitively."""
    email = normalise_email(email)
    person = uow.session.scalars(select(Person).where(Person.email == email)).first()
    if person is not None:
        return person
    person = uow.session.scalars(
        select(Person)
        .join(PersonAlias, PersonAlias.person_id == Person.id)
        .where(PersonAlias.email == email)
    ).first()
    if person is not None:
        return person
    return uow.session.scalars(
        select(Person)
        .join(PersonAccount, PersonAccount.person_id == Person.id)
        .where(PersonAccount.name == email.casefold())
    ).first()


@dataclass
class PersonLookup:
    """`find_person` for many addresses at once: one query per way a person is named (primary
    email, alias, account name) for all of them, then answers from memory. A person created
    afterwards must be `remember`ed; an address not asked for falls back to `find_person`."""

    found: dict[str, Person | None] = field(default_factory=dict)

    def person_ids(self) -> set[int]:
        """The people found or remembered."""
        return {person.id for person in self.found.values() if person is not None}

    @classmethod
    def of(cls, uow: UnitOfWork, addresses: Iterable[str], chunk: int = 5_000) -> PersonLookup:
        keys = sorted({normalise_email(a) for a in addresses})
        by_email: dict[str, Person] = {}
        by_alias: dict[str, Person] = {}
        by_account: dict[str, Person] = {}
        session = uow.session
        for start in range(0, len(keys), chunk):
            part = keys[start : start + chunk]
            by_email.update(
                (p.email, p)
                for p in session.scalars(select(Person).where(one_of(Person.email, part)))
            )
            by_alias.update(
                (alias, person)
                for person, alias in session.execute(
                    select(Person, PersonAlias.email)
                    .join(PersonAlias, PersonAlias.person_id == Person.id)
                    .where(one_of(PersonAlias.email, part))
                )
            )
            by_account.update(
                (name, person)
                for person, name in session.execute(
                    select(Person, PersonAccount.name)
                    .join(PersonAccount, PersonAccount.person_id == Person.id)
                    .where(one_of(PersonAccount.name, {key.casefold() for key in part}))
                )
            )
        # The order find_person asks in: primary email, then alias, then account name.
        return cls(
            {
                key: by_email.get(key) or by_alias.get(key) or by_account.get(key.casefold())
                for key in keys
            }
        )

    def find(self, uow: UnitOfWork, email: str) -> Person | None:
        key = normalise_email(email)
        return self.found[key] if key in self.found else find_person(uow, email)

    def remember(self, person: Person) -> None:
        self.found[person.email] = person


def person_by_address(uow: UnitOfWork, address: str) -> Person | None:
    """The person whose primary address or alias this is (case-insensitively); never by an
    account name: sign-in mail goes to an address a person reads."""
    address = normalise_email(address)
    person = uow.session.scalars(select(Person).where(Person.email == address)).first()
    if person is not None:
        return person
    return uow.session.scalars(
        select(Person)
        .join(PersonAlias, PersonAlias.person_id == Person.id)
        .where(PersonAlias.email == address)
    ).first()


def get_person(uow: UnitOfWork, email: str) -> Person:
    person = find_person(uow, email)
    if person is None:
        raise NotFound(f"no person with the email or alias {email!r}")
    return person


def ensure_person(
    uow: UnitOfWork, email: str, display_name: str | None = None, *, source: str | None = None
) -> Person:
    """The person with this address or alias; created if new (owned by `source`, the inventory
    source that first named them, if any: see devices/facts.py)."""
    person = find_person(uow, email)
    return person if person is not None else new_person(uow, email, display_name, source=source)


def new_person(
    uow: UnitOfWork, email: str, display_name: str | None = None, *, source: str | None = None
) -> Person:
    """A new person with this address, which the caller knows names nobody yet."""
    return new_people(uow, [(email, display_name, source)])[0]


def new_people(
    uow: UnitOfWork, entries: Sequence[tuple[str, str | None, str | None]]
) -> list[Person]:
    """New people, each (address, display name, source), which the caller knows name nobody
    yet, made in this order (their ids follow it) with one flush."""
    people = [
        Person(
            email=normalise_email(email),
            display_name=display_name,
            status=PersonStatus.ACTIVE,
            created_at=uow.now,
            source=source,
        )
        for email, display_name, source in entries
    ]
    uow.session.add_all(people)
    uow.session.flush()
    return people


def upsert_person(uow: UnitOfWork, facts: PersonFacts) -> Person:
    person = ensure_person(uow, facts.email, facts.display_name)
    if facts.display_name is not None:
        person.display_name = facts.display_name
    if facts.time_zone is not None:
        person.time_zone = facts.time_zone
    if facts.status is not None and facts.status != person.status:
        person.status = facts.status
        person.left_at = (facts.left_at or uow.now) if facts.status == PersonStatus.LEFT else None
    for alias in facts.aliases:
        _add_alias(uow, person, alias)
    for account in facts.accounts:
        set_account(uow, person, account)
    if facts.groups is not None:
        set_groups(uow, person, facts.groups)
    uow.session.flush()
    return person


def _add_alias(uow: UnitOfWork, person: Person, alias: str) -> None:
    alias = normalise_email(alias)
    if alias == person.email:
        return
    _claim_name(uow, person, alias, "address")
    existing = uow.session.scalars(select(PersonAlias).where(PersonAlias.email == alias)).first()
    if existing is None:
        uow.session.add(PersonAlias(person_id=person.id, email=alias))
        uow.session.flush()


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
    if uow.employee_only:
        raise PermissionDenied(
            f"this action needs {permission}, and this session carries no role: roles apply "
            "only to sign-ins with single sign-on or a password, never to an email link"
        )
    person = find_person(uow, uow.actor)
    if person is None:
        raise PermissionDenied(f"{uow.actor} is not a known admin; see `appwarden admin create`")
    granted = permissions_of(uow, person.id)
    if permission not in granted and Permission.ADMIN not in granted:
        raise PermissionDenied(f"{person.email} lacks the permission {permission}")
    return person
