"""The `appwarden/v1` policy document: values, defaults, canonical form, and located errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from appwarden.documents import MAX_DOCUMENT_BYTES
from appwarden.errors import InputTooLarge, InvalidInput, Problem
from appwarden.policies.document import (
    IdentifierRef,
    Notices,
    PeopleScope,
    PolicyDocument,
    Rationale,
    Scope,
    parse_policy,
)

# The reference example of docs/policy.md, comments and all. Two long plain scalars are continued
# on a second line to fit the line limit; YAML folds them back into one line.
REFERENCE = """\
apiVersion: appwarden/v1
kind: AppPolicy
metadata:
  id: tiktok-mobile-email            # stable slug, [a-z0-9-]{3,64}
  title: Mandatory removal of TikTok
spec:
  apps: [tiktok]                     # catalog slugs (an entry may include others: `tiktok` =
                                     #   TikTok, TikTok Lite, trill, TikTok Now); and/or:
  identifiers: []                    #   - {namespace: android_package, value: com.example.app}
  scope:                             # every listed key must match; an omitted key matches all
    platforms: [ios, ipados, android]
    form_factors: [phone, tablet]
    ownership: [corporate, personal]
    access: [email]                  # device must hold at least one of these resources
    # people: {include_groups: [...], exclude_groups: [...], exclude: [emails]}
  deadline: 2020-07-10T23:59:59-07:00  # required
  grace: P1D                         # default P1D
  max_evidence_age: P7D              # default P7D; governs proof of absence only
  evidence: [inventory, targeted_check, attestation]   # what may prove ABSENCE
  unknown: allow                     # default allow; deny applies only from the deadline on
  enforcement:
    deny: [email]                    # required, may be empty (monitor only)
  notices:
    announce: {template: mandatory-removal}
    reminders: [P3D, P1D]            # before the deadline; default []
    send_at: "09:00"                 # reminders go out at this local time of the recipient
    blocked: true                    # default true
    restored: true                   # default true
  allowed_alternatives: Using TikTok from your company laptop browser is allowed.
  remediation: Delete the TikTok app from this device. Access returns within a minute of the
    next check-in.
  rationale:                         # optional: why, in the notices and the portal
    text: The app can read what you copy to the clipboard and sends data to servers outside
      our control.
    signals: []                      # ids of reviewed risk signals cited (when dossiers exist)
