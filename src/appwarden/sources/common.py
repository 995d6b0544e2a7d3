"""What every vendor mapping shares: reading one response page, locating its records, the
skip-or-strict rule, and the values vendors spell differently (times, addresses, identifiers).

A vendor module (`sources/fleet.py`, `sources/intune.py`, ...) is a pure function from the bytes
of one page, as the vendor's API or export tool wrote it, to an `InventoryBatch`: no store, no
settings, no clock (the import's time arrives in `ImportOptions`). Each record is read through a
`Fields` view, whose errors name the file and the JSON path of the bad value; a bad record skips
that whole device report (never one app inside it, which would fake absence) and `strict=True`
turns any skipped record into an error for the whole file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol, TypeVar

from appwarden.devices.schemas import DeviceFacts, InventoryBatch, PersonFacts, ReportFacts
from appwarden.documents import json_too_deep, too_deep
from appwarden.errors import InvalidInput, Problem
from appwarden.sources.native import (
    MAX_BYTES,
    MAX_IDENTIFIER_CHARS,
    FieldError,
    check_email,
    clean_text,
    decode_input,
    json_path,
    show,
    too_many_apps,
    type_name,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """What a mapping may need beyond the page itself."""

    # The import's logical time (`--at`, else now): what "recent" is measured against.
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # Exchange: a partnership confers `email` only if it synced within this window.
    email_activity_window: timedelta = timedelta(days=30)
    # AMAPI: the organisation's mapping of `enterprises/E/users/U` names to email addresses.
    amapi_users: Mapping[str, str] = field(default_factory=dict)


class SourceParser(Protocol):
    def __call__(
        self,
        text: str | bytes,
        filename: str,
        *,
        strict: bool = False,
        max_bytes: int = MAX_BYTES,
        options: ImportOptions | None = None,
    ) -> InventoryBatch: ...


# ── reading a page ──────────────────────────────────────────────────────────────────────────


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"the key {show(key)} is given twice in one object")
            seen.add(key)
    return result


def _located(filename: str, text: str, offset: int, message: str) -> InvalidInput:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    where = f"{filename}:{line}:{column}"
    return InvalidInput(f"{where}: {message}", problems=[Problem(where, message)])


def load_json_text(text: str, filename: str) -> Any:
    """One JSON value: no key twice in an object, no nesting past the depth limit."""
    deep = json_too_deep(text)
    if deep is not None:
        raise _located(filename, text, deep, too_deep())
    try:
        return json.loads(text, object_pairs_hook=_refuse_duplicates)
    except json.JSONDecodeError as exc:
        raise _located(filename, text, exc.pos, f"not valid JSON: {exc.msg}") from None
    except ValueError as exc:  # a duplicate key: json gives no offset, so name the file
        raise InvalidInput(f"{filename}: {exc}", problems=[Problem(filename, str(exc))]) from None


def read_json(text: str | bytes, filename: str, *, max_bytes: int) -> Any:
    """A whole page: size-limited, UTF-8 (a byte order mark is dropped), strict JSON."""
    return load_json_text(decode_input(text, filename, max_bytes=max_bytes), filename)


def read_json_lines(
    text: str | bytes, filename: str, *, max_bytes: int
) -> Iterator[tuple[str, Any]]:
    """A JSON-lines file (osquery's results log): (`FILE:LINE`, value) per non-blank line; a line
    that is not JSON yields an InvalidInput as its value, so the caller skips just that record."""
    decoded = decode_input(text, filename, max_bytes=max_bytes)
    for number, line in enumerate(decoded.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{filename}:{number}"
        try:
            yield where, load_json_text(line, filename)
        except InvalidInput as exc:  # located within the line alone: put it on its line
            yield (
                where,
                InvalidInput(
                    _on_line(exc.message, filename, where),
                    problems=[
                        Problem(_on_line(p.where, filename, where), p.message) for p in exc.problems
                    ],
                ),
            )


def _on_line(located: str, filename: str, where: str) -> str:
    """`FILE:1:COL` (or `FILE`) of a problem found in one line alone, as `FILE:LINE:COL`."""
    if located.startswith(f"{filename}:1:"):
        return where + located[len(filename) + 2 :]
    return where + located[len(filename) :] if located.startswith(filename) else located


def page_list(page: Any, key: str, filename: str, *, required: bool = True) -> list[Any]:
    """The list of records under `key` of a page object (a missing key is an empty page unless
    `required`); anything else makes the whole page invalid."""
    if not isinstance(page, dict):
        message = f"expected a JSON object with a {key!r} list, not {type_name(page)}"
        raise InvalidInput(f"{filename}: {message}", problems=[Problem(filename, message)])
    value = page.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        message = (
            f"expected a {key!r} list, not {type_name(value)}"
            if key in page
            else f"the page has no {key!r} list; is this a {key} response?"
        )
        raise InvalidInput(f"{filename}: {message}", problems=[Problem(filename, message)])
    return value


# ── one record ──────────────────────────────────────────────────────────────────────────────


_FRACTION = re.compile(r"\.(\d{6})\d+")
_VENDOR_ZERO_TIMES: Final = ("0001-01-01T00:00:00",)  # Graph's "never"


def parse_vendor_instant(text: str) -> datetime | None:
    """An RFC 3339 time as vendors write it (`Z`, up to 9 fractional digits); None for a vendor's
    placeholder for "never" (Graph's year 1). Raises FieldError for anything else."""
    value = text.strip()
    if value.startswith(_VENDOR_ZERO_TIMES):
        return None
    value = _FRACTION.sub(lambda m: "." + m.group(1), value)
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None or "T" not in value.upper():
        raise FieldError(f"{show(text)} is not an RFC 3339 time with an offset")
    return parsed.astimezone(UTC)


def parse_unix_time(value: object) -> datetime:
    """Seconds since 1970 as a number or a numeric string (osquery writes both)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise FieldError(f"expected seconds since 1970, not {type_name(value)}")
    try:
        seconds = float(value)
        return datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError):
        raise FieldError(f"{show(value)} is not a number of seconds since 1970") from None


@dataclass(frozen=True, slots=True)
class Fields:
    """Typed, located reads of one JSON object: `where` is `FILE: $.path` of the object."""

    data: Mapping[str, Any]
    filename: str
    path: tuple[str | int, ...] = ()

    @classmethod
    def of(cls, value: object, filename: str, path: tuple[str | int, ...]) -> Fields:
        if not isinstance(value, dict):
            raise FieldError(f"{json_path(path)}: expected an object, not {type_name(value)}")
        return cls(value, filename, path)

    @property
    def where(self) -> str:
        return f"{self.filename}: {json_path(self.path)}"

    def fail(self, key: str | int, message: str) -> FieldError:
        return FieldError(f"{json_path((*self.path, key))}: {message}")

    def raw(self, key: str) -> Any:
        return self.data.get(key)

    def text(self, key: str, *, max_chars: int = MAX_IDENTIFIER_CHARS) -> str | None:
        """A string field; None when absent, null or blank. Other types are errors."""
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, not {type_name(value)}")
        try:
            return clean_text(value, max_chars=max_chars) or None
        except FieldError as exc:
            raise self.fail(key, exc.message) from None

    def required_text(self, key: str, *, max_chars: int = MAX_IDENTIFIER_CHARS) -> str:
        value = self.text(key, max_chars=max_chars)
        if value is None:
            raise self.fail(key, "is required and missing or empty")
        return value

    def boolean(self, key: str) -> bool | None:
        value = self.data.get(key)
        if value is None or isinstance(value, bool):
            return value
        raise self.fail(key, f"expected true or false, not {type_name(value)}")

    def checked(self, key: str, check: Callable[[str], T]) -> T | None:
        """A string field run through a field check (`check_email`, `check_account`...); None
        when absent or blank, the check's complaint located at the field otherwise."""
        text = self.text(key)
        if text is None:
            return None
        try:
            return check(text)
        except FieldError as exc:
            raise self.fail(key, exc.message) from None

    def instant(self, key: str) -> datetime | None:
        return self.checked(key, parse_vendor_instant)

    def email(self, key: str) -> str | None:
        return self.checked(key, check_email)

    def obj(self, key: str) -> Fields | None:
        """A nested object; None when absent or null."""
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.fail(key, f"expected an object, not {type_name(value)}")
        return Fields(value, self.filename, (*self.path, key))

    def objects(self, key: str) -> list[Fields]:
        """A list of objects; [] when absent or null."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list, not {type_name(value)}")
        return [
            Fields.of(item, self.filename, (*self.path, key, i)) for i, item in enumerate(value)
        ]

    def strings(self, key: str) -> list[str]:
        """A list of strings; [] when absent or null; blanks dropped."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list, not {type_name(value)}")
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise FieldError(
                    f"{json_path((*self.path, key, i))}: expected a string, not {type_name(item)}"
                )
            try:
                text = clean_text(item, max_chars=MAX_IDENTIFIER_CHARS)
            except FieldError as exc:
                raise FieldError(f"{json_path((*self.path, key, i))}: {exc.message}") from None
            if text:
                out.append(text)
        return out


# ── collecting a page's records ─────────────────────────────────────────────────────────────


@dataclass
class Collector:
    """The records of one page, and the records it skipped with where and why."""

    filename: str
    source: str
    people: dict[str, PersonFacts] = field(default_factory=dict)
    devices: list[DeviceFacts] = field(default_factory=list)
    reports: list[ReportFacts] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def person(self, facts: PersonFacts) -> None:
        """A person entry; the first entry for an address wins within one page."""
        self.people.setdefault(facts.email, facts)

    def report(self, report: ReportFacts) -> None:
        problem = too_many_apps(len(report.apps))
        if problem:
            self.skip(report.where or self.filename, problem)
            return
        self.reports.append(report)

    def skip(self, where: str, message: str) -> None:
        self.problems.append(Problem(where, message))

    def each(
        self, items: list[Any], path: tuple[str | int, ...], read: Callable[[Fields], None]
    ) -> None:
        """Call `read` on each record of a page; a record it rejects (FieldError) is skipped
        whole, located at the bad value (`FILE: $.hosts[3].uuid`)."""
        for index, item in enumerate(items):
            self.one(item, (*path, index), read)

    def one(self, item: Any, path: tuple[str | int, ...], read: Callable[[Fields], None]) -> None:
        """Call `read` on the record at `path` (`()` for a file that is one record); a record it
        rejects (FieldError) is skipped whole, located at the bad value."""
        try:
            read(Fields.of(item, self.filename, path))
        except FieldError as exc:
            # `Fields` names the bad value's path; a mapping's own message names the record.
            where, sep, message = exc.message.partition(": ")
            if not (sep and where.startswith("$")):
                where, message = json_path(path), exc.message
            self.skip(f"{self.filename}: {where}", message)

    def finish(self, *, strict: bool) -> InventoryBatch:
        if strict and self.problems:
            count = len(self.problems)
            raise InvalidInput(
                f"{self.filename}: {count} bad record(s); --strict imports nothing from the file",
                problems=self.problems,
            )
        return InventoryBatch(
            source=self.source,
            people=tuple(self.people.values()),
            devices=tuple(self.devices),
            reports=tuple(self.reports),
            skipped=tuple(f"{p.where}: {p.message}" for p in self.problems),
        )


def finish_run(collectors: list[Collector], *, strict: bool) -> list[InventoryBatch]:
    """The batches of a run read as one (a crawl spans its files): with `strict`, one skipped
    record anywhere refuses the whole run, every problem listed."""
    batches: list[InventoryBatch] = []
    problems: list[Problem] = []
    for out in collectors:
        try:
            batches.append(out.finish(strict=strict))
        except InvalidInput as exc:
            problems += exc.problems
    if problems:
        raise InvalidInput(
            f"{len(problems)} bad record(s); --strict imports nothing from the run",
            problems=problems,
        )
    return batches


__all__ = [
    "Collector",
    "FieldError",
    "Fields",
    "ImportOptions",
    "SourceParser",
    "finish_run",
    "load_json_text",
    "page_list",
    "parse_unix_time",
    "parse_vendor_instant",
    "read_json",
    "read_json_lines",
    "type_name",
]
