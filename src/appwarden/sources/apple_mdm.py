"""Apple MDM command results: NanoMDM/MicroMDM webhook envelopes, or raw result plists.

docs/sources/apple-mdm.md is the contract. A file is one webhook envelope (JSON), a JSON-lines file
of envelopes, or one plist (XML, a bare `<dict>` too, or binary): a device's result, or a command
the server sent. An InstalledApplicationList result lists bundle ids; what it proves depends on the
command that asked for it (`Identifiers`: a targeted check; `ManagedAppsOnly`: managed apps only),
so `parse_apple_mdm_run` reads all the files of one run together and ties each result to its
command by CommandUUID.
"""

from __future__ import annotations

import base64
import binascii
import plistlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final
from xml.parsers.expat import ExpatError

from appwarden.devices.schemas import AppSeen, DeviceFacts, InventoryBatch, ReportFacts
from appwarden.documents import too_large
from appwarden.errors import InvalidInput, Problem
from appwarden.sources.common import (
    Collector,
    FieldError,
    Fields,
    ImportOptions,
    finish_run,
    load_json_text,
    read_json_lines,
)
from appwarden.sources.native import MAX_BYTES, MAX_NAME_CHARS, decode_input
from appwarden.vocabulary import (
    AppNamespace,
    DeviceNamespace,
    EvidenceKind,
    FormFactor,
    Ownership,
    Platform,
)

SOURCE: Final = "apple-mdm"
BUNDLE_ID: Final = AppNamespace.APPLE_BUNDLE_ID.value
# Statuses a device sends when it could not run the command now: normal, nothing to report.
_NOT_NOW: Final = frozenset({"NotNow", "Idle"})
# The one document type declaration a plist carries. expat never fetches it; any other DOCTYPE,
# and every ENTITY declaration, is refused before parsing (entity expansion is a memory bomb).
_APPLE_DOCTYPE: Final = re.compile(
    rb'<!DOCTYPE\s+plist\s+PUBLIC\s+"-//Apple//DTD PLIST 1\.0//EN"\s+'
    rb'"http://www\.apple\.com/DTDs/PropertyList-1\.0\.dtd"\s*>'
)
_DECLARATION: Final = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


# ── reading a plist safely ──────────────────────────────────────────────────────────────────


def load_plist(data: bytes, *, max_bytes: int, what: str) -> Any:
    """A plist (binary, XML, or a bare `<dict>` without the `<plist>` wrapper). Raises FieldError
    naming `what` for anything else."""
    if len(data) > max_bytes:
        raise too_large(what, len(data), max_bytes)
    if data.startswith(b"bplist00"):
        fmt = plistlib.FMT_BINARY
    else:
        fmt = plistlib.FMT_XML
        if _DECLARATION.search(_APPLE_DOCTYPE.sub(b"", data)):
            raise FieldError("a plist with a DOCTYPE other than Apple's, or an ENTITY, is refused")
    try:
        return plistlib.loads(data, fmt=fmt)
    except (plistlib.InvalidFileException, ExpatError, ValueError, TypeError, OverflowError) as exc:
        raise FieldError(f"not a valid plist: {exc}") from None
    except (RecursionError, MemoryError, KeyError, IndexError):  # a hostile binary plist
        raise FieldError("not a valid plist: its object table is malformed") from None


# ── one command, one result ─────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class Command:
    """What the server asked (only InstalledApplicationList's options matter here)."""

    uuid: str
    request_type: str | None
    identifiers: tuple[str, ...]
    managed_only: bool


def read_command(fields: Fields) -> Command:
    command = fields.obj("Command")
    if command is None:
        raise fields.fail("Command", "a command plist needs a Command dictionary")
    return Command(
        uuid=fields.required_text("CommandUUID"),
        request_type=command.text("RequestType"),
        identifiers=tuple(command.strings("Identifiers")),
        managed_only=bool(command.boolean("ManagedAppsOnly")),
    )


@dataclass(frozen=True, slots=True)
class Result:
    """One device's answer to one command, with the envelope's facts when there was one."""

    where: str
    command_uuid: str | None
    status: str
    udid: str | None
    enrollment_id: str | None
    apps: tuple[AppSeen, ...] | None  # None: not an InstalledApplicationList answer
    info: Fields | None  # QueryResponses of a DeviceInformation answer
    observed_at: datetime | None

    @property
    def user_enrollment(self) -> bool:
        return self.udid is None and self.enrollment_id is not None


def _apps(fields: Fields) -> tuple[AppSeen, ...] | None:
    if fields.raw("InstalledApplicationList") is None:
        return None
    apps = []
    for row in fields.objects("InstalledApplicationList"):
        identifier = row.text("Identifier")  # may be missing on macOS: nothing to match then
        if identifier is None:
            continue
        version = row.text("ShortVersion") or row.text("Version")
        apps.append(
            AppSeen(BUNDLE_ID, identifier, version, row.text("Name", max_chars=MAX_NAME_CHARS))
        )
    return tuple(apps)


