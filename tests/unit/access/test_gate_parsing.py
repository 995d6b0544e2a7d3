"""Parsing what a proxy forwards to the gate: appwarden.access.gate (pure)."""

from __future__ import annotations

import base64
import dataclasses
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appwarden.access.gate import (
    GateConfig,
    GateRequest,
    Identity,
    account_name,
    basic_user,
    bearer_user,
    decode_eas_base64_query,
    encode_eas_base64_query,
    original_uri,
    parse_gate_request,
)

EAS = "/Microsoft-Server-ActiveSync"
DEVICE = "6F24CAD599A5BF1A690246B8C68FAE8D"
PLAIN = f"Cmd=Sync&User=jdoe&DeviceId={DEVICE}&DeviceType=iPhone"


def nginx(uri: str, **extra: str) -> GateRequest:
    """What the gate sees behind nginx: the original URI in X-Original-URI."""
    return parse_gate_request({"X-Original-URI": uri, **extra}, "/gate/forward")


def without_encoding(request: GateRequest) -> GateRequest:
    return dataclasses.replace(request, encoding="none")


# --- the specification's own example -------------------------------------------------------------


def test_the_ms_ashttp_example_decodes_as_the_specification_describes() -> None:
    # [MS-ASHTTP] 2.2.1.1.1.1: /Microsoft-Server-ActiveSync?jAAJBAp2MTQwRGV2aWNlAApTbWFydFBob25l
    decoded = decode_eas_base64_query("jAAJBAp2MTQwRGV2aWNlAApTbWFydFBob25l")
    assert decoded == {
        "ProtocolVersion": "14.0",
        "Cmd": "Sync",
        "Locale": "1033",  # 09 04 little-endian = 0x0409, en-US
        "DeviceId": "v140Device",
        "DeviceIdHex": b"v140Device".hex().upper(),
        "DeviceType": "SmartPhone",
    }


def test_encode_reproduces_the_specification_example_byte_for_byte() -> None:
    assert (
        encode_eas_base64_query(
            command="Sync",
            device_id="v140Device",
            device_type="SmartPhone",
            protocol_version="14.0",
        )
        == "jAAJBAp2MTQwRGV2aWNlAApTbWFydFBob25l"
    )


# --- plain and base64 forms ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "plain_query"),
    [
        (
            {"command": "Sync", "device_id": DEVICE, "device_type": "iPhone", "user": "jdoe"},
            PLAIN,
        ),
        (
            {
                "command": "Ping",
                "device_id": "androidc1234567",
                "device_type": "Android",
                "user": "CORP\\alice",
            },
            "Cmd=Ping&User=CORP%5Calice&DeviceId=androidc1234567&DeviceType=Android",
        ),
        (
            {
                "command": "SendMail",
                "device_id": "WP8-ABC",
                "device_type": "WindowsPhone",
                "user": "bob@example.com",
            },
            "cmd=SendMail&user=bob%40example.com&deviceid=WP8-ABC&devicetype=WindowsPhone",
        ),
        (
            {"command": "FolderSync", "device_id": "NoUser1", "device_type": "iPad", "user": None},
            "Cmd=FolderSync&DeviceId=NoUser1&DeviceType=iPad",
        ),
    ],
)
def test_plain_and_base64_forms_of_one_request_give_the_same_gate_request(
    fields: dict[str, str | None], plain_query: str
) -> None:
    token = encode_eas_base64_query(
        command=str(fields["command"]),
        device_id=str(fields["device_id"]),
        device_type=str(fields["device_type"]),
        user=fields["user"],
        policy_key=1234567890,
    )
    plain = nginx(f"{EAS}?{plain_query}")
    encoded = nginx(f"{EAS}?{token}")
    assert plain.encoding == "plain"
    assert encoded.encoding == "base64"
    assert without_encoding(plain) == without_encoding(encoded)
    assert plain.device_id == fields["device_id"]
    assert plain.command == fields["command"]
    assert plain.user == account_name(fields["user"])
    assert plain.resource == "email"


