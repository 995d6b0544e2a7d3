"""What a reverse proxy forwards to `/gate/forward`, parsed into a gate request. Pure (no I/O).

The proxy (nginx `auth_request`, Traefik `forwardAuth`, Envoy `ext_authz`) tells the gate which
request it is about to let through: the original URI arrives in `X-Original-URI` (nginx),
`X-Forwarded-Uri` (Traefik) or as the gate request's own path after the `path_prefix` (Envoy). From
that URI this module takes the resource (by path prefix) and, for Exchange ActiveSync, the
`DeviceId`, `DeviceType`, `User` and `Cmd` of the request, in either of the two query forms of
[MS-ASHTTP] 2.2.1.1.1: the plain text query (`?Cmd=Sync&User=jdoe&DeviceId=…&DeviceType=…`) or
the base64-encoded binary query (2.2.1.1.1.1) that protocol 12.1 and later may send instead.

The base64 layout ([MS-ASHTTP] 2.2.1.1.1.1; all lengths are one unsigned byte):

    protocol version (1 byte, e.g. 141 = "14.1") | command code (1 byte, 2.2.1.1.1.1.2) |
    locale (2 bytes, little-endian, e.g. 09 04 = 0x0409) |
    device ID length (1, > 0) | device ID | policy key length (1, 0 or 4) | policy key (uint32 LE) |
    device type length (1) | device type | command parameters: (tag 1 | length 1 | value)*

Parameter tags (2.2.1.1.1.1.3): 0 AttachmentName, 1 CollectionId, 3 ItemId, 4 LongId,
6 Occurrence, 7 Options (a one-byte bit mask), 8 User. docs/gates.md says which parts of this
were checked against the specification and which are assumed.

Who is asking (`Identity`) comes from what the mail server will itself verify, never from the
ActiveSync `User=` parameter, which is only the client's word: the proxy's authenticated-user
header when one is configured, else the request's credentials — the Basic user name (the password
is dropped unread) or a bearer token's `upn` / `unique_name` (read without verifying the
signature: a forged token fails at the mail server). docs/gates.md has the whole rule.

Everything here is hostile input. `parse_gate_request` never raises: a value it cannot trust (too
long, control characters, invalid UTF-8, conflicting duplicates, a malformed base64 query) is
reported as absent (`None`). `decode_eas_base64_query` raises `ValueError` for its direct callers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, unquote_plus

import orjson

from appwarden.caches import remembered

Encoding = Literal["plain", "base64", "header", "none"]

#: A query longer than this is not parsed (nginx's default request-line buffer is 8k).
MAX_URI_LENGTH = 8192
#: The longest device id, user, device type or command accepted (longer values are ignored).
MAX_VALUE_LENGTH = 512
#: The request path under which Envoy's `path_prefix` mode delivers the original path.
FORWARD_PATH = "/gate/forward"
#: The largest `Authorization` value read (a bearer token of Entra is 1-3 KB).
MAX_CREDENTIALS_LENGTH = 16384

Proxy = Literal["nginx", "caddy", "traefik", "envoy"]

#: Which headers each proxy sets to the original URI and method (lower case). Envoy's
#: `path_prefix` mode sends neither: the original path and query follow `/gate/forward`.
PROXY_URI_HEADERS: Mapping[Proxy, tuple[str, ...]] = {
    "nginx": ("x-original-uri",),
    "caddy": ("x-forwarded-uri",),
    "traefik": ("x-forwarded-uri",),
    "envoy": (),
}
PROXY_METHOD_HEADERS: Mapping[Proxy, tuple[str, ...]] = {
    "nginx": ("x-original-method",),
    "caddy": ("x-forwarded-method",),
    "traefik": ("x-forwarded-method",),
    "envoy": (),
}
#: With no proxy named, every place is read and they must agree.
ANY_URI_HEADERS: tuple[str, ...] = ("x-original-uri", "x-forwarded-uri")
ANY_METHOD_HEADERS: tuple[str, ...] = ("x-original-method", "x-forwarded-method")

#: [MS-ASHTTP] 2.2.1.1.1.1.2 command codes.
EAS_COMMANDS: Mapping[int, str] = {
    0: "Sync",
    1: "SendMail",
    2: "SmartForward",
    3: "SmartReply",
    4: "GetAttachment",
    9: "FolderSync",
    10: "FolderCreate",
    11: "FolderDelete",
    12: "FolderUpdate",
    13: "MoveItems",
    14: "GetItemEstimate",
    15: "MeetingResponse",
    16: "Search",
    17: "Settings",
    18: "Ping",
    19: "ItemOperations",
    20: "Provision",
    21: "ResolveRecipients",
    22: "ValidateCert",
}
_COMMAND_CODES = {name.casefold(): code for code, name in EAS_COMMANDS.items()}

#: [MS-ASHTTP] 2.2.1.1.1.1.3 command parameter tags.
EAS_PARAMETER_TAGS: Mapping[int, str] = {
    0: "AttachmentName",
    1: "CollectionId",
    3: "ItemId",
    4: "LongId",
    6: "Occurrence",
    7: "Options",
    8: "User",
}
_USER_TAG = 8
_OPTIONS_TAG = 7

# The query parameters the gate reads, by case-folded name.
_PLAIN_FIELDS = {"deviceid": "DeviceId", "devicetype": "DeviceType", "user": "User", "cmd": "Cmd"}
# One base64 token, either alphabet, optional padding, nothing else.
_BASE64_TOKEN = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")
_SCHEME_AUTHORITY = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")
_PROTOCOL_VERSION = re.compile(r"(\d{1,2})\.(\d)")
_SURROGATE = re.compile("[\ud800-\udfff]")


IdentitySource = Literal["header", "basic", "bearer", "none"]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the request says it is, from what the mail server will itself verify."""

    name: str | None  # case-folded account name or address; None: no credentials at all
    source: IdentitySource
    problem: str | None = None  # set: credentials that cannot be used; the request is refused


