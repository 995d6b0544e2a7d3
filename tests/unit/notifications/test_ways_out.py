"""Which ways out of `unknown` a notice names for an unverified device, and that every notice
links the privacy page."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from appwarden.notifications.messages import (
    TEMPLATE_NAMES,
    DeviceLine,
    NoticeContext,
    render,
    ways_out,
)

DEADLINE = datetime(2020, 7, 11, 6, 59, 59, tzinfo=UTC)
CHECK_LINE = "run the check app or the agent on the device"
ATTEST_LINE = "confirm yourself that TikTok is not installed"
EXEMPTION_LINE = "ask for an exemption, if you need the app"


@pytest.mark.parametrize(
    ("platform", "evidence", "ways"),
    [
        ("ios", ("inventory", "targeted_check", "attestation"), ("check", "attest", "exemption")),
        ("ios", ("inventory",), ("exemption",)),  # no agent on a phone: only a check would do
        ("macos", ("inventory",), ("check", "exemption")),  # the agent's inventory counts
        ("android", ("inventory", "attestation"), ("attest", "exemption")),
        ("unknown", ("targeted_check",), ("check", "exemption")),
    ],
)
def test_ways_out_follow_the_platform_and_the_policys_evidence(platform, evidence, ways):
    assert ways_out(platform, evidence) == ways


def context(kind: str, template: str, evidence: tuple[str, ...], **extra) -> NoticeContext:
    return NoticeContext(
        kind=kind,
        template=template,
        person_name="Dave Diaz",
        person_email="dave@example.com",
        time_zone="America/Los_Angeles",
        policy_id="tiktok-mobile-email",
        policy_title="Mandatory removal of TikTok",
        app_names=("TikTok",),
        deadline=DEADLINE,
        devices=(
            DeviceLine("Dave's iPhone", "ios", "unverified", device_id=5),
            DeviceLine("Alice's Galaxy", "android", "violating", ("TikTok",), device_id=7),
        ),
        remediation=None,
        allowed_alternatives=None,
        rationale=None,
        portal_url="https://appwarden.example.com/me/",
        evidence=evidence,
        **extra,
    )


@pytest.mark.parametrize(
    ("kind", "template", "extra"),
    [
        ("announce", "mandatory-removal", {}),
        ("reminder", "reminder", {}),
        ("blocked", "blocked", {"resource": "email"}),
    ],
)
def test_an_unverified_device_is_told_its_ways_out(kind, template, extra):
    accepting = render(
        context(kind, template, ("inventory", "targeted_check", "attestation"), **extra)
    )
    for body in (accepting.text, accepting.html):
        assert CHECK_LINE in body
        assert ATTEST_LINE in body
        assert EXEMPTION_LINE in body
        assert body.count(EXEMPTION_LINE) == 1  # the violating device gets none
    strict = render(context(kind, template, ("inventory",), **extra))
    for body in (strict.text, strict.html):
        assert CHECK_LINE not in body  # a phone has no agent, and no check counts
        assert ATTEST_LINE not in body
        assert EXEMPTION_LINE in body


@pytest.mark.parametrize("template", TEMPLATE_NAMES)
def test_every_notice_links_the_privacy_page(template):
    kinds = {
        "mandatory-removal": "announce",
        "no-longer-affected": "update",
        "exemption-granted": "exemption",
        "exemption-expiring": "exemption",
    }
    extra = {
        "resource": "email",
        "exemption_ends": DEADLINE,
        "exemption_reason": "campaign",
        "correction_message": "Sent in error.",
    }
    message = render(context(kinds.get(template, template), template, ("inventory",), **extra))
    assert "https://appwarden.example.com/me/privacy" in message.text
    assert 'href="https://appwarden.example.com/me/privacy"' in message.html


def test_a_reminder_offers_confirming_removal_only_where_the_policy_accepts_it():
    offered = render(context("reminder", "reminder", ("inventory", "attestation")))
    assert "you can also confirm removal at" in offered.text
    plain = render(context("reminder", "reminder", ("inventory",)))
    assert "confirm removal" not in plain.text
    assert "confirm removal" not in plain.html