@pytest.mark.parametrize("alphabet", ["standard", "urlsafe", "urlsafe-unpadded", "unpadded"])
def test_base64_query_accepts_both_alphabets_with_or_without_padding(alphabet: str) -> None:
    # a device id whose bytes produce '+' and '/' in standard base64
    raw = bytes([141, 0, 9, 4, 3]) + b"\xfb\xff\xbf" + b"\x00" + b"\x05Phone"
    standard = base64.b64encode(raw).decode()
    assert "+" in standard or "/" in standard
    token = {
        "standard": standard,
        "urlsafe": base64.urlsafe_b64encode(raw).decode(),
        "urlsafe-unpadded": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "unpadded": standard.rstrip("="),
    }[alphabet]
    decoded = decode_eas_base64_query(token)
    assert decoded["DeviceId"] == "FBFFBF"  # not printable UTF-8: upper-case hex
    assert nginx(f"{EAS}?{token}").device_id == "FBFFBF"


def test_binary_guid_device_id_is_upper_case_hex() -> None:
    guid = bytes.fromhex(DEVICE)
    raw = bytes([141, 9, 9, 4, len(guid)]) + guid + b"\x04" + struct.pack("<I", 7) + b"\x02WP"
    decoded = decode_eas_base64_query(base64.b64encode(raw).decode())
    assert decoded["DeviceId"] == DEVICE
    assert decoded["DeviceIdHex"] == DEVICE
    assert decoded["Cmd"] == "FolderSync"
    assert decoded["PolicyKey"] == "7"


def test_percent_encoded_base64_token_is_decoded() -> None:
    token = encode_eas_base64_query(command="Sync", device_id="A+B/C=", device_type="x")
    escaped = token.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
    assert nginx(f"{EAS}?{escaped}").device_id == "A+B/C="


def test_command_parameters_other_than_user_are_decoded_and_unknown_tags_skipped() -> None:
    base = base64.b64decode(
        encode_eas_base64_query(command="SmartReply", device_id="D", device_type="T")
    )
    params = b"\x01\x03abc" + b"\x07\x01\x03" + b"\x63\x02zz" + b"\x08\x04jdoe"
    decoded = decode_eas_base64_query(base64.b64encode(base + params).decode())
    assert decoded["Cmd"] == "SmartReply"
    assert decoded["CollectionId"] == "abc"
    assert decoded["Options"] == "3"
    assert decoded["User"] == "jdoe"


def test_unknown_command_code_keeps_the_device_id() -> None:
    raw = bytes([161, 200, 9, 4, 1]) + b"D" + b"\x00" + b"\x01T"
    decoded = decode_eas_base64_query(base64.b64encode(raw).decode())
    assert decoded["Cmd"] == "200"
    assert decoded["ProtocolVersion"] == "16.1"
    assert nginx(f"{EAS}?{base64.b64encode(raw).decode()}").device_id == "D"


# --- malformed base64 -----------------------------------------------------------------------------

GOOD = base64.b64decode(
    encode_eas_base64_query(command="Sync", device_id="ABCDEF", device_type="iPhone", user="jdoe")
)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(GOOD[:3], id="no-locale"),
        pytest.param(GOOD[:4], id="no-device-id-length"),
        pytest.param(GOOD[:4] + b"\x20ABCDEF", id="device-id-length-overruns"),
        pytest.param(GOOD[:4] + b"\x00" + GOOD[11:], id="device-id-length-zero"),
        pytest.param(GOOD[:11], id="no-policy-key-length"),
        pytest.param(GOOD[:11] + b"\x04\x01", id="policy-key-overruns"),
        pytest.param(GOOD[:12] + b"\x7fiPhone", id="device-type-length-overruns"),
        pytest.param(GOOD + b"\x08", id="parameter-without-length"),
        pytest.param(GOOD + b"\x08\x09jdoe", id="parameter-length-overruns"),
        pytest.param(GOOD + b"\x08\x04mary", id="user-twice-differently"),
        pytest.param(GOOD[:12] + b"\x02\xff\xfe", id="device-type-not-utf8"),
        pytest.param(GOOD + b"\x08\x02a\x00", id="user-with-nul"),
        pytest.param(b"", id="empty"),
    ],
)
def test_malformed_base64_query_raises_value_error_and_parses_to_no_device(raw: bytes) -> None:
    token = base64.b64encode(raw).decode()
    with pytest.raises(ValueError, match="EAS base64 query"):
        decode_eas_base64_query(token)
    request = nginx(f"{EAS}?{token}")
    assert request.device_id is None
    assert request.encoding == "none"
    assert request.resource == "email"


