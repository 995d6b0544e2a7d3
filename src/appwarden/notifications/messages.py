"""What each notice says: pure rendering of the notice kinds of docs/notices.md, and the email that
carries one.

`render(context)` picks the template folder `context.template` under `templates.TEMPLATE_DIR`
(`subject.txt`, `body.txt`, `body.html`) and renders it with the facts in the context. Wording lives
in the templates; the formatting of instants, names and lists lives here, as filters and as
ready-made values, so templates need nothing beyond loops and conditionals. The HTML body is
autoescaped: a policy title, a device name or an admin's message can never inject markup.

Every instant is shown in the recipient's own time zone with its abbreviation ("Friday, July 10,
2020 at 11:59 PM PDT"). No database and no I/O beyond loading the package's template files.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from email.charset import QP, Charset
from email.message import EmailMessage, Message
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.utils import format_datetime, formataddr, parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from markupsafe import Markup, escape

from appwarden.errors import NotFound
from appwarden.notifications import templates as _templates
from appwarden.timeutil import utc
from appwarden.vocabulary import NoticeKind, Platform

# The shipped templates: the default announcement named by `spec.notices.announce.template`,
# then one per other kind (two each for `update` and `exemption`).
TEMPLATE_NAMES: tuple[str, ...] = (
    "mandatory-removal",
    "update",
    "no-longer-affected",
    "reminder",
    "blocked",
    "restored",
    "exemption-granted",
    "exemption-expiring",
    "correction",
)
TEMPLATE_FILES: tuple[str, ...] = ("subject.txt", "body.txt", "body.html")

# How a device appears in a notice (docs/notices.md): `violating` (the app was found), `unverified`
# (in scope, absence not proven), `exempt`, `compliant`.
VIOLATING = "violating"
UNVERIFIED = "unverified"
EXEMPT = "exempt"
COMPLIANT = "compliant"
DEVICE_VARIANTS: tuple[str, ...] = (VIOLATING, UNVERIFIED, EXEMPT, COMPLIANT)
_ACTION_VARIANTS = (VIOLATING, UNVERIFIED)

_PLATFORM_LABELS: dict[str, str] = {
    Platform.ANDROID: "Android",
    Platform.IOS: "iOS",
    Platform.IPADOS: "iPadOS",
    Platform.MACOS: "macOS",
    Platform.WINDOWS: "Windows",
    Platform.LINUX: "Linux",
    Platform.CHROMEOS: "ChromeOS",
}
_RESOURCE_LABELS: dict[str, str] = {"email": "Email", "webmail": "Webmail"}

# Spelled out here rather than taken from strftime, whose names follow the process locale.
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

# A template folder is a slug like the policy document's (never a path), and never a partial.
_TEMPLATE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_MESSAGE_ID = re.compile(r"<[^<>@\s]+@[^<>@\s]+>")
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


@dataclass(frozen=True, slots=True)
class DeviceLine:
    """One device of the recipient as a notice lists it."""

    name: str  # "Alice's iPhone" (the caller falls back to the identifier when there is no name)
    platform: str  # vocabulary platform
    variant: str  # violating | unverified | exempt | compliant
    apps_found: tuple[str, ...] = ()  # human names of what was found, for `violating`
    due: datetime | None = None  # this device's own due time (aware)
    # The device's id: its line links `{portal_url}devices/{id}?policy=…`, the page the portal
    # shows its owner alone (anyone else gets a 404, so a forwarded mail opens nothing).
    device_id: int | None = None


@dataclass(frozen=True, slots=True)
class NoticeContext:
    """Everything a notice may say, for one person and one policy."""

    kind: str  # announce | update | reminder | blocked | restored | exemption | correction
    template: str  # template folder, e.g. "mandatory-removal", "no-longer-affected"
    person_name: str  # display name, or the email when unknown
    person_email: str
    time_zone: str  # IANA zone of the recipient; every instant is shown in it
    policy_id: str
    policy_title: str
    app_names: tuple[str, ...]
    deadline: datetime  # aware
    devices: tuple[DeviceLine, ...]
    remediation: str | None
    allowed_alternatives: str | None
    rationale: str | None
    portal_url: str
    organisation: str = "Example Corp"
    changes: tuple[str, ...] = ()  # update: what changed, one sentence each
    exemption_ends: datetime | None = None  # exemption kinds
    exemption_reason: str | None = None
    correction_message: str | None = None  # correction: the admin's retraction message
    resource: str | None = None  # blocked / restored: the resource, e.g. "email"
    # What the policy accepts as proof of absence: which ways out an unverified device has.
    evidence: tuple[str, ...] = ("inventory", "targeted_check")


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    subject: str
    text: str
    html: str


@dataclass(frozen=True, slots=True)
class DeviceView:
    """A DeviceLine as templates see it: its own fields plus ready-made wording."""

    name: str
    platform: str
    variant: str
    apps_found: tuple[str, ...]
    due: datetime | None
    label: str  # "Alice's iPhone (iOS)"
    platform_label: str  # "iOS", "" when unknown
    apps: str  # what was found, or the policy's apps when nothing specific was reported
    pronoun: str  # "it" or "them", for `apps`
    due_text: str | None  # this device's due, when the caller gave one
    own_due_text: str | None  # this device's due when it differs from the person's
    url: str  # its page on the portal (the portal's home when the device has no id)
    ways: tuple[str, ...]  # unverified: its ways out of `unknown` (`ways_out`); else ()


# ---------------------------------------------------------------------------------------------
# Formatting


def format_instant(value: datetime, time_zone: str) -> str:
    """The human form of an instant in a zone: "Friday, July 10, 2020 at 11:59 PM PDT"."""
    local = utc(value).astimezone(_zone(time_zone))
    hour = local.hour % 12 or 12
    meridiem = "AM" if local.hour < 12 else "PM"
    return (
        f"{_WEEKDAYS[local.weekday()]}, {_MONTHS[local.month - 1]} {local.day}, {local.year}"
        f" at {hour}:{local.minute:02d} {meridiem} {_abbreviation(local)}"
    )


def format_short_date(value: datetime, time_zone: str) -> str:
    """The date of an instant in a zone, short enough for a subject line: "Fri, Jul 10"."""
    local = utc(value).astimezone(_zone(time_zone))
    return f"{_WEEKDAYS[local.weekday()][:3]}, {_MONTHS[local.month - 1][:3]} {local.day}"


def join_names(names: tuple[str, ...] | list[str], conjunction: str = "and") -> str:
    """ "TikTok", "TikTok and trill", "TikTok, trill, and TikTok Lite"."""
    items = [n for n in names if n]
    if not items:
        return "the app"
    if len(items) == 1:
        return items[0]
    if len(items) == 2:
        return f"{items[0]} {conjunction} {items[1]}"
    return f"{', '.join(items[:-1])}, {conjunction} {items[-1]}"


def platform_label(platform: str) -> str:
    """The product name of a vocabulary platform ("iOS"); "" for `unknown` or anything else."""
    return _PLATFORM_LABELS.get(platform, "")


@lru_cache(maxsize=256)
def _zone(time_zone: str) -> tzinfo:
    # A person's zone is validated where it is stored; should a bad one reach a notice, the
    # message still goes out, in UTC and saying so, rather than not at all.
    try:
        return ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _abbreviation(local: datetime) -> str:
    name = local.tzname()
    if name and name[0] not in "+-":
        return name
    # Zones without a customary abbreviation (tzdata writes "+04") are shown as "UTC+4".
    offset = local.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    if not minutes:
        return "UTC"
    return f"UTC{sign}{hours}" + (f":{rest:02d}" if rest else "")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _tidy(text: str) -> str:
    """Trailing spaces off, runs of blank lines folded to one, exactly one final newline."""
    lines = [line.rstrip() for line in text.splitlines()]
    body = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")
    return body + "\n"


# ---------------------------------------------------------------------------------------------
# Template filters (also available to an organisation's own templates)


@jinja2.pass_context
def _instant_filter(context: jinja2.runtime.Context, value: datetime) -> str:
    return format_instant(value, str(context["time_zone"]))


@jinja2.pass_context
def _short_date_filter(context: jinja2.runtime.Context, value: datetime) -> str:
    return format_short_date(value, str(context["time_zone"]))


def _names_filter(names: tuple[str, ...] | list[str], conjunction: str = "and") -> str:
    return join_names(names, conjunction)


def _nl2br_filter(value: str) -> Markup:
    """Escape, then keep the author's line breaks (HTML only)."""
    return Markup("<br>\n").join(escape(line) for line in str(value).splitlines())


