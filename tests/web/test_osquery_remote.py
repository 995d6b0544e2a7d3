"""osquery's TLS remote API, replayed by a client that sends the request bodies osquery sends
(formats.md §1.3; no osqueryd package exists to run): enroll, config, distributed read/write and
the logger, with differential chains carried across requests, counter gaps and epoch changes. A
wrong node key or enroll secret changes nothing; hostile bodies are refused and change nothing."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests.conftest import api_token, bearer, table_digest

from appwarden.devices.models import DeviceIdentifier, Observation, Report
from appwarden.settings import Settings
from appwarden.vocabulary import Permission
from appwarden.web.app import create_app

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sources" / "osquery"
SECRET = "enroll-secret-of-the-fleet-0123"
HOST = "4C4C4544-0042-3510-8051-B7C04F4E3732"
SERIAL = "C02ZK1ABMD6M"
T0 = 1772546531  # the logger example's unixTime: Tue Mar  3 14:02:11 2026 UTC
HOUR = 3600
# The logger example's row (formats.md §1.3), and two more apps in the same columns.
ZOOM = {"name": "zoom.us.app", "bundle_identifier": "us.zoom.xos", "bundle_short_version": "6.3.6"}
TIKTOK = {
    "name": "TikTok.app",
    "bundle_identifier": "com.zhiliaoapp.musically",
    "bundle_short_version": "38.4.0",
}
SLACK = {"name": "Slack.app", "bundle_identifier": "com.tinyspeck.slackmacgap"}
HOST_DETAILS = {
    "os_version": {"name": "macOS", "version": "15.3", "major": "15", "platform": "darwin"},
    "osquery_info": {"version": "5.14.1"},
    "system_info": {"uuid": HOST, "hardware_serial": SERIAL, "computer_name": "jdoe-mbp"},
    "platform_info": {"vendor": "Apple Inc."},
}
APP_TABLES = {"apps", "programs", "deb_packages", "rpm_packages", "chrome_extensions"}


def _settings(store, tmp_path: Path, now: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": store.url,
        "env": "test",
        "clock": f"fixed:{now}",
        "maildir": tmp_path / "mail",
        "osquery_enroll_secret": SECRET,
        **overrides,
    }
    return Settings(**values)


class Osquery:
    """What osqueryd sends, request by request."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def post(self, path: str, body: Any) -> dict[str, Any]:
        response = self.client.post(path, json=body)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        return response.json()

    def enroll(self, secret: str = SECRET) -> str:
        answer = self.post(
            "/osquery/enroll",
            {
                "enroll_secret": secret,
                "host_identifier": "jdoe-mbp.local",
                "host_details": HOST_DETAILS,
            },
        )
        assert answer["node_invalid"] is False
        return str(answer["node_key"])

    def log(self, node_key: str, lines: list[dict[str, Any]], log_type: str = "result") -> None:
        answer = self.post(
            "/osquery/log", {"node_key": node_key, "log_type": log_type, "data": lines}
        )
        assert answer == {"node_invalid": False}


def event(
    action: str, row: dict[str, Any], *, counter: int, epoch: int = 0, unix: int = T0
) -> dict[str, Any]:
    """An event-format result line as the logger example writes it (no host_uuid decoration)."""
    return {
        "name": "pack_inventory_macos_apps",
        "hostIdentifier": "jdoe-mbp.local",
        "calendarTime": "Tue Mar  3 14:02:11 2026 UTC",
        "unixTime": unix,
        "epoch": epoch,
        "counter": counter,
        "numerics": False,
        "columns": row,
        "action": action,
    }


def batch(
    added: list[dict[str, Any]], removed: list[dict[str, Any]], *, counter: int, unix: int
) -> dict[str, Any]:
    """A batch-format line (`--logger_event_type=false`, as appwarden's config asks)."""
    line = event("added", {}, counter=counter, unix=unix)
    del line["columns"], line["action"]
    return line | {"diffResults": {"added": added, "removed": removed}}


@pytest.fixture
def make_client(store, tmp_path) -> Iterator[Any]:
    clients: list[TestClient] = []

    def make(now: str = "2026-03-04T00:00:00Z", **overrides: Any) -> TestClient:
        client = TestClient(create_app(_settings(store, tmp_path, now, **overrides)))
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def osquery(make_client) -> Osquery:
    return Osquery(make_client())


def reports(store) -> list[tuple[str, list[str], int, datetime]]:
    """(evidence, coverage, app count, observed_at) of each osquery report, in order."""
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(
                Report.evidence_kind,
                Report.coverage_namespaces,
                Report.app_count,
                Report.observed_at,
            )
            .where(Report.source == "osquery")
            .order_by(Report.id)
        ).all()
    return [(kind, list(coverage), count, at) for kind, coverage, count, at in rows]


