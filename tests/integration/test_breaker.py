"""The mass-lockout breaker on both stores (docs/architecture.md, rule 7, "the breaker rule"):
the 51st allow→deny flip of a policy within an hour is held and the 50th is not, an admin's
release applies the held denies (audited) while a viewer's is refused, a deadline that would
flip more than the bound at once is held in every gate's copy too, and a source silent past its
staleness bound shows as stale (`appwarden sources`, /metrics) while its devices' denies under
`unknown: deny` are held until it is fresh again."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from tests.conftest import api_token, bearer, table_digest

from appwarden.access.index import DecisionIndex
from appwarden.access.models import DecisionRecord
from appwarden.audit.models import AuditEntry
from appwarden.cli.context import AppContext
from appwarden.devices.models import Device, DeviceIdentifier, SourceRun
from appwarden.devices.schemas import AppSeen, DeviceFacts, InventoryBatch, ReportFacts
from appwarden.identity.service import grant_role
from appwarden.policies import service as policies
from appwarden.settings import Settings
from appwarden.timeutil import iso
from appwarden.usecases.gate import current_decision
from appwarden.usecases.ingest import ingest
from appwarden.usecases.worker import worker_pass
from appwarden.vocabulary import EvidenceKind, FormFactor, Ownership, Permission, Platform, Role
from appwarden.web.app import create_app

POLICY_ID = "no-tiktok"
AUTHOR = "author@example.com"
APPROVER = "approver@example.com"
ADMIN = "admin@example.com"
VIEWER = "viewer@example.com"
TIKTOK = AppSeen("apple_bundle_id", "com.zhiliaoapp.musically", "38.4.0", "TikTok")
OUTLOOK = AppSeen("apple_bundle_id", "com.microsoft.Office.Outlook", "4.2", "Outlook")
T0 = datetime(2021, 3, 1, 9, 0, tzinfo=UTC)
RELEASE = T0 + timedelta(hours=1)
DEADLINE = RELEASE + timedelta(days=2)
FLEET = 60  # in scope: the bound is max(50, 5 % of 60) = 50
STALE_AFTER = {"fleet": "PT6H"}

POLICY = """\
apiVersion: appwarden/v1
kind: AppPolicy
metadata:
  id: {policy_id}
  title: No TikTok on phones that read mail
spec:
  apps: [tiktok]
  scope:
    access: [email]
  deadline: {deadline}
  grace: {grace}
  max_evidence_age: {age}
  unknown: {unknown}
  enforcement:
    deny: [email]
