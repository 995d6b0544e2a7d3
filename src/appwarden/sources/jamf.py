"""Jamf Pro inventory (`appwarden import jamf FILE...`): one page per file of
`GET /api/v1/computers-inventory?section=GENERAL&section=APPLICATIONS&section=USER_AND_LOCATION
&section=HARDWARE` or of `GET /api/v2/mobile-devices/detail`, both `{"totalCount", "results"}`.
docs/sources/jamf.md is the contract.

Computers and mobile devices are told apart record by record, by shape: a record with a
`mobileDeviceId`, or a device `type`/`deviceType`, is a mobile device; any other is a computer
(`general.platform` "Mac", `applications[].bundleId`). Their Jamf ids are separate sequences, so
`jamf_id` is prefixed: `computer:118`, `mobile:118`.
"""

from __future__ import annotations

from typing import Final

from appwarden.devices.schemas import AppSeen, DeviceFacts, InventoryBatch, PersonFacts, ReportFacts
from appwarden.sources.apps import usable_app
from appwarden.sources.common import Collector, Fields, ImportOptions, page_list, read_json
from appwarden.sources.native import MAX_BYTES, MAX_NAME_CHARS, dedupe_apps, type_name
from appwarden.vocabulary import (
    AppNamespace,
    DeviceNamespace,
    DeviceStatus,
    EvidenceKind,
    FormFactor,
    Ownership,
    Platform,
)

SOURCE: Final = "jamf"
BUNDLE_IDS: Final = (str(AppNamespace.APPLE_BUNDLE_ID),)
# [U] Ownership values of a personally owned enrollment (Jamf's `deviceOwnershipLevel` /
# `deviceOwnershipType`, Classic `device_ownership_level`): a User Enrollment or a BYOD profile,
# where MDM sees only the apps it installed.
PERSONAL_OWNERSHIP: Final = frozenset({"personal", "userenrollment", "personaldeviceprofile"})
OWNERSHIP_KEYS: Final = ("deviceOwnershipLevel", "deviceOwnershipType", "ownershipLevel")
MAC_FORMS: Final = (
    ("MacBook", FormFactor.LAPTOP),
    ("iMac", FormFactor.DESKTOP),
    ("Mac mini", FormFactor.DESKTOP),
    ("Macmini", FormFactor.DESKTOP),
    ("Mac Studio", FormFactor.DESKTOP),
    ("Mac Pro", FormFactor.DESKTOP),
)


def is_mobile(record: Fields) -> bool:
    """The documented rule: a mobile device record has a `mobileDeviceId` or a device type."""
    return any(record.raw(key) is not None for key in ("mobileDeviceId", "type", "deviceType"))


def _jamf_id(record: Fields, kind: str) -> str:
    key = "mobileDeviceId" if kind == "mobile" and record.raw("mobileDeviceId") else "id"
    value = record.raw(key)
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip():
        raise record.fail(key, f"expected the {kind} id, not {type_name(value)}")
    return f"{kind}:{str(value).strip()}"


def _first_text(*candidates: tuple[Fields | None, str]) -> str | None:
    for fields, key in candidates:
        value = fields.text(key) if fields is not None else None
        if value:
            return value
    return None


def _identifiers(record: Fields, kind: str) -> tuple[tuple[str, str], ...]:
    general, hardware = record.obj("general"), record.obj("hardware")
    pairs = [(str(DeviceNamespace.JAMF_ID), _jamf_id(record, kind))]
    udid = _first_text((record, "udid"), (general, "udid"))
    # [U] a mobile record's serial may sit in `hardware` or at the top level.
    serial = _first_text((hardware, "serialNumber"), (record, "serialNumber"))
    if udid:
        pairs.append((str(DeviceNamespace.UDID), udid))
    if serial:
        pairs.append((str(DeviceNamespace.SERIAL), serial))
    if kind == "mobile":
        # [U] the Exchange ActiveSync device id: Pro API camelCase, or the Classic API's key.
        eas = _first_text(
            (general, "exchangeActiveSyncDeviceIdentifier"),
            (record, "exchange_activesync_device_identifier"),
            (general, "exchangeDeviceId"),
        )
        if eas:
            pairs.append((str(DeviceNamespace.EAS_DEVICE_ID), eas))
    return tuple(pairs)


def _personal(record: Fields) -> bool:
    general = record.obj("general")
    values = [_first_text((general, key), (record, key)) for key in OWNERSHIP_KEYS]
    method = _first_text((general, "enrollmentMethod"), (record, "enrollmentMethod")) or ""
    owned = {v.replace(" ", "").replace("_", "").lower() for v in values if v}
    return bool(owned & PERSONAL_OWNERSHIP) or "user enrollment" in method.lower()


