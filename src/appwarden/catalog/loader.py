"""Reading catalog files: the shipped one (package data) and an optional organisation file.

Both are `kind: AppCatalog` documents (docs/catalog.md). The organisation file is applied on top of
the shipped catalog: a new slug adds an app, a shipped slug replaces that entry entirely, and a
shipped slug with `extends: true` adds includes and identifiers to the shipped entry. Includes are
checked after merging (every include names an app; no cycles), and every problem is reported with
its `FILE:LINE:COL`.
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from appwarden.catalog.matching import namespaces, rule_key
from appwarden.catalog.model import ORIGINS, AppIdentifier, Catalog, CatalogApp
from appwarden.documents import MAX_DOCUMENT_BYTES, Document, load_document, read_limited
from appwarden.errors import InvalidInput, Problem
from appwarden.vocabulary import AppNamespace

API_VERSION = "appwarden/v1"
KIND = "AppCatalog"
SHIPPED_RESOURCE = "data/catalog.yaml"
SHIPPED_FILENAME = "appwarden/catalog/data/catalog.yaml"
SLUG = re.compile(r"^[a-z0-9-]{2,64}$")

_TOP_KEYS = ("apiVersion", "kind", "apps")
_APP_KEYS = (
    "slug",
    "name",
    "publisher",
    "includes",
    "identifiers",
    "notes",
    "extends",
    "url_scheme_covers",
)
_URL_SCHEME_COVERS_KEYS = ("reason",)
_EXTENDS_KEYS = ("slug", "extends", "includes", "identifiers")
_IDENTIFIER_KEYS = ("namespace", "value")

DocPath = tuple[str | int, ...]


@dataclass
class _Entry:
    """One parsed entry, with where its parts are in the file."""

    app: CatalogApp
    path: DocPath
    extends: bool = False
    include_paths: dict[str, DocPath] = field(default_factory=dict)


class _Parser:
    def __init__(self, doc: Document, origin: str) -> None:
        self.doc = doc
        self.origin = origin
        self.problems: list[Problem] = []

    def fail(self, path: DocPath, message: str) -> None:
        self.problems.append(self.doc.problem(path, message))

    def _keys(
        self, value: dict[str, Any], path: DocPath, allowed: tuple[str, ...], what: str
    ) -> None:
        for key in value:
            if key not in allowed:
                hint = ", ".join(allowed)
                self.fail((*path, key), f"unknown key {key!r} in {what}; expected one of: {hint}")

    def _text(self, value: Any, path: DocPath, what: str, *, required: bool) -> str | None:
        if value is None:
            if required:
                self.fail(path, f"{what} is required")
            return None
        if not isinstance(value, str):
            self.fail(path, f"{what} must be text, not {_kind(value)}")
            return None
        if not value.strip():
            self.fail(path, f"{what} must not be empty")
            return None
        return value.strip()

    def _slug(self, value: Any, path: DocPath, what: str) -> str | None:
        text = self._text(value, path, what, required=True)
        if text is None:
            return None
        if not SLUG.match(text):
            self.fail(path, f"{what} {text!r} must be 2-64 characters of a-z, 0-9 and '-'")
            return None
        return text

    def parse(self) -> list[_Entry]:
        root = self.doc.value
        if not isinstance(root, dict):
            self.fail((), f"a catalog must be a mapping with {', '.join(_TOP_KEYS)}")
            return []
        self._keys(root, (), _TOP_KEYS, "the catalog")
        for key, expected in (("apiVersion", API_VERSION), ("kind", KIND)):
            if key not in root:
                self.fail((), f"{key} is required (expected {expected!r})")
            elif root[key] != expected:
                self.fail((key,), f"{key} must be {expected!r}, not {root[key]!r}")
        if "apps" not in root:
            self.fail((), "apps is required (a list of apps)")
            return []
        apps = root["apps"]
        if not isinstance(apps, list):
            self.fail(("apps",), f"apps must be a list of apps, not {_kind(apps)}")
            return []
        entries: list[_Entry] = []
        first_seen: dict[str, DocPath] = {}
        for index, item in enumerate(apps):
            path: DocPath = ("apps", index)
            entry = self._entry(item, path)
            if entry is None:
                continue
            slug = entry.app.slug
            if slug in first_seen:
                self.fail(
                    (*path, "slug"),
                    f"duplicate slug {slug!r} "
                    f"(first defined at {self.doc.where(first_seen[slug])})",
                )
                continue
            first_seen[slug] = (*path, "slug")
            entries.append(entry)
        return entries

    def _entry(self, item: Any, path: DocPath) -> _Entry | None:
        if not isinstance(item, dict):
            self.fail(
                path, f"an app must be a mapping with slug, name and identifiers, not {_kind(item)}"
            )
            return None
        before = len(self.problems)
        extends = item.get("extends", False)
        if not isinstance(extends, bool):
            self.fail((*path, "extends"), f"extends must be true or false, not {_kind(extends)}")
            extends = False
        if extends and self.origin != "organisation":
            self.fail((*path, "extends"), "extends is only allowed in an organisation catalog")
        if extends:
            for key in item:
                if key not in _EXTENDS_KEYS and key in _APP_KEYS:
                    self.fail(
                        (*path, key),
                        f"{key!r} cannot be changed by an entry with extends: true (it only adds "
                        "includes and identifiers); drop extends to replace the shipped entry",
                    )
        self._keys(item, path, _APP_KEYS, "an app")
        slug = self._slug(item.get("slug"), (*path, "slug"), "slug")
        name = self._text(item.get("name"), (*path, "name"), "name", required=not extends)
        publisher = self._text(
            item.get("publisher"), (*path, "publisher"), "publisher", required=False
        )
        notes = self._text(item.get("notes"), (*path, "notes"), "notes", required=False)
        includes, include_paths = self._includes(item, path)
        identifiers = self._identifiers(item, path)
        scheme_covers = self._url_scheme_covers(item, path, identifiers)
        if not identifiers and not includes and len(self.problems) == before:
            if extends:
                self.fail(path, "an entry with extends: true must add an identifier or an include")
            else:
                self.fail(
                    path, f"app {slug!r} has no identifiers and no includes: it would match nothing"
                )
        if len(self.problems) > before or slug is None:
            return None
        app = CatalogApp(
            slug=slug,
            name=name or "",
            publisher=publisher,
            includes=includes,
            identifiers=identifiers,
            notes=notes,
            origin=self.origin,
            url_scheme_covers=scheme_covers,
        )
        return _Entry(app=app, path=path, extends=extends, include_paths=include_paths)

    def _url_scheme_covers(
        self, item: dict[str, Any], path: DocPath, identifiers: tuple[AppIdentifier, ...]
    ) -> str | None:
        """The opt-in that an absent `ios_url_scheme` of this entry also proves its
        `apple_bundle_id`s absent: a mapping with the reason, on an entry that names both."""
        raw = item.get("url_scheme_covers")
        if raw is None:
            return None
        cpath: DocPath = (*path, "url_scheme_covers")
        if not isinstance(raw, dict):
            self.fail(cpath, f"url_scheme_covers must be a mapping {{reason}}, not {_kind(raw)}")
            return None
        self._keys(raw, cpath, _URL_SCHEME_COVERS_KEYS, "url_scheme_covers")
        reason = self._text(raw.get("reason"), (*cpath, "reason"), "reason", required=True)
        namespaces = {i.namespace for i in identifiers}
        for needed in (AppNamespace.IOS_URL_SCHEME, AppNamespace.APPLE_BUNDLE_ID):
            if needed not in namespaces:
                self.fail(
                    cpath,
                    f"url_scheme_covers needs the entry to list an {needed} identifier: it says "
                    "an absent URL scheme proves the entry's bundle ids absent",
                )
        return reason

    def _includes(
        self, item: dict[str, Any], path: DocPath
    ) -> tuple[tuple[str, ...], dict[str, DocPath]]:
        raw = item.get("includes", [])
        ipath: DocPath = (*path, "includes")
        if not isinstance(raw, list):
            self.fail(ipath, f"includes must be a list of app slugs, not {_kind(raw)}")
            return (), {}
        found: dict[str, DocPath] = {}
        for index, value in enumerate(raw):
            include = self._slug(value, (*ipath, index), "include")
            if include is None:
                continue
            if include in found:
                self.fail((*ipath, index), f"{include!r} is already included")
            else:
                found[include] = (*ipath, index)
        return tuple(found), found

    def _identifiers(self, item: dict[str, Any], path: DocPath) -> tuple[AppIdentifier, ...]:
        raw = item.get("identifiers", [])
        ipath: DocPath = (*path, "identifiers")
        if not isinstance(raw, list):
            self.fail(
                ipath, f"identifiers must be a list of {{namespace, value}}, not {_kind(raw)}"
            )
            return ()
        found: dict[AppIdentifier, DocPath] = {}
        for index, entry in enumerate(raw):
            epath: DocPath = (*ipath, index)
            if not isinstance(entry, dict):
                self.fail(
                    epath,
                    f"an identifier must be a mapping {{namespace, value}}, not {_kind(entry)}",
                )
                continue
            self._keys(entry, epath, _IDENTIFIER_KEYS, "an identifier")
            namespace = self._text(
                entry.get("namespace"), (*epath, "namespace"), "namespace", required=True
            )
            value = self._text(entry.get("value"), (*epath, "value"), "value", required=True)
            if namespace is not None and namespace not in namespaces():
                known = ", ".join(sorted(namespaces()))
                self.fail(
                    (*epath, "namespace"),
                    f"unknown identifier namespace {namespace!r}; expected one of: {known}",
                )
                continue
            if namespace is None or value is None:
                continue
            try:
                key = rule_key(namespace, value)
            except ValueError as exc:
                self.fail((*epath, "value"), str(exc))
                continue
            identifier = AppIdentifier(namespace, key)
            if identifier in found:
                self.fail(
                    epath,
                    f"duplicate identifier {identifier.key} "
                    f"(also at {self.doc.where(found[identifier])})",
                )
                continue
            found[identifier] = epath
        return tuple(found)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "text"


@dataclass
class _ParsedFile:
    doc: Document
    entries: list[_Entry]


def _parse_file(text: str | bytes, filename: str, origin: str) -> _ParsedFile:
    if origin not in ORIGINS:
        raise ValueError(f"origin must be one of {ORIGINS}, not {origin!r}")
    doc = load_document(text, filename)
    parser = _Parser(doc, origin)
    entries = parser.parse()
    if parser.problems:
        raise InvalidInput(
            f"{filename}: {len(parser.problems)} problem(s) in the app catalog",
            problems=parser.problems,
        )
    return _ParsedFile(doc=doc, entries=entries)


def _apply(
    parsed: _ParsedFile, base: Mapping[str, CatalogApp]
) -> tuple[dict[str, CatalogApp], list[Problem]]:
    """Put the file's entries on top of `base`, then check includes of the entries it defines."""
    problems: list[Problem] = []
    merged = dict(base)
    for entry in parsed.entries:
        app = entry.app
        if not entry.extends:
            merged[app.slug] = app
            continue
        shipped = base.get(app.slug)
        if shipped is None:
            problems.append(
                parsed.doc.problem(
                    (*entry.path, "extends"),
                    f"extends: true needs a shipped app {app.slug!r} to extend; there is none "
                    "(drop extends to add a new app)",
                )
            )
            continue
        merged[app.slug] = CatalogApp(
            slug=app.slug,
            name=shipped.name,
            publisher=shipped.publisher,
            includes=tuple(dict.fromkeys([*shipped.includes, *app.includes])),
            identifiers=tuple(dict.fromkeys([*shipped.identifiers, *app.identifiers])),
            notes=shipped.notes,
            origin=app.origin,
            url_scheme_covers=shipped.url_scheme_covers,
        )
    for entry in parsed.entries:
        for include, path in entry.include_paths.items():
            if include not in merged:
                problems.append(
                    parsed.doc.problem(
                        path, f"includes unknown app {include!r}{_suggest(include, merged)}"
                    )
                )
    if not problems:
        problems.extend(_cycles(parsed, merged))
    return merged, problems


