"""CSV inventory files (`appwarden import csv FILE`): parsing and validation only.

One row per (device, app) under a header row; `docs/inventory-native.md` documents the columns.
Rows with the same `device_identifiers` (the same `namespace:value` tokens, in any order) form one
report. Problems are located as `FILE:ROW:COLUMN`, ROW being the line of the file where the row
starts (the header is row 1) and COLUMN the header name.

A bad row skips its whole device (every row of it) — never one app of it, which would fake
absence — and is recorded in `InventoryBatch.skipped`; `strict=True` raises InvalidInput listing
every problem.
Problems with the file itself (size, encoding, NUL bytes, broken quoting, the header) always raise.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from appwarden.devices.schemas import AppSeen, DeviceFacts, InventoryBatch, PersonFacts, ReportFacts
from appwarden.errors import InvalidInput, Problem
from appwarden.sources.native import (
    ANSWER_KINDS,
    MAX_APPS_PER_REPORT,
    MAX_IDENTIFIER_CHARS,
    MAX_NAME_CHARS,
    FieldError,
    app_coverage_problems,
    check_email,
    check_enum,
    check_identifier_value,
    check_instant,
    check_resource,
    check_source_name,
    check_time_zone,
    clean_text,
    decode_input,
    dedupe,
    dedupe_apps,
    show,
    too_many_apps,
)
from appwarden.vocabulary import (
    AppNamespace,
    DeviceNamespace,
    EvidenceKind,
    FormFactor,
    Ownership,
    Platform,
)

MAX_BYTES: Final = 64 * 1024 * 1024

# Every column a CSV inventory may have, in the documented order.
COLUMNS: Final = (
    "owner_email",
    "owner_name",
    "owner_time_zone",
    "device_identifiers",
    "platform",
    "form_factor",
    "ownership",
    "resources",
    "device_name",
    "source",
    "evidence_kind",
    "observed_at",
    "app_namespace",
    "app_value",
    "app_version",
    "app_name",
)
REQUIRED_COLUMNS: Final = ("device_identifiers", "source", "evidence_kind")
# Columns that describe the device, its owner or the report: equal on every row of a device
# (an empty cell says nothing and agrees with anything).
DEVICE_COLUMNS: Final = (
    "owner_email",
    "owner_name",
    "owner_time_zone",
    "platform",
    "form_factor",
    "ownership",
    "resources",
    "device_name",
    "source",
    "evidence_kind",
    "observed_at",
)
APP_COLUMNS: Final = ("app_namespace", "app_value", "app_version", "app_name")


def _text(max_chars: int) -> Callable[[str], str]:
    return lambda s: clean_text(s, max_chars=max_chars)


def _resources(cell: str) -> tuple[str, ...]:
    return tuple(sorted({check_resource(token) for token in cell.split()}))


_CHECKS: Final[dict[str, Callable[[str], Any]]] = {
    "owner_email": check_email,
    "owner_name": _text(MAX_NAME_CHARS),
    "owner_time_zone": check_time_zone,
    "platform": lambda s: check_enum(s, Platform),
    "form_factor": lambda s: check_enum(s, FormFactor),
    "ownership": lambda s: check_enum(s, Ownership),
    "resources": _resources,
    "device_name": _text(MAX_NAME_CHARS),
    "source": check_source_name,
    "evidence_kind": lambda s: check_enum(s, EvidenceKind),
    "observed_at": check_instant,
}


@dataclass
class _Row:
    line: int
    cells: dict[str, str]  # column -> cell, for the columns the row has


@dataclass
class _Device:
    key: tuple[str, ...]
    rows: list[_Row] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def parse_csv(
    text: str | bytes, filename: str, *, strict: bool = False, max_bytes: int = MAX_BYTES
) -> InventoryBatch:
    """Parse and validate a CSV inventory; problems are located as FILE:ROW:COLUMN."""
    decoded = decode_input(text, filename, max_bytes=max_bytes)
    nul = decoded.find("\x00")
    if nul >= 0:
        where = f"{filename}:{decoded.count(chr(10), 0, nul) + 1}"
        raise InvalidInput(
            f"{where}: contains a NUL byte", problems=[Problem(where, "contains a NUL byte")]
        )
    rows = _read_rows(decoded, filename)
    if not rows:
        message = "the file is empty; expected a header row naming the columns"
        raise InvalidInput(f"{filename}: {message}", problems=[Problem(filename, message)])
    header_line, header_cells = rows[0]
    header = _header(header_cells, header_line, filename)

    devices: dict[tuple[str, ...], _Device] = {}
    for line, cells in rows[1:]:
        by_column = dict(zip(header, cells, strict=False))
        key = tuple(sorted(set(by_column.get("device_identifiers", "").split())))
        device = devices.setdefault(key, _Device(key))
        device.rows.append(_Row(line, by_column))
        if len(cells) != len(header):
            column = header[-1] if len(cells) > len(header) else header[len(cells)]
            device.problems.append(
                Problem(
                    f"{filename}:{line}:{column}",
                    f"the row has {len(cells)} fields; the header has {len(header)}",
                )
            )

    people: dict[str, PersonFacts] = {}
    given_on: dict[tuple[str, str], int] = {}
    reports: list[ReportFacts] = []
    problems: list[Problem] = []
    for device in devices.values():
        report, person = _device(device, filename)
        if report is not None and person is not None and not device.problems:
            merged = _merge_person(people.get(person.email), person, device, filename, given_on)
            if merged is not None:
                people[person.email] = merged
        if device.problems:
            problems.extend(device.problems)
        elif report is not None:
            reports.append(report)
    if strict and problems:
        raise InvalidInput(f"{filename}: {len(problems)} problem(s)", problems=problems)
    return InventoryBatch(
        people=tuple(people.values()),
        reports=tuple(reports),
        skipped=tuple(str(p) for p in problems),
    )


def _read_rows(text: str, filename: str) -> list[tuple[int, list[str]]]:
    """(line where the row starts, cells) for every row that is not blank."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[int, list[str]]] = []
    previous = 0
    try:
        for cells in reader:
            start, previous = previous + 1, reader.line_num
            if any(cell.strip() for cell in cells):
                rows.append((start, cells))
    except csv.Error as exc:
        where = f"{filename}:{reader.line_num}"
        message = f"not valid CSV: {exc}"
        raise InvalidInput(f"{where}: {message}", problems=[Problem(where, message)]) from exc
    return rows