@pytest.mark.parametrize("token", ["abcde", "a", "!!!!", "ab=c", "%ff%fe", "QUJD\x00", "a" * 9000])
def test_bad_base64_text_raises_value_error(token: str) -> None:
    with pytest.raises(ValueError, match="EAS base64 query"):
        decode_eas_base64_query(token)


# --- plain-query details --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "device", "user"),
    [
        pytest.param(PLAIN, DEVICE, "jdoe", id="plain"),
        pytest.param(
            "Cmd=Sync&User=DOMAIN%5Cjdoe&DeviceId=abc&DeviceType=x",
            "abc",
            "domain\\jdoe",
            id="domain-user",
        ),
        pytest.param(
            "DEVICEID=abc&uSeR=jdoe%40example.com", "abc", "jdoe@example.com", id="case-insensitive"
        ),
        pytest.param("DeviceId=a%2Bb%20c&User=x+y", "a+b c", "x y", id="url-encoded"),
        pytest.param("%44eviceId=abc", "abc", None, id="encoded-name"),
        pytest.param("Cmd=Sync&User=jdoe&DeviceType=iPhone", None, "jdoe", id="missing-device-id"),
        pytest.param("DeviceId=&User=jdoe", None, "jdoe", id="empty-device-id"),
        pytest.param("DeviceId=abc&deviceid=abc", "abc", None, id="same-twice"),
        pytest.param("DeviceId=abc&deviceid=xyz", None, None, id="conflicting-twice"),
        pytest.param("DeviceId=ab%00c", None, None, id="nul"),
        pytest.param("DeviceId=%ff%fe&User=jdoe", None, "jdoe", id="invalid-utf8"),
        pytest.param("DeviceId=" + "a" * 600, None, None, id="over-long-value"),
        pytest.param("DeviceId=abc&x=" + "a" * 9000, None, None, id="huge-query"),
        pytest.param("DeviceId", None, None, id="name-only"),
    ],
)
def test_plain_query(query: str, device: str | None, user: str | None) -> None:
    request = nginx(f"{EAS}?{query}")
    assert request.device_id == device
    assert request.user == user
    assert request.encoding == ("plain" if device else "none")
    assert request.resource == "email"


# --- paths and resources --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "resource", "path"),
    [
        pytest.param(f"{EAS}?{PLAIN}", "email", EAS, id="eas"),
        pytest.param(
            "/microsoft-server-activesync?DeviceId=a",
            "email",
            "/microsoft-server-activesync",
            id="case-insensitive",
        ),
        pytest.param("/owa/", "webmail", "/owa/", id="owa"),
        pytest.param(
            "/OWA/auth/logon.aspx?url=x", "webmail", "/OWA/auth/logon.aspx", id="owa-deep"
        ),
        pytest.param("/owa", "webmail", "/owa", id="owa-without-slash"),
        pytest.param("/mail/inbox", "webmail", "/mail/inbox", id="mail"),
        pytest.param("/owabc", None, "/owabc", id="not-owa"),
        pytest.param("/ecp/", None, "/ecp/", id="ungated"),
        pytest.param("/", None, "/", id="root"),
        pytest.param("/%4Dicrosoft-Server-ActiveSync", "email", EAS, id="percent-encoded"),
        pytest.param("/owa/../Microsoft-Server-ActiveSync", "email", EAS, id="dot-dot"),
        pytest.param("/owa\\..\\Microsoft-Server-ActiveSync", "email", EAS, id="backslash"),
        pytest.param("//Microsoft-Server-ActiveSync", "email", EAS, id="double-slash"),
        pytest.param("/x/%2e%2e/owa/./", "webmail", "/owa/", id="encoded-dots"),
        pytest.param("/../../etc", None, "/etc", id="above-root"),
        pytest.param("https://mail.example.com/owa/x", "webmail", "/owa/x", id="absolute-form"),
    ],
)
def test_path_maps_to_resource(uri: str, resource: str | None, path: str) -> None:
    request = nginx(uri)
    assert request.resource == resource
    assert request.path == path