"""


@pytest.fixture
def context(store, tmp_path: Path) -> Iterator[AppContext]:
    """What the CLI's commands share, on the test's store."""
    made = AppContext(
        Settings(database_url=store.url, maildir=tmp_path / "mail", source_stale_after=STALE_AFTER)
    )
    yield made
    made.close()


def run_worker(context: AppContext, at: datetime) -> None:
    worker_pass(partial(context.uow, at), context.notice_config, context.delivery(), at)


def release(
    context: AppContext,
    *,
    grace: str = "P1D",
    age: str = "P7D",
    unknown: str = "allow",
    deadline: datetime = DEADLINE,
) -> None:
    """Write, approve and publish the policy so that it is released at RELEASE, and let the
    worker release it then."""
    text = POLICY.format(
        policy_id=POLICY_ID, deadline=iso(deadline), grace=grace, age=age, unknown=unknown
    )
    published = RELEASE - context.undo_window
    kwargs = {"catalog": context.catalog, "templates_digest": context.templates_digest}
    with context.uow(published - timedelta(hours=1)) as uow:
        for email, role in ((AUTHOR, Role.AUTHOR), (APPROVER, Role.APPROVER), (ADMIN, Role.ADMIN)):
            grant_role(uow, email, role)
        grant_role(uow, VIEWER, Role.VIEWER)
    with context.uow(published - timedelta(minutes=30), actor=AUTHOR) as uow:
        policies.apply(uow, text=text, filename="no-tiktok.yaml", **kwargs)
        policies.propose(uow, POLICY_ID, **kwargs)
    with context.uow(published - timedelta(minutes=20), actor=APPROVER) as uow:
        policies.approve(uow, POLICY_ID, **kwargs)
    with context.uow(published, actor=AUTHOR) as uow:
        policies.publish(
            uow, POLICY_ID, undo_window=context.undo_window, short_notice=True, **kwargs
        )
    run_worker(context, RELEASE)


def udid(index: int) -> str:
    return f"PHONE-{index:03d}"


def report(index: int, at: datetime, apps: tuple[AppSeen, ...], source: str = "mdm") -> ReportFacts:
    device = DeviceFacts(
        identifiers=(("udid", udid(index)),),
        platform=Platform.IOS,
        form_factor=FormFactor.PHONE,
        ownership=Ownership.CORPORATE,
        owner_email=f"person{index:03d}@example.com",
        resources=("email",),
    )
    return ReportFacts(
        device=device,
        source=source,
        evidence_kind=EvidenceKind.INVENTORY,
        observed_at=at,
        apps=apps,
    )


def send(context: AppContext, at: datetime, *reports: ReportFacts) -> None:
    with context.uow(at) as uow:
        ingest(uow, InventoryBatch(reports=reports), minimise_personal=False)


def decisions(engine: Engine) -> dict[str, DecisionRecord]:
    """The stored email decision of each phone, by its udid."""
    with Session(engine) as session:
        rows = session.execute(
            select(DeviceIdentifier.value, DecisionRecord)
            .join(DecisionRecord, DecisionRecord.device_id == DeviceIdentifier.device_id)
            .where(DeviceIdentifier.namespace == "udid", DecisionRecord.resource == "email")
        )
        return {str(row[0]): row[1] for row in rows}


def policy_reason(reasons: list[dict]) -> dict:
    (found,) = [r for r in reasons if r["policy"] == POLICY_ID]
    return found


def audit_actions(engine: Engine, prefix: str) -> list[AuditEntry]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(AuditEntry.action, AuditEntry.actor, AuditEntry.after)
                .where(AuditEntry.action.startswith(prefix))
                .order_by(AuditEntry.id)
            )
        )


def test_the_51st_flip_within_an_hour_is_held_until_an_admin_releases_it(store, cli, context):
    send(context, T0, *(report(i, T0, (OUTLOOK,)) for i in range(FLEET)))
    release(context, grace="PT0S")  # TikTok seen after the deadline is due at once
    start = DEADLINE + timedelta(hours=1, minutes=5)
    for i in range(FLEET):  # one phone every 30 s: all within 30 minutes
        send(context, start + i * timedelta(seconds=30), report(i, start, (TIKTOK, OUTLOOK)))
    found = decisions(store.engine)
    assert [found[udid(i)].decision for i in range(50)] == ["deny"] * 50
    for i in range(50, FLEET):
        assert found[udid(i)].decision == "allow"
        held = policy_reason(found[udid(i)].reasons)
        assert held["state"] == "non_compliant"
        assert (held["effect"], held["reason"], held["cause"]) == (
            "allow",
            "breaker_open",
            "mass_deny",
        )
    later = iso(start + timedelta(minutes=40))
    decided = cli("decide", f"udid:{udid(55)}", "email", "--json", "--at", later).json()
    assert decided["decision"] == "allow"
    assert policy_reason(decided["reasons"])["reason"] == "breaker_open"
    (listed,) = cli("breaker", "list", "--json", "--at", later).json()
    assert (listed["state"], listed["held"], listed["causes"]) == (
        "tripped",
        10,
        {"mass_deny": 10},
    )
    (opened,) = audit_actions(store.engine, "breaker.")
    assert opened.action == "breaker.open"
    assert (opened.after["cause"], opened.after["bound"]) == ("mass_deny", 50)

    before = table_digest(store.engine)
    refused = cli("breaker", "release", POLICY_ID, "--as", VIEWER, "--at", later)
    assert refused.code == 5
    assert "lacks the permission admin" in refused.err
    assert table_digest(store.engine) == before

    released = cli("breaker", "release", POLICY_ID, "--as", ADMIN, "--json", "--at", later)
    assert released.code == 0, released.err
    assert released.json() == {
        "policy": POLICY_ID,
        "released": 10,
        "causes": {"mass_deny": 10},
        "decision_changes": 10,
    }
    assert {r.decision for r in decisions(store.engine).values()} == {"deny"}
    assert [a.action for a in audit_actions(store.engine, "breaker.")] == [
        "breaker.open",
        "breaker.release",
    ]
    assert audit_actions(store.engine, "breaker.release")[0].actor == ADMIN
    (closed,) = cli("breaker", "list", "--json", "--at", later).json()
    assert (closed["state"], closed["held"]) == ("closed", 0)


def gate_answers(engine: Engine, context: AppContext, at: datetime) -> dict[str, tuple[str, str]]:
    """Each phone's email decision at `at` as a gate answers it: from a server's in-memory copy
    (loaded now, as a process does) and from the store path."""
    index = DecisionIndex(["udid"])
    with engine.connect() as connection:
        index.load_all(connection)
    answers = {}
    with context.uow(at, write=False) as uow:
        for value, record in decisions(engine).items():
            copy = index.decision(record.device_id, "email")
            assert copy is not None
            device = uow.session.get(Device, record.device_id)
            stored, _ = current_decision(uow, device, "email", at)
            answers[value] = (str(copy.at(at).decision), str(stored))
    return answers


def test_a_deadline_that_would_flip_more_than_the_bound_is_held_in_every_gate(store, cli, context):
    send(context, T0, *(report(i, T0, (TIKTOK,)) for i in range(FLEET)))
    release(context)  # every phone carries TikTok from before the release: due at the deadline
    found = decisions(store.engine)
    assert {r.decision for r in found.values()} == {"allow"}
    prepared = {u for u, r in found.items() if r.next_decision == "deny"}
    held = set(found) - prepared
    assert len(prepared) == 50
    assert {policy_reason(found[u].next_reasons)["reason"] for u in held} == {"breaker_open"}

    after = DEADLINE + timedelta(seconds=1)
    expected = {u: ("deny", "deny") if u in prepared else ("allow", "allow") for u in found}
    assert gate_answers(store.engine, context, after) == expected

    run_worker(context, DEADLINE + timedelta(minutes=1))  # the deadline materialised
    found = decisions(store.engine)
    assert {u for u, r in found.items() if r.decision == "deny"} == prepared
    assert {policy_reason(found[u].reasons)["cause"] for u in held} == {"mass_deny"}
    at = iso(DEADLINE + timedelta(minutes=5))
    (listed,) = cli("breaker", "list", "--json", "--at", at).json()
    assert (listed["state"], listed["held"]) == ("tripped", 10)
    assert cli("breaker", "release", POLICY_ID, "--as", ADMIN, "--at", at).code == 0
    assert {r.decision for r in decisions(store.engine).values()} == {"deny"}


def test_a_prepared_flip_withdrawn_before_its_deadline_gives_its_place_back(store, context):
    send(context, T0, *(report(i, T0, (TIKTOK,)) for i in range(FLEET)))
    release(context)
    found = decisions(store.engine)
    prepared = sorted(u for u, r in found.items() if r.next_decision == "deny")
    cleaned = prepared[:5]  # five people remove the app the day before the deadline
    day_before = DEADLINE - timedelta(days=1)
    send(context, day_before, *(report(int(u[-3:]), day_before, (OUTLOOK,)) for u in cleaned))
    run_worker(context, DEADLINE + timedelta(minutes=1))
    found = decisions(store.engine)
    denied = [u for u, r in found.items() if r.decision == "deny"]
    assert len(denied) == 50  # the 45 prepared and 5 of the 10 held take the freed places
    assert {found[u].decision for u in cleaned} == {"allow"}
    still_held = [u for u, r in found.items() if r.decision == "allow" and u not in cleaned]
    assert len(still_held) == 5


def add_run(context: AppContext, finished: datetime, *, error: str | None = None) -> None:
    """A sync run of `fleet`, as H-sync's connectors record one: complete unless it failed."""
    with context.uow(finished) as uow:
        uow.session.add(
            SourceRun(
                source="fleet",
                started_at=finished - timedelta(minutes=5),
                finished_at=finished,
                complete=error is None,
                pages=1,
                reports=4,
                devices=4,
                error=error,
                runner="test",
            )
        )


