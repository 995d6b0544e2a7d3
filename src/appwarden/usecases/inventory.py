"""Read models of what inventory taught us: devices (filtered, cursor-paginated), one device in
full, one person with their devices. Read-only. The HTTP API (`GET /v1/devices`,
`GET /v1/devices/{device}`, `GET /v1/people/{email}`) and the CLI (`appwarden devices list|show`,
`appwarden people show`) both call these, so both print the same JSON.

A page costs one query for its devices and a fixed number more for their identifiers, owners,
sources and states, whatever its size: never one query per device.

The states of a list row are the stored ones the last evaluation wrote (only in-scope states are
stored), read at the instant asked for: a stored `action_required` whose due time has passed
reads as `non_compliant` since that due time (rule 3 of docs/architecture.md), so a page does not
depend on whether the worker has caught up with a deadline yet. A device's detail evaluates it
afresh under every version in effect, exactly as `appwarden status --device` does.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypeVar

from sqlalchemy import ColumnElement, and_, exists, false, func, not_, or_, select

from appwarden.compliance.models import ComplianceRecord
from appwarden.compliance.service import evaluate_device
from appwarden.db.chunked import one_of
from appwarden.db.uow import UnitOfWork
from appwarden.devices.facts import conflict_json
from appwarden.devices.identifiers import join_rank, normalise
from appwarden.devices.models import (
    Device,
    DeviceIdentifier,
    DeviceResource,
    FactConflict,
    Report,
)
from appwarden.devices.service import find_device
from appwarden.errors import Ambiguous, InvalidInput, NotFound, Problem
from appwarden.identity.models import ApiToken, Person, PersonAccount, PersonAlias
from appwarden.identity.service import groups_of, people_named
from appwarden.policies.models import Policy, PolicyVersion
from appwarden.policies.service import effective_versions
from appwarden.timeutil import iso
from appwarden.usecases.paging import DEFAULT_LIMIT, MAX_LIMIT
from appwarden.vocabulary import ComplianceState, ConflictStatus, DeviceNamespace, Platform

Row = dict[str, Any]
_T = TypeVar("_T")

#: The newest reports a device's detail lists (`reports_total` counts them all): a device that
#: checks in hourly has thousands, and one answer must stay small.
MAX_DETAIL_REPORTS: Final = 500
MAX_REFERENCE_CHARS: Final = 600
MAX_FILTER_CHARS: Final = 254
_CURSOR_PREFIX: Final = "device:"


# ── filters and cursors ───────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class DeviceFilters:
    """What `device_page` narrows by; every one given must hold (they are ANDed)."""

    person: str | None = None  # primary email, alias or account name
    identifier: str | None = None  # namespace:value, or a bare value (every device that has it)
    platform: str | None = None
    source: str | None = None  # has a report or an identifier from this source
    state: str | None = None  # a state under some version in effect (or `policy`'s)
    policy: str | None = None  # a policy id: with `state`, only its version; alone, its scope


def _bad(where: str, message: str) -> InvalidInput:
    return InvalidInput(f"{where}: {message}", problems=[Problem(where, message)])


def _text(value: str | None, where: str, limit: int = MAX_FILTER_CHARS) -> str | None:
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > limit or not text.isprintable():
        raise _bad(where, f"expected 1 to {limit} printable characters")
    return text


def _choice(value: str | None, where: str, allowed: Sequence[str]) -> str | None:
    if value is None:
        return None
    if value not in allowed:
        shown = value if len(value) <= 40 and value.isprintable() else "this value"
        raise _bad(where, f"{shown!r} is not one of: {', '.join(allowed)}")
    return value


class _Checks:
    """Runs checks and keeps every problem, so one answer names each bad argument at once."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def run(self, check: Callable[[], _T]) -> _T | None:
        try:
            return check()
        except InvalidInput as exc:
            self.problems.extend(exc.problems)
            return None

    def raise_any(self, what: str) -> None:
        if self.problems:
            raise InvalidInput(f"{what}: {len(self.problems)} problem(s)", problems=self.problems)


