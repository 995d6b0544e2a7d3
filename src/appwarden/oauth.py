"""OAuth 2.0 credentials and authorised requests to vendor APIs, shared by the enforcement
adapters (`enforcement/`: actions at the mail provider) and the inventory connectors
(`connectors/`: live syncs).

- `TokenSource`, `CachingTokenSource`: a bearer token, cached until shortly before it expires;
  `StaticTokenSource` for an API token that never expires (Fleet).
- `ServiceAccount`, `ServiceAccountTokenSource`: Google's JWT bearer grant (RS256, signed with
  `cryptography`), acting as a Workspace admin (domain-wide delegation) or as the account itself.
- `ClientCredentialsTokenSource`: the client credentials grant (Entra ID, Jamf Pro).
- `authorized_request` / `send_authorized`: one request with the bearer token (a 401 refreshes it
  once), and `status_error`, the one place an HTTP answer becomes a `DeliveryError` whose
  `permanent` flag says whether a retry can help.

Secrets (private keys, client secrets, access tokens) never appear in a repr, a log line or an
exception message.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import httpx

from appwarden.notifications.channels import DeliveryError, origin

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

__all__ = [
    "GOOGLE_TOKEN_URI",
    "JWT_BEARER_GRANT",
    "CachingTokenSource",
    "ClientCredentialsTokenSource",
    "DeliveryError",
    "ServiceAccount",
    "ServiceAccountTokenSource",
    "StaticTokenSource",
    "TokenSource",
    "authorized_request",
    "build_assertion",
    "entra_token_url",
    "send_authorized",
    "status_error",
]

log = logging.getLogger(__name__)

_MAX_DETAIL_CHARS = 300
# Google answers some quota errors with 403 instead of 429; these reasons are worth a retry.
_RETRYABLE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME = 3600  # seconds; Google accepts at most one hour


def entra_token_url(tenant: str) -> str:
    """The Microsoft identity platform v2.0 token endpoint of a tenant (id or domain)."""
    return f"https://login.microsoftonline.com/{quote(tenant, safe='')}/oauth2/v2.0/token"


# --- token sources ----------------------------------------------------------------------------


class TokenSource(Protocol):
    """Hands out a bearer access token; `invalidate` drops a cached one (after a 401)."""

    def token(self) -> str: ...

    def invalidate(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Cached:
    value: str
    refresh_at: float


class CachingTokenSource:
    """An OAuth 2.0 token endpoint client that caches the access token until `refresh_margin`
    seconds (at most half its lifetime) before it expires. Subclasses say what to POST
    (`_grant`) and how to name themselves. Safe to share between threads: one token request at a
    time."""

    service = "OAuth"

    def __init__(
        self,
        http: httpx.Client,
        token_url: str,
        *,
        clock: Callable[[], float] = time.time,
        refresh_margin: float = 300.0,
        timeout: float = 30.0,
    ) -> None:
        if refresh_margin < 0:
            raise ValueError("refresh_margin must not be negative")
        self._http = http
        self._token_url = token_url
        self._clock = clock
        self._refresh_margin = refresh_margin
        self._timeout = timeout
        self._cached: _Cached | None = None
        self._lock = threading.Lock()

    @property
    def token_url(self) -> str:
        return self._token_url

    def token(self) -> str:
        with self._lock:
            now = self._clock()
            cached = self._cached
            if cached is not None and now < cached.refresh_at:
                return cached.value
            self._cached = self._fetch(now)
            return self._cached.value

    def invalidate(self) -> None:
        with self._lock:
            self._cached = None

    # for subclasses

    def _grant(self, now: float) -> dict[str, str]:
        raise NotImplementedError

    def _secrets(self) -> tuple[str, ...]:
        """Values that must never appear in an error message (scrubbed if a server echoes them)."""
        return ()

    # internals

    def _fetch(self, now: float) -> _Cached:
        where = origin(self._token_url)
        try:
            response = self._http.post(
                self._token_url,
                data=self._grant(now),
                headers={"Accept": "application/json"},
                timeout=self._timeout,
                follow_redirects=False,
            )
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise DeliveryError(
                f"{self.service} token URL rejected ({type(exc).__name__}): {where}",
                permanent=True,
            ) from None
        except httpx.TransportError as exc:  # timeouts included
            raise DeliveryError(
                f"{self.service} token request to {where} failed: {type(exc).__name__}",
                permanent=False,
            ) from None
        if not 200 <= response.status_code < 300:
            raise self._scrub(status_error(response, f"{self.service} token request to {where}"))
        try:
            payload = response.json()
            value = payload["access_token"]
            expires_in = float(payload.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            raise DeliveryError(
                f"{self.service} token endpoint {where} answered {response.status_code} "
                "without a usable access_token",
                permanent=False,
            ) from None
        if not isinstance(value, str) or not value:
            raise DeliveryError(
                f"{self.service} token endpoint {where} answered an empty access_token",
                permanent=False,
            )
        log.debug("obtained a %s access token from %s (%.0f s)", self.service, where, expires_in)
        # A short-lived token (a Jamf API client's can last a minute) is kept for half its life
        # rather than fetched again for every request.
        margin = min(self._refresh_margin, expires_in / 2)
        return _Cached(value=value, refresh_at=now + expires_in - margin)

    def _scrub(self, error: DeliveryError) -> DeliveryError:
        message = error.message
        for secret in self._secrets():
            if secret and secret in message:
                message = message.replace(secret, "***")
        return DeliveryError(message, permanent=error.permanent)


class StaticTokenSource:
    """A long-lived API token given in the settings (Fleet's API-only user): nothing to refresh."""

    def __init__(self, value: str) -> None:
        if not value:
            raise ValueError("the API token is empty")
        self._value = value

    def __repr__(self) -> str:
        return "StaticTokenSource(***)"

    def token(self) -> str:
        return self._value

    def invalidate(self) -> None:
        return None


class ClientCredentialsTokenSource(CachingTokenSource):
    """OAuth 2.0 client credentials with a client secret: an Entra app registration
    (`token_url=entra_token_url(tenant)`, `scope` the API's `.default`), or a Jamf Pro API client
    (`POST /api/oauth/token`, no scope: the client's API roles say what it may do)."""

    service = "OAuth"

    def __init__(
        self,
        http: httpx.Client,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str | None = None,
        *,
        clock: Callable[[], float] = time.time,
        refresh_margin: float = 300.0,
        timeout: float = 30.0,
    ) -> None:
        if not client_id or not client_secret:
            raise ValueError("client_id and client_secret are required")
        super().__init__(
            http, token_url, clock=clock, refresh_margin=refresh_margin, timeout=timeout
        )
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(token_url={origin(self.token_url)!r}, "
            f"client_id={self._client_id!r}, scope={self._scope!r})"
        )

    def _grant(self, now: float) -> dict[str, str]:  # noqa: ARG002 - no time in this grant
        grant = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret,
        }
        if self._scope is not None:
            grant["scope"] = self._scope
        return grant

    def _secrets(self) -> tuple[str, ...]:
        return (self._client_secret,)


