"""The Apple MDM webhook (docs/sources/apple-mdm.md, "Live: the NanoMDM webhook"): NanoMDM (or
MicroMDM) posts each device answer as an envelope, one transaction per request.

An envelope is read by the unchanged Apple MDM mapping (`sources/apple_mdm.py`) as a run of one
file, preceded by the command it answers when that command was registered (`register_command`):
the webhook carries the answer without its question, and an `Identifiers` or `ManagedAppsOnly`
query answered without it would seem to be a full inventory. Each event is applied once: its
`event_id` (or, from a server that sends none, the digest of the body) is remembered.
"""

from __future__ import annotations

import hashlib
import plistlib
from dataclasses import dataclass, field
from typing import Any, Final

from appwarden.db.uow import UnitOfWork
from appwarden.devices.models import MdmCommand
from appwarden.devices.push import command_by_uuid, first_delivery, register_command
from appwarden.errors import InvalidInput, Problem
from appwarden.sources.apple_mdm import load_plist, parse_apple_mdm_run, read_command
from appwarden.sources.common import FieldError, Fields
from appwarden.usecases.ingest import Writer, ingest

MAX_EVENT_ID_CHARS: Final = 190
MAX_COMMAND_UUID_CHARS: Final = 200
# What a device answers when it will answer later, or has nothing to do: normal, nothing to apply.
_NOTHING_YET: Final = frozenset({"NotNow", "Idle"})


@dataclass
class WebhookResult:
    applied: bool  # False: a repeated delivery, a check-in, or an answer with nothing to apply
    reason: str
    reports_applied: int = 0
    decision_changes: int = 0
    skipped: list[str] = field(default_factory=list)


def _refused(where: str, message: str, what: str = "webhook") -> InvalidInput:
    return InvalidInput(f"{what}: {where}: {message}", problems=[Problem(where, message)])


def _in_body(exc: InvalidInput) -> InvalidInput:
    """The mapping's problems (`webhook: $.path: message`, the body read as a file named
    "webhook") located as JSON paths into the request body."""
    problems = []
    for problem in exc.problems:
        where, message = problem.where, problem.message
        if where.startswith("webhook") and message.startswith("$"):
            where, _, message = message.partition(": ")
        elif where.startswith("webhook: "):
            where = where.removeprefix("webhook: ")
        problems.append(Problem(where or "$", message))
    return InvalidInput(
        f"webhook: {len(problems)} problem(s); nothing was applied", problems=problems
    )


def _event_key(envelope: Fields, body: bytes) -> str:
    try:
        event_id = envelope.text("event_id", max_chars=MAX_EVENT_ID_CHARS)
    except FieldError as exc:
        where, _, message = exc.message.partition(": ")
        raise _refused(where, message) from None
    if event_id is not None:
        return f"id:{event_id}"
    return f"sha256:{hashlib.sha256(body).hexdigest()}"  # NanoMDM's webhook sends no event_id


def _command_plist(command: MdmCommand) -> bytes:
    """The registered command as the plist the mapping reads (only what it reads)."""
    asked: dict[str, Any] = {"Identifiers": list(command.identifiers)}
    if command.request_type:
        asked["RequestType"] = command.request_type
    if command.managed_only:
        asked["ManagedAppsOnly"] = True
    return plistlib.dumps({"CommandUUID": command.command_uuid, "Command": asked})


def receive_event(
    uow: UnitOfWork,
    envelope_value: Any,
    body: bytes,
    *,
    writer: Writer,
    minimise_personal: bool,
    max_bytes: int,
) -> WebhookResult:
    """Apply one envelope. A repeated event, a check-in, and an answer that is not yet one
    (`NotNow`, `Idle`) or is an error change nothing; anything the mapping cannot read refuses
    the whole request (InvalidInput), so nothing is remembered and nothing changes."""
    if not isinstance(envelope_value, dict):
        raise _refused("$", "expected a webhook envelope (a JSON object)")
    envelope = Fields(envelope_value, "webhook", ())
    key = _event_key(envelope, body)
    try:
        event = envelope.obj("acknowledge_event")
        status = event.text("status") if event is not None else None
        command_uuid = event.text("command_uuid") if event is not None else None
    except FieldError as exc:
        where, _, message = exc.message.partition(": ")
        raise _refused(where, message) from None
    if event is None and envelope.raw("checkin_event") is not None:
        return WebhookResult(False, "a check-in carries no app list")
    if event is not None and status != "Acknowledged":
        said = "will answer later" if status in _NOTHING_YET else f"answered {status!r}"
        return WebhookResult(False, f"the device {said}: nothing to apply")
    if not first_delivery(uow, key):
        return WebhookResult(False, "this event was already applied")
    files: list[tuple[str, str | bytes]] = []
    command = command_by_uuid(uow, command_uuid)
    if command is not None:
        files.append(("command", _command_plist(command)))
    files.append(("webhook", body))
    try:
        batch = parse_apple_mdm_run(files, strict=True, max_bytes=max_bytes)[-1]
    except InvalidInput as exc:
        raise _in_body(exc) from None
    result = ingest(uow, batch, minimise_personal=minimise_personal, writer=writer)
    return WebhookResult(
        True,
        "applied",
        reports_applied=result.reports_applied,
        decision_changes=len(result.decision_changes),
        skipped=result.skipped,
    )


def receive_command(uow: UnitOfWork, body: bytes, *, max_bytes: int) -> dict[str, Any]:
    """Register a command plist (as NanoMDM's enqueue API takes it), so its answers are read as
    what was asked."""
    try:
        fields = Fields.of(load_plist(body, max_bytes=max_bytes, what="command"), "command", ())
        command = read_command(fields)
        if len(command.uuid) > MAX_COMMAND_UUID_CHARS:
            raise fields.fail("CommandUUID", f"longer than {MAX_COMMAND_UUID_CHARS} characters")
    except FieldError as exc:
        where, sep, message = exc.message.partition(": ")
        if not (sep and where.startswith("$")):
            where, message = "$", exc.message
        raise _refused(where, message, "command") from None
    register_command(
        uow,
        command.uuid,
        command.request_type,
        list(command.identifiers),
        command.managed_only,
    )
    return {
        "command_uuid": command.uuid,
        "request_type": command.request_type,
        "identifiers": list(command.identifiers),
        "managed_only": command.managed_only,
    }
