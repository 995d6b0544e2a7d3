"""The ordered state rules of docs/architecture.md (appwarden.compliance.evaluate), table by table.

Every case builds plain data (PolicyRules, DeviceView, Seen, Covered, ExemptionWindow) and
asserts the whole Evaluation: state, since, due, first_seen, reasons and valid_until. The ids
name the rule that decides the case.

The common timeline (all UTC, 2020): release July 1 00:00, deadline July 10 00:00, grace 1 day,
max_evidence_age 7 days, evidence [inventory, targeted_check]; "now" is July 5 12:00 unless a
case says otherwise, so a proof older than June 28 12:00 is stale.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from appwarden.compliance.evaluate import (
    IN_SCOPE_STATES,
    Covered,
    DeviceView,
    Evaluation,
    ExemptionWindow,
    IdentifierRule,
    Owner,
    PolicyRules,
    ScopeRule,
    Seen,
    Watched,
    evaluate,
)
from appwarden.vocabulary import ComplianceState as S

# ---------------------------------------------------------------------------------------------
# Time and vocabulary


def jun(day: int, hour: int = 0) -> datetime:
    return datetime(2020, 6, day, hour, tzinfo=UTC)


def jul(day: int, hour: int = 0) -> datetime:
    return datetime(2020, 7, day, hour, tzinfo=UTC)


RELEASE = jul(1)
DEADLINE = jul(10)
GRACE = timedelta(days=1)
MAX_AGE = timedelta(days=7)
NOW = jul(5, 12)

TIKTOK = "com.zhiliaoapp.musically"
LITE = "com.zhiliaoapp.musically.go"
PROGRAM_GLOB = "tiktok*|bytedance*"

# Feeds: (source, evidence kind).
AMAPI = ("amapi", "inventory")
JAMF = ("jamf", "inventory")
OSQUERY = ("osquery", "inventory")
INTUNE = ("intune", "managed_only")
CHECK = ("check", "targeted_check")
ATTEST = ("attest", "attestation")

PRESENT = f"present:android_package:{TIKTOK}"
PRESENT_LITE = f"present:android_package:{LITE}"
UNVERIFIED = f"unverified:android_package:{TIKTOK}"
UNVERIFIED_LITE = f"unverified:android_package:{LITE}"
PROVEN = ("absence_proven",)

# ---------------------------------------------------------------------------------------------
# Builders


BASE_SCOPE = ScopeRule(
    platforms=frozenset({"ios", "ipados", "android"}),
    form_factors=frozenset({"phone", "tablet"}),
    ownership=frozenset({"corporate", "personal"}),
    access=frozenset({"email"}),
)

BASE_RULES = PolicyRules(
    version_id=1,
    policy_id="tiktok-mobile-email",
    release_at=RELEASE,
    deadline=DEADLINE,
    grace=GRACE,
    max_evidence_age=MAX_AGE,
    evidence=frozenset({"inventory", "targeted_check"}),
    unknown_deny=False,
    deny=frozenset({"email"}),
    identifiers=(IdentifierRule("android_package", TIKTOK),),
    scope=BASE_SCOPE,
)

ALICE = Owner("alice@example.com")


def policy(*idents: IdentifierRule, scope: ScopeRule | None = None, **changes) -> PolicyRules:
    """The reference rules with changes; identifiers replace the default (TikTok on Android)."""
    if idents:
        changes["identifiers"] = idents
    if scope is not None:
        changes["scope"] = scope
    return replace(BASE_RULES, **changes)


def scoped(**changes) -> PolicyRules:
    """The reference rules with some scope keys changed."""
    return policy(scope=replace(BASE_SCOPE, **changes))


ANY_SCOPE = ScopeRule()


def android(key: str = TIKTOK) -> IdentifierRule:
    return IdentifierRule("android_package", key)


def seen(
    first: datetime,
    last: datetime | None = None,
    *,
    feed: tuple[str, str] = AMAPI,
    namespace: str = "android_package",
    key: str = TIKTOK,
) -> Seen:
    return Seen(feed[0], feed[1], namespace, key, first, last or first)


def covered(
    observed_at: datetime,
    *,
    feed: tuple[str, str] = AMAPI,
    namespace: str = "android_package",
    value: str = "",
) -> Covered:
    return Covered(feed[0], feed[1], namespace, value, observed_at)


def device(*facts: Seen | Covered, **changes) -> DeviceView:
    """Alice's active personal Android phone holding email, with these observations/coverage."""
    base = DeviceView(
        device_id=1,
        platform="android",
        form_factor="phone",
        ownership="personal",
        status="active",
        resources=frozenset({"email"}),
        owner=ALICE,
        observations=tuple(f for f in facts if isinstance(f, Seen)),
        coverage=tuple(f for f in facts if isinstance(f, Covered)),
    )
    return replace(base, **changes)


def windows_pc(*facts: Seen | Covered, **changes) -> DeviceView:
    return device(
        *facts, platform="windows", form_factor="laptop", ownership="corporate", **changes
    )


def case(
    case_id: str,
    expected: Evaluation,
    *,
    rules: PolicyRules = BASE_RULES,
    dev: DeviceView | None = None,
    now: datetime = NOW,
    exemptions: tuple[ExemptionWindow, ...] = (),
    stored_first_seen: datetime | None = None,
):
    return pytest.param(
        rules,
        dev if dev is not None else device(),
        now,
        exemptions,
        stored_first_seen,
        expected,
        id=case_id,
    )


ARGS = ("rules", "dev", "now", "exemptions", "stored_first_seen", "expected")


def run(rules, dev, now, exemptions, stored_first_seen) -> Evaluation:
    return evaluate(rules, dev, now=now, exemptions=exemptions, stored_first_seen=stored_first_seen)


def na(reason: str) -> Evaluation:
    return Evaluation(S.NOT_APPLICABLE, since=None, reasons=(reason,))


