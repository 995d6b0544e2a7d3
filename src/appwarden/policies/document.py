"""The policy document `appwarden/v1` (docs/policy.md): parse, validate, resolve defaults.

`parse_policy` turns YAML or JSON text into a `PolicyDocument` or raises `InvalidInput` listing
every problem at once, each located as `FILE:LINE:COL` with a message that says what was expected.
`PolicyDocument.canonical()` is the fully resolved form that approvals hash, so two documents that
mean the same thing give the same canonical value whatever their formatting or key order.

Pure: standard library and the bottom-layer modules only; no I/O beyond the text it is given.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from appwarden.documents import Document, Path, load_document
from appwarden.errors import InvalidInput, Problem
from appwarden.timeutil import format_duration, iso, parse_duration, parse_instant
from appwarden.vocabulary import AppNamespace, EvidenceKind, FormFactor, Ownership, Platform

API_VERSION = "appwarden/v1"
KIND = "AppPolicy"

DEFAULT_GRACE = timedelta(days=1)
DEFAULT_MAX_EVIDENCE_AGE = timedelta(days=7)
DEFAULT_EVIDENCE: tuple[str, ...] = (
    EvidenceKind.INVENTORY.value,
    EvidenceKind.TARGETED_CHECK.value,
)
DEFAULT_UNKNOWN = "allow"
DEFAULT_ANNOUNCE_TEMPLATE = "mandatory-removal"
DEFAULT_SEND_AT = "09:00"
DEFAULT_RESOURCES: tuple[str, ...] = ("email", "webmail")

# Only these kinds can prove an app absent; `managed_only` and `none` never can
# (docs/architecture.md, state rule 4).
ABSENCE_EVIDENCE: tuple[str, ...] = (
    EvidenceKind.ATTESTATION.value,
    EvidenceKind.INVENTORY.value,
    EvidenceKind.TARGETED_CHECK.value,
)
UNKNOWN_CHOICES: tuple[str, ...] = ("allow", "deny")

# Limits that keep hostile or mistaken input out of notices, logs and the database.
MAX_TEXT_CHARS = 4000  # free text shown to people: remediation, alternatives, rationale
MAX_TITLE_CHARS = 200  # the title becomes an email subject line
MAX_NAME_CHARS = 128  # app slugs, template names, group names, signal ids
MAX_EMAIL_CHARS = 254  # the longest address SMTP can carry (RFC 5321)
MAX_IDENTIFIER_CHARS = 1024  # app identifier values (bundle ids, packages, program names, domains)
# Durations beyond this are certainly mistakes, and bounding them keeps `deadline + grace` in range.
MAX_DURATION = timedelta(days=3650)

_POLICY_ID = re.compile(r"[a-z0-9-]{3,64}")
# Slugs name catalog entries and template files: lower-case, no slashes, so never a path.
_SLUG = re.compile(r"[a-z0-9][a-z0-9._-]*")
_SEND_AT = re.compile(r"(?:[01]\d|2[0-3]):[0-5]\d")
_BARE_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_NAIVE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

# Stands in for a value that failed validation; never escapes, because any problem raises.
_INVALID_INSTANT = datetime(1970, 1, 1, tzinfo=UTC)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class IdentifierRef:
    """An app identifier named directly in the policy, beside or instead of catalog slugs."""

    namespace: str
    value: str


@dataclass(frozen=True, slots=True)
class PeopleScope:
    """Which people's devices are in scope. `include_groups` None means everybody."""

    include_groups: tuple[str, ...] | None
    exclude_groups: tuple[str, ...]
    exclude: tuple[str, ...]  # lower-cased email addresses


@dataclass(frozen=True, slots=True)
class Scope:
    """Every listed key must match a device; None means the key was omitted and matches all."""

    platforms: tuple[str, ...] | None
    form_factors: tuple[str, ...] | None
    ownership: tuple[str, ...] | None
    access: tuple[str, ...] | None
    people: PeopleScope | None


@dataclass(frozen=True, slots=True)
class Notices:
    announce_template: str
    reminders: tuple[timedelta, ...]  # offsets before the deadline, longest first
    send_at: str  # "HH:MM", the recipient's local time
    blocked: bool
    restored: bool


