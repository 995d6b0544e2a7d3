"""The gate's answer for one proxied request: a lookup of the materialised decision, guarded
against the ways a device or a person can try to get around a block (docs/gates.md, "Who is
asking" and "Devices appwarden has never seen").

- The person is who the request's credentials (or the proxy's user header) name, matched exactly
  to one person's address, alias or account name. A name that matches several people is refused;
  ActiveSync's `User=` must agree with it.
- A known device gets its decision; with an identity, only its owner may use it.
- Without credentials a known device is judged by itself, and an unseen one passes to the mail
  server, which challenges it (the first request of a modern-auth client carries no token).
- An unseen device of an identified person: `unseen_device` (not blocked),
  `unseen_device_of_blocked_person` (one of their devices is denied: reinstalling the mail app
  mints a new DeviceId, and that must not lift a block), `unseen_device_of_unknown_person`.
- A denial never names anyone but the person asking: no owner, no other person's address.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, Protocol

from sqlalchemy import select

from appwarden.access.breaker import judged_view
from appwarden.access.decide import DecisionResult
from appwarden.access.gate import GateRequest
from appwarden.access.index import DecisionIndex, DecisionRef, DeviceRef, PersonRef
from appwarden.access.models import DecisionRecord
from appwarden.access.service import decide_for
from appwarden.db.uow import UnitOfWork
from appwarden.devices.identifiers import normalise
from appwarden.devices.models import Device, DeviceIdentifier
from appwarden.identity.models import Person
from appwarden.identity.service import people_named
from appwarden.vocabulary import Decision, DeviceNamespace

AllowDeny = Literal["allow", "deny"]
WEBMAIL: Final = "webmail"


@dataclass(frozen=True)
class GatePolicy:
    unseen_device: AllowDeny = "allow"
    unseen_device_of_blocked_person: AllowDeny = "deny"
    unseen_device_of_unknown_person: AllowDeny = "deny"
    # device_header: webmail is judged by the device a request names (a client certificate);
    # person: webmail is denied when any device of the signed-in person is denied for it.
    webmail_rule: Literal["device_header", "person"] = "device_header"
    device_namespace: str = DeviceNamespace.EAS_DEVICE_ID
    portal_url: str = ""


@dataclass(frozen=True, slots=True)
class BlockingDevice:
    """One of the asking person's own devices that blocks them, as their 403 describes it:
    enough for them to recognise it, nothing a stranger could use."""

    platform: str
    form_factor: str
    hint: str  # the last characters of its identifier, "…801E"
    policies: tuple[str, ...]


@dataclass
class GateAnswer:
    decision: Decision
    reason: str
    device: str | None = None  # the device the request named (namespace:value)
    person: str | None = None  # the person asking, when identified (never the owner)
    policies: Sequence[str] = ()
    blocking: tuple[BlockingDevice, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.decision == Decision.ALLOW


def _deny(reason: str, **details: Any) -> GateAnswer:
    return GateAnswer(Decision.DENY, reason, **details)


class NeedStore(Exception):
    """The in-memory copy cannot answer this request with certainty: ask the store."""


class GateFacts(Protocol):
    """Where `answer` reads its facts: the store (`StoreFacts`) or the in-memory copy
    (`IndexFacts`). Both follow the same rules, so the two paths cannot disagree."""

    def people(self, name: str) -> Sequence[PersonRef]:
        """Everyone who answers exactly to a case-folded address, alias or account name."""
        ...

    def device(self, namespace: str, value: str) -> DeviceRef | None: ...

    def device_for_anonymous(self, namespace: str, value: str) -> DeviceRef | None:
        """`device`, for a request without credentials: the mail server answers such a request
        with its own 401 and no mail data whatever the gate says, so "unseen" may come from
        what is already at hand (a current copy knows every device it holds a decision of)
        rather than the store. So a flood of made-up DeviceIds costs a lookup each."""
        ...

    def decision(self, device: DeviceRef, resource: str) -> DecisionRef: ...

    def devices_of(self, person: PersonRef) -> Iterable[DeviceRef]: ...

    def describe(self, device: DeviceRef, policies: tuple[str, ...]) -> BlockingDevice: ...


@dataclass(frozen=True)
class _Asking:
    """The person a request's identity resolved to (None: no credentials at all)."""

    person: PersonRef | None
    identified: bool


