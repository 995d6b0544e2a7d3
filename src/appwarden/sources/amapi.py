"""Android Management API (`appwarden import amapi`): pages of `enterprises.devices.list`, or one
`Device` object (`enterprises.devices.get`), mapped to reports. docs/sources/amapi.md is the
contract.

A fully managed device (`DEVICE_OWNER`) whose policy enables application reports lists every
package of the device: an `inventory` of `android_package`. A work profile (`PROFILE_OWNER`)
lists the work profile's packages only, so it is `managed_only`. A device without an
`applicationReports` key sends no app data at all: evidence `none`, never an empty inventory.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Mapping
from typing import Final

from appwarden.devices.schemas import AppSeen, DeviceFacts, InventoryBatch, ReportFacts
from appwarden.errors import InvalidInput, Problem
from appwarden.sources.common import (
    Collector,
    FieldError,
    Fields,
    ImportOptions,
    load_json_text,
    page_list,
    read_json,
)
from appwarden.sources.native import (
    MAX_BYTES,
    check_email,
    decode_input,
    dedupe,
    json_path,
    show,
    type_name,
)
from appwarden.vocabulary import (
    AppNamespace,
    DeviceNamespace,
    DeviceStatus,
    EvidenceKind,
    Ownership,
    Platform,
)

SOURCE: Final = "amapi"
COVERAGE: Final = (AppNamespace.ANDROID_PACKAGE.value,)
DEVICE_NAME = re.compile(r"^enterprises/[^/]+/devices/[^/]+$")
USER_NAME = re.compile(r"^enterprises/[^/]+/users/[^/]+$")
OWNERSHIP: Final = {
    "COMPANY_OWNED": Ownership.CORPORATE,
    "PERSONALLY_OWNED": Ownership.PERSONAL,
}
# The page keys of a list response; anything else on an object without `devices` or `name` means
# the file is not an AMAPI page.
LIST_KEYS: Final = frozenset({"devices", "nextPageToken"})


def parse_amapi(
    text: str | bytes,
    filename: str,
    *,
    strict: bool = False,
    max_bytes: int = MAX_BYTES,
    options: ImportOptions | None = None,
) -> InventoryBatch:
    """One AMAPI response page (or one Device) → one report per device."""
    users = (options or ImportOptions()).amapi_users
    page = read_json(text, filename, max_bytes=max_bytes)
    out = Collector(filename, SOURCE)
    if isinstance(page, dict) and "devices" not in page and "name" in page:
        # one Device, as `enterprises.devices.get` returns it
        out.one(page, (), lambda record: _device(out, record, users))
        return out.finish(strict=strict)
    # Google's JSON leaves out an empty list: a page with no devices is `{}`.
    empty = isinstance(page, dict) and not set(page) - LIST_KEYS
    devices = page_list(page, "devices", filename, required=not empty)
    out.each(devices, ("devices",), lambda record: _device(out, record, users))
    return out.finish(strict=strict)


def _device(out: Collector, record: Fields, users: Mapping[str, str]) -> None:
    name = record.required_text("name")
    if not DEVICE_NAME.match(name):
        raise record.fail("name", f"{show(name)} is not a device name enterprises/E/devices/D")
    identifiers = [(DeviceNamespace.AMAPI_NAME.value, name)]
    hardware = record.obj("hardwareInfo")
    if hardware is not None:
        serial = hardware.text("serialNumber")
        if serial:
            identifiers.append((DeviceNamespace.SERIAL.value, serial))
        specific = hardware.text("enterpriseSpecificId")
        if specific:
            identifiers.append((DeviceNamespace.ENTERPRISE_SPECIFIC_ID.value, specific))
    ownership = record.text("ownership")
    device = DeviceFacts(
        identifiers=tuple(identifiers),
        platform=Platform.ANDROID,
        ownership=OWNERSHIP.get(ownership or ""),
        owner_email=_owner(record, users),
        status=_status(record),
    )
    kind, apps = _evidence(record)
    out.report(
        ReportFacts(
            device=device,
            source=SOURCE,
            evidence_kind=kind,
            observed_at=record.instant("lastStatusReportTime"),
            apps=apps,
            coverage=COVERAGE if kind == EvidenceKind.INVENTORY else None,
            where=record.where,
        )
    )


def _owner(record: Fields, users: Mapping[str, str]) -> str | None:
    """The organisation's address for `userName`; an unmapped user leaves the owner as stored."""
    user = record.text("userName")
    if user is None:
        return None
    if not USER_NAME.match(user):
        raise record.fail("userName", f"{show(user)} is not a user name enterprises/E/users/U")
    return users.get(user)