def test_owa_has_webmail_resource_and_no_device() -> None:
    request = nginx("/owa/", **{"X-Forwarded-User": "alice@example.com"})
    assert request == GateRequest(
        device_id=None,
        device_type=None,
        user=None,  # X-Forwarded-User is read only when configured as the user header
        command=None,
        resource="webmail",
        path="/owa/",
        encoding="none",
    )


def test_longest_location_prefix_wins() -> None:
    config = GateConfig(
        locations=(("/mail/", "webmail"), ("/mail/activesync", "email"), ("/MAIL/Admin/", "admin"))
    )
    assert (
        parse_gate_request({}, "/gate/forward/mail/activesync?DeviceId=a", config).resource
        == "email"
    )
    assert parse_gate_request({}, "/gate/forward/mail/admin/x", config).resource == "admin"
    assert parse_gate_request({}, "/gate/forward/mail/inbox", config).resource == "webmail"


# --- where the original URI comes from ------------------------------------------------------------


def test_original_uri_sources() -> None:
    assert original_uri({"x-original-uri": "/a?b"}, "/gate/forward") == ("/a?b", False)
    assert original_uri({"x-forwarded-uri": "/t?u"}, "/gate/forward") == ("/t?u", False)
    # Envoy: the raw path after /gate/forward/, percent-encoding untouched, and the query
    assert original_uri({}, "/gate/forward/e%2Fx", "q=1") == ("/e%2Fx?q=1", False)
    assert original_uri({"x-original-uri": ""}, "/gate/forward/e", "q") == ("/e?q", False)
    # Caddy calls /gate/forward?<query>: that is not Envoy's form, and alone it names nothing
    assert original_uri({}, "/gate/forward", "DeviceId=a") == (None, False)
    assert original_uri({}, "/gate/forwarded/x") == (None, False)


def test_with_no_proxy_named_disagreeing_uri_sources_are_a_conflict() -> None:
    both = {"x-forwarded-uri": "/traefik", "x-original-uri": "/nginx"}
    assert original_uri(both, "/gate/forward") == (None, True)
    assert original_uri({"x-original-uri": "/a"}, "/gate/forward/b") == (None, True)
    same = {"x-forwarded-uri": "/a?b", "x-original-uri": "/a?b"}
    assert original_uri(same, "/gate/forward") == ("/a?b", False)
    duplicated = original_uri(
        {"x-original-uri": "/a"}, "/gate/forward", duplicated={"x-original-uri"}
    )
    assert duplicated == (None, True)
    request = parse_gate_request(both, "/gate/forward")
    assert (request.problem, request.resource) == ("conflicting_uri", None)


@pytest.mark.parametrize(
    ("proxy", "reads"),
    [("nginx", "x-original-uri"), ("caddy", "x-forwarded-uri"), ("traefik", "x-forwarded-uri")],
)
def test_a_named_proxy_reads_only_its_own_uri_header(proxy: str, reads: str) -> None:
    config = GateConfig.for_proxy(proxy)  # type: ignore[arg-type]
    forged = {"x-original-uri": "/", "x-forwarded-uri": "/"}
    headers = {**forged, reads: f"{EAS}?{PLAIN}"}
    request = parse_gate_request(headers, "/gate/forward", config)
    assert (request.resource, request.device_id, request.problem) == ("email", DEVICE, None)
    # nor Envoy's path form: a client cannot smuggle a URI in the gate's own path either
    assert parse_gate_request(headers, f"/gate/forward/owa/?{PLAIN}", config).resource == "email"