def answer(facts: GateFacts, request: GateRequest, policy: GatePolicy) -> GateAnswer:
    if request.problem is not None:
        return _deny(request.problem)
    resource = request.resource
    if resource is None:
        return GateAnswer(Decision.ALLOW, "not_gated")
    asking = _asking(facts, request)
    if isinstance(asking, GateAnswer):
        return asking
    if request.device_id is None:
        return _without_device(facts, request, asking, resource, policy)
    value = normalise(policy.device_namespace, request.device_id)
    label = f"{policy.device_namespace}:{value}"
    lookup = facts.device if asking.identified else facts.device_for_anonymous
    device = lookup(policy.device_namespace, value)
    if device is None:
        return _unseen(facts, asking, resource, policy, label)
    person = asking.person
    if asking.identified and (
        person is None or device.owner is None or device.owner.id != person.id
    ):
        return _deny("user_is_not_the_owner", device=label)
    decided = facts.decision(device, resource)
    return GateAnswer(
        decided.verdict,
        "decided",
        device=label,
        person=person.email if person else None,
        policies=decided.denying,
    )


def _asking(facts: GateFacts, request: GateRequest) -> _Asking | GateAnswer:
    """Who asks, or the refusal: unusable credentials, a name several people answer to, or a
    `User=` that is doubled or names someone else."""
    identity = request.identity
    if identity.problem is not None:
        return _deny(identity.problem)
    if identity.name is None:
        return _Asking(None, identified=False)
    found = facts.people(identity.name)
    if len(found) > 1:
        return _deny("ambiguous_identity")
    person = found[0] if found else None
    if request.user_conflict:
        return _deny("ambiguous_user")
    if request.user is not None and request.user not in _logon_names(identity.name):
        claimed = facts.people(request.user)
        if person is None or len(claimed) != 1 or claimed[0].id != person.id:
            return _deny("user_mismatch")
    return _Asking(person, identified=True)


def _logon_names(name: str) -> tuple[str, ...]:
    """The forms of one signed-in name a client may put in `User=`: as it is, and without its
    domain ([MS-ASHTTP] gives `User=jdoe` for the account `DOMAIN\\jdoe`). Only a check that
    the request does not contradict itself: who asks is still `name`."""
    if "\\" in name:
        return name, name.rsplit("\\", 1)[1]
    if "@" in name:
        return name, name.split("@", 1)[0]
    return (name,)


def _without_device(
    facts: GateFacts, request: GateRequest, asking: _Asking, resource: str, policy: GatePolicy
) -> GateAnswer:
    email = asking.person.email if asking.person else None
    if resource == WEBMAIL:
        if policy.webmail_rule == "device_header":
            return GateAnswer(Decision.ALLOW, "no_device", person=email)
        if asking.person is None:
            return _deny("unknown_person" if asking.identified else "no_identity")
        blocking = _blocking(facts, asking.person, resource)
        if blocking:
            return _deny("person_blocked", policies=_policies(blocking), blocking=blocking)
        return GateAnswer(Decision.ALLOW, "person", person=email)
    if request.method == "OPTIONS":  # [MS-ASHTTP]: sent before the first sync, with no DeviceId
        return GateAnswer(Decision.ALLOW, "options", person=email)
    return _deny("no_device_id")


def _unseen(
    facts: GateFacts, asking: _Asking, resource: str, policy: GatePolicy, label: str
) -> GateAnswer:
    person = asking.person
    if not asking.identified:
        return GateAnswer(Decision.ALLOW, "unauthenticated", device=label)
    if person is None:
        return _unseen_answer(
            policy.unseen_device_of_unknown_person, "unseen_device_of_unknown_person", label
        )
    blocking = _blocking(facts, person, resource)
    if blocking:
        found = _unseen_answer(
            policy.unseen_device_of_blocked_person, "unseen_device_of_blocked_person", label
        )
        found.policies = _policies(blocking)
        found.blocking = blocking if not found.allowed else ()
    else:
        found = _unseen_answer(policy.unseen_device, "unseen_device", label)
    if found.allowed:
        found.person = person.email
    return found