def present(store) -> set[str]:
    """The bundle ids the osquery feed holds as present now."""
    with store.engine.connect() as connection:
        values = connection.scalars(
            select(Observation.value).where(Observation.source == "osquery")
        ).all()
    return set(values)


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


# ── enroll, config, first contact ───────────────────────────────────────────────────────────


def test_enroll_then_config_names_the_host_and_schedules_every_app_table(store, osquery):
    node_key = osquery.enroll()
    config = osquery.post("/osquery/config", {"node_key": node_key})
    assert config["node_invalid"] is False
    assert config["decorators"] == {"load": ["SELECT uuid AS host_uuid FROM system_info;"]}
    schedule = config["schedule"]
    for table in ("system_info", "os_version"):
        assert f"FROM {table};" in schedule[f"appwarden_{table}"]["query"]
    for table in APP_TABLES:  # a differential query and a daily full result of each
        differential = schedule[f"appwarden_{table}"]
        snapshot = schedule[f"appwarden_{table}_snapshot"]
        assert "snapshot" not in differential
        assert snapshot["snapshot"] is True
        assert differential["query"] == snapshot["query"]
        assert f" {table}" in snapshot["query"]
        assert "WHERE" not in snapshot["query"]
    assert config["options"]["logger_event_type"] is False  # a run is never split in two


def test_first_contact_asks_who_the_host_is_and_its_apps_and_the_answers_are_a_report(
    store, make_client
):
    osquery = Osquery(make_client(now="2026-03-03T15:00:00Z"))
    node_key = osquery.enroll()
    queries = osquery.post("/osquery/distributed/read", {"node_key": node_key})["queries"]
    assert set(queries) == {
        "appwarden_first_system_info",
        "appwarden_first_os_version",
        "appwarden_first_apps",
        "appwarden_first_chrome_extensions",
    }
    assert queries["appwarden_first_apps"].startswith("SELECT name, path, bundle_identifier")
    # Handed out once: the next read has nothing new.
    assert osquery.post("/osquery/distributed/read", {"node_key": node_key})["queries"] == {}
    answer = osquery.post(
        "/osquery/distributed/write",
        {
            "node_key": node_key,
            "queries": {
                "appwarden_first_apps": [TIKTOK, ZOOM],
                "appwarden_first_system_info": [HOST_DETAILS["system_info"]],
                "appwarden_first_chrome_extensions": [],
                "not_asked": [SLACK],  # an answer to a question nobody asked is ignored
            },
            "statuses": {
                "appwarden_first_apps": 0,
                "appwarden_first_system_info": 0,
                "appwarden_first_chrome_extensions": 1,
                "not_asked": 0,
            },
            "messages": {"appwarden_first_chrome_extensions": "no such table"},
        },
    )
    assert answer == {"node_invalid": False}
    now = datetime(2026, 3, 3, 15, tzinfo=UTC)
    assert reports(store) == [("inventory", ["apple_bundle_id"], 2, now)]
    assert present(store) == {"com.zhiliaoapp.musically", "us.zoom.xos"}
    with store.engine.connect() as connection:
        identifiers = set(
            connection.execute(select(DeviceIdentifier.namespace, DeviceIdentifier.value))
        )
    assert identifiers == {("osquery_host", HOST), ("serial", SERIAL)}
    # Answered (or failed) queries are not asked again; the unanswered one is, later.
    assert osquery.post("/osquery/distributed/read", {"node_key": node_key})["queries"] == {}


# ── the logger: chains across requests ──────────────────────────────────────────────────────


def test_the_documented_logger_body_is_a_full_result_for_the_nodes_host(store, osquery):
    """The logger example's line has no host_uuid decoration: the node's host is supplied."""
    node_key = osquery.enroll()
    body = json.loads((FIXTURES / "logger_post.json").read_text())
    osquery.log(node_key, body["data"])
    assert reports(store) == [("inventory", ["apple_bundle_id"], 1, at(T0))]
    assert present(store) == {"us.zoom.xos"}