def _status(record: Fields) -> DeviceStatus:
    """DELETED in either the requested or the applied state retires the device; every other
    state (ACTIVE, DISABLED, PROVISIONING, LOST, ...) is a live record."""
    # [U] the newer states (LOST, PREPARING_FOR_MIGRATION, DEACTIVATED_BY_DEVICE_FINANCE) are
    # from generated clients only; none of them means the device is gone, so all are active.
    states = (record.text("state"), record.text("appliedState"))
    return DeviceStatus.RETIRED if "DELETED" in states else DeviceStatus.ACTIVE


def _evidence(record: Fields) -> tuple[EvidenceKind, tuple[AppSeen, ...]]:
    if "applicationReports" not in record.data or record.raw("applicationReports") is None:
        return EvidenceKind.NONE, ()  # reporting is off in the policy: nothing was looked at
    apps = _apps(record)
    mode = record.text("managementMode")
    if mode == "DEVICE_OWNER":
        return EvidenceKind.INVENTORY, apps
    if mode == "PROFILE_OWNER":
        # [U] Google says no sentence on it; the work profile's privacy model hides the personal
        # profile's apps from the organisation, so this list proves presence only.
        return EvidenceKind.MANAGED_ONLY, apps
    return EvidenceKind.NONE, ()  # an unspecified mode says nothing about what the list covers


def _apps(record: Fields) -> tuple[AppSeen, ...]:
    apps: list[AppSeen] = []
    for report in record.objects("applicationReports"):
        package = report.text("packageName")
        # A REMOVED entry (policy `includeRemovedApps`) is a past installation, not presence.
        if package is None or report.text("state") == "REMOVED":
            continue
        apps.append(
            AppSeen(
                AppNamespace.ANDROID_PACKAGE.value,
                package,
                report.text("versionName"),
                report.text("displayName"),
            )
        )
    return dedupe(apps)


# ── the organisation's user mapping ─────────────────────────────────────────────────────────


def read_amapi_users(
    text: str | bytes, filename: str, max_bytes: int = MAX_BYTES
) -> dict[str, str]:
    """The organisation's map of AMAPI user names (`enterprises/E/users/U`) to email addresses:
    a JSON object `{"enterprises/E/users/U": "email"}` or a CSV with the header `user,email`.
    Every problem is located, in file order; any problem refuses the whole file."""
    decoded = decode_input(text, filename, max_bytes=max_bytes)
    users: dict[str, str] = {}
    problems: list[Problem] = []

    def add(where: str, user: object, email: object) -> None:
        try:
            key, address = _user_and_address(user, email)
        except FieldError as exc:
            problems.append(Problem(f"{filename}{where}", exc.message))
            return
        if users.setdefault(key, address) != address:
            message = f"{show(key)} is mapped twice, to different addresses"
            problems.append(Problem(f"{filename}{where}", message))

    if decoded.lstrip().startswith("{"):
        mapping = load_json_text(decoded, filename)
        for user, email in mapping.items():
            add(f": {json_path((user,))}", user, email)
    else:
        _read_csv(decoded, filename, add, problems)
    if problems:
        raise InvalidInput(f"{filename}: {len(problems)} bad mapping(s)", problems=problems)
    return users


def _user_and_address(user: object, email: object) -> tuple[str, str]:
    if not isinstance(user, str) or not USER_NAME.match(user.strip()):
        raise FieldError(f"{show(user)} is not a user name enterprises/E/users/U")
    if not isinstance(email, str):
        raise FieldError(f"expected an email address, not {type_name(email)}")
    return user.strip(), check_email(email)


def _read_csv(
    text: str, filename: str, add: Callable[[str, object, object], None], problems: list[Problem]
) -> None:
    """Each data row to `add` as (`:LINE`, user, email); a row of the wrong width is a problem."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [cell.strip().lower() for cell in next(reader, [])]
        if header != ["user", "email"]:
            message = f"expected the header user,email, not {show(','.join(header))}"
            problems.append(Problem(f"{filename}:1", message))
            return
        for row in reader:
            where = f":{reader.line_num}"
            if len(row) == 2:
                add(where, row[0], row[1])
            elif any(cell.strip() for cell in row):
                problems.append(Problem(f"{filename}{where}", f"expected 2 cells, not {len(row)}"))
    except csv.Error as exc:
        problems.append(Problem(f"{filename}:{reader.line_num}", f"not valid CSV: {exc}"))


__all__ = ["parse_amapi", "read_amapi_users"]