def read_result(
    payload: Fields, *, envelope: Fields | None = None, observed_at: datetime | None = None
) -> Result:
    """A result plist; the envelope's `udid`, `enrollment_id`, `status` and `command_uuid` win
    over the plist's own keys (they are what the MDM server recorded)."""
    env = envelope or payload

    def either(env_key: str, plist_key: str) -> str | None:
        return (env.text(env_key) if envelope else None) or payload.text(plist_key)

    status = either("status", "Status")
    if status is None:
        raise payload.fail("Status", "is required and missing or empty")
    return Result(
        where=env.where,
        command_uuid=either("command_uuid", "CommandUUID"),
        status=status,
        udid=either("udid", "UDID"),
        enrollment_id=either("enrollment_id", "EnrollmentID"),
        apps=_apps(payload),
        info=payload.obj("QueryResponses"),
        observed_at=observed_at,
    )


def _platform(info: Fields) -> tuple[Platform | None, FormFactor | None]:
    name = (info.text("ModelName") or info.text("ProductName") or "").casefold()
    if not name:
        return None, None
    if name.startswith("iphone"):
        return Platform.IOS, FormFactor.PHONE
    if name.startswith("ipad"):
        return Platform.IPADOS, FormFactor.TABLET
    if name.startswith("macbook"):
        return Platform.MACOS, FormFactor.LAPTOP
    if name.startswith(("mac", "imac")):
        return Platform.MACOS, None
    return Platform.UNKNOWN, FormFactor.UNKNOWN  # Apple TV, Apple Watch, Vision Pro


def device_facts(result: Result) -> DeviceFacts:
    """The device a result is about; a DeviceInformation answer adds serial, EAS id, platform."""
    pairs: list[tuple[str, str]] = []
    if result.udid:
        pairs.append((DeviceNamespace.UDID.value, result.udid))
    if result.enrollment_id and not result.udid:
        pairs.append((DeviceNamespace.ENROLLMENT_ID.value, result.enrollment_id))
    platform = form_factor = name = None
    if result.info is not None:
        for key, namespace in (
            ("SerialNumber", DeviceNamespace.SERIAL),
            ("EASDeviceIdentifier", DeviceNamespace.EAS_DEVICE_ID),
        ):
            value = result.info.text(key)
            if value:
                pairs.append((namespace.value, value))
        platform, form_factor = _platform(result.info)
        name = result.info.text("DeviceName", max_chars=MAX_NAME_CHARS)
    return DeviceFacts(
        identifiers=tuple(pairs),
        platform=platform,
        form_factor=form_factor,
        ownership=Ownership.PERSONAL if result.user_enrollment else None,
        name=name,
    )


def report_for(result: Result, command: Command | None) -> ReportFacts | None:
    """The report of an acknowledged InstalledApplicationList answer (None for anything else)."""
    if result.apps is None:
        return None
    device = device_facts(result)
    base = ReportFacts(
        device, SOURCE, EvidenceKind.INVENTORY, result.observed_at, where=result.where
    )
    if result.user_enrollment or (command is not None and command.managed_only):
        return replace(base, evidence_kind=EvidenceKind.MANAGED_ONLY, apps=result.apps)
    if command is not None and command.identifiers:
        asked = {i.casefold(): i for i in command.identifiers}
        present = tuple(a for a in result.apps if a.value.casefold() in asked)
        checked = tuple((BUNDLE_ID, i) for i in asked.values())
        return replace(
            base, evidence_kind=EvidenceKind.TARGETED_CHECK, apps=present, checked=checked
        )
    return replace(base, apps=result.apps, coverage=(BUNDLE_ID,))


# ── one file ────────────────────────────────────────────────────────────────────────────────


@dataclass
class FileItems:
    """What one file holds, before results are tied to commands."""

    out: Collector
    commands: list[Command] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)


def _guard(items: FileItems, where: str, read: Any, *args: Any) -> None:
    """Run `read`; a FieldError skips that one record, located at `where` and its JSON path."""
    try:
        read(items, *args)
    except FieldError as exc:
        items.out.skip(where, exc.message)


def _plist_record(items: FileItems, value: Any, label: str) -> None:
    fields = Fields.of(value, label, ())
    if fields.raw("Command") is not None:
        items.commands.append(read_command(fields))
    else:
        items.results.append(read_result(fields))