def _checked_filters(
    filters: DeviceFilters, checks: _Checks, where: Callable[[str], str]
) -> DeviceFilters:
    return DeviceFilters(
        person=checks.run(lambda: _text(filters.person, where("person"))),
        identifier=checks.run(
            lambda: _text(filters.identifier, where("identifier"), MAX_REFERENCE_CHARS)
        ),
        platform=checks.run(lambda: _choice(filters.platform, where("platform"), list(Platform))),
        source=checks.run(lambda: _text(filters.source, where("source"), 64)),
        state=checks.run(lambda: _choice(filters.state, where("state"), list(ComplianceState))),
        policy=checks.run(lambda: _text(filters.policy, where("policy"), 200)),
    )


def encode_cursor(device_id: int) -> str:
    """Opaque to callers: where the next page starts (after this device id)."""
    raw = f"{_CURSOR_PREFIX}{device_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, *, where: str) -> int:
    """The device id a cursor continues after (0: from the start)."""
    if cursor is None:
        return 0
    message = "not a cursor from a previous page (pass `next_cursor` back unchanged)"
    if not cursor or len(cursor) > 64:
        raise _bad(where, message)
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise _bad(where, message) from None
    prefix, _, digits = raw.partition(":")
    if f"{prefix}:" != _CURSOR_PREFIX or not digits.isdecimal() or len(digits) > 18:
        raise _bad(where, message)
    return int(digits)


def checked_limit(limit: int | None, *, where: str) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise _bad(where, f"expected 1 to {MAX_LIMIT}, got {limit}")
    return limit


# ── states as stored ──────────────────────────────────────────────────────────────────────────


def _stored_state_is(state: str, at: datetime) -> ColumnElement[bool]:
    """SQL: a stored state reads as `state` at `at` (see `_stored_state_at`)."""
    record = ComplianceRecord
    overdue = and_(record.state == ComplianceState.ACTION_REQUIRED, record.due_at <= at)
    if state == ComplianceState.NON_COMPLIANT:
        return or_(record.state == ComplianceState.NON_COMPLIANT, overdue)
    if state == ComplianceState.ACTION_REQUIRED:
        return and_(record.state == state, not_(overdue))
    return record.state == state


_UNDERLYING_ACTION: Final = f"underlying:{ComplianceState.ACTION_REQUIRED}"


def _stored_state_at(record: ComplianceRecord, at: datetime) -> tuple[str, datetime, list[str]]:
    """(state, since, reasons) of a stored state at `at`: once its due time has passed, an
    `action_required` is `non_compliant` since then (and an exemption's underlying one too),
    whether or not the worker has written that yet."""
    reasons = list(record.reasons)
    if record.due_at is None or record.due_at > at:
        return record.state, record.since, reasons
    if record.state == ComplianceState.ACTION_REQUIRED:
        return ComplianceState.NON_COMPLIANT, record.due_at, reasons
    underlying = f"underlying:{ComplianceState.NON_COMPLIANT}"
    return (
        record.state,
        record.since,
        [underlying if r == _UNDERLYING_ACTION else r for r in reasons],
    )


def _versions(
    uow: UnitOfWork, policy_id: str | None, at: datetime, where: str
) -> list[PolicyVersion]:
    """The versions in effect at `at` (only `policy_id`'s, when given)."""
    versions = effective_versions(uow, at)
    if policy_id is None:
        return versions
    if uow.session.get(Policy, policy_id) is None:
        raise _bad(where, "no policy with this id")
    mine = [v for v in versions if v.policy_id == policy_id]
    if not mine:
        raise _bad(where, f"the policy has no version in effect at {iso(at)}")
    return mine


def _state_condition(
    state: str | None, version_ids: list[int], in_scope_only: bool, at: datetime
) -> ColumnElement[bool] | None:
    def stored(*conditions: ColumnElement[bool]) -> ColumnElement[bool]:
        return exists().where(ComplianceRecord.device_id == Device.id, *conditions)

    if state is None:
        return stored(ComplianceRecord.version_id.in_(version_ids)) if in_scope_only else None
    if not version_ids:
        return false()
    if state == ComplianceState.NOT_APPLICABLE:
        return or_(*(not_(stored(ComplianceRecord.version_id == v)) for v in version_ids))
    return stored(ComplianceRecord.version_id.in_(version_ids), _stored_state_is(state, at))