# The in-scope outcome when nothing is known about the device: rule 5 since the release.
UNKNOWN_NO_FACTS = Evaluation(S.UNKNOWN, since=RELEASE, reasons=(UNVERIFIED,))

# A violation the device's own full inventory (AMAPI) still shows: first seen before release.
STILL_PRESENT = (seen(jun(28), jul(4)), covered(jul(4)))

# ---------------------------------------------------------------------------------------------
# Rule 1: not_applicable (and the in-scope counterparts of every scope key)

# fmt: off
RULE1 = [
    case("rule1-not_applicable-platform-mismatch", na("out_of_scope:platforms"),
         dev=device(platform="windows")),
    case("rule1-not_applicable-form-factor-mismatch", na("out_of_scope:form_factors"),
         dev=device(form_factor="laptop")),
    case("rule1-not_applicable-ownership-mismatch", na("out_of_scope:ownership"),
         rules=scoped(ownership=frozenset({"corporate"}))),
    case("rule1-not_applicable-access-mismatch", na("out_of_scope:access"),
         dev=device(resources=frozenset({"webmail"}))),
    case("rule1-not_applicable-access-no-resources", na("out_of_scope:access"),
         dev=device(resources=frozenset())),
    case("rule1-not_applicable-include-groups-mismatch", na("out_of_scope:include_groups"),
         rules=scoped(include_groups=frozenset({"mobile-staff"})),
         dev=device(owner=Owner("alice@example.com", groups=frozenset({"contractors"})))),
    case("rule1-not_applicable-include-groups-owner-in-no-group",
         na("out_of_scope:include_groups"),
         rules=scoped(include_groups=frozenset({"mobile-staff"}))),
    case("rule1-not_applicable-exclude-groups-match", na("out_of_scope:exclude_groups"),
         rules=scoped(exclude_groups=frozenset({"executives"})),
         dev=device(owner=Owner("alice@example.com", groups=frozenset({"staff", "executives"})))),
    case("rule1-not_applicable-exclude-person", na("out_of_scope:exclude"),
         rules=scoped(exclude_people=frozenset({"bob@example.com", "alice@example.com"}))),
    case("rule1-not_applicable-device-retired", na("device_retired"),
         dev=device(*STILL_PRESENT, status="retired")),
    case("rule1-not_applicable-no-owner", na("no_owner"),
         dev=device(*STILL_PRESENT, owner=None)),
    case("rule1-not_applicable-no-owner-group-scope-not-decided", na("no_owner"),
         rules=scoped(include_groups=frozenset({"mobile-staff"}),
                      exclude_groups=frozenset({"executives"}),
                      exclude_people=frozenset({"alice@example.com"})),
         dev=device(owner=None)),
    case("rule1-not_applicable-owner-left", na("person_left"),
         dev=device(*STILL_PRESENT, owner=Owner("alice@example.com", status="left"))),
    case("rule1-not_applicable-scope-reason-before-retired", na("out_of_scope:platforms"),
         dev=device(platform="windows", status="retired", owner=None)),
    case("rule1-not_applicable-unknown-platform-other-key-mismatch",
         na("out_of_scope:form_factors"),
         dev=device(platform="unknown", form_factor="desktop")),
    case("rule1-not_applicable-scope-wins-over-exemption", na("out_of_scope:platforms"),
         dev=device(platform="macos"),
         exemptions=(ExemptionWindow(7, jul(3), jul(8)),)),
    # In scope: every key matching, `unknown` values, omitted keys -> rules 2-5 decide.
    case("rule1-in_scope-every-key-matches", UNKNOWN_NO_FACTS),
    case("rule1-in_scope-platform-unknown", UNKNOWN_NO_FACTS, dev=device(platform="unknown")),
    case("rule1-in_scope-form-factor-unknown", UNKNOWN_NO_FACTS,
         dev=device(form_factor="unknown")),
    case("rule1-in_scope-ownership-unknown", UNKNOWN_NO_FACTS, dev=device(ownership="unknown")),
    case("rule1-in_scope-platform-form-factor-ownership-all-unknown", UNKNOWN_NO_FACTS,
         dev=device(platform="unknown", form_factor="unknown", ownership="unknown")),
    case("rule1-in_scope-platforms-omitted", UNKNOWN_NO_FACTS,
         rules=scoped(platforms=None), dev=device(platform="chromeos")),
    case("rule1-in_scope-form-factors-omitted", UNKNOWN_NO_FACTS,
         rules=scoped(form_factors=None), dev=device(form_factor="laptop")),
    case("rule1-in_scope-ownership-omitted", UNKNOWN_NO_FACTS,
         rules=scoped(ownership=None), dev=device(ownership="personal")),
    case("rule1-in_scope-access-one-of-several", UNKNOWN_NO_FACTS,
         rules=scoped(access=frozenset({"email", "webmail"})),
         dev=device(resources=frozenset({"webmail", "vpn"}))),
    case("rule1-in_scope-access-omitted-no-resources", UNKNOWN_NO_FACTS,
         rules=scoped(access=None), dev=device(resources=frozenset())),
    case("rule1-in_scope-include-groups-match", UNKNOWN_NO_FACTS,
         rules=scoped(include_groups=frozenset({"mobile-staff", "sales"})),
         dev=device(owner=Owner("alice@example.com", groups=frozenset({"sales"})))),
    case("rule1-in_scope-exclude-groups-no-overlap", UNKNOWN_NO_FACTS,
         rules=scoped(exclude_groups=frozenset({"executives"})),
         dev=device(owner=Owner("alice@example.com", groups=frozenset({"sales"})))),
    case("rule1-in_scope-exclude-other-person", UNKNOWN_NO_FACTS,
         rules=scoped(exclude_people=frozenset({"bob@example.com"}))),
]
# fmt: on


