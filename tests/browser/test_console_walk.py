"""The life of a version in the admin console, in a real browser, walked through time
(APPWARDEN_CLOCK=file:…, `worker --once`, mail read from the test SMTP server): the author
uploads a policy with an error and sees it at its line, fixes it, proposes; the approver previews
and approves; publish; cancel inside the undo window; publish again; the announcements go out;
an admin retracts with a message and sees, before confirming, exactly who then receives the
correction. Every page on the way passes axe-core and the phone-size check, with a screenshot
in artifacts/ (tests/browser/conftest.py). And a viewer can neither see nor post a step."""

from __future__ import annotations

from datetime import timedelta

from tests.portal_harness import RELEASE

from appwarden.usecases.demo import APPROVER, AUTHOR, POLICY_ID, policy_text
from appwarden.vocabulary import SignInMethod

PASSWORD = SignInMethod.PASSWORD
ADMIN = "root@example.com"
VIEWER = "viewer@example.com"
POLICY_PAGE = f"/admin/policies/{POLICY_ID}"
#: The memo with a change of wording (so it is a new draft), and with a typo on one line.
FIXED = policy_text(RELEASE).replace(
    "Access returns within a minute", "Mail returns within a minute"
)
BROKEN = FIXED.replace("platforms: [ios, ipados, android]", "platforms: [ios, ipados, androd]")
BROKEN_LINE = BROKEN.splitlines().index("    platforms: [ios, ipados, androd]") + 1


def upload(page, text: str) -> None:
    page.get_by_label("Or upload a file").set_input_files(
        {"name": "memo.yaml", "mimeType": "text/yaml", "buffer": text.encode()}
    )
    page.get_by_role("button", name="Save as draft").click()


def recipients(portal, *kinds: str) -> set[str]:
    """Who received mail of these kinds (X-Appwarden-Kind); of any kind without `kinds`."""
    return {
        str(m["To"]) for m in portal.smtp.messages if not kinds or m["X-Appwarden-Kind"] in kinds
    }


