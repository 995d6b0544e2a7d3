"""The mass-lockout breaker on both stores (docs/architecture.md, rule 3 of "The decision rule"):
the 51st allow→deny flip of a policy within an hour is held and the 50th is not, an admin's
release applies the held denies (audited) while a viewer's is refused, and a deadline that would
flip more than the bound at once is held in every gate's copy too."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from tests.conftest import table_digest

from appwarden.access.index import DecisionIndex
from appwarden.access.models import DecisionRecord
from appwarden.audit.models import AuditEntry
from appwarden.cli.context import AppContext
from appwarden.devices.models import Device, DeviceIdentifier
from appwarden.devices.schemas import AppSeen, DeviceFacts, InventoryBatch, ReportFacts
from appwarden.identity.service import grant_role
from appwarden.policies import service as policies
from appwarden.settings import Settings
from appwarden.timeutil import iso
from appwarden.usecases.gate import current_decision
from appwarden.usecases.ingest import ingest
from appwarden.usecases.worker import worker_pass
from appwarden.vocabulary import EvidenceKind, FormFactor, Ownership, Platform, Role

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
    made = AppContext(Settings(database_url=store.url, maildir=tmp_path / "mail"))
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


def gate_copy(engine: Engine) -> DecisionIndex:
    """A gate's in-memory copy of the decisions, as a server process loads it."""
    index = DecisionIndex(["udid"])
    with engine.connect() as connection:
        index.load_all(connection)
    return index


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
    index = gate_copy(store.engine)
    with context.uow(after, write=False) as uow:
        for value, record in found.items():
            answer = index.decision(record.device_id, "email").at(after).decision
            device = uow.session.get(Device, record.device_id)
            stored, _ = current_decision(uow, device, "email", after)
            expected = "deny" if value in prepared else "allow"
            assert (answer, stored) == (expected, expected), value

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