def _unseen_answer(setting: AllowDeny, reason: str, label: str) -> GateAnswer:
    return GateAnswer(Decision(setting), reason, device=label)


def _blocking(facts: GateFacts, person: PersonRef, resource: str) -> tuple[BlockingDevice, ...]:
    """The person's own devices denied for `resource`."""
    found = []
    for device in facts.devices_of(person):
        decided = facts.decision(device, resource)
        if decided.decision == Decision.DENY:
            found.append(facts.describe(device, decided.denying))
    return tuple(found)


def _policies(blocking: Iterable[BlockingDevice]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p for device in blocking for p in device.policies))


def _denying(reasons: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    return tuple(str(r["policy"]) for r in reasons if r.get("effect") == "deny")


def _hint(value: str | None) -> str:
    return f"…{value[-4:]}" if value else "…"


class StoreFacts:
    """The facts as the store holds them, read in the caller's unit of work."""

    def __init__(self, uow: UnitOfWork, namespace: str = DeviceNamespace.EAS_DEVICE_ID) -> None:
        self.uow = uow
        self.namespace = namespace
        # decisions computed because none was ever materialised (a laptop never decided for
        # email): the gate may remember them while nothing is committed (`web.gate`)
        self.computed: list[tuple[int, str, DecisionRef]] = []

    def people(self, name: str) -> Sequence[PersonRef]:
        session = self.uow.session
        refs = []
        for person_id in people_named(self.uow, name):
            person = session.get(Person, person_id)
            assert person is not None
            refs.append(PersonRef(person.id, person.email))
        return refs

    def device(self, namespace: str, value: str) -> DeviceRef | None:
        session = self.uow.session
        device_id = session.scalars(
            select(DeviceIdentifier.device_id).where(
                DeviceIdentifier.namespace == namespace, DeviceIdentifier.value == value
            )
        ).first()
        if device_id is None:
            return None
        device = session.get(Device, device_id)
        assert device is not None
        return self._ref(device)

    def device_for_anonymous(self, namespace: str, value: str) -> DeviceRef | None:
        return self.device(namespace, value)

    def decision(self, device: DeviceRef, resource: str) -> DecisionRef:
        session = self.uow.session
        row = session.get(Device, device.id)
        assert row is not None
        if session.get(DecisionRecord, (device.id, resource)) is None:
            result = computed_decision(self.uow, row, resource, self.uow.now)
            found = DecisionRef(result.decision.value, result.valid_until, _denying(result.reasons))
            self.computed.append((device.id, resource, found))
            return found
        decision, reasons = current_decision(self.uow, row, resource, self.uow.now)
        return DecisionRef(decision.value, None, tuple(_denying(reasons)))

    def devices_of(self, person: PersonRef) -> Iterable[DeviceRef]:
        devices = self.uow.session.scalars(
            select(Device).where(Device.owner_id == person.id).order_by(Device.id)
        )
        return [self._ref(d) for d in devices]

    def describe(self, device: DeviceRef, policies: tuple[str, ...]) -> BlockingDevice:
        row = self.uow.session.get(Device, device.id)
        assert row is not None
        value = self.uow.session.scalars(
            select(DeviceIdentifier.value)
            .where(DeviceIdentifier.device_id == device.id)
            .order_by(DeviceIdentifier.namespace != self.namespace, DeviceIdentifier.id)
        ).first()
        return BlockingDevice(row.platform, row.form_factor, _hint(value), policies)

    def _ref(self, device: Device) -> DeviceRef:
        owner = self.uow.session.get(Person, device.owner_id) if device.owner_id else None
        return DeviceRef(device.id, PersonRef(owner.id, owner.email) if owner else None)


def current_decision(
    uow: UnitOfWork, device: Device, resource: str, now: datetime
) -> tuple[Decision, list[dict[str, Any]]]:
    """The materialised decision while it is valid, then the one prepared for when it ends
    (`DecisionRecord.next_*`); computed when it never was materialised or neither holds any
    more and the worker has not caught up yet."""
    record = uow.session.get(DecisionRecord, (device.id, resource))
    if record is not None:
        if record.valid_until is None or now < record.valid_until:
            return Decision(record.decision), list(record.reasons)
        upcoming = record.next_valid_until
        if record.next_decision is not None and (upcoming is None or now < upcoming):
            return Decision(record.next_decision), list(record.next_reasons or ())
    result = computed_decision(uow, device, resource, now)
    return result.decision, list(result.reasons)


def computed_decision(
    uow: UnitOfWork, device: Device, resource: str, now: datetime
) -> DecisionResult:
    """The decision evaluated now, as the breaker lets a reader see it (nothing written)."""
    return judged_view(uow, device, resource, now, decide_for(uow, device, resource, now))


class IndexFacts:
    """The facts from the process's in-memory copy (`access.index`).

    `authoritative=False` (the store is up): the copy answers only from what it positively
    knows to be current; anything it does not know, or a decision whose `valid_until` has come,
    raises NeedStore, so the answer is always the store's. `authoritative=True` (the store is
    down, `on_store_failure: last_known`): the copy's last known state is the answer.

    `complete=True`: the caller knows the copy to be loaded and current (`LiveIndex.fresh`), so
    it holds every identifier of its namespaces and every device's owner, kind and first such
    identifier: an identifier it does not know is one the store does not have, and a person's
    devices in it are all of their devices. What it still cannot answer (NeedStore): a name it
    does not know (people who own no device are loaded only in full), a device without a
    current materialised decision for the resource, and a blocking device with no identifier
    in the gate's namespace (the store's 403 shows one of another namespace).

    `not_found`: identifiers and names the store said it does not know, moments ago
    (`web.gate.NotFoundCache`): answered as unknown without asking again. `computed`: a
    decision the store computed for a device that has none materialised for the resource,
    while nothing has been committed since (`web.gate.Gate.computed`).

    What an answer read holds while the copy does not change and until `expires` (the earliest
    `valid_until` among the decisions it read; None: no such end), unless it also read one of
    those two, which change with time and other threads' work: then `lasting` is False.
    """

    def __init__(
        self,
        index: DecisionIndex,
        now: datetime,
        *,
        authoritative: bool,
        complete: bool = False,
        namespace: str = DeviceNamespace.EAS_DEVICE_ID,
        not_found: RememberedMisses | None = None,
        computed: Callable[[int, str], DecisionRef | None] | None = None,
    ) -> None:
        self.index = index
        self.now = now
        self.authoritative = authoritative
        self.complete = complete and namespace in index.namespaces
        self.namespace = namespace
        self.not_found = not_found
        self.computed = computed
        self.lasting = True
        self.expires: datetime | None = None

    def people(self, name: str) -> Sequence[PersonRef]:
        found = self.index.people_named(name)
        if found is not None:
            return found
        if self.authoritative or self._known_missing(name):
            return ()
        raise NeedStore

    def device(self, namespace: str, value: str) -> DeviceRef | None:
        found = self.index.device(namespace, value)
        if found is not None or self.authoritative:
            return found
        if self.complete and namespace in self.index.namespaces:
            return None
        if self._known_missing((namespace, value)):
            return None
        raise NeedStore

    def _known_missing(self, key: object) -> bool:
        if self.not_found is not None and self.not_found.knows(key):
            self.lasting = False
            return True
        return False

    def device_for_anonymous(self, namespace: str, value: str) -> DeviceRef | None:
        return self.index.device(namespace, value)

    def decision(self, device: DeviceRef, resource: str) -> DecisionRef:
        known = self.index.decision(device.id, resource)
        if known is None and self.computed is not None:
            known = self.computed(device.id, resource)
            self.lasting = False
        current = known.at(self.now) if known is not None else None
        if current is not None:
            until = current.valid_until
            if until is not None and (self.expires is None or until < self.expires):
                self.expires = until
            return current
        if self.authoritative:
            return known or _NEVER_DECIDED  # the last known, however old
        raise NeedStore

    def devices_of(self, person: PersonRef) -> Iterable[DeviceRef]:
        if not (self.authoritative or self.complete):
            raise NeedStore  # the copy may not know every device of theirs
        return [DeviceRef(d, person) for d in self.index.devices_of(person.id)]

    def describe(self, device: DeviceRef, policies: tuple[str, ...]) -> BlockingDevice:
        described = self.index.describe(device.id, self.namespace)
        if described is not None:
            platform, form_factor, value = described
            return BlockingDevice(platform, form_factor, _hint(value), policies)
        if not self.authoritative:
            raise NeedStore  # the store's 403 names it by an identifier the copy does not hold
        return BlockingDevice(
            "unknown", "unknown", _hint(self.index.identifier_of(device.id)), policies
        )


class RememberedMisses(Protocol):
    def knows(self, key: object) -> bool:
        """Whether the store said `key` (an identifier or a name) is unknown, moments ago."""
        ...


_NEVER_DECIDED: Final = DecisionRef(Decision.ALLOW.value, None, ())  # nothing ever applied to it


EXPLANATIONS: Final[Mapping[str, str]] = {
    "decided": "A policy requires a change on this device before it can reach this resource.",
    "user_is_not_the_owner": "This device is registered to a different account.",
    "no_device_id": "The request does not identify a device.",
    "unseen_device_of_blocked_person": (
        "Another of your devices is blocked; new devices are blocked too until it is fixed or "
        "retired. It is listed below."
    ),
    "unseen_device_of_unknown_person": "The account is not known to appwarden.",
    "unseen_device": "This device is not known to appwarden.",
    "person_blocked": "One of your devices is blocked, and webmail with it. It is listed below.",
    "no_identity": "Webmail needs a signed-in account.",
    "unknown_person": "The account is not known to appwarden.",
    "ambiguous_identity": "The account name matches more than one person; ask your IT team.",
    "ambiguous_user": "The request names its user twice.",
    "user_mismatch": "The request's User= does not match the signed-in account.",
    "duplicate_credentials": "The request carries more than one Authorization header.",
    "duplicate_user_header": "The proxy's user header was sent more than once.",
    "invalid_user_header": "The proxy's user header is not a usable account name.",
    "unreadable_credentials": "The request's credentials name no account appwarden can read.",
    "unsupported_credentials": "Only Basic and Bearer credentials are understood.",
    "conflicting_uri": "The proxy's request names two different original URIs.",
    "conflicting_method": "The proxy's request names two different original methods.",
    "no_original_uri": "The proxy did not say which request it asks about.",
    "store_unavailable": "appwarden cannot reach its store; try again in a minute.",
}

_REMEDY: Final = (
    "Remove the banned app from that device (or retire the device in the portal if you no "
    "longer use it); access returns within a minute of its next check-in."
)


def problem_body(answer_: GateAnswer, policy: GatePolicy) -> dict[str, Any]:
    """The explanation a denied person (or their mail client's admin) reads: the policy, the
    portal, what to do — about the asking person's own devices only."""
    body: dict[str, Any] = {
        "type": "https://appwarden.dev/problems/access-denied",
        "title": "Access denied by appwarden",
        "status": 403,
        "detail": EXPLANATIONS.get(answer_.reason, answer_.reason),
        "reason": answer_.reason,
        "device": answer_.device,
        "policies": list(answer_.policies),
        "portal_url": policy.portal_url,
    }
    if answer_.blocking:
        body["your_blocked_devices"] = [
            {
                "platform": d.platform,
                "form_factor": d.form_factor,
                "device": d.hint,
                "policies": list(d.policies),
            }
            for d in answer_.blocking
        ]
        body["what_to_do"] = _REMEDY
    return body
