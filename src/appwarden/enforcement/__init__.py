"""Enforcement adapters: turn a (device, resource) decision into an action at the mail provider.

- `appwarden.enforcement.google`: the Google Workspace Directory API blocks or approves a
  mobile device (`mobiledevices.action`), with a service-account token.
- `appwarden.enforcement.exchange`: Exchange ActiveSync per-mailbox block lists
  (`Set-CASMailbox -ActiveSyncBlockedDeviceIDs`), as a PowerShell script for the current state
  and through the Exchange Online admin API.

Actions are driven by `DecisionChanged` through the transactional outbox (docs/architecture.md):
delivery is at least once, so every action here is idempotent (blocking twice leaves the device
blocked). A failure is a `DeliveryError` whose `permanent` flag tells the dispatcher whether a
retry can help, exactly as for the notification channels.

These modules depend only on the standard library, httpx, `cryptography` (imported when a
service-account key is loaded) and `appwarden.notifications.channels.DeliveryError`. They know
nothing about the database: the caller resolves the device's identifiers and owner first.

This package module holds what both adapters share: the `TokenSource` protocol, an OAuth 2.0
token cache, and one place that maps HTTP outcomes to `DeliveryError`. Secrets (private keys,
client secrets, access tokens) never appear in a repr, a log line or an exception message.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from appwarden.notifications.channels import DeliveryError, origin

__all__ = [
    "CachingTokenSource",
    "DeliveryError",
    "TokenSource",
    "send_authorized",
]

log = logging.getLogger(__name__)

_MAX_DETAIL_CHARS = 300
# Google answers some quota errors with 403 instead of 429; these reasons are worth a retry.
_RETRYABLE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})


class TokenSource(Protocol):
    """Hands out a bearer access token; `invalidate` drops a cached one (after a 401)."""

    def token(self) -> str: ...

    def invalidate(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Cached:
    value: str
    expires_at: float


class CachingTokenSource:
    """An OAuth 2.0 token endpoint client that caches the access token until `refresh_margin`
    seconds before it expires. Subclasses say what to POST (`_grant`) and how to name themselves.
    Safe to share between threads: one token request at a time."""

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
            if cached is not None and now < cached.expires_at - self._refresh_margin:
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
        return _Cached(value=value, expires_at=now + expires_in)

    def _scrub(self, error: DeliveryError) -> DeliveryError:
        message = error.message
        for secret in self._secrets():
            if secret and secret in message:
                message = message.replace(secret, "***")
        return DeliveryError(message, permanent=error.permanent)


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
    """One API request with a bearer token. A 401 drops the cached token and retries once with a
    fresh one; any other outcome that is not 2xx becomes a `DeliveryError` (see `status_error`).
    Redirects are not followed."""
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
        if 200 <= response.status_code < 300:
            return response
        raise status_error(response, what)
    raise AssertionError("unreachable")  # pragma: no cover


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


def _error_detail(response: httpx.Response) -> tuple[str, set[str]]:
    """A short, single-line description from the usual JSON error shapes: Google
    (`{"error": {"message", "errors": [{"reason"}]}}`), Microsoft (`{"error": {"code",
    "message"}}`) and OAuth (`{"error": "...", "error_description": "..."}`)."""
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
    text = " ".join(" ".join(parts).split())
    return text[:_MAX_DETAIL_CHARS], reasons
