"""Google Workspace enforcement: block or approve a mobile device through the Admin SDK
Directory API (`mobiledevices.action`), authorised by a service account with domain-wide
delegation.

    POST {base_url}/admin/directory/v1/customer/{customerId}/devices/mobile/{resourceId}/action
    Authorization: Bearer <token>           {"action": "block"}   (or "approve")

`block` stops the device syncing Workspace data (mail included); `approve` lets it sync again.
Both are idempotent: blocking a blocked device leaves it blocked, so an at-least-once redelivery
from the outbox is harmless.

The token comes from the OAuth 2.0 JWT bearer grant: an RS256-signed assertion (iss = the
service account, sub = the admin user it acts for, scope, aud = the token URI, exp = iat + 3600)
POSTed to the token URI with `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`. The access
token is cached until shortly before it expires.

A device is addressed by its `resourceId` (the identifier namespace `google_resource_id` in
appwarden's inventory). When only the `deviceId` is known (`google_device_id`),
`find_resource_id` pages through `mobiledevices.list` and matches it exactly.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import quote

import httpx

from appwarden.enforcement import CachingTokenSource, TokenSource, send_authorized
from appwarden.notifications.channels import DeliveryError, origin

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

__all__ = [
    "DIRECTORY_BASE_URL",
    "GOOGLE_TOKEN_URI",
    "JWT_BEARER_GRANT",
    "SCOPE_MOBILE_ACTION",
    "AccessTokenSource",
    "Action",
    "GoogleWorkspaceClient",
    "ServiceAccount",
    "build_assertion",
    "decision_to_action",
]

log = logging.getLogger(__name__)

DIRECTORY_BASE_URL = "https://admin.googleapis.com"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Enough for both `mobiledevices.action` and `mobiledevices.list` (the lookup by deviceId).
SCOPE_MOBILE_ACTION = "https://www.googleapis.com/auth/admin.directory.device.mobile.action"
ASSERTION_LIFETIME = 3600  # seconds; Google accepts at most one hour

Action = Literal["block", "approve"]
_ACTIONS: frozenset[str] = frozenset({"block", "approve"})


def decision_to_action(new_decision: str) -> Action:
    """`deny` → `block`; `allow` → `approve`."""
    if new_decision == "deny":
        return "block"
    if new_decision == "allow":
        return "approve"
    raise ValueError(f"not a decision: {new_decision!r} (expected 'allow' or 'deny')")


# --- credentials ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """A service account key plus the Workspace admin it impersonates (domain-wide delegation).

    `private_key` is the PEM text of the key file; it is left out of the repr and of every error
    message. Load one with `ServiceAccount.from_file(path, subject="admin@example.com")`.
    """

    client_email: str
    private_key: str = field(repr=False)
    subject: str  # the admin user the service account acts as (JWT `sub`)
    token_uri: str = GOOGLE_TOKEN_URI
    private_key_id: str | None = None  # sent as the JWT header `kid` when known

    def __post_init__(self) -> None:
        if not self.client_email or "@" not in self.client_email:
            raise ValueError("a service account needs its client_email")
        if not self.subject or "@" not in self.subject:
            raise ValueError(
                "a delegated subject (the email of a Workspace admin) is required: "
                "the Directory API refuses a service account acting as itself"
            )
        if "PRIVATE KEY" not in self.private_key:
            raise ValueError("the service account private_key is not a PEM private key")
        if not self.token_uri.startswith(("https://", "http://")):
            raise ValueError("the service account token_uri must be an http(s) URL")

    @classmethod
    def from_info(cls, info: Mapping[str, Any], *, subject: str) -> ServiceAccount:
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
    def from_file(cls, path: str | Path, *, subject: str) -> ServiceAccount:
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
    claims = {
        "iss": account.client_email,
        "sub": account.subject,
        "scope": " ".join(scopes),
        "aud": account.token_uri,
        "iat": issued_at,
        "exp": issued_at + ASSERTION_LIFETIME,
    }
    return _sign(key, header, claims)


def build_assertion(account: ServiceAccount, scopes: Sequence[str], *, issued_at: int) -> str:
    """The signed JWT (`header.claims.signature`, base64url, RS256) for the JWT bearer grant."""
    return _assertion(_load_rsa_key(account.private_key), account, scopes, issued_at)


class AccessTokenSource(CachingTokenSource):
    """Access tokens for a service account acting as `account.subject`, cached until
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
        scopes: Sequence[str] = (SCOPE_MOBILE_ACTION,),
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
            f"AccessTokenSource(client_email={self._account.client_email!r}, "
            f"subject={self._account.subject!r}, scopes={self._scopes!r})"
        )

    def _grant(self, now: float) -> dict[str, str]:
        assertion = _assertion(self._key, self._account, self._scopes, int(now))
        return {"grant_type": JWT_BEARER_GRANT, "assertion": assertion}


# --- the Directory API ------------------------------------------------------------------------