# ---------------------------------------------------------------------------------------------
# Rule 2: exempt (window active); a window not yet started or already ended is not exempt.

# fmt: off
RULE2 = [
    case("rule2-exempt-underlying-unknown",
         Evaluation(S.EXEMPT, since=jul(3),
                    reasons=("exemption:7", "underlying:unknown", UNVERIFIED),
                    valid_until=jul(8)),
         exemptions=(ExemptionWindow(7, jul(3), jul(8)),)),
    case("rule2-exempt-underlying-action_required",
         Evaluation(S.EXEMPT, since=jul(3), due=DEADLINE, first_seen=jun(28),
                    reasons=("exemption:7", "underlying:action_required", PRESENT),
                    valid_until=jul(8)),
         dev=device(*STILL_PRESENT),
         exemptions=(ExemptionWindow(7, jul(3), jul(8)),)),
    case("rule2-exempt-underlying-non_compliant",
         Evaluation(S.EXEMPT, since=jul(11), due=DEADLINE, first_seen=jun(28),
                    reasons=("exemption:7", "underlying:non_compliant", PRESENT),
                    valid_until=jul(20)),
         dev=device(seen(jun(28), jul(11)), covered(jul(11))), now=jul(12),
         exemptions=(ExemptionWindow(7, jul(11), jul(20)),)),
    case("rule2-exempt-underlying-compliant",
         Evaluation(S.EXEMPT, since=jul(3),
                    reasons=("exemption:7", "underlying:compliant", "absence_proven"),
                    valid_until=jul(8)),
         dev=device(covered(jul(4))),
         exemptions=(ExemptionWindow(7, jul(3), jul(8)),)),
    case("rule2-exempt-window-started-before-release-since-release",
         Evaluation(S.EXEMPT, since=RELEASE,
                    reasons=("exemption:7", "underlying:unknown", UNVERIFIED),
                    valid_until=jul(20)),
         exemptions=(ExemptionWindow(7, jun(20), jul(20)),)),
    case("rule2-exempt-window-starts-exactly-now",
         Evaluation(S.EXEMPT, since=NOW,
                    reasons=("exemption:7", "underlying:unknown", UNVERIFIED),
                    valid_until=jul(8)),
         exemptions=(ExemptionWindow(7, NOW, jul(8)),)),
    case("rule2-exempt-overlapping-windows-latest-end-wins",
         Evaluation(S.EXEMPT, since=jul(2),
                    reasons=("exemption:1", "underlying:unknown", UNVERIFIED),
                    valid_until=jul(20)),
         exemptions=(ExemptionWindow(1, jul(2), jul(20)), ExemptionWindow(2, jul(4), jul(8)))),
    case("rule2-exempt-windows-ending-together-higher-id-wins",
         Evaluation(S.EXEMPT, since=jul(2),
                    reasons=("exemption:5", "underlying:unknown", UNVERIFIED),
                    valid_until=jul(9)),
         exemptions=(ExemptionWindow(3, jul(3), jul(9)), ExemptionWindow(5, jul(2), jul(9)))),
    case("rule2-exempt-active-window-after-ended-one-due-from-its-end",
         Evaluation(S.EXEMPT, since=jul(12), due=jul(12), first_seen=jun(28),
                    reasons=("exemption:9", "underlying:non_compliant", PRESENT),
                    valid_until=jul(20)),
         dev=device(seen(jun(28), jul(11)), covered(jul(11))), now=jul(12, 12),
         exemptions=(ExemptionWindow(8, jun(30), jul(11)), ExemptionWindow(9, jul(12), jul(20)))),
    case("rule2-not-exempt-window-not-yet-started",
         Evaluation(S.ACTION_REQUIRED, since=RELEASE, due=DEADLINE, first_seen=jun(28),
                    reasons=(PRESENT,), valid_until=DEADLINE),
         dev=device(*STILL_PRESENT),
         exemptions=(ExemptionWindow(7, jul(12), jul(20)),)),
    case("rule2-not-exempt-ended-window-grace-from-end-non_compliant",
         Evaluation(S.NON_COMPLIANT, since=jul(13), due=jul(13), first_seen=jun(28),
                    reasons=(PRESENT,)),
         dev=device(seen(jun(28), jul(12)), covered(jul(12))), now=jul(13),
         exemptions=(ExemptionWindow(7, jun(30), jul(12)),)),
    case("rule2-not-exempt-window-ends-exactly-now-no-grace",
         Evaluation(S.NON_COMPLIANT, since=jul(12), due=jul(12), first_seen=jun(28),
                    reasons=(PRESENT,)),
         rules=policy(grace=timedelta(0)),
         dev=device(seen(jun(28), jul(11)), covered(jul(11))), now=jul(12),
         exemptions=(ExemptionWindow(7, jun(30), jul(12)),)),
    case("rule2-not-exempt-latest-ended-window-counts",
         Evaluation(S.NON_COMPLIANT, since=jul(13), due=jul(13), first_seen=jun(28),
                    reasons=(PRESENT,)),
         dev=device(seen(jun(28), jul(12)), covered(jul(12))), now=jul(13),
         exemptions=(ExemptionWindow(1, jun(30), jul(11)), ExemptionWindow(2, jul(5), jul(12)))),
    case("rule2-not-exempt-ended-window-grace-inside-deadline-due-at-deadline",
         Evaluation(S.ACTION_REQUIRED, since=RELEASE, due=DEADLINE, first_seen=jun(28),
                    reasons=(PRESENT,), valid_until=DEADLINE),
         dev=device(*STILL_PRESENT),
         exemptions=(ExemptionWindow(7, jun(25), jun(29)),)),
    case("rule2-not-exempt-ended-window-no-violation-compliant",
         Evaluation(S.COMPLIANT, since=RELEASE, reasons=PROVEN, valid_until=jul(11)),
         dev=device(covered(jul(4))),
         exemptions=(ExemptionWindow(7, jun(20), jun(30)),)),
]
# fmt: on