def test_differential_runs_across_requests_keep_proving_absence_until_a_gap(store, osquery):
    node_key = osquery.enroll()
    osquery.log(node_key, [event("added", ZOOM, counter=0)])
    osquery.log(node_key, [event("added", TIKTOK, counter=1, unix=T0 + HOUR)])
    osquery.log(node_key, [event("removed", ZOOM, counter=2, unix=T0 + 2 * HOUR)])
    full = ["apple_bundle_id"]
    assert reports(store) == [
        ("inventory", full, 1, at(T0)),
        ("inventory", full, 2, at(T0 + HOUR)),  # the whole set, from one added line
        ("inventory", full, 1, at(T0 + 2 * HOUR)),  # zoom removed: proven absent
    ]
    assert present(store) == {"com.zhiliaoapp.musically"}

    # Counter 3 never arrived: counter 4 proves nothing absent and lists only what it added.
    osquery.log(node_key, [event("added", SLACK, counter=4, unix=T0 + 4 * HOUR)])
    assert reports(store)[-1] == ("inventory", [], 1, at(T0 + 4 * HOUR))
    assert present(store) == {"com.zhiliaoapp.musically", "com.tinyspeck.slackmacgap"}
    # Nor does the run after it: the chain stays broken until a full result.
    osquery.log(node_key, [event("removed", SLACK, counter=5, unix=T0 + 5 * HOUR)])
    assert reports(store)[-1][1] == []


def test_an_epoch_change_breaks_the_chain_until_its_own_counter_zero_run(store, osquery):
    node_key = osquery.enroll()
    osquery.log(node_key, [event("added", ZOOM, counter=0)])
    osquery.log(node_key, [event("added", TIKTOK, counter=1, epoch=1, unix=T0 + HOUR)])
    assert reports(store)[-1] == ("inventory", [], 1, at(T0 + HOUR))
    # The new epoch's full result (batch format) restores the coverage.
    osquery.log(node_key, [batch([TIKTOK], [], counter=0, unix=T0 + 2 * HOUR) | {"epoch": 1}])
    assert reports(store)[-1] == ("inventory", ["apple_bundle_id"], 1, at(T0 + 2 * HOUR))
    assert present(store) == {"com.zhiliaoapp.musically"}


def test_one_run_split_over_two_requests_is_one_run(store, osquery):
    node_key = osquery.enroll()
    osquery.log(node_key, [event("added", ZOOM, counter=0)])
    osquery.log(node_key, [event("added", TIKTOK, counter=1, unix=T0 + HOUR)])
    osquery.log(node_key, [event("added", SLACK, counter=1, unix=T0 + HOUR)])  # the same run
    assert reports(store)[-1] == ("inventory", ["apple_bundle_id"], 3, at(T0 + HOUR))


def test_a_line_that_cannot_be_read_breaks_its_chain_and_the_request_still_succeeds(store, osquery):
    node_key = osquery.enroll()
    osquery.log(node_key, [event("added", ZOOM, counter=0)])
    bad = event("added", TIKTOK, counter=1, unix=T0 + HOUR) | {"unixTime": "soon"}
    osquery.log(node_key, [bad, event("added", SLACK, counter=2, unix=T0 + 2 * HOUR)])
    assert reports(store)[-1] == ("inventory", [], 1, at(T0 + 2 * HOUR))


def test_a_line_naming_another_host_is_refused_and_breaks_the_chain(store, osquery):
    node_key = osquery.enroll()
    osquery.log(node_key, [event("added", ZOOM, counter=0)])
    other = event("added", TIKTOK, counter=1, unix=T0 + HOUR) | {
        "decorations": {"host_uuid": "11111111-2222-3333-4444-555555555555"}
    }
    osquery.log(node_key, [other, event("added", SLACK, counter=2, unix=T0 + 2 * HOUR)])
    assert reports(store)[-1] == ("inventory", [], 1, at(T0 + 2 * HOUR))
    assert "com.zhiliaoapp.musically" not in present(store)
    with store.engine.connect() as connection:
        hosts = connection.scalars(
            select(DeviceIdentifier.value).where(DeviceIdentifier.namespace == "osquery_host")
        ).all()
    assert hosts == [HOST]