def _quote_filter(value: str) -> str:
    """Quote a block of text the way mail clients do (text only)."""
    return "\n".join(f"> {line}".rstrip() for line in str(value).splitlines())


@lru_cache(maxsize=4)
def _environment(template_dir: Path) -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(template_dir),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html",), default_for_string=False, default=False
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        # The templates are part of what an approval binds (their digest is computed once):
        # render what was loaded, not a file edited under a running process.
        auto_reload=False,
    )
    environment.filters.update(
        instant=_instant_filter,
        short_date=_short_date_filter,
        names=_names_filter,
        platform=platform_label,
        nl2br=_nl2br_filter,
        quote=_quote_filter,
    )
    return environment


def available_templates() -> tuple[str, ...]:
    """The template folders under TEMPLATE_DIR that have all three files, sorted."""
    directory = _templates.TEMPLATE_DIR
    return tuple(
        sorted(
            path.name
            for path in directory.iterdir()
            if path.is_dir()
            and not path.name.startswith(("_", "."))
            and all((path / name).is_file() for name in TEMPLATE_FILES)
        )
    )


# ---------------------------------------------------------------------------------------------
# Rendering


def render(context: NoticeContext) -> RenderedMessage:
    """Render the notice `context` describes with its template folder."""
    if context.kind not in set(NoticeKind):
        raise ValueError(f"unknown notice kind {context.kind!r}")
    name = context.template
    if not _TEMPLATE_NAME.fullmatch(name) or ".." in name:
        raise NotFound(f"notice template {name!r} is not a template name")
    environment = _environment(_templates.TEMPLATE_DIR)
    try:
        subject_template, text_template, html_template = (
            environment.get_template(f"{name}/{file}") for file in TEMPLATE_FILES
        )
    except jinja2.TemplateNotFound as exc:
        raise NotFound(
            f"notice template {name!r} is incomplete or missing: it needs "
            f"{', '.join(TEMPLATE_FILES)} (missing {exc.name})"
        ) from exc
    values = _template_values(context)
    subject = _one_line(subject_template.render(values))
    values["subject"] = subject
    text = _tidy(text_template.render(values))
    html = _tidy(html_template.render(values))
    return RenderedMessage(subject=subject, text=text, html=html)