@dataclass(frozen=True, slots=True)
class Rationale:
    text: str
    signals: tuple[str, ...]  # in the order the author cites them


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    """A valid `appwarden/v1` document with every default resolved.

    Collections whose order carries no meaning are stored sorted, so two equivalent documents
    compare equal; `rationale.signals` keeps the author's order because it is how they are cited.
    """

    policy_id: str
    title: str
    apps: tuple[str, ...]
    identifiers: tuple[IdentifierRef, ...]
    scope: Scope
    deadline: datetime  # aware, UTC
    grace: timedelta
    max_evidence_age: timedelta
    evidence: tuple[str, ...]
    unknown: str
    deny: tuple[str, ...]  # spec.enforcement.deny
    notices: Notices
    allowed_alternatives: str | None
    remediation: str | None
    rationale: Rationale | None

    def canonical(self) -> dict[str, Any]:
        """The fully resolved document as JSON-ready values in a fixed key order, for hashing."""
        scope = self.scope
        people = scope.people
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"id": self.policy_id, "title": self.title},
            "spec": {
                "apps": list(self.apps),
                "identifiers": [
                    {"namespace": i.namespace, "value": i.value} for i in self.identifiers
                ],
                "scope": {
                    "platforms": _list_or_none(scope.platforms),
                    "form_factors": _list_or_none(scope.form_factors),
                    "ownership": _list_or_none(scope.ownership),
                    "access": _list_or_none(scope.access),
                    "people": None
                    if people is None
                    else {
                        "include_groups": _list_or_none(people.include_groups),
                        "exclude_groups": list(people.exclude_groups),
                        "exclude": list(people.exclude),
                    },
                },
                "deadline": iso(self.deadline),
                "grace": format_duration(self.grace),
                "max_evidence_age": format_duration(self.max_evidence_age),
                "evidence": list(self.evidence),
                "unknown": self.unknown,
                "enforcement": {"deny": list(self.deny)},
                "notices": {
                    "announce": {"template": self.notices.announce_template},
                    "reminders": [format_duration(r) for r in self.notices.reminders],
                    "send_at": self.notices.send_at,
                    "blocked": self.notices.blocked,
                    "restored": self.notices.restored,
                },
                "allowed_alternatives": self.allowed_alternatives,
                "remediation": self.remediation,
                "rationale": None
                if self.rationale is None
                else {"text": self.rationale.text, "signals": list(self.rationale.signals)},
            },
        }


def parse_policy(
    text: str | bytes,
    filename: str,
    *,
    known_apps: Collection[str] | None = None,
    known_resources: Collection[str] = DEFAULT_RESOURCES,
) -> PolicyDocument:
    """Parse and validate an `appwarden/v1` document (YAML or JSON).

    `known_apps` is the catalog's slugs; when None, slugs are checked only for shape (the caller
    resolves them later). Raises InvalidInput whose `.problems` lists every problem found.
    """
    document = load_document(text, filename)
    return _PolicyReader(document, known_apps, known_resources).read()


def _list_or_none(values: tuple[str, ...] | None) -> list[str] | None:
    return None if values is None else list(values)


def _label(path: Path) -> str:
    """`spec.scope.platforms[2]`: how messages name a place in the document."""
    label = ""
    for part in path:
        label += f"[{part}]" if isinstance(part, int) else (f".{part}" if label else part)
    return label or "document"