def _header(cells: list[str], line: int, filename: str) -> list[str]:
    names = [cell.strip().lower() for cell in cells]
    problems: list[Problem] = []
    for i, name in enumerate(names):
        if not name:
            problems.append(Problem(f"{filename}:{line}:{i + 1}", "a column has no name"))
        elif name not in COLUMNS:
            problems.append(
                Problem(
                    f"{filename}:{line}:{name}",
                    f"unknown column {show(name)}; the columns are: {', '.join(COLUMNS)}",
                )
            )
        elif name in names[:i]:
            problems.append(Problem(f"{filename}:{line}:{name}", f"column {name!r} appears twice"))
    for name in REQUIRED_COLUMNS:
        if name not in names:
            problems.append(Problem(f"{filename}:{line}", f"missing required column {name!r}"))
    pairs = (
        ("app_namespace", "app_value"),
        ("app_value", "app_namespace"),
        ("app_version", "app_value"),
        ("app_name", "app_value"),
        ("owner_name", "owner_email"),
        ("owner_time_zone", "owner_email"),
    )
    for name, needs in pairs:
        if name in names and needs not in names:
            problems.append(
                Problem(
                    f"{filename}:{line}:{name}", f"column {name!r} needs the {needs!r} column too"
                )
            )
    if problems:
        raise InvalidInput(f"{filename}: {len(problems)} problem(s)", problems=problems)
    return names


_Fail = Callable[[_Row, str, str], None]  # record a problem at (row, column)