def test_envoy_reads_the_raw_path_only() -> None:
    config = GateConfig.for_proxy("envoy")
    request = parse_gate_request(
        {"x-original-uri": "/owa/"}, f"/gate/forward{EAS}", config, query=PLAIN, method="OPTIONS"
    )
    assert (request.resource, request.device_id, request.method) == ("email", DEVICE, "OPTIONS")
    # decoded once, as the mail server decodes it: %252e%252e is no dot segment
    sneaky = parse_gate_request({}, f"/gate/forward{EAS}/%252e%252e/owa/", config, query=PLAIN)
    assert (sneaky.resource, sneaky.path) == ("email", f"{EAS}/%2e%2e/owa/")
    dotted = parse_gate_request({}, f"/gate/forward{EAS}/%2e%2e/owa/", config, query=PLAIN)
    assert dotted.resource == "webmail"


def test_the_original_method() -> None:
    nginx_config = GateConfig.for_proxy("nginx")
    headers = {"x-original-uri": EAS, "x-original-method": "options"}
    assert parse_gate_request(headers, "/gate/forward", nginx_config).method == "OPTIONS"
    caddy = GateConfig.for_proxy("caddy")
    headers = {"x-forwarded-uri": EAS, "x-forwarded-method": "OPTIONS", "x-original-method": "GET"}
    assert parse_gate_request(headers, "/gate/forward", caddy).method == "OPTIONS"
    # no proxy named: two different methods are a conflict
    conflict = parse_gate_request(
        {"x-original-uri": EAS, "x-original-method": "GET", "x-forwarded-method": "OPTIONS"}
    )
    assert conflict.problem == "conflicting_method"
    # no header: the gate request's own method
    assert parse_gate_request({"x-original-uri": EAS}, method="post").method == "POST"


def test_uri_and_method_headers_can_be_configured() -> None:
    config = GateConfig.for_proxy(
        "nginx", uri_headers=["X-Real-URI"], method_headers=["X-Real-Method"]
    )
    headers = {"x-real-uri": f"{EAS}?{PLAIN}", "x-real-method": "PUT", "x-original-uri": "/"}
    request = parse_gate_request(headers, "/gate/forward", config)
    assert (request.resource, request.method) == ("email", "PUT")


# --- headers: device and user ---------------------------------------------------------------------


def test_device_header_overrides_the_query() -> None:
    config = GateConfig(device_header="X-Client-Cert-Fingerprint")
    fingerprint = "AB:CD:EF:01"
    request = parse_gate_request(
        {"X-Original-URI": f"{EAS}?{PLAIN}", "x-client-cert-fingerprint": fingerprint},
        "/gate/forward",
        config,
    )
    assert (request.device_id, request.encoding) == (fingerprint, "header")
    assert (request.device_type, request.command) == ("iPhone", "Sync")
    # configured but absent: no device, even though the query names one
    missing = parse_gate_request({"X-Original-URI": f"{EAS}?{PLAIN}"}, "/gate/forward", config)
    assert (missing.device_id, missing.encoding) == (None, "none")


def _basic(user: str, password: str = "secret") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _jwt(claims: dict[str, object]) -> str:
    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("authorization", "expected"),
    [
        (None, Identity(None, "none")),
        (_basic("EXAMPLE\\Bob"), Identity("example\\bob", "basic")),
        (_basic("bob@example.com", "pa:ss:word"), Identity("bob@example.com", "basic")),
        ("basic " + base64.b64encode(b"bob:x").decode(), Identity("bob", "basic")),
        (
            "Bearer " + _jwt({"upn": "Bob@Example.com", "unique_name": "x"}),
            Identity("bob@example.com", "bearer"),
        ),
        ("Bearer " + _jwt({"unique_name": "EXAMPLE\\bob"}), Identity("example\\bob", "bearer")),
        (
            "Bearer " + _jwt({"preferred_username": "bob@example.com"}),
            Identity(None, "bearer", "unreadable_credentials"),
        ),
        ("Bearer opaque-token", Identity(None, "bearer", "unreadable_credentials")),
        ("Bearer a.b.c.d.e", Identity(None, "bearer", "unreadable_credentials")),
        ("Basic !!!", Identity(None, "basic", "unreadable_credentials")),
        (
            "Basic " + base64.b64encode(b"no-colon").decode(),
            Identity(None, "basic", "unreadable_credentials"),
        ),
        (_basic("bo\x00b"), Identity(None, "basic", "unreadable_credentials")),
        ("NTLM TlRMTVNTUAAB", Identity(None, "none", "unsupported_credentials")),
        ("Basic " + "A" * 20000, Identity(None, "none", "unreadable_credentials")),
    ],
)
def test_identity_from_credentials(authorization: str | None, expected: Identity) -> None:
    headers = {"x-original-uri": f"{EAS}?{PLAIN}"}
    if authorization is not None:
        headers["authorization"] = authorization
    assert parse_gate_request(headers).identity == expected


