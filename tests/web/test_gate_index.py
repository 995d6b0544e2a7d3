"""The gate's in-memory copy (`access.index`, kept current by `web.live_index`) against the store.

The fast path may answer only what the store would answer: for every device, user and resource
of the reference organisation, at times before and after the deadline, with and without the
worker having refreshed the decisions, the copy either defers (NeedStore) or agrees exactly. And
it must notice another process's commit before it answers again.
"""

from __future__ import annotations

import base64
import gc
import io
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select, text
from tests.conftest import wait_until_current

from appwarden.access import gate as gate_rules
from appwarden.access.gate import NO_IDENTITY, GateRequest, Identity, account_name
from appwarden.access.models import DecisionRecord
from appwarden.access.service import decide_for
from appwarden.db.changes import DataVersion
from appwarden.db.uow import unit_of_work
from appwarden.devices.models import Device, DeviceIdentifier
from appwarden.identity.models import Person, PersonAccount, PersonAlias
from appwarden.settings import Settings
from appwarden.timeutil import parse_instant
from appwarden.usecases.gate import (
    GatePolicy,
    IndexFacts,
    NeedStore,
    StoreFacts,
    answer,
    current_decision,
)
from appwarden.web.app import create_app
from appwarden.web.live_index import LiveIndex
from appwarden.web.observability import BufferedLineHandler

KEY = "index-test-proxy-key-0123456789abcdef"
EAS = "/Microsoft-Server-ActiveSync"
ALICE = "6F24CAD599A5BF1A690246B8C68FAE8D"
CAROL = "CA201C0FFEE0000000000000000A2210"
BOB = "B0B0A1D2E3F4A5B6C7D8E9F0A1B2C3D4"
BEFORE = "2020-07-10T12:00:00-07:00"
AFTER = "2020-07-11T12:00:00-07:00"