def _quote(text: str) -> str:
    """`repr` of text, cut short so a hostile value cannot flood an error message."""
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _describe(value: Any) -> str:
    """What was found instead, in words an author recognises."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {_quote(value)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__  # pragma: no cover - the loader yields only the types above


def _one_of(choices: Collection[str]) -> str:
    return "expected one of " + ", ".join(sorted(choices))


def _suggestion(value: str, choices: Collection[str]) -> str:
    """` (did you mean 'ios'?)` when a choice is close, else nothing."""
    by_lower = {c.lower(): c for c in choices}
    match = by_lower.get(value.lower())
    if match is None:
        close = difflib.get_close_matches(value.lower(), list(by_lower), n=1, cutoff=0.75)
        match = by_lower[close[0]] if close else None
    return f" (did you mean {match!r}?)" if match is not None else ""


def _location_key(problem: Problem) -> tuple[int, int]:
    """Sort key putting problems in document order; unlocated ones first."""
    parts = problem.where.rsplit(":", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return int(parts[1]), int(parts[2])
    return 0, 0


class _PolicyReader:
    """Walks the loaded value once, recording every problem instead of stopping at the first.

    Each check returns a usable stand-in when it fails, so the walk can go on and find the rest;
    `read` raises before any stand-in could reach a PolicyDocument.
    """

    def __init__(
        self,
        document: Document,
        known_apps: Collection[str] | None,
        known_resources: Collection[str],
    ) -> None:
        self.document = document
        self.known_apps = known_apps
        self.known_resources = tuple(known_resources)
        self.problems: list[Problem] = []

    # -- reporting ---------------------------------------------------------------------------

    def fail(self, path: Path, message: str, *, at: Path | None = None) -> None:
        """Record a problem about `path`, located at `at` (default: `path` itself)."""
        where = self.document.where(path if at is None else at)
        self.problems.append(Problem(where, f"{_label(path)}: {message}"))

    def checked(self, check: Callable[[], T]) -> tuple[T, bool]:
        """Run a check and say whether it passed (found no new problem)."""
        before = len(self.problems)
        result = check()
        return result, len(self.problems) == before

    # -- the document ------------------------------------------------------------------------

    def read(self) -> PolicyDocument:
        root = self.mapping(
            (),
            self.document.value,
            required={
                "apiVersion": f"which must be {API_VERSION!r}",
                "kind": f"which must be {KIND!r}",
                "metadata": "a mapping with id and title",
                "spec": "a mapping",
            },
        )
        if "apiVersion" in root:
            self.constant(("apiVersion",), root["apiVersion"], API_VERSION)
        if "kind" in root:
            self.constant(("kind",), root["kind"], KIND)
        # A missing section was reported above; checking a stand-in would only repeat that.
        policy_id, title = ("", "")
        if "metadata" in root:
            policy_id, title = self.metadata(("metadata",), root["metadata"])
        policy = self.spec(("spec",), root["spec"], policy_id, title) if "spec" in root else None
        if self.problems or policy is None:
            problems = sorted(self.problems, key=_location_key)
            raise InvalidInput(
                f"{self.document.filename}: {len(problems)} problem(s) in the policy document",
                problems=problems,
            )
        return policy

    def metadata(self, path: Path, value: Any) -> tuple[str, str]:
        fields = self.mapping(
            path,
            value,
            required={"id": "a slug of 3 to 64 characters", "title": "a one-line title"},
        )
        policy_id = ""
        if "id" in fields:
            policy_id = self.string((*path, "id"), fields["id"], max_chars=64)
            if policy_id and not _POLICY_ID.fullmatch(policy_id):
                self.fail(
                    (*path, "id"),
                    "expected 3 to 64 lower-case letters, digits or '-', "
                    f"got {_describe(fields['id'])}",
                )
        title = ""
        if "title" in fields:
            title = self.string((*path, "title"), fields["title"], max_chars=MAX_TITLE_CHARS)
        return policy_id, title

    def spec(self, path: Path, value: Any, policy_id: str, title: str) -> PolicyDocument:
        fields = self.mapping(
            path,
            value,
            required={
                "deadline": "an RFC 3339 time with an offset, like 2020-07-10T23:59:59-07:00",
                "enforcement": "a mapping with deny: a list of resources, which may be empty",
            },
            optional=(
                "apps",
                "identifiers",
                "scope",
                "grace",
                "max_evidence_age",
                "evidence",
                "unknown",
                "notices",
                "allowed_alternatives",
                "remediation",
                "rationale",
            ),
        )
        apps, apps_ok = self.checked(lambda: self.apps((*path, "apps"), fields.get("apps", [])))
        identifiers, identifiers_ok = self.checked(
            lambda: self.identifiers((*path, "identifiers"), fields.get("identifiers", []))
        )
        if apps_ok and identifiers_ok and not apps and not identifiers:
            # Point at whichever of the two the author wrote, or at spec when neither is there.
            present = [key for key in ("apps", "identifiers") if key in fields]
            self.fail(
                path,
                "name at least one app in spec.apps or one identifier in spec.identifiers",
                at=(*path, present[0]) if present else path,
            )

        deadline = _INVALID_INSTANT
        if "deadline" in fields:
            deadline = self.instant((*path, "deadline"), fields["deadline"])
        grace = DEFAULT_GRACE
        if "grace" in fields:
            grace = self.duration((*path, "grace"), fields["grace"], allow_zero=True)
        max_evidence_age = DEFAULT_MAX_EVIDENCE_AGE
        if "max_evidence_age" in fields:
            max_evidence_age = self.duration(
                (*path, "max_evidence_age"), fields["max_evidence_age"], allow_zero=False
            )
        evidence = DEFAULT_EVIDENCE
        if "evidence" in fields:
            evidence = self.evidence((*path, "evidence"), fields["evidence"])
        unknown = DEFAULT_UNKNOWN
        if "unknown" in fields:
            unknown = self.choice(
                (*path, "unknown"), fields["unknown"], noun="value", choices=UNKNOWN_CHOICES
            )
        deny: tuple[str, ...] = ()
        if "enforcement" in fields:
            deny = self.enforcement((*path, "enforcement"), fields["enforcement"])

        return PolicyDocument(
            policy_id=policy_id,
            title=title,
            apps=apps,
            identifiers=identifiers,
            scope=self.scope((*path, "scope"), fields.get("scope", {})),
            deadline=deadline,
            grace=grace,
            max_evidence_age=max_evidence_age,
            evidence=evidence,
            unknown=unknown,
            deny=deny,
            notices=self.notices((*path, "notices"), fields.get("notices", {})),
            allowed_alternatives=self.optional_text(path, fields, "allowed_alternatives"),
            remediation=self.optional_text(path, fields, "remediation"),
            rationale=self.rationale((*path, "rationale"), fields["rationale"])
            if "rationale" in fields
            else None,
        )

    def apps(self, path: Path, value: Any) -> tuple[str, ...]:
        slugs = self.list_of(path, value, self.app_slug, noun="app")
        return tuple(sorted(slugs))

    def app_slug(self, path: Path, value: Any) -> str:
        slug = self.slug(path, value)
        if slug and self.known_apps is not None and slug not in self.known_apps:
            self.fail(
                path,
                f"unknown app {_quote(slug)}; it is not in the catalog"
                + _suggestion(slug, self.known_apps),
            )
        return slug

    def identifiers(self, path: Path, value: Any) -> tuple[IdentifierRef, ...]:
        refs = self.list_of(
            path,
            value,
            self.identifier,
            noun="identifier",
            key=lambda ref: (ref.namespace, ref.value),
            show=lambda ref: repr(f"{ref.namespace}:{ref.value}"),
        )
        return tuple(sorted(refs, key=lambda ref: (ref.namespace, ref.value)))

    def identifier(self, path: Path, value: Any) -> IdentifierRef:
        fields = self.mapping(
            path,
            value,
            required={
                "namespace": "an identifier namespace such as android_package",
                "value": "the identifier itself",
            },
        )
        namespace = ""
        if "namespace" in fields:
            namespace = self.choice(
                (*path, "namespace"),
                fields["namespace"],
                noun="namespace",
                choices=[n.value for n in AppNamespace],
            )
        identifier_value = ""
        if "value" in fields:
            identifier_value = self.string(
                (*path, "value"), fields["value"], max_chars=MAX_IDENTIFIER_CHARS
            )
        return IdentifierRef(namespace=namespace, value=identifier_value)

    def scope(self, path: Path, value: Any) -> Scope:
        fields = self.mapping(
            path, value, optional=("platforms", "form_factors", "ownership", "access", "people")
        )
        vocabularies: dict[str, tuple[str, Sequence[str]]] = {
            "platforms": ("platform", [p.value for p in Platform]),
            "form_factors": ("form factor", [f.value for f in FormFactor]),
            "ownership": ("ownership", [o.value for o in Ownership]),
            "access": ("resource", self.known_resources),
        }
        listed: dict[str, tuple[str, ...] | None] = {}
        for key, (noun, choices) in vocabularies.items():
            listed[key] = None
            if key in fields:
                listed[key] = self.scope_list((*path, key), fields[key], noun=noun, choices=choices)
        people = self.people((*path, "people"), fields["people"]) if "people" in fields else None
        return Scope(
            platforms=listed["platforms"],
            form_factors=listed["form_factors"],
            ownership=listed["ownership"],
            access=listed["access"],
            people=people,
        )

    def scope_list(
        self, path: Path, value: Any, *, noun: str, choices: Sequence[str]
    ) -> tuple[str, ...]:
        def item(item_path: Path, item_value: Any) -> str:
            return self.choice(item_path, item_value, noun=noun, choices=choices)

        values = self.list_of(
            path,
            value,
            item,
            noun=noun,
            empty_message="an empty list matches nothing; omit the key to match all",
        )
        return tuple(sorted(values))

    def people(self, path: Path, value: Any) -> PeopleScope | None:
        fields = self.mapping(path, value, optional=("include_groups", "exclude_groups", "exclude"))
        include_groups: tuple[str, ...] | None = None
        if "include_groups" in fields:
            include_groups = tuple(
                sorted(
                    self.list_of(
                        (*path, "include_groups"),
                        fields["include_groups"],
                        self.group,
                        noun="group",
                        empty_message="an empty list includes nobody; omit the key to include all",
                    )
                )
            )
        exclude_groups: tuple[str, ...] = ()
        if "exclude_groups" in fields:
            exclude_groups = tuple(
                sorted(
                    self.list_of(
                        (*path, "exclude_groups"),
                        fields["exclude_groups"],
                        self.group,
                        noun="group",
                    )
                )
            )
        exclude: tuple[str, ...] = ()
        if "exclude" in fields:
            exclude = tuple(
                sorted(
                    self.list_of((*path, "exclude"), fields["exclude"], self.email, noun="email")
                )
            )
        if include_groups is None and not exclude_groups and not exclude:
            return None  # `people: {}` restricts nothing, exactly like omitting it
        return PeopleScope(
            include_groups=include_groups, exclude_groups=exclude_groups, exclude=exclude
        )

    def group(self, path: Path, value: Any) -> str:
        return self.string(path, value, max_chars=MAX_NAME_CHARS)

    def email(self, path: Path, value: Any) -> str:
        address = self.string(path, value, max_chars=MAX_EMAIL_CHARS).lower()
        if address and not _EMAIL.fullmatch(address):
            self.fail(
                path, f"expected an email address like alice@example.com, got {_describe(value)}"
            )
        return address

    def evidence(self, path: Path, value: Any) -> tuple[str, ...]:
        kinds = self.list_of(
            path,
            value,
            self.evidence_kind,
            noun="evidence kind",
            empty_message="an empty list lets nothing prove absence; "
            "omit the key for the default [inventory, targeted_check]",
        )
        return tuple(sorted(kinds))

    def evidence_kind(self, path: Path, value: Any) -> str:
        reasons = {
            EvidenceKind.MANAGED_ONLY.value: "such a source cannot see user-installed apps",
            EvidenceKind.NONE.value: "such a source reports no app list at all",
        }
        if isinstance(value, str) and value.strip() in reasons:
            kind = value.strip()
            self.fail(
                path,
                f"{kind!r} cannot prove absence ({reasons[kind]}); {_one_of(ABSENCE_EVIDENCE)}",
            )
            return kind
        return self.choice(path, value, noun="evidence kind", choices=ABSENCE_EVIDENCE)

    def enforcement(self, path: Path, value: Any) -> tuple[str, ...]:
        fields = self.mapping(
            path, value, required={"deny": "a list of resources, empty to only monitor"}
        )
        if "deny" not in fields:
            return ()

        def resource(item_path: Path, item_value: Any) -> str:
            return self.choice(item_path, item_value, noun="resource", choices=self.known_resources)

        return tuple(
            sorted(self.list_of((*path, "deny"), fields["deny"], resource, noun="resource"))
        )

    def notices(self, path: Path, value: Any) -> Notices:
        fields = self.mapping(
            path, value, optional=("announce", "reminders", "send_at", "blocked", "restored")
        )
        template = DEFAULT_ANNOUNCE_TEMPLATE
        if "announce" in fields:
            announce = self.mapping((*path, "announce"), fields["announce"], optional=("template",))
            if "template" in announce:
                template = self.slug((*path, "announce", "template"), announce["template"])
        reminders: tuple[timedelta, ...] = ()
        if "reminders" in fields:
            reminders = self.reminders((*path, "reminders"), fields["reminders"])
        send_at = DEFAULT_SEND_AT
        if "send_at" in fields:
            send_at = self.string((*path, "send_at"), fields["send_at"], max_chars=MAX_NAME_CHARS)
            if send_at and not _SEND_AT.fullmatch(send_at):
                self.fail(
                    (*path, "send_at"),
                    'expected a 24-hour local time "HH:MM" from 00:00 to 23:59, '
                    f"got {_describe(fields['send_at'])}",
                )
        return Notices(
            announce_template=template,
            reminders=reminders,
            send_at=send_at,
            blocked=self.boolean(path, fields, "blocked"),
            restored=self.boolean(path, fields, "restored"),
        )

    def reminders(self, path: Path, value: Any) -> tuple[timedelta, ...]:
        def reminder(item_path: Path, item_value: Any) -> timedelta:
            return self.duration(item_path, item_value, allow_zero=False)

        offsets = self.list_of(path, value, reminder, noun="reminder", show=format_duration)
        return tuple(sorted(offsets, reverse=True))

    def rationale(self, path: Path, value: Any) -> Rationale:
        fields = self.mapping(
            path, value, required={"text": "why the app is banned"}, optional=("signals",)
        )
        text = ""
        if "text" in fields:
            text = self.string(
                (*path, "text"), fields["text"], max_chars=MAX_TEXT_CHARS, multiline=True
            )
        signals: tuple[str, ...] = ()
        if "signals" in fields:
            signals = tuple(
                self.list_of((*path, "signals"), fields["signals"], self.signal, noun="signal")
            )
        return Rationale(text=text, signals=signals)

    def signal(self, path: Path, value: Any) -> str:
        return self.string(path, value, max_chars=MAX_NAME_CHARS)

    def optional_text(self, path: Path, fields: Mapping[str, Any], key: str) -> str | None:
        if key not in fields:
            return None
        return self.string((*path, key), fields[key], max_chars=MAX_TEXT_CHARS, multiline=True)

    # -- building blocks ---------------------------------------------------------------------

    def mapping(
        self,
        path: Path,
        value: Any,
        *,
        required: Mapping[str, str] | None = None,
        optional: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Check a mapping's keys; `required` maps each required key to what it should hold.

        Returns only the known keys, or {} when the value is not a mapping at all.
        """
        required = required or {}
        if not isinstance(value, dict):
            self.fail(path, f"expected a mapping, got {_describe(value)}")
            return {}
        allowed = [*required, *optional]
        for key in value:
            if key not in allowed:
                self.fail(
                    path,
                    f"unknown key {_quote(key)}; {_one_of(allowed)}" + _suggestion(key, allowed),
                    at=(*path, key),
                )
        for key, expected in required.items():
            if key not in value:
                self.fail(path, f"missing required key {key!r} ({expected})")
        return {key: item for key, item in value.items() if key in allowed}

    def list_of(
        self,
        path: Path,
        value: Any,
        item: Callable[[Path, Any], T],
        *,
        noun: str,
        empty_message: str | None = None,
        key: Callable[[T], Hashable] | None = None,
        show: Callable[[T], str] = repr,
    ) -> list[T]:
        """Check a list item by item; duplicates (by `key`) are errors at the later copy."""
        if not isinstance(value, list):
            self.fail(path, f"expected a list, got {_describe(value)}")
            return []
        if not value and empty_message is not None:
            self.fail(path, empty_message)
        items: list[T] = []
        seen: dict[Hashable, int] = {}
        for index, raw in enumerate(value):
            before = len(self.problems)
            result = item((*path, index), raw)
            if len(self.problems) != before:
                continue  # already reported; a broken item cannot be a duplicate
            identity = key(result) if key is not None else result
            if identity in seen:
                self.fail(
                    (*path, index),
                    f"duplicate {noun} {show(result)} "
                    f"(already at {_label((*path, seen[identity]))})",
                )
                continue
            seen[identity] = index
            items.append(result)
        return items

    def string(self, path: Path, value: Any, *, max_chars: int, multiline: bool = False) -> str:
        """A stripped, non-empty string without control characters; one line unless `multiline`.

        Line breaks are refused in one-line fields because titles and names end up in mail
        headers and log lines, where a newline could forge another header or entry.
        """
        if not isinstance(value, str):
            self.fail(path, f"expected a string, got {_describe(value)}")
            return ""
        text = value.strip()
        if not text:
            self.fail(path, "must not be empty")
            return ""
        if len(text) > max_chars:
            self.fail(path, f"is {len(text)} characters long; the limit is {max_chars}")
            return ""
        allowed_controls = {"\n", "\t"} if multiline else set()
        for char in text:
            if unicodedata.category(char) == "Cc" and char not in allowed_controls:
                allowed = "; only line breaks and tabs are allowed" if multiline else ""
                if char in ("\n", "\t"):
                    allowed = "; it must be a single line"
                self.fail(path, f"contains the control character U+{ord(char):04X}{allowed}")
                return ""
        return text

    def slug(self, path: Path, value: Any) -> str:
        slug = self.string(path, value, max_chars=MAX_NAME_CHARS)
        if slug and not _SLUG.fullmatch(slug):
            self.fail(
                path,
                "expected a slug of lower-case letters, digits, '.', '_' or '-', "
                f"got {_describe(value)}",
            )
            return ""
        return slug

    def choice(self, path: Path, value: Any, *, noun: str, choices: Collection[str]) -> str:
        if not isinstance(value, str):
            self.fail(
                path, f"expected a {noun} ({', '.join(sorted(choices))}), got {_describe(value)}"
            )
            return ""
        text = value.strip()
        if text not in choices:
            self.fail(
                path,
                f"unknown {noun} {_quote(text)}; {_one_of(choices)}" + _suggestion(text, choices),
            )
            return ""
        return text

    def constant(self, path: Path, value: Any, expected: str) -> None:
        if value != expected:
            self.fail(path, f"expected {expected!r}, got {_describe(value)}")

    def boolean(self, path: Path, fields: Mapping[str, Any], key: str) -> bool:
        """An optional flag that defaults to true."""
        if key not in fields:
            return True
        value = fields[key]
        if not isinstance(value, bool):
            self.fail((*path, key), f"expected true or false, got {_describe(value)}")
            return True
        return value

    def duration(self, path: Path, value: Any, *, allow_zero: bool) -> timedelta:
        if not isinstance(value, str) or len(value) > 64:
            self.fail(
                path,
                "expected a duration made of W, D, H, M, S such as P1D or PT12H, "
                f"got {_describe(value)}",
            )
            return DEFAULT_GRACE
        try:
            duration = parse_duration(value)
        except ValueError as exc:
            self.fail(path, str(exc))
            return DEFAULT_GRACE
        except OverflowError:
            self.fail(path, f"{value!r} is too long; the limit is {format_duration(MAX_DURATION)}")
            return DEFAULT_GRACE
        if duration > MAX_DURATION:
            self.fail(path, f"{value!r} is too long; the limit is {format_duration(MAX_DURATION)}")
        elif not allow_zero and duration <= timedelta(0):
            self.fail(path, f"must be longer than zero, got {value!r}")
        return duration

    def instant(self, path: Path, value: Any) -> datetime:
        expected = "an RFC 3339 time with an offset, like 2020-07-10T23:59:59-07:00"
        if not isinstance(value, str) or len(value) > 64:
            self.fail(path, f"expected {expected}, got {_describe(value)}")
            return _INVALID_INSTANT
        text = value.strip()
        if _BARE_DATE.fullmatch(text):
            self.fail(
                path, f"expected {expected}, got the bare date {text!r}; add a time and an offset"
            )
            return _INVALID_INSTANT
        if _NAIVE_TIME.fullmatch(text):
            self.fail(
                path,
                f"expected {expected}, got {text!r} without an offset; "
                "add Z or ±HH:MM so the time is the same everywhere",
            )
            return _INVALID_INSTANT
        try:
            return parse_instant(text)
        except (ValueError, OverflowError) as exc:
            detail = str(exc)
            if detail.startswith("expected"):
                self.fail(path, detail)
            else:  # the shape was right but the date is not on the calendar (2020-02-30)
                self.fail(path, f"expected {expected}, got {text!r} ({detail})")
            return _INVALID_INSTANT
