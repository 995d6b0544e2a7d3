"""The native inventory format `appwarden.inventory/v1` (JSON): parsing and validation only.

`docs/inventory-native.md` is the contract; `docs/native-inventory.schema.json` describes the same
shape as a JSON Schema. This module turns a file (or an already decoded HTTP body) into the neutral
records of `appwarden.devices.schemas`, without touching the store.

Error semantics (docs/inventory-native.md; facts in docs/architecture.md): a problem in the
top-level structure makes the whole input invalid (InvalidInput). A problem inside one person or
one device entry skips that whole entry — never just the bad app inside it, which would fake
absence — and is recorded as a located string in `InventoryBatch.skipped`; with `strict=True` any
such problem raises InvalidInput listing every problem instead (all-or-nothing).

Files are decoded with the standard library's C JSON scanner, one array element at a time, so that
every person and device entry has a `FILE:LINE:COL` without building a position map of the whole
file; deeper positions are computed for an entry only when one of its problems is reported.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any, Final, TypeVar
from zoneinfo import available_timezones

from appwarden.devices.schemas import AppSeen, DeviceFacts, InventoryBatch, PersonFacts, ReportFacts
from appwarden.documents import json_too_deep, too_deep, too_large
from appwarden.errors import InvalidInput, Problem
from appwarden.timeutil import parse_instant
from appwarden.vocabulary import (
    SOURCE_NAME,
    AppNamespace,
    DeviceNamespace,
    DeviceStatus,
    EvidenceKind,
    FormFactor,
    Ownership,
    PersonStatus,
    Platform,
)

Path = tuple[str | int, ...]
Where = Callable[[Path], str]
E = TypeVar("E", bound=StrEnum)

FORMAT: Final = "appwarden.inventory/v1"
MAX_BYTES: Final = 64 * 1024 * 1024
MAX_APPS_PER_REPORT: Final = 10_000
MAX_IDENTIFIER_CHARS: Final = 512
MAX_NAME_CHARS: Final = 1000
MAX_EMAIL_CHARS: Final = 254

# The keys each object of the format accepts (the schema consistency test reads these).
TOP_KEYS: Final = frozenset({"$schema", "format", "source", "people", "devices"})
PERSON_KEYS: Final = frozenset(
    {"email", "display_name", "aliases", "accounts", "groups", "time_zone", "status", "left_at"}
)
DEVICE_KEYS: Final = frozenset(
    {
        "identifiers",
        "platform",
        "form_factor",
        "ownership",
        "owner",
        "resources",
        "name",
        "status",
        "report",
    }
)
DEVICE_IDENTIFIER_KEYS: Final = frozenset({"namespace", "value"})
REPORT_KEYS: Final = frozenset(
    {"evidence_kind", "observed_at", "source", "coverage", "checked", "apps"}
)
CHECKED_KEYS: Final = frozenset({"namespace", "value"})
APP_KEYS: Final = frozenset({"namespace", "value", "version", "name"})

# Evidence kinds whose coverage is the list of identifiers the device answered for.
ANSWER_KINDS: Final = frozenset({EvidenceKind.TARGETED_CHECK, EvidenceKind.ATTESTATION})

RESOURCE_NAME = re.compile(r"^[a-z0-9._-]{1,64}$")
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_JSON_WS = re.compile(r"[ \t\n\r]*")


# --------------------------------------------------------------------------------------------
# Field checks shared with the CSV importer: each returns a clean value or raises FieldError.


class FieldError(Exception):
    """One field is wrong; the message says why (the caller adds where it is)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def show(value: object, limit: int = 60) -> str:
    """A short, printable rendering of a bad value for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__  # pragma: no cover - JSON has no other types


def clean_text(value: str, *, max_chars: int) -> str:
    """Strip; reject control characters, lone surrogates and over-long text. May return ''."""
    text = value.strip()
    bad = _FORBIDDEN_CHARS.search(text)
    if bad:
        raise FieldError(f"contains a control character (U+{ord(bad.group()):04X}) in {show(text)}")
    if len(text) > max_chars:
        raise FieldError(f"is {len(text)} characters long; the limit is {max_chars}")
    return text


def check_email(value: str) -> str:
    """A simple sane address check; returns the address lower-cased."""
    text = clean_text(value, max_chars=MAX_EMAIL_CHARS).lower()
    if not text:
        raise FieldError("an email address must not be empty")
    if any(c.isspace() for c in text):
        raise FieldError(f"{show(text)} is not an email address: it contains a space")
    local, at, domain = text.partition("@")
    if not at or not local or not domain or "@" in domain:
        raise FieldError(
            f"{show(text)} is not an email address: "
            "expected exactly one '@' between a name and a domain"
        )
    return text


@lru_cache(maxsize=1)
def _time_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def check_time_zone(value: str) -> str:
    text = clean_text(value, max_chars=MAX_IDENTIFIER_CHARS)
    if text not in _time_zones():
        raise FieldError(
            f"{show(text)} is not an IANA time zone (like Europe/Berlin or America/Los_Angeles)"
        )
    return text


_ENUM_LABELS: dict[type[StrEnum], str] = {
    Platform: "platform",
    FormFactor: "form factor",
    Ownership: "ownership",
    PersonStatus: "person status",
    DeviceStatus: "device status",
    EvidenceKind: "evidence kind",
    AppNamespace: "app identifier namespace",
    DeviceNamespace: "device identifier namespace",
}


def check_enum(value: str, enum: type[E]) -> E:
    text = value.strip()
    try:
        return enum(text)
    except ValueError:
        label = _ENUM_LABELS.get(enum, enum.__name__)
        choices = ", ".join(m.value for m in enum)
        raise FieldError(
            f"{show(text)} is not a valid {label}; expected one of: {choices}"
        ) from None


def check_source_name(value: str) -> str:
    text = value.strip()
    if not SOURCE_NAME.match(text):
        raise FieldError(f"{show(text)} is not a source name: use 1 to 64 of a-z 0-9 . _ -")
    return text


def check_resource(value: str) -> str:
    text = value.strip()
    if not RESOURCE_NAME.match(text):
        raise FieldError(
            f"{show(text)} is not a resource name: use 1 to 64 of a-z 0-9 . _ - (like email)"
        )
    return text


def check_instant(value: str) -> datetime:
    try:
        return parse_instant(value)
    except ValueError as exc:
        raise FieldError(str(exc)) from None


def check_account(value: str) -> str:
    """An account name the mail server accepts (`EXAMPLE\\alice`, a UPN); case-folded."""
    text = clean_text(value, max_chars=MAX_EMAIL_CHARS).casefold()
    if not text:
        raise FieldError("an account name must not be empty")
    return text


def check_identifier_value(value: str) -> str:
    text = clean_text(value, max_chars=MAX_IDENTIFIER_CHARS)
    if not text:
        raise FieldError("must not be empty")
    return text


def dedupe(items: Iterable[Any]) -> tuple[Any, ...]:
    """Keep the first of equal items, in order."""
    return tuple(dict.fromkeys(items))


def app_coverage_problems(
    kind: EvidenceKind, *, apps: int, has_coverage: bool, checked: int
) -> list[tuple[str, str]]:
    """Evidence-kind rules that tie fields of a report together, as (field, message) pairs."""
    problems: list[tuple[str, str]] = []
    if kind in ANSWER_KINDS:
        if has_coverage:
            problems.append(
                (
                    "coverage",
                    f"coverage is not allowed for {kind}: the checked identifiers are its coverage",
                )
            )
        if not checked:
            problems.append(("checked", f"a {kind} report must list the identifiers it checked"))
    else:
        if checked:
            problems.append(
                (
                    "checked",
                    f"checked is only allowed for targeted_check and attestation, not {kind}",
                )
            )
        if has_coverage and kind != EvidenceKind.INVENTORY:
            problems.append(
                (
                    "coverage",
                    f"coverage is only allowed for inventory reports; {kind} proves nothing absent",
                )
            )
        if kind == EvidenceKind.NONE and apps:
            problems.append(("apps", "a report with evidence_kind none carries no apps"))
    return problems


def too_many_apps(count: int) -> str | None:
    if count > MAX_APPS_PER_REPORT:
        return f"the report lists {count} apps; the limit is {MAX_APPS_PER_REPORT}"
    return None


# --------------------------------------------------------------------------------------------
# Validation of decoded values


def json_path(path: Path) -> str:
    """A JSON-path-like location for HTTP bodies: ("devices", 3, "report") -> $.devices[3].report"""
    parts = ["$"]
    for step in path:
        if isinstance(step, int):
            parts.append(f"[{step}]")
        elif re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$]*", step):
            parts.append(f".{step}")
        else:
            parts.append(f"[{json.dumps(step)}]")
    return "".join(parts)


class _Entry:
    """Collects the problems of one entry (or of the top level)."""

    def __init__(self, where: Where) -> None:
        self.where = where
        self.problems: list[Problem] = []

    def fail(self, path: Path, message: str) -> None:
        self.problems.append(Problem(self.where(path), message))

    def obj(
        self,
        value: object,
        path: Path,
        what: str,
        allowed: frozenset[str],
        required: Iterable[str] = (),
    ) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.fail(path, f"{what} must be an object, not {type_name(value)}")
            return None
        for key in value:
            if key not in allowed:
                self.fail(
                    (*path, key),
                    f"unknown key {show(key)} in {what}; allowed: {', '.join(sorted(allowed))}",
                )
        for key in required:
            if key not in value:
                self.fail(path, f"{what} is missing the required key {key!r}")
            elif value[key] is None:
                self.fail((*path, key), f"{key} must not be null")
        return value

    def string(self, value: object, path: Path) -> str | None:
        """The value if it is a string; otherwise a problem. (null is handled by the caller.)"""
        if isinstance(value, str):
            return value
        self.fail(path, f"{_name(path)} must be a string, not {type_name(value)}")
        return None

    def run(self, path: Path, check: Callable[[str], Any], value: object) -> Any:
        """Apply a field check to a string value; None (with a problem) if it fails."""
        text = self.string(value, path)
        if text is None:
            return None
        try:
            return check(text)
        except FieldError as bad:
            self.fail(path, f"{_name(path)}: {bad.message}")
            return None

    def optional_text(self, value: object, path: Path, max_chars: int) -> str | None:
        if value is None:
            return None
        text = self.run(path, lambda s: clean_text(s, max_chars=max_chars), value)
        return text or None

    def list_of(self, value: object, path: Path) -> list[Any]:
        if isinstance(value, list):
            return value
        self.fail(path, f"{_name(path)} must be a list, not {type_name(value)}")
        return []


def _name(path: Path) -> str:
    for step in reversed(path):
        if isinstance(step, str):
            return step
    return "value"


def _person(entry: _Entry, value: object, path: Path) -> PersonFacts | None:
    obj = entry.obj(value, path, "a person", PERSON_KEYS, required=("email",))
    if obj is None:
        return None
    email = entry.run((*path, "email"), check_email, obj["email"]) if "email" in obj else None
    display_name = entry.optional_text(
        obj.get("display_name"), (*path, "display_name"), MAX_NAME_CHARS
    )
    aliases: list[str] = []
    if obj.get("aliases") is not None:
        for i, item in enumerate(entry.list_of(obj["aliases"], (*path, "aliases"))):
            alias = entry.run((*path, "aliases", i), check_email, item)
            if alias is not None and alias != email:
                aliases.append(alias)
    accounts: list[str] = []
    if obj.get("accounts") is not None:
        for i, item in enumerate(entry.list_of(obj["accounts"], (*path, "accounts"))):
            account = entry.run((*path, "accounts", i), check_account, item)
            if account is not None:
                accounts.append(account)
    groups: list[str] | None = None
    if obj.get("groups") is not None:
        groups = []
        for i, item in enumerate(entry.list_of(obj["groups"], (*path, "groups"))):
            group = entry.run((*path, "groups", i), check_identifier_value, item)
            if group is not None:
                groups.append(group)
    time_zone = None
    if obj.get("time_zone") is not None:
        time_zone = entry.run((*path, "time_zone"), check_time_zone, obj["time_zone"])
    status = PersonStatus.ACTIVE
    if obj.get("status") is not None:
        status = entry.run((*path, "status"), lambda s: check_enum(s, PersonStatus), obj["status"])
    left_at = None
    if obj.get("left_at") is not None:
        left_at = entry.run((*path, "left_at"), check_instant, obj["left_at"])
        if status == PersonStatus.ACTIVE:
            entry.fail((*path, "left_at"), "left_at is only allowed when status is left")
    if entry.problems or email is None:
        return None
    return PersonFacts(
        email=email,
        display_name=display_name,
        aliases=dedupe(aliases),
        accounts=dedupe(accounts),
        groups=None if groups is None else dedupe(groups),
        time_zone=time_zone,
        status=status,
        left_at=left_at,
    )


def _pairs(
    entry: _Entry,
    value: object,
    path: Path,
    what: str,
    keys: frozenset[str],
    namespace: type[StrEnum],
) -> list[tuple[str, str]]:
    """A list of {namespace, value} objects (device identifiers, checked app identifiers)."""
    pairs: list[tuple[str, str]] = []
    for i, item in enumerate(entry.list_of(value, path)):
        obj = entry.obj(item, (*path, i), what, keys, required=("namespace", "value"))
        if obj is None:
            continue
        ns = (
            entry.run((*path, i, "namespace"), lambda s: check_enum(s, namespace), obj["namespace"])
            if obj.get("namespace") is not None
            else None
        )
        val = (
            entry.run((*path, i, "value"), check_identifier_value, obj["value"])
            if obj.get("value") is not None
            else None
        )
        if ns is not None and val is not None:
            pairs.append((str(ns), val))
    return pairs


def _vocab(entry: _Entry, obj: dict[str, Any], path: Path, key: str, enum: type[E]) -> E | None:
    if obj.get(key) is None:
        return None
    result: E | None = entry.run((*path, key), lambda s: check_enum(s, enum), obj[key])
    return result


def _device(entry: _Entry, value: object, path: Path) -> DeviceFacts | None:
    obj = entry.obj(value, path, "a device", DEVICE_KEYS, required=("identifiers",))
    if obj is None:
        return None
    identifiers: list[tuple[str, str]] = []
    if obj.get("identifiers") is not None:
        identifiers = _pairs(
            entry,
            obj["identifiers"],
            (*path, "identifiers"),
            "a device identifier",
            DEVICE_IDENTIFIER_KEYS,
            DeviceNamespace,
        )
        if isinstance(obj["identifiers"], list) and not obj["identifiers"]:
            entry.fail((*path, "identifiers"), "a device needs at least one identifier")
    platform = _vocab(entry, obj, path, "platform", Platform)
    form_factor = _vocab(entry, obj, path, "form_factor", FormFactor)
    ownership = _vocab(entry, obj, path, "ownership", Ownership)
    status = _vocab(entry, obj, path, "status", DeviceStatus)
    owner = None
    if obj.get("owner") is not None:
        owner = entry.run((*path, "owner"), check_email, obj["owner"])
    resources: list[str] | None = None
    if obj.get("resources") is not None:
        resources = []
        for i, item in enumerate(entry.list_of(obj["resources"], (*path, "resources"))):
            resource = entry.run((*path, "resources", i), check_resource, item)
            if resource is not None:
                resources.append(resource)
    name = entry.optional_text(obj.get("name"), (*path, "name"), MAX_NAME_CHARS)
    if entry.problems:
        return None
    return DeviceFacts(
        identifiers=dedupe(identifiers),
        platform=platform,
        form_factor=form_factor,
        ownership=ownership,
        owner_email=owner,
        resources=None if resources is None else dedupe(resources),
        name=name,
        status=status,
    )


_APP_NAMESPACES: Final = frozenset(m.value for m in AppNamespace)


def _clean_app(item: dict[str, Any]) -> AppSeen | None:
    """The fast path for a well-formed app (most of them); None sends it down the slow path."""
    if not item.keys() <= APP_KEYS:
        return None
    ns, value = item.get("namespace"), item.get("value")
    version, name = item.get("version"), item.get("name")
    if (
        type(ns) is not str
        or ns not in _APP_NAMESPACES
        or type(value) is not str
        or (version is not None and type(version) is not str)
        or (name is not None and type(name) is not str)
    ):
        return None
    value = value.strip()
    version = version.strip() if version else None
    name = name.strip() if name else None
    if (
        not value
        or len(value) > MAX_IDENTIFIER_CHARS
        or (version and len(version) > MAX_IDENTIFIER_CHARS)
        or (name and len(name) > MAX_NAME_CHARS)
        or _FORBIDDEN_CHARS.search(f"{value}{version or ''}{name or ''}")
    ):
        return None
    return AppSeen(namespace=ns, value=value, version=version or None, name=name or None)


def _app(entry: _Entry, item: object, path: Path) -> AppSeen | None:
    if type(item) is dict:
        fast = _clean_app(item)
        if fast is not None:
            return fast
    if not isinstance(item, dict):
        entry.fail(path, f"an app must be an object, not {type_name(item)}")
        return None
    for key in item:
        if key not in APP_KEYS:
            entry.fail(
                (*path, key),
                f"unknown key {show(key)} in an app; allowed: {', '.join(sorted(APP_KEYS))}",
            )
    ns_value = item.get("namespace")
    value = item.get("value")
    if ns_value is None:
        entry.fail(path, "an app is missing the required key 'namespace'")
        ns = None
    else:
        ns = entry.run((*path, "namespace"), lambda s: check_enum(s, AppNamespace), ns_value)
    if value is None:
        entry.fail(path, "an app is missing the required key 'value'")
        val = None
    else:
        val = entry.run((*path, "value"), check_identifier_value, value)
    version = entry.optional_text(item.get("version"), (*path, "version"), MAX_IDENTIFIER_CHARS)
    name = entry.optional_text(item.get("name"), (*path, "name"), MAX_NAME_CHARS)
    if ns is None or val is None:
        return None
    return AppSeen(namespace=str(ns), value=val, version=version, name=name)


def _report(
    entry: _Entry,
    value: object,
    path: Path,
    device: DeviceFacts | None,
    default_source: str | None,
    where: Where,
) -> ReportFacts | None:
    obj = entry.obj(value, path, "a report", REPORT_KEYS, required=("evidence_kind",))
    if obj is None:
        return None
    kind = None
    if obj.get("evidence_kind") is not None:
        kind = entry.run(
            (*path, "evidence_kind"), lambda s: check_enum(s, EvidenceKind), obj["evidence_kind"]
        )
    observed_at = None
    if obj.get("observed_at") is not None:
        observed_at = entry.run((*path, "observed_at"), check_instant, obj["observed_at"])
    source = default_source
    if obj.get("source") is not None:
        source = entry.run((*path, "source"), check_source_name, obj["source"])
    elif default_source is None:
        entry.fail(path, "a report needs a source: give report.source or a top-level source")
    coverage = _report_coverage(entry, obj, path)
    checked: list[tuple[str, str]] = []
    if obj.get("checked") is not None:
        checked = _pairs(
            entry,
            obj["checked"],
            (*path, "checked"),
            "a checked identifier",
            CHECKED_KEYS,
            AppNamespace,
        )
    apps, listed = _report_apps(entry, obj, path)
    if kind is not None:
        _check_report_kind(entry, obj, path, kind, apps=apps, listed=listed, checked=checked)
    if entry.problems or device is None or kind is None or source is None:
        return None
    return ReportFacts(
        device=device,
        source=source,
        evidence_kind=kind,
        observed_at=observed_at,
        apps=dedupe_apps(apps),
        coverage=None if coverage is None else dedupe(coverage),
        checked=dedupe(checked),
        where=where(path[:-1]),
    )


def _report_coverage(entry: _Entry, obj: dict[str, Any], path: Path) -> list[str] | None:
    """The app namespaces the report lists completely (None: the kind's default)."""
    if obj.get("coverage") is None:
        return None
    coverage: list[str] = []
    for i, item in enumerate(entry.list_of(obj["coverage"], (*path, "coverage"))):
        ns = entry.run((*path, "coverage", i), lambda s: check_enum(s, AppNamespace), item)
        if ns is not None:
            coverage.append(str(ns))
    return coverage


def _report_apps(entry: _Entry, obj: dict[str, Any], path: Path) -> tuple[list[AppSeen], int]:
    """The valid apps of the report, and how many it listed; past the limit one problem says it
    all and no app is read."""
    raw_apps: list[Any] = []
    if obj.get("apps") is not None:
        raw_apps = entry.list_of(obj["apps"], (*path, "apps"))
    apps: list[AppSeen] = []
    limit = too_many_apps(len(raw_apps))
    if limit:
        entry.fail((*path, "apps"), limit)
    else:
        for i, item in enumerate(raw_apps):
            app = _app(entry, item, (*path, "apps", i))
            if app is not None:
                apps.append(app)
    return apps, len(raw_apps)


def _check_report_kind(
    entry: _Entry,
    obj: dict[str, Any],
    path: Path,
    kind: EvidenceKind,
    *,
    apps: list[AppSeen],
    listed: int,
    checked: list[tuple[str, str]],
) -> None:
    """Apps, coverage and checked identifiers must fit the evidence kind; an answer kind may only
    name checked identifiers as present."""
    raw_checked = obj.get("checked")
    for key, message in app_coverage_problems(
        kind,
        apps=listed,
        has_coverage=obj.get("coverage") is not None,
        checked=len(raw_checked) if isinstance(raw_checked, list) else 0,
    ):
        entry.fail((*path, key) if key in obj else path, message)
    if kind in ANSWER_KINDS and checked:
        answered = set(checked)
        for i, app in enumerate(apps):
            if (app.namespace, app.value) not in answered:
                entry.fail(
                    (*path, "apps", i),
                    f"{app.namespace}:{app.value} is not among the checked identifiers; "
                    f"a {kind} report can only say which checked identifiers are present",
                )


def dedupe_apps(apps: list[AppSeen]) -> tuple[AppSeen, ...]:
    """Drop exact repeats of (namespace, value, version), keeping the first."""
    seen: dict[tuple[str, str, str | None], AppSeen] = {}
    for app in apps:
        seen.setdefault((app.namespace, app.value, app.version), app)
    return tuple(seen.values())


@dataclass
class _Outcome:
    people: list[PersonFacts] = field(default_factory=list)
    devices: list[DeviceFacts] = field(default_factory=list)
    reports: list[ReportFacts] = field(default_factory=list)
    file_problems: list[Problem] = field(default_factory=list)
    entry_problems: list[Problem] = field(default_factory=list)
    source: str | None = None


def _validate(
    value: object,
    where: Where,
    early: Mapping[Path, list[Problem]] | None = None,
    writer_source: str | None = None,
) -> _Outcome:
    """Check a decoded document; `early` holds problems found while decoding, by entry path.
    `writer_source` (an API token's source) stands in for a top-level source the document omits."""
    early = early or {}
    out = _Outcome()
    top = _Entry(where)
    obj = top.obj(value, (), "the inventory", TOP_KEYS, required=("format",))
    if obj is None:
        out.file_problems = top.problems
        return out
    fmt = obj.get("format")
    if fmt is not None and fmt != FORMAT:
        top.fail(("format",), f"format must be {FORMAT!r}, not {show(fmt)}")
    if obj.get("$schema") is not None:
        top.string(obj["$schema"], ("$schema",))
    default_source = writer_source
    if obj.get("source") is not None:
        default_source = top.run(("source",), check_source_name, obj["source"])
    out.source = default_source
    entries: dict[str, list[Any]] = {}
    for key in ("people", "devices"):
        entries[key] = [] if obj.get(key) is None else top.list_of(obj[key], (key,))
    out.file_problems = top.problems
    emails: dict[str, Path] = {}
    for i, item in enumerate(entries["people"]):
        entry = _Entry(where)
        entry.problems.extend(early.get(("people", i), ()))
        person = _person(entry, item, ("people", i))
        if person is not None and person.email in emails:
            entry.fail(
                ("people", i, "email"),
                f"{person.email} is listed twice; first at {where(emails[person.email])}",
            )
        if entry.problems or person is None:
            out.entry_problems.extend(entry.problems)
            continue
        emails[person.email] = ("people", i, "email")
        out.people.append(person)
    for i, item in enumerate(entries["devices"]):
        entry = _Entry(where)
        entry.problems.extend(early.get(("devices", i), ()))
        device = _device(entry, item, ("devices", i))
        report = None
        if isinstance(item, dict) and item.get("report") is not None:
            report = _report(
                entry, item["report"], ("devices", i, "report"), device, default_source, where
            )
        if entry.problems or device is None:
            out.entry_problems.extend(entry.problems)
        elif report is not None:
            out.reports.append(report)
        else:
            out.devices.append(device)
    return out


def _finish(out: _Outcome, *, strict: bool, label: str) -> InventoryBatch:
    if out.file_problems or (strict and out.entry_problems):
        problems = out.file_problems + out.entry_problems
        raise InvalidInput(f"{label}: {len(problems)} problem(s)", problems=problems)
    return InventoryBatch(
        source=out.source,
        people=tuple(out.people),
        devices=tuple(out.devices),
        reports=tuple(out.reports),
        skipped=tuple(str(p) for p in out.entry_problems),
    )


def parse_native_value(value: object, where: Where, *, strict: bool = False) -> InventoryBatch:
    """Validate an already decoded native document.

    `where(path)` names a location for a path like ("devices", 3, "report", "apps", 0); `json_path`
    is a ready-made one. Raises InvalidInput for top-level problems (and, when strict, for any).
    """
    return _finish(_validate(value, where), strict=strict, label="inventory")


@dataclass(frozen=True, slots=True)
class NativeDocument:
    """A native inventory read by `read_native`: its decoded value, how to locate a path in it,
    and the problems found while decoding one entry (a duplicate key skips just that entry)."""

    label: str
    value: object
    where: Where
    early: Mapping[Path, list[Problem]]


def read_native(
    text: str | bytes, label: str, *, max_bytes: int = MAX_BYTES, by_path: bool = False
) -> NativeDocument:
    """The one JSON reader of native inventory, for files (`appwarden import native`) and HTTP
    bodies (`POST /v1/inventory`) alike: UTF-8 with an optional byte order mark, duplicate keys
    refused naming their JSON path, every problem located. Files are located as FILE:LINE:COL;
    with `by_path` (HTTP bodies) as JSON paths like `$.devices[3].report`."""
    decoded = decode_input(text, label, max_bytes=max_bytes, by_path=by_path)
    doc = _JsonFile(decoded, label, by_path=by_path)
    value, early = doc.load()
    return NativeDocument(label, value, doc.where, early)


def parse_document(
    doc: NativeDocument, *, strict: bool = False, writer_source: str | None = None
) -> InventoryBatch:
    """Validate a document read by `read_native` into the neutral records."""
    out = _validate(doc.value, doc.where, doc.early, writer_source)
    return _finish(out, strict=strict, label=doc.label)


def parse_native(
    text: str | bytes, filename: str, *, strict: bool = False, max_bytes: int = MAX_BYTES
) -> InventoryBatch:
    """Parse and validate a native inventory file; problems are located as FILE:LINE:COL."""
    return parse_document(read_native(text, filename, max_bytes=max_bytes), strict=strict)


def writer_problems(
    doc: NativeDocument, *, source: str, namespaces: Iterable[str] | None
) -> list[Problem]:
    """What a writer bound to `source` (and, when given, to these device identifier namespaces)
    may not write in this document: a top-level or report `source` naming another source, or a
    device named by another namespace. Run on a document that validates."""
    allowed = None if namespaces is None else frozenset(namespaces)
    problems: list[Problem] = []
    top = doc.value if isinstance(doc.value, dict) else {}

    def check_source(value: object, path: Path) -> None:
        if isinstance(value, str) and value.strip() != source:
            problems.append(
                Problem(
                    doc.where(path),
                    f"this token writes as the source {source!r}, not {value.strip()!r}",
                )
            )

    check_source(top.get("source"), ("source",))
    devices = top.get("devices")
    for i, device in enumerate(devices if isinstance(devices, list) else []):
        if not isinstance(device, dict):
            continue
        report = device.get("report")
        if isinstance(report, dict):
            check_source(report.get("source"), ("devices", i, "report", "source"))
        identifiers = device.get("identifiers")
        if allowed is None or not isinstance(identifiers, list):
            continue
        for j, identifier in enumerate(identifiers):
            namespace = identifier.get("namespace") if isinstance(identifier, dict) else None
            if isinstance(namespace, str) and namespace.strip() not in allowed:
                problems.append(
                    Problem(
                        doc.where(("devices", i, "identifiers", j, "namespace")),
                        f"this token may not name devices by {namespace.strip()!r}; "
                        f"it may use: {', '.join(sorted(allowed))}",
                    )
                )
    return problems


# --------------------------------------------------------------------------------------------
# Reading the file


def decode_input(text: str | bytes, filename: str, *, max_bytes: int, by_path: bool = False) -> str:
    """Enforce the size limit and decode UTF-8. A leading byte order mark is dropped (editors do
    not count it as a column either). With `by_path`, a bad byte is located at `$`, with its
    line and column in the message."""
    if isinstance(text, str):
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            raise too_large(filename, size, max_bytes)
        decoded = text
    else:
        if len(text) > max_bytes:
            raise too_large(filename, len(text), max_bytes)
        try:
            decoded = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            before = text[: exc.start]
            line = before.count(b"\n") + 1
            col = len(before[before.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
            where = f"{filename}:{line}:{col}"
            message = f"not valid UTF-8 ({exc.reason})"
            if by_path:
                where, message = "$", f"{message} at line {line}, column {col}"
            raise InvalidInput(f"{where}: {message}", problems=[Problem(where, message)]) from exc
    if decoded.startswith("\ufeff"):
        decoded = decoded[1:]
    return decoded


class _DuplicateKeyError(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _DuplicateKeyError
    return result


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates)


class _NotJsonError(Exception):
    def __init__(self, pos: int, message: str) -> None:
        super().__init__(message)
        self.pos = pos
        self.message = message


class _JsonFile:
    """A JSON text decoded with positions for the top level and each people/devices entry.

    Positions inside an entry are found on demand by re-reading just that entry.
    """

    def __init__(self, text: str, filename: str, *, by_path: bool = False) -> None:
        self.text = text
        self.filename = filename
        self.by_path = by_path
        self.offsets: dict[Path, int] = {}
        self._entry_offsets: dict[Path, dict[Path, int]] = {}
        self._newlines: list[int] | None = None

    # positions ----------------------------------------------------------------------------
    def location(self, offset: int) -> str:
        if self._newlines is None:
            self._newlines = [m.start() for m in re.finditer("\n", self.text)]
        line = bisect.bisect_left(self._newlines, offset)
        start = self._newlines[line - 1] + 1 if line else 0
        return f"{self.filename}:{line + 1}:{offset - start + 1}"

    def problem_at(self, offset: int, message: str) -> Problem:
        """A problem found at a text offset (a syntax error): FILE:LINE:COL, or `$` with the line
        and column in the message when locating by JSON path."""
        where = self.location(offset)
        if not self.by_path:
            return Problem(where, message)
        line, column = where.rsplit(":", 2)[1:]
        return Problem("$", f"{message} at line {line}, column {column}")

    def duplicate(self, offset: int, path: Path, key: str) -> Problem:
        """A duplicate key: refused rather than letting the last (or first) value win, since a
        repeated `apps` could hide what the first one listed."""
        where = json_path((*path, key)) if self.by_path else self.location(offset)
        return Problem(where, f"duplicate key {key!r} in {json_path(path)}")

    def where(self, path: Path) -> str:
        path = tuple(path)
        if self.by_path:
            return json_path(path)
        if len(path) > 2 and path[:2] in self.offsets:
            entry = path[:2]
            if entry not in self._entry_offsets:
                marks: dict[Path, int] = {}
                with contextlib.suppress(_NotJsonError, RecursionError):  # it decoded before
                    self._read(self.offsets[entry], entry, marks, [])
                self._entry_offsets[entry] = marks
            marks = self._entry_offsets[entry]
            probe = path
            while len(probe) > 2:
                if probe in marks:
                    return self.location(marks[probe])
                probe = probe[:-1]
        probe = path
        while probe not in self.offsets and probe:
            probe = probe[:-1]
        return self.location(self.offsets.get(probe, 0))

    # decoding -----------------------------------------------------------------------------
    def load(self) -> tuple[object, dict[Path, list[Problem]]]:
        """The decoded value and problems found per entry (duplicate keys). Raises InvalidInput."""
        early: dict[Path, list[Problem]] = {}
        deep = json_too_deep(self.text)
        if deep is not None:
            problem = self.problem_at(deep, too_deep())
            raise InvalidInput(f"{self.filename}: {problem}", problems=[problem])
        try:
            value = self._top(early)
        except _NotJsonError as exc:
            problem = self.problem_at(exc.pos, exc.message)
            raise InvalidInput(f"{self.filename}: {problem}", problems=[problem]) from None
        return value, early

    def _syntax(self, pos: int) -> _NotJsonError:
        """The standard library's description of the first syntax error (at or before pos)."""
        try:
            json.loads(self.text)
        except json.JSONDecodeError as exc:
            return _NotJsonError(exc.pos, f"not valid JSON: {exc.msg}")
        return _NotJsonError(pos, "not valid JSON")  # pragma: no cover - the scanners agree

    def _ws(self, pos: int) -> int:
        match = _JSON_WS.match(self.text, pos)
        assert match is not None
        return match.end()

    def _value(self, pos: int, path: Path, problems: list[Problem]) -> tuple[Any, int]:
        """Decode one value fast; re-read it slowly only if it has a duplicate key."""
        try:
            return _DECODER.raw_decode(self.text, pos)
        except json.JSONDecodeError as exc:
            raise _NotJsonError(exc.pos, f"not valid JSON: {exc.msg}") from None
        except ValueError as exc:  # e.g. an integer of more than 4300 digits
            raise _NotJsonError(pos, f"not valid JSON: {exc}") from None
        except _DuplicateKeyError:
            marks: dict[Path, int] = {}
            return self._read(pos, path, marks, problems)

    def _top(self, early: dict[Path, list[Problem]]) -> object:
        text = self.text
        pos = self._ws(0)
        self.offsets[()] = pos
        if not text.startswith("{", pos):
            value, end = self._value(pos, (), [])
            if self._ws(end) != len(text):
                raise self._syntax(end)
            return value
        result: dict[str, Any] = {}
        pos = self._ws(pos + 1)
        if text.startswith("}", pos):
            pos += 1
        else:
            while True:
                if not text.startswith('"', pos):
                    raise self._syntax(pos)
                key_pos = pos
                key, pos = self._value(pos, (), [])
                pos = self._ws(pos)
                if not text.startswith(":", pos):
                    raise self._syntax(pos)
                pos = self._ws(pos + 1)
                self.offsets[(key,)] = pos
                problems: list[Problem] = []
                if key in ("people", "devices") and text.startswith("[", pos):
                    value, pos = self._entries(pos, key, early)
                else:
                    value, pos = self._value(pos, (key,), problems)
                if problems:  # a duplicate key inside a top-level value
                    raise InvalidInput(f"{self.filename}: {problems[0]}", problems=problems)
                if key in result:
                    problem = self.duplicate(key_pos, (), key)
                    raise InvalidInput(f"{self.filename}: {problem}", problems=[problem])
                result[key] = value
                pos = self._ws(pos)
                if text.startswith(",", pos):
                    pos = self._ws(pos + 1)
                    continue
                if text.startswith("}", pos):
                    pos += 1
                    break
                raise self._syntax(pos)
        if self._ws(pos) != len(text):
            raise self._syntax(self._ws(pos))
        return result

    def _entries(
        self, pos: int, key: str, early: dict[Path, list[Problem]]
    ) -> tuple[list[Any], int]:
        text = self.text
        items: list[Any] = []
        pos = self._ws(pos + 1)
        if text.startswith("]", pos):
            return items, pos + 1
        while True:
            path: Path = (key, len(items))
            self.offsets[path] = pos
            problems: list[Problem] = []
            value, pos = self._value(pos, path, problems)
            if problems:
                early[path] = problems
            items.append(value)
            pos = self._ws(pos)
            if text.startswith(",", pos):
                pos = self._ws(pos + 1)
                continue
            if text.startswith("]", pos):
                return items, pos + 1
            raise self._syntax(pos)

    def _read(
        self, pos: int, path: Path, marks: dict[Path, int], problems: list[Problem]
    ) -> tuple[Any, int]:
        """Decode one value slowly, recording the offset of every value inside it and reporting
        duplicate keys (the first of equal keys is kept)."""
        text = self.text
        marks[path] = pos
        if text.startswith("{", pos):
            result: dict[str, Any] = {}
            pos = self._ws(pos + 1)
            if text.startswith("}", pos):
                return result, pos + 1
            while True:
                if not text.startswith('"', pos):
                    raise self._syntax(pos)
                key_pos = pos
                key, pos = self._scalar(pos)
                pos = self._ws(pos)
                if not text.startswith(":", pos):
                    raise self._syntax(pos)
                pos = self._ws(pos + 1)
                if key in result:
                    problems.append(self.duplicate(key_pos, path, key))
                    _, pos = self._read(pos, (*path, key, "#duplicate"), {}, problems)
                else:
                    result[key], pos = self._read(pos, (*path, key), marks, problems)
                pos = self._ws(pos)
                if text.startswith(",", pos):
                    pos = self._ws(pos + 1)
                elif text.startswith("}", pos):
                    return result, pos + 1
                else:
                    raise self._syntax(pos)
        if text.startswith("[", pos):
            items: list[Any] = []
            pos = self._ws(pos + 1)
            if text.startswith("]", pos):
                return items, pos + 1
            while True:
                item, pos = self._read(pos, (*path, len(items)), marks, problems)
                items.append(item)
                pos = self._ws(pos)
                if text.startswith(",", pos):
                    pos = self._ws(pos + 1)
                elif text.startswith("]", pos):
                    return items, pos + 1
                else:
                    raise self._syntax(pos)
        return self._scalar(pos)

    def _scalar(self, pos: int) -> tuple[Any, int]:
        try:
            return _DECODER.raw_decode(self.text, pos)
        except json.JSONDecodeError as exc:
            raise _NotJsonError(exc.pos, f"not valid JSON: {exc.msg}") from None
        except ValueError as exc:  # e.g. an integer of more than 4300 digits
            raise _NotJsonError(pos, f"not valid JSON: {exc}") from None