def _within(seconds: float, condition: Callable[[], bool]) -> bool:
    """Whether `condition` holds within `seconds` (polled): what another thread does."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _requests(store) -> list[GateRequest]:
    """Every known and one unseen device, without one, for every name people answer to (and
    near misses), signed in as that name with `User=` agreeing or absent, and unauthenticated."""
    with store.engine.connect() as connection:
        devices = [
            v
            for (v,) in connection.execute(
                select(DeviceIdentifier.value).where(DeviceIdentifier.namespace == "eas_device_id")
            )
        ]
        emails = [e for (e,) in connection.execute(select(Person.email))]
        aliases = [e for (e,) in connection.execute(select(PersonAlias.email))]
        accounts = [a for (a,) in connection.execute(select(PersonAccount.name))]
    users: list[str] = ["nobody@example.com", "nobody", "EXAMPLE\\nobody"]
    users += emails + aliases + accounts + [e.split("@")[0] for e in emails]
    users += [e.upper() for e in emails[:2]]
    assert len(devices) >= 4
    assert len(emails) >= 5
    assert accounts
    asking = [(None, NO_IDENTITY)]
    for user in users:
        identity = Identity(account_name(user), "basic")
        asking += [(account_name(user), identity), (None, identity)]
    requests = []
    for device in [*devices, "FFFF0000FFFF0000FFFF0000FFFF0000", None]:
        for user, identity in asking:
            for resource in ("email", "webmail", None):
                requests.append(
                    GateRequest(
                        device_id=device,
                        device_type="iPhone",
                        user=user,
                        command="Sync",
                        resource=resource,
                        path=EAS,
                        encoding="plain",
                        identity=identity,
                    )
                )
    return requests


def _compare(store, live: LiveIndex, at: str, *, complete: bool = False) -> tuple[int, int]:
    """(answered from memory, deferred to the store); fails on the first disagreement.
    `complete`: the copy is known current, so what it does not hold the store does not have."""
    now = parse_instant(at)
    answered = deferred = 0
    for policy in (GatePolicy(), GatePolicy(unseen_device="deny")):
        for request in _requests(store):
            with unit_of_work(store.engine, now=now, write=False) as uow:
                expected = answer(StoreFacts(uow), request, policy)
            try:
                facts = IndexFacts(live.index, now, authoritative=False, complete=complete)
                got = answer(facts, request, policy)
            except NeedStore:
                deferred += 1
                continue
            answered += 1
            assert got == expected, (request, policy)
    return answered, deferred


def test_the_copy_answers_as_the_store_or_defers(store, demo, cli):
    live = LiveIndex(store.engine)
    live.catch_up(full=True)
    answered, deferred = _compare(store, live, BEFORE)
    assert answered > 100
    assert deferred > 0  # unknown devices and users

    # After the deadline, before the worker caught up: the decisions prepared for the deadline
    # answer, from memory as from the store, and they are what a fresh evaluation says.
    assert _compare(store, live, AFTER) == (answered, deferred)
    _assert_prepared_decisions_are_fresh(store, AFTER)

    assert cli("worker", "--once", "--at", AFTER).code == 0
    live.catch_up()
    assert _compare(store, live, AFTER) == (answered, deferred)


@pytest.mark.parametrize("at", [BEFORE, AFTER])
def test_a_complete_copy_answers_unseen_devices_as_the_store(store, demo, cli, at):
    """A copy known to be current holds every identifier and every person's devices: the unseen
    DeviceId of a known person (allowed, or denied with their own blocked devices listed, as
    the store's 403 lists them) is answered from memory, exactly as the store answers it. Names
    it does not know, and people with a device never decided for the resource, still go to the
    store."""
    assert cli("worker", "--once", "--at", AFTER).code == 0
    live = LiveIndex(store.engine)
    live.catch_up(full=True)
    partial = _compare(store, live, at)
    answered, deferred = _compare(store, live, at, complete=True)
    assert answered > partial[0]
    assert answered + deferred == sum(partial)
    now = parse_instant(at)
    unseen = [
        r
        for r in _requests(store)
        if r.device_id == "FFFF0000FFFF0000FFFF0000FFFF0000" and r.resource == "email"
    ]
    outcomes = set()
    for request in unseen:
        facts = IndexFacts(live.index, now, authoritative=False, complete=True)
        try:
            got = answer(facts, request, GatePolicy())
        except NeedStore:  # an unknown name, or a device of theirs never decided for email
            continue
        outcomes.add((got.reason, bool(got.blocking)))
    assert ("unseen_device", False) in outcomes
    if at == AFTER:  # carol's phone is denied: her new DeviceId is too, her phone listed
        assert ("unseen_device_of_blocked_person", True) in outcomes


def _assert_prepared_decisions_are_fresh(store, at: str) -> None:
    now = parse_instant(at)
    flipped = 0
    with unit_of_work(store.engine, now=now, write=False) as uow:
        for record in uow.session.scalars(select(DecisionRecord)):
            device = uow.session.get(Device, record.device_id)
            prepared = current_decision(uow, device, record.resource, now)
            fresh = decide_for(uow, device, record.resource, now)
            assert prepared == (fresh.decision, list(fresh.reasons)), record.device_id
            flipped += prepared[0] != record.decision
    assert flipped >= 2  # alice's and carol's phones: allowed until the deadline, denied after


def test_a_deadline_flips_the_gate_without_the_store_or_the_worker(store, demo, cli, tmp_path):
    """At the deadline every affected phone flips at once, answered from memory: the decision
    prepared for the deadline, not a re-evaluation per request while the worker catches up."""
    clock = tmp_path / "clock"
    clock.write_text(BEFORE)
    settings = _settings(store, tmp_path, BEFORE).model_copy(update={"clock": f"file:{clock}"})
    app = create_app(settings)
    statements = _statements(app)
    with TestClient(app) as client:
        wait_until_current(app)
        ask = lambda device, user: client.get("/gate/forward", headers=_gate_headers(device, user))  # noqa: E731
        assert ask(ALICE, "alice").status_code == 200
        clock.write_text(AFTER)
        statements.clear()
        assert ask(ALICE, "alice").status_code == 403
        assert ask(CAROL, "carol").status_code == 403
        assert ask(BOB, "bob").status_code == 200
        assert statements == []


def test_last_known_answers_from_the_copy_alone(store, demo, cli):
    assert cli("worker", "--once", "--at", AFTER).code == 0
    live = LiveIndex(store.engine)
    live.catch_up(full=True)
    now = parse_instant(AFTER)
    for request in _requests(store):
        with unit_of_work(store.engine, now=now, write=False) as uow:
            expected = answer(StoreFacts(uow), request, GatePolicy())
        got = answer(IndexFacts(live.index, now, authoritative=True), request, GatePolicy())
        assert got.decision == expected.decision, request


def _gate_headers(device: str, user: str) -> dict[str, str]:
    uri = f"{EAS}?Cmd=Sync&User={user}&DeviceId={device}&DeviceType=iPhone"
    return {"X-Appwarden-Proxy-Key": KEY, "X-Original-URI": uri}


def _statements(app) -> list[str]:
    """Every SQL statement the application's engine runs from now on, but the copy's own
    upkeep (its threads: on PostgreSQL the listener looks for new identifiers as it pings)."""
    statements: list[str] = []

    def seen(*args: object) -> None:
        if not threading.current_thread().name.startswith("appwarden-index"):
            statements.append(str(args[2]))

    event.listen(app.state.runtime.engine, "before_cursor_execute", seen)
    return statements


def _settings(store, tmp_path: Path, clock: str) -> Settings:
    return Settings(
        database_url=store.url,
        env="test",
        clock=f"fixed:{clock}",
        gate_proxy_key=KEY,
        gate_index_seconds=0.2,
        maildir=tmp_path / "mail",
    )


def test_a_current_copy_answers_without_the_store(store, demo, cli, tmp_path):
    assert cli("worker", "--once", "--at", AFTER).code == 0
    app = create_app(_settings(store, tmp_path, AFTER))
    statements = _statements(app)
    with TestClient(app) as client:
        wait_until_current(app)
        statements.clear()
        for _ in range(20):
            assert (
                client.get("/gate/forward", headers=_gate_headers(ALICE, "alice")).status_code
                == 403
            )
            assert (
                client.get("/gate/forward", headers=_gate_headers(CAROL, "carol")).status_code
                == 403
            )
        assert statements == []
        # A device nobody has seen, without credentials: a current copy knows every device with
        # a decision, and the mail server challenges the request itself: no store.
        unseen = client.get("/gate/forward", headers=_gate_headers("AAAA1111", "zed"))
        assert (unseen.status_code, statements) == (200, [])
        # Signed in, the unseen device of a known person: a current copy holds every identifier
        # and all of bob's devices, so "not in the copy" is "not in the store": no store either.
        signed_in = {
            **_gate_headers("AAAA1111", "bob"),
            "Authorization": "Basic " + base64.b64encode(b"EXAMPLE\\bob:pw").decode(),
        }
        assert client.get("/gate/forward", headers=signed_in).status_code == 200
        assert statements == []
        assert app.state.gate.not_found.knows(("eas_device_id", "AAAA1111")) is False


def test_a_device_another_process_adds_is_known_before_the_next_answer(store, demo, cli, tmp_path):
    """A device written by another process with no decision at all (no decision row to stamp,
    no NOTIFY of its own): its identifier must reach the copy before the gate could call it
    unseen. Asked as bob, the device is someone else's: 403, where "unseen" would be 200."""
    assert cli("worker", "--once", "--at", AFTER).code == 0
    app = create_app(_settings(store, tmp_path, AFTER))
    signed_in = {
        **_gate_headers("DDDD2222", "bob"),
        "Authorization": "Basic " + base64.b64encode(b"EXAMPLE\\bob:pw").decode(),
    }
    with TestClient(app) as client:
        wait_until_current(app)
        assert client.get("/gate/forward", headers=signed_in).status_code == 200  # unseen
        now = parse_instant(AFTER)
        with store.engine.begin() as connection:
            device_id = connection.execute(
                Device.__table__.insert().values(
                    platform="ios",
                    form_factor="phone",
                    ownership="unknown",
                    status="active",
                    created_at=now,
                )
            ).inserted_primary_key[0]
            connection.execute(
                DeviceIdentifier.__table__.insert().values(
                    device_id=device_id,
                    namespace="eas_device_id",
                    value="DDDD2222",
                    source="test",
                    first_seen_at=now,
                    last_seen_at=now,
                )
            )
        if store.engine.dialect.name == "postgresql":
            # No NOTIFY came (no decision was written): the listener's next check-in or the
            # poll picks it up; until then the copy is still believed current, so wait for it.
            live: LiveIndex = app.state.live_index
            assert _within(10, lambda: live.index.device("eas_device_id", "DDDD2222") is not None)
        answered = client.get("/gate/forward", headers=signed_in)
        assert (answered.status_code, answered.json()["reason"]) == (403, "user_is_not_the_owner")


def test_another_process_commit_is_seen_before_the_next_answer(store, demo, cli, tmp_path):
    """Retracting in another process (the CLI, with its own engine): the server notices it
    before its next answer on SQLite (the WAL-index header), within the notification's time on
    PostgreSQL (LISTEN/NOTIFY: up to 1 s, benchmark W6; docs/architecture.md)."""
    assert cli("worker", "--once", "--at", AFTER).code == 0
    app = create_app(_settings(store, tmp_path, AFTER))
    with TestClient(app) as client:
        live: LiveIndex = app.state.live_index
        wait_until_current(app)
        assert client.get("/gate/forward", headers=_gate_headers(CAROL, "carol")).status_code == 403

        retracted = cli(
            "policy", "retract", "tiktok-mobile-email", "--message", "Sent in error.",
            "--as", "security.lead@example.com", "--at", AFTER,
        )  # fmt: skip
        assert retracted.code == 0, retracted.err
        started = time.monotonic()
        if store.backend == "sqlite":
            assert not live.fresh()  # told by data_version, before any request
        while time.monotonic() - started < 1.0:
            answer_ = client.get("/gate/forward", headers=_gate_headers(CAROL, "carol"))
            if answer_.status_code == 200:
                break
            time.sleep(0.01)
        assert answer_.status_code == 200
        if store.backend == "sqlite":
            assert time.monotonic() - started < 0.5


@pytest.mark.parametrize("mapped", [True, False], ids=["wal-index-header", "pragma"])
def test_any_commit_to_the_sqlite_file_is_noticed(tmp_path, mapped):
    path = tmp_path / "probe.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE t (x)")
    probe = DataVersion(str(path))
    assert (probe._map is not None) is True
    if not mapped:
        probe._map.close()
        probe._map = None
    before = probe.read()
    assert probe.read() == before  # nothing committed: the same
    writer.execute("SELECT * FROM t").fetchall()
    assert probe.read() == before  # a read is not a change
    writer.execute("INSERT INTO t VALUES (1)")
    after = probe.read()
    assert after != before
    other = sqlite3.connect(path, isolation_level=None)  # a third connection's commit too
    other.execute("INSERT INTO t VALUES (2)")
    assert probe.read() != after
    writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    other.close()
    writer.close()
    probe.close()