def _template_values(context: NoticeContext) -> dict[str, Any]:
    for device in context.devices:
        if device.variant not in DEVICE_VARIANTS:
            raise ValueError(
                f"device {device.name!r}: variant must be one of {', '.join(DEVICE_VARIANTS)}, "
                f"got {device.variant!r}"
            )
    zone = context.time_zone
    deadline = utc(context.deadline)
    action = [d for d in context.devices if d.variant in _ACTION_VARIANTS]
    # The person's due: their earliest device's (a late entrant has its own, after the deadline).
    if action:
        due = min(utc(d.due) if d.due is not None else deadline for d in action)
    else:
        dues = [utc(d.due) for d in context.devices if d.due is not None]
        due = min(dues) if dues else deadline
    devices = tuple(_device_view(d, context, due) for d in context.devices)
    action_devices = tuple(d for d in devices if d.variant in _ACTION_VARIANTS)
    exempt_devices = tuple(d for d in devices if d.variant == EXEMPT)
    plural = len(context.app_names) > 1
    resource = context.resource
    resource_title = _RESOURCE_LABELS.get(resource or "", (resource or "").capitalize())
    return {
        # The context as given
        "kind": context.kind,
        "template": context.template,
        "person_name": context.person_name or context.person_email,
        "person_email": context.person_email,
        "time_zone": zone,
        "policy_id": context.policy_id,
        "policy_title": context.policy_title,
        "app_names": context.app_names,
        "deadline": deadline,
        "remediation": context.remediation,
        "allowed_alternatives": context.allowed_alternatives,
        "rationale": context.rationale,
        "portal_url": context.portal_url,
        "privacy_url": privacy_url(context.portal_url),
        "evidence": context.evidence,
        "organisation": context.organisation,
        "changes": context.changes,
        "exemption_ends": context.exemption_ends,
        "exemption_reason": context.exemption_reason,
        "correction_message": context.correction_message,
        "resource": resource,
        # Ready-made wording
        "apps": join_names(context.app_names),
        "apps_or": join_names(context.app_names, "or"),
        "apps_plural": plural,
        "apps_verb": "are" if plural else "is",
        "apps_pronoun": "them" if plural else "it",
        "deadline_text": format_instant(deadline, zone),
        "due": due,
        "due_text": format_instant(due, zone),
        "due_short": format_short_date(due, zone),
        "devices": devices,
        "action_devices": action_devices,
        "other_devices": tuple(d for d in devices if d.variant not in _ACTION_VARIANTS),
        "exempt_devices": exempt_devices,
        "covered_devices": exempt_devices or devices,
        "exemption_ends_text": None
        if context.exemption_ends is None
        else format_instant(context.exemption_ends, zone),
        "resource_title": resource_title,
        "access_label": f"{resource_title} access" if resource_title else "Access",
        "resource_access": f"company {resource}" if resource else "company email",
    }