NO_IDENTITY = Identity(None, "none")


@dataclass(frozen=True, slots=True)
class GateRequest:
    """What the proxy asks about: which device wants which resource, for whom."""

    device_id: str | None  # the ActiveSync DeviceId (as sent; callers normalise)
    device_type: str | None
    user: str | None  # ActiveSync User=, case-folded: the client's claim, checked against identity
    command: str | None  # Cmd
    resource: str | None  # from the path mapping; None = not a gated path
    path: str  # original path without the query, percent-decoded and dot-segment-resolved
    encoding: Encoding  # where device_id came from; "none" when device_id is None
    method: str = "GET"  # the original request's method, upper case
    identity: Identity = NO_IDENTITY
    user_conflict: bool = False  # User= given twice with different values
    problem: str | None = None  # set: the request cannot be read with certainty; refuse it


@dataclass(frozen=True, slots=True)
class GateConfig:
    """How to read a proxy's request. The defaults fit Exchange/OWA; `for_proxy` picks the
    headers a named proxy sets, so that a client's own copy of another proxy's header is never
    read."""

    # path prefix → resource; case-insensitive prefix match, longest wins; a prefix ending in "/"
    # also matches the path without that slash ("/owa" is the same application as "/owa/").
    locations: tuple[tuple[str, str], ...] = (
        ("/Microsoft-Server-ActiveSync", "email"),
        ("/owa/", "webmail"),
        ("/mail/", "webmail"),
    )
    # e.g. "X-Client-Cert-Fingerprint": the device id comes from this header instead of the query
    # (and only from it: a request without the header has no device id).
    device_header: str | None = None
    # the header the proxy sets to the authenticated user (nginx: $remote_user); None: the
    # identity comes from the request's credentials only.
    user_header: str | None = None
    # where the original URI and method are read (lower-case header names); `path_form`: also
    # from the gate request's own path after /gate/forward (Envoy). More than one place present
    # and disagreeing: the request is refused.
    uri_headers: tuple[str, ...] = ANY_URI_HEADERS
    method_headers: tuple[str, ...] = ANY_METHOD_HEADERS
    path_form: bool = True

    @property
    def headers_read(self) -> frozenset[str]:
        """The lower-case names of the proxy headers this reading looks at (besides the
        request's own credentials)."""
        named = (self.device_header, self.user_header)
        return frozenset(
            (*self.uri_headers, *self.method_headers, *(h.lower() for h in named if h))
        )

    @classmethod
    def for_proxy(
        cls,
        proxy: Proxy | None,
        *,
        uri_headers: Sequence[str] | None = None,
        method_headers: Sequence[str] | None = None,
        **others: str | None,
    ) -> GateConfig:
        """The reading of one proxy's requests (None: any of them, refusing disagreement)."""
        uri = PROXY_URI_HEADERS[proxy] if proxy else ANY_URI_HEADERS
        method = PROXY_METHOD_HEADERS[proxy] if proxy else ANY_METHOD_HEADERS
        return cls(
            uri_headers=tuple(h.lower() for h in (uri_headers if uri_headers is not None else uri)),
            method_headers=tuple(
                h.lower() for h in (method_headers if method_headers is not None else method)
            ),
            path_form=proxy in (None, "envoy"),
            device_header=others.get("device_header"),
            user_header=others.get("user_header"),
        )


