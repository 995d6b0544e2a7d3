"""A minimal OpenID Connect provider for the tests (test helper), on a real port: discovery, an
authorisation endpoint that signs in whoever `user` names (no login page), a token endpoint that
checks the client's secret, the code's redirect URI and its PKCE verifier (authlib's S256), and
ID tokens signed with an RSA key (joserfc), published at the key set URL.

Knobs a test turns to make it misbehave: `user` (what the ID token says about the person),
`token_issuer` (an ID token from another issuer), `nonce` (an ID token that answers another
request).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.proxy_harness import ThreadedServer, serve_http

CLIENT_ID = "appwarden-portal"
CLIENT_SECRET = "test-client-secret-0123456789"


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str
    user: dict[str, Any]


@dataclass
class OidcProvider(ThreadedServer):
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, private=True))
    user: dict[str, Any] = field(default_factory=dict)
    token_issuer: str | None = None  # None: the provider's own issuer
    nonce: str | None = None  # None: the nonce of the request
    grants: dict[str, Grant] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    @property
    def issuer(self) -> str:
        return self.url

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "jwks_uri": f"{self.url}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
        }

    def authorize(self, query: dict[str, str]) -> str:
        """Sign `user` in and send the browser back with a code (or an error)."""
        if query.get("client_id") != CLIENT_ID or query.get("code_challenge_method") != "S256":
            answer = {"error": "invalid_request", "state": query.get("state", "")}
        else:
            code = secrets.token_urlsafe(16)
            self.grants[code] = Grant(
                query["client_id"],
                query["redirect_uri"],
                query["code_challenge"],
                query["nonce"],
                dict(self.user),
            )
            answer = {"code": code, "state": query.get("state", "")}
        return f"{query.get('redirect_uri', '')}?{urlencode(answer)}"

    def token(self, form: dict[str, str], authorization: str) -> tuple[int, dict[str, Any]]:
        client = base64.b64decode(authorization.removeprefix("Basic ")).decode()
        if client != f"{CLIENT_ID}:{CLIENT_SECRET}":
            return 401, {"error": "invalid_client"}
        grant = self.grants.pop(form.get("code", ""), None)  # a code works once
        if (
            grant is None
            or grant.redirect_uri != form.get("redirect_uri")
            or create_s256_code_challenge(form.get("code_verifier", "")) != grant.challenge
        ):
            return 400, {"error": "invalid_grant"}
        now = int(time.time())
        claims = {
            "iss": self.token_issuer or self.issuer,
            "aud": grant.client_id,
            "iat": now,
            "exp": now + 300,
            "nonce": self.nonce or grant.nonce,
            **grant.user,
        }
        id_token = jwt.encode({"alg": "RS256", "kid": self.key.kid}, claims, self.key)
        return 200, {"access_token": "at", "token_type": "Bearer", "id_token": id_token}


def start_provider() -> OidcProvider:
    holder: list[OidcProvider] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: dict[str, Any], location: str | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            if location is not None:
                self.send_header("Location", location)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            provider = holder[0]
            parts = urlsplit(self.path)
            with lock:
                provider.requests.append(f"GET {parts.path}")
                if parts.path == "/.well-known/openid-configuration":
                    self._send(200, provider.discovery())
                elif parts.path == "/jwks":
                    self._send(200, {"keys": [provider.key.as_dict(private=False)]})
                elif parts.path == "/authorize":
                    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                    self._send(302, {}, provider.authorize(query))
                else:
                    self._send(404, {"error": "not_found"})

        def do_POST(self) -> None:
            provider = holder[0]
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            with lock:
                provider.requests.append(f"POST {self.path}")
                status, body = provider.token(form, self.headers.get("Authorization", ""))
            self._send(status, body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server, thread = serve_http(Handler, "oidc-provider")
    provider = OidcProvider(server=server, thread=thread)
    provider.key = RSAKey.generate_key(2048, private=True, parameters={"kid": "test-key-1"})
    holder.append(provider)
    return provider
