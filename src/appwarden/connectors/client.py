"""The HTTP behaviour every connector shares: one GET with a bearer token, retried while a retry
can help.

- every request has a timeout (`RetryPolicy.timeout`);
- `429` and `503` with a `Retry-After` (seconds, or an HTTP date) wait exactly that long, up to
  `max_retry_after` (a server asking for longer ends the run: it is better incomplete than stuck);
- other `5xx`, `408`, `429`/`503` without `Retry-After`, timeouts and network failures wait an
  exponential backoff with full jitter (a random delay between 0 and `base * 2**(attempt-1)`,
  capped), so many workers hitting one throttled API do not retry in step;
- at most `max_attempts` attempts per request; any other answer (400, 403, 404, a second 401)
  ends the run at once, because the request or the credentials must change first.

Every failure is a `ConnectorError` whose text names the request and the server's origin, never
a credential: the configured secrets and every access token handed out are scrubbed from it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from appwarden.notifications.channels import DeliveryError, origin
from appwarden.oauth import TokenSource, authorized_request, status_error

log = logging.getLogger("appwarden.sync")

# Statuses whose Retry-After is honoured (RFC 9110 §10.2.3: "too many requests", "unavailable").
RETRY_AFTER_STATUSES = frozenset({429, 503})


class ConnectorError(Exception):
    """A page could not be fetched: the run ends incomplete. The message carries no secret."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    timeout: float = 30.0  # seconds, per request
    max_attempts: int = 6
    base_delay: float = 1.0  # the backoff before the second attempt is at most this
    max_delay: float = 60.0  # the backoff never exceeds this
    max_retry_after: float = 300.0  # the longest Retry-After honoured

    def backoff(self, attempt: int, jitter: float) -> float:
        """Full jitter after failed attempt `attempt` (1-based); `jitter` is uniform in [0, 1)."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(attempt - 1, 60))
        return jitter * ceiling


def retry_after_seconds(value: str | None, *, now: float) -> float | None:
    """The wait a `Retry-After` header asks for: delay-seconds or an HTTP date (a date in the past
    is 0). None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.fromtimestamp(now, UTC)).total_seconds())


class _Remembered:
    """A token source that remembers every token it handed out, to scrub them from errors."""

    def __init__(self, tokens: TokenSource) -> None:
        self._tokens = tokens
        self.handed_out: set[str] = set()

    def token(self) -> str:
        value = self._tokens.token()
        self.handed_out.add(value)
        return value

    def invalidate(self) -> None:
        self._tokens.invalidate()


class ApiClient:
    """GETs for one source's API. `heartbeat` runs before every attempt and every wait (the sync
    renews its claim on the source there; it may raise to stop the run). `sleep`, `jitter` and
    `wall` are injectable for tests."""

    def __init__(
        self,
        http: httpx.Client,
        tokens: TokenSource,
        *,
        secrets: Iterable[str] = (),
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        wall: Callable[[], float] = time.time,
        heartbeat: Callable[[], None] | None = None,
    ) -> None:
        self._http = http
        self._tokens = _Remembered(tokens)
        self._secrets = tuple(s for s in secrets if s)
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._jitter = jitter
        self._wall = wall
        self._heartbeat = heartbeat

    def __repr__(self) -> str:
        return f"ApiClient(policy={self.policy!r})"

    def get(self, url: str, *, what: str, params: Mapping[str, str] | None = None) -> bytes:
        """The body of a 2xx answer to `GET url`, after as many attempts as the policy allows."""
        attempts = self.policy.max_attempts
        for attempt in range(1, attempts + 1):
            if self._heartbeat is not None:
                self._heartbeat()
            try:
                response = authorized_request(
                    self._http,
                    self._tokens,
                    "GET",
                    url,
                    what=what,
                    params=params,
                    timeout=self.policy.timeout,
                )
            except DeliveryError as exc:  # no answer: network, timeout, or the token endpoint
                if exc.permanent:
                    raise self.error(exc.message) from None
                failure, delay = exc.message, self.policy.backoff(attempt, self._jitter())
            else:
                if 200 <= response.status_code < 300:
                    return response.content
                failure, delay = self._after_failure(response, what, attempt)
            if attempt == attempts:
                raise self.error(f"{failure} (gave up after {attempts} attempts)")
            log.warning(
                "%s; attempt %d of %d in %.1f s", self.scrub(failure), attempt + 1, attempts, delay
            )
            if self._heartbeat is not None:  # a long wait must not outlast the run's claim
                self._heartbeat()
            self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _after_failure(
        self, response: httpx.Response, what: str, attempt: int
    ) -> tuple[str, float]:
        """What went wrong and how long to wait; raises when no retry can help."""
        error = status_error(response, what)
        if error.permanent:
            raise self.error(error.message)
        if response.status_code in RETRY_AFTER_STATUSES:
            asked = retry_after_seconds(response.headers.get("Retry-After"), now=self._wall())
            if asked is not None:
                if asked > self.policy.max_retry_after:
                    raise self.error(
                        f"{error.message}: asked to retry after {asked:.0f} s, longer than the "
                        f"{self.policy.max_retry_after:.0f} s a sync waits"
                    )
                return f"{error.message} (Retry-After {asked:.0f} s)", asked
        return error.message, self.policy.backoff(attempt, self._jitter())

    def scrub(self, text: str) -> str:
        for secret in (*self._secrets, *self._tokens.handed_out):
            text = text.replace(secret, "***")
        return text

    def error(self, message: str) -> ConnectorError:
        return ConnectorError(self.scrub(message))


def same_origin(url: str, base: str) -> bool:
    """A next-page link must stay on the API's own server: the bearer token goes with it."""
    return origin(url) == origin(base)
