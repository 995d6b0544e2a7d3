"""Delivery channels: the adapters that put one notice on the wire (docs/delivery.md).

The transactional outbox and its dispatcher live elsewhere; they build an `OutgoingEmail` or an
`OutgoingWebhook` from a notice row and call `Channel.send`. A channel either returns (delivered
as far as the next hop is concerned) or raises `DeliveryError`, whose `permanent` flag tells the
dispatcher whether retrying can help. Delivery is at-least-once: a retry carries the same
Message-ID (email) or event id (webhook), so receivers can drop duplicates.

- `SmtpChannel`     smtplib, one reused connection, STARTTLS or implicit TLS, AUTH.
- `WebhookChannel`  httpx POST of a JSON body, signed with HMAC-SHA256 (`sign_webhook`).
- `MaildirChannel`  the embedded default: writes what would have been sent into a local maildir.

Also here: `backoff_delay` (the retry schedule) and `RateLimiter` (`max_per_minute` per channel).
Secrets (SMTP password, webhook secret) never appear in exceptions, logs or reprs; webhook URLs
are reduced to their origin in messages because they often carry a token.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import json
import logging
import os
import re
import smtplib
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self
from urllib.parse import urlsplit

import httpx

__all__ = [
    "Channel",
    "DeliveryError",
    "MaildirChannel",
    "OutgoingEmail",
    "OutgoingWebhook",
    "RateLimiter",
    "SmtpChannel",
    "SmtpSettings",
    "WebhookChannel",
    "backoff_delay",
    "sign_webhook",
    "verify_webhook",
]

log = logging.getLogger(__name__)

EVENT_ID_HEADER = "X-Appwarden-Event-Id"
TIMESTAMP_HEADER = "X-Appwarden-Timestamp"
SIGNATURE_HEADER = "X-Appwarden-Signature"
SIGNATURE_VERSION = "v1"

_MAX_REPLY_CHARS = 200
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces or controls


class DeliveryError(Exception):
    """A send that did not succeed.

    `permanent` is True when retrying cannot help: a 5xx SMTP reply (including a rejected
    login), an HTTP 4xx other than 408/429 (and 3xx: redirects are not followed), a bad address
    or URL, or an item the channel cannot carry. Everything else (4xx SMTP replies, 408/429/5xx
    HTTP, refused connections, timeouts, resets) is temporary.
    """

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent

    def __repr__(self) -> str:
        return f"DeliveryError({self.message!r}, permanent={self.permanent})"


# --- what is sent -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    """A fully built message (From, To, Subject, Message-ID, X-Appwarden-* headers, body).

    The Message-ID is fixed when the notice is created, so a redelivery carries the same one.
    """

    message: Message

    def __post_init__(self) -> None:
        if not str(self.message.get("Message-ID", "")).strip():
            raise ValueError("an outgoing email needs a Message-ID (fixed when it is queued)")

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"]).strip()

    @property
    def recipient(self) -> str:
        """The one address in To. A missing, multiple or malformed one is a permanent failure."""
        values = [str(value) for value in self.message.get_all("To", [])]
        addresses = [address for _, address in email.utils.getaddresses(values) if address]
        if len(addresses) != 1:
            raise DeliveryError(
                f"message {self.message_id} must have exactly one To address, "
                f"found {len(addresses)}",
                permanent=True,
            )
        address = addresses[0]
        local, at, domain = address.rpartition("@")
        if not (local and at and domain) or any(ch.isspace() or ch in "<>" for ch in address):
            raise DeliveryError(
                f"message {self.message_id} has a malformed To address", permanent=True
            )
        return address


@dataclass(frozen=True, slots=True)
class OutgoingWebhook:
    """One JSON body POSTed to `url`; `event_id` is stable across retries (the receiver's
    deduplication key), sent as the X-Appwarden-Event-Id header. It should also be in the body,
    which is what the signature covers."""

    url: str
    body: bytes
    event_id: str

    def __post_init__(self) -> None:
        if not _HEADER_SAFE.fullmatch(self.event_id):
            raise ValueError("event_id must be non-empty printable ASCII without spaces")


class Channel(Protocol):
    """What the dispatcher calls. `send` returns on success and raises `DeliveryError`."""

    name: str

    def send(self, item: OutgoingEmail | OutgoingWebhook) -> None: ...


def _wrong_item(channel: str, item: object) -> DeliveryError:
    return DeliveryError(
        f"the {channel} channel cannot deliver a {type(item).__name__}", permanent=True
    )


def origin(url: str) -> str:
    """scheme://host[:port] of a URL: webhook paths and queries often carry a token."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable url>"
    return f"{parts.scheme or '?'}://{host}{port}"