@pytest.mark.parametrize(
    ("setting", "logged"),
    [("deny", {403}), ("all", {200, 403}), ("none", set())],
)
def test_which_gate_answers_are_logged(store, demo, cli, tmp_path, caplog, setting, logged):
    assert cli("worker", "--once", "--at", AFTER).code == 0
    caplog.set_level(logging.INFO, logger="appwarden")
    settings = _settings(store, tmp_path, AFTER).model_copy(update={"gate_access_log": setting})
    app = create_app(settings)
    with TestClient(app) as client:
        wait_until_current(app)
        caplog.clear()
        denied = client.get(
            "/gate/forward", headers={**_gate_headers(ALICE, "alice"), "X-Request-Id": "nginx-1"}
        )
        allowed = client.get("/gate/forward", headers=_gate_headers(BOB, "bob"))
    assert denied.status_code == 403
    assert denied.headers["x-request-id"] == "nginx-1"  # the proxy's id, echoed
    assert allowed.status_code == 200
    assert "x-request-id" not in allowed.headers  # none offered: nobody would read it
    lines = [r.fields for r in caplog.records if r.name == "appwarden.access"]
    assert {line["status"] for line in lines} == logged
    assert len(lines) == len(logged)
    for line in lines:
        assert line["route"] == "/gate/forward"
        assert len(line["request_id"]) >= 7
    registry = app.state.metrics.registry
    for status in ("200", "403"):  # counted and timed, logged or not
        labels = {"route": "/gate/forward", "method": "GET", "status": status}
        assert registry.get_sample_value("appwarden_request_seconds_count", labels) == 1