def _device_view(device: DeviceLine, context: NoticeContext, person_due: datetime) -> DeviceView:
    label_platform = platform_label(device.platform)
    name = device.name.strip() or "your device"
    found = device.apps_found or context.app_names
    due = None if device.due is None else utc(device.due)
    effective_due = due if due is not None else utc(context.deadline)
    own_due = (
        effective_due
        if device.variant in _ACTION_VARIANTS and effective_due != person_due
        else None
    )
    return DeviceView(
        name=device.name,
        platform=device.platform,
        variant=device.variant,
        apps_found=device.apps_found,
        due=due,
        label=f"{name} ({label_platform})" if label_platform else name,
        platform_label=label_platform,
        apps=join_names(found),
        pronoun="them" if len(found) > 1 else "it",
        due_text=None if due is None else format_instant(due, context.time_zone),
        own_due_text=None if own_due is None else format_instant(own_due, context.time_zone),
        url=device_url(context.portal_url, device.device_id, context.policy_id),
        ways=ways_out(device.platform, context.evidence) if device.variant == UNVERIFIED else (),
    )


#: The ways out of `unknown` (docs/privacy.md): run the check app or the agent, confirm removal
#: (attestation), ask for an exemption.
CHECK, ATTEST, EXEMPTION = "check", "attest", "exemption"
_HANDHELD = frozenset({Platform.ANDROID, Platform.IOS, Platform.IPADOS})


def ways_out(platform: str, evidence: Collection[str]) -> tuple[str, ...]:
    """Which ways out of `unknown` a device has under a policy accepting `evidence`: the check
    app (a phone or tablet: a targeted check) or the agent (a computer: its inventory or a
    targeted check); confirming removal where `attestation` is accepted; an exemption always."""
    ways = []
    if "targeted_check" in evidence or (platform not in _HANDHELD and "inventory" in evidence):
        ways.append(CHECK)
    if "attestation" in evidence:
        ways.append(ATTEST)
    ways.append(EXEMPTION)
    return tuple(ways)


def privacy_url(portal_url: str) -> str:
    """The portal page of what appwarden sees and keeps on a person's devices (docs/privacy.md)."""
    return f"{portal_url}privacy"


def device_url(portal_url: str, device_id: int | None, policy_id: str) -> str:
    """A device's page on the portal, opened at the policy a notice is about: a plain deep link
    (no per-person token: the portal asks whoever follows it to sign in)."""
    if device_id is None:
        return portal_url
    return f"{portal_url}devices/{device_id}?policy={quote(policy_id, safe='')}"


# ---------------------------------------------------------------------------------------------
# Sign-in mail (not a notice: its templates are not among the notice templates, whose digest an
# approval binds, and a policy cannot name them)

SIGN_IN_DIR = Path(__file__).parent / "sign_in"


@dataclass(frozen=True, slots=True)
class SignInContext:
    person_name: str
    time_zone: str
    link: str  # the one-time sign-in URL
    expires_at: datetime  # aware
    organisation: str = "Example Corp"


def render_sign_in(context: SignInContext) -> RenderedMessage:
    """The sign-in mail: the link, and until when it works, in the person's zone."""
    environment = _environment(SIGN_IN_DIR)
    values = {
        "person_name": context.person_name,
        "time_zone": context.time_zone,
        "link": context.link,
        "expires_at": context.expires_at,
        "expires_text": format_instant(context.expires_at, context.time_zone),
        "organisation": context.organisation,
    }
    subject_template, text_template, html_template = (
        environment.get_template(file) for file in TEMPLATE_FILES
    )
    subject = _one_line(subject_template.render(values))
    values["subject"] = subject
    text = _tidy(text_template.render(values))
    html = _tidy(html_template.render(values))
    return RenderedMessage(subject=subject, text=text, html=html)