def _scheme(url: str) -> str:
    try:
        return urlsplit(url).scheme.lower()
    except ValueError:
        return ""


# --- SMTP -------------------------------------------------------------------------------------


@dataclass
class SmtpSettings:
    """Where and how to submit mail. `ssl` is implicit TLS (port 465); `starttls` upgrades a
    plain connection (port 587) and fails rather than falling back to plain text."""

    host: str = "127.0.0.1"
    port: int = 25
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    sender: str = "appwarden@localhost"
    local_hostname: str | None = None  # the EHLO name; None: this machine's FQDN

    def __post_init__(self) -> None:
        if self.ssl and self.starttls:
            raise ValueError("choose either ssl (implicit TLS) or starttls, not both")
        if not 0 < self.port < 65536:
            raise ValueError(f"SMTP port out of range: {self.port}")
        if self.timeout <= 0:
            raise ValueError("SMTP timeout must be positive")
        if self.password is not None and self.username is None:
            raise ValueError("an SMTP password was given without a username")


def _reply_text(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = " ".join(text.split())
    return text[:_MAX_REPLY_CHARS]


def _by_code(code: int, what: str) -> DeliveryError:
    return DeliveryError(what, permanent=500 <= code < 600)


def _smtp_error(exc: BaseException, message_id: str) -> DeliveryError:
    """Map what smtplib raised during a transaction to a DeliveryError."""
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        refusals = list(exc.recipients.values())
        code, reply = refusals[0] if refusals else (0, b"")
        return _by_code(
            code, f"SMTP recipient refused for {message_id}: {code} {_reply_text(reply)}"
        )
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        # The server's text is left out: a confused server may echo what it was sent.
        return _by_code(exc.smtp_code, f"SMTP authentication failed ({exc.smtp_code})")
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return _by_code(
            exc.smtp_code,
            f"SMTP sender refused for {message_id}: {exc.smtp_code} {_reply_text(exc.smtp_error)}",
        )
    if isinstance(exc, smtplib.SMTPResponseException):  # DATA, HELO, connect and the rest
        return _by_code(
            exc.smtp_code,
            f"SMTP {type(exc).__name__} for {message_id}: "
            f"{exc.smtp_code} {_reply_text(exc.smtp_error)}",
        )
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        # e.g. STARTTLS or AUTH configured but not offered: the configuration must change.
        return DeliveryError(
            f"SMTP server does not support what is configured: {exc}", permanent=True
        )
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return DeliveryError(f"SMTP server disconnected: {exc}", permanent=False)
    if isinstance(exc, TimeoutError):
        return DeliveryError("SMTP server timed out", permanent=False)
    if isinstance(exc, ssl.SSLError):
        return DeliveryError(f"SMTP TLS failure: {exc}", permanent=False)
    if isinstance(exc, OSError):
        return DeliveryError(
            f"SMTP connection failed: {type(exc).__name__}: {exc}", permanent=False
        )
    return DeliveryError(f"SMTP failure: {type(exc).__name__}: {exc}", permanent=False)


def _is_stale_connection(exc: BaseException) -> bool:
    """A reused connection the server has dropped, or is dropping (421 closes it)."""
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return True
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return any(code == 421 for code, _ in exc.recipients.values())
    return isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code == 421


def _close_quietly(client: smtplib.SMTP, *, polite: bool = False) -> None:
    """Close a connection; say QUIT first only when it is healthy (a hung server would make
    QUIT wait for the whole timeout)."""
    try:
        if polite and client.sock is not None:
            client.quit()
    except (smtplib.SMTPException, OSError):
        pass
    finally:
        client.close()


class SmtpChannel:
    """Submits email over SMTP, keeping one connection open across sends.

    A send on a reused connection that the server has closed (disconnect or 421) is retried
    once on a fresh connection; every other failure is mapped to a `DeliveryError`. Safe to call
    from several threads (sends are serialised). Call `close()` when done.
    """

    name = "smtp"

    def __init__(
        self, settings: SmtpSettings, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._settings = settings
        self._ssl_context = ssl_context
        self._client: smtplib.SMTP | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SmtpChannel(host={self._settings.host!r}, port={self._settings.port})"

    def send(self, item: OutgoingEmail | OutgoingWebhook) -> None:
        if not isinstance(item, OutgoingEmail):
            raise _wrong_item(self.name, item)
        recipient = item.recipient
        message_id = item.message_id
        with self._lock:
            reused = self._client is not None and self._client.sock is not None
            try:
                self._transaction(item, recipient)
            except Exception as exc:
                if not (reused and _is_stale_connection(exc)):
                    self._after_failure(exc)
                    raise self._error(exc, message_id) from None
                log.debug("SMTP connection went stale; reconnecting for %s", message_id)
                self._drop()
                try:
                    self._transaction(item, recipient)
                except Exception as retry_exc:
                    self._after_failure(retry_exc)
                    raise self._error(retry_exc, message_id) from None
        log.info("delivered %s via smtp", message_id)

    def close(self) -> None:
        """Say QUIT and close the connection, if one is open. The channel stays usable."""
        with self._lock:
            self._drop(polite=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # internals

    def _transaction(self, item: OutgoingEmail, recipient: str) -> None:
        if self._client is None or self._client.sock is None:
            self._drop()
            self._client = self._connect()
        self._client.send_message(
            item.message, from_addr=self._settings.sender, to_addrs=[recipient]
        )

    def _connect(self) -> smtplib.SMTP:
        s = self._settings
        client: smtplib.SMTP
        if s.ssl:
            client = smtplib.SMTP_SSL(
                s.host, s.port, s.local_hostname, timeout=s.timeout, context=self._context()
            )
        else:
            client = smtplib.SMTP(s.host, s.port, s.local_hostname, timeout=s.timeout)
        try:
            client.ehlo()
            if s.starttls:
                client.starttls(context=self._context())
                client.ehlo()
            if s.username is not None:
                client.login(s.username, s.password or "")
        except BaseException:
            _close_quietly(client)
            raise
        return client

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    def _after_failure(self, exc: BaseException) -> None:
        # A refused recipient, sender or message leaves the session usable (smtplib sends
        # RSET); anything else leaves it in an unknown state.
        refused = (
            smtplib.SMTPRecipientsRefused,
            smtplib.SMTPSenderRefused,
            smtplib.SMTPDataError,
        )
        if not isinstance(exc, refused) or _is_stale_connection(exc):
            self._drop()

    def _drop(self, *, polite: bool = False) -> None:
        client, self._client = self._client, None
        if client is not None:
            _close_quietly(client, polite=polite)

    def _error(self, exc: BaseException, message_id: str) -> DeliveryError:
        error = _smtp_error(exc, message_id)
        password = self._settings.password
        if password and password in error.message:  # belt and braces: never echo the secret
            error = DeliveryError(error.message.replace(password, "***"), permanent=error.permanent)
        return error


# --- webhooks ---------------------------------------------------------------------------------


def sign_webhook(secret: bytes, timestamp: int, body: bytes) -> str:
    """`v1=` + hex HMAC-SHA256 over `f"{timestamp}."` followed by the raw body."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, candidate in headers.items():
        if key.lower() == wanted:
            return candidate
    return None


def verify_webhook(
    secret: bytes,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: float = 300,
) -> bool:
    """True when the signature matches `body` and the timestamp is within `tolerance` seconds of
    `now` (either side). Header names are case-insensitive; malformed input gives False."""
    timestamp_text = _header(headers, TIMESTAMP_HEADER)
    signature = _header(headers, SIGNATURE_HEADER)
    if timestamp_text is None or signature is None:
        return False
    timestamp_text = timestamp_text.strip()
    if not timestamp_text.isascii() or not timestamp_text.isdigit():
        return False
    timestamp = int(timestamp_text)
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign_webhook(secret, timestamp, body)
    return hmac.compare_digest(
        expected.encode("ascii"), signature.strip().encode("utf-8", "replace")
    )


class WebhookChannel:
    """POSTs signed JSON. 2xx is success; 408, 429, 5xx and network failures are temporary;
    other 4xx (and 3xx: redirects are not followed) are permanent."""

    name = "webhook"

    def __init__(
        self,
        secret: bytes,
        *,
        timeout: float = 10.0,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secret:
            raise ValueError("a webhook secret is required")
        self._secret = secret
        self._timeout = timeout
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(follow_redirects=False)
        self._clock = clock

    def __repr__(self) -> str:
        return f"WebhookChannel(timeout={self._timeout})"

    def send(self, item: OutgoingEmail | OutgoingWebhook) -> None:
        if not isinstance(item, OutgoingWebhook):
            raise _wrong_item(self.name, item)
        where = origin(item.url)
        if _scheme(item.url) not in ("http", "https"):
            raise DeliveryError(f"webhook URL must be http or https: {where}", permanent=True)
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "appwarden-webhook",
            EVENT_ID_HEADER: item.event_id,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign_webhook(self._secret, timestamp, item.body),
        }
        try:
            with self._client.stream(
                "POST",
                item.url,
                content=item.body,
                headers=headers,
                timeout=self._timeout,
                follow_redirects=False,
            ) as response:
                status = response.status_code
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise DeliveryError(
                f"webhook URL rejected ({type(exc).__name__}): {where}", permanent=True
            ) from None
        except httpx.TimeoutException as exc:
            raise DeliveryError(
                f"webhook to {where} timed out ({type(exc).__name__})", permanent=False
            ) from None
        except httpx.TransportError as exc:
            raise DeliveryError(
                f"webhook to {where} failed: {type(exc).__name__}", permanent=False
            ) from None
        if 200 <= status < 300:
            log.info("delivered webhook event %s to %s (%d)", item.event_id, where, status)
            return
        permanent = not (status in (408, 429) or status >= 500)
        raise DeliveryError(
            f"webhook to {where} answered {status} for event {item.event_id}", permanent=permanent
        )

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --- maildir ----------------------------------------------------------------------------------


_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._@+=-]")


def _stable_name(key: str) -> str:
    """A maildir-safe file name derived from a Message-ID or event id: readable, no `/` or `:`,
    no leading dot, and a digest so two ids never share a name."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    readable = _UNSAFE_NAME_CHARS.sub("_", key.strip().strip("<>")).lstrip(".")[:100]
    return f"{readable or 'item'}.{digest}"


class MaildirChannel:
    """Writes each email into `root/new/` (tmp → new rename, as maildir readers expect) and each
    webhook as JSON into `root/webhooks/`. The file name derives from the Message-ID / event id,
    so a redelivery replaces the earlier file (in `new/`, or in `cur/` once a reader moved it)."""

    name = "maildir"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        for sub in ("tmp", "new", "cur", "webhooks"):
            (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)

    def __repr__(self) -> str:
        return f"MaildirChannel({str(self.root)!r})"

    def send(self, item: OutgoingEmail | OutgoingWebhook) -> None:
        try:
            if isinstance(item, OutgoingEmail):
                self._write_email(item)
            elif isinstance(item, OutgoingWebhook):
                self._write_webhook(item)
            else:
                raise _wrong_item(self.name, item)
        except OSError as exc:
            raise DeliveryError(
                f"cannot write to maildir {self.root}: {type(exc).__name__}: {exc.strerror}",
                permanent=False,
            ) from exc

    def path_for(self, item: OutgoingEmail | OutgoingWebhook) -> Path:
        """Where `item` is (or would be) stored."""
        if isinstance(item, OutgoingWebhook):
            return self.root / "webhooks" / f"{_stable_name(item.event_id)}.json"
        name = _stable_name(item.message_id)
        for existing in sorted((self.root / "cur").glob(f"{name}:*")):
            return existing
        return self.root / "new" / name

    def _write_email(self, item: OutgoingEmail) -> None:
        item.recipient  # noqa: B018  (a message with a bad To fails here as it would over SMTP)
        policy = item.message.policy.clone(linesep="\n")
        self._publish(self.path_for(item), item.message.as_bytes(policy=policy))
        log.info("wrote %s to maildir %s", item.message_id, self.root)

    def _write_webhook(self, item: OutgoingWebhook) -> None:
        record: dict[str, object] = {
            "event_id": item.event_id,
            "destination": origin(item.url),
        }
        try:
            record["body"] = json.loads(item.body)
        except ValueError:
            record["body_text"] = item.body.decode("utf-8", "replace")
        data = json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        self._publish(self.path_for(item), data.encode())
        log.info("wrote webhook event %s to maildir %s", item.event_id, self.root)

    def _publish(self, target: Path, data: bytes) -> None:
        tmp = self.root / "tmp" / f"{time.time_ns()}.{os.getpid()}.{uuid.uuid4().hex}"
        try:
            with open(tmp, "xb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


# --- retry schedule and rate limit --------------------------------------------------------------


def backoff_delay(attempt: int, *, base: float = 30.0, cap: float = 3600.0) -> float:
    """Seconds to wait before retrying after failed attempt number `attempt` (1-based):
    `base * 2**(attempt - 1)`, at most `cap`. Deterministic: no jitter."""
    if attempt < 1:
        raise ValueError("attempt starts at 1")
    if base < 0 or cap < 0:
        raise ValueError("base and cap must not be negative")
    exponent = min(attempt - 1, 1023)  # 2.0**1024 overflows; the cap applies long before
    return min(cap, base * 2.0**exponent)


class RateLimiter:
    """max_per_minute per channel; token bucket on an injected monotonic clock.

    The bucket holds `max_per_minute` tokens, starts full and refills continuously at
    `max_per_minute / 60` per second; `acquire` takes one, sleeping until one is available.
    """

    _EPSILON = 1e-9

    def __init__(
        self,
        max_per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_per_minute < 1:
            raise ValueError("max_per_minute must be at least 1")
        self.max_per_minute = max_per_minute
        self._rate = max_per_minute / 60.0
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(max_per_minute)
        self._updated = clock()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RateLimiter(max_per_minute={self.max_per_minute})"

    def acquire(self) -> None:
        with self._lock:
            while True:
                self._refill()
                if self._tokens >= 1.0 - self._EPSILON:
                    self._tokens = max(0.0, self._tokens - 1.0)
                    return
                self._sleep((1.0 - self._tokens) / self._rate)

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        self._tokens = min(float(self.max_per_minute), self._tokens + elapsed * self._rate)


if TYPE_CHECKING:  # the three channels satisfy the protocol the dispatcher relies on

    def _conforms(smtp: SmtpChannel, webhook: WebhookChannel, maildir: MaildirChannel) -> None:
        channels: list[Channel] = [smtp, webhook, maildir]
        del channels
