"""The OpenID Connect relying party (authlib for the OAuth 2.0 exchange, joserfc for the ID
token): discovery, the authorisation request with PKCE, the code exchange and the ID token's
checks. Who the verified claims name is `usecases.sign_in`'s business.

The provider's document is fetched from `{issuer}/.well-known/openid-configuration` and kept for
an hour; its `issuer` must be the configured one exactly. Its keys are fetched from `jwks_uri`
and fetched again once when a token names a key they do not hold (a rotation). An ID token is
accepted only when its signature verifies with one of them (RS256/ES256 and friends, never
`none` or a shared secret), `iss` is the configured issuer, `aud` holds this client (and `azp`
is this client when several audiences are named), it has not expired (against the wall clock:
the provider's tokens live in real time, whatever appwarden's own clock says), and `nonce` is the
one this browser's request sent.
"""

from __future__ import annotations

import hmac
import threading
import time
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode

import httpx
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from appwarden.settings import Settings
from appwarden.usecases.sign_in import OidcClaims, OidcRequest

DISCOVERY_SECONDS: Final = 3600.0
TIMEOUT_SECONDS: Final = 10.0
ALGORITHMS: Final = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384")
LEEWAY_SECONDS: Final = 60
MAX_TOKEN_CHARS: Final = 16_384


class OidcFailed(Exception):
    """The provider could not be reached or gave an answer that is not acceptable. The message
    says which, for the page and the log; it never carries a token or a secret."""


@dataclass(frozen=True, slots=True)
class Provider:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


def _https_or_loopback(url: object, what: str) -> str:
    if not isinstance(url, str) or not url.startswith(
        ("https://", "http://127.0.0.1", "http://[::1]", "http://localhost")
    ):
        raise OidcFailed(f"the provider's {what} is not an https URL")
    return url


class OidcClient:
    """One per application: discovery and keys are cached, thread-safely."""

    def __init__(self, settings: Settings, http: httpx.Client | None = None) -> None:
        assert settings.oidc_issuer is not None
        assert settings.oidc_client_id is not None
        assert settings.oidc_client_secret is not None
        self.issuer = settings.oidc_issuer
        self.client_id = settings.oidc_client_id
        self._secret = settings.oidc_client_secret.get_secret_value()
        self.scopes = settings.oidc_scopes
        self.redirect_uri = f"{settings.public_url}/auth/oidc/callback"
        self._http = http or httpx.Client(timeout=TIMEOUT_SECONDS, follow_redirects=False)
        self._lock = threading.Lock()
        self._provider: tuple[float, Provider] | None = None
        self._keys: KeySet | None = None

    def close(self) -> None:
        self._http.close()

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = self._http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise OidcFailed(
                f"the provider's {what} could not be fetched: {type(exc).__name__}"
            ) from None
        if response.status_code != 200:
            raise OidcFailed(f"the provider's {what} answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise OidcFailed(f"the provider's {what} is not JSON") from None
        if not isinstance(body, dict):
            raise OidcFailed(f"the provider's {what} is not a JSON object")
        return body

    def provider(self) -> Provider:
        with self._lock:
            if self._provider is not None and self._provider[0] > time.monotonic():
                return self._provider[1]
        doc = self._get_json(
            self.issuer.rstrip("/") + "/.well-known/openid-configuration", "discovery document"
        )
        if doc.get("issuer") != self.issuer:
            raise OidcFailed("the provider's discovery document names another issuer")
        provider = Provider(
            issuer=self.issuer,
            authorization_endpoint=_https_or_loopback(
                doc.get("authorization_endpoint"), "authorization endpoint"
            ),
            token_endpoint=_https_or_loopback(doc.get("token_endpoint"), "token endpoint"),
            jwks_uri=_https_or_loopback(doc.get("jwks_uri"), "key set URL"),
        )
        with self._lock:
            self._provider = (time.monotonic() + DISCOVERY_SECONDS, provider)
        return provider

    def authorization_url(self, request: OidcRequest) -> str:
        """Where to send the browser: the authorisation code flow with PKCE (S256)."""
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self.scopes,
            "state": request.state,
            "nonce": request.nonce,
            "code_challenge": create_s256_code_challenge(request.verifier),
            "code_challenge_method": "S256",
        }
        endpoint = self.provider().authorization_endpoint
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(query)}"

    def exchange(self, code: str, request: OidcRequest) -> OidcClaims:
        """Trade the code for tokens and verify the ID token against `request`."""
        provider = self.provider()
        try:
            response = self._http.post(
                provider.token_endpoint,
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": self.redirect_uri,
                    "code_verifier": request.verifier,
                },
                auth=(self.client_id, self._secret),
                headers={"Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise OidcFailed(
                f"the provider's token endpoint failed: {type(exc).__name__}"
            ) from None
        if response.status_code != 200:
            raise OidcFailed(f"the provider refused the code (HTTP {response.status_code})")
        try:
            id_token = response.json().get("id_token")
        except (ValueError, AttributeError):
            raise OidcFailed("the provider's token answer is not JSON") from None
        if not isinstance(id_token, str) or len(id_token) > MAX_TOKEN_CHARS:
            raise OidcFailed("the provider's token answer has no ID token")
        return self.verify(id_token, request.nonce)

    def _key_set(self, refresh: bool) -> KeySet:
        with self._lock:
            if self._keys is not None and not refresh:
                return self._keys
        body = self._get_json(self.provider().jwks_uri, "key set")
        try:
            keys = KeySet.import_key_set(body)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError):
            raise OidcFailed("the provider's key set cannot be read") from None
        with self._lock:
            self._keys = keys
        return keys

    def _decode(self, id_token: str) -> jwt.Token:
        for refresh in (False, True):
            try:
                return jwt.decode(id_token, self._key_set(refresh), algorithms=list(ALGORITHMS))
            except JoseError as exc:
                if refresh or "key" not in type(exc).__name__.lower():
                    raise OidcFailed(f"the ID token does not verify ({exc.error})") from None
            except ValueError:
                if refresh:
                    raise OidcFailed("the ID token does not verify") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def verify(self, id_token: str, nonce: str) -> OidcClaims:
        token = self._decode(id_token)
        claims = token.claims
        registry = jwt.JWTClaimsRegistry(
            leeway=LEEWAY_SECONDS,
            iss={"essential": True, "value": self.issuer},
            sub={"essential": True},
            aud={"essential": True, "value": self.client_id},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise OidcFailed(
                f"the ID token is not acceptable ({exc.error}: {exc.description})"
            ) from None
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.client_id:
            raise OidcFailed("the ID token was issued to another client (azp)")
        if not hmac.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
            raise OidcFailed("the ID token answers another sign-in (nonce)")
        email = claims.get("email")
        return OidcClaims(
            issuer=str(claims["iss"]),
            subject=str(claims["sub"]),
            email=email if isinstance(email, str) else None,
            email_verified=claims.get("email_verified") is True,
        )
