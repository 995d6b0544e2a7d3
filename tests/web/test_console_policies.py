"""The console's policy pages (docs/console.md) through a test client: who sees which step, and
that a step the page does not offer is refused when its form is posted directly (nothing
changed); the editor's located errors; every step audited as the command line's."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select
from tests.conftest import table_digest
from tests.portal_harness import (
    RELEASE,
    TimeFile,
    csrf_of,
    https_client,
    open_session,
    portal_settings,
    signed_in,
    statements_while_rendering,
)

from appwarden.audit.models import AuditEntry
from appwarden.db.uow import unit_of_work
from appwarden.policies.models import PolicyVersion
from appwarden.timeutil import iso
from appwarden.usecases.demo import APPROVER, AUTHOR, POLICY_ID, policy_text
from appwarden.vocabulary import SignInMethod
from appwarden.web.app import create_app

#: Ten days before the memo's release: the draft's inventory is fresh.
START = RELEASE - timedelta(days=10)
VIEWER = "viewer@example.com"
ADMIN = "root@example.com"
POLICY_PAGE = f"/admin/policies/{POLICY_ID}"


@pytest.fixture
def clock(tmp_path) -> TimeFile:
    time = TimeFile(tmp_path / "now")
    time.set(START)
    return time


@pytest.fixture
def app(store, cli, clock, tmp_path, monkeypatch):
    """The reference organisation with the memo as a draft, a viewer and an admin."""
    assert cli("demo", "--draft", "--base-time", iso(RELEASE) or "").code == 0
    for email, role in ((VIEWER, "viewer"), (ADMIN, "admin")):
        assert cli("admin", "create", email, "--role", role, "--at", iso(START) or "").code == 0
    monkeypatch.setenv("APPWARDEN_MAILDIR", str(tmp_path / "mail"))
    app = create_app(portal_settings(store, clock, tmp_path))
    with https_client(app):
        yield app


def digest(store) -> str:
    """Every table but the sessions (each request may note a session's use)."""
    return table_digest(store.engine, exclude=("portal_session",))


def admin(app, store, email: str, clock: TimeFile):
    """A browser signed in as `email` with a password (a session that carries roles)."""
    secret = open_session(store, email, clock.now(), method=SignInMethod.PASSWORD)
    return signed_in(https_client(app), secret)


def post(browser, path: str, page: str = POLICY_PAGE, **fields: str):
    """Post a console form with the CSRF token of the page it is on."""
    token = csrf_of(browser.get(page).text)
    return browser.post(path, data={"csrf": token, **fields})


def state(store) -> str:
    with unit_of_work(store.engine, now=START, write=False) as uow:
        return uow.session.scalars(
            select(PolicyVersion.state).where(PolicyVersion.policy_id == POLICY_ID)
        ).one()


def buttons(html: str) -> list[str]:
    return re.findall(r"<button[^>]*>([^<]+)</button>", html)


def test_an_author_cannot_approve_their_own_version_even_as_an_admin(store, app, clock):
    """An admin holds every permission, approve included: having written the version, they see
    no approve button, and posting the approve form directly is refused."""
    root = admin(app, store, ADMIN, clock)
    author = admin(app, store, AUTHOR, clock)  # (opening a session is audited: all first)
    approver = admin(app, store, APPROVER, clock)
    changed = policy_text(RELEASE).replace("reminders: [P3D, P1D]", "reminders: [P2D]")
    assert post(root, "/admin/policies", "/admin/editor", document=changed).status_code == 303
    assert "Propose for approval" in buttons(root.get(POLICY_PAGE).text)
    assert post(root, f"{POLICY_PAGE}/propose").status_code == 303
    assert state(store) == "proposed"

    page = root.get(POLICY_PAGE).text
    assert not any(b.startswith("Approve") for b in buttons(page))
    assert "You wrote this version" in page
    queue = root.get("/admin/approvals").text
    assert POLICY_ID in queue
    assert "Approve" not in buttons(queue)
    before = digest(store)
    refused = post(root, f"{POLICY_PAGE}/approve")  # the form, posted directly
    assert refused.status_code == 403
    assert "a different person must approve it" in refused.text
    assert digest(store) == before

    # an author without the approver's role
    assert "Approve" not in buttons(author.get("/admin/approvals").text)
    assert post(author, f"{POLICY_PAGE}/approve").status_code == 403
    assert digest(store) == before

    assert "Approve" in buttons(approver.get("/admin/approvals").text)
    assert post(approver, f"{POLICY_PAGE}/approve", "/admin/approvals").status_code == 303
    assert state(store) == "approved"


def test_a_viewer_sees_no_step_and_posting_each_form_is_refused(store, app, clock):
    author = admin(app, store, AUTHOR, clock)
    post(author, f"{POLICY_PAGE}/propose")
    post(admin(app, store, APPROVER, clock), f"{POLICY_PAGE}/approve")
    viewer = admin(app, store, VIEWER, clock)
    page = viewer.get(POLICY_PAGE)
    assert page.status_code == 200
    assert buttons(page.text) == ["Sign out"]
    assert "Retract" not in page.text
    assert viewer.get(f"{POLICY_PAGE}/retract").status_code == 403
    assert viewer.get("/admin/editor").status_code == 403
    before = digest(store)
    for step in ("approve", "publish", "cancel", "retire", "retract", "retract/review"):
        refused = post(viewer, f"{POLICY_PAGE}/{step}", message="sent in error")
        assert refused.status_code == 403, step
    assert digest(store) == before
    assert state(store) == "approved"


def test_a_form_without_its_csrf_token_changes_nothing(store, app, clock):
    author = admin(app, store, AUTHOR, clock)
    before = digest(store)
    for token in ("", "not-the-token"):
        refused = author.post(f"{POLICY_PAGE}/propose", data={"csrf": token})
        assert refused.status_code == 403
    assert digest(store) == before


def test_the_editor_shows_each_problem_at_its_line_and_column(store, app, clock):
    author = admin(app, store, AUTHOR, clock)
    text = policy_text(RELEASE).replace(
        "platforms: [ios, ipados, android]", "platforms: [ios, androd]"
    )
    line = text.splitlines().index("    platforms: [ios, androd]") + 1
    before = digest(store)
    sent = post(author, "/admin/policies", "/admin/editor", document=text)
    assert sent.status_code == 422
    assert f'<a href="#line-{line}">Line {line}, column ' in sent.text
    assert f'id="line-{line}" class="bad"' in sent.text
    assert digest(store) == before

    uploaded = author.post(
        "/admin/policies",
        data={"csrf": csrf_of(author.get("/admin/editor").text)},
        files={"upload": ("memo.yaml", text.replace("androd", "android").encode(), "text/yaml")},
    )
    assert uploaded.status_code == 303
    assert uploaded.headers["location"] == f"{POLICY_PAGE}?done=stored"


def test_each_step_is_audited_as_the_command_line_audits_it(store, app, clock, cli):
    author = admin(app, store, AUTHOR, clock)
    assert post(author, f"{POLICY_PAGE}/propose").status_code == 303
    with unit_of_work(store.engine, now=START, write=False) as uow:
        entry = uow.session.scalars(
            select(AuditEntry).where(AuditEntry.action == "policy.propose")
        ).one()
    assert (entry.actor, entry.object_id) == (AUTHOR, f"{POLICY_ID}@1")
    assert (entry.before, entry.after) == ({"state": "draft"}, {"state": "proposed"})


def test_a_retraction_needs_its_message_and_names_who_will_be_told_first(store, app, clock, cli):
    for step, who in (("propose", AUTHOR), ("approve", APPROVER), ("publish", AUTHOR)):
        at = iso(START) or ""
        assert cli("policy", step, POLICY_ID, "--as", who, "--at", at).code == 0, step
    root = admin(app, store, ADMIN, clock)
    page = f"{POLICY_PAGE}/retract"
    before = digest(store)
    blank = post(root, f"{page}/review", page, message="   ")
    assert blank.status_code == 422
    assert "Write the message" in blank.text
    review = post(root, f"{page}/review", page, message="Sent in error.")
    assert review.status_code == 200
    assert "Nobody: no notice about this policy has gone out" in review.text  # undo window
    assert digest(store) == before
    done = post(root, page, page, message="Sent in error.")
    assert done.status_code == 303
    assert state(store) == "retracted"


def test_console_pages_run_no_sql_while_rendering(store, app, clock, monkeypatch):
    root = admin(app, store, ADMIN, clock)
    post(root, f"{POLICY_PAGE}/propose")
    paths = (
        "/admin/",
        "/admin/policies",
        "/admin/editor",
        POLICY_PAGE,
        f"{POLICY_PAGE}/edit",
        f"{POLICY_PAGE}/preview",
        f"{POLICY_PAGE}/retract",
        "/admin/approvals",
    )
    with statements_while_rendering(app, monkeypatch) as counts:
        for path in paths:
            assert root.get(path).status_code == 200, path
    assert counts["renders"] == len(paths)
    assert counts["outside"] > 0
    assert counts["during"] == 0


def test_the_impact_preview_shows_each_recipient_with_their_text(store, app, clock):
    viewer = admin(app, store, VIEWER, clock)
    shown = viewer.get(f"{POLICY_PAGE}/preview")
    assert shown.status_code == 200
    announced = re.search(r'id="audience-announce">([^<]*)<', shown.text)
    assert announced is not None
    assert "alice@example.com" in announced.group(1).split(", ")
    assert "<strong>alice@example.com</strong>" in shown.text
    assert "Delete the TikTok app from this device." in shown.text  # the notice's own text


def test_lists_page_on_the_server_with_a_bounded_size(store, app, clock):
    viewer = admin(app, store, VIEWER, clock)
    assert viewer.get("/admin/approvals?size=1").status_code == 200
    for bad in ("0", "201", "x"):
        assert viewer.get(f"/admin/approvals?size={bad}").status_code == 422, bad
