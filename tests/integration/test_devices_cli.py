"""`appwarden devices list|show` and `appwarden people show` on the reference organisation, on
both stores: the same use cases as the read API, so `--json` is what the API answers."""

from __future__ import annotations

from urllib.parse import quote

from fastapi.testclient import TestClient
from tests.conftest import api_token, bearer

from appwarden.settings import Settings
from appwarden.vocabulary import Permission
from appwarden.web.app import create_app

AFTER_DEADLINE = "2020-07-11T12:00:00-07:00"
ALICE_PHONE = "udid:00008110-000A1B2C3D4E801E"


def test_json_is_what_the_api_answers(store, demo, cli, tmp_path):
    reader = api_token(store, Permission.READ)
    settings = Settings(
        database_url=store.url,
        env="test",
        clock=f"fixed:{AFTER_DEADLINE}",
        maildir=tmp_path / "mail",
    )
    at = ("--at", AFTER_DEADLINE)
    with TestClient(create_app(settings)) as client:

        def api(path: str, **params: str) -> object:
            response = client.get(path, params=params, headers=bearer(reader))
            assert response.status_code == 200, response.text
            return response.json()

        listed = cli("devices", "list", "--platform", "ios", "--limit", "2", "--json", *at)
        assert listed.code == 0, listed.err
        assert listed.json() == api("/v1/devices", platform="ios", limit="2")
        cursor = listed.json()["next_cursor"]
        rest = cli("devices", "list", "--platform", "ios", "--cursor", cursor, "--json", *at)
        assert rest.json() == api("/v1/devices", platform="ios", cursor=cursor)
        shown = cli("devices", "show", ALICE_PHONE, "--json", *at)
        assert shown.json() == api(f"/v1/devices/{quote(ALICE_PHONE, safe='')}")
        person = cli("people", "show", "EXAMPLE\\carol", "--json", *at)
        assert person.json() == api("/v1/people/carol@example.com")


def test_tables_for_people(demo, cli):
    at = ("--at", AFTER_DEADLINE)
    listed = cli("devices", "list", "--state", "non_compliant", *at)
    assert listed.code == 0, listed.err
    rows = [line for line in listed.out.splitlines() if "@example.com" in line]
    assert len(rows) == 2
    assert "tiktok-mobile-email v1: non_compliant" in rows[0]
    paged = cli("devices", "list", "--limit", "3", *at)
    assert "more: --cursor " in paged.err

    shown = cli("devices", "show", "BOB-PIXEL-7731", *at)
    assert shown.code == 0, shown.err
    assert "owner bob@example.com" in shown.out
    assert "enterprise_specific_id:BOB-PIXEL-7731" in shown.out
    assert "cli import" in shown.out  # the reports' writer
    assert "absence proven" in shown.out

    person = cli("people", "show", "alice@example.com", *at)
    assert person.code == 0, person.err
    assert "Alice Adams" in person.out
    assert "example\\alice" in person.out
    assert "Alice's MacBook" in person.out


def test_bad_arguments_are_named_and_unknown_references_exit_3(demo, cli):
    bad = cli("devices", "list", "--limit", "0", "--cursor", "zz", "--state", "bad")
    assert bad.code == 2
    named = [line.split(":", 1)[0] for line in bad.err.splitlines()]
    assert named == ["--state", "--cursor", "--limit"]
    unknown = cli("devices", "show", "udid:NO-SUCH-DEVICE")
    assert unknown.code == 3
    assert "NO-SUCH-DEVICE" in unknown.err
    nobody = cli("people", "show", "nobody@example.com")
    assert nobody.code == 3
    unknown_policy = cli("devices", "list", "--policy", "no-such-policy")
    assert unknown_policy.code == 2
    assert unknown_policy.err.startswith("--policy:")