# ---------------------------------------------------------------------------------------------
# Rule 3: violating -> action_required before due, non_compliant from due on.

ACTION_REQUIRED_BEFORE_RELEASE = Evaluation(
    S.ACTION_REQUIRED,
    since=RELEASE,
    due=DEADLINE,
    first_seen=jun(28),
    reasons=(PRESENT,),
    valid_until=DEADLINE,
)
WINDOWS_PROGRAM = IdentifierRule("windows_program", PROGRAM_GLOB, is_pattern=True)

# fmt: off
RULE3 = [
    case("rule3-violating-first-seen-before-release-due-at-deadline",
         ACTION_REQUIRED_BEFORE_RELEASE, dev=device(*STILL_PRESENT)),
    case("rule3-action_required-just-before-due",
         ACTION_REQUIRED_BEFORE_RELEASE,
         dev=device(seen(jun(28), jul(9)), covered(jul(9))), now=jul(9, 23)),
    case("rule3-non_compliant-at-due",
         Evaluation(S.NON_COMPLIANT, since=DEADLINE, due=DEADLINE, first_seen=jun(28),
                    reasons=(PRESENT,)),
         dev=device(seen(jun(28), jul(9)), covered(jul(9))), now=DEADLINE),
    case("rule3-violating-first-seen-after-release-grace-inside-deadline",
         Evaluation(S.ACTION_REQUIRED, since=jul(3), due=DEADLINE, first_seen=jul(3),
                    reasons=(PRESENT,), valid_until=DEADLINE),
         dev=device(seen(jul(3), jul(4)), covered(jul(4)))),
    case("rule3-violating-first-seen-after-release-gets-grace",
         Evaluation(S.ACTION_REQUIRED, since=jul(9, 12), due=jul(10, 12), first_seen=jul(9, 12),
                    reasons=(PRESENT,), valid_until=jul(10, 12)),
         dev=device(seen(jul(9, 12)), covered(jul(9, 12))), now=jul(9, 13)),
    case("rule3-non_compliant-after-grace",
         Evaluation(S.NON_COMPLIANT, since=jul(10, 12), due=jul(10, 12), first_seen=jul(9, 12),
                    reasons=(PRESENT,)),
         dev=device(seen(jul(9, 12)), covered(jul(9, 12))), now=jul(10, 12)),
    case("rule3-violating-first-seen-exactly-at-release-gets-grace",
         Evaluation(S.ACTION_REQUIRED, since=RELEASE, due=jul(2), first_seen=RELEASE,
                    reasons=(PRESENT,), valid_until=jul(2)),
         rules=policy(deadline=jul(1, 12)),
         dev=device(seen(RELEASE), covered(RELEASE)), now=jul(1, 18)),
    case("rule3-violating-first-seen-after-deadline-grace-from-first-seen",
         Evaluation(S.ACTION_REQUIRED, since=jul(12), due=jul(13), first_seen=jul(12),
                    reasons=(PRESENT,), valid_until=jul(13)),
         dev=device(seen(jul(12)), covered(jul(12))), now=jul(12, 12)),
    case("rule3-reinstall-stored-first-seen-before-release-no-new-grace",
         Evaluation(S.NON_COMPLIANT, since=DEADLINE, due=DEADLINE, first_seen=jun(20),
                    reasons=(PRESENT,)),
         dev=device(seen(jul(12)), covered(jul(12))), now=jul(12, 12),
         stored_first_seen=jun(20)),
    case("rule3-reinstall-stored-first-seen-after-release-keeps-old-grace",
         Evaluation(S.NON_COMPLIANT, since=DEADLINE, due=DEADLINE, first_seen=jul(2),
                    reasons=(PRESENT,)),
         dev=device(seen(jul(12)), covered(jul(12))), now=jul(12, 12),
         stored_first_seen=jul(2)),
    case("rule3-stored-first-seen-later-than-observation-ignored",
         ACTION_REQUIRED_BEFORE_RELEASE, dev=device(*STILL_PRESENT), stored_first_seen=jul(8)),
    case("rule3-violating-presence-in-managed_only-feed",
         ACTION_REQUIRED_BEFORE_RELEASE, dev=device(seen(jun(28), jul(4), feed=INTUNE))),
    case("rule3-violating-managed_only-own-coverage-is-no-proof",
         ACTION_REQUIRED_BEFORE_RELEASE,
         dev=device(seen(jun(28), jul(4), feed=INTUNE), covered(jul(5), feed=INTUNE))),
    case("rule3-violating-older-inventory-does-not-clear-newer-sighting",
         ACTION_REQUIRED_BEFORE_RELEASE,
         dev=device(seen(jun(28), jul(4), feed=INTUNE), covered(jul(3)))),
    case("rule3-violating-inventory-at-same-instant-does-not-clear",
         ACTION_REQUIRED_BEFORE_RELEASE,
         dev=device(seen(jun(28), jul(4), feed=INTUNE), covered(jul(4)))),
    case("rule3-violating-proof-from-same-feed-shows-app",
         ACTION_REQUIRED_BEFORE_RELEASE,
         dev=device(seen(jun(28), jul(4)), covered(jul(4)), covered(jul(4), feed=JAMF,
                    namespace="apple_bundle_id"))),
    case("rule3-violating-targeted-check-for-other-identifier-does-not-clear",
         ACTION_REQUIRED_BEFORE_RELEASE,
         dev=device(seen(jun(28), jul(4), feed=INTUNE), covered(jul(5), feed=CHECK, value=LITE))),
    case("rule3-violating-evidence-kind-not-listed-does-not-clear",
         ACTION_REQUIRED_BEFORE_RELEASE,
         dev=device(seen(jun(28), jul(4), feed=INTUNE),
                    covered(jul(5), feed=ATTEST, value=TIKTOK))),
    case("rule3-violating-other-namespace-coverage-does-not-clear",
         ACTION_REQUIRED_BEFORE_RELEASE,
         dev=device(seen(jun(28), jul(4), feed=INTUNE),
                    covered(jul(5), namespace="apple_bundle_id"))),
    case("rule3-violating-evidence_stale",
         Evaluation(S.ACTION_REQUIRED, since=RELEASE, due=DEADLINE, first_seen=jun(20),
                    reasons=(PRESENT, "evidence_stale"), valid_until=DEADLINE),
         dev=device(seen(jun(20), jun(25)), covered(jun(25)))),
    case("rule3-violating-presence-exactly-max-age-old-not-stale",
         Evaluation(S.ACTION_REQUIRED, since=RELEASE, due=DEADLINE, first_seen=jun(20),
                    reasons=(PRESENT,), valid_until=DEADLINE),
         dev=device(seen(jun(20), jun(28, 12)), covered(jun(28, 12)))),
    case("rule3-non_compliant-evidence_stale-keeps-state",
         Evaluation(S.NON_COMPLIANT, since=DEADLINE, due=DEADLINE, first_seen=jun(28),
                    reasons=(PRESENT, "evidence_stale")),
         dev=device(*STILL_PRESENT), now=jul(20)),
    case("rule3-violating-two-identifiers-live",
         Evaluation(S.ACTION_REQUIRED, since=RELEASE, due=DEADLINE, first_seen=jun(28),
                    reasons=(PRESENT, PRESENT_LITE), valid_until=DEADLINE),
         rules=policy(android(), android(LITE)),
         dev=device(seen(jun(28), jul(2), feed=INTUNE),
                    seen(jul(3), jul(4), feed=INTUNE, key=LITE))),
    case("rule3-violating-cleared-identifier-first-seen-ignored",
         Evaluation(S.ACTION_REQUIRED, since=jul(3), due=DEADLINE, first_seen=jul(3),
                    reasons=(PRESENT_LITE,), valid_until=DEADLINE),
         rules=policy(android(), android(LITE)),
         dev=device(seen(jun(20), jul(1), feed=INTUNE),
                    covered(jul(2), feed=CHECK, value=TIKTOK),
                    seen(jul(3), jul(4), feed=INTUNE, key=LITE))),
    case("rule3-violating-evidence_stale-judged-on-live-identifiers-only",
         Evaluation(S.ACTION_REQUIRED, since=RELEASE, due=DEADLINE, first_seen=jun(20),
                    reasons=(PRESENT_LITE, "evidence_stale"), valid_until=DEADLINE),
         rules=policy(android(), android(LITE)),
         dev=device(seen(jun(20), jul(4), feed=INTUNE),
                    covered(jul(5), feed=CHECK, value=TIKTOK),
                    seen(jun(20), jun(25), feed=INTUNE, key=LITE))),
    case("rule3-violating-display-name-presence-though-never-carried",
         Evaluation(S.ACTION_REQUIRED, since=jul(3), due=DEADLINE, first_seen=jul(3),
                    reasons=("present:display_name:tiktok",), valid_until=DEADLINE),
         rules=policy(IdentifierRule("display_name", "tiktok")),
         dev=device(seen(jul(3), jul(4), feed=INTUNE, namespace="display_name", key="tiktok"))),
    case("rule3-violating-pattern-identifier-windows-program-glob",
         Evaluation(S.ACTION_REQUIRED, since=RELEASE, due=DEADLINE, first_seen=jun(28),
                    reasons=(f"present:windows_program:{PROGRAM_GLOB}",), valid_until=DEADLINE),
         rules=policy(WINDOWS_PROGRAM, scope=ANY_SCOPE),
         dev=windows_pc(seen(jun(28), jul(4), feed=OSQUERY, namespace="windows_program",
                             key="tiktok lite|bytedance pte. ltd."),
                        covered(jul(4), feed=OSQUERY, namespace="windows_program"))),
]
# fmt: on


