"""Fleet hosts (`appwarden import fleet FILE...`): one page of `GET /api/v1/fleet/hosts
?populate_software=...` (`{"hosts": [...]}`) or one host's detail (`{"host": {...}}`) per file.
docs/sources/fleet.md is the contract.

A host's `software` list is what Fleet's osquery (or, for iOS/iPadOS/Android, its MDM) last
collected; it is a full inventory of the sources Fleet collects on that platform, observed at
`software_updated_at`. `seen_time` is only a check-in and is never used: a host that checks in
every minute may not have refreshed its software for days. A host listed without a `software`
key (the page was fetched without `populate_software`) says nothing about apps: evidence `none`.
"""

from __future__ import annotations

from typing import Final

from appwarden.devices.schemas import AppSeen, DeviceFacts, InventoryBatch, PersonFacts, ReportFacts
from appwarden.errors import InvalidInput, Problem
from appwarden.sources.apps import usable_app, windows_program
from appwarden.sources.common import (
    Collector,
    Fields,
    ImportOptions,
    page_list,
    read_json,
)
from appwarden.sources.native import MAX_BYTES, dedupe_apps, type_name
from appwarden.sources.osquery import platform_of
from appwarden.vocabulary import (
    AppNamespace,
    DeviceNamespace,
    DeviceStatus,
    EvidenceKind,
    FormFactor,
    Ownership,
    Platform,
)

SOURCE: Final = "fleet"
MOBILE_APPLE: Final = frozenset({Platform.IOS, Platform.IPADOS})
CHROME_EXTENSIONS: Final = str(AppNamespace.CHROME_EXTENSION_ID)
WINDOWS_NAMESPACES: Final = (
    str(AppNamespace.WINDOWS_UPGRADE_CODE),
    str(AppNamespace.WINDOWS_PROGRAM),
)
# Linux software sources Fleet may report, and the namespace each fills. deb and rpm are always
# collected; flatpak and snap only count when the host's list shows Fleet reports them.
LINUX_SOURCES: Final = {
    "deb_packages": AppNamespace.DEB_PACKAGE,
    "rpm_packages": AppNamespace.RPM_PACKAGE,
    "flatpak_packages": AppNamespace.FLATPAK_APP,
    "snap_packages": AppNamespace.SNAP_PACKAGE,
}
EXTRA_LINUX: Final = ("flatpak_packages", "snap_packages")
# Form factors a Mac model name shows (`hardware_model`, e.g. "MacBookPro18,3").
MAC_MODELS: Final = (
    ("MacBook", FormFactor.LAPTOP),
    ("iMac", FormFactor.DESKTOP),
    ("Macmini", FormFactor.DESKTOP),
    ("MacPro", FormFactor.DESKTOP),
    ("Mac1", FormFactor.DESKTOP),  # Mac Studio model ids are "Mac13,1", "Mac14,13", ...
)


def _platform(host: Fields) -> Platform:
    return platform_of(host.text("platform"), host.text("platform_like"))


def _form_factor(platform: Platform, model: str | None) -> FormFactor | None:
    if platform == Platform.IOS:
        return FormFactor.PHONE
    if platform == Platform.IPADOS:
        return FormFactor.TABLET
    if platform == Platform.MACOS and model:
        return next((form for prefix, form in MAC_MODELS if model.startswith(prefix)), None)
    return None


def _personal(host: Fields) -> bool:
    """A BYOD enrollment: Fleet shows `On (personal)` (account-driven User Enrollment) or
    `On (manual - personal)`; the word "personal" marks both."""
    mdm = host.obj("mdm")
    status = mdm.text("enrollment_status") if mdm is not None else None
    return status is not None and "personal" in status.lower()


