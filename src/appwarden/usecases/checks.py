"""Which identifier lines a targeted-check manifest asks a device for (docs/targeted-check.md).

Only lines the device's platform can answer for, nothing else: on iOS and iPadOS, where no app may
list the others, the `ios_url_scheme` lines, plus the `apple_bundle_id` lines of catalog entries
that opted in to letting an absent scheme cover their bundle ids; elsewhere, the namespaces the
platform carries. Patterns (`*`) are never asked: a device cannot be trusted to expand them the
way the server does, so they stay for inventories to match.
"""

from __future__ import annotations

from collections.abc import Iterable

from appwarden.policies.models import PolicyIdentifier
from appwarden.vocabulary import AppNamespace, Platform, platform_carries

SCHEME_PLATFORMS = frozenset({Platform.IOS.value, Platform.IPADOS.value})


def manifest_lines(rows: Iterable[PolicyIdentifier], platform: str) -> list[str]:
    """The sorted `namespace:value` lines of a version's resolved identifiers to ask about."""
    rows = [r for r in rows if r.like_pattern is None]
    if platform in SCHEME_PLATFORMS:
        asked = [r for r in rows if r.namespace == AppNamespace.IOS_URL_SCHEME]
        asked += [
            r for r in rows if r.namespace == AppNamespace.APPLE_BUNDLE_ID and r.covered_by_scheme
        ]
    else:
        asked = [r for r in rows if platform_carries(platform, r.namespace)]
    return sorted({f"{r.namespace}:{r.value}" for r in asked})
