"""What each notice says (appwarden.notifications.messages): subjects, key sentences in text and
HTML, instants in the recipient's zone, escaping, and the email that carries a notice.

The reference memo (README): TikTok is no longer permitted on mobile devices that access
company email; remove it by July 10 (2020-07-10T23:59:59-07:00 = 2020-07-11T06:59:59Z).
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import html
import re
import shutil
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import pytest

from appwarden.errors import NotFound
from appwarden.notifications import templates
from appwarden.notifications.messages import (
    TEMPLATE_FILES,
    TEMPLATE_NAMES,
    DeviceLine,
    NoticeContext,
    RenderedMessage,
    available_templates,
    build_email,
    format_instant,
    format_short_date,
    new_message_id,
    render,
)

DEADLINE = datetime(2020, 7, 11, 6, 59, 59, tzinfo=UTC)
PORTAL = "https://appwarden.example.com/me/"
TITLE = "Mandatory removal of TikTok"
REMEDIATION = (
    "Delete the TikTok app from this device. Access returns within a minute of the next check-in."
)
ALTERNATIVES = "Using TikTok from your company laptop browser is allowed."
RATIONALE = (
    "The app can read what you copy to the clipboard and sends data to servers outside our control."
)

ALICE_IPHONE = DeviceLine(
    name="Alice's iPhone", platform="ios", variant="violating", apps_found=("TikTok",)
)
DAVE_IPHONE = DeviceLine(name="Dave's iPhone", platform="ios", variant="unverified")


def context(**changes: object) -> NoticeContext:
    base = NoticeContext(
        kind="announce",
        template="mandatory-removal",
        person_name="Alice Example",
        person_email="alice@example.com",
        time_zone="America/Los_Angeles",
        policy_id="tiktok-mobile-email",
        policy_title=TITLE,
        app_names=("TikTok",),
        deadline=DEADLINE,
        devices=(ALICE_IPHONE,),
        remediation=REMEDIATION,
        allowed_alternatives=ALTERNATIVES,
        rationale=RATIONALE,
        portal_url=PORTAL,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def visible(markup: str) -> str:
    """What a reader sees in the HTML body: tags dropped, entities decoded, spaces folded."""
    body = markup.split("</head>", 1)[1]
    blocks = re.sub(r"<(?:br|/?(?:p|li|ul|div|blockquote|body|html))\b[^>]*>", " ", body)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", blocks)).split())


def flat(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------
# Instants


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("America/Los_Angeles", "Friday, July 10, 2020 at 11:59 PM PDT"),
        ("Europe/Berlin", "Saturday, July 11, 2020 at 8:59 AM CEST"),
        ("America/New_York", "Saturday, July 11, 2020 at 2:59 AM EDT"),
        ("UTC", "Saturday, July 11, 2020 at 6:59 AM UTC"),
        ("Asia/Kolkata", "Saturday, July 11, 2020 at 12:29 PM IST"),
        # tzdata has no customary abbreviation for these: the offset is written out.
        ("Asia/Dubai", "Saturday, July 11, 2020 at 10:59 AM UTC+4"),
        ("Asia/Kathmandu", "Saturday, July 11, 2020 at 12:44 PM UTC+5:45"),
        ("America/Sao_Paulo", "Saturday, July 11, 2020 at 3:59 AM UTC-3"),
    ],
)
def test_instants_are_shown_in_the_recipients_zone_with_its_abbreviation(zone, expected):
    assert format_instant(DEADLINE, zone) == expected


def test_winter_time_and_the_twelve_oclock_hours():
    midnight = datetime(2020, 12, 1, 8, 0, tzinfo=UTC)  # 00:00 PST
    noon = datetime(2020, 12, 1, 11, 0, tzinfo=UTC)  # 12:00 CET
    assert (
        format_instant(midnight, "America/Los_Angeles")
        == "Tuesday, December 1, 2020 at 12:00 AM PST"
    )
    assert format_instant(noon, "Europe/Berlin") == "Tuesday, December 1, 2020 at 12:00 PM CET"


def test_short_dates_follow_the_recipients_zone():
    assert format_short_date(DEADLINE, "America/Los_Angeles") == "Fri, Jul 10"
    assert format_short_date(DEADLINE, "Europe/Berlin") == "Sat, Jul 11"


def test_an_unknown_zone_still_renders_in_utc_and_says_so():
    assert format_instant(DEADLINE, "Mars/Olympus_Mons") == "Saturday, July 11, 2020 at 6:59 AM UTC"
    assert format_instant(DEADLINE, "../../etc/passwd").endswith("6:59 AM UTC")


def test_naive_instants_are_refused():
    with pytest.raises(ValueError, match="naive"):
        format_instant(datetime(2020, 7, 10, 23, 59, 59), "UTC")


# ---------------------------------------------------------------------------------------------
# Subjects


@pytest.mark.parametrize(
    ("kind", "template", "extra", "subject"),
    [
        ("announce", "mandatory-removal", {}, "Action required: Mandatory removal of TikTok"),
        ("update", "update", {}, "Updated: Mandatory removal of TikTok"),
        ("update", "no-longer-affected", {}, "No longer affected: Mandatory removal of TikTok"),
        ("reminder", "reminder", {}, "Reminder: Mandatory removal of TikTok — due Fri, Jul 10"),
        (
            "blocked",
            "blocked",
            {"resource": "email"},
            "Email access blocked: Mandatory removal of TikTok",
        ),
        (
            "blocked",
            "blocked",
            {"resource": "webmail"},
            "Webmail access blocked: Mandatory removal of TikTok",
        ),
        ("blocked", "blocked", {}, "Access blocked: Mandatory removal of TikTok"),
        (
            "restored",
            "restored",
            {"resource": "email"},
            "Email access restored: Mandatory removal of TikTok",
        ),
        (
            "restored",
            "restored",
            {"resource": "webmail"},
            "Webmail access restored: Mandatory removal of TikTok",
        ),
        ("exemption", "exemption-granted", {}, "Exemption granted: Mandatory removal of TikTok"),
        (
            "exemption",
            "exemption-expiring",
            {},
            "Exemption ending soon: Mandatory removal of TikTok",
        ),
        ("correction", "correction", {}, "Correction: Mandatory removal of TikTok"),
    ],
)
def test_subject_of_each_kind(kind, template, extra, subject):
    assert render(context(kind=kind, template=template, **extra)).subject == subject


def test_the_reminder_subject_uses_the_recipients_date():
    message = render(context(kind="reminder", template="reminder", time_zone="Europe/Berlin"))
    assert message.subject == "Reminder: Mandatory removal of TikTok — due Sat, Jul 11"


def test_the_reminder_subject_uses_the_persons_own_due_when_later_than_the_deadline():
    late = datetime(2020, 7, 13, 16, 0, tzinfo=UTC)
    device = dataclasses.replace(ALICE_IPHONE, due=late)
    message = render(context(kind="reminder", template="reminder", devices=(device,)))
    assert message.subject == "Reminder: Mandatory removal of TikTok — due Mon, Jul 13"
    assert "Please remove it by Monday, July 13, 2020 at 9:00 AM PDT" in message.text


def test_a_subject_is_always_one_line():
    message = render(context(policy_title="Mandatory removal\nof  TikTok\r\nBcc: x@evil.example"))
    assert message.subject == "Action required: Mandatory removal of TikTok Bcc: x@evil.example"


# ---------------------------------------------------------------------------------------------
# The announcement


def test_the_announcement_reads_like_the_reference_memo():
    message = render(context())
    text = message.text
    assert text.startswith("Hello Alice Example,\n\n")
    for sentence in (
        "TikTok is no longer permitted on the devices listed below, which access company email.",
        "Please remove it by Friday, July 10, 2020 at 11:59 PM PDT to keep access to company email.",
        "- We found TikTok on Alice's iPhone (iOS).",
        REMEDIATION,
        ALTERNATIVES,
        f"Why: {RATIONALE}",
        "After the deadline, these devices lose access to company email until the app is removed.",
        f"You can see the status of your devices at {PORTAL}.",
        "Example Corp IT Security",
    ):
        assert sentence in text, sentence
    # In the memo's order: devices, remediation, alternatives, rationale, consequence, contact.
    closing = f"You can see the status of your devices at {PORTAL}"
    positions = [
        text.index(s)
        for s in ("We found", REMEDIATION, ALTERNATIVES, RATIONALE, "After the deadline", closing)
    ]
    assert positions == sorted(positions)
    assert text.endswith("\n\nThank you,\nExample Corp IT Security\n")
    assert "\n\n\n" not in text


def test_the_announcement_html_mirrors_the_text():
    message = render(context())
    seen = visible(message.html)
    for sentence in (
        "Hello Alice Example,",
        "TikTok is no longer permitted on the devices listed below, which access company email.",
        "Please remove it by Friday, July 10, 2020 at 11:59 PM PDT to keep access to company email.",
        "We found TikTok on Alice's iPhone (iOS).",
        REMEDIATION,
        ALTERNATIVES,
        f"Why: {RATIONALE}",
        "After the deadline, these devices lose access to company email until the app is removed.",
        f"You can see the status of your devices at {PORTAL}.",
    ):
        assert sentence in seen, sentence
    assert message.html.startswith("<!DOCTYPE html>")
    assert f"<title>Action required: {TITLE}</title>" in message.html
    assert f'<a href="{PORTAL}"' in message.html


def test_the_deadline_is_shown_in_the_recipients_zone():
    text = render(context(time_zone="Europe/Berlin")).text
    assert "Please remove it by Saturday, July 11, 2020 at 8:59 AM CEST" in text


def test_an_unverified_device_asks_to_remove_and_confirm():
    message = render(context(person_name="Dave Example", devices=(DAVE_IPHONE,)))
    expected = "We cannot see the apps on Dave's iPhone (iOS). If TikTok is installed, remove it."
    assert f"- {expected} What you can do: {PORTAL}\n" in message.text
    assert f"{expected} What you can do on this device" in visible(message.html)
    assert "We found" not in message.text


def test_each_device_gets_its_own_line_and_its_own_due_when_it_differs():
    later = datetime(2020, 7, 13, 16, 0, tzinfo=UTC)
    devices = (
        DAVE_IPHONE,
        DeviceLine("Dave's Pixel", "android", "violating", ("TikTok Lite", "trill"), later),
        DeviceLine("Dave's iPad", "ipados", "compliant"),
        DeviceLine("Dave's tablet", "unknown", "exempt"),
    )
    text = render(context(devices=devices)).text
    assert "Please remove it by Friday, July 10, 2020 at 11:59 PM PDT" in text
    assert (
        "- We found TikTok Lite and trill on Dave's Pixel (Android). "
        "Remove them from this device by Monday, July 13, 2020 at 9:00 AM PDT. What to do: "
    ) in text
    assert "Nothing is required for your other devices:\n" in text
    assert "- Dave's iPad (iPadOS) meets this policy.\n" in text
    assert "- Dave's tablet is covered by an exemption.\n" in text  # unknown platform: no label


def test_several_apps_are_named_with_the_right_grammar():
    text = render(
        context(app_names=("TikTok", "TikTok Lite", "trill"), devices=(DAVE_IPHONE,))
    ).text
    assert "TikTok, TikTok Lite, and trill are no longer permitted" in text
    assert "Please remove them by" in text
    assert "If TikTok, TikTok Lite, or trill is installed, remove it." in text
    assert "until the apps are removed." in text


def test_each_device_links_its_own_page_on_the_portal_at_the_policy():
    devices = (
        dataclasses.replace(ALICE_IPHONE, device_id=7),
        dataclasses.replace(DAVE_IPHONE, device_id=12),
    )
    message = render(context(devices=devices, policy_id="tiktok mobile&email"))
    alice = f"{PORTAL}devices/7?policy=tiktok%20mobile%26email"
    dave = f"{PORTAL}devices/12?policy=tiktok%20mobile%26email"
    assert f"- We found TikTok on Alice's iPhone (iOS). What to do: {alice}\n" in message.text
    assert f"What you can do: {dave}\n" in message.text
    assert f'<a href="{alice}" style="color:#1d4ed8;">What to do on this device</a>' in message.html
    assert f'<a href="{dave}"' in message.html
    blocked = render(
        context(kind="blocked", template="blocked", devices=devices[:1], resource="email")
    )
    assert f"What to do: {PORTAL}devices/7?policy=tiktok-mobile-email" in blocked.text


def test_optional_paragraphs_are_left_out_when_the_policy_has_none():
    text = render(context(remediation=None, allowed_alternatives=None, rationale=None)).text
    assert "How to fix it" not in text
    assert "Why:" not in text
    assert "\n\n\n" not in text
    assert "After the deadline, these devices lose access" in text


def test_the_person_is_greeted_by_email_when_the_name_is_unknown():
    assert render(context(person_name="")).text.startswith("Hello alice@example.com,\n")


# ---------------------------------------------------------------------------------------------
# The other kinds


def test_update_lists_what_changed_then_what_to_do_now():
    change = "The deadline moved to Monday, July 13, 2020 at 11:59 PM PDT."
    message = render(context(kind="update", template="update", changes=(change,)))
    assert f"What changed:\n- {change}\n" in message.text
    assert "What you need to do now: TikTok is no longer permitted" in message.text
    assert "- We found TikTok on Alice's iPhone (iOS)." in message.text
    assert change in visible(message.html)


def test_no_longer_affected_says_nothing_is_required():
    message = render(context(kind="update", template="no-longer-affected", devices=()))
    sentence = f"You are no longer affected by the policy “{TITLE}”."
    assert sentence in message.text
    assert "nothing is required of you" in message.text
    assert sentence in visible(message.html)
    assert "We found" not in message.text


def test_reminder_repeats_the_deadline_and_the_devices():
    message = render(
        context(kind="reminder", template="reminder", devices=(ALICE_IPHONE, DAVE_IPHONE))
    )
    text = message.text
    assert (
        "This is a reminder that TikTok is no longer permitted on the devices listed below" in text
    )
    assert "Please remove it by Friday, July 10, 2020 at 11:59 PM PDT" in text
    assert "- We found TikTok on Alice's iPhone (iOS)." in text
    assert "- We cannot see the apps on Dave's iPhone (iOS)." in text
    assert "If you have already removed it, thank you." in text


def test_blocked_says_which_device_lost_which_access_and_how_to_restore_it():
    message = render(
        context(
            kind="blocked",
            template="blocked",
            resource="email",
            devices=(ALICE_IPHONE, DAVE_IPHONE),
        )
    )
    text = message.text
    assert "Access to company email has been blocked on the devices listed below" in text
    assert f"- Alice's iPhone (iOS): we found TikTok on it. What to do: {PORTAL}\n" in text
    assert (
        "- Dave's iPhone (iOS): we cannot see its apps, so we cannot confirm that TikTok is not installed."
        in text
    )
    assert f"To restore access:\n{REMEDIATION}\n" in text
    assert "Access is restored automatically once the device reports that the app is gone" in text
    assert "The deadline to remove TikTok was Friday, July 10, 2020 at 11:59 PM PDT." in text
    assert "Alice's iPhone (iOS): we found TikTok on it." in visible(message.html)


def test_blocked_webmail_names_webmail():
    text = render(
        context(kind="blocked", template="blocked", resource="webmail", remediation=None)
    ).text
    assert "Access to company webmail has been blocked" in text
    assert "To restore access:\nRemove TikTok from the device.\n" in text


def test_restored_says_access_is_back():
    device = DeviceLine("Alice's iPhone", "ios", "compliant")
    message = render(
        context(kind="restored", template="restored", resource="email", devices=(device,))
    )
    assert "Access to company email has been restored on the devices listed below" in message.text
    assert "- Alice's iPhone (iOS) meets the policy.\n" in message.text
    assert "No further action is needed." in message.text
    assert "Access to company email has been restored" in visible(message.html)


def test_exemption_granted_says_until_when_and_why():
    ends = datetime(2020, 8, 1, 7, 0, tzinfo=UTC)
    device = DeviceLine("Alice's iPhone", "ios", "exempt")
    message = render(
        context(
            kind="exemption",
            template="exemption-granted",
            devices=(device,),
            exemption_ends=ends,
            exemption_reason="Needed for the social media team's campaign work.",
        )
    )
    text = message.text
    assert (
        f"You have been granted an exemption from the policy “{TITLE}” until "
        "Saturday, August 1, 2020 at 12:00 AM PDT." in text
    )
    assert "Reason: Needed for the social media team's campaign work." in text
    assert "The exemption covers:\n- Alice's iPhone (iOS)\n" in text
    assert "you may keep TikTok on these devices without losing access to company email" in text
    assert "Reason: Needed for the social media team's campaign work." in visible(message.html)


def test_exemption_expiring_warns_with_the_end_and_each_devices_due():
    ends = datetime(2020, 8, 1, 7, 0, tzinfo=UTC)
    device = DeviceLine(
        "Alice's iPhone", "ios", "exempt", due=datetime(2020, 8, 2, 7, 0, tzinfo=UTC)
    )
    message = render(
        context(
            kind="exemption", template="exemption-expiring", devices=(device,), exemption_ends=ends
        )
    )
    text = message.text
    assert (
        f"Your exemption from the policy “{TITLE}” ends on Saturday, August 1, 2020 at 12:00 AM PDT."
        in text
    )
    assert "- Alice's iPhone (iOS): remove it by Sunday, August 2, 2020 at 12:00 AM PDT.\n" in text
    assert "loses access to company email until the app is removed" in text
    assert "ends on Saturday, August 1, 2020 at 12:00 AM PDT" in visible(message.html)


def test_the_correction_withdraws_the_memo_and_quotes_the_admin():
    note = "The memo was sent in error.\nThere is no change to our policies."
    message = render(context(kind="correction", template="correction", correction_message=note))
    text = message.text
    assert f"Our earlier message about “{TITLE}” was sent in error and has been withdrawn." in text
    assert "> The memo was sent in error.\n> There is no change to our policies.\n" in text
    assert "Nothing is required of you." in text
    assert "any access to company email that was blocked because of it has been restored" in text
    # It does not repeat the demand it withdraws.
    assert "no longer permitted" not in text
    assert "We found" not in text
    seen = visible(message.html)
    assert "was sent in error and has been withdrawn." in seen
    assert "The memo was sent in error. There is no change to our policies." in seen
    assert "<blockquote" in message.html
    assert "The memo was sent in error.<br>" in message.html


@pytest.mark.parametrize("template", TEMPLATE_NAMES)
def test_every_template_renders_with_only_the_required_facts(template):
    bare = NoticeContext(
        kind="update",
        template=template,
        person_name="Eve",
        person_email="eve@example.com",
        time_zone="UTC",
        policy_id="p-1",
        policy_title="Policy",
        app_names=(),
        deadline=DEADLINE,
        devices=(),
        remediation=None,
        allowed_alternatives=None,
        rationale=None,
        portal_url=PORTAL,
    )
    message = render(bare)
    assert message.subject.endswith(": Policy") or "Policy" in message.subject
    assert message.text.startswith("Hello Eve,\n")
    # No Python value leaks into the words ("None of your devices" is wording).
    assert not re.search(r"\bNone\b(?! of your)", message.text)
    assert not re.search(r"\bNone\b(?! of your)", visible(message.html))
    assert "\n\n\n" not in message.text


# ---------------------------------------------------------------------------------------------
# Escaping


def test_everything_user_controlled_is_escaped_in_html_and_intact_in_text():
    hostile = '<script>alert("x")</script> & co'
    message = render(
        context(
            policy_title=hostile,
            person_name="<b>Mallory</b>",
            devices=(
                DeviceLine('<img src=x onerror="1">', "ios", "violating", ("<i>TikTok</i>",)),
            ),
            remediation="Step 1: <em>delete</em>\nStep 2: wait",
            allowed_alternatives="<a href='javascript:x'>browser</a>",
            rationale="a < b",
            portal_url='https://portal.example.com/?a=1&b="2"',
        )
    )
    assert "<script>" not in message.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; co" in message.html
    assert "<b>Mallory</b>" not in message.html
    assert "<img" not in message.html
    assert "<i>TikTok</i>" not in message.html
    assert "<em>" not in message.html
    assert "javascript:x'>" not in message.html
    assert "Step 1: &lt;em&gt;delete&lt;/em&gt;<br>\nStep 2: wait" in message.html
    assert 'href="https://portal.example.com/?a=1&amp;b=&#34;2&#34;"' in message.html
    # The text body carries the same words verbatim.
    assert message.subject == f"Action required: {hostile}"
    assert message.text.startswith("Hello <b>Mallory</b>,\n")
    assert 'We found <i>TikTok</i> on <img src=x onerror="1"> (iOS).' in message.text
    assert "Step 1: <em>delete</em>\nStep 2: wait" in message.text
    assert "&lt;" not in message.text
    assert "&amp;" not in message.text


# ---------------------------------------------------------------------------------------------
# Refusals


def test_an_unknown_template_is_not_found():
    with pytest.raises(NotFound, match="no-such-template"):
        render(context(template="no-such-template"))


@pytest.mark.parametrize("name", ["../templates", "_base.html", "mandatory-removal/../update", ""])
def test_a_template_name_is_never_a_path_or_a_partial(name):
    with pytest.raises(NotFound):
        render(context(template=name))


def test_an_unknown_kind_or_variant_is_a_programming_error():
    with pytest.raises(ValueError, match="kind"):
        render(context(kind="memo"))
    with pytest.raises(ValueError, match="variant"):
        render(context(devices=(DeviceLine("x", "ios", "guilty"),)))


# ---------------------------------------------------------------------------------------------
# Templates on disk


def test_every_template_folder_has_its_three_files():
    folders = sorted(
        p.name
        for p in templates.TEMPLATE_DIR.iterdir()
        if p.is_dir() and not p.name.startswith("_")
    )
    assert folders == sorted(TEMPLATE_NAMES)
    for name in folders:
        for file in TEMPLATE_FILES:
            assert (templates.TEMPLATE_DIR / name / file).is_file(), f"{name}/{file}"
    assert available_templates() == tuple(sorted(TEMPLATE_NAMES))
    assert not (templates.TEMPLATE_DIR / ".keep").exists()


def test_the_templates_digest_covers_the_template_sources(tmp_path, monkeypatch):
    digest = templates.templates_digest()
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    copy = tmp_path / "templates"
    shutil.copytree(templates.TEMPLATE_DIR, copy)
    monkeypatch.setattr(templates, "TEMPLATE_DIR", copy)
    uncached = templates.templates_digest.__wrapped__
    assert uncached() == digest
    (copy / "reminder" / "body.txt").write_text("Hello {{ person_name }},\n", encoding="utf-8")
    assert uncached() != digest


def test_render_reads_the_files_under_template_dir(tmp_path, monkeypatch):
    copy = tmp_path / "templates"
    shutil.copytree(templates.TEMPLATE_DIR, copy)
    (copy / "mandatory-removal" / "subject.txt").write_text(
        "Please act: {{ policy_title }}\n", encoding="utf-8"
    )
    monkeypatch.setattr(templates, "TEMPLATE_DIR", copy)
    assert render(context()).subject == f"Please act: {TITLE}"
    monkeypatch.undo()
    assert render(context()).subject == f"Action required: {TITLE}"


def test_an_organisation_template_may_be_added_beside_the_shipped_ones(tmp_path, monkeypatch):
    copy = tmp_path / "templates"
    shutil.copytree(templates.TEMPLATE_DIR, copy)
    custom = copy / "acme-removal"
    custom.mkdir()
    (custom / "subject.txt").write_text(
        "ACME: {{ policy_title }} by {{ deadline|short_date }}\n", encoding="utf-8"
    )
    (custom / "body.txt").write_text(
        "{{ app_names|names('or') }} — {{ deadline|instant }}\n", encoding="utf-8"
    )
    (custom / "body.html").write_text(
        "{% extends '_base.html' %}{% block content %}<p>{{ policy_title }}</p>{% endblock %}",
        encoding="utf-8",
    )
    monkeypatch.setattr(templates, "TEMPLATE_DIR", copy)
    message = render(context(template="acme-removal", app_names=("TikTok", "trill")))
    assert message.subject == f"ACME: {TITLE} by Fri, Jul 10"
    assert message.text == "TikTok or trill — Friday, July 10, 2020 at 11:59 PM PDT\n"
    assert "acme-removal" in available_templates()
    (custom / "body.html").unlink()
    assert "acme-removal" not in available_templates()


# ---------------------------------------------------------------------------------------------
# The email


SENT_AT = datetime(2020, 7, 11, 16, 0, tzinfo=UTC)


def parse(message: email.message.EmailMessage) -> email.message.EmailMessage:
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def test_build_email_carries_every_header_and_both_parts():
    rendered = render(context())
    message_id = new_message_id("appwarden.example.com")
    built = build_email(
        rendered,
        sender="IT Security <it-security@example.com>",
        recipient="alice@example.com",
        message_id=message_id,
        kind="announce",
        policy_id="tiktok-mobile-email",
        notice_id=42,
        sent_at=SENT_AT,
    )
    parsed = parse(built)
    assert parsed["From"] == "IT Security <it-security@example.com>"
    assert parsed["To"] == "alice@example.com"
    assert parsed["Subject"] == "Action required: Mandatory removal of TikTok"
    assert parsed["Message-ID"] == message_id
    assert parsedate_to_datetime(parsed["Date"]) == SENT_AT
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["X-Appwarden-Kind"] == "announce"
    assert parsed["X-Appwarden-Policy"] == "tiktok-mobile-email"
    assert parsed["X-Appwarden-Notice-Id"] == "42"
    assert parsed["In-Reply-To"] is None
    assert parsed["References"] is None
    assert parsed.get_content_type() == "multipart/alternative"
    parts = list(parsed.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content() == rendered.text
    assert parts[1].get_content() == rendered.html
    assert all(p.get_content_charset() == "utf-8" for p in parts)


def test_a_correction_is_threaded_to_the_first_notice():
    first = new_message_id("appwarden.example.com")
    rendered = render(
        context(kind="correction", template="correction", correction_message="Sent in error.")
    )
    parsed = parse(
        build_email(
            rendered,
            sender="it-security@example.com",
            recipient="alice@example.com",
            message_id=new_message_id("appwarden.example.com"),
            kind="correction",
            policy_id="tiktok-mobile-email",
            notice_id=43,
            in_reply_to=first,
            sent_at=SENT_AT,
        )
    )
    assert parsed["In-Reply-To"] == first
    assert parsed["References"] == first
    assert parsed["Subject"] == "Correction: Mandatory removal of TikTok"
    assert parsed["X-Appwarden-Kind"] == "correction"


def test_build_email_defaults_the_date_to_now():
    parsed = parse(
        build_email(
            RenderedMessage("s", "t\n", "<p>h</p>\n"),
            sender="a@example.com",
            recipient="b@example.com",
            message_id="<x@example.com>",
            kind="announce",
            policy_id="p-1",
            notice_id=1,
        )
    )
    sent = parsedate_to_datetime(parsed["Date"])
    assert abs((datetime.now(UTC) - sent).total_seconds()) < 60


def test_build_email_refuses_malformed_ids_and_header_injection():
    rendered = render(context())
    common = {"sender": "a@example.com", "kind": "announce", "policy_id": "p-1", "notice_id": 1}
    with pytest.raises(ValueError, match="Message-ID"):
        build_email(
            rendered, recipient="b@example.com", message_id="no-brackets@example.com", **common
        )
    with pytest.raises(ValueError, match="In-Reply-To"):
        build_email(
            rendered,
            recipient="b@example.com",
            message_id="<x@example.com>",
            in_reply_to="<x@example.com>\r\nBcc: c@example.com",
            **common,
        )
    with pytest.raises(ValueError, match="linefeed"):
        build_email(
            rendered,
            recipient="b@example.com\r\nBcc: c@example.com",
            message_id="<x@example.com>",
            **common,
        )


def test_message_ids_are_random_and_well_formed():
    """Globally unique: never derived from the notice, so two installations (or one after a
    database reset) never send the same id to a mailbox that drops repeats."""
    ids = {new_message_id("appwarden.example.com") for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"<[0-9a-f]{32}@appwarden\.example\.com>", i) for i in ids)
    with pytest.raises(ValueError, match="domain"):
        new_message_id("bad domain>")


def test_build_email_encodes_what_is_not_ascii_and_lines_smtp_cannot_carry():
    long_line = "x" * 1500 + "\n"
    rendered = RenderedMessage("Entfernen Sie TikTok bis Freitag — Frist", "Grüße\n", long_line)
    built = build_email(
        rendered,
        sender="Sécurité IT <it-security@example.com>",
        recipient="alice@example.com",
        message_id="<x@example.com>",
        kind="announce",
        policy_id="p-1",
        notice_id=1,
        sent_at=SENT_AT,
    )
    wire = built.as_bytes()
    assert wire.isascii()  # headers RFC 2047-encoded, bodies quoted-printable
    assert all(len(line) <= 998 for line in wire.splitlines())
    parsed = parse(built)
    assert parsed["Subject"] == rendered.subject
    assert parsed["From"].addresses[0].display_name == "Sécurité IT"
    assert parsed["From"].addresses[0].addr_spec == "it-security@example.com"
    parts = list(parsed.iter_parts())
    assert [p.get_content() for p in parts] == [rendered.text, rendered.html]


def test_build_email_to_an_internationalised_address_keeps_it_whole():
    built = build_email(
        RenderedMessage("s", "t\n", "<p>h</p>\n"),
        sender="a@example.com",
        recipient="jürgen@exämple.com",
        message_id="<x@example.com>",
        kind="announce",
        policy_id="p-1",
        notice_id=1,
    )
    assert built["To"] == "jürgen@exämple.com"