def test_a_gzip_logger_body_is_read(store, osquery):
    node_key = osquery.enroll()
    body = json.dumps(
        {"node_key": node_key, "log_type": "result", "data": [event("added", ZOOM, counter=0)]}
    )
    response = osquery.client.post(
        "/osquery/log", content=gzip.compress(body.encode()), headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 200, response.text
    assert reports(store) == [("inventory", ["apple_bundle_id"], 1, at(T0))]


def test_status_logs_are_counted_not_stored(store, osquery):
    node_key = osquery.enroll()
    before = table_digest(store.engine)
    status = {"hostIdentifier": "jdoe-mbp.local", "calendarTime": "Tue Mar  3 14:02:11 2026 UTC",
              "unixTime": T0, "severity": 0, "filename": "scheduler.cpp", "line": 83,
              "message": "Executing scheduled query", "version": "5.14.1"}  # fmt: skip
    osquery.log(node_key, [status, status], log_type="status")
    assert table_digest(store.engine) == before
    metrics = osquery.client.get("/metrics", headers=bearer(api_token(store, Permission.READ)))
    assert "appwarden_osquery_status_lines_total 2.0" in metrics.text


# ── credentials ─────────────────────────────────────────────────────────────────────────────


def test_a_wrong_node_key_or_enroll_secret_changes_nothing(store, osquery):
    node_key = osquery.enroll()
    osquery.log(node_key, [event("added", ZOOM, counter=0)])
    before = table_digest(store.engine)
    answer = osquery.post(
        "/osquery/enroll",
        {"enroll_secret": SECRET[:-1] + "x", "host_identifier": "x", "host_details": HOST_DETAILS},
    )
    assert answer == {"node_invalid": True}
    line = event("added", TIKTOK, counter=1, unix=T0 + HOUR)
    for wrong in ("nope", node_key + "x", "", None, 42):
        for path, body in (
            ("/osquery/config", {}),
            ("/osquery/log", {"log_type": "result", "data": [line]}),
            ("/osquery/distributed/read", {}),
            ("/osquery/distributed/write", {"queries": {"appwarden_first_apps": [TIKTOK]}}),
        ):
            assert osquery.post(path, {**body, "node_key": wrong}) == {"node_invalid": True}
    assert table_digest(store.engine) == before


def test_enrolling_again_replaces_the_node_key(store, osquery):
    first = osquery.enroll()
    second = osquery.enroll()
    assert osquery.post("/osquery/config", {"node_key": first}) == {"node_invalid": True}
    assert osquery.post("/osquery/config", {"node_key": second})["node_invalid"] is False


def test_the_remote_api_is_off_without_an_enroll_secret(store, make_client):
    client = make_client(osquery_enroll_secret=None)
    before = table_digest(store.engine)
    for path in ("/osquery/enroll", "/osquery/config", "/osquery/log"):
        response = client.post(path, json={"enroll_secret": "", "node_key": ""})
        assert response.status_code == 404, path
        assert "APPWARDEN_OSQUERY_ENROLL_SECRET" in response.json()["detail"]
    assert table_digest(store.engine) == before


# ── hostile bodies ──────────────────────────────────────────────────────────────────────────


def _bomb(size: int) -> bytes:
    return gzip.compress(b'{"node_key": "' + b"a" * size + b'"}')


@pytest.mark.parametrize(
    ("body", "headers", "status", "where"),
    [
        (b"{not json", {}, 422, "$"),
        (b"[" * 100 + b"]" * 100, {}, 422, "$"),
        (b'{"node_key": "a", "node_key": "b"}', {}, 422, "$"),
        (b"\xff\xfe\x00", {}, 422, "$"),
        (b"", {}, 422, "$"),
        (b"\x1f\x8b\x08\x00garbage", {}, 422, "$"),
        (_bomb(2 * 1024 * 1024), {"Content-Encoding": "gzip"}, 413, "$"),
        (b"x" * (1024 * 1024 + 1), {}, 413, "$"),
        (b"{}", {"Content-Encoding": "br"}, 422, "header:content-encoding"),
    ],
    ids=[
        "not-json",
        "deep",
        "duplicate-key",
        "not-utf8",
        "empty",
        "bad-gzip",
        "gzip-bomb",
        "oversized",
        "brotli",
    ],
)
def test_hostile_bodies_are_a_clear_4xx_and_change_nothing(
    store, osquery, body, headers, status, where
):
    osquery.enroll()
    before = table_digest(store.engine)
    for path in ("/osquery/enroll", "/osquery/config", "/osquery/distributed/read"):
        response = osquery.client.post(path, content=body, headers=headers)
        assert response.status_code == status, (path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"][0]["where"] == where
    assert table_digest(store.engine) == before


def test_a_logger_body_of_the_wrong_shape_is_422_and_changes_nothing(store, osquery):
    node_key = osquery.enroll()
    before = table_digest(store.engine)
    for body in ([], {"node_key": node_key, "log_type": "result", "data": {"a": 1}}):
        response = osquery.client.post("/osquery/log", json=body)
        assert response.status_code == 422, response.text
    response = osquery.client.post(
        "/osquery/distributed/write", json={"node_key": node_key, "queries": ["x"]}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["where"] == "$.queries"
    assert table_digest(store.engine) == before


def test_enroll_without_the_hosts_uuid_is_422_and_stores_nothing(store, osquery):
    before = table_digest(store.engine)
    details = {**HOST_DETAILS, "system_info": {"hardware_serial": SERIAL}}
    response = osquery.client.post(
        "/osquery/enroll", json={"enroll_secret": SECRET, "host_details": details}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["where"] == "$.host_details.system_info.uuid"
    assert table_digest(store.engine) == before
