"""How app identifiers are normalised and compared, per namespace (pure: no I/O).

Every identifier is stored and compared as its *match key*: the form `match_key` returns. The same
function normalises what the catalog declares and what a source observes, so equality of keys is
equality of identifiers. Rules per namespace (vocabulary.AppNamespace names the namespaces):

- `apple_bundle_id`: stripped, casefolded (Apple treats bundle ids case-insensitively).
- `android_package`, `flatpak_app`: stripped only (these ids are case-sensitive).
- `windows_upgrade_code`, `windows_product_code`: a GUID, upper-cased, in braces
  (`{C819B794-A45C-4F27-9860-0C86492A52CC}`); braces optional on input.
- `windows_package_family`, `deb_package`, `rpm_package`, `snap_package`: stripped, casefolded.
- `windows_program`: `name|publisher`, each part casefolded with whitespace runs collapsed to one
  space (`name` alone means an empty publisher).
- `chrome_extension_id`: lower-cased; exactly 32 letters a-p.
- `ios_url_scheme`: lower-cased (schemes are case-insensitive, RFC 3986 §3.1); a letter, then
  letters, digits, `+`, `-` or `.`, without `://`.
- `web_domain`: lower-cased (IDNs in their punycode form), a trailing dot removed.
- `display_name`: casefolded, whitespace runs collapsed to one space.

Only `windows_program`, `display_name` and `web_domain` keys may be patterns: `*` stands for any
run of characters (including none, and including `|` and `.`); nothing else is special. A pattern
matches an observed key when the whole observed key fits it. `like_pattern` gives the equivalent
SQL `LIKE … ESCAPE '\\'` form so set-based evaluation agrees with `key_matches` exactly (pattern
keys are lower case, so SQLite's ASCII case-insensitive LIKE and PostgreSQL's case-sensitive LIKE
agree too).
"""

from __future__ import annotations

import re
from functools import lru_cache

from appwarden.caches import remembered
from appwarden.vocabulary import AppNamespace

MAX_KEY_LENGTH = 512
WILDCARD = "*"
PATTERN_NAMESPACES: frozenset[str] = frozenset(
    {AppNamespace.WINDOWS_PROGRAM, AppNamespace.DISPLAY_NAME, AppNamespace.WEB_DOMAIN}
)
# A pattern an administrator writes must keep this many literal characters (not counting `*`,
# `|`, `.`, `-` and spaces), so that `*`, `*|*` or `*.com` cannot match half the fleet by accident.
MIN_PATTERN_LITERALS = 4

_NAMESPACES: frozenset[str] = frozenset(ns.value for ns in AppNamespace)
_GUID = re.compile(
    r"^\{?([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})\}?$"
)
_CHROME_ID = re.compile(r"^[a-p]{32}$")
_URL_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]{0,63}$")
_DOMAIN = re.compile(r"^[a-z0-9*_-]+(\.[a-z0-9*_-]+)*$")
_TOKEN_FORBIDDEN = re.compile(r"[\s*|/\\]")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")  # whitespace is handled per namespace
_NOT_LITERAL = re.compile(r"[*|.\-\s]")


def namespaces() -> frozenset[str]:
    """Every app identifier namespace (`vocabulary.AppNamespace`)."""
    return _NAMESPACES


def _collapse(text: str) -> str:
    """Casefold and turn every run of whitespace into one space (leading/trailing removed)."""
    return " ".join(text.casefold().split())


def _token(namespace: str, value: str) -> str:
    """A single-token identifier: no whitespace, no glob, no separators."""
    bad = _TOKEN_FORBIDDEN.search(value)
    if bad:
        char = "whitespace" if bad.group().isspace() else repr(bad.group())
        raise ValueError(f"{namespace} {value!r} must not contain {char}")
    return value


def _guid(namespace: str, value: str) -> str:
    found = _GUID.match(value)
    if found is None or (value.startswith("{") != value.endswith("}")):
        raise ValueError(
            f"{namespace} {value!r} is not a GUID "
            "(expected like {C819B794-A45C-4F27-9860-0C86492A52CC}, braces optional)"
        )
    return "{" + found.group(1).upper() + "}"


def _program(value: str) -> str:
    name, sep, publisher = value.rpartition("|")
    if not sep:  # no publisher given
        name, publisher = value, ""
    name_key, publisher_key = _collapse(name), _collapse(publisher)
    if not name_key:
        raise ValueError(
            f"windows_program {value!r} has no program name (expected 'name|publisher')"
        )
    return f"{name_key}|{publisher_key}"


def _domain(value: str) -> str:
    key = value.lower()
    if not key.isascii():  # an internationalised name: store its ASCII (punycode) form
        try:
            key = key.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(f"web_domain {value!r} is not a valid domain name") from exc
    if key.endswith("."):
        key = key[:-1]
    if "://" in key or "/" in key or ":" in key:
        raise ValueError(f"web_domain {value!r} must be a host name, not a URL (e.g. tiktok.com)")
    if not _DOMAIN.match(key):
        raise ValueError(
            f"web_domain {value!r} is not a domain name "
            "(letters, digits, '-' and '*' in dot-separated labels, e.g. *.tiktok.com)"
        )
    return key


