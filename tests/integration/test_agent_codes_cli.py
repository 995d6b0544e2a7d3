"""`appwarden agent code DEVICE`: an enrolment code needs a named actor with `inventory:write`
(refused otherwise, nothing changed), is audited without the code, and a server with an agent
secret anyone could guess refuses to start."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from tests.agent_harness import DAVE
from tests.conftest import table_digest

from appwarden.audit.models import AuditEntry
from appwarden.db.uow import unit_of_work
from appwarden.settings import Settings
from appwarden.timeutil import parse_instant
from appwarden.web.agent_api import AgentMisconfigured
from appwarden.web.app import create_app

AT = "2020-07-11T12:00:00Z"


def test_a_code_needs_inventory_write_and_is_audited_without_itself(store, cli, demo):
    before = table_digest(store.engine)
    for who in ((), ("--as", "ciso@example.com")):  # nobody named; an approver
        refused = cli("agent", "code", DAVE, *who, "--at", AT)
        assert refused.code != 0
        assert "inventory:write" in refused.err
    assert table_digest(store.engine) == before
    assert cli("admin", "create", "ops@example.com", "--role", "admin", "--at", AT).code == 0
    made = cli("agent", "code", DAVE, "--as", "ops@example.com", "--json", "--at", AT)
    assert made.code == 0, made.err
    out = made.json()
    assert out["expires_at"] == "2020-07-11T12:15:00Z"
    with unit_of_work(store.engine, now=parse_instant(AT), write=False) as uow:
        entry = uow.session.scalars(
            select(AuditEntry).where(AuditEntry.action == "agent.code")
        ).one()
        assert out["code"] not in str(entry.after)
        assert entry.object_id == str(out["device_id"])


def test_a_short_agent_secret_stops_the_server(store, tmp_path):
    settings = Settings(database_url=store.url, env="test", agent_secret="too-short")
    with pytest.raises(AgentMisconfigured, match="APPWARDEN_AGENT_SECRET is 9 bytes long"):
        create_app(settings)