# ---------------------------------------------------------------------------------------------
# Headers, the original URI and method


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header `name`, looked up case-insensitively; None when absent."""
    value = headers.get(name.lower())  # ASGI servers give lower-cased names: the usual hit
    if value is not None:
        return value
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, candidate in headers.items():
        if key.lower() == wanted:
            return candidate
    return None


def _path_form(raw_path: str, query: str) -> str | None:
    """Envoy's `path_prefix` form: the original raw path (percent-encoding untouched) and query
    after `/gate/forward`. None for any other path (`/gate/forward?q` is Caddy's own request)."""
    if not raw_path.startswith(FORWARD_PATH + "/"):
        return None
    rest = raw_path[len(FORWARD_PATH) :]
    return f"{rest}?{query}" if query else rest


def _one_of(
    headers: Mapping[str, str], names: Sequence[str], duplicated: Collection[str]
) -> tuple[str | None, bool]:
    """The single value the named headers agree on; (None, True) when they disagree or one of
    them was sent twice, (None, False) when none is present. Empty values count as absent."""
    found: str | None = None
    for name in names:
        if name in duplicated:
            return None, True
        value = headers.get(name)
        if not value:
            continue
        if found is not None and value != found:
            return None, True
        found = value
    return found, False


def original_uri(
    headers: Mapping[str, str],
    raw_path: str,
    query: str = "",
    *,
    config: GateConfig = GateConfig(),
    duplicated: Collection[str] = (),
) -> tuple[str | None, bool]:
    """The URI the client asked the proxy for (raw path and query), and whether the places it
    may come from disagree (then the request is refused). None when it is nowhere."""
    value, conflict = _one_of(headers, config.uri_headers, duplicated)
    if conflict:
        return None, True
    from_path = _path_form(raw_path, query) if config.path_form else None
    if value is not None and from_path is not None and value != from_path:
        return None, True
    return value if value is not None else from_path, False


def normalise_path(raw: str) -> str:
    """The path as a proxy routes it: percent-decoded once, `\\` as `/`, `.`/`..` resolved,
    repeated slashes merged. Without this, `/%4Dicrosoft-Server-ActiveSync` or
    `/owa/../Microsoft-Server-ActiveSync` would reach the mail server under another resource."""
    raw = _SCHEME_AUTHORITY.sub("", raw, count=1)
    decoded = unquote(raw, errors="replace").replace("\\", "/")
    decoded = _SURROGATE.sub("\ufffd", decoded)  # keep the path encodable (JSON, logs)
    segments: list[str] = []
    parts = decoded.split("/")
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            if segments:
                segments.pop()
            continue
        segments.append(part)
    trailing = len(parts) > 1 and parts[-1] in ("", ".", "..")
    path = "/" + "/".join(segments)
    if trailing and segments:
        path += "/"
    return path


def resource_for(path: str, locations: Iterable[tuple[str, str]]) -> str | None:
    """The resource of the longest matching location prefix (case-insensitive), or None."""
    folded = path.casefold()
    best: tuple[int, str] | None = None
    for prefix, resource in locations:
        wanted = prefix.casefold()
        matches = folded.startswith(wanted) or (
            wanted.endswith("/") and len(wanted) > 1 and folded == wanted[:-1]
        )
        if matches and (best is None or len(wanted) > best[0]):
            best = (len(wanted), resource)
    return None if best is None else best[1]


# ---------------------------------------------------------------------------------------------
# Values


def _clean(value: str | None) -> str | None:
    """A value the gate may use: non-empty, not over-long, printable (no NUL or controls)."""
    if value is None or value == "" or len(value) > MAX_VALUE_LENGTH:
        return None
    if not value.isprintable():
        return None
    return value


def account_name(value: str | None) -> str | None:
    """A name as the gate matches it to people: stripped and case-folded, nothing else (no
    domain removed, no `+tag` dropped: a name that is not exactly a person's matches nobody).
    None for nothing usable (absent, blank, over-long, control characters)."""
    if value is None:
        return None
    cleaned = _clean(value.strip())
    return None if cleaned is None else cleaned.casefold()


# ---------------------------------------------------------------------------------------------
# Credentials ([RFC 7617] Basic, [RFC 6750] Bearer with a JWT access token)


def basic_user(credentials: str) -> str | None:
    """The user name of Basic credentials (the part before the first `:`); the password is
    never kept. None when they cannot be read."""
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        text = decoded.decode("latin-1")  # RFC 7617: the charset is the server's choice
    user, colon, _ = text.partition(":")
    return account_name(user) if colon else None


def bearer_user(token: str) -> str | None:
    """The `upn` (else `unique_name`) claim of a JWT access token, read WITHOUT verifying its
    signature: the mail server verifies the token and refuses a forged one. Never
    `preferred_username`, which Entra documents as mutable. None when it is not such a token."""
    parts = token.strip().split(".")
    if len(parts) != 3:  # an opaque token or an encrypted (5-part) one names nobody we can read
        return None
    payload = parts[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        # orjson: a token's claims are a kilobyte or more, on every request a client with
        # modern authentication makes; the standard parser took most of the gate's time for it.
        claims = orjson.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        return None
    if not isinstance(claims, dict):
        return None
    for claim in ("upn", "unique_name"):
        value = claims.get(claim)
        if isinstance(value, str):
            return account_name(value)
    return None


def identity_of(
    headers: Mapping[str, str], config: GateConfig, duplicated: Collection[str] = ()
) -> Identity:
    """Who the request is from: the proxy's user header when configured and present (present
    but unusable: refused), else the `Authorization` credentials. A header sent twice means no
    identity and is refused: the gate and the mail server could read different ones."""
    if config.user_header is not None:
        name = config.user_header.lower()
        if name in duplicated:
            return Identity(None, "header", "duplicate_user_header")
        value = headers.get(name)
        if value:
            user = account_name(value)
            return Identity(user, "header", None if user else "invalid_user_header")
    if "authorization" in duplicated:
        return Identity(None, "none", "duplicate_credentials")
    value = headers.get("authorization")
    if not value:
        return NO_IDENTITY
    if len(value) > MAX_CREDENTIALS_LENGTH:
        return Identity(None, "none", "unreadable_credentials")
    # A client sends the same credentials on every request: what they name is remembered, by a
    # digest of them (the cache must not become a store of passwords and tokens).
    key = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return Identity(*remembered(_credentials_seen, _CREDENTIALS_CACHED, key, _named_by, value))


#: How many credentials' identities are remembered (`identity_of`): a digest and an Identity
#: each, a few megabytes at most.
_CREDENTIALS_CACHED = 65536
_credentials_seen: dict[bytes, tuple[str | None, IdentitySource, str | None]] = {}


def _named_by(value: str) -> tuple[str | None, IdentitySource, str | None]:
    identity = _read_credentials(value)
    return identity.name, identity.source, identity.problem


def _read_credentials(value: str) -> Identity:
    scheme, _, credentials = value.strip().partition(" ")
    scheme = scheme.casefold()
    if scheme == "basic":
        user = basic_user(credentials)
        return Identity(user, "basic", None if user else "unreadable_credentials")
    if scheme == "bearer":
        user = bearer_user(credentials)
        return Identity(user, "bearer", None if user else "unreadable_credentials")
    return Identity(None, "none", "unsupported_credentials")


# ---------------------------------------------------------------------------------------------
# The base64-encoded query ([MS-ASHTTP] 2.2.1.1.1.1)


class _Reader:
    """Reads the byte sequence; every overrun is a ValueError, never an IndexError."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, count: int, what: str) -> bytes:
        if count > self.remaining:
            raise ValueError(
                f"EAS base64 query: {what} needs {count} byte(s), {self.remaining} left"
            )
        chunk = self._data[self._pos : self._pos + count]
        self._pos += count
        return chunk

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def counted(self, what: str) -> bytes:
        return self.take(self.byte(f"{what} length"), what)


def _b64_bytes(query: str) -> bytes:
    if len(query) > MAX_URI_LENGTH:
        raise ValueError("EAS base64 query: too long")
    try:
        token = unquote(query, errors="strict") if "%" in query else query
    except UnicodeDecodeError as exc:
        raise ValueError("EAS base64 query: invalid percent-escape") from exc
    if not _BASE64_TOKEN.fullmatch(token):
        raise ValueError("EAS base64 query: not a single base64 token")
    token = token.rstrip("=").replace("-", "+").replace("_", "/")
    if len(token) % 4 == 1:
        raise ValueError("EAS base64 query: impossible base64 length")
    token += "=" * (-len(token) % 4)
    try:
        return base64.b64decode(token, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"EAS base64 query: {exc}") from exc


def _text(raw: bytes, what: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"EAS base64 query: {what} is not UTF-8") from exc
    if not text.isprintable():
        raise ValueError(f"EAS base64 query: {what} has control characters")
    return text


def _device_id_text(raw: bytes) -> str:
    """A device id that is printable UTF-8 as that text (the spec's own example, `v140Device`);
    anything else (a binary GUID) as upper-case hex, the form Exchange lists such ids in."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.hex().upper()
    return text if text.isprintable() else raw.hex().upper()


def decode_eas_base64_query(query: str) -> dict[str, str]:
    """Decode a base64-encoded ActiveSync query value (the part after `?`).

    Returns `ProtocolVersion` ("14.1"), `Cmd` (the command name; an unknown code as its decimal
    number), `Locale` (decimal LCID), `DeviceId`, `DeviceIdHex` (the raw device id bytes in
    upper-case hex, for servers that key devices that way), `DeviceType` (absent when empty),
    `PolicyKey` (decimal, when 4 bytes are sent) and any command parameters by name (`User`, …;
    `Options` as a decimal bit mask). Accepts the standard and URL-safe alphabets, with or without
    padding, and a percent-encoded token. Raises ValueError on anything malformed: bad base64,
    a length that overruns the data, an empty device id, non-UTF-8 or control characters in a text
    field, a truncated parameter, or the same parameter twice with different values.
    """
    reader = _Reader(_b64_bytes(query))
    version = reader.byte("protocol version")
    code = reader.byte("command code")
    locale = struct.unpack("<H", reader.take(2, "locale"))[0]
    device_raw = reader.counted("device ID")
    if not device_raw:
        raise ValueError("EAS base64 query: device ID length is 0")
    result: dict[str, str] = {
        "ProtocolVersion": f"{version // 10}.{version % 10}",
        "Cmd": EAS_COMMANDS.get(code, str(code)),
        "Locale": str(locale),
        "DeviceId": _device_id_text(device_raw),
        "DeviceIdHex": device_raw.hex().upper(),
    }
    policy_key = reader.counted("policy key")
    if len(policy_key) == 4:
        result["PolicyKey"] = str(struct.unpack("<I", policy_key)[0])
    device_type = _text(reader.counted("device type"), "device type")
    if device_type:
        result["DeviceType"] = device_type
    while reader.remaining:
        tag = reader.byte("parameter tag")
        value_raw = reader.counted("parameter value")
        name = EAS_PARAMETER_TAGS.get(tag)
        if name is None:
            continue  # a tag this version of the spec does not define: skip its value
        if tag == _OPTIONS_TAG:
            value = str(int.from_bytes(value_raw, "little"))
        else:
            value = _text(value_raw, name)
        if name in result and result[name] != value:
            raise ValueError(f"EAS base64 query: {name} given twice with different values")
        result[name] = value
    return result


def encode_eas_base64_query(
    *,
    command: str,
    device_id: str,
    device_type: str,
    user: str | None = None,
    protocol_version: str = "14.1",
    locale: int = 0x0409,
    policy_key: int | None = None,
) -> str:
    """The base64-encoded query value for these fields (standard alphabet, padded, RFC 2045).

    The inverse of `decode_eas_base64_query` for printable device ids. Raises ValueError for an
    unknown command, a malformed protocol version, out-of-range locale or policy key, an empty
    device id, or a field longer than 255 UTF-8 bytes.
    """
    code = _COMMAND_CODES.get(command.casefold())
    if code is None:
        raise ValueError(f"unknown ActiveSync command {command!r}")
    match = _PROTOCOL_VERSION.fullmatch(protocol_version)
    if match is None or int(match[1]) * 10 + int(match[2]) > 255:
        raise ValueError(f"protocol version {protocol_version!r} is not like '14.1'")
    if not 0 <= locale <= 0xFFFF:
        raise ValueError("locale must fit in two bytes")
    if not device_id or not device_id.isprintable():
        raise ValueError("device id must be non-empty printable text")

    def counted(value: bytes, what: str) -> bytes:
        if len(value) > 255:
            raise ValueError(f"{what} is longer than 255 bytes")
        return bytes([len(value)]) + value

    out = bytearray([int(match[1]) * 10 + int(match[2]), code])
    out += struct.pack("<H", locale)
    out += counted(device_id.encode("utf-8"), "device id")
    if policy_key is None:
        out += b"\x00"
    else:
        if not 0 <= policy_key <= 0xFFFFFFFF:
            raise ValueError("policy key must be an unsigned 32-bit integer")
        out += b"\x04" + struct.pack("<I", policy_key)
    out += counted(device_type.encode("utf-8"), "device type")
    if user is not None:
        out += bytes([_USER_TAG]) + counted(user.encode("utf-8"), "user")
    return base64.b64encode(bytes(out)).decode("ascii")


# ---------------------------------------------------------------------------------------------
# The plain text query ([MS-ASHTTP] 2.2.1.1.1.2)


def _plain_fields(query: str) -> tuple[dict[str, str | None], frozenset[str]]:
    """DeviceId, DeviceType, User, Cmd from `name=value&…` (names case-insensitive), and the
    fields given twice with different values.

    Such a field is ambiguous (the gate and the mail server could read different ones), so it is
    reported as None; so is one that fails `_clean` or is not UTF-8.
    """
    found: dict[str, str | None] = {}
    conflicting: set[str] = set()
    for pair in query.split("&"):
        name_raw, sep, value_raw = pair.partition("=")
        if not sep:
            continue
        try:
            name = unquote_plus(name_raw, errors="strict").casefold()
        except UnicodeDecodeError:
            continue
        field = _PLAIN_FIELDS.get(name)
        if field is None:
            continue
        try:
            value = _clean(unquote_plus(value_raw, errors="strict"))
        except UnicodeDecodeError:
            value = None
        if field in found and found[field] != value:
            found[field] = None
            conflicting.add(field)
        else:
            found[field] = value
    return found, frozenset(conflicting)


def _is_base64_query(query: str) -> bool:
    token = unquote(query, errors="replace") if "%" in query else query
    return "&" not in token and _BASE64_TOKEN.fullmatch(token) is not None


def _query_fields(query: str) -> tuple[dict[str, str | None], frozenset[str], Encoding]:
    """The query's fields, the ones given twice with different values, and its form. (A base64
    query with a field twice is malformed as a whole: `decode_eas_base64_query` refuses it.)"""
    if not query or len(query) > MAX_URI_LENGTH:
        return {}, frozenset(), "none"
    if _is_base64_query(query):
        try:
            decoded = decode_eas_base64_query(query)
        except ValueError:
            return {}, frozenset(), "none"
        fields = {key: _clean(decoded.get(key)) for key in _PLAIN_FIELDS.values()}
        return fields, frozenset(), "base64"
    fields, conflicting = _plain_fields(query)
    return fields, conflicting, "plain"


# ---------------------------------------------------------------------------------------------
# The whole request


def parse_gate_request(
    headers: Mapping[str, str],
    raw_path: str = FORWARD_PATH,
    config: GateConfig = GateConfig(),
    *,
    query: str = "",
    method: str = "GET",
    duplicated: Collection[str] = (),
    lower_cased: bool = False,
) -> GateRequest:
    """The gate request a proxy forwarded. Never raises; untrusted values come back as None, and
    a request that cannot be read with certainty carries a `problem` (then it is refused).

    `raw_path` and `query`: the gate request's own path, percent-encoding untouched (ASGI
    `raw_path`), and query (a `?` in `raw_path` is split off when `query` is not given).
    `method`: the gate request's own method (Envoy forwards the original one). `duplicated`: the
    lower-case names of headers that arrived more than once (a mapping keeps only one value).
    Header names are matched case-insensitively (`lower_cased=True`: the caller promises they
    are lower case already, as an ASGI server gives them).

    Deliberately no catch-all: were a bug to raise here, the gate route fails (the proxy then
    denies with 500) instead of answering "not a gated path" for a request it did not understand.
    """
    if not lower_cased and any(name != name.lower() for name in headers):
        headers = {name.lower(): value for name, value in headers.items()}
    if not query and "?" in raw_path:
        raw_path, _, query = raw_path.partition("?")
    return _parse(headers, raw_path, query, method, frozenset(duplicated), config)


def _parse(
    headers: Mapping[str, str],
    raw_path: str,
    query: str,
    method: str,
    duplicated: frozenset[str],
    config: GateConfig,
) -> GateRequest:
    uri, uri_conflict = original_uri(headers, raw_path, query, config=config, duplicated=duplicated)
    original_method, method_conflict = _one_of(headers, config.method_headers, duplicated)
    if uri is None:
        problem = "conflicting_uri" if uri_conflict else "no_original_uri"
        path = normalise_path(raw_path)
        return GateRequest(None, None, None, None, None, path, "none", problem=problem)
    parts = _uri_parts(uri, config.locations)
    device_id, device_type, user, command, normal, resource, encoding, user_conflict = parts
    if config.device_header is not None:
        name = config.device_header.lower()
        device_id = None if name in duplicated else _clean(headers.get(name))
        encoding = "header"
    if device_id is None:
        encoding = "none"
    return GateRequest(
        device_id=device_id,
        device_type=device_type,
        user=user,
        command=command,
        resource=resource,
        path=normal,
        encoding=encoding,
        method=(original_method or method).upper() if not method_conflict else "",
        identity=identity_of(headers, config, duplicated),
        user_conflict=user_conflict,
        problem="conflicting_method" if method_conflict else None,
    )


_UriParts = tuple[
    str | None, str | None, str | None, str | None, str, str | None, Encoding, bool
]  # device id, device type, user, command, normalised path, resource, encoding, User= conflict

#: A phone asks with the same URI again and again (Sync, Ping every few minutes), so what a URI
#: says is remembered; only short URIs, so that the cache stays small whatever callers send.
_CACHED_URI_LENGTH = 512


def _read_uri(uri: str, locations: tuple[tuple[str, str], ...]) -> _UriParts:
    raw_path, _, query = uri.partition("?")
    normal = normalise_path(raw_path)
    fields, conflicting, encoding = _query_fields(query)
    return (
        fields.get("DeviceId"),
        fields.get("DeviceType"),
        account_name(fields.get("User")),  # as the gate compares it with the identity
        fields.get("Cmd"),
        normal,
        resource_for(normal, locations),
        encoding,
        "User" in conflicting,
    )


_URIS_CACHED = 16384
_uris_seen: dict[tuple[str, tuple[tuple[str, str], ...]], _UriParts] = {}


def _uri_parts(uri: str, locations: tuple[tuple[str, str], ...]) -> _UriParts:
    if len(uri) > _CACHED_URI_LENGTH:
        return _read_uri(uri, locations)
    return remembered(_uris_seen, _URIS_CACHED, (uri, locations), _read_uri, uri, locations)
