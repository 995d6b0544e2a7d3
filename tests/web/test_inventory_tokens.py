"""An inventory:write token writes as exactly one source (and, if so limited, names devices only
by some identifier namespaces): anything else in a batch is refused with 403 naming the item,
audited, and changes nothing. The attack this closes: one token lifting carol's block by writing
as another source. And one JSON reader: the API and `appwarden import native` agree on duplicate
keys and byte order marks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from tests.conftest import table_digest

from appwarden.audit.models import AuditEntry
from appwarden.db.uow import unit_of_work
from appwarden.identity.models import ApiToken
from appwarden.identity.tokens import create_token
from appwarden.settings import Settings
from appwarden.web.app import create_app

NOW = datetime(2020, 7, 13, 19, 0, tzinfo=UTC)
CAROL_PHONE = "enterprise_specific_id:CAROL-GALAXY-2210"


def _settings(store, tmp_path: Path) -> Settings:
    return Settings(
        database_url=store.url,
        env="test",
        clock="fixed:2020-07-13T12:00:00-07:00",
        maildir=tmp_path / "mail",
    )


def _bearer(store, name: str, permissions: list[str], **binding) -> dict[str, str]:
    with unit_of_work(store.engine, now=NOW) as uow:
        _, secret = create_token(uow, name, permissions, **binding)
    return {"Authorization": f"Bearer {secret}"}


def _doc(source: str | None = None, **entries) -> bytes:
    body: dict = {"format": "appwarden.inventory/v1", **entries}
    if source is not None:
        body["source"] = source
    return orjson.dumps(body)


def _carol(**facts) -> dict:
    return {
        "identifiers": [{"namespace": "enterprise_specific_id", "value": "CAROL-GALAXY-2210"}],
        **facts,
    }


def _digest_without_audit(engine) -> str:
    """Everything but the audit log and tokens' last use: a refusal changes nothing else."""
    with engine.begin() as connection:
        connection.execute(update(ApiToken).values(last_used_at=None))
    return table_digest(engine, exclude=("audit_entry",))


def _refusals(store) -> list[AuditEntry]:
    with unit_of_work(store.engine, now=NOW, write=False) as uow:
        return list(
            uow.session.scalars(
                select(AuditEntry).where(AuditEntry.action == "inventory.refuse")
            ).all()
        )


@pytest.fixture
def app(store, tmp_path, demo):
    return create_app(_settings(store, tmp_path))


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def test_an_inventory_token_needs_a_source(cli):
    refused = cli("token", "create", "agent", "--permission", "inventory:write")
    assert refused.code == 2
    assert "--source" in refused.err
    bad = cli("token", "create", "agent", "-p", "inventory:write", "--source", "Intune!")
    assert bad.code == 2
    stray = cli("token", "create", "gate", "-p", "decisions:read", "--source", "intune")
    assert stray.code == 2  # --source binds an inventory writer only
    created = cli(
        "token", "create", "intune-push", "-p", "inventory:write", "--source", "intune",
        "--namespace", "intune_id", "--namespace", "serial", "--json",
    )  # fmt: skip
    assert created.code == 0, created.err
    assert created.json()["source"] == "intune"
    assert created.json()["namespaces"] == ["intune_id", "serial"]
    listed = cli("token", "list", "--json").json()
    assert [(t["name"], t["source"]) for t in listed] == [("intune-push", "intune")]


def test_the_attack_one_token_cannot_lift_carols_block(store, client):
    """A mail agent's token writing as the MDM, or marking carol left, or emptying her phone's
    resources: refused or held, and her phone stays blocked."""
    agent = _bearer(store, "mail-agent", ["inventory:write", "decisions:read"], source="exchange")
    url = f"/v1/decisions/{CAROL_PHONE}/email"
    assert client.get(url, headers=agent).json()["decision"] == "deny"
    before = _digest_without_audit(store.engine)

    as_mdm = client.post(
        "/v1/inventory", content=_doc("mdm-export", devices=[_carol(resources=[])]), headers=agent
    )
    assert as_mdm.status_code == 403
    assert as_mdm.headers["content-type"] == "application/problem+json"
    assert as_mdm.json()["errors"] == [
        {
            "where": "$.source",
            "message": "this token writes as the source 'exchange', not 'mdm-export'",
        }
    ]
    in_report = client.post(
        "/v1/inventory",
        content=_doc(
            devices=[
                _carol(),
                _carol(report={"source": "mdm-export", "evidence_kind": "inventory", "apps": []}),
            ]
        ),
        headers=agent,
    )
    assert in_report.status_code == 403
    assert [e["where"] for e in in_report.json()["errors"]] == ["$.devices[1].report.source"]
    assert _digest_without_audit(store.engine) == before  # all or nothing
    assert [e.object_id for e in _refusals(store)] == ["1", "1"]

    # As itself: accepted, but its facts about carol are held, not applied.
    own = client.post(
        "/v1/inventory",
        content=_doc(
            people=[{"email": "carol@example.com", "status": "left"}],
            devices=[_carol(resources=[], owner="frank@example.com", status="retired")],
        ),
        headers=agent,
    )
    assert own.status_code == 200, own.text
    assert client.get(url, headers=agent).json()["decision"] == "deny"
    reader = _bearer(store, "viewer", ["read"])
    conflicts = client.get("/v1/conflicts", headers=reader).json()["conflicts"]
    assert sorted(c["fact"] for c in conflicts) == [
        "device_status",
        "owner",
        "person_status",
        "resources",
    ]
    assert {c["source"] for c in conflicts} == {"exchange"}
    assert client.get("/v1/conflicts", headers=agent).status_code == 403  # needs read


