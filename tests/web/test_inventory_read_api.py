"""What inventory taught us, read over HTTP (`GET /v1/devices`, `GET /v1/devices/{device}`,
`GET /v1/people/{email}`) on the reference organisation, on both stores."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from fastapi.testclient import TestClient
from tests.conftest import api_token, bearer, statements_sent

from appwarden.db.uow import unit_of_work
from appwarden.devices.schemas import DeviceFacts, InventoryBatch, ReportFacts
from appwarden.settings import Settings
from appwarden.usecases.ingest import ingest
from appwarden.usecases.inventory import DeviceFilters, device_page
from appwarden.vocabulary import EvidenceKind, FormFactor, Ownership, Permission, Platform
from appwarden.web.app import create_app

ALICE_PHONE = "udid:00008110-000A1B2C3D4E801E"
AFTER_DEADLINE = "2020-07-11T12:00:00-07:00"
BEFORE_DEADLINE = "2020-07-10T12:00:00-07:00"
NOW = datetime(2020, 7, 11, 19, 0, tzinfo=UTC)
EVERY_DEVICE = {
    "Alice's iPhone",
    "Alice's MacBook",
    "Bob's Pixel",
    "Carol's Galaxy",
    "Dave's iPhone",
    "Erin's tablet",
    "Frank's iPhone",
}


@contextmanager
def _client(store, tmp_path: Path, clock: str = AFTER_DEADLINE) -> Iterator[TestClient]:
    settings = Settings(
        database_url=store.url, env="test", clock=f"fixed:{clock}", maildir=tmp_path / "mail"
    )
    with TestClient(create_app(settings)) as client:
        yield client


def _names(client: TestClient, secret: str, **params: str) -> set[str]:
    """The names of the devices `GET /v1/devices` lists with these filters (all on one page)."""
    response = client.get("/v1/devices", params=params, headers=bearer(secret))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_cursor"] is None
    return {row["name"] for row in body["devices"]}


def test_each_filter_narrows_the_reference_organisation(store, demo, tmp_path):
    reader = api_token(store, Permission.READ)
    with _client(store, tmp_path) as client:
        assert _names(client, reader) == EVERY_DEVICE
        alices = {"Alice's iPhone", "Alice's MacBook"}
        assert _names(client, reader, person="alice@example.com") == alices
        assert _names(client, reader, person="EXAMPLE\\Alice") == alices  # an account name
        assert _names(client, reader, person="nobody@example.com") == set()
        assert _names(client, reader, identifier=ALICE_PHONE) == {"Alice's iPhone"}
        assert _names(client, reader, identifier="bob-pixel-7731") == {"Bob's Pixel"}
        assert _names(client, reader, platform="android") == {
            "Bob's Pixel",
            "Carol's Galaxy",
            "Erin's tablet",
        }
        assert _names(client, reader, source="mdm-export") == EVERY_DEVICE
        assert _names(client, reader, source="intune") == set()
        assert _names(client, reader, state="non_compliant") == {"Alice's iPhone", "Carol's Galaxy"}
        assert _names(client, reader, state="action_required") == set()
        assert _names(client, reader, state="exempt") == {"Frank's iPhone"}
        assert _names(client, reader, state="unknown") == {"Dave's iPhone"}
        assert _names(client, reader, state="compliant") == {"Bob's Pixel"}
        out_of_scope = {"Alice's MacBook", "Erin's tablet"}
        assert _names(client, reader, state="not_applicable") == out_of_scope
        policy = "tiktok-mobile-email"
        assert _names(client, reader, policy=policy) == EVERY_DEVICE - out_of_scope
        assert _names(client, reader, policy=policy, state="exempt") == {"Frank's iPhone"}
        both = _names(
            client, reader, platform="ios", state="non_compliant", person="alice@example.com"
        )
        assert both == {"Alice's iPhone"}
    # Before the deadline the same stored states read as action_required.
    with _client(store, tmp_path, BEFORE_DEADLINE) as client:
        assert _names(client, reader, state="action_required") == {
            "Alice's iPhone",
            "Carol's Galaxy",
        }
        assert _names(client, reader, state="non_compliant") == set()


@pytest.mark.parametrize("clock", [BEFORE_DEADLINE, AFTER_DEADLINE])
def test_a_rows_states_agree_with_the_devices_fresh_evaluation(store, demo, tmp_path, clock):
    reader = api_token(store, Permission.READ)
    with _client(store, tmp_path, clock) as client:
        rows = client.get("/v1/devices", headers=bearer(reader)).json()["devices"]
        for row in rows:
            detail = client.get(
                f"/v1/devices/{quote(row['device'], safe='')}", headers=bearer(reader)
            )
            in_scope = [s for s in detail.json()["states"] if s["state"] != "not_applicable"]
            assert row["states"] == in_scope, row["name"]


def test_a_device_shows_every_report_with_its_source_coverage_and_writer(store, demo, tmp_path):
    reader = api_token(store, Permission.READ)
    writer = api_token(store, Permission.INVENTORY_WRITE, name="mdm-push")
    check = {
        "format": "appwarden.inventory/v1",
        "devices": [
            {
                "identifiers": [{"namespace": "udid", "value": ALICE_PHONE.split(":")[1]}],
                "report": {
                    "evidence_kind": "targeted_check",
                    "observed_at": "2020-07-11T18:30:00Z",
                    "checked": [
                        {"namespace": "apple_bundle_id", "value": "com.zhiliaoapp.musically"}
                    ],
                    "apps": [],
                },
            }
        ],
    }
    with _client(store, tmp_path) as client:
        before = client.get(f"/v1/devices/{ALICE_PHONE}", headers=bearer(reader))
        assert before.status_code == 200, before.text
        body = before.json()
        assert body["owner"] == {"email": "alice@example.com", "display_name": "Alice Adams"}
        assert body["resources"] == ["email"]
        assert [i["namespace"] for i in body["identifiers"]] == ["udid", "eas_device_id"]
        assert {i["source"] for i in body["identifiers"]} == {"mdm-export"}
        assert body["identifiers"][0]["first_seen_at"] == "2020-06-28T16:00:00Z"
        assert body["reports_total"] == 2
        assert [r["observed_at"] for r in body["reports"]] == [
            "2020-07-10T15:00:00Z",
            "2020-06-28T16:00:00Z",
        ]
        for report in body["reports"]:
            assert report["source"] == "mdm-export"
            assert report["evidence_kind"] == "inventory"
            assert report["coverage"]["namespaces"] == ["apple_bundle_id"]
            assert report["token"] is None  # CLI imports
            assert report["applied"] is True
        [state] = body["states"]
        assert (state["state"], state["since"]) == ("non_compliant", "2020-07-11T06:59:59Z")

        posted = client.post("/v1/inventory", content=orjson.dumps(check), headers=bearer(writer))
        assert posted.status_code == 200, posted.text
        after = client.get(f"/v1/devices/{quote(ALICE_PHONE, safe='')}", headers=bearer(reader))
        newest = after.json()["reports"][0]
        assert newest["evidence_kind"] == "targeted_check"
        assert newest["token"]["name"] == "mdm-push"
        assert isinstance(newest["token"]["id"], int)
        assert newest["coverage"]["namespaces"] == ["apple_bundle_id"]
        assert newest["coverage"]["hash"] != body["reports"][0]["coverage"]["hash"]
        assert newest["observed_at"] == "2020-07-11T18:30:00Z"
        assert newest["received_at"] == "2020-07-11T19:00:00Z"
        assert after.json()["states"][0]["state"] == "compliant"  # absence proven since


def test_a_device_shows_its_open_conflicts_and_the_source_that_offered_them(
    store, demo, cli, tmp_path
):
    offered = tmp_path / "exchange.json"
    carol = {
        "identifiers": [{"namespace": "eas_device_id", "value": "CA201C0FFEE0000000000000000A2210"}]
    }
    offered.write_bytes(
        orjson.dumps(
            {
                "format": "appwarden.inventory/v1",
                "source": "exchange",
                "devices": [{**carol, "resources": [], "report": {"evidence_kind": "none"}}],
            }
        )
    )
    imported = cli("import", "native", str(offered), "--at", "2020-07-11T11:00:00-07:00")
    assert imported.code == 0, imported.err
    reader = api_token(store, Permission.READ)
    with _client(store, tmp_path) as client:
        detail = client.get("/v1/devices/CAROL-GALAXY-2210", headers=bearer(reader)).json()
        [conflict] = detail["conflicts"]
        assert (conflict["fact"], conflict["source"]) == ("resources", "exchange")
        assert (conflict["stored_value"], conflict["offered_value"]) == (["email"], [])
        assert detail["resources"] == ["email"]  # held, not applied
        assert _names(client, reader, source="exchange") == {"Carol's Galaxy"}  # its report
        assert detail["reports"][0]["source"] == "exchange"


def test_a_person_shows_their_names_and_devices(store, demo, tmp_path):
    reader = api_token(store, Permission.READ)
    with _client(store, tmp_path) as client:
        alice = client.get("/v1/people/Alice@Example.com", headers=bearer(reader))
        assert alice.status_code == 200, alice.text
        body = alice.json()
        assert body["email"] == "alice@example.com"
        assert body["display_name"] == "Alice Adams"
        assert body["accounts"] == ["example\\alice"]
        assert body["groups"] == ["sales"]
        assert body["time_zone"] == "America/Los_Angeles"
        assert (body["status"], body["left_at"]) == ("active", None)
        listed = client.get(
            "/v1/devices", params={"person": "alice@example.com"}, headers=bearer(reader)
        )
        assert body["devices"] == listed.json()["devices"]
        account = quote("EXAMPLE\\alice", safe="")
        by_account = client.get(f"/v1/people/{account}", headers=bearer(reader))
        assert by_account.json() == body

        unknown = [
            client.get(f"/v1/people/{quote(name, safe='')}", headers=bearer(reader))
            for name in ("nobody@example.com", "<script>@x", "x" * 2000)
        ]
        assert {r.status_code for r in unknown} == {404}
        assert {r.json()["detail"] for r in unknown} == {
            "no person has this email, alias or account name"
        }


def test_pages_walk_every_device_once(store, demo, tmp_path):
    _add_devices(store, 193)  # 200 with the reference organisation's 7
    reader = api_token(store, Permission.READ)
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    with _client(store, tmp_path) as client:
        while True:
            params = {"limit": "64", **({"cursor": cursor} if cursor else {})}
            page = client.get("/v1/devices", params=params, headers=bearer(reader)).json()
            seen += [row["id"] for row in page["devices"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert pages == 4
    assert len(seen) == 200
    assert seen == sorted(set(seen))


def test_a_page_costs_the_same_few_queries_whatever_its_size(store, demo):
    _add_devices(store, 193)

    def page(cursor: str | None, limit: int) -> Any:
        statements.clear()
        with unit_of_work(store.engine, now=NOW, write=False) as uow:
            result = device_page(uow, DeviceFilters(state="unknown"), cursor, limit)
            return result, len(statements)

    with statements_sent(store.engine) as statements:
        first, first_cost = page(None, 100)
        second, second_cost = page(first.next_cursor, 100)
        small, small_cost = page(None, 10)
    assert len(first.devices) == 100
    assert second.next_cursor is None
    assert len(small.devices) == 10
    assert {row["states"][0]["state"] for row in first.devices + second.devices} == {"unknown"}
    assert first_cost == second_cost == small_cost
    assert first_cost <= 8, statements


def _add_devices(store, count: int) -> None:
    """`count` more iPhones of erin's that hold email and have reported nothing the policy can
    see (managed apps only): in scope, `unknown`."""
    reports = tuple(
        ReportFacts(
            device=DeviceFacts(
                identifiers=(("serial", f"EXTRA{n:05d}"),),
                platform=Platform.IOS,
                form_factor=FormFactor.PHONE,
                ownership=Ownership.CORPORATE,
                owner_email="erin@example.com",
                resources=("email",),
                name=f"extra {n}",
            ),
            source="mdm-export",
            evidence_kind=EvidenceKind.MANAGED_ONLY,
            observed_at=NOW,
            apps=(),
        )
        for n in range(count)
    )
    with unit_of_work(store.engine, now=NOW) as uow:
        ingest(uow, InventoryBatch(source="mdm-export", reports=reports))


def test_refusals_need_a_token_with_read_and_name_bad_arguments(store, demo, tmp_path):
    gate = api_token(store, Permission.DECISIONS_READ, name="gate")
    reader = api_token(store, Permission.READ)
    paths = ["/v1/devices", f"/v1/devices/{ALICE_PHONE}", "/v1/people/alice@example.com"]
    with _client(store, tmp_path) as client:
        for path in paths:
            assert client.get(path).status_code == 401
            assert client.get(path, headers=bearer(gate)).status_code == 403

        def problems(**params: str) -> list[tuple[str, str]]:
            response = client.get("/v1/devices", params=params, headers=bearer(reader))
            assert response.status_code == 422
            assert response.headers["content-type"] == "application/problem+json"
            return [(e["where"], e["message"]) for e in response.json()["errors"]]

        assert [w for w, _ in problems(cursor="bm9wZQ")] == ["query:cursor"]
        assert [w for w, _ in problems(cursor="x" * 500)] == ["query:cursor"]
        assert problems(limit="0") == [("query:limit", "expected 1 to 1000, got 0")]
        assert [w for w, _ in problems(limit="1001")] == ["query:limit"]
        assert [w for w, _ in problems(limit="many")] == ["query:limit"]
        assert [w for w, _ in problems(plaform="ios")] == ["query:plaform"]
        assert [w for w, _ in problems(policy="no-such-policy")] == ["query:policy"]
        every = problems(platform="amiga", state="broken", cursor="?", limit="5000")
        assert [w for w, _ in every] == [
            "query:platform",
            "query:state",
            "query:cursor",
            "query:limit",
        ]
        repeated = client.get("/v1/devices?platform=ios&platform=android", headers=bearer(reader))
        assert repeated.json()["errors"] == [
            {"where": "query:platform", "message": "given more than once"}
        ]

        unknown = client.get("/v1/devices/udid:NO-SUCH-DEVICE", headers=bearer(reader))
        assert unknown.status_code == 404
        assert unknown.json()["code"] == "not_found"
        too_long = client.get(f"/v1/devices/{'x' * 2000}", headers=bearer(reader))
        assert too_long.status_code == 404