class GoogleWorkspaceClient:
    """Directory API calls for mobile devices. Every failure is a `DeliveryError`:

    - 401 → the cached token is dropped and the call retried once with a new one;
    - 400, 403, 404 (and other 4xx, a second 401, 3xx) → permanent;
    - 408, 429, 5xx, Google's 403 `rateLimitExceeded` / `userRateLimitExceeded`, network
      failures and timeouts → temporary.
    """

    def __init__(
        self,
        http: httpx.Client,
        tokens: TokenSource,
        *,
        customer_id: str = "my_customer",
        base_url: str = DIRECTORY_BASE_URL,
        timeout: float = 30.0,
    ) -> None:
        if not customer_id:
            raise ValueError("customer_id is required ('my_customer' means the admin's own)")
        self._http = http
        self._tokens = tokens
        self._customer_id = customer_id
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout

    def __repr__(self) -> str:
        return (
            f"GoogleWorkspaceClient(customer_id={self._customer_id!r}, "
            f"base_url={origin(self._base_url)!r})"
        )

    @property
    def devices_url(self) -> str:
        customer = quote(self._customer_id, safe="")
        return f"{self._base_url}/admin/directory/v1/customer/{customer}/devices/mobile"

    def action(self, resource_id: str, action: Action) -> None:
        """Block or approve one device. Returns when Google accepted the action."""
        if action not in _ACTIONS:
            raise ValueError(f"unsupported action {action!r}: only 'block' and 'approve'")
        if not resource_id:
            raise DeliveryError("no Google resourceId for the device", permanent=True)
        url = f"{self.devices_url}/{quote(resource_id, safe='')}/action"
        send_authorized(
            self._http,
            self._tokens,
            "POST",
            url,
            what=f"Google mobiledevices.action {action} for {resource_id}",
            json_body={"action": action},
            timeout=self._timeout,
        )
        log.info("Google Workspace: %s mobile device %s", action, resource_id)

    def apply_decision(self, resource_id: str, new_decision: str) -> Action:
        """`action(resource_id, decision_to_action(new_decision))`; returns the action taken."""
        action = decision_to_action(new_decision)
        self.action(resource_id, action)
        return action

    def iter_devices(
        self, *, query: str | None = None, projection: Literal["BASIC", "FULL"] = "BASIC"
    ) -> Iterator[dict[str, Any]]:
        """Every mobile device (`mobiledevices.list`), page by page (`nextPageToken`)."""
        page_token: str | None = None
        seen_tokens: set[str] = set()
        while True:
            params = {"projection": projection, "maxResults": "100"}
            if query:
                params["query"] = query
            if page_token:
                params["pageToken"] = page_token
            response = send_authorized(
                self._http,
                self._tokens,
                "GET",
                self.devices_url,
                what="Google mobiledevices.list",
                params=params,
                timeout=self._timeout,
            )
            try:
                payload = response.json()
            except ValueError:
                payload = None
            if not isinstance(payload, dict) or not isinstance(
                payload.get("mobiledevices", []), list
            ):
                raise DeliveryError(
                    "Google mobiledevices.list answered something that is not a device list",
                    permanent=False,
                )
            for device in payload.get("mobiledevices", []):
                if isinstance(device, dict):
                    yield cast(dict[str, Any], device)
            next_token = payload.get("nextPageToken")
            if not isinstance(next_token, str) or not next_token:
                return
            if next_token in seen_tokens:
                raise DeliveryError(
                    "Google mobiledevices.list repeated a page token", permanent=False
                )
            seen_tokens.add(next_token)
            page_token = next_token

    def find_resource_ids(
        self, device_id: str, *, email: str | None = None, query: str | None = None
    ) -> list[str]:
        """The resourceIds of the devices whose `deviceId` is exactly `device_id` (and, when
        `email` is given, whose owner emails include it, compared case-insensitively).

        Without `query` every device is listed: Google's search index may lag behind (its
        documentation warns of up to 36 hours), so the match is made here, on exact values.
        `query` (e.g. `email:alice@example.com`) only narrows what is fetched. The `BASIC`
        projection is documented to carry deviceId, model, status and type; with `email` the
        list asks for `FULL`, which certainly carries the owner emails."""
        if not device_id:
            return []
        wanted_email = email.casefold() if email else None
        found: list[str] = []
        projection: Literal["BASIC", "FULL"] = "BASIC" if wanted_email is None else "FULL"
        for device in self.iter_devices(query=query, projection=projection):
            if device.get("deviceId") != device_id:
                continue
            if wanted_email is not None:
                emails = device.get("email") or []
                if not any(isinstance(e, str) and e.casefold() == wanted_email for e in emails):
                    continue
            resource_id = device.get("resourceId")
            if isinstance(resource_id, str) and resource_id and resource_id not in found:
                found.append(resource_id)
        return found

    def find_resource_id(
        self, device_id: str, *, email: str | None = None, query: str | None = None
    ) -> str | None:
        """The one resourceId for `device_id`, or None. Several matches (one device synced by
        several accounts) are a permanent `DeliveryError` unless `email` tells them apart."""
        found = self.find_resource_ids(device_id, email=email, query=query)
        if len(found) > 1:
            raise DeliveryError(
                f"Google deviceId {device_id} matches {len(found)} devices; "
                "give the owner's email to choose one",
                permanent=True,
            )
        return found[0] if found else None