def test_a_token_limited_to_namespaces_may_not_name_a_device_otherwise(store, client):
    intune = _bearer(
        store, "intune", ["inventory:write"], source="intune", namespaces=["intune_id", "serial"]
    )
    before = _digest_without_audit(store.engine)
    response = client.post("/v1/inventory", content=_doc(devices=[_carol()]), headers=intune)
    assert response.status_code == 403
    [error] = response.json()["errors"]
    assert error["where"] == "$.devices[0].identifiers[0].namespace"
    assert "enterprise_specific_id" in error["message"]
    assert _digest_without_audit(store.engine) == before
    allowed = _doc(devices=[{"identifiers": [{"namespace": "serial", "value": "X1"}]}])
    assert client.post("/v1/inventory", content=allowed, headers=intune).status_code == 200


def test_a_token_from_before_sources_is_refused_and_told_to_recreate(store, client):
    """The migration leaves old inventory tokens without a source: they fail closed."""
    headers = _bearer(store, "old-mdm", ["read"])
    with unit_of_work(store.engine, now=NOW) as uow:
        uow.session.execute(update(ApiToken).values(permissions=["inventory:write"]))
    before = _digest_without_audit(store.engine)
    response = client.post("/v1/inventory", content=_doc(devices=[_carol()]), headers=headers)
    assert response.status_code == 403
    assert "re-create it with `appwarden token create" in response.json()["detail"]
    assert _digest_without_audit(store.engine) == before
    assert len(_refusals(store)) == 1
    admin = _bearer(store, "root", ["admin"])  # admin implies inventory:write, but no source
    assert client.post("/v1/inventory", content=_doc(), headers=admin).status_code == 403


# ── one JSON reader ────────────────────────────────────────────────────────────────────────────

DUPLICATE = (
    b'{"format": "appwarden.inventory/v1", "source": "mdm-export", "devices": [{"identifiers": '
    b'[{"namespace": "enterprise_specific_id", "value": "CAROL-GALAXY-2210"}], "report": '
    b'{"evidence_kind": "inventory", "apps": [{"namespace": "android_package", "value": '
    b'"com.zhiliaoapp.musically.go"}], "apps": []}}]}'
)
BOM = b"\xef\xbb\xbf" + (
    b'{"format": "appwarden.inventory/v1", "source": "mdm-export", "devices": [{"identifiers": '
    b'[{"namespace": "serial", "value": "BOM0001"}]}]}'
)


@pytest.mark.parametrize(
    ("body", "accepted"),
    [(DUPLICATE, False), (BOM, True), (b"\xef\xbb\xbf" + DUPLICATE, False)],
    ids=["duplicate key", "byte order mark", "both"],
)
def test_the_api_and_the_cli_read_the_same_bytes_the_same_way(
    store, cli, client, tmp_path, body, accepted
):
    mdm = _bearer(store, "mdm", ["inventory:write"], source="mdm-export")
    before = _digest_without_audit(store.engine)
    response = client.post("/v1/inventory", content=body, headers=mdm)
    path = tmp_path / "same.json"
    path.write_bytes(body)
    imported = cli("import", "native", "--strict", str(path))
    assert (response.status_code == 200) is accepted, response.text
    assert (imported.code == 0) is accepted, imported.err
    if accepted:
        return
    assert _digest_without_audit(store.engine) == before
    [api_error] = response.json()["errors"]
    message = "duplicate key 'apps' in $.devices[0].report"
    assert api_error == {"where": "$.devices[0].report.apps", "message": message}
    column = body.index(b'"apps": []') + 1 - (3 if body.startswith(b"\xef\xbb\xbf") else 0)
    assert f"same.json:1:{column}: {message}" in imported.err