def _suggest(slug: str, apps: Mapping[str, CatalogApp]) -> str:
    close = difflib.get_close_matches(slug, list(apps), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _cycles(parsed: _ParsedFile, merged: Mapping[str, CatalogApp]) -> list[Problem]:
    """One problem per include cycle, located at an edge this file defines.

    `base` is acyclic (checked when it was loaded), so every new cycle uses an edge of this file.
    """
    edges: dict[tuple[str, str], DocPath] = {
        (entry.app.slug, include): path
        for entry in parsed.entries
        for include, path in entry.include_paths.items()
    }
    problems: list[Problem] = []
    reported: set[frozenset[str]] = set()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(slug: str) -> None:
        state[slug] = 1
        stack.append(slug)
        for include in merged[slug].includes:
            if state.get(include) == 1:
                cycle = [*stack[stack.index(include) :], include]
                members = frozenset(cycle)
                if members not in reported:
                    reported.add(members)
                    pairs = list(itertools.pairwise(cycle))
                    path = next((edges[p] for p in pairs if p in edges), ())
                    problems.append(
                        parsed.doc.problem(path, "include cycle: " + " -> ".join(cycle))
                    )
            elif state.get(include) is None and include in merged:
                visit(include)
        stack.pop()
        state[slug] = 2

    for slug in sorted(merged):
        if slug not in state:
            visit(slug)
    return problems


def parse_catalog(
    text: str | bytes,
    filename: str,
    *,
    origin: str,
    base: Mapping[str, CatalogApp] | None = None,
) -> dict[str, CatalogApp]:
    """Parse and validate one catalog file; returns its apps by slug, merged on top of `base`.

    With `base` (the shipped apps, for an organisation file), entries with `extends: true` are
    applied to the base entry, and includes may name base apps. Without it the file must stand on
    its own. Raises InvalidInput with every problem located as FILE:LINE:COL.
    """
    parsed = _parse_file(text, filename, origin)
    merged, problems = _apply(parsed, base or {})
    if problems:
        raise InvalidInput(
            f"{filename}: {len(problems)} problem(s) in the app catalog", problems=problems
        )
    return {entry.app.slug: merged[entry.app.slug] for entry in parsed.entries}


def shipped_text() -> bytes:
    """The bytes of the shipped catalog file."""
    return resources.files("appwarden.catalog").joinpath(SHIPPED_RESOURCE).read_bytes()


@lru_cache(maxsize=1)
def _shipped() -> Mapping[str, CatalogApp]:
    return MappingProxyType(parse_catalog(shipped_text(), SHIPPED_FILENAME, origin="shipped"))


def load_catalog(org_file: Path | None = None) -> Catalog:
    """The shipped catalog, with the organisation's catalog file (if any) applied on top."""
    shipped = _shipped()
    if org_file is None:
        return Catalog(dict(shipped))
    path = Path(org_file)
    text = read_limited(path, MAX_DOCUMENT_BYTES, what="the organisation catalog")
    org = parse_catalog(text, str(path), origin="organisation", base=shipped)
    return Catalog({**shipped, **org})
