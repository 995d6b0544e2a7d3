"""Google Workspace mobile devices (`appwarden import google`): pages of the Admin SDK Directory
API's `GET .../customer/{customer}/devices/mobile`, mapped to reports. docs/sources/google.md is the
contract.

Every device listed syncs Workspace data, so each one holds the `email` resource. Only an Android
device managed by Google's endpoint management carries an `applications` list; that list is the
device's Android packages (an `inventory` of `android_package`). iOS and Google Sync devices, and
Android devices without the key, send no app data: evidence `none`, never an empty inventory.
"""

from __future__ import annotations

from typing import Final

from appwarden.devices.schemas import AppSeen, DeviceFacts, InventoryBatch, PersonFacts, ReportFacts
from appwarden.sources.common import (
    Collector,
    FieldError,
    Fields,
    ImportOptions,
    page_list,
    read_json,
)
from appwarden.sources.native import (
    MAX_BYTES,
    MAX_EMAIL_CHARS,
    MAX_NAME_CHARS,
    check_email,
    clean_text,
    dedupe,
    json_path,
    type_name,
)
from appwarden.vocabulary import (
    AppNamespace,
    DeviceNamespace,
    DeviceStatus,
    EvidenceKind,
    Platform,
)

SOURCE: Final = "google"
PAGE_KIND: Final = "admin#directory#mobiledevices"
COVERAGE: Final = (AppNamespace.ANDROID_PACKAGE.value,)
RESOURCES: Final = ("email",)
# `type` values with a known platform ([U]: Google documents no full list; others are unknown).
TYPE_PLATFORMS: Final = {"ANDROID": Platform.ANDROID, "IOS_SYNC": Platform.IOS}
# `os` is free text ("Android 14", "iOS 18.3", "iPadOS 17.5"): its first word, case-folded.
OS_PLATFORMS: Final = {"android": Platform.ANDROID, "ios": Platform.IOS, "ipados": Platform.IPADOS}


def parse_google(
    text: str | bytes,
    filename: str,
    *,
    strict: bool = False,
    max_bytes: int = MAX_BYTES,
    options: ImportOptions | None = None,  # noqa: ARG001 - every source takes them
) -> InventoryBatch:
    """One Directory API `mobiledevices` page → one report per device (options are not needed)."""
    page = read_json(text, filename, max_bytes=max_bytes)
    out = Collector(filename, SOURCE)
    # Google's JSON leaves out an empty list: a page with no devices has only its `kind`.
    empty = isinstance(page, dict) and page.get("kind") == PAGE_KIND
    devices = page_list(page, "mobiledevices", filename, required=not empty)
    out.each(devices, ("mobiledevices",), lambda record: _device(out, record))
    return out.finish(strict=strict)


def _device(out: Collector, record: Fields) -> None:
    identifiers = [(DeviceNamespace.GOOGLE_RESOURCE_ID.value, record.required_text("resourceId"))]
    for key, namespace in (
        ("deviceId", DeviceNamespace.GOOGLE_DEVICE_ID),
        ("serialNumber", DeviceNamespace.SERIAL),
    ):
        value = record.text(key)
        if value:
            identifiers.append((namespace.value, value))
    owner = _owner(out, record)
    platform = _platform(record)
    device = DeviceFacts(
        identifiers=tuple(identifiers),
        platform=platform,
        owner_email=owner,
        resources=RESOURCES,
        # [U] the status values are from third-party integrations (Google lists none).
        # Only a finished wipe retires the device: WIPING may still be cancelled
        # (`cancel_remote_wipe_then_activate`), and the device keeps its data until it is done.
        status=DeviceStatus.RETIRED if record.text("status") == "WIPED" else DeviceStatus.ACTIVE,
    )
    listed = "applications" in record.data and record.raw("applications") is not None
    kind = EvidenceKind.INVENTORY if listed and platform == Platform.ANDROID else EvidenceKind.NONE
    out.report(
        ReportFacts(
            device=device,
            source=SOURCE,
            evidence_kind=kind,
            observed_at=record.instant("lastSync"),
            apps=_apps(record) if kind == EvidenceKind.INVENTORY else (),
            coverage=COVERAGE if kind == EvidenceKind.INVENTORY else None,
            where=record.where,
        )
    )


def _owner(out: Collector, record: Fields) -> str | None:
    """The first address of `email[]` owns the device; the first of `name[]` is their name."""
    address = _first_text(record, "email", max_chars=MAX_EMAIL_CHARS)
    if address is None:
        return None
    try:
        email = check_email(address)
    except FieldError as exc:
        raise FieldError(f"{json_path((*record.path, 'email', 0))}: {exc.message}") from None
    display_name = _first_text(record, "name", max_chars=MAX_NAME_CHARS)
    out.person(PersonFacts(email=email, display_name=display_name))
    return email


def _first_text(record: Fields, key: str, *, max_chars: int) -> str | None:
    """The first non-blank string of a list field (`email[]`, `name[]`); the rest is unused."""
    items = record.raw(key)
    if items is None:
        return None
    if not isinstance(items, list):
        raise record.fail(key, f"expected a list, not {type_name(items)}")
    for index, item in enumerate(items):
        where = json_path((*record.path, key, index))
        if not isinstance(item, str):
            raise FieldError(f"{where}: expected a string, not {type_name(item)}")
        try:
            text = clean_text(item, max_chars=max_chars)
        except FieldError as exc:
            raise FieldError(f"{where}: {exc.message}") from None
        if text:
            return text
    return None


def _platform(record: Fields) -> Platform:
    """From `type`; a type without a platform (GOOGLE_SYNC, others) is refined by `os`."""
    by_type = TYPE_PLATFORMS.get(record.text("type") or "")
    os_name = (record.text("os") or "").split(maxsplit=1)
    by_os = OS_PLATFORMS.get(os_name[0].casefold()) if os_name else None
    if by_type == Platform.IOS and by_os == Platform.IPADOS:
        return Platform.IPADOS  # IOS_SYNC covers iPads too; their os says iPadOS
    return by_type or by_os or Platform.UNKNOWN


def _apps(record: Fields) -> tuple[AppSeen, ...]:
    apps: list[AppSeen] = []
    for application in record.objects("applications"):
        package = application.text("packageName")
        if package is None:
            continue
        apps.append(
            AppSeen(
                AppNamespace.ANDROID_PACKAGE.value,
                package,
                application.text("versionName"),
                application.text("displayName"),
            )
        )
    return dedupe(apps)


__all__ = ["parse_google"]
