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

Everything here is hostile input. `parse_gate_request` never raises: a value it cannot trust (too
long, control characters, invalid UTF-8, conflicting duplicates, a malformed base64 query) is
reported as absent (`None`). `decode_eas_base64_query` raises `ValueError` for its direct callers.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, unquote_plus

Encoding = Literal["plain", "base64", "header", "none"]

#: A query longer than this is not parsed (nginx's default request-line buffer is 8k).
MAX_URI_LENGTH = 8192
#: The longest device id, user, device type or command accepted (longer values are ignored).
MAX_VALUE_LENGTH = 512
#: The request path under which Envoy's `path_prefix` mode delivers the original path.
FORWARD_PATH = "/gate/forward"
#: Where the original URI may be found, first match wins (case-insensitive header names).
DEFAULT_URI_HEADERS: tuple[str, ...] = ("X-Original-URI", "X-Forwarded-Uri")

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


@dataclass(frozen=True, slots=True)
class GateRequest:
    """What the proxy asks about: which device wants which resource, for whom."""

    device_id: str | None  # the ActiveSync DeviceId (as sent; callers normalise)
    device_type: str | None
    user: str | None  # the proxy's user header, else ActiveSync User= ("DOMAIN\\user" or an email)
    command: str | None  # Cmd
    resource: str | None  # from the path mapping; None = not a gated path
    path: str  # original path without the query, percent-decoded and dot-segment-resolved
    encoding: Encoding  # where device_id came from; "none" when device_id is None


@dataclass(frozen=True, slots=True)
class GateConfig:
    """How to read a proxy's request. The defaults fit Exchange/OWA behind nginx."""

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
    # headers the proxy sets to the authenticated user; they win over the ActiveSync User= value.
    user_headers: tuple[str, ...] = ("X-Forwarded-User", "X-Remote-User")
    # where the original URI is read from, first present wins (see `original_uri`).
    uri_headers: tuple[str, ...] = DEFAULT_URI_HEADERS


# ---------------------------------------------------------------------------------------------
# Headers and the original URI


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


def original_uri(
    headers: Mapping[str, str],
    path: str,
    *,
    uri_headers: Sequence[str] = DEFAULT_URI_HEADERS,
) -> str:
    """The URI the client asked the proxy for (path and query).

    `X-Original-URI` (nginx), else `X-Forwarded-Uri` (Traefik), else the gate request's own path
    with a leading `/gate/forward` removed (Envoy `path_prefix` mode, where the gate is called at
    `path_prefix + original path`). Empty header values count as absent.
    """
    for name in uri_headers:
        value = header_value(headers, name)
        if value:
            return value
    if path.startswith(FORWARD_PATH):
        rest = path[len(FORWARD_PATH) :]
        if not rest:
            return "/"
        if rest[0] == "/":
            return rest
        if rest[0] == "?":
            return "/" + rest
    return path


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


def normalise_user(user: str | None) -> str | None:
    """`DOMAIN\\alice` → `alice`; `Alice@Example.com` → `alice@example.com`; stripped, lower-cased.

    None for nothing usable (absent, blank, a bare `DOMAIN\\`, control characters).
    """
    if user is None:
        return None
    text = user.strip()
    if "\\" in text:
        text = text.rsplit("\\", 1)[1].strip()
    cleaned = _clean(text)
    return None if cleaned is None else cleaned.lower()


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


def _plain_fields(query: str) -> dict[str, str | None]:
    """DeviceId, DeviceType, User, Cmd from `name=value&…` (names case-insensitive).

    A field given twice with different values is ambiguous (the gate and the mail server could
    read different ones), so it is reported as None; so is one that fails `_clean` or is not UTF-8.
    """
    found: dict[str, str | None] = {}
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
        else:
            found[field] = value
    return found


def _is_base64_query(query: str) -> bool:
    token = unquote(query, errors="replace") if "%" in query else query
    return "&" not in token and _BASE64_TOKEN.fullmatch(token) is not None


def _query_fields(query: str) -> tuple[dict[str, str | None], Encoding]:
    if not query or len(query) > MAX_URI_LENGTH:
        return {}, "none"
    if _is_base64_query(query):
        try:
            decoded = decode_eas_base64_query(query)
        except ValueError:
            return {}, "none"
        return {key: _clean(decoded.get(key)) for key in _PLAIN_FIELDS.values()}, "base64"
    return _plain_fields(query), "plain"


# ---------------------------------------------------------------------------------------------
# The whole request


def parse_gate_request(
    headers: Mapping[str, str],
    path: str,
    config: GateConfig = GateConfig(),
    *,
    lower_cased: bool = False,
) -> GateRequest:
    """The gate request a proxy forwarded. Never raises; untrusted values come back as None.
    Header names are matched case-insensitively (`lower_cased=True`: the caller promises they
    are lower case already, as an ASGI server gives them).

    Deliberately no catch-all: were a bug to raise here, the gate route fails (the proxy then
    denies with 500) instead of answering "not a gated path" for a request it did not understand.
    """
    if not lower_cased and any(name != name.lower() for name in headers):
        headers = {name.lower(): value for name, value in headers.items()}
    return _parse(headers, path, config)


def _parse(headers: Mapping[str, str], path: str, config: GateConfig) -> GateRequest:
    uri = original_uri(headers, path, uri_headers=config.uri_headers)
    parts = _uri_parts(uri, config.locations) if len(uri) <= _CACHED_URI_LENGTH else None
    if parts is None:
        parts = _read_uri(uri, config.locations)
    device_id, device_type, user, command, normal, resource, encoding = parts
    if config.device_header is not None:
        device_id = _clean(headers.get(config.device_header.lower()))
        encoding = "header"
    if device_id is None:
        encoding = "none"
    for name in config.user_headers:
        from_header = _clean(headers.get(name.lower()))
        if from_header is not None:
            user = from_header
            break
    return GateRequest(
        device_id=device_id,
        device_type=device_type,
        user=user,
        command=command,
        resource=resource,
        path=normal,
        encoding=encoding,
    )


_UriParts = tuple[
    str | None, str | None, str | None, str | None, str, str | None, Encoding
]  # device id, device type, user, command, normalised path, resource, encoding

#: A phone asks with the same URI again and again (Sync, Ping every few minutes), so what a URI
#: says is remembered; only short URIs, so that the cache stays small whatever callers send.
_CACHED_URI_LENGTH = 512


def _read_uri(uri: str, locations: tuple[tuple[str, str], ...]) -> _UriParts:
    raw_path, _, query = uri.partition("?")
    normal = normalise_path(raw_path)
    fields, encoding = _query_fields(query)
    return (
        fields.get("DeviceId"),
        fields.get("DeviceType"),
        fields.get("User"),
        fields.get("Cmd"),
        normal,
        resource_for(normal, locations),
        encoding,
    )


_uri_parts = functools.lru_cache(maxsize=16384)(_read_uri)
