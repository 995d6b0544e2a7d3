"""App rows as vendors report them, turned into `AppSeen` only when the value can be matched.

Vendors list rows whose identifier is blank, or not an identifier of the namespace at all (the
`identifying_number` of a per-user Windows installer is a registry key name, not an MSI
ProductCode). Such a row names no identifier appwarden can match, so it is dropped: failing the
whole report for it would hide every other app of the device.
"""

from __future__ import annotations

from appwarden.catalog.matching import match_key, windows_program_value
from appwarden.devices.schemas import AppSeen
from appwarden.vocabulary import AppNamespace


def usable_app(
    namespace: AppNamespace, value: str | None, *, version: str | None, name: str | None
) -> AppSeen | None:
    """The app seen, or None when `value` is missing or not a valid identifier of `namespace`."""
    if value is None:
        return None
    try:
        match_key(namespace, value)
    except ValueError:
        return None
    return AppSeen(str(namespace), value, version, name)


def windows_program(name: str | None, publisher: str | None, version: str | None) -> AppSeen | None:
    """A Windows program by name and publisher (`name|publisher`, catalog/matching.py)."""
    if name is None:
        return None
    value = windows_program_value(name, publisher)
    return usable_app(AppNamespace.WINDOWS_PROGRAM, value, version=version, name=name)