def test_the_password_is_never_kept() -> None:
    request = parse_gate_request({"x-original-uri": EAS, "authorization": _basic("bob", "hunter2")})
    assert "hunter2" not in repr(request)
    assert basic_user(base64.b64encode(b"bob:hunter2").decode()) == "bob"


def test_a_duplicated_authorization_header_is_refused() -> None:
    headers = {"x-original-uri": EAS, "authorization": _basic("bob")}
    request = parse_gate_request(headers, duplicated={"authorization"})
    assert request.identity == Identity(None, "none", "duplicate_credentials")


def test_the_proxy_user_header_when_configured() -> None:
    config = GateConfig.for_proxy("nginx", user_header="X-Forwarded-User")
    base = {"x-original-uri": f"{EAS}?{PLAIN}", "authorization": _basic("mallory")}

    def identity(**extra: str) -> Identity:
        return parse_gate_request({**base, **extra}, "/gate/forward", config).identity

    assert identity(**{"x-forwarded-user": "EXAMPLE\\Bob"}) == Identity("example\\bob", "header")
    # absent or empty (nginx's $remote_user without Basic): the credentials
    assert identity() == Identity("mallory", "basic")
    assert identity(**{"x-forwarded-user": ""}) == Identity("mallory", "basic")
    # present but unusable: refused, never a fall back to anything the client says
    assert identity(**{"x-forwarded-user": "a\tb"}).problem == "invalid_user_header"
    assert identity(**{"x-forwarded-user": "a" * 513}).problem == "invalid_user_header"
    doubled = parse_gate_request(
        {**base, "x-forwarded-user": "bob"},
        "/gate/forward",
        config,
        duplicated={"x-forwarded-user"},
    )
    assert doubled.identity.problem == "duplicate_user_header"
    # not configured: a client's X-Forwarded-User is just another header
    plain_config = GateConfig.for_proxy("nginx")
    assert parse_gate_request(
        {**base, "x-forwarded-user": "bob"}, "/gate/forward", plain_config
    ).identity == Identity("mallory", "basic")


def test_the_activesync_user_is_a_claim_and_a_doubled_one_is_flagged() -> None:
    request = nginx(f"{EAS}?{PLAIN}")
    assert (request.user, request.user_conflict, request.identity.name) == ("jdoe", False, None)
    doubled = nginx(f"{EAS}?{PLAIN}&user=other")
    assert (doubled.user, doubled.user_conflict) == (None, True)
    same_twice = nginx(f"{EAS}?{PLAIN}&User=jdoe")
    assert (same_twice.user, same_twice.user_conflict) == ("jdoe", False)


def test_bearer_user_reads_no_signature() -> None:
    assert bearer_user(_jwt({"upn": "a@b.c"})) == "a@b.c"
    assert bearer_user(_jwt(["upn"])) is None  # type: ignore[arg-type]
    assert bearer_user("e30.bm90IGpzb24.x") is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("DOMAIN\\alice", "domain\\alice"),
        ("alice@example.com", "alice@example.com"),
        ("  Alice@Example.COM ", "alice@example.com"),
        ("alice+x@example.com", "alice+x@example.com"),
        ("   ", None),
        ("", None),
        (None, None),
        ("al\x00ice", None),
    ],
)
def test_account_name(raw: str | None, expected: str | None) -> None:
    assert account_name(raw) == expected