# ---------------------------------------------------------------------------------------------
# The email


def new_message_id(domain: str) -> str:
    """A fresh, globally unique Message-ID: 128 random bits at the mail domain.

    Random, not derived from the notice: a derived id repeats across installations and after a
    database reset, and a mailbox (Gmail) silently drops a message whose id it has seen. Call it
    once, when the notice is queued, and store the result: a redelivery after a crash re-sends
    the stored id, and a correction threads to it (In-Reply-To, References)."""
    if not _DOMAIN.fullmatch(domain):
        raise ValueError(f"expected a host name for the Message-ID domain, got {domain!r}")
    return f"<{secrets.token_hex(16)}@{domain}>"


def build_email(
    message: RenderedMessage,
    *,
    sender: str,
    recipient: str,
    message_id: str,
    kind: str,
    policy_id: str | None,
    notice_id: int | None,
    in_reply_to: str | None = None,
    sent_at: datetime | None = None,
) -> Message:
    """A multipart/alternative email (text, then HTML) carrying a rendered notice (or, without a
    policy and a notice id, other mail: a sign-in link).

    `message_id` and `in_reply_to` are "<...>" ids used exactly as given; `sent_at` (the Date
    header) defaults to now.

    Built with the email package's legacy (compat32) classes: the modern `EmailMessage` parses
    every header it is given into objects, 5-10 times the cost, and at a memo to everyone that
    was most of a message's delivery time (bench/README.md, DELIVERY). Addresses that are not
    ASCII (RFC 6531) still take the modern path, which smtplib needs to send them as SMTPUTF8.
    """
    for header, value in (("Message-ID", message_id), ("In-Reply-To", in_reply_to)):
        if value is not None and not _MESSAGE_ID.fullmatch(value):
            raise ValueError(f"{header} must look like <id@domain>, got {value!r}")
    headers: list[tuple[str, str]] = [
        ("From", sender),
        ("To", recipient),
        ("Subject", _one_line(message.subject)),
        ("Date", format_datetime(utc(sent_at if sent_at is not None else datetime.now(UTC)))),
        ("Message-ID", message_id),
    ]
    if in_reply_to is not None:
        headers += [("In-Reply-To", in_reply_to), ("References", in_reply_to)]
    headers += [
        ("Auto-Submitted", "auto-generated"),
        # Exchange and Outlook: no out-of-office or other automatic replies to a notice.
        ("X-Auto-Response-Suppress", "All"),
        ("X-Appwarden-Kind", kind),
    ]
    if policy_id is not None:
        headers.append(("X-Appwarden-Policy", policy_id))
    if notice_id is not None:
        headers.append(("X-Appwarden-Notice-Id", str(notice_id)))
    for _, value in headers:
        if "\r" in value or "\n" in value:
            raise ValueError("Header values may not contain linefeed or carriage return characters")
    if not (parseaddr(sender)[1].isascii() and recipient.isascii()):
        return _modern_email(headers, message)
    email = MIMEMultipart("alternative")
    for name, value in headers:
        # compat32 folds each value and encodes what is not ASCII (RFC 2047) as it writes it;
        # in From only the display name may be encoded, never the address.
        email[name] = formataddr(parseaddr(value), charset="utf-8") if name == "From" else value
    email.attach(_text_part(message.text, "plain"))
    email.attach(_text_part(message.html, "html"))
    return email


def _text_part(text: str, subtype: str) -> MIMENonMultipart:
    """UTF-8, as 7bit when the text is ASCII in lines SMTP carries (998 octets), else
    quoted-printable (readable, and safe through any relay)."""
    plain = text.isascii() and all(len(line) <= 998 for line in text.splitlines())
    part = MIMENonMultipart("text", subtype)
    part.set_payload(text, _UTF8_7BIT if plain else _UTF8_QP)
    return part


def _modern_email(headers: list[tuple[str, str]], message: RenderedMessage) -> EmailMessage:
    email = EmailMessage()
    for name, value in headers:
        email[name] = value
    email.set_content(message.text)
    email.add_alternative(message.html, subtype="html")
    return email


def _charset(body_encoding: int | None) -> Charset:
    charset = Charset("utf-8")
    charset.body_encoding = body_encoding  # type: ignore[assignment]  # None is "7 or 8 bit"
    return charset


_UTF8_7BIT = _charset(None)
_UTF8_QP = _charset(QP)
