"""Device identifiers: normalisation, placeholder serials, and the join order (docs/architecture.md,
Facts)."""

from __future__ import annotations

from appwarden.vocabulary import DeviceNamespace

# Sources are joined in this order; the first identifier present names the device in outputs.
JOIN_ORDER: tuple[DeviceNamespace, ...] = (
    DeviceNamespace.UDID,
    DeviceNamespace.ENROLLMENT_ID,
    DeviceNamespace.SERIAL,
    DeviceNamespace.EAS_DEVICE_ID,
    DeviceNamespace.INTUNE_ID,
    DeviceNamespace.AZURE_AD_DEVICE_ID,
    DeviceNamespace.OSQUERY_HOST,
    DeviceNamespace.FLEET_ID,
    DeviceNamespace.GOOGLE_RESOURCE_ID,
    DeviceNamespace.GOOGLE_DEVICE_ID,
    DeviceNamespace.AMAPI_NAME,
    DeviceNamespace.ENTERPRISE_SPECIFIC_ID,
    DeviceNamespace.JAMF_ID,
    DeviceNamespace.AGENT_ID,
)
_RANK = {ns.value: i for i, ns in enumerate(JOIN_ORDER)}

# Values firmware and vendors write when they have no real serial number. Joining on them would
# merge unrelated machines into one device.
PLACEHOLDER_SERIALS = frozenset(
    {
        "",
        "0",
        "none",
        "null",
        "n/a",
        "na",
        "unknown",
        "default string",
        "to be filled by o.e.m.",
        "to be filled by oem",
        "system serial number",
        "not specified",
        "not applicable",
        "chassis serial number",
        "serial number",
        "123456789",
        "0123456789",
        "1234567890",
        "xxxxxxxxxx",
        "invalid",
    }
)

# Hardware ids compare case-insensitively; vendors differ in case.
_UPPERCASED = {DeviceNamespace.UDID, DeviceNamespace.SERIAL, DeviceNamespace.EAS_DEVICE_ID}


def normalise(namespace: str, value: str) -> str:
    value = value.strip()
    return value.upper() if namespace in _UPPERCASED else value


def is_placeholder(namespace: str, value: str) -> bool:
    if namespace != DeviceNamespace.SERIAL:
        return not value.strip()
    text = value.strip().lower()
    return text in PLACEHOLDER_SERIALS or set(text) <= {"0"} or set(text) <= {"x"}


def join_rank(namespace: str) -> int:
    return _RANK.get(namespace, len(_RANK))