def _envelope(items: FileItems, value: Any, label: str, max_bytes: int) -> None:
    envelope = Fields.of(value, label, ())
    event = envelope.obj("acknowledge_event")
    if event is None:
        if envelope.raw("checkin_event") is not None:
            return  # check-ins (Authenticate, TokenUpdate, CheckOut) carry no app list
        raise envelope.fail("acknowledge_event", "neither acknowledge_event nor checkin_event")
    observed_at = envelope.instant("created_at")
    encoded = event.required_text("raw_payload", max_chars=max_bytes * 2)
    try:
        data = base64.b64decode(encoded, validate=True)
        payload = Fields.of(
            load_plist(data, max_bytes=max_bytes, what=label), f"{label} raw_payload", ()
        )
    except (binascii.Error, FieldError) as exc:
        reason = exc.message if isinstance(exc, FieldError) else f"not base64: {exc}"
        raise event.fail("raw_payload", reason) from None
    items.results.append(read_result(payload, envelope=event, observed_at=observed_at))


def _json_values(text: str, filename: str, max_bytes: int) -> Iterator[tuple[str, Any]]:
    """One envelope, or JSON lines of them (a line that is not JSON yields its error)."""
    if not text.strip():
        return  # an empty JSON-lines file: no events
    try:
        value = load_json_text(text, filename)
    except InvalidInput:
        if sum(1 for line in text.splitlines() if line.strip()) <= 1:
            raise  # one line that is not JSON: the file is not JSON
        yield from read_json_lines(text, filename, max_bytes=max_bytes)
        return
    yield filename, value


def read_file(text: str | bytes, filename: str, *, max_bytes: int) -> FileItems:
    """One file of a run; InvalidInput when it is neither a plist nor JSON envelopes."""
    data = text.encode() if isinstance(text, str) else text
    items = FileItems(Collector(filename, SOURCE))
    if data.startswith(b"bplist00") or data.lstrip().lstrip(b"\xef\xbb\xbf").startswith(b"<"):
        try:
            value = load_plist(data, max_bytes=max_bytes, what=filename)
        except FieldError as exc:
            raise InvalidInput(
                f"{filename}: {exc.message}", problems=[Problem(filename, exc.message)]
            ) from None
        _guard(items, filename, _plist_record, value, filename)
        return items
    decoded = decode_input(data, filename, max_bytes=max_bytes)
    for where, value in _json_values(decoded, filename, max_bytes):
        if isinstance(value, InvalidInput):
            items.out.skip(where, value.problems[0].message if value.problems else value.message)
            continue
        _guard(items, where, _envelope, value, where, max_bytes)
    return items


# ── a run ───────────────────────────────────────────────────────────────────────────────────


def _outcome(items: FileItems, commands: dict[str, Command]) -> None:
    """Each result of a file becomes a report, facts, nothing (NotNow), or a skipped record."""
    for result in items.results:
        if result.status in _NOT_NOW:
            continue
        if result.status != "Acknowledged":
            items.out.skip(
                result.where,
                f"the device answered {result.status!r} to command {result.command_uuid!r}: "
                "no report",
            )
            continue
        facts = device_facts(result)
        if not facts.identifiers:
            items.out.skip(result.where, "the result names no UDID or EnrollmentID")
            continue
        report = report_for(result, commands.get(result.command_uuid or ""))
        if report is not None:
            items.out.report(report)
        elif result.info is not None:
            items.out.devices.append(facts)


def parse_apple_mdm_run(
    files: list[tuple[str, str | bytes]],
    *,
    strict: bool = False,
    max_bytes: int = MAX_BYTES,
    options: ImportOptions | None = None,
) -> list[InventoryBatch]:
    """All the files of one import run, one batch per file (in order); a result is tied to the
    command plist of the run with its CommandUUID. A file that is neither JSON nor a plist refuses
    the whole run (every bad file named); with `strict`, so does any skipped record."""
    del options  # the signature every mapping shares; MDM results need nothing beyond themselves
    run: list[FileItems] = []
    problems: list[Problem] = []
    for filename, text in files:
        try:
            run.append(read_file(text, filename, max_bytes=max_bytes))
        except InvalidInput as exc:
            problems += exc.problems or [Problem(filename, exc.message)]
    if problems:
        raise InvalidInput(f"{len(problems)} file(s) cannot be read", problems=problems)
    commands = {c.uuid: c for items in run for c in items.commands}
    for items in run:
        _outcome(items, commands)
    return finish_run([items.out for items in run], strict=strict)


def parse_apple_mdm(
    text: str | bytes,
    filename: str,
    *,
    strict: bool = False,
    max_bytes: int = MAX_BYTES,
    options: ImportOptions | None = None,
) -> InventoryBatch:
    """One file on its own: a run of one file (`parse_apple_mdm_run`)."""
    run = parse_apple_mdm_run(
        [(filename, text)], strict=strict, max_bytes=max_bytes, options=options
    )
    return run[0]


__all__ = ["load_plist", "parse_apple_mdm", "parse_apple_mdm_run"]