def test_the_access_log_is_written_in_batches():
    stream = io.StringIO()
    handler = BufferedLineHandler(stream, flush_seconds=3600, max_bytes=200)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("appwarden.test.buffered")
    logger.handlers, logger.propagate = [handler], False
    logger.warning("first")
    assert stream.getvalue() == ""  # held
    handler.flush()
    assert stream.getvalue() == "first\n"
    for n in range(40):  # past max_bytes: the handler's thread writes without waiting for a flush
        logger.warning("line %d", n)
    assert _within(10, lambda: "line 0\n" in stream.getvalue())
    logger.warning("last")
    handler.close()  # logging.shutdown() closes handlers at exit
    assert stream.getvalue().endswith("last\n")


class _StalledStream(io.StringIO):
    """A file whose first write blocks until released (10 s at most), as a disk in writeback
    can."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.writers: set[str] = set()

    def write(self, text: str) -> int:
        if not self.writers:
            self.writers.add(threading.current_thread().name)
            self.release.wait(10)
        return super().write(text)


def test_a_stalled_access_log_never_holds_up_the_logging_thread():
    stream = _StalledStream()
    handler = BufferedLineHandler(stream, flush_seconds=0.01, max_bytes=100)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("appwarden.test.stalled")
    logger.handlers, logger.propagate = [handler], False
    logger.warning("line 0")
    # the handler's thread is stuck writing line 0
    assert _within(10, lambda: "appwarden-log" in stream.writers)
    for n in range(1, 2_000):  # many times max_bytes meanwhile
        logger.warning("line %d", n)
    # Every call returned while that write was still stuck (had one waited, the write would
    # have gone through when its wait ran out, 10 s later).
    assert stream.getvalue() == ""
    stream.release.set()
    handler.close()
    assert stream.getvalue() == "".join(f"line {n}\n" for n in range(2_000))


def test_each_prepared_decision_is_what_a_fresh_evaluation_says_when_it_applies(store, demo, cli):
    """For every materialised decision with a `valid_until`: just after that instant and a
    minute later (while the prepared decision lasts), the prepared decision equals a fresh
    evaluation — whether the change comes at the instant (a deadline) or right after it (a
    proof that holds through its last instant)."""
    assert cli("worker", "--once", "--at", BEFORE).code == 0
    checked = 0
    with unit_of_work(store.engine, now=parse_instant(BEFORE), write=False) as uow:
        records = list(uow.session.scalars(select(DecisionRecord)))
        for record in records:
            if record.valid_until is None:
                continue
            device = uow.session.get(Device, record.device_id)
            for later in (timedelta(microseconds=1), timedelta(minutes=1)):
                at = record.valid_until + later
                if record.next_valid_until is not None and at >= record.next_valid_until:
                    continue
                fresh = decide_for(uow, device, record.resource, at)
                prepared = current_decision(uow, device, record.resource, at)
                assert prepared == (fresh.decision, list(fresh.reasons)), (record.device_id, at)
                checked += 1
    assert checked >= 6


def test_a_computed_allow_is_remembered_until_the_next_commit(store, demo, cli, tmp_path):
    """Alice has a device never decided for email: the first unseen DeviceId of hers asks the
    store, which computes that device's allow; the next ones are answered from memory with the
    same answer, until something is committed."""
    assert cli("worker", "--once", "--at", AFTER).code == 0
    app = create_app(_settings(store, tmp_path, AFTER))
    statements = _statements(app)
    alice = "Basic " + base64.b64encode(b"alice@example.com:pw").decode()
    with TestClient(app) as client:
        wait_until_current(app)

        def ask(device: str) -> tuple[int, str]:
            headers = {**_gate_headers(device, "alice@example.com"), "Authorization": alice}
            answered = client.get("/gate/forward", headers=headers)
            return answered.status_code, answered.text

        statements.clear()
        first = ask("AAAA0001")
        assert statements  # the store computed her laptop's decision
        statements.clear()
        assert ask("AAAA0002") == (first[0], first[1].replace("AAAA0001", "AAAA0002"))
        assert statements == []
        with store.engine.begin() as connection:  # another process commits (anything)
            connection.execute(text("UPDATE person SET email = email"))
        statements.clear()
        assert ask("AAAA0003")[0] == first[0]
        if store.engine.dialect.name == "sqlite":  # any commit moves the WAL-index header
            assert statements  # the copy caught up, and the remembered allow was dropped


def test_a_remembered_answer_answers_only_the_very_same_request(store, demo, cli, tmp_path):
    """The fast path remembers what the copy answered by the request's exact bytes (but its
    request id, which is only echoed): the same DeviceId asked by someone else, or without
    credentials, is a different question with its own answer; and an answer about a stranger
    is paced however often it was given before."""
    assert cli("worker", "--once", "--at", AFTER).code == 0
    app = create_app(_settings(store, tmp_path, AFTER))
    statements = _statements(app)
    as_alice = "Basic " + base64.b64encode(b"alice@example.com:pw").decode()
    as_bob = "Basic " + base64.b64encode(b"EXAMPLE\\bob:pw").decode()
    paced = []
    with TestClient(app) as client:
        wait_until_current(app)
        pacer = app.state.gate.pacer
        turn = pacer.turn

        async def counted_turn() -> None:
            paced.append(1)
            await turn()

        pacer.turn = counted_turn

        def ask(device: str, authorization: str | None, request_id: str) -> tuple[int, str, str]:
            headers = {**_gate_headers(device, "alice@example.com"), "X-Request-Id": request_id}
            if authorization:
                headers["Authorization"] = authorization
            answered = client.get("/gate/forward", headers=headers)
            reason = answered.json()["reason"] if answered.status_code == 403 else ""
            return answered.status_code, reason, answered.headers["x-request-id"]

        statements.clear()
        for n in range(3):
            assert ask(ALICE, as_alice, f"alice-{n}") == (403, "decided", f"alice-{n}")
            assert ask(ALICE, as_bob, f"bob-{n}") == (403, "user_mismatch", f"bob-{n}")
            assert ask("AAAA7777", None, f"anon-{n}") == (200, "", f"anon-{n}")
        assert statements == []
        assert len(app.fast_path.answers) == 3  # one per question, whatever the request ids
        assert len(paced) == 3  # the unseen DeviceId without credentials, every time


def test_the_copy_and_remembered_answers_are_invisible_to_the_cycle_collector(
    store, demo, cli, tmp_path
):
    """A full pass of Python's cycle collector walks every object it tracks, holding the event
    loop meanwhile: the copy (a million devices' worth), the remembered answers and what the
    gate remembers of every client's URI, credentials and 403 must not be among them once the
    collector has looked at them (a few times: a tuple is let go in the pass after the tuples
    it holds are, and an answer's headers are tuples of tuples)."""
    assert cli("worker", "--once", "--at", AFTER).code == 0
    app = create_app(_settings(store, tmp_path, AFTER))
    with TestClient(app) as client:
        wait_until_current(app)
        basic = "Basic " + base64.b64encode(b"alice@example.com:pw").decode()
        headers = {**_gate_headers(ALICE, "alice"), "Authorization": basic}
        assert client.get("/gate/forward", headers=headers).status_code == 403
        live = app.state.live_index
        live.catch_up(full=True)  # a periodic full reload: no freezing after start-up
        for _ in range(3):
            gc.collect()
        tables = live.index._tables
        held = [*tables.people.values(), *tables.decisions.values()]
        answers = app.fast_path.answers._entries
        held += [*answers, *answers.values()]  # the requests as sent, and their answers
        remembered = [gate_rules._credentials_seen, gate_rules._uris_seen, app.state.gate._problems]
        assert all(remembered)
        held += [item for cache in remembered for item in (*cache, *cache.values())]
        assert len(tables.decisions) >= 3
        assert len(app.fast_path.answers) == 1
        assert [h for h in held if gc.is_tracked(h)] == []