@dataclass
class _DeviceValues:
    """The checked device columns of one device: each value, the row it was first given on, and
    the (column, cell) pairs that failed their check (reported once)."""

    values: dict[str, Any] = field(default_factory=dict)
    given_on: dict[str, _Row] = field(default_factory=dict)
    bad_cells: set[tuple[str, str]] = field(default_factory=set)

    def bad(self, column: str) -> bool:
        return any(c == column for c, _ in self.bad_cells)


def _device(device: _Device, filename: str) -> tuple[ReportFacts | None, PersonFacts | None]:
    """Validate every row of one device; problems go to device.problems."""
    first = device.rows[0]

    def fail(row: _Row, column: str, message: str) -> None:
        device.problems.append(Problem(f"{filename}:{row.line}:{column}", message))

    identifiers = _identifiers(first, fail)
    checked = _device_values(device.rows, fail)
    apps, first_app = _device_apps(device.rows, fail)
    _check_report(checked, first, apps=len(apps), app_row=first_app or first, fail=fail)
    device.problems.sort(key=lambda p: int(p.where.rsplit(":", 2)[-2]))  # by row, stably
    kind: EvidenceKind | None = checked.values.get("evidence_kind")
    if device.problems or identifiers is None or kind is None:
        return None, None
    values = checked.values
    owner = values.get("owner_email")
    facts = DeviceFacts(
        identifiers=identifiers,
        platform=values.get("platform"),
        form_factor=values.get("form_factor"),
        ownership=values.get("ownership"),
        owner_email=owner,
        resources=values.get("resources"),
        name=values.get("device_name"),
    )
    report = ReportFacts(
        device=facts,
        source=values["source"],
        evidence_kind=kind,
        observed_at=values.get("observed_at"),
        apps=dedupe_apps(apps),
        where=f"{filename}:{first.line}:device_identifiers",
    )
    person = None
    if owner is not None:
        person = PersonFacts(
            email=owner,
            display_name=values.get("owner_name") or None,
            time_zone=values.get("owner_time_zone"),
        )
    return report, person


def _device_values(rows: list[_Row], fail: _Fail) -> _DeviceValues:
    """Check every device column on every row; a non-empty cell must agree with the others."""
    checked = _DeviceValues()
    for row in rows:
        for column in DEVICE_COLUMNS:
            cell = row.cells.get(column, "").strip()
            if not cell or (column, cell) in checked.bad_cells:
                continue
            try:
                value = _CHECKS[column](cell)
            except FieldError as bad:
                checked.bad_cells.add((column, cell))
                fail(row, column, f"{column}: {bad.message}")
                continue
            if column not in checked.values:
                checked.values[column], checked.given_on[column] = value, row
            elif checked.values[column] != value:
                fail(
                    row,
                    column,
                    f"{column} {show(cell)} differs from {_shown(checked.values[column])} on row "
                    f"{checked.given_on[column].line} of the same device",
                )
    return checked


def _device_apps(rows: list[_Row], fail: _Fail) -> tuple[list[AppSeen], _Row | None]:
    """The apps of the device's rows, at most MAX_APPS_PER_REPORT, and the row of the first."""
    apps: list[AppSeen] = []
    first_app: _Row | None = None
    for row in rows:
        app = _app(row, fail)
        if app is not None:
            apps.append(app)
            first_app = first_app or row
            if len(apps) == MAX_APPS_PER_REPORT + 1:
                fail(row, "app_value", too_many_apps(len(apps)) or "")
    return apps, first_app


def _check_report(
    checked: _DeviceValues, first: _Row, *, apps: int, app_row: _Row, fail: _Fail
) -> None:
    """The rules across columns: source and evidence kind given, a kind CSV can carry whose apps
    agree with it, and owner attributes only with an owner."""
    values = checked.values
    kind: EvidenceKind | None = values.get("evidence_kind")
    for column in ("source", "evidence_kind"):
        if column not in values and not checked.bad(column):
            fail(first, column, f"{column} is required")
    if kind in ANSWER_KINDS:
        fail(
            checked.given_on["evidence_kind"],
            "evidence_kind",
            f"{kind} reports cannot be written in CSV (they need the checked identifiers); "
            "use the native format",
        )
    elif kind is not None:
        for _, message in app_coverage_problems(kind, apps=apps, has_coverage=False, checked=0):
            fail(app_row, "app_namespace", message)
    if values.get("owner_email") is None and not checked.bad("owner_email"):
        for column in ("owner_name", "owner_time_zone"):
            if column in values:
                fail(checked.given_on[column], column, f"{column} is given without an owner_email")