def _identifiers(host: Fields, platform: Platform) -> tuple[tuple[str, str], ...]:
    raw_id = host.raw("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, int | str) or not str(raw_id).strip():
        raise host.fail("id", f"expected the host's numeric id, not {type_name(raw_id)}")
    pairs = [(str(DeviceNamespace.FLEET_ID), str(raw_id).strip())]
    uuid = host.text("uuid")
    if uuid:
        # [U] For iOS/iPadOS hosts (MDM only, no osquery) Fleet stores the device's MDM UDID in
        # `uuid`; elsewhere it is osquery's system_info.uuid, which is what osquery reports key on.
        namespace = (
            DeviceNamespace.UDID if platform in MOBILE_APPLE else DeviceNamespace.OSQUERY_HOST
        )
        pairs.append((str(namespace), uuid))
    serial = host.text("hardware_serial")
    if serial:
        pairs.append((str(DeviceNamespace.SERIAL), serial))
    return tuple(pairs)


def _owner(host: Fields) -> str | None:
    # [U] device_mapping entries are {"email", "source"}; the first entry is taken as the owner.
    mapping = host.objects("device_mapping")
    return mapping[0].email("email") if mapping else None


def software_apps(item: Fields) -> list[AppSeen | None]:
    """One software item of a host, in the namespace its `source` (osquery table) fills."""
    source, name, version = item.text("source"), item.text("name"), item.text("version")
    if item.text("bundle_identifier"):
        bundle_id = item.text("bundle_identifier")
        return [usable_app(AppNamespace.APPLE_BUNDLE_ID, bundle_id, version=version, name=name)]
    if item.text("application_id"):
        package = item.text("application_id")
        return [usable_app(AppNamespace.ANDROID_PACKAGE, package, version=version, name=name)]
    if source == "programs":
        # Also by name|publisher when it has an UpgradeCode: the report covers windows_program,
        # so a program listed only by its code would look absent to a name rule.
        upgrade_code = item.text("upgrade_code")
        by_code = usable_app(
            AppNamespace.WINDOWS_UPGRADE_CODE, upgrade_code, version=version, name=name
        )
        return [by_code, windows_program(name, item.text("vendor"), version)]
    if source in LINUX_SOURCES:
        return [usable_app(LINUX_SOURCES[source], name, version=version, name=name)]
    if source == "chrome_extensions":
        extension = item.text("extension_id")
        return [usable_app(AppNamespace.CHROME_EXTENSION_ID, extension, version=version, name=name)]
    return []  # a source appwarden has no namespace for (firefox_addons, vscode_extensions...)


def _coverage(platform: Platform, sources: set[str]) -> tuple[str, ...] | None:
    """The namespaces Fleet lists completely on this platform; None when it collects none."""
    if platform == Platform.MACOS:
        return (str(AppNamespace.APPLE_BUNDLE_ID), CHROME_EXTENSIONS)
    if platform == Platform.WINDOWS:
        # Every program is listed by name|publisher, and by its UpgradeCode when it has one.
        # Fleet reports no ProductCode or package family, so those prove nothing absent.
        return (*WINDOWS_NAMESPACES, CHROME_EXTENSIONS)
    if platform == Platform.LINUX:
        collected = ("deb_packages", "rpm_packages", *(s for s in EXTRA_LINUX if s in sources))
        return (*(str(LINUX_SOURCES[s]) for s in collected), CHROME_EXTENSIONS)
    if platform == Platform.CHROMEOS:
        return (CHROME_EXTENSIONS,)
    if platform in MOBILE_APPLE:
        return (str(AppNamespace.APPLE_BUNDLE_ID),)
    return None


def _evidence(host: Fields, platform: Platform) -> tuple[EvidenceKind, tuple[str, ...] | None]:
    if "software" not in host.data:
        return EvidenceKind.NONE, None
    personal = _personal(host)
    if platform == Platform.ANDROID or (platform in MOBILE_APPLE and personal):
        return EvidenceKind.MANAGED_ONLY, None  # the MDM may see only the apps it installed
    coverage = _coverage(platform, {item.text("source") or "" for item in host.objects("software")})
    if coverage is None:  # an unknown platform: no namespace is known to be complete
        return EvidenceKind.INVENTORY, ()
    return EvidenceKind.INVENTORY, coverage


def _read_host(host: Fields, collector: Collector) -> None:
    platform = _platform(host)
    owner = _owner(host)
    kind, coverage = _evidence(host, platform)
    apps = [app for item in host.objects("software") for app in software_apps(item)]
    if kind == EvidenceKind.NONE:
        apps = []
    personal = platform in MOBILE_APPLE | {Platform.ANDROID} and _personal(host)
    device = DeviceFacts(
        identifiers=_identifiers(host, platform),
        platform=platform,
        form_factor=_form_factor(platform, host.text("hardware_model")),
        ownership=Ownership.PERSONAL if personal else None,
        owner_email=owner,
        name=host.text("display_name") or host.text("computer_name") or host.text("hostname"),
        status=DeviceStatus.ACTIVE,
    )
    report = ReportFacts(
        device=device,
        source=SOURCE,
        evidence_kind=kind,
        observed_at=host.instant("software_updated_at"),
        apps=dedupe_apps([app for app in apps if app is not None]),
        coverage=coverage,
        where=host.where,
    )
    if owner is not None:
        collector.person(PersonFacts(email=owner))
    collector.report(report)


def parse_fleet(
    text: str | bytes,
    filename: str,
    *,
    strict: bool = False,
    max_bytes: int = MAX_BYTES,
    options: ImportOptions | None = None,
) -> InventoryBatch:
    """Map one Fleet hosts page (or one host detail) to an inventory batch."""
    del options  # Fleet's times are in each host
    page = read_json(text, filename, max_bytes=max_bytes)
    collector = Collector(filename, SOURCE)
    if isinstance(page, dict) and "host" in page and "hosts" not in page:
        if not isinstance(page["host"], dict):
            message = f"expected the 'host' object, not {type_name(page['host'])}"
            raise InvalidInput(f"{filename}: {message}", problems=[Problem(filename, message)])
        collector.one(page["host"], ("host",), lambda host: _read_host(host, collector))
    else:
        hosts = page_list(page, "hosts", filename)
        collector.each(hosts, ("hosts",), lambda host: _read_host(host, collector))
    return collector.finish(strict=strict)


__all__ = ["parse_fleet", "software_apps"]