# ---------------------------------------------------------------------------------------------
# Rule 4: compliant -> every carried identifier has a fresh absence proof.

# fmt: off
RULE4 = [
    case("rule4-compliant-fresh-inventory",
         Evaluation(S.COMPLIANT, since=RELEASE, reasons=PROVEN, valid_until=jul(11)),
         dev=device(covered(jul(4)))),
    case("rule4-compliant-proof-exactly-max-age-old",
         Evaluation(S.COMPLIANT, since=RELEASE, reasons=PROVEN, valid_until=NOW),
         dev=device(covered(jun(28, 12)))),
    case("rule4-compliant-targeted-check-covers-the-identifier",
         Evaluation(S.COMPLIANT, since=RELEASE, reasons=PROVEN, valid_until=jul(11)),
         dev=device(covered(jul(4), feed=CHECK, value=TIKTOK))),
    case("rule4-compliant-attestation-when-listed-in-evidence",
         Evaluation(S.COMPLIANT, since=RELEASE, reasons=PROVEN, valid_until=jul(11)),
         rules=policy(evidence=frozenset({"inventory", "targeted_check", "attestation"})),
         dev=device(covered(jul(4), feed=ATTEST, value=TIKTOK))),
    case("rule4-compliant-later-inventory-clears-managed_only-sighting",
         Evaluation(S.COMPLIANT, since=jul(4), reasons=PROVEN, valid_until=jul(11)),
         dev=device(seen(jun(28), jul(2), feed=INTUNE), covered(jul(4)))),
    case("rule4-compliant-later-targeted-check-clears-sighting",
         Evaluation(S.COMPLIANT, since=jul(4), reasons=PROVEN, valid_until=jul(11)),
         dev=device(seen(jun(28), jul(2), feed=INTUNE), covered(jul(4), feed=CHECK,
                    value=TIKTOK))),
    case("rule4-compliant-same-feed-newer-report-omits-app",
         Evaluation(S.COMPLIANT, since=jul(4), reasons=PROVEN, valid_until=jul(11)),
         dev=device(seen(jun(28), jul(2)), covered(jul(4)))),
    case("rule4-compliant-since-first-clearing-proof-after-last-sighting",
         Evaluation(S.COMPLIANT, since=jul(3), reasons=PROVEN, valid_until=jul(11)),
         dev=device(seen(jun(28), jul(2), feed=INTUNE),
                    covered(jul(1, 12), feed=CHECK, value=TIKTOK),
                    covered(jul(4), feed=JAMF),
                    covered(jul(3)))),
    case("rule4-compliant-cleared-before-release-since-release",
         Evaluation(S.COMPLIANT, since=RELEASE, reasons=PROVEN, valid_until=jul(6)),
         dev=device(seen(jun(20), jun(22), feed=INTUNE), covered(jun(29)))),
    case("rule4-compliant-platform-cannot-carry-identifier-vacuous",
         Evaluation(S.COMPLIANT, since=RELEASE, reasons=PROVEN, valid_until=None),
         rules=policy(scope=ANY_SCOPE), dev=windows_pc()),
    case("rule4-compliant-only-carried-namespaces-need-proof",
         Evaluation(S.COMPLIANT, since=RELEASE, reasons=PROVEN, valid_until=jul(10)),
         rules=policy(android(), IdentifierRule("apple_bundle_id", TIKTOK),
                      IdentifierRule("web_domain", "tiktok.com")),
         dev=device(covered(jul(3), feed=JAMF, namespace="apple_bundle_id"), platform="ios")),
    case("rule4-compliant-unknown-platform-every-carried-namespace-proven",
         Evaluation(S.COMPLIANT, since=RELEASE, reasons=PROVEN, valid_until=jul(9)),
         rules=policy(android(), IdentifierRule("apple_bundle_id", TIKTOK), WINDOWS_PROGRAM,
                      IdentifierRule("display_name", "tiktok")),
         dev=device(covered(jul(3)),
                    covered(jul(4), feed=JAMF, namespace="apple_bundle_id"),
                    covered(jul(2), feed=OSQUERY, namespace="windows_program"),
                    platform="unknown")),
    case("rule4-compliant-valid-until-oldest-newest-proof",
         Evaluation(S.COMPLIANT, since=RELEASE, reasons=PROVEN, valid_until=jul(9)),
         rules=policy(android(), android(LITE)),
         dev=device(covered(jun(30)),
                    covered(jul(2), feed=CHECK, value=TIKTOK),
                    covered(jul(4), feed=CHECK, value=LITE))),
    case("rule4-compliant-pattern-matches-nothing-installed",
         Evaluation(S.COMPLIANT, since=RELEASE, reasons=PROVEN, valid_until=jul(11)),
         rules=policy(WINDOWS_PROGRAM, scope=ANY_SCOPE),
         dev=windows_pc(seen(jun(28), jul(4), feed=OSQUERY, namespace="windows_program",
                             key="notepad++|don ho"),
                        covered(jul(4), feed=OSQUERY, namespace="windows_program"))),
    case("rule4-compliant-literal-identifier-star-is-not-a-glob",
         Evaluation(S.COMPLIANT, since=RELEASE, reasons=PROVEN, valid_until=jul(11)),
         rules=policy(IdentifierRule("windows_program", PROGRAM_GLOB), scope=ANY_SCOPE),
         dev=windows_pc(seen(jun(28), jul(4), feed=OSQUERY, namespace="windows_program",
                             key="tiktok lite|bytedance pte. ltd."),
                        covered(jul(4), feed=OSQUERY, namespace="windows_program"))),
    case("rule4-compliant-same-key-other-namespace-is-not-presence",
         Evaluation(S.COMPLIANT, since=RELEASE, reasons=PROVEN, valid_until=jul(11)),
         dev=device(seen(jun(28), jul(4), namespace="apple_bundle_id"), covered(jul(4)))),
]
# fmt: on