def test_a_version_from_upload_to_retraction_in_the_console(draft_portal, pages):
    portal = draft_portal
    assert portal.cli("admin", "create", ADMIN, "--role", "admin") == 0
    author = portal.signed_in(pages, AUTHOR, method=PASSWORD)

    # The author uploads a document with a typo: the problem is shown at its line and column.
    author.goto(f"{portal.url}{POLICY_PAGE}/edit")
    pages.check(author, "editor")
    upload(author, BROKEN)
    problem = author.get_by_role("alert")
    assert f"Line {BROKEN_LINE}, column" in problem.inner_text()
    assert "androd" in problem.inner_text()
    marked = author.locator(f"#line-{BROKEN_LINE}")
    assert "bad" in (marked.get_attribute("class") or "")
    assert "platforms: [ios, ipados, androd]" in marked.inner_text()
    pages.check(author, "editor-error")
    upload(author, FIXED)
    author.wait_for_url(f"{portal.url}{POLICY_PAGE}?done=stored")
    assert "Saved as a draft." in author.get_by_role("status").inner_text()
    author.get_by_role("button", name="Propose for approval").click()
    author.wait_for_url(f"{portal.url}{POLICY_PAGE}?done=propose")
    assert "You wrote this version" in author.locator("main").inner_text()
    pages.check(author, "proposed")

    # The approver finds it in the queue, previews its impact, approves.
    approver = portal.signed_in(pages, APPROVER, method=PASSWORD)
    approver.goto(f"{portal.url}/admin/approvals")
    pages.check(approver, "approvals")
    approver.get_by_role("link", name="Preview").click()
    announced = approver.locator("#audience-announce").inner_text().split(", ")
    assert "alice@example.com" in announced
    approver.locator("details summary").first.click()  # each recipient's exact text
    assert "Mail returns within a minute" in approver.locator("details pre").first.inner_text()
    pages.check(approver, "preview")
    approver.goto(f"{portal.url}/admin/approvals")
    approver.get_by_role("button", name="Approve").click()
    approver.wait_for_url(f"{portal.url}{POLICY_PAGE}?done=approve")

    # Publish, and cancel inside the undo window: nothing is sent.
    author.goto(f"{portal.url}{POLICY_PAGE}")
    author.get_by_role("button", name="Publish").click()
    author.wait_for_url(f"{portal.url}{POLICY_PAGE}?done=publish")
    assert author.locator(".countdown").inner_text() == "10 minutes left"
    pages.check(author, "scheduled")
    portal.clock.advance(timedelta(minutes=4))
    author.reload()
    assert author.locator(".countdown").inner_text() == "6 minutes left"
    author.get_by_role("button", name="Cancel the release").click()
    author.wait_for_url(f"{portal.url}{POLICY_PAGE}?done=cancel")
    assert "approved" in author.locator("dl.facts").inner_text()
    portal.worker()
    assert portal.smtp.messages == []

    # Publish again; once the undo window has closed the worker releases it and people are told.
    author.get_by_role("button", name="Publish").click()
    author.wait_for_url(f"{portal.url}{POLICY_PAGE}?done=publish")
    portal.clock.advance(timedelta(minutes=11))
    portal.worker()
    assert recipients(portal, "announce") == set(announced)
    told = recipients(portal)  # the announced, and frank, told his exemption still applies
    assert told > set(announced)

    # An admin retracts: the confirmation names exactly who will get the correction.
    admin = portal.signed_in(pages, ADMIN, method=PASSWORD)
    admin.goto(f"{portal.url}{POLICY_PAGE}")
    admin.get_by_role("link", name="Retract (sent in error)…").click()
    pages.check(admin, "retract")
    message = admin.get_by_label("Message to the people who were told (required)")
    admin.get_by_role("button", name="Review who will be told").click()
    assert message.evaluate("field => field.validity.valueMissing")  # the browser asks for it
    assert admin.url == f"{portal.url}{POLICY_PAGE}/retract"
    message.fill("This notice was sent in error: you do not need to do anything.")
    admin.get_by_role("button", name="Review who will be told").click()
    listed = set(admin.locator("#correction-recipients tbody tr td:first-child").all_inner_texts())
    assert listed == told
    pages.check(admin, "retract-confirm")
    admin.get_by_role("button", name="Retract and send the correction").click()
    admin.wait_for_url(f"{portal.url}{POLICY_PAGE}?done=retract")
    portal.clock.advance(timedelta(minutes=1))
    portal.worker()
    assert recipients(portal, "correction") == listed
    correction = portal.mail_to("alice@example.com", "correction")
    assert "sent in error" in correction.get_body(preferencelist=("plain",)).get_content()

    admin.goto(f"{portal.url}/admin/policies")
    assert "v1 retracted" in admin.locator("main table").inner_text()
    pages.check(admin, "policies")
    admin.goto(f"{portal.url}/admin/")
    assert admin.locator("svg[role=img]").count() == 1  # the release's and retraction's counts
    pages.check(admin, "dashboard")


def test_a_viewer_sees_no_step_and_a_posted_form_is_refused(draft_portal, pages):
    portal = draft_portal
    assert portal.cli("admin", "create", VIEWER, "--role", "viewer") == 0
    viewer = portal.signed_in(pages, VIEWER, method=PASSWORD)
    viewer.goto(f"{portal.url}{POLICY_PAGE}")
    assert viewer.locator("main button").count() == 0
    pages.check(viewer, "viewer")
    token = viewer.locator("input[name=csrf]").first.get_attribute("value")
    for step in ("propose", "approve", "publish", "retract"):
        refused = viewer.request.post(
            f"{portal.url}{POLICY_PAGE}/{step}", form={"csrf": token, "message": "no"}
        )
        assert refused.status == 403, step
    viewer.goto(f"{portal.url}{POLICY_PAGE}")
    assert "draft" in viewer.locator("dl.facts").inner_text()