def _mobile_platform(record: Fields) -> tuple[Platform, FormFactor | None]:
    kind = (_first_text((record, "type"), (record, "deviceType")) or "").lower()
    hardware, general = record.obj("hardware"), record.obj("general")
    model = _first_text((hardware, "model"), (general, "model"), (hardware, "modelIdentifier"))
    if "ipad" in kind or (model or "").lower().startswith("ipad"):
        return Platform.IPADOS, FormFactor.TABLET
    if kind in ("ios", "iphone") or (model or "").lower().startswith("iphone"):
        return Platform.IOS, FormFactor.PHONE
    return Platform.UNKNOWN, None  # Apple TV, or a type this mapping does not know


def _mac_form(record: Fields) -> FormFactor | None:
    hardware = record.obj("hardware")
    model = _first_text((hardware, "model"), (hardware, "modelIdentifier"))
    if model is None:
        return None
    return next((form for prefix, form in MAC_FORMS if model.startswith(prefix)), None)


def _apps(record: Fields, kind: str) -> list[AppSeen]:
    key = "identifier" if kind == "mobile" else "bundleId"
    apps = []
    for item in record.objects("applications"):
        version = _first_text((item, "shortVersion"), (item, "version"))
        app = usable_app(
            AppNamespace.APPLE_BUNDLE_ID, item.text(key), version=version, name=item.text("name")
        )
        if app is not None:
            apps.append(app)
    return apps


def _observed(record: Fields, kind: str) -> tuple[str, Fields] | None:
    """Where the time of the app data is: computers' `reportDate` (the last full inventory, not
    `lastContactTime`, a check-in), mobiles' last inventory update [U on the key]."""
    general = record.obj("general")
    keys = (
        ("reportDate",)
        if kind == "computer"
        else ("lastInventoryUpdateDate", "lastInventoryUpdateTimestamp")
    )
    for fields in (general, record):
        for key in keys:
            if fields is not None and fields.raw(key) is not None:
                return key, fields
    return None


def _owner(record: Fields) -> PersonFacts | None:
    user = record.obj("userAndLocation")
    email = user.email("email") if user is not None else None
    if user is None or email is None:
        return None
    # `username` is a Jamf login, not an account name the mail server is known to accept.
    return PersonFacts(email=email, display_name=user.text("realname", max_chars=MAX_NAME_CHARS))


def _read_record(record: Fields, collector: Collector) -> None:
    kind = "mobile" if is_mobile(record) else "computer"
    identifiers = _identifiers(record, kind)
    if kind == "computer":
        platform, form = Platform.MACOS, _mac_form(record)
    else:
        platform, form = _mobile_platform(record)
    personal = kind == "mobile" and _personal(record)
    evidence = EvidenceKind.MANAGED_ONLY if personal else EvidenceKind.INVENTORY
    apps = _apps(record, kind)
    if record.raw("applications") is None:  # the APPLICATIONS section was not requested
        evidence, apps = EvidenceKind.NONE, []
    found = _observed(record, kind)
    observed_at = found[1].instant(found[0]) if found else None
    general = record.obj("general")
    owner = _owner(record)
    report = ReportFacts(
        device=DeviceFacts(
            identifiers=identifiers,
            platform=platform,
            form_factor=form,
            ownership=Ownership.PERSONAL if personal else None,
            owner_email=owner.email if owner else None,
            name=_first_text((general, "name"), (general, "displayName"), (record, "name")),
            status=DeviceStatus.ACTIVE,
        ),
        source=SOURCE,
        evidence_kind=evidence,
        observed_at=observed_at,
        apps=dedupe_apps(apps),
        coverage=BUNDLE_IDS if evidence == EvidenceKind.INVENTORY else None,
        where=record.where,
    )
    if owner is not None:
        collector.person(owner)
    collector.report(report)


def parse_jamf(
    text: str | bytes,
    filename: str,
    *,
    strict: bool = False,
    max_bytes: int = MAX_BYTES,
    options: ImportOptions | None = None,
) -> InventoryBatch:
    """Map one Jamf Pro inventory page (computers or mobile devices) to an inventory batch."""
    del options  # Jamf's times are in each record
    page = read_json(text, filename, max_bytes=max_bytes)
    collector = Collector(filename, SOURCE)
    records = page_list(page, "results", filename)
    collector.each(records, ("results",), lambda record: _read_record(record, collector))
    return collector.finish(strict=strict)


__all__ = ["is_mobile", "parse_jamf"]