def scrape(store, at: datetime) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics of a server whose clock reads `at`, by (sample name, labels)."""
    settings = Settings(
        database_url=store.url,
        env="test",
        clock=f"fixed:{iso(at)}",
        source_stale_after=STALE_AFTER,
    )
    headers = bearer(api_token(store, Permission.READ, name="prometheus"))
    with TestClient(create_app(settings)) as client:
        response = client.get("/metrics", headers=headers)
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


FLEET_PHONES = range(4)
MDM_PHONE = 9  # reported by a file import only: its source has no runs and is never stale


def test_a_silent_source_is_stale_and_its_devices_are_held_not_denied(
    store, cli, context, monkeypatch, caplog
):
    monkeypatch.setenv("APPWARDEN_SOURCE_STALE_AFTER", '{"fleet": "PT6H"}')
    add_run(context, T0)
    fleet = [report(i, T0, (OUTLOOK,), source="fleet") for i in FLEET_PHONES]
    send(context, T0, *fleet, report(MDM_PHONE, T0, (OUTLOOK,)))
    # Proofs of absence last two days; unknown is denied from the deadline on.
    release(context, unknown="deny", age="P2D", deadline=RELEASE + timedelta(days=1))
    add_run(context, T0 + timedelta(days=2), error="fleet answered 503 for page 2")
    silent = T0 + timedelta(days=2, hours=1)  # fleet's last complete run was 49 hours ago

    sources = {r["source"]: r for r in cli("sources", "--json", "--at", iso(silent)).json()}
    assert sources["fleet"] | {"last_complete_run": None, "last_run": None} == {
        "source": "fleet",
        "devices": 4,
        "watched": True,
        "stale": True,
        "stale_after": "PT6H",
        "stale_after_from": "stale_after",
        "last_complete_at": iso(T0),
        "age_seconds": 49 * 3600,
        "last_complete_run": None,
        "last_run": None,
        "last_error": "fleet answered 503 for page 2",
    }
    assert sources["fleet"]["last_run"]["complete"] is False
    assert (sources["mdm"]["devices"], sources["mdm"]["watched"], sources["mdm"]["stale"]) == (
        1,
        False,
        False,
    )
    # Before the worker's pass, no gate denies the silent source's phones: their deny was left
    # to the worker when it was prepared; the file-fed phone is denied from its prepared flip.
    answers = gate_answers(store.engine, context, silent)
    assert {answers[udid(i)] for i in FLEET_PHONES} == {("allow", "allow")}
    assert answers[udid(MDM_PHONE)] == ("deny", "deny")

    with caplog.at_level("WARNING", logger="appwarden.worker"):
        run_worker(context, silent)
    assert [
        r.getMessage().split(":")[0] for r in caplog.records if r.name == "appwarden.worker"
    ] == ["source fleet is stale"]
    found = decisions(store.engine)
    for i in FLEET_PHONES:
        held = policy_reason(found[udid(i)].reasons)
        assert (found[udid(i)].decision, held["state"], held["reason"], held["cause"]) == (
            "allow",
            "unknown",
            "breaker_open",
            "source_stale:fleet",
        )
    assert found[udid(MDM_PHONE)].decision == "deny"
    decided = cli("decide", f"udid:{udid(0)}", "email", "--json", "--at", iso(silent)).json()
    assert decided["decision"] == "allow"
    assert policy_reason(decided["reasons"])["cause"] == "source_stale:fleet"
    answers = gate_answers(store.engine, context, silent)
    assert {answers[udid(i)] for i in FLEET_PHONES} == {("allow", "allow")}

    metrics = scrape(store, silent)
    assert metrics[("appwarden_source_stale", (("source", "fleet"),))] == 1
    assert metrics[("appwarden_source_stale", (("source", "mdm"),))] == 0
    assert metrics[("appwarden_source_devices", (("source", "fleet"),))] == 4
    completed = ("appwarden_source_last_complete_run_timestamp_seconds", (("source", "fleet"),))
    assert metrics[completed] == T0.timestamp()
    assert metrics[("appwarden_breaker_open", (("policy", POLICY_ID),))] == 1

    fresh = silent + timedelta(hours=1)  # fleet syncs again; phone 0 reported clean in it
    add_run(context, fresh)
    send(context, fresh, report(0, fresh, (OUTLOOK,), source="fleet"))
    run_worker(context, fresh + timedelta(minutes=1))
    found = decisions(store.engine)
    assert found[udid(0)].decision == "allow"
    assert "reason" not in policy_reason(found[udid(0)].reasons)
    assert [found[udid(i)].decision for i in FLEET_PHONES[1:]] == ["deny"] * 3
    at = iso(fresh + timedelta(minutes=2))
    assert {r["source"]: r["stale"] for r in cli("sources", "--json", "--at", at).json()} == {
        "fleet": False,
        "mdm": False,
    }
    (breaker,) = cli("breaker", "list", "--json", "--at", at).json()
    assert (breaker["state"], breaker["held"]) == ("closed", 0)
    assert [a.action for a in audit_actions(store.engine, "breaker.")] == [
        "breaker.open",
        "breaker.close",
    ]
    metrics = scrape(store, fresh + timedelta(minutes=2))
    assert metrics[("appwarden_source_stale", (("source", "fleet"),))] == 0
    assert metrics[("appwarden_breaker_open", (("policy", POLICY_ID),))] == 0


def test_a_bad_staleness_setting_is_refused_with_its_name(store, cli, monkeypatch):
    monkeypatch.setenv("APPWARDEN_SOURCE_STALE_AFTER", '{"fleet": "1h"}')
    refused = cli("sources")
    assert refused.code == 2
    assert refused.err.startswith("error: APPWARDEN_SOURCE_STALE_AFTER: expected a duration")
    monkeypatch.setenv("APPWARDEN_SOURCE_STALE_AFTER", "fleet=PT1H")
    refused = cli("sources")
    assert (refused.code, refused.err.split(":")[:3]) == (
        2,
        ["error", " APPWARDEN_SOURCE_STALE_AFTER", " not valid JSON"],
    )