"""

# The same policy: keys reordered, defaults left out or spelled differently, lists reordered,
# the deadline written in UTC, flow style where the reference uses block style, no comments.
REFERENCE_REWRITTEN = """\
kind: AppPolicy
spec:
  rationale: {text: "  The app can read what you copy to the clipboard and sends data to
    servers outside our control.  "}
  remediation: >-
    Delete the TikTok app from this device.
    Access returns within a minute of the next check-in.
  allowed_alternatives: Using TikTok from your company laptop browser is allowed.
  notices: {reminders: [PT24H, P3D]}
  enforcement: {deny: [email]}
  evidence: [attestation, targeted_check, inventory]
  grace: PT24H
  deadline: "2020-07-11T06:59:59Z"
  scope:
    access: [email]
    ownership: [personal, corporate]
    form_factors: [tablet, phone]
    platforms: [android, ipados, ios]
    people: {}
  apps:
    - tiktok
metadata: {title: Mandatory removal of TikTok, id: tiktok-mobile-email}
apiVersion: appwarden/v1
"""

REFERENCE_JSON = json.dumps(
    {
        "apiVersion": "appwarden/v1",
        "kind": "AppPolicy",
        "metadata": {"id": "tiktok-mobile-email", "title": "Mandatory removal of TikTok"},
        "spec": {
            "apps": ["tiktok"],
            "scope": {
                "platforms": ["ios", "android", "ipados"],
                "form_factors": ["phone", "tablet"],
                "ownership": ["corporate", "personal"],
                "access": ["email"],
            },
            "deadline": "2020-07-10T23:59:59-07:00",
            "evidence": ["inventory", "targeted_check", "attestation"],
            "enforcement": {"deny": ["email"]},
            "notices": {"reminders": ["P3D", "P1D"], "send_at": "09:00"},
            "allowed_alternatives": "Using TikTok from your company laptop browser is allowed.",
            "remediation": "Delete the TikTok app from this device. "
            "Access returns within a minute of the next check-in.",
            "rationale": {
                "text": "The app can read what you copy to the clipboard and sends data to "
                "servers outside our control.",
                "signals": [],
            },
        },
    },
    indent=2,
)

# A small valid document whose line numbers the malformed cases below rely on:
#  1 apiVersion   5 title   9 platforms      13 max_evidence_age   17 reminders
#  2 kind         6 spec   10 form_factors   14 enforcement        18 send_at
#  3 metadata     7 apps   11 deadline       15   deny
#  4 id           8 scope  12 grace          16 notices
BASE = """\
apiVersion: appwarden/v1
kind: AppPolicy
metadata:
  id: tiktok-mobile-email
  title: Mandatory removal of TikTok
spec:
  apps: [tiktok]
  scope:
    platforms: [ios, ipados, android]
    form_factors: [phone, tablet]
  deadline: 2020-07-10T23:59:59-07:00
  grace: P1D
  max_evidence_age: P7D
  enforcement:
    deny: [email]
  notices:
    reminders: [P3D, P1D]
    send_at: "09:00"
"""

MINIMAL = """\
apiVersion: appwarden/v1
kind: AppPolicy
metadata: {id: tiktok-mobile-email, title: Mandatory removal of TikTok}
spec:
  apps: [tiktok]
  deadline: 2020-07-10T23:59:59-07:00
  enforcement: {deny: []}
"""

REFERENCE_DEADLINE = datetime(2020, 7, 11, 6, 59, 59, tzinfo=UTC)


def variant(old: str, new: str, base: str = BASE) -> str:
    """`base` with one exact piece of text replaced; fails loudly if the piece is not unique."""
    assert base.count(old) == 1, f"{old!r} must occur exactly once"
    return base.replace(old, new)


def problems_of(
    text: str | bytes, filename: str = "policy.yaml", **kwargs: object
) -> list[Problem]:
    with pytest.raises(InvalidInput) as caught:
        parse_policy(text, filename, **kwargs)  # type: ignore[arg-type]
    return caught.value.problems


# -- the reference scenario --------------------------------------------------------------------


def test_reference_document_parses_to_the_expected_values() -> None:
    policy = parse_policy(REFERENCE, "tiktok.yaml", known_apps={"tiktok", "wechat"})

    assert policy == PolicyDocument(
        policy_id="tiktok-mobile-email",
        title="Mandatory removal of TikTok",
        apps=("tiktok",),
        identifiers=(),
        scope=Scope(
            platforms=("android", "ios", "ipados"),
            form_factors=("phone", "tablet"),
            ownership=("corporate", "personal"),
            access=("email",),
            people=None,
        ),
        deadline=REFERENCE_DEADLINE,
        grace=timedelta(days=1),
        max_evidence_age=timedelta(days=7),
        evidence=("attestation", "inventory", "targeted_check"),
        unknown="allow",
        deny=("email",),
        notices=Notices(
            announce_template="mandatory-removal",
            reminders=(timedelta(days=3), timedelta(days=1)),
            send_at="09:00",
            blocked=True,
            restored=True,
        ),
        allowed_alternatives="Using TikTok from your company laptop browser is allowed.",
        remediation="Delete the TikTok app from this device. "
        "Access returns within a minute of the next check-in.",
        rationale=Rationale(
            text="The app can read what you copy to the clipboard and sends data to servers "
            "outside our control.",
            signals=(),
        ),
    )
    assert policy.deadline.utcoffset() == timedelta(0)


def test_reference_canonical_form_is_fully_resolved_and_ordered() -> None:
    canonical = parse_policy(REFERENCE, "tiktok.yaml").canonical()

    assert list(canonical) == ["apiVersion", "kind", "metadata", "spec"]
    assert list(canonical["spec"]) == [
        "apps",
        "identifiers",
        "scope",
        "deadline",
        "grace",
        "max_evidence_age",
        "evidence",
        "unknown",
        "enforcement",
        "notices",
        "allowed_alternatives",
        "remediation",
        "rationale",
    ]
    spec = canonical["spec"]
    assert spec["scope"] == {
        "platforms": ["android", "ios", "ipados"],
        "form_factors": ["phone", "tablet"],
        "ownership": ["corporate", "personal"],
        "access": ["email"],
        "people": None,
    }
    assert spec["deadline"] == "2020-07-11T06:59:59Z"
    assert (spec["grace"], spec["max_evidence_age"]) == ("P1D", "P7D")
    assert spec["evidence"] == ["attestation", "inventory", "targeted_check"]
    assert spec["enforcement"] == {"deny": ["email"]}
    assert spec["notices"] == {
        "announce": {"template": "mandatory-removal"},
        "reminders": ["P3D", "P1D"],
        "send_at": "09:00",
        "blocked": True,
        "restored": True,
    }
    assert spec["rationale"]["signals"] == []
    # Serialisable as is, which is what hashing for approvals needs.
    assert json.loads(json.dumps(canonical)) == canonical


def test_defaults_apply_when_optional_keys_are_omitted() -> None:
    policy = parse_policy(MINIMAL, "minimal.yaml")

    assert policy.identifiers == ()
    assert policy.scope == Scope(
        platforms=None, form_factors=None, ownership=None, access=None, people=None
    )
    assert policy.grace == timedelta(days=1)
    assert policy.max_evidence_age == timedelta(days=7)
    assert policy.evidence == ("inventory", "targeted_check")
    assert policy.unknown == "allow"
    assert policy.deny == ()
    assert policy.notices == Notices(
        announce_template="mandatory-removal",
        reminders=(),
        send_at="09:00",
        blocked=True,
        restored=True,
    )
    assert (policy.allowed_alternatives, policy.remediation, policy.rationale) == (None, None, None)


def test_identifiers_people_and_flags_are_normalised() -> None:
    text = """\
apiVersion: appwarden/v1
kind: AppPolicy
metadata: {id: custom-app, title: "  Remove the custom app  "}
spec:
  identifiers:
    - {namespace: apple_bundle_id, value: com.example.app}
    - {namespace: android_package, value: " com.example.app "}
  scope:
    people:
      include_groups: [sales, engineering]
      exclude: [Bob@Example.COM, alice@example.com]
  deadline: 2020-07-10T12:00:00+02:00
  unknown: deny
  evidence: [targeted_check]
  enforcement: {deny: [webmail, email]}
  notices: {blocked: false, restored: false, send_at: "17:30", announce: {template: gentle}}
  rationale: {text: Data leaves the country., signals: [sig-2, sig-1]}
"""
    policy = parse_policy(text, "custom.yaml")

    assert policy.title == "Remove the custom app"
    assert policy.apps == ()
    assert policy.identifiers == (
        IdentifierRef("android_package", "com.example.app"),
        IdentifierRef("apple_bundle_id", "com.example.app"),
    )
    assert policy.scope.people == PeopleScope(
        include_groups=("engineering", "sales"),
        exclude_groups=(),
        exclude=("alice@example.com", "bob@example.com"),
    )
    assert policy.deadline == datetime(2020, 7, 10, 10, 0, tzinfo=UTC)
    assert (policy.unknown, policy.evidence, policy.deny) == (
        "deny",
        ("targeted_check",),
        ("email", "webmail"),
    )
    assert policy.notices == Notices(
        announce_template="gentle", reminders=(), send_at="17:30", blocked=False, restored=False
    )
    # Signals keep the author's order: it is the order in which they are cited.
    assert policy.rationale == Rationale(
        text="Data leaves the country.", signals=("sig-2", "sig-1")
    )


def test_bytes_input_and_unknown_slugs_without_a_catalog_are_accepted() -> None:
    policy = parse_policy(variant("[tiktok]", "[not-yet-catalogued]").encode(), "policy.yaml")
    assert policy.apps == ("not-yet-catalogued",)


# -- canonical form ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "filename"),
    [
        pytest.param(REFERENCE_REWRITTEN, "rewritten.yaml", id="reordered-defaults-omitted"),
        pytest.param(REFERENCE_JSON, "reference.json", id="json"),
    ],
)
def test_equivalent_documents_have_equal_canonical_forms(text: str, filename: str) -> None:
    reference = parse_policy(REFERENCE, "reference.yaml")
    other = parse_policy(text, filename)

    assert other.canonical() == reference.canonical()
    assert json.dumps(other.canonical()) == json.dumps(reference.canonical())
    assert other == reference


def test_defaults_written_out_equal_defaults_omitted() -> None:
    written_out = MINIMAL.replace(
        "  enforcement: {deny: []}\n",
        """\
  identifiers: []
  scope: {people: {exclude_groups: [], exclude: []}}
  grace: P1D
  max_evidence_age: P1W
  evidence: [inventory, targeted_check]
  unknown: allow
  enforcement: {deny: []}
  notices:
    announce: {template: mandatory-removal}
    reminders: []
    send_at: "09:00"
    blocked: true
    restored: true
""",
    )
    assert written_out != MINIMAL
    assert parse_policy(written_out, "a.yaml").canonical() == (
        parse_policy(MINIMAL, "b.yaml").canonical()
    )


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param("our control.\n", "our control!\n", id="rationale-text-changed"),
        pytest.param("reminders: [P3D, P1D]", "reminders: [P3D]", id="reminder-dropped"),
        pytest.param("-07:00", "-08:00", id="deadline-moved"),
        pytest.param("signals: []", "signals: [clipboard-read]", id="signal-cited"),
    ],
)
def test_a_change_of_meaning_changes_the_canonical_form(old: str, new: str) -> None:
    changed = parse_policy(variant(old, new, REFERENCE), "changed.yaml")
    assert changed.canonical() != parse_policy(REFERENCE, "reference.yaml").canonical()


# -- malformed documents -----------------------------------------------------------------------

LONG = "x" * 4001

MALFORMED = [
    # (id, text, known_apps, where, message substring)
    (
        "unknown-top-level-key",
        BASE + "colour: red\n",
        None,
        "policy.yaml:19:9",
        "document: unknown key 'colour'; expected one of apiVersion, kind, metadata, spec",
    ),
    (
        "unknown-spec-key",
        variant("  grace: P1D\n", "  grace: P1D\n  graze: P2D\n"),
        None,
        "policy.yaml:13:10",
        "spec: unknown key 'graze'; expected one of ",
    ),
    (
        "unknown-scope-key",
        variant("    form_factors:", "    formfactors:"),
        None,
        "policy.yaml:10:18",
        "spec.scope: unknown key 'formfactors'; expected one of access, form_factors, ownership, "
        "people, platforms (did you mean 'form_factors'?)",
    ),
    (
        "unknown-notices-key",
        variant("    send_at:", "    send_time:"),
        None,
        "policy.yaml:18:16",
        "spec.notices: unknown key 'send_time'",
    ),
    (
        "duplicate-key",
        variant("  grace: P1D\n", "  grace: P1D\n  grace: P2D\n"),
        None,
        "policy.yaml:13:3",
        "duplicate key 'grace'",
    ),
    (
        "no-as-a-boolean",
        BASE + "    blocked: no\n",
        None,
        "policy.yaml:19:14",
        "ambiguous value 'no'",
    ),
    (
        "naive-deadline",
        variant("2020-07-10T23:59:59-07:00", "2020-07-10T23:59:59"),
        None,
        "policy.yaml:11:13",
        "spec.deadline: expected an RFC 3339 time with an offset, like "
        "2020-07-10T23:59:59-07:00, got '2020-07-10T23:59:59' without an offset",
    ),
    (
        "bare-date-deadline",
        variant("2020-07-10T23:59:59-07:00", "2020-07-10"),
        None,
        "policy.yaml:11:13",
        "got the bare date '2020-07-10'; add a time and an offset",
    ),
    (
        "impossible-deadline",
        variant("2020-07-10T23:59:59-07:00", "2020-02-30T12:00:00Z"),
        None,
        "policy.yaml:11:13",
        "spec.deadline: expected an RFC 3339 time with an offset",
    ),
    (
        "missing-deadline",
        variant("  deadline: 2020-07-10T23:59:59-07:00\n", ""),
        None,
        "policy.yaml:7:3",
        "spec: missing required key 'deadline'",
    ),
    (
        "months-in-a-duration",
        variant("grace: P1D", "grace: P1M"),
        None,
        "policy.yaml:12:10",
        "spec.grace: expected a duration made of W, D, H, M, S such as P1D or PT12H, got 'P1M'",
    ),
    (
        "years-in-a-duration",
        variant("max_evidence_age: P7D", "max_evidence_age: P1Y"),
        None,
        "policy.yaml:13:21",
        "spec.max_evidence_age: expected a duration made of W, D, H, M, S",
    ),
    (
        "words-for-a-duration",
        variant("grace: P1D", "grace: 1 day"),
        None,
        "policy.yaml:12:10",
        "got '1 day'",
    ),
    (
        "zero-max-evidence-age",
        variant("max_evidence_age: P7D", "max_evidence_age: P0D"),
        None,
        "policy.yaml:13:21",
        "spec.max_evidence_age: must be longer than zero, got 'P0D'",
    ),
    (
        "negative-max-evidence-age",
        variant("max_evidence_age: P7D", "max_evidence_age: -P7D"),
        None,
        "policy.yaml:13:21",
        "got '-P7D'",
    ),
    (
        "absurdly-long-grace",
        variant("grace: P1D", "grace: P99999999999D"),
        None,
        "policy.yaml:12:10",
        "spec.grace: 'P99999999999D' is too long; the limit is P3650D",
    ),
    (
        "empty-platforms",
        variant("platforms: [ios, ipados, android]", "platforms: []"),
        None,
        "policy.yaml:9:16",
        "spec.scope.platforms: an empty list matches nothing; omit the key to match all",
    ),
    (
        "empty-include-groups",
        variant(
            "    form_factors: [phone, tablet]\n",
            "    form_factors: [phone, tablet]\n    people: {include_groups: []}\n",
        ),
        None,
        "policy.yaml:11:30",
        "spec.scope.people.include_groups: an empty list includes nobody; omit the key",
    ),
    (
        "unknown-platform",
        variant("[ios, ipados, android]", "[ios, ipados, iphone]"),
        None,
        "policy.yaml:9:30",
        "spec.scope.platforms[2]: unknown platform 'iphone'; expected one of android, chromeos, "
        "ios, ipados, linux, macos, unknown, windows",
    ),
    (
        "platform-in-the-wrong-case",
        variant("[ios, ipados, android]", "[iOS, ipados, android]"),
        None,
        "policy.yaml:9:17",
        "unknown platform 'iOS'; expected one of android, chromeos, ios, ipados, linux, macos, "
        "unknown, windows (did you mean 'ios'?)",
    ),
    (
        "duplicate-platform",
        variant("[ios, ipados, android]", "[ios, ipados, ios]"),
        None,
        "policy.yaml:9:30",
        "spec.scope.platforms[2]: duplicate platform 'ios' (already at spec.scope.platforms[0])",
    ),
    (
        "unknown-namespace",
        variant(
            "  apps: [tiktok]\n",
            "  apps: [tiktok]\n  identifiers:\n"
            "    - {namespace: apple_bundle, value: com.example.app}\n",
        ),
        None,
        "policy.yaml:9:19",
        "spec.identifiers[0].namespace: unknown namespace 'apple_bundle'; expected one of "
        "android_package, apple_bundle_id,",
    ),
    (
        "unknown-catalog-slug",
        variant("[tiktok]", "[tiktok, tik-tok]"),
        {"tiktok", "wechat"},
        "policy.yaml:7:18",
        "spec.apps[1]: unknown app 'tik-tok'; it is not in the catalog (did you mean 'tiktok'?)",
    ),
    (
        "managed-only-evidence",
        variant("  enforcement:\n", "  evidence: [inventory, managed_only]\n  enforcement:\n"),
        None,
        "policy.yaml:14:25",
        "spec.evidence[1]: 'managed_only' cannot prove absence (such a source cannot see "
        "user-installed apps); expected one of attestation, inventory, targeted_check",
    ),
    (
        "none-evidence",
        variant("  enforcement:\n", "  evidence: [none]\n  enforcement:\n"),
        None,
        "policy.yaml:14:14",
        "spec.evidence[0]: 'none' cannot prove absence",
    ),
    (
        "empty-evidence",
        variant("  enforcement:\n", "  evidence: []\n  enforcement:\n"),
        None,
        "policy.yaml:14:13",
        "spec.evidence: an empty list lets nothing prove absence",
    ),
    (
        "apps-as-a-string",
        variant("apps: [tiktok]", "apps: tiktok"),
        None,
        "policy.yaml:7:9",
        "spec.apps: expected a list, got the string 'tiktok'",
    ),
    (
        "grace-as-a-number",
        variant("grace: P1D", "grace: 5"),
        None,
        "policy.yaml:12:10",
        "spec.grace: expected a duration made of W, D, H, M, S such as P1D or PT12H, "
        "got the number 5",
    ),
    (
        "scope-as-a-string",
        variant(
            "  scope:\n    platforms: [ios, ipados, android]\n    form_factors: [phone, tablet]\n",
            "  scope: all\n",
        ),
        None,
        "policy.yaml:8:10",
        "spec.scope: expected a mapping, got the string 'all'",
    ),
    (
        "number-in-a-list-of-strings",
        variant("[ios, ipados, android]", "[ios, 7, android]"),
        None,
        "policy.yaml:9:22",
        "spec.scope.platforms[1]: expected a platform (android, chromeos, ios, ipados, linux, "
        "macos, unknown, windows), got the number 7",
    ),
    (
        "uppercase-id",
        variant("id: tiktok-mobile-email", "id: TikTok-Mobile"),
        None,
        "policy.yaml:4:7",
        "metadata.id: expected 3 to 64 lower-case letters, digits or '-', "
        "got the string 'TikTok-Mobile'",
    ),
    (
        "too-short-id",
        variant("id: tiktok-mobile-email", "id: ab"),
        None,
        "policy.yaml:4:7",
        "metadata.id: expected 3 to 64 lower-case letters, digits or '-', got the string 'ab'",
    ),
    (
        "too-long-id",
        variant("id: tiktok-mobile-email", "id: " + "a" * 65),
        None,
        "policy.yaml:4:7",
        "metadata.id: is 65 characters long; the limit is 64",
    ),
    (
        "missing-title",
        variant("  title: Mandatory removal of TikTok\n", ""),
        None,
        "policy.yaml:4:3",
        "metadata: missing required key 'title'",
    ),
    (
        "wrong-api-version",
        variant("appwarden/v1", "appwarden/v2"),
        None,
        "policy.yaml:1:13",
        "apiVersion: expected 'appwarden/v1', got the string 'appwarden/v2'",
    ),
    (
        "wrong-kind",
        variant("kind: AppPolicy", "kind: Policy"),
        None,
        "policy.yaml:2:7",
        "kind: expected 'AppPolicy', got the string 'Policy'",
    ),
    (
        "missing-enforcement",
        variant("  enforcement:\n    deny: [email]\n", ""),
        None,
        "policy.yaml:7:3",
        "spec: missing required key 'enforcement'",
    ),
    (
        "deny-of-an-unknown-resource",
        variant("deny: [email]", "deny: [email, sms]"),
        None,
        "policy.yaml:15:19",
        "spec.enforcement.deny[1]: unknown resource 'sms'; expected one of email, webmail",
    ),
    (
        "duplicate-reminders",
        variant("reminders: [P3D, P1D]", "reminders: [P3D, P1D, PT24H]"),
        None,
        "policy.yaml:17:27",
        "spec.notices.reminders[2]: duplicate reminder P1D (already at spec.notices.reminders[1])",
    ),
    (
        "zero-reminder",
        variant("reminders: [P3D, P1D]", "reminders: [PT0S]"),
        None,
        "policy.yaml:17:17",
        "spec.notices.reminders[0]: must be longer than zero",
    ),
    (
        "control-character-in-title",
        variant("title: Mandatory removal of TikTok", 'title: "Mandatory\\a removal"'),
        None,
        "policy.yaml:5:10",
        "metadata.title: contains the control character U+0007",
    ),
    (
        "line-break-in-title",
        variant("title: Mandatory removal of TikTok", 'title: "Mandatory\\nremoval"'),
        None,
        "policy.yaml:5:10",
        "metadata.title: contains the control character U+000A; it must be a single line",
    ),
    (
        "blank-title",
        variant("title: Mandatory removal of TikTok", 'title: "   "'),
        None,
        "policy.yaml:5:10",
        "metadata.title: must not be empty",
    ),
    (
        "over-long-remediation",
        BASE + f"  remediation: {LONG}\n",
        None,
        "policy.yaml:19:16",
        "spec.remediation: is 4001 characters long; the limit is 4000",
    ),
    (
        "send-at-out-of-range",
        variant('send_at: "09:00"', 'send_at: "25:00"'),
        None,
        "policy.yaml:18:14",
        'spec.notices.send_at: expected a 24-hour local time "HH:MM" from 00:00 to 23:59, '
        "got the string '25:00'",
    ),
    (
        "template-that-is-a-path",
        BASE + "    announce: {template: ../../etc/passwd}\n",
        None,
        "policy.yaml:19:26",
        "spec.notices.announce.template: expected a slug of lower-case letters",
    ),
    (
        "not-an-email-address",
        variant(
            "    form_factors: [phone, tablet]\n",
            "    form_factors: [phone, tablet]\n    people: {exclude: [bob]}\n",
        ),
        None,
        "policy.yaml:11:24",
        "spec.scope.people.exclude[0]: expected an email address like alice@example.com, "
        "got the string 'bob'",
    ),
    (
        "neither-apps-nor-identifiers",
        variant("apps: [tiktok]", "apps: []"),
        None,
        "policy.yaml:7:9",
        "spec: name at least one app in spec.apps or one identifier in spec.identifiers",
    ),
    (
        "unknown-is-neither-allow-nor-deny",
        BASE + "  unknown: block\n",
        None,
        "policy.yaml:19:12",
        "spec.unknown: unknown value 'block'; expected one of allow, deny",
    ),
    (
        "quoted-boolean",
        BASE + '    restored: "yes"\n',
        None,
        "policy.yaml:19:15",
        "spec.notices.restored: expected true or false, got the string 'yes'",
    ),
    (
        "not-a-mapping-at-all",
        "- apiVersion\n- kind\n",
        None,
        "policy.yaml:1:1",
        "document: expected a mapping, got a list",
    ),
]


@pytest.mark.parametrize(
    ("text", "known_apps", "where", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in MALFORMED],
)
def test_malformed_document_reports_the_location_and_what_was_expected(
    text: str, known_apps: set[str] | None, where: str, message: str
) -> None:
    problems = problems_of(text, known_apps=known_apps)

    assert len(problems) == 1, [str(p) for p in problems]
    assert problems[0].where == where
    assert message in problems[0].message
    assert str(problems[0]).startswith(f"{where}: ")


def test_json_document_errors_are_located_too() -> None:
    text = """\
{
  "apiVersion": "appwarden/v1",
  "kind": "AppPolicy",
  "metadata": {"id": "tiktok-mobile-email", "title": "Mandatory removal of TikTok"},
  "spec": {
    "apps": ["tiktok"],
    "deadline": "2020-07-10T23:59:59-07:00",
    "grace": "P1M",
    "enforcement": {"deny": ["email"]}
  }
}
"""
    problems = problems_of(text, filename="policy.json")

    assert [(p.where, p.message) for p in problems] == [
        (
            "policy.json:8:14",
            "spec.grace: expected a duration made of W, D, H, M, S such as P1D or PT12H, got 'P1M'",
        )
    ]


def test_every_problem_is_reported_together_in_document_order() -> None:
    text = """\
apiVersion: appwarden/v1
kind: AppPolicy
metadata:
  id: X
  title: Mandatory removal of TikTok
spec:
  apps: [tiktok]
  scope:
    platforms: [ios, iphone]
  deadline: 2020-07-10
  grace: P1M
  enforcement: {deny: [sms]}
  notices: {reminders: [P1D, P1D], colour: red}
"""
    with pytest.raises(InvalidInput) as caught:
        parse_policy(text, "many.yaml")

    assert [(p.where, p.message.split(":")[0]) for p in caught.value.problems] == [
        ("many.yaml:4:7", "metadata.id"),
        ("many.yaml:9:22", "spec.scope.platforms[1]"),
        ("many.yaml:10:13", "spec.deadline"),
        ("many.yaml:11:10", "spec.grace"),
        ("many.yaml:12:24", "spec.enforcement.deny[0]"),
        ("many.yaml:13:30", "spec.notices.reminders[1]"),
        ("many.yaml:13:44", "spec.notices"),
    ]
    assert caught.value.message == "many.yaml: 7 problem(s) in the policy document"
    assert caught.value.lines()[0] == (
        "many.yaml:4:7: metadata.id: expected 3 to 64 lower-case letters, digits or '-', "
        "got the string 'X'"
    )


def test_a_missing_section_is_reported_once_not_once_per_key_inside_it() -> None:
    text = "apiVersion: appwarden/v1\nkind: AppPolicy\nmetadata: {id: abc, title: T}\n"
    problems = problems_of(text)

    assert [str(p) for p in problems] == [
        "policy.yaml:1:1: document: missing required key 'spec' (a mapping)"
    ]


def test_an_oversized_document_is_refused_before_parsing() -> None:
    text = BASE + "# " + "x" * MAX_DOCUMENT_BYTES + "\n"
    with pytest.raises(InputTooLarge):
        parse_policy(text, "huge.yaml")


def test_hostile_values_are_cut_short_in_messages() -> None:
    text = variant("[ios, ipados, android]", "[" + "i" * 3000 + "]")
    problems = problems_of(text)

    assert len(problems) == 1
    assert problems[0].where == "policy.yaml:9:17"
    assert problems[0].message.startswith("spec.scope.platforms[0]: unknown platform 'iiii")
    assert "...'" in problems[0].message
    assert len(problems[0].message) < 200


def test_configured_resources_replace_the_default_ones() -> None:
    text = variant("deny: [email]", "deny: [vpn]")
    text = variant("    form_factors: [phone, tablet]\n", "    access: [vpn]\n", text)

    policy = parse_policy(text, "policy.yaml", known_resources=("email", "vpn"))
    assert (policy.scope.access, policy.deny) == (("vpn",), ("vpn",))

    problems = problems_of(text)
    assert [str(p) for p in problems] == [
        "policy.yaml:10:14: spec.scope.access[0]: unknown resource 'vpn'; "
        "expected one of email, webmail",
        "policy.yaml:15:12: spec.enforcement.deny[0]: unknown resource 'vpn'; "
        "expected one of email, webmail",
    ]