# ---------------------------------------------------------------------------------------------
# Rule 5: unknown -> in scope, not violating, absence not (freshly) proven.

# fmt: off
RULE5 = [
    case("rule5-unknown-no-evidence", UNKNOWN_NO_FACTS),
    case("rule5-unknown-managed-only-cannot-prove-absence", UNKNOWN_NO_FACTS,
         dev=device(covered(jul(4), feed=INTUNE))),
    case("rule5-unknown-evidence-kind-not-listed", UNKNOWN_NO_FACTS,
         dev=device(covered(jul(4), feed=ATTEST, value=TIKTOK))),
    case("rule5-unknown-targeted-check-for-other-identifier", UNKNOWN_NO_FACTS,
         dev=device(covered(jul(4), feed=CHECK, value=LITE))),
    case("rule5-unknown-coverage-of-other-namespace", UNKNOWN_NO_FACTS,
         dev=device(covered(jul(4), namespace="apple_bundle_id"))),
    case("rule5-unknown-stale-proof-since-proof-plus-max-age",
         Evaluation(S.UNKNOWN, since=jul(11), reasons=(UNVERIFIED,)),
         dev=device(covered(jul(4))), now=jul(12)),
    case("rule5-unknown-proof-expired-before-release-since-release",
         Evaluation(S.UNKNOWN, since=RELEASE, reasons=(UNVERIFIED,)),
         dev=device(covered(jun(20)))),
    case("rule5-unknown-old-proof-clears-sighting-but-is-stale",
         Evaluation(S.UNKNOWN, since=jul(3), reasons=(UNVERIFIED,)),
         dev=device(seen(jun(20), jun(22), feed=INTUNE), covered(jun(26)))),
    case("rule5-unknown-one-of-two-identifiers-unproven",
         Evaluation(S.UNKNOWN, since=RELEASE, reasons=(UNVERIFIED_LITE,)),
         rules=policy(android(), android(LITE)),
         dev=device(covered(jul(4), feed=CHECK, value=TIKTOK))),
    case("rule5-unknown-unknown-platform-missing-namespace-proof",
         Evaluation(S.UNKNOWN, since=RELEASE,
                    reasons=(f"unverified:windows_program:{PROGRAM_GLOB}",)),
         rules=policy(android(), IdentifierRule("apple_bundle_id", TIKTOK), WINDOWS_PROGRAM,
                      IdentifierRule("display_name", "tiktok")),
         dev=device(covered(jul(3)),
                    covered(jul(4), feed=JAMF, namespace="apple_bundle_id"),
                    platform="unknown")),
    case("rule5-unknown-pattern-identifier-needs-proof-on-windows",
         Evaluation(S.UNKNOWN, since=RELEASE,
                    reasons=(f"unverified:windows_program:{PROGRAM_GLOB}",)),
         rules=policy(WINDOWS_PROGRAM, scope=ANY_SCOPE),
         dev=windows_pc(covered(jul(4), feed=OSQUERY, namespace="windows_upgrade_code"))),
]
# fmt: on