def match_key(namespace: str, value: str) -> str:
    """The normalised form of `value` in `namespace`, used for storage and equality.

    Raises ValueError, with a message naming the namespace and the value, for an unknown
    namespace or a value that cannot be an identifier of that namespace.

    An import asks it for every app of every device, and a fleet's phones hold the same few
    thousand apps: the keys of text values are remembered (`caches.remembered`; errors are
    not), as plain strings the cycle collector does not walk in a server that takes inventory.
    """
    if isinstance(namespace, str) and isinstance(value, str):
        key = (namespace, value)
        seen = _keys_seen.get(key)  # the usual answer, without a further call
        if seen is not None:
            return seen
        return remembered(_keys_seen, _KEYS_CACHED, key, _match_key, namespace, value)
    return _match_key(namespace, value)


_KEYS_CACHED = 65_536
_keys_seen: dict[tuple[str, str], str] = {}


def _match_key(namespace: str, value: str) -> str:
    if namespace not in _NAMESPACES:
        raise ValueError(
            f"unknown identifier namespace {namespace!r}; expected one of "
            + ", ".join(ns.value for ns in AppNamespace)
        )
    if not isinstance(value, str):
        raise ValueError(f"{namespace} value must be text, not {type(value).__name__}")
    stripped = value.strip()
    if not stripped:
        raise ValueError(f"{namespace} value is empty")
    if _CONTROL.search(stripped):
        raise ValueError(f"{namespace} {value!r} contains a control character")
    key: str
    if namespace == AppNamespace.APPLE_BUNDLE_ID:
        key = _token(namespace, stripped).casefold()
    elif namespace in (AppNamespace.ANDROID_PACKAGE, AppNamespace.FLATPAK_APP):
        key = _token(namespace, stripped)
    elif namespace in (AppNamespace.WINDOWS_UPGRADE_CODE, AppNamespace.WINDOWS_PRODUCT_CODE):
        key = _guid(namespace, stripped)
    elif namespace in (
        AppNamespace.WINDOWS_PACKAGE_FAMILY,
        AppNamespace.DEB_PACKAGE,
        AppNamespace.RPM_PACKAGE,
        AppNamespace.SNAP_PACKAGE,
    ):
        key = _token(namespace, stripped).casefold()
    elif namespace == AppNamespace.WINDOWS_PROGRAM:
        key = _program(stripped)
    elif namespace == AppNamespace.CHROME_EXTENSION_ID:
        key = stripped.lower()
        if not _CHROME_ID.match(key):
            raise ValueError(
                f"chrome_extension_id {value!r} is not an extension id "
                "(exactly 32 letters from a to p)"
            )
    elif namespace == AppNamespace.WEB_DOMAIN:
        key = _domain(stripped)
    elif namespace == AppNamespace.IOS_URL_SCHEME:
        key = stripped.lower()
        if not _URL_SCHEME.match(key):
            raise ValueError(
                f"ios_url_scheme {value!r} is not a URL scheme (a letter, then letters, digits, "
                "'+', '-' or '.'; without '://'), e.g. snssdk1233"
            )
    else:
        assert namespace == AppNamespace.DISPLAY_NAME
        key = _collapse(stripped)
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(
            f"{namespace} value is {len(key)} characters long; the limit is {MAX_KEY_LENGTH}"
        )
    return key


def windows_program_value(name: str, publisher: str | None) -> str:
    """The `windows_program` value a source reports for a program: `name|publisher`."""
    return f"{name}|{publisher or ''}"


def is_pattern(namespace: str, key: str) -> bool:
    """Is this key a glob? Only `windows_program`, `display_name` and `web_domain` keys can be."""
    return namespace in PATTERN_NAMESPACES and WILDCARD in key


def rule_key(namespace: str, value: str) -> str:
    """`match_key` for an identifier an administrator declares (catalog entry, policy identifier).

    On top of `match_key`: a pattern must keep at least MIN_PATTERN_LITERALS literal characters,
    and the `name` part of a `windows_program` pattern must not be only wildcards.
    """
    key = match_key(namespace, value)
    if not is_pattern(namespace, key):
        return key
    literals = _NOT_LITERAL.sub("", key)
    if len(literals) < MIN_PATTERN_LITERALS:
        raise ValueError(
            f"{namespace} pattern {value!r} is too broad: keep at least "
            f"{MIN_PATTERN_LITERALS} characters besides '*'"
        )
    if namespace == AppNamespace.WINDOWS_PROGRAM:
        name = key.rpartition("|")[0]
        if not name.replace(WILDCARD, "").strip():
            raise ValueError(f"windows_program pattern {value!r} must name the program")
    return key


@lru_cache(maxsize=4096)
def _glob(key: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in key.split(WILDCARD)), re.DOTALL)


def key_matches(namespace: str, catalog_key: str, observed_key: str) -> bool:
    """Does the observed key match the catalog key? Both must already be match keys.

    Equality, or — for a pattern key (see `is_pattern`) — a glob match of the whole observed key,
    where `*` stands for any run of characters and nothing else is special.
    """
    if catalog_key == observed_key:
        return True
    if not is_pattern(namespace, catalog_key):
        return False
    return _glob(catalog_key).fullmatch(observed_key) is not None


def like_pattern(key: str) -> str:
    r"""The SQL LIKE form of a pattern key, for use with `ESCAPE '\'`.

    `\`, `%` and `_` are escaped with a backslash; then each `*` becomes `%`.
    """
    escaped = key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace(WILDCARD, "%")
