"""The gate's rule for who asks and what they get (`usecases.gate.answer`), one test per row of
the table in docs/gates.md ("Who is asking", "Webmail"), over facts held in memory."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pytest

from appwarden.access.gate import GateConfig, parse_gate_request
from appwarden.access.index import DecisionRef, DeviceRef, PersonRef
from appwarden.usecases.gate import BlockingDevice, GatePolicy, answer, problem_body
from appwarden.vocabulary import Decision

EAS = "/Microsoft-Server-ActiveSync"
CAROL = PersonRef(1, "carol@example.com")
BOB = PersonRef(2, "bob@example.com")
NAMES = {
    "carol@example.com": [CAROL],
    "example\\carol": [CAROL],
    "bob@example.com": [BOB],
    "example\\bob": [BOB],
    "shared@example.com": [CAROL, BOB],
}
DEFAULTS = GatePolicy()
NGINX = GateConfig.for_proxy("nginx")
DENIED = DecisionRef(Decision.DENY, None, ("tiktok-mobile-email",))
ALLOWED = DecisionRef(Decision.ALLOW, None, ())


@dataclass
class Facts:
    """carol's phone C1 is denied for email and webmail; bob's phone B1 is allowed."""

    devices: dict[str, DeviceRef] = field(
        default_factory=lambda: {"C1": DeviceRef(10, CAROL), "B1": DeviceRef(20, BOB)}
    )
    decisions: dict[int, DecisionRef] = field(default_factory=lambda: {10: DENIED, 20: ALLOWED})

    def people(self, name: str) -> Sequence[PersonRef]:
        return NAMES.get(name, [])

    def device(self, namespace: str, value: str) -> DeviceRef | None:
        return self.devices.get(value)

    def device_for_anonymous(self, namespace: str, value: str) -> DeviceRef | None:
        return self.devices.get(value)

    def decision(self, device: DeviceRef, resource: str) -> DecisionRef:
        return self.decisions[device.id]

    def devices_of(self, person: PersonRef) -> Iterable[DeviceRef]:
        return [d for d in self.devices.values() if d.owner == person]

    def describe(self, device: DeviceRef, policies: tuple[str, ...]) -> BlockingDevice:
        return BlockingDevice("android", "phone", "…C1", policies)


def basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:pw".encode()).decode()


def ask(
    uri: str,
    user: str | None = None,
    *,
    method: str = "GET",
    policy: GatePolicy = DEFAULTS,
    config: GateConfig = NGINX,
    headers: dict[str, str] | None = None,
) -> tuple[str, str]:
    sent = {"x-original-uri": uri, "x-original-method": method, **(headers or {})}
    if user is not None:
        sent["authorization"] = basic(user)
    result = answer(Facts(), parse_gate_request(sent, "/gate/forward", config), policy)
    return str(result.decision), result.reason


def sync(device: str, user: str | None = None) -> str:
    return f"{EAS}?Cmd=Sync&DeviceId={device}" + (f"&User={user}" if user else "")


@pytest.mark.parametrize(
    ("uri", "user", "expected"),
    [
        # no credentials: a known device is judged by itself, an unseen one passes
        (sync("C1"), None, ("deny", "decided")),
        (sync("B1"), None, ("allow", "decided")),
        (sync("NEW"), None, ("allow", "unauthenticated")),
        (sync("NEW", "carol"), None, ("allow", "unauthenticated")),
        # a person: their own device's decision; someone else's device is refused
        (sync("B1"), "EXAMPLE\\bob", ("allow", "decided")),
        (sync("B1", "bob"), "EXAMPLE\\bob", ("allow", "decided")),
        (sync("C1"), "EXAMPLE\\bob", ("deny", "user_is_not_the_owner")),
        # unseen devices: not blocked / blocked / unknown person / ambiguous
        (sync("NEW"), "bob@example.com", ("allow", "unseen_device")),
        (sync("NEW"), "EXAMPLE\\carol", ("deny", "unseen_device_of_blocked_person")),
        (sync("NEW"), "carol+x@example.com", ("deny", "unseen_device_of_unknown_person")),
        (sync("NEW"), "carol@example.com.", ("deny", "unseen_device_of_unknown_person")),
        (sync("NEW"), "carol", ("deny", "unseen_device_of_unknown_person")),
        (sync("NEW"), "shared@example.com", ("deny", "ambiguous_identity")),
        (sync("B1"), "shared@example.com", ("deny", "ambiguous_identity")),
        # User= must agree with who signed in, and be given once
        (sync("NEW", "carol"), "EXAMPLE\\bob", ("deny", "user_mismatch")),
        (sync("NEW", "nobody"), "EXAMPLE\\bob", ("deny", "user_mismatch")),
        (
            sync("NEW", "carol@example.com"),
            "EXAMPLE\\carol",
            ("deny", "unseen_device_of_blocked_person"),
        ),
        (sync("NEW", "bob") + "&user=carol", "EXAMPLE\\bob", ("deny", "ambiguous_user")),
        # no DeviceId: OPTIONS passes, anything else is refused
        (EAS, None, ("deny", "no_device_id")),
        (EAS + "?Cmd=Sync&User=bob", "EXAMPLE\\bob", ("deny", "no_device_id")),
        ("/ecp/", "EXAMPLE\\carol", ("allow", "not_gated")),
    ],
)
def test_who_asks_and_what_they_get(uri: str, user: str | None, expected: tuple[str, str]) -> None:
    assert ask(uri, user) == expected


def test_options_before_the_first_sync_passes() -> None:
    assert ask(EAS, method="OPTIONS") == ("allow", "options")
    assert ask(EAS, "EXAMPLE\\carol", method="OPTIONS") == ("allow", "options")


def test_unusable_or_doubled_credentials_are_refused() -> None:
    assert ask(sync("B1"), headers={"authorization": "NTLM abc"}) == (
        "deny",
        "unsupported_credentials",
    )
    assert ask(sync("NEW"), headers={"authorization": "Bearer opaque"}) == (
        "deny",
        "unreadable_credentials",
    )
    doubled = parse_gate_request(
        {"x-original-uri": sync("NEW"), "authorization": basic("EXAMPLE\\bob")},
        "/gate/forward",
        GateConfig.for_proxy("nginx"),
        duplicated={"authorization"},
    )
    assert answer(Facts(), doubled, GatePolicy()).reason == "duplicate_credentials"


def test_the_unseen_device_settings() -> None:
    lenient = GatePolicy(
        unseen_device="deny",
        unseen_device_of_blocked_person="allow",
        unseen_device_of_unknown_person="allow",
    )
    assert ask(sync("NEW"), "EXAMPLE\\bob", policy=lenient) == ("deny", "unseen_device")
    assert ask(sync("NEW"), "EXAMPLE\\carol", policy=lenient) == (
        "allow",
        "unseen_device_of_blocked_person",
    )
    assert ask(sync("NEW"), "nobody@x", policy=lenient) == (
        "allow",
        "unseen_device_of_unknown_person",
    )


def test_webmail_by_device_header_judges_only_identified_devices() -> None:
    config = GateConfig.for_proxy("nginx", device_header="X-Client-Cert")
    assert ask("/owa/", "EXAMPLE\\carol", config=config) == ("allow", "no_device")
    assert ask("/owa/", headers={"x-client-cert": "C1"}, config=config) == ("deny", "decided")


def test_webmail_by_person_denies_a_blocked_persons_browser() -> None:
    person = GatePolicy(webmail_rule="person")
    config = GateConfig.for_proxy("nginx", user_header="X-Forwarded-User")
    header = {"x-forwarded-user": "EXAMPLE\\carol"}
    assert ask("/owa/", headers=header, policy=person, config=config) == ("deny", "person_blocked")
    bob = {"x-forwarded-user": "EXAMPLE\\bob"}
    assert ask("/owa/", headers=bob, policy=person, config=config) == ("allow", "person")
    assert ask("/owa/", policy=person, config=config) == ("deny", "no_identity")
    nobody = {"x-forwarded-user": "nobody"}
    assert ask("/owa/", headers=nobody, policy=person, config=config) == ("deny", "unknown_person")


def test_a_denial_names_only_the_asking_persons_own_devices() -> None:
    request = parse_gate_request(
        {"x-original-uri": sync("NEW"), "authorization": basic("EXAMPLE\\carol")},
        "/gate/forward",
        GateConfig.for_proxy("nginx"),
    )
    result = answer(Facts(), request, GatePolicy(portal_url="https://portal/"))
    body = problem_body(result, GatePolicy(portal_url="https://portal/"))
    assert body["your_blocked_devices"] == [
        {
            "platform": "android",
            "form_factor": "phone",
            "device": "…C1",
            "policies": ["tiktok-mobile-email"],
        }
    ]
    assert result.person is None  # a denial carries no person header
    stranger = answer(
        Facts(),
        parse_gate_request(
            {"x-original-uri": sync("C1"), "authorization": basic("EXAMPLE\\bob")},
            "/gate/forward",
            GateConfig.for_proxy("nginx"),
        ),
        GatePolicy(),
    )
    assert "carol" not in repr(problem_body(stranger, GatePolicy())) + repr(stranger)