@pytest.mark.parametrize(ARGS, RULE1)
def test_rule1_scope_and_not_applicable(rules, dev, now, exemptions, stored_first_seen, expected):
    assert run(rules, dev, now, exemptions, stored_first_seen) == expected


@pytest.mark.parametrize(ARGS, RULE2)
def test_rule2_exemption_windows(rules, dev, now, exemptions, stored_first_seen, expected):
    assert run(rules, dev, now, exemptions, stored_first_seen) == expected


@pytest.mark.parametrize(ARGS, RULE3)
def test_rule3_violating(rules, dev, now, exemptions, stored_first_seen, expected):
    assert run(rules, dev, now, exemptions, stored_first_seen) == expected


@pytest.mark.parametrize(ARGS, RULE4)
def test_rule4_compliant(rules, dev, now, exemptions, stored_first_seen, expected):
    assert run(rules, dev, now, exemptions, stored_first_seen) == expected


@pytest.mark.parametrize(ARGS, RULE5)
def test_rule5_unknown(rules, dev, now, exemptions, stored_first_seen, expected):
    assert run(rules, dev, now, exemptions, stored_first_seen) == expected


# Apps no policy names, in the namespaces the cases use and in another one.
OTHER_APPS = tuple(
    seen(jun(20), jul(4), feed=feed, namespace=namespace, key=key)
    for feed, namespace, key in (
        (AMAPI, "android_package", "com.example.notes"),
        (AMAPI, "android_package", "com.zhiliaoapp.other"),
        (OSQUERY, "windows_program", "notepad++"),
        (JAMF, "apple_bundle_id", "com.example.notes"),
    )
)


@pytest.mark.parametrize(ARGS, RULE1 + RULE2 + RULE3 + RULE4 + RULE5)
def test_a_view_of_the_watched_observations_evaluates_as_the_whole_one(
    rules, dev, now, exemptions, stored_first_seen, expected
):
    """A batch's views hold only the observations its rules can look at (`Watched`): every
    case, with other apps added, evaluates the same from the whole view and from that one."""
    whole = replace(dev, observations=dev.observations + OTHER_APPS)
    watched = Watched.by([rules])
    kept = tuple(o for o in whole.observations if watched.wants(o.namespace, o.key))
    assert len(kept) < len(whole.observations)
    assert run(rules, whole, now, exemptions, stored_first_seen) == expected
    assert run(rules, replace(whole, observations=kept), now, exemptions, stored_first_seen) == (
        expected
    )


def test_case_ids_are_unique() -> None:
    ids = [p.id for p in RULE1 + RULE2 + RULE3 + RULE4 + RULE5]
    assert len(ids) == len(set(ids))


def test_in_scope_states_are_every_state_but_not_applicable() -> None:
    assert frozenset({"exempt", "action_required", "non_compliant", "compliant", "unknown"}) == (
        IN_SCOPE_STATES
    )


def test_exemptions_accept_any_iterable() -> None:
    windows = iter([ExemptionWindow(7, jul(3), jul(8))])
    result = evaluate(BASE_RULES, device(), now=NOW, exemptions=windows)
    assert (result.state, result.valid_until) == (S.EXEMPT, jul(8))


# ---------------------------------------------------------------------------------------------
# `since` is "the logical instant the state began" (docs/architecture.md) and `valid_until` "the next
# instant the state may change without new facts": exemption windows and expiring proofs bound both.


@pytest.mark.parametrize(
    ("dev", "now", "start", "expected"),
    [
        pytest.param(
            device(*STILL_PRESENT),
            NOW,
            jul(8),
            replace(ACTION_REQUIRED_BEFORE_RELEASE, valid_until=jul(8)),
            id="rule2-action_required-valid-until-exemption-start-before-due",
        ),
        pytest.param(
            device(*STILL_PRESENT),
            NOW,
            jul(12),
            ACTION_REQUIRED_BEFORE_RELEASE,
            id="rule2-action_required-valid-until-due-before-exemption-start",
        ),
        pytest.param(
            device(seen(jun(28), jul(11)), covered(jul(11))),
            jul(12),
            jul(14),
            Evaluation(
                S.NON_COMPLIANT,
                since=DEADLINE,
                due=DEADLINE,
                first_seen=jun(28),
                reasons=(PRESENT,),
                valid_until=jul(14),
            ),
            id="rule2-non_compliant-valid-until-exemption-start",
        ),
        pytest.param(
            device(covered(jul(4))),
            NOW,
            jul(7),
            Evaluation(S.COMPLIANT, since=RELEASE, reasons=PROVEN, valid_until=jul(7)),
            id="rule2-compliant-valid-until-exemption-start-before-expiry",
        ),
        pytest.param(
            device(),
            NOW,
            jul(8),
            replace(UNKNOWN_NO_FACTS, valid_until=jul(8)),
            id="rule2-unknown-valid-until-exemption-start",
        ),
    ],
)
def test_rule2_valid_until_includes_a_future_exemption_start(dev, now, start, expected):
    result = evaluate(BASE_RULES, dev, now=now, exemptions=[ExemptionWindow(7, start, jul(20))])
    assert result == expected