# ── the page ──────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class DevicePage:
    devices: list[Row]
    next_cursor: str | None

    def to_json(self) -> Row:
        return {"devices": self.devices, "next_cursor": self.next_cursor}


def _identifier_condition(reference: str) -> ColumnElement[bool]:
    namespace, sep, value = reference.partition(":")
    if sep and namespace in DeviceNamespace.__members__.values():
        match = and_(
            DeviceIdentifier.namespace == namespace,
            DeviceIdentifier.value == normalise(namespace, value),
        )
    else:
        match = DeviceIdentifier.value.in_({reference, reference.upper()})
    return exists().where(DeviceIdentifier.device_id == Device.id, match)


def _conditions(
    uow: UnitOfWork, filters: DeviceFilters, version_ids: list[int], at: datetime
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if filters.person is not None:
        conditions.append(Device.owner_id.in_(people_named(uow, filters.person)))
    if filters.identifier is not None:
        conditions.append(_identifier_condition(filters.identifier))
    if filters.platform is not None:
        conditions.append(Device.platform == filters.platform)
    if filters.source is not None:
        source = filters.source
        conditions.append(
            or_(
                exists().where(Report.device_id == Device.id, Report.source == source),
                exists().where(
                    DeviceIdentifier.device_id == Device.id, DeviceIdentifier.source == source
                ),
            )
        )
    state = _state_condition(filters.state, version_ids, filters.policy is not None, at)
    if state is not None:
        conditions.append(state)
    return conditions


def device_page(
    uow: UnitOfWork,
    filters: DeviceFilters,
    cursor: str | None,
    limit: int | None,
    *,
    where: Callable[[str], str] = str,
) -> DevicePage:
    """One page of devices in id order, after `cursor`, matching every filter, at `uow.now`.
    `where(name)` locates a bad argument for the caller (`query:cursor`, `--cursor`)."""
    checks = _Checks()
    filters = _checked_filters(filters, checks, where)
    after = checks.run(lambda: decode_cursor(cursor, where=where("cursor")))
    size = checks.run(lambda: checked_limit(limit, where=where("limit")))
    checks.raise_any("the device list")
    assert after is not None
    assert size is not None
    versions = _versions(uow, filters.policy, uow.now, where("policy"))
    version_ids = [v.id for v in versions]
    query = (
        select(Device)
        .where(Device.id > after, *_conditions(uow, filters, version_ids, uow.now))
        .order_by(Device.id)
        .limit(size + 1)
    )
    devices = list(uow.session.scalars(query))
    more = len(devices) > size
    devices = devices[:size]
    rows = summary_rows(uow, devices, versions)
    return DevicePage(rows, encode_cursor(devices[-1].id) if more else None)


def summary_rows(
    uow: UnitOfWork, devices: list[Device], versions: Sequence[PolicyVersion]
) -> list[Row]:
    """The list row of each device: a fixed number of queries for any number of devices."""
    ids = [d.id for d in devices]
    if not ids:
        return []
    identifiers = identifiers_of(uow, ids)
    owners = _people(uow, {d.owner_id for d in devices if d.owner_id is not None})
    reported = _report_sources(uow, ids)
    states = _stored_states(uow, ids, versions)
    rows = []
    for device in devices:
        mine = identifiers[device.id]
        owner = owners.get(device.owner_id) if device.owner_id is not None else None
        sources = {i.source for i in mine} | set(reported.get(device.id, {}))
        last = max(reported.get(device.id, {}).values(), default=None)
        rows.append(
            {
                "id": device.id,
                "device": _reference(mine[0]) if mine else None,
                "device_identifiers": [_reference(i) for i in mine],
                "name": device.name,
                "platform": device.platform,
                "form_factor": device.form_factor,
                "ownership": device.ownership,
                "status": device.status,
                "person": owner.email if owner is not None else None,
                "sources": sorted(sources),
                "last_observed_at": iso(last),
                "states": states.get(device.id, []),
            }
        )
    return rows


def _reference(identifier: DeviceIdentifier) -> str:
    return f"{identifier.namespace}:{identifier.value}"


def identifiers_of(uow: UnitOfWork, ids: list[int]) -> dict[int, list[DeviceIdentifier]]:
    """Each device's identifiers in join order."""
    found: dict[int, list[DeviceIdentifier]] = {i: [] for i in ids}
    for row in uow.session.scalars(
        select(DeviceIdentifier).where(one_of(DeviceIdentifier.device_id, ids))
    ):
        found[row.device_id].append(row)
    for rows in found.values():
        rows.sort(key=lambda r: (join_rank(r.namespace), r.namespace, r.value))
    return found


def _people(uow: UnitOfWork, ids: set[int]) -> dict[int, Person]:
    if not ids:
        return {}
    return {p.id: p for p in uow.session.scalars(select(Person).where(one_of(Person.id, ids)))}


def _report_sources(uow: UnitOfWork, ids: list[int]) -> dict[int, dict[str, datetime]]:
    """Per device, each source that reported it and the newest `observed_at` it reported."""
    found: dict[int, dict[str, datetime]] = {}
    query = (
        select(Report.device_id, Report.source, func.max(Report.observed_at))
        .where(one_of(Report.device_id, ids))
        .group_by(Report.device_id, Report.source)
    )
    for device_id, source, newest in uow.session.execute(query):
        found.setdefault(device_id, {})[source] = newest
    return found


def _stored_states(
    uow: UnitOfWork, ids: list[int], versions: Sequence[PolicyVersion]
) -> dict[int, list[Row]]:
    by_id = {v.id: v for v in versions}
    found: dict[int, list[Row]] = {}
    if not by_id:
        return found
    query = (
        select(ComplianceRecord)
        .where(one_of(ComplianceRecord.device_id, ids), ComplianceRecord.version_id.in_(by_id))
        .order_by(ComplianceRecord.device_id, ComplianceRecord.version_id)
    )
    for record in uow.session.scalars(query):
        version = by_id[record.version_id]
        state, since, reasons = _stored_state_at(record, uow.now)
        found.setdefault(record.device_id, []).append(
            {
                "policy": version.policy_id,
                "version": version.number,
                "state": str(state),
                "since": iso(since),
                "due": iso(record.due_at),
                "reasons": reasons,
            }
        )
    return found


# ── one device ────────────────────────────────────────────────────────────────────────────────


def _found(reference: str) -> str:
    """A device reference as the lookups take it (too long a one names no device)."""
    reference = reference.strip()
    if not reference or len(reference) > MAX_REFERENCE_CHARS:
        raise NotFound("no device has this identifier")
    return reference


def device_detail(uow: UnitOfWork, reference: str) -> Row:
    """Everything known about one device (`namespace:value`, or a bare value naming exactly one
    device), at `uow.now`. Unknown: NotFound; a bare value naming several: Ambiguous."""
    return describe_device(uow, find_device(uow, _found(reference)))


def device_detail_by_id(uow: UnitOfWork, device_id: int) -> Row:
    """`device_detail` of the device with this store id (the console's links name devices so,
    since an identifier value may hold any character). Unknown: NotFound."""
    device = uow.session.get(Device, device_id)
    if device is None:
        raise NotFound("no device has this id")
    return describe_device(uow, device)


def describe_device(uow: UnitOfWork, device: Device) -> Row:
    """Everything known about `device` at `uow.now` (see `device_detail`)."""
    identifiers = identifiers_of(uow, [device.id])[device.id]
    owner = uow.session.get(Person, device.owner_id) if device.owner_id is not None else None
    return {
        "id": device.id,
        "device": _reference(identifiers[0]) if identifiers else None,
        "identifiers": [
            {
                "namespace": i.namespace,
                "value": i.value,
                "source": i.source,
                "first_seen_at": iso(i.first_seen_at),
                "last_seen_at": iso(i.last_seen_at),
            }
            for i in identifiers
        ],
        "name": device.name,
        "platform": device.platform,
        "form_factor": device.form_factor,
        "ownership": device.ownership,
        "status": device.status,
        "retired_at": iso(device.retired_at),
        "mdm_source": device.mdm_source,
        "first_report_at": iso(device.first_report_at),
        "owner": ({"email": owner.email, "display_name": owner.display_name} if owner else None),
        "resources": device_resources(uow, device.id),
        **_reports(uow, device.id),
        "states": [
            {
                "policy": outcome.version.policy_id,
                "version": outcome.version.number,
                "state": str(outcome.evaluation.state),
                "since": iso(outcome.evaluation.since),
                "due": iso(outcome.evaluation.due),
                "reasons": list(outcome.evaluation.reasons),
            }
            for outcome in evaluate_device(uow, device, uow.now)
        ],
        "conflicts": _open_conflicts(uow, device.id),
    }


def newest_reports(
    uow: UnitOfWork, device_id: int, limit: int = MAX_DETAIL_REPORTS
) -> tuple[list[tuple[Report, str | None]], int]:
    """A device's newest reports (with the name of the token that wrote each), at most `limit`,
    and how many it has in all."""
    total = uow.session.scalar(
        select(func.count()).select_from(Report).where(Report.device_id == device_id)
    )
    query = (
        select(Report, ApiToken.name)
        .outerjoin(ApiToken, ApiToken.id == Report.token_id)
        .where(Report.device_id == device_id)
        .order_by(Report.received_at.desc(), Report.id.desc())
        .limit(limit)
    )
    return [(report, name) for report, name in uow.session.execute(query)], total or 0


def _reports(uow: UnitOfWork, device_id: int) -> Row:
    """`reports` (newest first, at most MAX_DETAIL_REPORTS) and `reports_total`."""
    rows, total = newest_reports(uow, device_id)
    reports = [
        {
            "id": report.id,
            "source": report.source,
            "evidence_kind": report.evidence_kind,
            "coverage": {
                "namespaces": list(report.coverage_namespaces),
                "hash": report.coverage_hash,
            },
            "observed_at": iso(report.observed_at),
            "received_at": iso(report.received_at),
            "token": (
                {"id": report.token_id, "name": token_name} if report.token_id is not None else None
            ),
            "app_count": report.app_count,
            "applied": report.applied,
        }
        for report, token_name in rows
    ]
    return {"reports": reports, "reports_total": total}


def device_resources(uow: UnitOfWork, device_id: int) -> list[str]:
    return list(
        uow.session.scalars(
            select(DeviceResource.resource)
            .where(DeviceResource.device_id == device_id)
            .order_by(DeviceResource.resource)
        )
    )


def _open_conflicts(uow: UnitOfWork, device_id: int) -> list[Row]:
    query = (
        select(FactConflict)
        .where(FactConflict.device_id == device_id, FactConflict.status == ConflictStatus.OPEN)
        .order_by(FactConflict.id)
    )
    return [conflict_json(c) for c in uow.session.scalars(query)]


# ── one person ────────────────────────────────────────────────────────────────────────────────


def person_detail(uow: UnitOfWork, email: str) -> Row:
    """A person named by primary email, alias or account name (exactly, case-insensitively),
    with the list rows of their devices. Unknown: NotFound (the same answer for every name)."""
    name = email.strip()
    ids = people_named(uow, name) if 0 < len(name) <= MAX_FILTER_CHARS else []
    if not ids:
        raise NotFound("no person has this email, alias or account name")
    if len(ids) > 1:  # names are claimed once (identity.service), so only a broken store gets here
        raise Ambiguous("this name belongs to several people")
    person = uow.session.get(Person, ids[0])
    assert person is not None
    devices = list(
        uow.session.scalars(select(Device).where(Device.owner_id == person.id).order_by(Device.id))
    )
    return {
        "email": person.email,
        "display_name": person.display_name,
        "aliases": sorted(
            uow.session.scalars(select(PersonAlias.email).where(PersonAlias.person_id == person.id))
        ),
        "accounts": sorted(
            uow.session.scalars(
                select(PersonAccount.name).where(PersonAccount.person_id == person.id)
            )
        ),
        "groups": sorted(groups_of(uow, person.id)),
        "time_zone": person.time_zone,
        "status": person.status,
        "left_at": iso(person.left_at),
        "devices": summary_rows(uow, devices, effective_versions(uow, uow.now)),
    }
