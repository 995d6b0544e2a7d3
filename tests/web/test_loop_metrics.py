"""The metrics the event loop changes without a lock, the access line rendered beforehand, and
the gate's remembered answers' bounds: each must say exactly what its slower counterpart says."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from appwarden.web import observability
from appwarden.web.gate import AnswerCache, RememberedAnswer, fingerprint
from appwarden.web.loop_metrics import LoopCounter, LoopHistogram

BUCKETS = (0.001, 0.01, 0.1)


def _exposition(*collectors: object) -> list[str]:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)  # type: ignore[arg-type]
    return sorted(
        line
        for line in generate_latest(registry).decode().splitlines()
        if not line.startswith("#") and "_created" not in line
    )


def test_a_loop_histogram_exposes_what_prometheus_client_does():
    ours = LoopHistogram("t_seconds", "timing", ["route", "status"], BUCKETS)
    theirs = Histogram("t_seconds", "timing", ["route", "status"], buckets=BUCKETS, registry=None)
    samples = [0.0005, 0.001, 0.0011, 0.05, 0.1, 0.25, 3.0]  # on a bound counts in that bucket
    for value in samples:
        for histogram in (ours, theirs):
            histogram.labels("/gate/forward", "403").observe(value)
    ours.labels("/healthz", "200").observe(0.002)
    theirs.labels("/healthz", "200").observe(0.002)
    assert _exposition(ours) == _exposition(theirs)
    assert 't_seconds_bucket{le="0.001",route="/gate/forward",status="403"} 2.0' in _exposition(
        ours
    )


def test_a_loop_counter_adds_what_other_threads_counted():
    counter = LoopCounter("answers", "answers given", ["decision"])
    for _ in range(3):
        counter.labels("allow").inc()
    counter.labels("deny").inc()
    counter.threads.labels("allow").inc(2)
    counter.threads.labels("unknown").inc()
    assert _exposition(counter) == [
        'answers_total{decision="allow"} 5.0',
        'answers_total{decision="deny"} 1.0',
        'answers_total{decision="unknown"} 1.0',
    ]


def test_an_access_line_rendered_beforehand_is_the_line_written_in_full():
    at = 1_765_000_000_123_456_789
    for method, path, status in [("GET", "/gate/forward", 403), ("POST", "/gate/explain", 200)]:
        line = observability.AccessLine(method, path, path, status)
        for request_id, duration in [("abc.1:x-Y", 0.0000123), ("f" * 32, 1.5), ("r", 0.0)]:
            fields = {
                **line.fields,
                "request_id": request_id,
                "duration_ms": round(duration * 1000, 3),
            }
            expected = observability._json_line(at, "info", "appwarden.access", fields)
            assert line.text(at, request_id, duration) == expected


def _scope(authorization: bytes, request_id: bytes = b"r-1") -> dict[str, object]:
    headers = [(b"x-original-uri", b"/Microsoft-Server-ActiveSync?DeviceId=A1")]
    headers += [(b"authorization", authorization), (b"x-request-id", request_id)]
    return {
        "method": "GET",
        "path": "/gate/forward",
        "raw_path": b"/gate/forward",
        "headers": headers,
    }


def _answer(generation: int = 1, expires: datetime | None = None) -> RememberedAnswer:
    return RememberedAnswer(generation, expires, "deny", "decided", "A1", 403, (), b"{}")


def test_remembered_answers_are_found_by_the_request_as_sent_but_its_request_id():
    cache = AnswerCache()
    asked = fingerprint(_scope(b"Basic YWxpY2U6cHc="), b"x-request-id")
    cache.put(asked.key, _answer())
    now = datetime(2026, 12, 6, tzinfo=UTC)
    again = fingerprint(_scope(b"Basic YWxpY2U6cHc=", b"r-2"), b"x-request-id")
    assert cache.get(again.key, 1, lambda: now) is not None
    other = fingerprint(_scope(b"Basic Ym9iOnB3"), b"x-request-id")
    assert cache.get(other.key, 1, lambda: now) is None
    assert cache.get(asked.key, 2, lambda: now) is None  # the copy changed: forgotten
    assert len(cache) == 0


def test_remembered_answers_end_with_their_decisions():
    cache = AnswerCache()
    key = fingerprint(_scope(b"Basic YWxpY2U6cHc="), None).key
    ends = datetime(2026, 12, 6, 12, tzinfo=UTC)
    cache.put(key, _answer(expires=ends))
    assert cache.get(key, 1, lambda: datetime(2026, 12, 6, 11, tzinfo=UTC)) is not None
    assert cache.get(key, 1, lambda: ends) is None


def test_remembered_answers_hold_a_bounded_number_of_bytes():
    cache = AnswerCache(size=1_000, max_bytes=50_000, max_request_bytes=2_000)
    keys = [fingerprint(_scope(b"Basic " + b"%05d" % n * 50), None).key for n in range(100)]
    for key in keys:
        cache.put(key, _answer())
    assert 0 < len(cache) < 100  # about 1,100 bytes each: the oldest made way
    assert cache._bytes <= 50_000
    assert cache.get(keys[-1], 1, lambda: datetime.now(UTC)) is not None
    assert cache.get(keys[0], 1, lambda: datetime.now(UTC)) is None
    outsized = fingerprint(_scope(b"Bearer " + b"x" * 2_000), None).key
    cache.put(outsized, _answer())  # answered, never remembered
    assert cache.get(outsized, 1, lambda: datetime.now(UTC)) is None