def _shown(value: object) -> str:
    if isinstance(value, tuple):
        return show(" ".join(value))
    if hasattr(value, "isoformat"):
        return show(value.isoformat())
    return show(str(value))


def _identifiers(row: _Row, fail: _Fail) -> tuple[tuple[str, str], ...] | None:
    cell = row.cells.get("device_identifiers", "")
    tokens = cell.split()
    if not tokens:
        fail(row, "device_identifiers", "device_identifiers must not be empty")
        return None
    pairs: list[tuple[str, str]] = []
    ok = True
    for token in tokens:
        namespace, colon, value = token.partition(":")
        try:
            if not colon:
                raise FieldError(
                    f"{show(token)} is not a namespace:value pair (like serial:C02XYZ)"
                )
            ns = check_enum(namespace, DeviceNamespace)
            pairs.append((str(ns), check_identifier_value(value)))
        except FieldError as bad:
            fail(row, "device_identifiers", f"device_identifiers: {bad.message}")
            ok = False
    return dedupe(pairs) if ok else None


def _app(row: _Row, fail: _Fail) -> AppSeen | None:
    cells = {c: row.cells.get(c, "").strip() for c in APP_COLUMNS}
    if not cells["app_namespace"] and not cells["app_value"]:
        for column in ("app_version", "app_name"):
            if cells[column]:
                fail(row, column, f"{column} is given without an app (app_namespace and app_value)")
        return None
    for column, other in (("app_namespace", "app_value"), ("app_value", "app_namespace")):
        if not cells[column]:
            fail(row, column, f"{column} is empty but {other} is not; give both or neither")
            return None
    result: dict[str, Any] = {}
    checks: dict[str, Callable[[str], Any]] = {
        "app_namespace": lambda s: check_enum(s, AppNamespace),
        "app_value": check_identifier_value,
        "app_version": _text(MAX_IDENTIFIER_CHARS),
        "app_name": _text(MAX_NAME_CHARS),
    }
    for column, check in checks.items():
        try:
            result[column] = check(cells[column])
        except FieldError as bad:
            fail(row, column, f"{column}: {bad.message}")
    if len(result) != len(checks):
        return None
    return AppSeen(
        namespace=str(result["app_namespace"]),
        value=result["app_value"],
        version=result["app_version"] or None,
        name=result["app_name"] or None,
    )


def _merge_person(
    known: PersonFacts | None,
    person: PersonFacts,
    device: _Device,
    filename: str,
    given_on: dict[tuple[str, str], int],
) -> PersonFacts | None:
    """Combine what two devices say about one owner. A contradiction is a problem of the later
    device (and None is returned). `given_on` remembers the row each owner attribute came from."""
    for attr, column in (("display_name", "owner_name"), ("time_zone", "owner_time_zone")):
        mine = getattr(person, attr)
        if mine is None:
            continue
        row = next(r for r in device.rows if r.cells.get(column, "").strip())
        theirs = getattr(known, attr) if known is not None else None
        if theirs is not None and mine != theirs:
            device.problems.append(
                Problem(
                    f"{filename}:{row.line}:{column}",
                    f"{column} {show(mine)} for {person.email} differs from {show(theirs)} "
                    f"on row {given_on[(person.email, column)]}",
                )
            )
    if device.problems:
        return None
    for column in ("owner_name", "owner_time_zone"):
        lines = [r.line for r in device.rows if r.cells.get(column, "").strip()]
        if lines:
            given_on.setdefault((person.email, column), lines[0])
    if known is None:
        return person
    return PersonFacts(
        email=known.email,
        display_name=known.display_name or person.display_name,
        time_zone=known.time_zone or person.time_zone,
    )