@pytest.mark.parametrize(
    ("dev", "now", "window", "expected"),
    [
        pytest.param(
            device(seen(jun(28), jul(12)), covered(jul(12))),
            jul(12, 12),
            ExemptionWindow(7, jun(30), jul(12)),
            Evaluation(
                S.ACTION_REQUIRED,
                since=jul(12),
                due=jul(13),
                first_seen=jun(28),
                reasons=(PRESENT,),
                valid_until=jul(13),
            ),
            id="rule2-action_required-since-window-end",
        ),
        pytest.param(
            device(seen(jun(28), jul(12)), covered(jul(12))),
            jul(12, 12),
            ExemptionWindow(7, jun(30), jul(12, 12)),
            Evaluation(
                S.ACTION_REQUIRED,
                since=jul(12, 12),
                due=jul(13, 12),
                first_seen=jun(28),
                reasons=(PRESENT,),
                valid_until=jul(13, 12),
            ),
            id="rule2-action_required-window-ends-exactly-now",
        ),
        pytest.param(
            device(covered(jul(3))),
            NOW,
            ExemptionWindow(7, jul(2), jul(4)),
            Evaluation(S.COMPLIANT, since=jul(4), reasons=PROVEN, valid_until=jul(10)),
            id="rule2-compliant-since-window-end",
        ),
        pytest.param(
            device(),
            NOW,
            ExemptionWindow(7, jul(2), jul(3)),
            replace(UNKNOWN_NO_FACTS, since=jul(3)),
            id="rule2-unknown-since-window-end",
        ),
        pytest.param(
            device(covered(jul(4))),
            jul(12),
            ExemptionWindow(7, jul(2), jul(3)),
            replace(UNKNOWN_NO_FACTS, since=jul(11)),
            id="rule2-unknown-since-proof-expiry-after-window-end",
        ),
    ],
)
def test_rule2_since_after_an_exemption_ended_is_its_end(dev, now, window, expected):
    assert evaluate(BASE_RULES, dev, now=now, exemptions=[window]) == expected


def test_rule2_since_of_overlapping_exemptions_is_the_earliest_active_start() -> None:
    windows = [ExemptionWindow(1, jul(3), jul(8)), ExemptionWindow(2, jul(4), jul(15))]
    assert evaluate(BASE_RULES, device(), now=NOW, exemptions=windows) == Evaluation(
        S.EXEMPT,
        since=jul(3),
        reasons=("exemption:2", "underlying:unknown", UNVERIFIED),
        valid_until=jul(15),
    )


@pytest.mark.parametrize(
    ("windows", "now", "since", "until"),
    [
        pytest.param(
            [(1, jul(2), jul(6)), (2, jul(6), jul(15))], jul(8), jul(2), jul(15), id="renewal"
        ),
        pytest.param(
            [(1, jul(2), jul(6)), (2, jul(6), jul(15))],
            jul(3),
            jul(2),
            jul(15),
            id="before-renewal",
        ),
        pytest.param(
            [(1, jul(2), jul(6)), (2, jul(4), jul(9)), (3, jul(9), jul(12))],
            jul(10),
            jul(2),
            jul(12),
            id="overlap-then-touch",
        ),
        pytest.param(
            [(1, jul(2), jul(5)), (2, jul(6), jul(15))], jul(8), jul(6), jul(15), id="a-gap-splits"
        ),
        pytest.param(
            [(1, jul(2), jul(20)), (2, jul(4), jul(6))], jul(5), jul(2), jul(20), id="nested"
        ),
    ],
)
def test_rule2_touching_or_overlapping_exemptions_are_one_exempt_period(
    windows, now, since, until
) -> None:
    exemptions = [ExemptionWindow(i, start, end) for i, start, end in windows]
    result = evaluate(BASE_RULES, device(), now=now, exemptions=exemptions)
    assert (result.state, result.since, result.valid_until) == (S.EXEMPT, since, until)


@pytest.mark.parametrize(
    ("dev", "expected"),
    [
        pytest.param(
            device(
                covered(jul(1), feed=CHECK, value=TIKTOK),
                covered(jul(3), feed=CHECK, value=LITE),
            ),
            Evaluation(S.UNKNOWN, since=jul(8), reasons=(UNVERIFIED, UNVERIFIED_LITE)),
            id="rule5-unknown-two-expired-proofs-since-first-expiry",
        ),
        pytest.param(
            device(
                covered(jul(3), feed=CHECK, value=LITE),
                covered(jul(6), feed=CHECK, value=TIKTOK),
            ),
            Evaluation(S.UNKNOWN, since=jul(10), reasons=(UNVERIFIED_LITE,)),
            id="rule5-unknown-one-expired-one-fresh-since-its-expiry",
        ),
        pytest.param(
            device(covered(jul(3), feed=CHECK, value=LITE)),
            Evaluation(S.UNKNOWN, since=RELEASE, reasons=(UNVERIFIED, UNVERIFIED_LITE)),
            id="rule5-unknown-one-identifier-never-proven-since-release",
        ),
    ],
)
def test_rule5_unknown_since_is_when_compliance_ended(dev, expected):
    assert evaluate(policy(android(), android(LITE)), dev, now=jul(12)) == expected