# --- Google service accounts ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """A service account key, and the Workspace admin it impersonates (domain-wide delegation),
    or `subject=None` for an API that takes the service account itself (the Android Management
    API).

    `private_key` is the PEM text of the key file; it is left out of the repr and of every error
    message. Load one with `ServiceAccount.from_file(path, subject="admin@example.com")`.
    """

    client_email: str
    private_key: str = field(repr=False)
    subject: str | None  # the admin user the service account acts as (JWT `sub`); None: itself
    token_uri: str = GOOGLE_TOKEN_URI
    private_key_id: str | None = None  # sent as the JWT header `kid` when known

    def __post_init__(self) -> None:
        if not self.client_email or "@" not in self.client_email:
            raise ValueError("a service account needs its client_email")
        if self.subject is not None and "@" not in self.subject:
            raise ValueError(
                "a delegated subject (the email of a Workspace admin) is required: "
                "the Directory API refuses a service account acting as itself"
            )
        if "PRIVATE KEY" not in self.private_key:
            raise ValueError("the service account private_key is not a PEM private key")
        if not self.token_uri.startswith(("https://", "http://")):
            raise ValueError("the service account token_uri must be an http(s) URL")

    @classmethod
    def from_info(cls, info: Mapping[str, Any], *, subject: str | None) -> ServiceAccount:
        """From the parsed JSON key file Google issues (`"type": "service_account"`)."""
        if info.get("type") != "service_account":
            raise ValueError('not a service account key: "type" must be "service_account"')
        client_email = info.get("client_email")
        private_key = info.get("private_key")
        token_uri = info.get("token_uri") or GOOGLE_TOKEN_URI
        key_id = info.get("private_key_id")
        if not isinstance(client_email, str) or not isinstance(private_key, str):
            raise ValueError("a service account key needs client_email and private_key strings")
        if not isinstance(token_uri, str):
            raise ValueError("the service account token_uri must be a string")
        return cls(
            client_email=client_email,
            private_key=private_key,
            subject=subject,
            token_uri=token_uri,
            private_key_id=key_id if isinstance(key_id, str) and key_id else None,
        )

    @classmethod
    def from_file(cls, path: str | Path, *, subject: str | None) -> ServiceAccount:
        """Read a JSON key file. Errors name the file, never its content."""
        try:
            info = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"cannot read service account key {path}: {exc.strerror}") from None
        except ValueError:
            raise ValueError(f"{path} is not a JSON service account key file") from None
        if not isinstance(info, dict):
            raise ValueError(f"{path} is not a JSON service account key file")
        return cls.from_info(info, subject=subject)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _load_rsa_key(pem: str) -> RSAPrivateKey:
    try:
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
    except ImportError:  # pragma: no cover - depends on the installation
        raise RuntimeError(
            "the Google Workspace adapter needs the 'cryptography' package to sign its JWT"
        ) from None
    try:
        key = load_pem_private_key(pem.encode("utf-8"), password=None)
    except (ValueError, TypeError):
        raise ValueError("the service account private_key cannot be loaded as PEM") from None
    if not isinstance(key, RSAPrivateKey):
        raise ValueError("the service account private_key is not an RSA key (RS256 needs one)")
    return key


def _sign(key: RSAPrivateKey, header: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    def segment(part: Mapping[str, Any]) -> str:
        return _b64url(json.dumps(part, separators=(",", ":"), sort_keys=True).encode())

    signing_input = f"{segment(header)}.{segment(claims)}"
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


def _assertion(
    key: RSAPrivateKey, account: ServiceAccount, scopes: Sequence[str], issued_at: int
) -> str:
    header: dict[str, Any] = {"alg": "RS256", "typ": "JWT"}
    if account.private_key_id:
        header["kid"] = account.private_key_id
    claims: dict[str, Any] = {
        "iss": account.client_email,
        "scope": " ".join(scopes),
        "aud": account.token_uri,
        "iat": issued_at,
        "exp": issued_at + ASSERTION_LIFETIME,
    }
    if account.subject is not None:
        claims["sub"] = account.subject
    return _sign(key, header, claims)


def build_assertion(account: ServiceAccount, scopes: Sequence[str], *, issued_at: int) -> str:
    """The signed JWT (`header.claims.signature`, base64url, RS256) for the JWT bearer grant."""
    return _assertion(_load_rsa_key(account.private_key), account, scopes, issued_at)


class ServiceAccountTokenSource(CachingTokenSource):
    """Access tokens for a service account acting as `account.subject` (or as itself), cached until
    `refresh_margin` seconds before they expire (`expires_in`, normally 3600 s).

    Token endpoint failures are `DeliveryError`s: 400/401/403 (`invalid_grant`,
    `unauthorized_client`: delegation or scope not granted, a disabled key) are permanent;
    429, 5xx and network failures are temporary.
    """

    service = "Google OAuth"

    def __init__(
        self,
        http: httpx.Client,
        account: ServiceAccount,
        scopes: Sequence[str],
        *,
        clock: Callable[[], float] = time.time,
        refresh_margin: float = 300.0,
        timeout: float = 30.0,
    ) -> None:
        if not scopes:
            raise ValueError("at least one OAuth scope is required")
        super().__init__(
            http, account.token_uri, clock=clock, refresh_margin=refresh_margin, timeout=timeout
        )
        self._account = account
        self._scopes = tuple(scopes)
        self._key = _load_rsa_key(account.private_key)  # fail at start-up, not at first use

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(client_email={self._account.client_email!r}, "
            f"subject={self._account.subject!r}, scopes={self._scopes!r})"
        )

    def _grant(self, now: float) -> dict[str, str]:
        assertion = _assertion(self._key, self._account, self._scopes, int(now))
        return {"grant_type": JWT_BEARER_GRANT, "assertion": assertion}


def authorized_request(
    http: httpx.Client,
    tokens: TokenSource,
    method: str,
    url: str,
    *,
    what: str,
    params: Mapping[str, str] | None = None,
    json_body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> httpx.Response:
    """One API request with a bearer token, whatever its status. A 401 drops the cached token and
    retries once with a fresh one. Only a failure to get an answer raises (`DeliveryError`:
    permanent for a URL httpx refuses, temporary for timeouts, refused connections, resets, and
    as the token source says). Redirects are not followed."""
    response: httpx.Response | None = None
    for attempt in (1, 2):
        request_headers = {"Accept": "application/json", **(headers or {})}
        request_headers["Authorization"] = f"Bearer {tokens.token()}"
        try:
            response = http.request(
                method,
                url,
                params=params,
                json=json_body,
                headers=request_headers,
                timeout=timeout,
                follow_redirects=False,
            )
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise DeliveryError(
                f"{what}: URL rejected ({type(exc).__name__}): {origin(url)}", permanent=True
            ) from None
        except httpx.TransportError as exc:  # timeouts, refused connections, resets
            raise DeliveryError(
                f"{what} failed: {type(exc).__name__} talking to {origin(url)}", permanent=False
            ) from None
        if response.status_code == 401 and attempt == 1:
            log.info("%s answered 401; refreshing the access token and retrying once", what)
            tokens.invalidate()
            continue
        return response
    assert response is not None
    return response


def send_authorized(
    http: httpx.Client,
    tokens: TokenSource,
    method: str,
    url: str,
    *,
    what: str,
    params: Mapping[str, str] | None = None,
    json_body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> httpx.Response:
    """`authorized_request`, and any answer that is not 2xx becomes a `DeliveryError` (see
    `status_error`)."""
    response = authorized_request(
        http,
        tokens,
        method,
        url,
        what=what,
        params=params,
        json_body=json_body,
        headers=headers,
        timeout=timeout,
    )
    if 200 <= response.status_code < 300:
        return response
    raise status_error(response, what)


def status_error(response: httpx.Response, what: str) -> DeliveryError:
    """Map a non-2xx answer: 408, 429 and 5xx are temporary (as are Google's 403 rate-limit
    reasons); every other status (400, 401 after a refresh, 403, 404, 409, 3xx...) is permanent,
    because the request or the configuration must change before a retry can succeed."""
    status = response.status_code
    detail, reasons = _error_detail(response)
    temporary = status in (408, 429) or status >= 500 or bool(reasons & _RETRYABLE_REASONS)
    message = f"{what} answered {status}"
    if detail:
        message += f": {detail}"
    return DeliveryError(message, permanent=not temporary)


def _texts(*values: object) -> list[str]:
    return [value for value in values if isinstance(value, str) and value]


def _error_detail(response: httpx.Response) -> tuple[str, set[str]]:
    """A short, single-line description from the usual JSON error shapes: Google
    (`{"error": {"message", "errors": [{"reason"}]}}`), Microsoft (`{"error": {"code",
    "message"}}`), OAuth (`{"error": "...", "error_description": "..."}`), Fleet and Jamf."""
    try:
        payload = json.loads(response.content or b"null")
    except ValueError:
        return "", set()
    if not isinstance(payload, dict):
        return "", set()
    error = payload.get("error")
    parts: list[str] = []
    reasons: set[str] = set()
    if isinstance(error, dict):
        for key in ("code", "status", "message"):
            value = error.get(key)
            if isinstance(value, str | int) and str(value) not in parts:
                parts.append(str(value))
        for item in error.get("errors") or []:
            if isinstance(item, dict) and isinstance(item.get("reason"), str):
                reasons.add(item["reason"])
    elif isinstance(error, str):
        parts.append(error)
        description = payload.get("error_description")
        if isinstance(description, str):
            parts.append(description)
    else:  # Fleet: {"message", "errors": [{"reason"}]}; Jamf: {"errors": [{"description"}]}
        parts += _texts(payload.get("message"))
        for item in payload.get("errors") or []:
            if isinstance(item, dict):
                parts += _texts(item.get("reason"), item.get("description"))
    text = " ".join(" ".join(parts).split())
    return text[:_MAX_DETAIL_CHARS], reasons
