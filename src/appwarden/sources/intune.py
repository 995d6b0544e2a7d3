"""Microsoft Intune through Microsoft Graph: managed devices and their detected apps.

docs/sources/intune.md is the contract. Every file is one Graph collection page exactly as Graph
returned it (`{"@odata.context", "@odata.nextLink"?, "value": [...]}`); its kind is read from the
`@odata.context` fragment (`$metadata#deviceManagement/managedDevices`, ...), or from the keys of
its records when the page names no context.

A detectedApp has no bundle id or package name, only a display name, a publisher and a platform,
so apps are reported in the `display_name` namespace, and only rows whose detectedApp platform
fits the device's platform count. Absence is proved only by a complete crawl of one import run:
`parse_intune_crawl` sees all the run's files at once and decides which devices' app lists are
complete; `parse_intune` is the same on one file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from appwarden.devices.schemas import AppSeen, DeviceFacts, InventoryBatch, PersonFacts, ReportFacts
from appwarden.errors import InvalidInput, Problem
from appwarden.sources.common import (
    Collector,
    FieldError,
    Fields,
    ImportOptions,
    finish_run,
    page_list,
    read_json,
)
from appwarden.sources.native import MAX_BYTES, MAX_NAME_CHARS, check_account, show
from appwarden.vocabulary import (
    AppNamespace,
    DeviceNamespace,
    DeviceStatus,
    EvidenceKind,
    FormFactor,
    Ownership,
    Platform,
)

SOURCE: Final = "intune"
COMPLETE_COVERAGE: Final = (AppNamespace.DISPLAY_NAME.value,)
# Graph writes this for a device that is not registered in Entra ID: not an identifier.
_NO_AZURE_AD_DEVICE: Final = "00000000-0000-0000-0000-000000000000"
# Intune lists every installed app (not only managed ones) only for corporate devices of these
# platforms ("Unmanaged apps will only appear for devices marked as corporate owned").
_FULL_LIST_PLATFORMS: Final = frozenset(
    {Platform.IOS, Platform.IPADOS, Platform.MACOS, Platform.WINDOWS}
)


class PageKind(StrEnum):
    DEVICES = "managedDevices"  # also a delta page of managedDevices (`@removed` entries)
    APPS = "detectedApps"
    APP_DEVICES = "detectedApps('ID')/managedDevices"  # the devices one app was detected on
    DEVICE_APPS = "managedDevices('ID')/detectedApps"  # beta: the apps detected on one device
    EMPTY = "empty"


# The `@odata.context` fragment of each page kind; `(...)` after a segment is a `$select` list.
_CONTEXTS: Final = (
    (re.compile(r"deviceManagement/managedDevices\('([^']+)'\)/detectedApps(\(.*\))?"),
     PageKind.DEVICE_APPS),
    (re.compile(r"deviceManagement/detectedApps\('([^']+)'\)/managedDevices(\(.*\))?"),
     PageKind.APP_DEVICES),
    (re.compile(r"deviceManagement/detectedApps(\(.*\))?()"), PageKind.APPS),
    (re.compile(r"deviceManagement/managedDevices(\(.*\))?()"), PageKind.DEVICES),
    # A delta query's pages name the entity type rather than the entity set [U: not checked
    # against a recorded Intune delta response; the `@removed` entries are the Graph standard].
    (re.compile(r"Collection\(microsoft\.graph\.managedDevice\)()()"), PageKind.DEVICES),
)  # fmt: skip
_DEVICE_KEYS: Final = frozenset(
    {"@removed", "deviceName", "operatingSystem", "managedDeviceOwnerType", "userPrincipalName"}
)
_APP_KEYS: Final = frozenset({"displayName", "platform", "deviceCount", "sizeInByte"})


@dataclass(frozen=True, slots=True)
class Page:
    """One file: its kind, the id in its context (an app's or a device's), whether it is the last
    page of its collection (no `@odata.nextLink`), and whether its context named the kind."""

    filename: str
    kind: PageKind
    parent: str | None
    last: bool
    named: bool
    records: list[Any]


def _page_kind(context: str | None, records: list[Any]) -> tuple[PageKind, str | None, bool]:
    fragment = context.partition("#")[2] if context else ""
    for pattern, kind in _CONTEXTS:
        found = pattern.fullmatch(fragment)
        if found:
            parent = (
                found.group(1) if kind in (PageKind.APP_DEVICES, PageKind.DEVICE_APPS) else None
            )
            return kind, parent, True
    first = next((r for r in records if isinstance(r, dict)), None)
    if first is None:
        return PageKind.EMPTY, None, False
    if _DEVICE_KEYS & first.keys():
        return PageKind.DEVICES, None, False
    if _APP_KEYS & first.keys():
        return PageKind.APPS, None, False
    return PageKind.EMPTY, None, False


def read_page(text: str | bytes, filename: str, *, max_bytes: int = MAX_BYTES) -> Page:
    """One Graph collection page; InvalidInput when it is not one."""
    page = read_json(text, filename, max_bytes=max_bytes)
    records = page_list(page, "value", filename)
    context = page.get("@odata.context")
    next_link = page.get("@odata.nextLink")
    for key, value in (("@odata.context", context), ("@odata.nextLink", next_link)):
        if value is not None and not isinstance(value, str):
            message = f"{key} must be a string, not {show(value)}"
            raise InvalidInput(f"{filename}: {message}", problems=[Problem(filename, message)])
    kind, parent, named = _page_kind(context, records)
    if kind == PageKind.EMPTY and records:
        message = (
            f"cannot tell which Graph collection this page is: its @odata.context {show(context)} "
            "names none of managedDevices, detectedApps, detectedApps('ID')/managedDevices or "
            "managedDevices('ID')/detectedApps, and its records look like neither"
        )
        raise InvalidInput(f"{filename}: {message}", problems=[Problem(filename, message)])
    return Page(filename, kind, parent, last=not next_link, named=named, records=records)


# ── one managedDevice ───────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class Device:
    """What one managedDevice record says, and how much of its app list Intune can see."""

    intune_id: str
    facts: DeviceFacts
    where: str
    full_list: bool = False  # Intune lists unmanaged apps too: a crawl can prove absence
    synced_at: datetime | None = None
    person: PersonFacts | None = None


def _platform(fields: Fields) -> tuple[Platform | None, FormFactor | None]:
    system = (fields.text("operatingSystem") or "").casefold()
    model = (fields.text("model", max_chars=MAX_NAME_CHARS) or "").casefold()
    if not system:
        return None, None
    if system == "ipados" or (system == "ios" and model.startswith("ipad")):
        return Platform.IPADOS, FormFactor.TABLET
    if system == "ios":
        return Platform.IOS, FormFactor.PHONE if model.startswith("iphone") else None
    for prefix, platform in (
        ("macos", Platform.MACOS),
        ("windows", Platform.WINDOWS),
        ("android", Platform.ANDROID),  # Android, AndroidForWork, AndroidEnterprise, AndroidAOSP
        ("chrome", Platform.CHROMEOS),
        ("linux", Platform.LINUX),
    ):
        if system.startswith(prefix):
            return platform, None
    return Platform.UNKNOWN, FormFactor.UNKNOWN


def _ownership(fields: Fields) -> Ownership | None:
    owner_type = fields.text("managedDeviceOwnerType")
    if owner_type == "company":
        return Ownership.CORPORATE
    if owner_type == "personal" or fields.text("deviceEnrollmentType") == "userEnrollment":
        return Ownership.PERSONAL  # Apple User Enrollment is the BYOD enrollment
    return None  # "unknown" or absent: leave what is stored


def _identifiers(fields: Fields, intune_id: str) -> tuple[tuple[str, str], ...]:
    pairs = [(DeviceNamespace.INTUNE_ID.value, intune_id)]
    for key, namespace in (
        ("azureADDeviceId", DeviceNamespace.AZURE_AD_DEVICE_ID),
        ("easDeviceId", DeviceNamespace.EAS_DEVICE_ID),
        ("serialNumber", DeviceNamespace.SERIAL),  # often "" (User Enrollment hides it): dropped
        ("udid", DeviceNamespace.UDID),  # null in list calls; set by a per-device GET
    ):
        value = fields.text(key)
        if value is not None and value != _NO_AZURE_AD_DEVICE:
            pairs.append((namespace.value, value))
    return tuple(pairs)


def _owner(fields: Fields) -> tuple[str | None, PersonFacts | None]:
    """The owner from the UPN (also an account name the mail server accepts), else the email."""
    upn = fields.email("userPrincipalName")
    owner = upn or fields.email("emailAddress")
    if owner is None:
        return None, None
    display_name = fields.text("userDisplayName", max_chars=MAX_NAME_CHARS)
    accounts: tuple[str, ...] = ()
    if upn is not None:
        raw = fields.required_text("userPrincipalName")
        accounts = (check_account(raw),)
    return owner, PersonFacts(email=owner, display_name=display_name, accounts=accounts)


def read_device(fields: Fields) -> Device:
    """One managedDevice record (or a delta page's `@removed` entry: the device is retired)."""
    intune_id = fields.required_text("id")
    if fields.raw("@removed") is not None:
        retired = DeviceFacts(
            identifiers=((DeviceNamespace.INTUNE_ID.value, intune_id),),
            status=DeviceStatus.RETIRED,
        )
        return Device(intune_id, retired, fields.where)
    platform, form_factor = _platform(fields)
    ownership = _ownership(fields)
    owner, person = _owner(fields)
    email = fields.boolean("easActivated")
    facts = DeviceFacts(
        identifiers=_identifiers(fields, intune_id),
        platform=platform,
        form_factor=form_factor,
        ownership=ownership,
        owner_email=owner,
        resources=("email",) if email else None,
        name=fields.text("deviceName", max_chars=MAX_NAME_CHARS),
        status=DeviceStatus.ACTIVE,
    )
    full_list = (
        fields.text("managedDeviceOwnerType") == "company"
        and fields.text("deviceEnrollmentType") != "userEnrollment"
        and platform in _FULL_LIST_PLATFORMS
    )
    # lastSyncDateTime is the device's last check-in; Intune refreshes the app list less often
    # (docs/sources/intune.md: it may be up to 7 days newer than the app list).
    synced_at = fields.instant("lastSyncDateTime")
    return Device(intune_id, facts, fields.where, full_list, synced_at, person)


# ── one detectedApp ─────────────────────────────────────────────────────────────────────────


# detectedAppPlatformType → the device platforms an app of that type can be detected on.
_APP_PLATFORMS: Final[dict[str, frozenset[Platform]]] = {
    "ios": frozenset({Platform.IOS, Platform.IPADOS}),
    "macOS": frozenset({Platform.MACOS}),
    "windows": frozenset({Platform.WINDOWS}),
    "windowsMobile": frozenset({Platform.WINDOWS}),
    "windowsHolographic": frozenset({Platform.WINDOWS}),
    "chromeOS": frozenset({Platform.CHROMEOS}),
    "androidOSP": frozenset({Platform.ANDROID}),
    "androidDeviceAdministrator": frozenset({Platform.ANDROID}),
    "androidWorkProfile": frozenset({Platform.ANDROID}),
    "androidDedicatedAndFullyManaged": frozenset({Platform.ANDROID}),
}


@dataclass(frozen=True, slots=True)
class App:
    app_id: str | None
    seen: AppSeen | None  # None: the row has no display name, so nothing to match
    platforms: frozenset[Platform] | None  # None: "unknown" (or a new value): not checked
    device_count: int | None
    where: str

    def fits(self, platform: Platform | None) -> bool:
        if self.platforms is None or platform in (None, Platform.UNKNOWN):
            return True
        return platform in self.platforms


def read_app(fields: Fields) -> App:
    name = fields.text("displayName", max_chars=MAX_NAME_CHARS)
    version = fields.text("version")
    platform = fields.text("platform")
    count = fields.raw("deviceCount")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise fields.fail("deviceCount", f"expected a count, not {show(count)}")
    fields.text("publisher", max_chars=MAX_NAME_CHARS)  # checked; not part of the match key
    seen = AppSeen(AppNamespace.DISPLAY_NAME.value, name, version, name) if name else None
    platforms = _APP_PLATFORMS.get(platform or "")
    return App(fields.text("id"), seen, platforms, count, fields.where)


# ── a run of files ──────────────────────────────────────────────────────────────────────────


@dataclass
class Crawl:
    """What the files of one run say, gathered before any report is made."""

    devices: dict[str, Device] = field(default_factory=dict)
    apps: dict[str, App] = field(default_factory=dict)
    tenant_pages: list[Page] = field(default_factory=list)  # the detectedApps list of the tenant
    app_devices: dict[str, set[str]] = field(default_factory=dict)
    app_pages: dict[str, list[Page]] = field(default_factory=dict)
    device_apps: dict[str, list[App]] = field(default_factory=dict)
    device_pages: dict[str, list[Page]] = field(default_factory=dict)
    damaged: set[str] = field(default_factory=set)  # collections with a skipped record

    def know(self, device: Device, *, full_record: bool) -> None:
        """A managedDevices record wins over the same device listed under an app."""
        if full_record or device.intune_id not in self.devices:
            self.devices[device.intune_id] = device


def _collect(crawl: Crawl, page: Page, out: Collector) -> None:
    before = len(out.problems)

    def device_record(fields: Fields) -> None:
        device = read_device(fields)
        if page.kind == PageKind.DEVICES:
            out.devices.append(device.facts)
            if device.person is not None:
                out.person(device.person)
        if page.kind == PageKind.APP_DEVICES and page.parent is not None:
            crawl.app_devices.setdefault(page.parent, set()).add(device.intune_id)
        if device.facts.status != DeviceStatus.RETIRED:
            crawl.know(device, full_record=page.kind == PageKind.DEVICES)

    def app_record(fields: Fields) -> None:
        app = read_app(fields)
        if page.kind == PageKind.DEVICE_APPS and page.parent is not None:
            crawl.device_apps.setdefault(page.parent, []).append(app)
        elif app.app_id is not None:
            crawl.apps.setdefault(app.app_id, app)

    reader = device_record if page.kind in (PageKind.DEVICES, PageKind.APP_DEVICES) else app_record
    if page.kind != PageKind.EMPTY:
        out.each(page.records, ("value",), reader)
    if page.kind == PageKind.APPS and page.named:
        crawl.tenant_pages.append(page)
    elif page.kind == PageKind.APP_DEVICES and page.parent is not None:
        crawl.app_pages.setdefault(page.parent, []).append(page)
    elif page.kind == PageKind.DEVICE_APPS and page.parent is not None:
        crawl.device_pages.setdefault(page.parent, []).append(page)
        crawl.device_apps.setdefault(page.parent, [])
    if len(out.problems) > before:
        crawl.damaged.add(_collection(page.kind, page.parent))


def _collection(kind: PageKind, parent: str | None) -> str:
    """The name of the collection a page belongs to (the tenant's apps, one app's devices...)."""
    return f"{kind}:{parent or ''}"


def _ends_once(pages: Iterable[Page]) -> bool:
    """A collection's pages end exactly once: its last page is here, and no second chain is."""
    return sum(1 for p in pages if p.last) == 1


def _app_crawl_complete(crawl: Crawl) -> bool:
    """Every detected app of the tenant, each with all the devices it was detected on."""
    if not _ends_once(crawl.tenant_pages) or _collection(PageKind.APPS, None) in crawl.damaged:
        return False
    for app_id, app in crawl.apps.items():
        pages = crawl.app_pages.get(app_id, [])
        listed = len(crawl.app_devices.get(app_id, ()))
        if not _ends_once(pages) or _collection(PageKind.APP_DEVICES, app_id) in crawl.damaged:
            return False
        if app.device_count is not None and listed < app.device_count:
            return False  # a page of its devices is missing
    return True


def _device_list_complete(crawl: Crawl, intune_id: str) -> bool:
    pages = crawl.device_pages.get(intune_id, [])
    return _ends_once(pages) and _collection(PageKind.DEVICE_APPS, intune_id) not in crawl.damaged


def _apps_of(crawl: Crawl) -> dict[str, list[App]]:
    """The apps detected on each device: from each app's device list and each device's app list."""
    found: dict[str, list[App]] = {}
    for app_id, device_ids in crawl.app_devices.items():
        app = crawl.apps.get(app_id)
        if app is None:
            continue  # named nowhere in the run: reported as a skipped page
        for intune_id in device_ids:
            found.setdefault(intune_id, []).append(app)
    for intune_id, apps in crawl.device_apps.items():
        if _collection(PageKind.DEVICE_APPS, intune_id) not in crawl.damaged:
            found.setdefault(intune_id, []).extend(apps)
    return found


def _report(device: Device, apps: list[App], *, complete: bool) -> ReportFacts | None:
    platform = device.facts.platform
    seen = tuple(dict.fromkeys(a.seen for a in apps if a.seen is not None and a.fits(platform)))
    if device.full_list:
        kind, coverage = EvidenceKind.INVENTORY, COMPLETE_COVERAGE if complete else ()
    elif seen:
        kind, coverage = EvidenceKind.MANAGED_ONLY, None
    else:
        return None  # a managed-only source that saw nothing proves nothing
    if not seen and not coverage:
        return None
    return ReportFacts(
        device=device.facts,
        source=SOURCE,
        evidence_kind=kind,
        observed_at=device.synced_at,
        apps=seen,
        coverage=coverage,
        where=device.where,
    )


def _reports(crawl: Crawl) -> list[ReportFacts]:
    tenant_complete = _app_crawl_complete(crawl)
    apps_of = _apps_of(crawl)
    for intune_id, pages in crawl.device_pages.items():  # a device known only by its app list:
        if intune_id not in crawl.devices:  # its ownership is unknown, so presence only
            facts = DeviceFacts(identifiers=((DeviceNamespace.INTUNE_ID.value, intune_id),))
            crawl.devices[intune_id] = Device(intune_id, facts, pages[0].filename)
    reports = []
    for intune_id, device in crawl.devices.items():
        complete = tenant_complete or _device_list_complete(crawl, intune_id)
        report = _report(device, apps_of.get(intune_id, []), complete=complete)
        if report is not None:
            reports.append(report)
    return reports


def _unnamed_app_problems(crawl: Crawl, run: list[tuple[Page, Collector]]) -> None:
    """An app's device list whose app is in no detectedApps page of the run cannot be named."""
    for page, out in run:
        app_id = page.parent
        if page.kind != PageKind.APP_DEVICES or app_id is None or app_id in crawl.apps:
            continue
        out.skip(
            page.filename,
            f"the detectedApp {show(app_id)} is in no detectedApps page of this import, so its "
            f"name is unknown: the {len(page.records)} device(s) of this page are not reported; "
            "import the detectedApps pages with it",
        )


def parse_intune_crawl(
    files: list[tuple[str, str | bytes]],
    *,
    strict: bool = False,
    max_bytes: int = MAX_BYTES,
    options: ImportOptions | None = None,
) -> list[InventoryBatch]:
    """All the files of one import run, one batch per file (in order); the run's app reports go in
    the last file's batch. A file that is not a Graph page refuses the whole run (every bad file
    named); with `strict`, so does any skipped record."""
    del options  # the signature every mapping shares; Graph pages need nothing beyond themselves
    pages: list[Page] = []
    problems: list[Problem] = []
    for filename, text in files:
        try:
            pages.append(read_page(text, filename, max_bytes=max_bytes))
        except InvalidInput as exc:
            problems += exc.problems or [Problem(filename, exc.message)]
    if problems:
        raise InvalidInput(f"{len(problems)} file(s) are not Graph pages", problems=problems)
    crawl = Crawl()
    run = [(page, Collector(page.filename, SOURCE)) for page in pages]
    for page, out in run:
        _collect(crawl, page, out)
    _unnamed_app_problems(crawl, run)
    if run:
        last = run[-1][1]
        for report in _reports(crawl):
            last.report(report)
    return finish_run([out for _, out in run], strict=strict)


def parse_intune(
    text: str | bytes,
    filename: str,
    *,
    strict: bool = False,
    max_bytes: int = MAX_BYTES,
    options: ImportOptions | None = None,
) -> InventoryBatch:
    """One page on its own: a run of one file (`parse_intune_crawl`)."""
    run = parse_intune_crawl(
        [(filename, text)], strict=strict, max_bytes=max_bytes, options=options
    )
    return run[0]


__all__ = ["FieldError", "parse_intune", "parse_intune_crawl", "read_page"]
