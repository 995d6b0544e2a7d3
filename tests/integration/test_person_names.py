"""The names people answer to at the gate: addresses, aliases and account names (UPN,
DOMAIN\\sam), set by sources and by admins. No two people may answer to one name — a source
cannot take another person's address or account for someone else — and admins' changes are
audited."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select
from tests.conftest import table_digest

from appwarden.audit.models import AuditEntry
from appwarden.db.uow import unit_of_work
from appwarden.identity.models import Person
from appwarden.identity.service import people_named
from appwarden.timeutil import parse_instant

AT = "2020-07-11T12:00:00Z"
ADMIN = "security.lead@example.com"


def people_file(tmp_path: Path, name: str, people: list[dict]) -> str:
    path = tmp_path / name
    document = {"format": "appwarden.inventory/v1", "source": "hr", "people": people}
    path.write_text(json.dumps(document))
    return str(path)


def named(store, name: str) -> list[str]:
    with unit_of_work(store.engine, now=parse_instant(AT), write=False) as uow:
        return [uow.session.get(Person, i).email for i in people_named(uow, name)]


def test_sources_give_account_names_matched_exactly(store, cli, tmp_path):
    first = people_file(
        tmp_path,
        "people.json",
        [
            {"email": "bob@example.com", "accounts": ["EXAMPLE\\Bob", "bob@corp.example"]},
            {"email": "carol@example.com", "aliases": ["c.clark@example.com"]},
        ],
    )
    assert cli("import", "native", first, "--at", AT).code == 0
    assert named(store, "example\\bob") == ["bob@example.com"]
    assert named(store, "bob@corp.example") == ["bob@example.com"]
    assert named(store, "c.clark@example.com") == ["carol@example.com"]
    for near_miss in ("bob", "example\\bob.", "bob+x@corp.example", "example/bob"):
        assert named(store, near_miss) == [], near_miss


def test_a_source_cannot_give_someone_elses_name_to_another_person(store, cli, tmp_path):
    setup = people_file(
        tmp_path,
        "setup.json",
        [
            {"email": "bob@example.com", "accounts": ["EXAMPLE\\bob"]},
            {"email": "carol@example.com", "aliases": ["c.clark@example.com"]},
        ],
    )
    assert cli("import", "native", setup, "--at", AT).code == 0
    before = table_digest(store.engine)
    for stolen in (
        {"email": "mallory@example.com", "accounts": ["example\\BOB"]},
        {"email": "mallory@example.com", "aliases": ["c.clark@example.com"]},
        {"email": "mallory@example.com", "aliases": ["bob@example.com"]},
        {"email": "mallory@example.com", "accounts": ["carol@example.com"]},
    ):
        path = people_file(tmp_path, "steal.json", [stolen])
        result = cli("import", "native", path, "--at", AT)
        assert result.code != 0, stolen
        assert "already belongs to" in result.err, result.err
        assert table_digest(store.engine) == before, stolen
    assert named(store, "example\\bob") == ["bob@example.com"]
    assert named(store, "c.clark@example.com") == ["carol@example.com"]


def test_admins_add_and_remove_account_names_audited(store, cli):
    assert cli("admin", "create", ADMIN, "--role", "admin", "--at", AT).code == 0
    assert cli("admin", "create", "bob@example.com", "--role", "viewer", "--at", AT).code == 0
    refused = cli("admin", "account", "add", ADMIN, "EXAMPLE\\sec", "--as", "bob@example.com")
    assert refused.code != 0
    added = cli("admin", "account", "add", "bob@example.com", "EXAMPLE\\bob", "--as", ADMIN)
    assert added.code == 0, added.err
    assert "example\\bob" in added.err
    assert named(store, "EXAMPLE\\BOB") == ["bob@example.com"]
    taken = cli("admin", "account", "add", ADMIN, "example\\bob", "--as", ADMIN)
    assert taken.code != 0
    assert "already belongs to bob@example.com" in taken.err
    removed = cli("admin", "account", "remove", "bob@example.com", "EXAMPLE\\bob", "--as", ADMIN)
    assert removed.code == 0, removed.err
    assert named(store, "example\\bob") == []
    assert cli("admin", "account", "remove", "bob@example.com", "nope", "--as", ADMIN).code != 0
    with unit_of_work(store.engine, now=parse_instant(AT), write=False) as uow:
        changes = list(
            uow.session.scalars(select(AuditEntry).where(AuditEntry.action == "person.accounts"))
        )
    assert [(e.actor, e.before, e.after) for e in changes] == [
        (ADMIN, {"accounts": []}, {"accounts": ["example\\bob"]}),
        (ADMIN, {"accounts": ["example\\bob"]}, {"accounts": []}),
    ]
