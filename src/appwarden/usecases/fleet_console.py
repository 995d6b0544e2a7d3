"""What the admin console shows and does about devices and people (docs/console.md):
a device in full (with its decisions and history), the people and leavers, fact conflicts, and
the quarantine queue. Lists come a page at a time, keyed by id, in a fixed number of queries
whatever the fleet's size; actions are the CLI's own (`conflicts settle`, `devices merge`), plus
settling a quarantined report, and each is audited.

The device list itself is `usecases.inventory.device_page`, as `GET /v1/devices` serves it.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import func, select

from appwarden.access.models import DecisionRecord
from appwarden.audit.models import AuditEntry
from appwarden.audit.service import record
from appwarden.db.chunked import one_of
from appwarden.db.uow import UnitOfWork
from appwarden.devices.facts import conflict_json
from appwarden.devices.models import Device, DeviceOwnerHistory, FactConflict, Quarantine
from appwarden.devices.service import device_identifiers
from appwarden.errors import Conflict, InvalidInput, NotFound, Problem
from appwarden.identity.models import Person
from appwarden.identity.service import people_named, require
from appwarden.timeutil import iso
from appwarden.usecases.inventory import (
    MAX_FILTER_CHARS,
    MAX_REFERENCE_CHARS,
    DeviceFilters,
    device_detail_by_id,
    device_page,
    identifiers_of,
)
from appwarden.usecases.merge import merge_devices
from appwarden.usecases.paging import Page, Window, page_of
from appwarden.vocabulary import ConflictStatus, Permission, PersonStatus

Row = dict[str, Any]
#: A list's first page, of the default size.
FIRST_PAGE: Final = Window()
#: How many audit entries about a device its history shows (newest first).
MAX_HISTORY: Final = 50


def id_after(window: Window) -> int:
    """The id a keyed-by-id list continues after (0: from the start); `after` is the cursor its
    previous page handed out, and anything else is refused, located."""
    if window.after is None:
        return 0
    if not window.after.isdecimal() or len(window.after) > 18:
        raise InvalidInput(
            "after: not a cursor from a previous page",
            problems=[Problem("after", "not a cursor from a previous page")],
        )
    return int(window.after)


def id_key(row: Any) -> str:
    """The cursor a keyed-by-id list hands out after `row`."""
    return str(row.id)


def checked_choice(value: str | None, allowed: tuple[str, ...], where: str) -> str | None:
    """A list filter that must be one of `allowed` (empty: no filter), else refused at `where`."""
    if value is None or value == "":
        return None
    if value not in allowed:
        raise InvalidInput(
            f"{where}: expected one of {', '.join(allowed)}",
            problems=[Problem(where, f"expected one of: {', '.join(allowed)}")],
        )
    return value


def emails_of(uow: UnitOfWork, ids: set[int | None]) -> dict[int, str]:
    """The email of each person id (one query for a whole page of rows)."""
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    query = select(Person.id, Person.email).where(one_of(Person.id, wanted))
    return {row.id: row.email for row in uow.session.execute(query)}


# ── devices ────────────────────────────────────────────────────────────────────────────────


def device_list(uow: UnitOfWork, filters: DeviceFilters, window: Window = FIRST_PAGE) -> Page[Row]:
    """The devices matching every filter, in id order, as `GET /v1/devices` pages them (its own
    cursor, handed back as `after`): search by person, by identifier (`namespace:value` or a bare
    value: a serial, say), by platform, source or state."""
    found = device_page(uow, filters, window.after, window.size, where=_query_name)
    return Page(found.devices, found.next_cursor)


def _query_name(name: str) -> str:
    return "after" if name == "cursor" else name


def device_view(uow: UnitOfWork, device_id: int) -> Row:
    """A device as `GET /v1/devices/{device}` describes it, plus its materialised decisions per
    resource, its owners over time and what the audit log says about it."""
    detail = device_detail_by_id(uow, device_id)
    decisions = uow.session.scalars(
        select(DecisionRecord)
        .where(DecisionRecord.device_id == device_id)
        .order_by(DecisionRecord.resource)
    )
    detail["decisions"] = [
        {
            "resource": d.resource,
            "decision": d.decision,
            "reasons": list(d.reasons),
            "valid_until": iso(d.valid_until),
            "next_decision": d.next_decision,
            "changed_at": iso(d.changed_at),
        }
        for d in decisions
    ]
    owners = list(
        uow.session.execute(
            select(DeviceOwnerHistory.since, Person.email)
            .outerjoin(Person, Person.id == DeviceOwnerHistory.person_id)
            .where(DeviceOwnerHistory.device_id == device_id)
            .order_by(DeviceOwnerHistory.since.desc(), DeviceOwnerHistory.id.desc())
        )
    )
    detail["owner_history"] = [{"since": iso(since), "owner": email} for since, email in owners]
    audit = uow.session.scalars(
        select(AuditEntry)
        .where(AuditEntry.object_type == "device", AuditEntry.object_id == str(device_id))
        .order_by(AuditEntry.id.desc())
        .limit(MAX_HISTORY)
    )
    detail["history"] = [
        {"at": iso(e.at), "actor": e.actor, "action": e.action, "seq": e.seq} for e in audit
    ]
    return detail


def merge_into(uow: UnitOfWork, keep_id: int, other_reference: str) -> Row:
    """`appwarden devices merge KEEP OTHER` from a device's page: OTHER (a DEVICE reference,
    `namespace:value` or a bare value) merges into the device with the store id `keep_id`.
    Needs `admin`; audited by the merge."""
    require(uow, Permission.ADMIN)
    other = other_reference.strip()
    if not other or len(other) > MAX_REFERENCE_CHARS:
        message = f"name the device to merge in (1 to {MAX_REFERENCE_CHARS} characters)"
        raise InvalidInput(message, problems=[Problem("form:other", message)])
    return merge_devices(uow, _reference_of(uow, keep_id), other)


def _reference_of(uow: UnitOfWork, device_id: int) -> str:
    """A reference that names exactly this device (its first identifier)."""
    identifiers = identifiers_of(uow, [device_id])[device_id]
    if uow.session.get(Device, device_id) is None or not identifiers:
        raise NotFound("no device has this id")
    first = identifiers[0]
    return f"{first.namespace}:{first.value}"


# ── people and leavers ────────────────────────────────────────────────────────────────────────


def people_page(
    uow: UnitOfWork,
    *,
    name: str | None = None,
    status: str | None = None,
    window: Window = FIRST_PAGE,
) -> Page[Row]:
    """People in id order: one (by email, alias or account name, exactly), or those of a status
    (`left`: the leavers, with when they left), each with how many devices they own."""
    after = id_after(window)
    status = checked_choice(status, tuple(PersonStatus), "status")
    query = select(Person).where(Person.id > after).order_by(Person.id)
    if name:
        query = query.where(Person.id.in_(people_named(uow, name[:MAX_FILTER_CHARS])))
    if status:
        query = query.where(Person.status == status)
    shown = page_of(list(uow.session.scalars(query.limit(window.fetch))), window, id_key)
    people = shown.rows
    counts: dict[int, int] = {}
    if people:
        counted = (
            select(Device.owner_id, func.count())
            .where(Device.owner_id.in_([p.id for p in people]))
            .group_by(Device.owner_id)
        )
        counts = {owner: n for owner, n in uow.session.execute(counted) if owner is not None}
    rows = [
        {
            "id": p.id,
            "email": p.email,
            "display_name": p.display_name,
            "status": p.status,
            "left_at": iso(p.left_at),
            "source": p.source,
            "devices": counts.get(p.id, 0),
        }
        for p in people
    ]
    return Page(rows, shown.next_after)


# ── fact conflicts ────────────────────────────────────────────────────────────────────────────

CONFLICT_VIEWS: Final = ("open", "settled", "all")


def conflict_page(
    uow: UnitOfWork,
    *,
    show: str | None = None,
    window: Window = FIRST_PAGE,
) -> Page[Row]:
    """Fact conflicts in id order (`show`: open, the default; settled; all), as `appwarden
    conflicts --json` lists them."""
    after = id_after(window)
    show = checked_choice(show, CONFLICT_VIEWS, "show") or "open"
    query = select(FactConflict).where(FactConflict.id > after).order_by(FactConflict.id)
    if show == "open":
        query = query.where(FactConflict.status == ConflictStatus.OPEN)
    elif show == "settled":
        query = query.where(FactConflict.status != ConflictStatus.OPEN)
    shown = page_of(list(uow.session.scalars(query.limit(window.fetch))), window, id_key)
    conflicts = shown.rows
    identifiers = device_identifiers(uow, {c.device_id for c in conflicts if c.device_id})
    emails = emails_of(uow, {c.person_id for c in conflicts})
    rows = []
    for conflict in conflicts:
        row = conflict_json(conflict)
        row["device_id"] = conflict.device_id
        row["device"] = identifiers.get(conflict.device_id, []) if conflict.device_id else None
        row["person"] = emails.get(conflict.person_id) if conflict.person_id else None
        rows.append(row)
    return Page(rows, shown.next_after)


# ── the quarantine queue ──────────────────────────────────────────────────────────────────────


def quarantine_page(
    uow: UnitOfWork,
    *,
    show: str | None = None,
    window: Window = FIRST_PAGE,
) -> Page[Row]:
    """Reports held back because their identifiers named several devices (`show`: open, the
    default; settled; all), each with the devices it named."""
    after = id_after(window)
    show = checked_choice(show, CONFLICT_VIEWS, "show") or "open"
    query = select(Quarantine).where(Quarantine.id > after).order_by(Quarantine.id)
    if show == "open":
        query = query.where(Quarantine.resolved_at.is_(None))
    elif show == "settled":
        query = query.where(Quarantine.resolved_at.is_not(None))
    shown = page_of(list(uow.session.scalars(query.limit(window.fetch))), window, id_key)
    held = shown.rows
    named = device_identifiers(uow, {int(i) for q in held for i in q.candidate_device_ids})
    rows = [
        {
            "id": q.id,
            "source": q.source,
            "received_at": iso(q.received_at),
            "identifiers": list(q.identifiers),
            "reason": q.reason,
            "resolved_at": iso(q.resolved_at),
            "candidates": [
                {"id": int(i), "identifiers": named.get(int(i), [])} for i in q.candidate_device_ids
            ],
        }
        for q in held
    ]
    return Page(rows, shown.next_after)


def settle_quarantine(uow: UnitOfWork, quarantine_id: int, *, merge: bool) -> Row:
    """Settle a quarantined report (needs `admin`). Merge: the devices it named are one device,
    so they merge into the oldest (as `devices merge` does, each merge audited), and the source's
    next report joins it. Reject: they are separate devices; the held report is dropped (the
    source sends its facts again at its next report). Either way it leaves the queue, audited."""
    require(uow, Permission.ADMIN)
    held = uow.session.get(Quarantine, quarantine_id)
    if held is None:
        raise NotFound(f"no quarantined report {quarantine_id}")
    if held.resolved_at is not None:
        raise Conflict(f"quarantined report {quarantine_id} was settled at {iso(held.resolved_at)}")
    merged: list[int] = []
    if merge:
        existing = [
            i
            for i in sorted({int(i) for i in held.candidate_device_ids})
            if uow.session.get(Device, i) is not None
        ]
        if len(existing) < 2:
            raise Conflict("fewer than two of the devices it named still exist: nothing to merge")
        keep = _reference_of(uow, existing[0])
        for other in existing[1:]:
            merge_devices(uow, keep, _reference_of(uow, other))
            merged.append(other)
    held.resolved_at = uow.now
    outcome = {"id": held.id, "resolution": "merged" if merge else "rejected", "merged": merged}
    record(
        uow,
        action="quarantine.merge" if merge else "quarantine.reject",
        object_type="quarantine",
        object_id=str(held.id),
        after={**outcome, "identifiers": list(held.identifiers)},
    )
    return outcome