# --- encode validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"command": "Nope"},
        {"device_id": ""},
        {"device_id": "a\nb"},
        {"device_id": "x" * 256},
        {"device_type": "t" * 256},
        {"user": "u" * 256},
        {"protocol_version": "14"},
        {"protocol_version": "99.9"},
        {"locale": 0x10000},
        {"policy_key": -1},
        {"policy_key": 2**32},
    ],
)
def test_encode_rejects_what_cannot_be_encoded(kwargs: dict[str, object]) -> None:
    arguments: dict[str, object] = {"command": "Sync", "device_id": "D", "device_type": "T"}
    arguments.update(kwargs)
    with pytest.raises(ValueError):  # noqa: PT011 - several messages
        encode_eas_base64_query(**arguments)  # type: ignore[arg-type]


# --- property tests -------------------------------------------------------------------------------

printable_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1, max_size=32
).filter(str.isprintable)


@settings(max_examples=300)
@given(
    device_id=printable_text,
    device_type=printable_text,
    user=st.none() | printable_text,
    command=st.sampled_from(["Sync", "Ping", "FolderSync", "Provision", "SendMail"]),
    policy_key=st.none() | st.integers(0, 2**32 - 1),
    locale=st.integers(0, 0xFFFF),
)
def test_encode_decode_round_trip(
    device_id: str,
    device_type: str,
    user: str | None,
    command: str,
    policy_key: int | None,
    locale: int,
) -> None:
    token = encode_eas_base64_query(
        command=command,
        device_id=device_id,
        device_type=device_type,
        user=user,
        policy_key=policy_key,
        locale=locale,
    )
    decoded = decode_eas_base64_query(token)
    assert decoded["DeviceId"] == device_id
    assert decoded["DeviceType"] == device_type
    assert decoded["Cmd"] == command
    assert decoded.get("User") == user
    assert decoded["Locale"] == str(locale)
    assert decoded.get("PolicyKey") == (None if policy_key is None else str(policy_key))
    request = nginx(f"{EAS}?{token}")
    assert (request.device_id, request.device_type, request.user, request.command) == (
        device_id,
        device_type,
        account_name(user),  # User= as the gate compares it: stripped and case-folded
        command,
    )


header_names = st.sampled_from(
    ["X-Original-URI", "x-forwarded-uri", "X-Forwarded-User", "X-Remote-User", "X-Device", "Host"]
)
# URI-ish text: the pieces a parser trips over, in any order, plus arbitrary text (lone surrogates
# included, which a decoded raw path can carry)
PIECES = (
    "/ ? & = == % %2 %ff %00 %2F %5C .. . # + DeviceId deviceid= User= Cmd=Sync DeviceType= AAAA"
    " ____ /Microsoft-Server-ActiveSync /owa/ /gate/forward https://h jAAJBAp2 \\ \x00 \udcff é"
    " jAAJBAp2MTQwRGV2aWNlAApTbWFydFBob25l"
)
uri_pieces = st.sampled_from(PIECES.split(" "))
any_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=40)
uris = st.lists(uri_pieces | any_text, max_size=12).map("".join)


@settings(max_examples=1000)
@given(
    headers=st.dictionaries(header_names, uris, max_size=6),
    path=uris,
    device_header=st.none() | st.just("X-Device"),
)
def test_parse_gate_request_never_raises(
    headers: dict[str, str], path: str, device_header: str | None
) -> None:
    request = parse_gate_request(headers, path, GateConfig(device_header=device_header))
    assert request.path.startswith("/")
    request.path.encode("utf-8")  # no lone surrogates survive into the path
    assert request.encoding in ("plain", "base64", "header", "none")
    assert (request.device_id is None) == (request.encoding == "none")
    for value in (request.device_id, request.device_type, request.user, request.command):
        assert value is None or (value.isprintable() and 0 < len(value) <= 512)


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_decode_raises_only_value_error_for_arbitrary_bytes(raw: bytes) -> None:
    token = base64.urlsafe_b64encode(raw).decode()
    try:
        decoded = decode_eas_base64_query(token)
    except ValueError:
        assert nginx(f"{EAS}?{token}").device_id is None
    else:
        assert decoded["DeviceId"]
