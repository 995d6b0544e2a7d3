"""Health, readiness, Prometheus metrics, request ids, access logs without secrets, and the bare
500."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi import Depends
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Histogram
from tests.conftest import api_token, as_one_source, bearer

from appwarden.settings import Settings
from appwarden.vocabulary import Permission
from appwarden.web import observability
from appwarden.web.app import create_app
from appwarden.web.auth import require
from appwarden.web.observability import JsonFormatter, configure_logging

VALID = Path(__file__).parent.parent / "fixtures" / "inventory" / "valid.json"


def _settings(url: str, **overrides) -> Settings:
    return Settings(
        database_url=url, env="test", clock="fixed:2020-07-11T12:00:00-07:00", **overrides
    )


def test_healthz_and_readyz_on_a_migrated_store(store):
    with TestClient(create_app(_settings(store.url))) as client:
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready"}


def test_readyz_is_503_on_an_unmigrated_database(tmp_path):
    with TestClient(create_app(_settings(f"sqlite:///{tmp_path / 'empty.db'}"))) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.headers["content-type"] == "application/problem+json"
        assert ready.json()["detail"] == "the database schema is not current"
        # Routes that need the store say so with 503 too, rather than failing on SQL.
        guarded = client.get("/metrics", headers={"Authorization": "Bearer aw_1_" + "x" * 43})
        assert guarded.status_code == 503


def test_readyz_is_503_when_the_store_is_unreachable():
    url = "postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=2"
    with TestClient(create_app(_settings(url))) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["detail"] == "the store is not reachable"
        assert "127.0.0.1" not in ready.text


def test_metrics_expose_requests_decisions_ingest_and_outbox(store):
    secret = api_token(store, Permission.ADMIN, name="ops")
    headers = bearer(secret)
    with TestClient(create_app(_settings(store.url))) as client:
        assert client.get("/metrics").status_code == 401
        assert client.post(
            "/v1/inventory", content=as_one_source(VALID), headers=headers
        ).is_success
        decided = client.get("/v1/decisions/serial:C02XK1ABJGH5/email", headers=headers)
        assert decided.json()["decision"] == "allow"
        client.get("/v1/decisions/udid:NOPE/email", headers=headers)
        client.get("/no/such/route")
        response = client.get("/metrics", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'appwarden_decisions_total{decision="allow"} 1.0' in text
    assert 'appwarden_ingest_reports_total{result="applied"} 2.0' in text
    assert 'appwarden_ingest_reports_total{result="stale"} 2.0' in text
    assert 'appwarden_outbox_depth{kind="notice"} 0.0' in text
    assert 'appwarden_outbox_depth{kind="webhook"} 0.0' in text
    assert (
        'appwarden_request_seconds_count{method="GET",'
        'route="/v1/decisions/{device:path}/{resource}",status="404"} 1.0'
    ) in text
    assert 'route="/v1/inventory",status="200"' in text
    # Unknown paths share one label value: no unbounded label cardinality.
    assert 'route="unmatched",status="404"' in text
    assert "/no/such/route" not in text


def test_each_app_has_its_own_registry(store):
    one, two = create_app(_settings(store.url)), create_app(_settings(store.url))
    assert one.state.metrics.registry is not two.state.metrics.registry
    one.state.runtime.close()
    two.state.runtime.close()


def test_request_ids_and_access_logs_never_carry_secrets(store, caplog):
    secret = api_token(store, Permission.DECISIONS_READ, name="nginx-gate")
    wrong = "aw_99_" + "s3cr3t" * 8
    caplog.set_level(logging.INFO, logger="appwarden")
    with TestClient(create_app(_settings(store.url))) as client:
        given = client.get(
            f"/v1/decisions/udid:NOPE/email?access_token={secret}",
            headers={
                "Authorization": f"Bearer {secret}",
                "Cookie": f"session={secret}",
                "X-Request-Id": "req-abc.123",
            },
        )
        assert given.status_code == 404
        assert given.headers["x-request-id"] == "req-abc.123"
        refused = client.get("/v1/decisions/udid:NOPE/email", headers=bearer(wrong))
        assert refused.status_code == 401
        generated = client.get("/healthz", headers={"X-Request-Id": "bad id\twith spaces"})
        assert generated.headers["x-request-id"] != "bad id\twith spaces"
        assert len(generated.headers["x-request-id"]) == 32

    access = [r for r in caplog.records if r.name == "appwarden.access"]
    assert len(access) == 3
    first = access[0].fields
    assert first["request_id"] == "req-abc.123"
    assert first["method"] == "GET"
    assert first["path"] == "/v1/decisions/udid:NOPE/email"  # no query string
    assert first["status"] == 404
    assert first["token"] == "nginx-gate"
    assert first["duration_ms"] >= 0
    assert access[1].fields["token"] is None
    assert access[2].fields["request_id"] == generated.headers["x-request-id"]

    formatter = JsonFormatter()
    for record in caplog.records:
        line = formatter.format(record)
        for leaked in (secret, wrong, secret.split("_", 2)[2]):
            assert leaked not in line
            assert leaked not in record.getMessage()
            assert leaked not in repr(vars(record))
    assert '"request_id":"req-abc.123"' in formatter.format(access[0])


def test_an_unhandled_error_is_a_bare_500_with_the_request_id(store, caplog):
    secret = api_token(store, Permission.READ, name="ops")
    app = create_app(_settings(store.url))

    @app.get("/v1/boom", dependencies=[Depends(require(Permission.READ))])
    def boom() -> None:
        raise RuntimeError("database password is hunter2")

    caplog.set_level(logging.INFO, logger="appwarden")
    with TestClient(app) as client:
        response = client.get(
            "/v1/boom", headers={"Authorization": f"Bearer {secret}", "X-Request-Id": "r-500"}
        )
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "r-500"
    assert response.json()["detail"] == "internal error"
    assert "hunter2" not in response.text
    [error] = [r for r in caplog.records if r.name == "appwarden.web" and r.exc_info]
    assert error.fields == {"request_id": "r-500"}
    [access] = [r for r in caplog.records if r.name == "appwarden.access"]
    assert access.fields["status"] == 500


@pytest.mark.parametrize("clock", ["fixed:2020-07-11T12:00:00-07:00", "file:/nonexistent"])
def test_pinned_clocks_are_refused_outside_test_and_demo(tmp_path, clock):
    from appwarden.errors import InvalidInput

    with pytest.raises(InvalidInput, match="only allowed"):
        create_app(
            Settings(database_url=f"sqlite:///{tmp_path}/x.db", env="production", clock=clock)
        )


@pytest.fixture
def configured_logging() -> Iterator[None]:
    """`configure_logging` as `appwarden serve` calls it, undone afterwards (it replaces the
    handlers of process-wide loggers, which caplog relies on)."""
    names = ("appwarden", "uvicorn.error", observability.access_log.name)
    saved = [(lg, lg.handlers, lg.propagate, lg.level) for lg in map(logging.getLogger, names)]
    configure_logging()
    try:
        yield
    finally:
        for lg, handlers, propagate, level in saved:
            for handler in lg.handlers:
                if handler not in handlers:
                    handler.close()
            lg.handlers, lg.propagate, lg.level = handlers, propagate, level
        observability._direct_lines = None


def test_an_access_line_is_the_same_written_directly_or_through_logging(
    configured_logging, monkeypatch
):
    """The access log's direct lane (no LogRecord) writes exactly the line the JSON formatter
    writes; with another handler added, lines go through logging again, to both."""
    buffered = observability.access_log.handlers[0]
    buffered.stream = io.StringIO()
    monkeypatch.setattr(observability.time, "time_ns", lambda: 1_594_494_000_123_456_789)
    histogram = Histogram("t_seconds", "t", registry=CollectorRegistry())

    def request() -> None:
        observability.log_request(
            histogram,
            request_id="r-1",
            method="GET",
            path="/gate/forward",
            route="/gate/forward",
            status=403,
            duration=0.0000412,
        )

    request()
    collected: list[logging.LogRecord] = []
    other = logging.Handler()
    other.emit = collected.append  # type: ignore[method-assign]
    observability.access_log.addHandler(other)
    request()
    buffered.flush()
    direct, logged = buffered.stream.getvalue().splitlines()
    assert direct == logged
    assert orjson.loads(direct) == {
        "time": "2020-07-11T19:00:00.123Z",
        "level": "info",
        "logger": "appwarden.access",
        "request_id": "r-1",
        "method": "GET",
        "path": "/gate/forward",
        "route": "/gate/forward",
        "status": 403,
        "duration_ms": 0.041,
        "token": None,
        "person": None,
        "client": None,
    }
    assert [r.fields["request_id"] for r in collected] == ["r-1"]
