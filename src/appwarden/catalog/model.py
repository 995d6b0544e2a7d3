"""The app catalog as values: apps, their identifiers, and resolution through `includes` (pure).

A catalog maps slugs (`tiktok`) to apps. An app names identifiers directly and may include other
apps (`tiktok` includes `tiktok-lite`, `trill` and `tiktok-now`); resolving a slug collects the
identifiers of the app and, transitively, of everything it includes. The loader guarantees every
include names an app of the catalog and that includes have no cycles; resolution still guards
against both so a hand-built Catalog cannot loop.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Literal

from appwarden.catalog.matching import is_pattern, key_matches, match_key
from appwarden.errors import NotFound

Origin = Literal["shipped", "organisation"]
ORIGINS: tuple[Origin, ...] = ("shipped", "organisation")
DIGEST_FORMAT = 1


@dataclass(frozen=True, slots=True, order=True)
class AppIdentifier:
    """One identifier: a namespace and a value already in its match-key form."""

    namespace: str
    value: str

    @classmethod
    def of(cls, namespace: str, value: str) -> AppIdentifier:
        """Normalise `value` with `match_key` (ValueError if it is not a valid identifier)."""
        return cls(namespace, match_key(namespace, value))

    @property
    def key(self) -> str:
        """`namespace:value`, the form the CLI and JSON outputs show."""
        return f"{self.namespace}:{self.value}"

    @property
    def is_pattern(self) -> bool:
        return is_pattern(self.namespace, self.value)

    def matches(self, observed: AppIdentifier) -> bool:
        """Does an observed identifier (in match-key form) match this one?"""
        return self.namespace == observed.namespace and key_matches(
            self.namespace, self.value, observed.value
        )

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True, slots=True)
class CatalogApp:
    slug: str
    name: str
    publisher: str | None
    includes: tuple[str, ...]
    identifiers: tuple[AppIdentifier, ...]
    notes: str | None
    origin: str  # "shipped" | "organisation"
    # The reason an absent `ios_url_scheme` of this entry also proves its `apple_bundle_id`s
    # absent (an opt-in per entry, docs/catalog.md); None: it does not.
    url_scheme_covers: str | None = None

    def canonical(self) -> dict[str, object]:
        """Plain data for hashing and JSON output; order-insensitive parts are sorted. The
        opt-in appears only where it is set, so entries without it hash as they always did."""
        data: dict[str, object] = {
            "slug": self.slug,
            "name": self.name,
            "publisher": self.publisher,
            "includes": sorted(self.includes),
            "identifiers": [[i.namespace, i.value] for i in sorted(self.identifiers)],
            "notes": self.notes,
            "origin": self.origin,
        }
        if self.url_scheme_covers is not None:
            data["url_scheme_covers"] = {"reason": self.url_scheme_covers}
        return data


@dataclass(frozen=True)
class Catalog:
    """The merged catalog (shipped entries, then the organisation's on top)."""

    apps: Mapping[str, CatalogApp] = field(default_factory=dict)

    def __post_init__(self) -> None:
        frozen = MappingProxyType(dict(sorted(self.apps.items())))
        object.__setattr__(self, "apps", frozen)

    def __contains__(self, slug: object) -> bool:
        return slug in self.apps

    def __iter__(self) -> Iterator[CatalogApp]:
        return iter(self.apps.values())

    def __len__(self) -> int:
        return len(self.apps)

    def slugs(self) -> list[str]:
        return sorted(self.apps)

    def get(self, slug: str) -> CatalogApp:
        """The app with this slug; NotFound names the closest slugs when there is none."""
        app = self.apps.get(slug)
        if app is not None:
            return app
        raise NotFound(_unknown_message(slug, self.apps))

    def _walk(self, slug: str) -> Iterator[CatalogApp]:
        """The app, then everything it includes (depth first, in listed order, each once)."""
        seen: set[str] = set()
        stack = [slug]
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            app = self.get(current)
            yield app
            stack.extend(reversed(app.includes))

    def expand(self, slugs: Iterable[str]) -> list[str]:
        """The given slugs and every slug they include, transitively, without repeats."""
        result: dict[str, None] = {}
        for slug in slugs:
            for app in self._walk(slug):
                result.setdefault(app.slug, None)
        return list(result)

    def resolve(self, slugs: Iterable[str]) -> frozenset[AppIdentifier]:
        """Every identifier of these apps, transitively through includes."""
        return frozenset(
            identifier
            for slug in slugs
            for app in self._walk(slug)
            for identifier in app.identifiers
        )

    def resolve_app(self, slug: str) -> tuple[tuple[str, AppIdentifier], ...]:
        """(contributing app slug, identifier) for one app, the app's own identifiers first.

        Each identifier appears once, credited to the first app (in walk order) that names it.
        """
        seen: set[AppIdentifier] = set()
        result: list[tuple[str, AppIdentifier]] = []
        for app in self._walk(slug):
            for identifier in app.identifiers:
                if identifier not in seen:
                    seen.add(identifier)
                    result.append((app.slug, identifier))
        return tuple(result)

    def lookup(self, identifier: AppIdentifier) -> list[str]:
        """Slugs of the apps whose own identifiers (not includes) match this observed one."""
        return [
            app.slug
            for app in self.apps.values()
            if any(own.matches(identifier) for own in app.identifiers)
        ]

    def canonical(self) -> dict[str, object]:
        return {
            "format": DIGEST_FORMAT,
            "apps": [self.apps[slug].canonical() for slug in sorted(self.apps)],
        }

    @cached_property
    def digest(self) -> str:
        """SHA-256 (hex) of the canonical JSON of the whole catalog; any change to any entry
        changes it, and the same content always gives the same digest."""
        text = json.dumps(
            self.canonical(), sort_keys=True, ensure_ascii=False, separators=(",", ":")
        )
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _unknown_message(slug: str, apps: Mapping[str, CatalogApp]) -> str:
    folded = slug.casefold().strip()
    by_name = [a.slug for a in apps.values() if a.name.casefold() == folded]
    close = difflib.get_close_matches(folded, list(apps), n=5, cutoff=0.6)
    suggestions = list(dict.fromkeys([*by_name, *close]))
    message = f"no app {slug!r} in the catalog"
    if suggestions:
        message += "; did you mean " + ", ".join(suggestions) + "?"
    else:
        message += " (`appwarden catalog list` shows every slug)"
    return message
