"""The enrolment section of a device page in the portal (docs/targeted-check.md): dave gets a
one-time code for his own iPhone, shown once, stored hashed, bound to that device and expiring
in 15 minutes; someone else's device and a form without its CSRF token change nothing."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

from sqlalchemy import select
from tests.conftest import table_digest
from tests.portal_harness import (
    MORNING,
    csrf_of,
    device_named,
    person_client,
)

from appwarden.db.uow import unit_of_work
from appwarden.devices.models import AgentEnrolmentCode

IGNORED = ("portal_session",)


def test_dave_gets_a_code_for_his_own_iphone_shown_once_and_stored_hashed(store, app):
    dave = person_client(app, store, "dave@example.com")
    phone = device_named(store, "Dave's iPhone")
    page = dave.get(f"/me/devices/{phone}").text
    assert "Get a code for the agent or check app" in page
    made = dave.post(f"/me/devices/{phone}/agent-code", data={"csrf": csrf_of(page)})
    assert made.status_code == 200
    assert made.headers["cache-control"] == "no-store"
    code = re.search(r'<strong class="code">([A-Z0-9-]+)</strong>', made.text).group(1)
    assert "within 15 minutes" in made.text
    with unit_of_work(store.engine, now=MORNING, write=False) as uow:
        (row,) = uow.session.scalars(select(AgentEnrolmentCode)).all()
    assert row.device_id == phone
    assert row.code_hash == hashlib.sha256(code.replace("-", "").encode()).hexdigest()
    assert row.expires_at - row.created_at == timedelta(minutes=15)
    assert code not in dave.get(f"/me/devices/{phone}").text  # never shown again


def test_someone_elses_device_or_a_missing_csrf_token_changes_nothing(store, app):
    alice = person_client(app, store, "alice@example.com")
    dave_phone = device_named(store, "Dave's iPhone")
    alice_phone = device_named(store, "Alice's iPhone")
    token = csrf_of(alice.get("/me/").text)
    before = table_digest(store.engine, exclude=IGNORED)
    assert (
        alice.post(f"/me/devices/{dave_phone}/agent-code", data={"csrf": token}).status_code == 404
    )
    assert alice.post(f"/me/devices/{alice_phone}/agent-code", data={}).status_code == 403
    assert table_digest(store.engine, exclude=IGNORED) == before
