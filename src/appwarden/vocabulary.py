"""The exact words of docs/architecture.md (Vocabulary). API, CLI --json, database enums and tests
use these values."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final

# A source name (`intune`, `mdm-export`): the native format, CSV, tokens and settings share it.
SOURCE_NAME: Final = re.compile(r"^[a-z0-9._-]{1,64}$")


class Platform(StrEnum):
    ANDROID = "android"
    IOS = "ios"
    IPADOS = "ipados"
    MACOS = "macos"
    WINDOWS = "windows"
    LINUX = "linux"
    CHROMEOS = "chromeos"
    UNKNOWN = "unknown"


class FormFactor(StrEnum):
    PHONE = "phone"
    TABLET = "tablet"
    LAPTOP = "laptop"
    DESKTOP = "desktop"
    UNKNOWN = "unknown"


class Ownership(StrEnum):
    CORPORATE = "corporate"
    PERSONAL = "personal"
    UNKNOWN = "unknown"


class AppNamespace(StrEnum):
    ANDROID_PACKAGE = "android_package"
    APPLE_BUNDLE_ID = "apple_bundle_id"
    WINDOWS_UPGRADE_CODE = "windows_upgrade_code"
    WINDOWS_PRODUCT_CODE = "windows_product_code"
    WINDOWS_PACKAGE_FAMILY = "windows_package_family"
    WINDOWS_PROGRAM = "windows_program"
    DEB_PACKAGE = "deb_package"
    RPM_PACKAGE = "rpm_package"
    FLATPAK_APP = "flatpak_app"
    SNAP_PACKAGE = "snap_package"
    CHROME_EXTENSION_ID = "chrome_extension_id"
    IOS_URL_SCHEME = "ios_url_scheme"
    WEB_DOMAIN = "web_domain"
    DISPLAY_NAME = "display_name"


class DeviceNamespace(StrEnum):
    UDID = "udid"
    ENROLLMENT_ID = "enrollment_id"
    SERIAL = "serial"
    EAS_DEVICE_ID = "eas_device_id"
    INTUNE_ID = "intune_id"
    AZURE_AD_DEVICE_ID = "azure_ad_device_id"
    OSQUERY_HOST = "osquery_host"
    FLEET_ID = "fleet_id"
    GOOGLE_RESOURCE_ID = "google_resource_id"
    GOOGLE_DEVICE_ID = "google_device_id"
    AMAPI_NAME = "amapi_name"
    ENTERPRISE_SPECIFIC_ID = "enterprise_specific_id"
    JAMF_ID = "jamf_id"
    AGENT_ID = "agent_id"


class EvidenceKind(StrEnum):
    INVENTORY = "inventory"
    MANAGED_ONLY = "managed_only"
    TARGETED_CHECK = "targeted_check"
    ATTESTATION = "attestation"
    NONE = "none"


class ComplianceState(StrEnum):
    NOT_APPLICABLE = "not_applicable"
    EXEMPT = "exempt"
    ACTION_REQUIRED = "action_required"
    NON_COMPLIANT = "non_compliant"
    COMPLIANT = "compliant"
    UNKNOWN = "unknown"


class Decision(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class VersionState(StrEnum):
    DRAFT = "draft"
    PROPOSED = "proposed"
    APPROVED = "approved"
    SCHEDULED = "scheduled"
    ACTIVE = "active"
    SUPERSEDED = "superseded"
    RETRACTED = "retracted"
    RETIRED = "retired"


class NoticeKind(StrEnum):
    ANNOUNCE = "announce"
    UPDATE = "update"
    REMINDER = "reminder"
    BLOCKED = "blocked"
    RESTORED = "restored"
    EXEMPTION = "exemption"
    CORRECTION = "correction"


class NoticeStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"


class PersonStatus(StrEnum):
    ACTIVE = "active"
    LEFT = "left"


class DeviceStatus(StrEnum):
    ACTIVE = "active"
    RETIRED = "retired"


class Fact(StrEnum):
    """Facts applied only from the source authoritative for them (docs/inventory-native.md)."""

    OWNER = "owner"
    PERSON_STATUS = "person_status"
    PERSON_GROUPS = "person_groups"  # a policy's scope can name groups: leaving one lifts a ban
    DEVICE_STATUS = "device_status"
    PLATFORM = "platform"
    FORM_FACTOR = "form_factor"
    OWNERSHIP = "ownership"
    RESOURCES = "resources"


class ConflictStatus(StrEnum):
    OPEN = "open"
    SETTLED = "settled"


class Permission(StrEnum):
    INVENTORY_WRITE = "inventory:write"
    DECISIONS_READ = "decisions:read"
    READ = "read"
    POLICIES_AUTHOR = "policies:author"
    POLICIES_APPROVE = "policies:approve"
    POLICIES_RETRACT = "policies:retract"
    EXEMPTIONS_DECIDE = "exemptions:decide"
    NOTICES_RETRY = "notices:retry"
    ADMIN = "admin"


class SignInMethod(StrEnum):
    """How a portal session was opened. Only `oidc` and `password` sessions carry the person's
    roles: whoever reads a mailbox can open an `email` session (docs/permissions.md)."""

    OIDC = "oidc"
    PASSWORD = "password"  # noqa: S105 - a sign-in method's name, not a secret
    EMAIL = "email"


ROLE_METHODS: frozenset[SignInMethod] = frozenset({SignInMethod.OIDC, SignInMethod.PASSWORD})


class Role(StrEnum):
    VIEWER = "viewer"
    AUTHOR = "author"
    APPROVER = "approver"
    ADMIN = "admin"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.AUTHOR: frozenset(
        {Permission.READ, Permission.POLICIES_AUTHOR, Permission.POLICIES_RETRACT}
    ),
    Role.APPROVER: frozenset(
        {
            Permission.READ,
            Permission.POLICIES_APPROVE,
            Permission.POLICIES_RETRACT,
            Permission.EXEMPTIONS_DECIDE,
        }
    ),
    Role.ADMIN: frozenset(Permission),
}

# Which platforms can carry an app identifier of each namespace. A device whose platform is
# `unknown` can carry every namespace. `web_domain` names a web property, not an installed app.
NAMESPACE_PLATFORMS: dict[AppNamespace, frozenset[Platform]] = {
    AppNamespace.ANDROID_PACKAGE: frozenset({Platform.ANDROID, Platform.CHROMEOS}),
    AppNamespace.APPLE_BUNDLE_ID: frozenset({Platform.IOS, Platform.IPADOS, Platform.MACOS}),
    AppNamespace.WINDOWS_UPGRADE_CODE: frozenset({Platform.WINDOWS}),
    AppNamespace.WINDOWS_PRODUCT_CODE: frozenset({Platform.WINDOWS}),
    AppNamespace.WINDOWS_PACKAGE_FAMILY: frozenset({Platform.WINDOWS}),
    AppNamespace.WINDOWS_PROGRAM: frozenset({Platform.WINDOWS}),
    AppNamespace.DEB_PACKAGE: frozenset({Platform.LINUX}),
    AppNamespace.RPM_PACKAGE: frozenset({Platform.LINUX}),
    AppNamespace.FLATPAK_APP: frozenset({Platform.LINUX}),
    AppNamespace.SNAP_PACKAGE: frozenset({Platform.LINUX}),
    AppNamespace.CHROME_EXTENSION_ID: frozenset(
        {Platform.WINDOWS, Platform.MACOS, Platform.LINUX, Platform.CHROMEOS}
    ),
    # A URL scheme an iOS app registers: only a targeted check on iOS can test it, and a handler
    # proves that *some* app claims it. No inventory lists schemes, so absence is never required
    # for one; an absent scheme proves absence of bundle ids only where the catalog entry opts in
    # (docs/catalog.md, `url_scheme_covers`).
    AppNamespace.IOS_URL_SCHEME: frozenset(),
    # Neither is carried by a platform: a web domain is visited, not installed, and a display
    # name is only a fallback for sources that report no identifier. Both still show presence,
    # but absence is never required for them.
    AppNamespace.WEB_DOMAIN: frozenset(),
    AppNamespace.DISPLAY_NAME: frozenset(),
}
_NOT_CARRIED = frozenset(
    {AppNamespace.WEB_DOMAIN, AppNamespace.DISPLAY_NAME, AppNamespace.IOS_URL_SCHEME}
)


# Whether each platform carries each namespace, by their plain strings: evaluation asks for every
# fact of every device, and a look-up costs a fraction of converting both to their enums.
_CARRIES = {
    (platform.value, namespace.value): platform in platforms
    for namespace, platforms in NAMESPACE_PLATFORMS.items()
    for platform in Platform
}


def platform_carries(platform: str, namespace: str) -> bool:
    """Can a device of this platform carry an app identifier of this namespace?"""
    if platform == Platform.UNKNOWN:
        return namespace not in _NOT_CARRIED
    carried = _CARRIES.get((platform, namespace))
    if carried is None:  # not a platform and a namespace: the enums raise ValueError
        return Platform(platform) in NAMESPACE_PLATFORMS[AppNamespace(namespace)]
    return carried


# The namespaces a native full inventory of each platform lists completely.
PLATFORM_NAMESPACES: dict[Platform, frozenset[AppNamespace]] = {
    p: frozenset(ns for ns, plats in NAMESPACE_PLATFORMS.items() if p in plats)
    for p in Platform
    if p != Platform.UNKNOWN
}
PLATFORM_NAMESPACES[Platform.UNKNOWN] = frozenset(AppNamespace) - _NOT_CARRIED

#: The sources `appwarden sync` can fetch from their APIs (`connectors/registry.py` builds each).
SYNC_SOURCES: Final = ("fleet", "intune", "google", "amapi", "jamf")
