"""The Google Workspace adapter against a fake Google on loopback: a token endpoint that verifies
the RS256 JWT bearer assertion with the public half of a key pair made here, and a Directory API
that checks the bearer token, the path and the body. Nothing in httpx or cryptography is mocked."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from tests.proxy_harness import free_port

from appwarden.enforcement.google import (
    JWT_BEARER_GRANT,
    SCOPE_MOBILE_ACTION,
    AccessTokenSource,
    GoogleWorkspaceClient,
    ServiceAccount,
    build_assertion,
    decision_to_action,
)
from appwarden.notifications.channels import DeliveryError

CLIENT_EMAIL = "appwarden-enforcer@example-project.iam.gserviceaccount.com"
ADMIN = "it-admin@example.com"
CUSTOMER = "C03az79cb"


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


@pytest.fixture(scope="module")
def key_pair() -> tuple[str, rsa.RSAPublicKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return pem, key.public_key()


# --- a fake Google ------------------------------------------------------------------------------


@dataclass
class FakeGoogle:
    """Token endpoint + Directory API. `forced` holds statuses (with optional JSON bodies) that
    the next Directory API calls answer instead of the real thing, in order."""

    public_key: rsa.RSAPublicKey
    customer: str = CUSTOMER
    base_url: str = ""
    devices: list[dict[str, Any]] = field(default_factory=list)
    page_size: int = 2
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    token_failures: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    valid_tokens: set[str] = field(default_factory=set)
    actions: list[tuple[str, str]] = field(default_factory=list)
    list_requests: list[dict[str, list[str]]] = field(default_factory=list)
    forced: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    always_401: bool = False
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def revoke_tokens(self) -> None:
        with self.lock:
            self.valid_tokens.clear()

    # handlers: (status, json body)

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes
    ) -> tuple[int, dict[str, Any] | None]:
        with self.lock:
            if method == "POST" and path == "/token":
                return self._token(headers, body)
            prefix = f"/admin/directory/v1/customer/{self.customer}/devices/mobile"
            if not path.startswith(prefix):
                self.problems.append(f"unexpected path {path}")
                return 404, {"error": {"code": 404, "message": "Not Found"}}
            auth = headers.get("Authorization", "")
            if self.always_401 or auth.removeprefix("Bearer ") not in self.valid_tokens:
                return 401, {"error": {"code": 401, "message": "Invalid Credentials"}}
            if self.forced:
                return self.forced.pop(0)
            rest = path[len(prefix) :]
            if method == "GET" and rest == "":
                return self._list(query)
            if method == "POST" and rest.endswith("/action") and rest.count("/") == 2:
                return self._action(unquote(rest.split("/")[1]), headers, body)
            self.problems.append(f"unexpected {method} {path}")
            return 400, {"error": {"code": 400, "message": "Bad Request"}}

    def _token(self, headers: Any, body: bytes) -> tuple[int, dict[str, Any]]:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if not headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            self.problems.append("token request is not form-encoded")
        if form.get("grant_type") != JWT_BEARER_GRANT:
            return 400, {"error": "unsupported_grant_type"}
        header_b64, claims_b64, signature_b64 = form["assertion"].split(".")
        try:
            self.public_key.verify(
                _b64decode(signature_b64),
                f"{header_b64}.{claims_b64}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        header = json.loads(_b64decode(header_b64))
        claims = json.loads(_b64decode(claims_b64))
        self.token_requests.append({"header": header, "claims": claims})
        if self.token_failures:
            return self.token_failures.pop(0)
        token = f"ya29.test-token-{len(self.token_requests)}"
        self.valid_tokens.add(token)
        return 200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}

    def _action(self, resource_id: str, headers: Any, body: bytes) -> tuple[int, None]:
        if not headers.get("Content-Type", "").startswith("application/json"):
            self.problems.append("action body is not JSON")
        payload = json.loads(body)
        if set(payload) != {"action"} or payload["action"] not in ("block", "approve"):
            self.problems.append(f"bad action body {payload!r}")
        self.actions.append((resource_id, payload["action"]))
        return 204, None

    def _list(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        self.list_requests.append(query)
        start = int(query.get("pageToken", ["0"])[0].removeprefix("page-"))
        page = self.devices[start : start + self.page_size]
        body: dict[str, Any] = {
            "kind": "admin#directory#mobiledevices",
            "etag": '"etag-1"',
            "mobiledevices": page,
        }
        if start + self.page_size < len(self.devices):
            body["nextPageToken"] = f"page-{start + self.page_size}"
        return 200, body


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, payload = self.server.fake.handle(
            self.command, parts.path, parse_qs(parts.query), self.headers, body
        )
        data = json.dumps(payload).encode() if payload is not None else b""
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _serve  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeGoogle


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    """One loopback server for the module; each test gets a fresh fake behind it."""
    server = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def google(server, key_pair) -> Iterator[FakeGoogle]:
    fake = FakeGoogle(public_key=key_pair[1])
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    server.fake = fake
    yield fake
    assert fake.problems == []


@dataclass
class Clock:
    now: float = 1_780_000_000.0

    def __call__(self) -> float:
        return self.now


# Loading (and validating) an RSA key takes ~0.1 s, so the key, the token source and the HTTP
# client live for the module; each test resets the token cache and the clock.


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


@pytest.fixture(scope="module")
def account(key_pair, server) -> ServiceAccount:
    return ServiceAccount(
        client_email=CLIENT_EMAIL,
        private_key=key_pair[0],
        subject=ADMIN,
        token_uri=f"http://127.0.0.1:{server.server_address[1]}/token",
        private_key_id="0123456789abcdef",
    )


@pytest.fixture(scope="module")
def shared_clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def shared_tokens(http, account, shared_clock) -> AccessTokenSource:
    return AccessTokenSource(http, account, clock=shared_clock)


@pytest.fixture
def clock(shared_clock) -> Clock:
    shared_clock.now = Clock.now
    return shared_clock


@pytest.fixture
def tokens(shared_tokens, clock) -> AccessTokenSource:
    shared_tokens.invalidate()
    return shared_tokens


@pytest.fixture
def make_client(http, tokens, google) -> Callable[..., GoogleWorkspaceClient]:
    def make(**kwargs: Any) -> GoogleWorkspaceClient:
        return GoogleWorkspaceClient(
            http, tokens, customer_id=CUSTOMER, base_url=google.base_url, **kwargs
        )

    return make


# --- decisions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("decision", "action"), [("deny", "block"), ("allow", "approve")])
def test_a_decision_maps_to_an_action(decision, action):
    assert decision_to_action(decision) == action


@pytest.mark.parametrize("decision", ["", "Deny", "blocked", "unknown"])
def test_anything_else_is_not_a_decision(decision):
    with pytest.raises(ValueError, match="not a decision"):
        decision_to_action(decision)


# --- the service account ------------------------------------------------------------------------


def test_a_key_file_loads_and_its_key_stays_out_of_the_repr(tmp_path, key_pair):
    path = tmp_path / "key.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "example-project",
                "private_key_id": "0123456789abcdef",
                "private_key": key_pair[0],
                "client_email": CLIENT_EMAIL,
                "client_id": "109876543210987654321",
                "auth_uri": "https://accounts.google.com/o/oauth2/auth",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    account = ServiceAccount.from_file(path, subject=ADMIN)
    assert account.client_email == CLIENT_EMAIL
    assert account.subject == ADMIN
    assert account.token_uri == "https://oauth2.googleapis.com/token"
    assert account.private_key_id == "0123456789abcdef"
    body = key_pair[0].splitlines()[1]
    assert body not in repr(account)
    assert body not in str(account)


def test_the_token_source_repr_names_the_account_only(shared_tokens, key_pair, google):
    shared_tokens.token()
    text = repr(shared_tokens)
    assert CLIENT_EMAIL in text
    assert ADMIN in text
    assert key_pair[0].splitlines()[1] not in text
    assert "ya29." not in text


@pytest.mark.parametrize(
    ("info", "message"),
    [
        ({"type": "authorized_user"}, "service_account"),
        ({"type": "service_account", "client_email": CLIENT_EMAIL}, "private_key"),
    ],
)
def test_a_wrong_key_file_is_refused(info, message):
    with pytest.raises(ValueError, match=message):
        ServiceAccount.from_info(info, subject=ADMIN)


def test_a_subject_is_required(key_pair):
    with pytest.raises(ValueError, match="delegated subject"):
        ServiceAccount(client_email=CLIENT_EMAIL, private_key=key_pair[0], subject="")


def test_an_unreadable_key_is_refused_without_echoing_it(http):
    fake_pem = "-----BEGIN PRIVATE KEY-----\nTOPSECRETTOPSECRET\n-----END PRIVATE KEY-----\n"
    account = ServiceAccount(client_email=CLIENT_EMAIL, private_key=fake_pem, subject=ADMIN)
    with pytest.raises(ValueError, match="cannot be loaded as PEM") as caught:
        AccessTokenSource(http, account)
    assert "TOPSECRET" not in str(caught.value)
    assert caught.value.__cause__ is None


def test_a_non_rsa_key_is_refused(http):
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    account = ServiceAccount(client_email=CLIENT_EMAIL, private_key=pem, subject=ADMIN)
    with pytest.raises(ValueError, match="not an RSA key"):
        AccessTokenSource(http, account)


def test_the_assertion_is_an_rs256_jwt_with_the_documented_claims(account, key_pair):
    assertion = build_assertion(account, [SCOPE_MOBILE_ACTION], issued_at=1_780_000_000)
    header_b64, claims_b64, signature_b64 = assertion.split(".")
    assert "=" not in assertion  # base64url without padding
    key_pair[1].verify(
        _b64decode(signature_b64),
        f"{header_b64}.{claims_b64}".encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )
    assert json.loads(_b64decode(header_b64)) == {
        "alg": "RS256",
        "typ": "JWT",
        "kid": "0123456789abcdef",
    }
    assert json.loads(_b64decode(claims_b64)) == {
        "iss": CLIENT_EMAIL,
        "sub": ADMIN,
        "scope": SCOPE_MOBILE_ACTION,
        "aud": account.token_uri,
        "iat": 1_780_000_000,
        "exp": 1_780_003_600,
    }


# --- actions ------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["block", "approve"])
def test_an_action_is_posted_with_a_bearer_token(google, make_client, clock, action):
    make_client().action("AFiQxQ8xY2k1c3Rvb2", action)

    assert google.actions == [("AFiQxQ8xY2k1c3Rvb2", action)]
    (request,) = google.token_requests
    claims = request["claims"]
    assert claims["iss"] == CLIENT_EMAIL
    assert claims["sub"] == ADMIN
    assert claims["scope"] == SCOPE_MOBILE_ACTION
    assert claims["aud"] == google.token_uri
    assert claims["iat"] == int(clock.now)
    assert claims["exp"] - claims["iat"] == 3600
    assert request["header"]["alg"] == "RS256"


def test_apply_decision_blocks_on_deny_and_approves_on_allow(google, make_client):
    client = make_client()
    assert client.apply_decision("rid-1", "deny") == "block"
    assert client.apply_decision("rid-1", "allow") == "approve"
    assert google.actions == [("rid-1", "block"), ("rid-1", "approve")]


def test_a_resource_id_is_escaped_in_the_path(google, make_client):
    make_client().action("odd/id with space", "block")
    assert google.actions == [("odd/id with space", "block")]


def test_an_unknown_action_is_refused_before_any_request(google, make_client):
    with pytest.raises(ValueError, match="unsupported action"):
        make_client().action("rid-1", "admin_remote_wipe")
    assert google.token_requests == []


def test_one_token_serves_many_actions_until_it_nears_expiry(google, make_client, clock):
    client = make_client()
    for index in range(5):
        client.action(f"rid-{index}", "block")
    assert len(google.token_requests) == 1

    clock.now += 3600 - 301  # still more than the 300 s margin left
    client.action("rid-5", "block")
    assert len(google.token_requests) == 1

    clock.now += 2  # inside the margin: a fresh token
    client.action("rid-6", "block")
    assert len(google.token_requests) == 2
    assert len(google.actions) == 7


def test_a_401_refreshes_the_token_and_retries_once(google, make_client):
    client = make_client()
    client.action("rid-1", "block")
    google.revoke_tokens()  # e.g. the token was revoked or expired early

    client.action("rid-2", "block")

    assert len(google.token_requests) == 2
    assert google.actions == [("rid-1", "block"), ("rid-2", "block")]


def test_a_second_401_is_permanent(google, make_client):
    google.always_401 = True
    with pytest.raises(DeliveryError) as caught:
        make_client().action("rid-1", "block")
    assert caught.value.permanent
    assert "401" in caught.value.message
    assert len(google.token_requests) == 2
    assert "ya29." not in caught.value.message


@pytest.mark.parametrize(
    ("status", "body", "permanent"),
    [
        (404, {"error": {"code": 404, "message": "Resource Not Found: rid-1"}}, True),
        (400, {"error": {"code": 400, "message": "Invalid Input"}}, True),
        (
            403,
            {
                "error": {
                    "code": 403,
                    "message": "Not Authorized to access this resource/api",
                    "errors": [{"reason": "forbidden"}],
                }
            },
            True,
        ),
        (
            403,
            {
                "error": {
                    "code": 403,
                    "message": "Quota exceeded",
                    "errors": [{"reason": "userRateLimitExceeded"}],
                }
            },
            False,
        ),
        (429, {"error": {"code": 429, "message": "Too Many Requests"}}, False),
        (500, {"error": {"code": 500, "message": "Backend Error"}}, False),
        (503, {"error": {"code": 503, "message": "The service is currently unavailable."}}, False),
    ],
)
def test_errors_are_mapped_to_permanent_or_temporary(google, make_client, status, body, permanent):
    google.forced.append((status, body))
    with pytest.raises(DeliveryError) as caught:
        make_client().action("rid-1", "block")
    assert caught.value.permanent is permanent
    assert str(status) in caught.value.message
    assert body["error"]["message"] in caught.value.message
    assert google.actions == []


def test_a_network_failure_is_temporary(http, tokens, google):
    port = free_port()  # nobody listens on it
    client = GoogleWorkspaceClient(http, tokens, base_url=f"http://127.0.0.1:{port}")
    with pytest.raises(DeliveryError) as caught:
        client.action("rid-1", "block")  # the token endpoint still answers
    assert not caught.value.permanent


@pytest.mark.parametrize(
    ("status", "body", "permanent"),
    [
        (400, {"error": "invalid_grant", "error_description": "Invalid email or User ID"}, True),
        (
            401,
            {"error": "unauthorized_client", "error_description": "Client is unauthorized"},
            True,
        ),
        (500, {"error": "internal_failure"}, False),
        (503, {}, False),
    ],
)
def test_token_endpoint_failures(google, make_client, key_pair, status, body, permanent):
    google.token_failures.append((status, body))
    with pytest.raises(DeliveryError) as caught:
        make_client().action("rid-1", "block")
    assert caught.value.permanent is permanent
    assert str(status) in caught.value.message
    assert key_pair[0].splitlines()[1] not in caught.value.message
    assert google.actions == []


def test_after_a_failed_token_request_the_next_call_tries_again(google, make_client):
    client = make_client()
    google.token_failures.append((503, {}))
    with pytest.raises(DeliveryError):
        client.action("rid-1", "block")
    client.action("rid-1", "block")
    assert google.actions == [("rid-1", "block")]


# --- finding a device ---------------------------------------------------------------------------


def _device(resource_id: str, device_id: str, email: str) -> dict[str, Any]:
    return {
        "kind": "admin#directory#mobiledevice",
        "resourceId": resource_id,
        "deviceId": device_id,
        "email": [email],
        "model": "SM-S918B",
        "os": "Android 14",
        "type": "ANDROID",
        "status": "APPROVED",
    }


def test_find_resource_id_follows_next_page_tokens(google, make_client):
    google.devices = [
        _device("rid-a", "aaaa", "ann@example.com"),
        _device("rid-b", "bbbb", "bob@example.com"),
        _device("rid-c", "cccc", "cat@example.com"),
        _device("rid-d", "dddd", "dan@example.com"),
        _device("rid-e", "b7c1e9a04f3d2e18", "ravi.k@example.com"),
    ]
    client = make_client()

    assert client.find_resource_id("b7c1e9a04f3d2e18") == "rid-e"
    assert [q.get("pageToken") for q in google.list_requests] == [
        None,
        ["page-2"],
        ["page-4"],
    ]
    assert all(
        q["projection"] == ["BASIC"] and q["maxResults"] == ["100"] for q in google.list_requests
    )
    assert len(google.token_requests) == 1


def test_find_resource_id_matches_exactly_and_returns_none_when_absent(google, make_client):
    google.devices = [_device("rid-a", "b7c1e9a04f3d2e18-extra", "ann@example.com")]
    assert make_client().find_resource_id("b7c1e9a04f3d2e18") is None


def test_a_device_synced_by_two_accounts_needs_the_owner_email(google, make_client):
    google.devices = [
        _device("rid-ann", "SERIAL123", "ann@example.com"),
        _device("rid-bob", "SERIAL123", "bob@example.com"),
    ]
    client = make_client()
    with pytest.raises(DeliveryError) as caught:
        client.find_resource_id("SERIAL123")
    assert caught.value.permanent
    assert client.find_resource_id("SERIAL123", email="Bob@Example.com") == "rid-bob"
    assert [q["projection"] for q in google.list_requests] == [["BASIC"], ["FULL"]]


def test_a_query_is_passed_through(google, make_client):
    google.devices = [_device("rid-a", "aaaa", "ann@example.com")]
    assert make_client().find_resource_id("aaaa", query="email:ann@example.com") == "rid-a"
    assert google.list_requests[0]["query"] == ["email:ann@example.com"]


def test_a_list_failure_is_a_delivery_error(google, make_client):
    google.devices = [_device("rid-a", "aaaa", "ann@example.com")]
    google.forced.append((503, {"error": {"code": 503, "message": "unavailable"}}))
    with pytest.raises(DeliveryError) as caught:
        make_client().find_resource_id("aaaa")
    assert not caught.value.permanent
