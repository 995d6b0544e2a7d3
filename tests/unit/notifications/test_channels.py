"""Delivery channels against real servers on loopback: aiosmtpd for SMTP, a threaded
http.server for webhooks, a maildir on disk. Nothing in smtplib or httpx is mocked."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import hashlib
import hmac
import http.server
import ipaddress
import json
import mailbox
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tests.proxy_harness import free_port

from appwarden.notifications.channels import (
    DeliveryError,
    MaildirChannel,
    OutgoingEmail,
    OutgoingWebhook,
    RateLimiter,
    SmtpChannel,
    SmtpSettings,
    WebhookChannel,
    backoff_delay,
    sign_webhook,
    verify_webhook,
)

SECRET = b"webhook-test-secret"
PASSWORD = "s3cret-Pa55word"


def make_email(
    to: str = "ann@example.org", message_id: str = "<notice-1.abc@appwarden.test>", body: str = "hi"
) -> OutgoingEmail:
    message = EmailMessage()
    message["From"] = "Appwarden <appwarden@example.org>"
    message["To"] = to
    message["Subject"] = "Remove TikTok from your phone"
    message["Message-ID"] = message_id
    message["X-Appwarden-Kind"] = "announce"
    message["X-Appwarden-Policy"] = "no-tiktok"
    message["X-Appwarden-Notice-Id"] = "1"
    message.set_content(body)
    return OutgoingEmail(message)


# --- an SMTP server on loopback ----------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: email.message.EmailMessage
    peer: Any
    authenticated: bool
    login: bytes | None
    tls: bool


@dataclass
class RecordingHandler:
    """Stores every accepted message; answers configured replies per recipient or at DATA."""

    received: list[Received] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    mail_reply: str | None = None
    data_reply: str | None = None
    protocols: list[Any] = field(default_factory=list)

    async def handle_EHLO(  # noqa: N802  (aiosmtpd's hook names)
        self, server, session, envelope, hostname, responses
    ):
        if server not in self.protocols:
            self.protocols.append(server)
        session.host_name = hostname
        return responses

    async def handle_MAIL(  # noqa: N802
        self, server, session, envelope, address, mail_options
    ):
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802
        self, server, session, envelope, address, rcpt_options
    ):
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802
        self, server, session, envelope
    ):
        if self.data_reply:
            return self.data_reply
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.received.append(
            Received(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                message=message,
                peer=session.peer,
                authenticated=bool(session.authenticated),
                login=session.auth_data.login if session.auth_data else None,
                tls=session.ssl is not None,
            )
        )
        return "250 OK"

    @property
    def connections(self) -> int:
        """Distinct client connections that delivered (each has its own source port)."""
        return len({r.peer for r in self.received})


class LoopbackController(Controller):
    """Binds an ephemeral port and learns it before the start-up probe connects."""

    def _trigger_server(self):
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@dataclass
class SmtpServer:
    controller: LoopbackController
    handler: RecordingHandler

    @property
    def port(self) -> int:
        return self.controller.port

    def settings(self, **overrides: Any) -> SmtpSettings:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "timeout": 5.0,
            "sender": "bounces@example.org",
            "local_hostname": "client.test",
        }
        values.update(overrides)
        return SmtpSettings(**values)

    def drop_connections(self) -> None:
        """Close every client connection from the server side, as an idle timeout would."""

        async def close_all() -> None:
            for protocol in self.handler.protocols:
                if protocol.transport is not None:
                    protocol.transport.close()
            await asyncio.sleep(0.05)

        asyncio.run_coroutine_threadsafe(close_all(), self.controller.loop).result(5)


@pytest.fixture
def smtp_server_factory() -> Iterator[Callable[..., SmtpServer]]:
    started: list[LoopbackController] = []

    def start(handler: RecordingHandler | None = None, **smtp_kwargs: Any) -> SmtpServer:
        handler = handler or RecordingHandler()
        controller = LoopbackController(
            handler, hostname="127.0.0.1", port=0, server_hostname="localhost", **smtp_kwargs
        )
        controller.start()
        started.append(controller)
        return SmtpServer(controller, handler)

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture
def smtp_server(smtp_server_factory) -> SmtpServer:
    return smtp_server_factory()


@pytest.fixture
def closed_port() -> int:
    return free_port()  # nobody listens on it


def send_expecting_error(channel, item) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        channel.send(item)
    return caught.value


# --- SMTP ------------------------------------------------------------------------------------


def test_smtp_delivers_the_message_with_its_message_id_and_headers(smtp_server):
    item = make_email(to="Ann Example <ann@example.org>")
    with SmtpChannel(smtp_server.settings()) as channel:
        channel.send(item)

    [received] = smtp_server.handler.received
    assert received.mail_from == "bounces@example.org"
    assert received.rcpt_tos == ["ann@example.org"]
    message = received.message
    assert message["Message-ID"] == "<notice-1.abc@appwarden.test>"
    assert message["Subject"] == "Remove TikTok from your phone"
    assert message["X-Appwarden-Kind"] == "announce"
    assert message["X-Appwarden-Policy"] == "no-tiktok"
    assert message["X-Appwarden-Notice-Id"] == "1"
    assert message.get_content().strip() == "hi"
    assert not received.authenticated


def test_smtp_reuses_one_connection_and_reconnects_after_the_server_closes_it(smtp_server):
    with SmtpChannel(smtp_server.settings()) as channel:
        for n in range(3):
            channel.send(make_email(message_id=f"<n{n}@appwarden.test>"))
        assert smtp_server.handler.connections == 1

        smtp_server.drop_connections()
        channel.send(make_email(message_id="<after-drop@appwarden.test>"))
        channel.send(make_email(message_id="<after-drop-2@appwarden.test>"))

    ids = [r.message["Message-ID"] for r in smtp_server.handler.received]
    assert ids == [
        "<n0@appwarden.test>",
        "<n1@appwarden.test>",
        "<n2@appwarden.test>",
        "<after-drop@appwarden.test>",
        "<after-drop-2@appwarden.test>",
    ]
    assert smtp_server.handler.connections == 2


def test_smtp_close_then_send_opens_a_new_connection(smtp_server):
    channel = SmtpChannel(smtp_server.settings())
    channel.send(make_email(message_id="<a@appwarden.test>"))
    channel.close()
    channel.close()  # idempotent
    channel.send(make_email(message_id="<b@appwarden.test>"))
    channel.close()
    assert smtp_server.handler.connections == 2


def _authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data == (b"notifier", PASSWORD.encode())
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


def test_smtp_logs_in_when_a_username_is_set(smtp_server_factory):
    server = smtp_server_factory(authenticator=_authenticator, auth_require_tls=False)
    with SmtpChannel(server.settings(username="notifier", password=PASSWORD)) as channel:
        channel.send(make_email())
    [received] = server.handler.received
    assert received.authenticated
    assert received.login == b"notifier"


def test_smtp_wrong_password_is_permanent_and_never_echoed(smtp_server_factory):
    server = smtp_server_factory(authenticator=_authenticator, auth_require_tls=False)
    settings = server.settings(username="notifier", password="wrong-" + PASSWORD)
    with SmtpChannel(settings) as channel:
        error = send_expecting_error(channel, make_email())
    assert error.permanent
    assert "535" in str(error)
    assert error.__cause__ is None
    for text in (str(error), repr(error), repr(settings), repr(channel)):
        assert PASSWORD not in text
    assert server.handler.received == []


@pytest.mark.parametrize(
    ("handler", "permanent"),
    [
        pytest.param(
            RecordingHandler(rcpt_replies={"ann@example.org": "550 5.1.1 No such user"}),
            True,
            id="rcpt-550",
        ),
        pytest.param(
            RecordingHandler(rcpt_replies={"ann@example.org": "451 4.3.0 Try again later"}),
            False,
            id="rcpt-451",
        ),
        pytest.param(
            RecordingHandler(mail_reply="553 5.7.1 Sender not allowed"), True, id="mail-553"
        ),
        pytest.param(RecordingHandler(mail_reply="452 4.3.1 Queue full"), False, id="mail-452"),
        pytest.param(
            RecordingHandler(data_reply="554 5.6.0 Rejected content"), True, id="data-554"
        ),
        pytest.param(RecordingHandler(data_reply="451 4.7.1 Greylisted"), False, id="data-451"),
        pytest.param(RecordingHandler(mail_reply="421 4.3.2 Shutting down"), False, id="mail-421"),
    ],
)
def test_smtp_replies_map_to_permanent_or_temporary(smtp_server_factory, handler, permanent):
    server = smtp_server_factory(handler)
    with SmtpChannel(server.settings()) as channel:
        error = send_expecting_error(channel, make_email())
    assert error.permanent is permanent
    assert "<notice-1.abc@appwarden.test>" in str(error)


def test_smtp_connection_survives_a_refused_recipient(smtp_server_factory):
    server = smtp_server_factory(
        RecordingHandler(rcpt_replies={"gone@example.org": "550 5.1.1 No such user"})
    )
    with SmtpChannel(server.settings()) as channel:
        channel.send(make_email(message_id="<1@appwarden.test>"))
        assert send_expecting_error(channel, make_email(to="gone@example.org")).permanent
        channel.send(make_email(message_id="<2@appwarden.test>"))
    assert [r.rcpt_tos for r in server.handler.received] == [["ann@example.org"]] * 2
    assert server.handler.connections == 1


def test_smtp_server_down_is_temporary(closed_port):
    channel = SmtpChannel(SmtpSettings(port=closed_port, timeout=2.0, local_hostname="c.test"))
    error = send_expecting_error(channel, make_email())
    assert not error.permanent
    assert "ConnectionRefusedError" in str(error)
    channel.close()


def test_smtp_silent_server_times_out_as_temporary():
    with socket.socket() as listener:  # accepts (kernel backlog) but never greets
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        settings = SmtpSettings(
            port=listener.getsockname()[1], timeout=0.3, local_hostname="c.test"
        )
        started = time.monotonic()
        error = send_expecting_error(SmtpChannel(settings), make_email())
    assert not error.permanent
    assert "timed out" in str(error)
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    "to", ["", "ann@example.org, bob@example.org", "not-an-address"], ids=["none", "two", "bad"]
)
def test_smtp_bad_recipient_is_permanent_without_contacting_the_server(smtp_server, to):
    message = make_email().message
    del message["To"]
    if to:
        message["To"] = to
    with SmtpChannel(smtp_server.settings()) as channel:
        assert send_expecting_error(channel, OutgoingEmail(message)).permanent
    assert smtp_server.handler.protocols == []


def test_smtp_refuses_a_webhook_permanently(smtp_server):
    with SmtpChannel(smtp_server.settings()) as channel:
        error = send_expecting_error(channel, OutgoingWebhook("http://x.test/", b"{}", "e1"))
    assert error.permanent


def test_smtp_settings_validate_and_hide_the_password():
    assert PASSWORD not in repr(SmtpSettings(username="u", password=PASSWORD))
    with pytest.raises(ValueError, match="not both"):
        SmtpSettings(ssl=True, starttls=True)
    with pytest.raises(ValueError, match="without a username"):
        SmtpSettings(password=PASSWORD)
    with pytest.raises(ValueError, match="port"):
        SmtpSettings(port=0)


def test_outgoing_email_needs_a_message_id():
    message = make_email().message
    del message["Message-ID"]
    with pytest.raises(ValueError, match="Message-ID"):
        OutgoingEmail(message)
    item = make_email(to='"Example, Ann" <ann@example.org>')
    assert item.recipient == "ann@example.org"
    assert item.message_id == "<notice-1.abc@appwarden.test>"


# --- TLS (a throwaway certificate made with `cryptography`, a required dependency) -------------


@pytest.fixture
def tls_files(tmp_path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_smtp_over_tls_verifies_the_certificate_and_logs_in(smtp_server_factory, tls_files, mode):
    cert_path, key_path = tls_files
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_path, key_path)
    client_context = ssl.create_default_context(cafile=str(cert_path))
    if mode == "starttls":
        server = smtp_server_factory(
            tls_context=server_context, require_starttls=True, authenticator=_authenticator
        )
    else:
        # aiosmtpd does not see implicit TLS as TLS, so it must be told AUTH may go ahead.
        server = smtp_server_factory(
            ssl_context=server_context, authenticator=_authenticator, auth_require_tls=False
        )
    settings = server.settings(
        starttls=mode == "starttls", ssl=mode == "ssl", username="notifier", password=PASSWORD
    )
    with SmtpChannel(settings, ssl_context=client_context) as channel:
        channel.send(make_email(message_id="<tls-1@appwarden.test>"))
        channel.send(make_email(message_id="<tls-2@appwarden.test>"))
    received = server.handler.received
    assert [r.message["Message-ID"] for r in received] == [
        "<tls-1@appwarden.test>",
        "<tls-2@appwarden.test>",
    ]
    assert all(r.authenticated for r in received)
    assert server.handler.connections == 1
    if mode == "starttls":
        assert all(r.tls for r in received)

    # The default context does not trust the self-signed certificate: refused, and temporary.
    with SmtpChannel(settings) as untrusting:
        error = send_expecting_error(untrusting, make_email())
    assert not error.permanent
    assert len(server.handler.received) == 2


# --- webhooks --------------------------------------------------------------------------------


@dataclass
class Recorded:
    headers: dict[str, str]
    body: bytes
    verified: bool


class WebhookReceiver(http.server.ThreadingHTTPServer):
    """Records each POST, verifies its signature, answers the next scripted status (else 200)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)
        self.requests: list[Recorded] = []
        self.statuses: list[int] = []
        self.delay = 0.0
        self.now: Callable[[], float] = time.time

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/appwarden?token=url-secret"


class _ReceiverHandler(http.server.BaseHTTPRequestHandler):
    server: WebhookReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = dict(self.headers.items())
        verified = verify_webhook(SECRET, headers, body, now=self.server.now())
        self.server.requests.append(Recorded(headers, body, verified))
        time.sleep(self.server.delay)
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def webhook_channel() -> Iterator[WebhookChannel]:
    with WebhookChannel(SECRET, timeout=5.0) as channel:
        yield channel


def make_webhook(url: str, event_id: str = "evt-42") -> OutgoingWebhook:
    body = json.dumps({"event_id": event_id, "kind": "policy.released"}).encode()
    return OutgoingWebhook(url=url, body=body, event_id=event_id)


def test_webhook_posts_signed_json(receiver):
    clock = lambda: 1_700_000_000.75  # noqa: E731
    receiver.now = clock
    item = make_webhook(receiver.url)
    with WebhookChannel(SECRET, clock=clock) as channel:
        channel.send(item)

    [request] = receiver.requests
    assert request.verified
    assert request.body == item.body
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["content-type"] == "application/json"
    assert headers["x-appwarden-event-id"] == "evt-42"
    assert headers["x-appwarden-timestamp"] == "1700000000"
    expected = hmac.new(SECRET, b"1700000000." + item.body, hashlib.sha256).hexdigest()
    assert headers["x-appwarden-signature"] == f"v1={expected}"


@pytest.mark.parametrize(
    ("status", "permanent"),
    [
        (500, False),
        (503, False),
        (429, False),
        (408, False),
        (400, True),
        (404, True),
        (410, True),
        (302, True),
    ],
)
def test_webhook_failures_map_to_permanent_or_temporary(
    receiver, webhook_channel, status, permanent
):
    receiver.statuses = [status]
    error = send_expecting_error(webhook_channel, make_webhook(receiver.url))
    assert error.permanent is permanent
    assert str(status) in str(error)
    assert "url-secret" not in str(error)
    assert "/hooks" not in str(error)
    assert len(receiver.requests) == 1


def test_webhook_retries_carry_the_same_event_id(receiver, webhook_channel):
    receiver.statuses = [500, 429]
    item = make_webhook(receiver.url, event_id="evt-retry")
    for _ in range(2):
        assert not send_expecting_error(webhook_channel, item).permanent
    webhook_channel.send(item)
    assert [r.headers["X-Appwarden-Event-Id"] for r in receiver.requests] == ["evt-retry"] * 3
    assert all(r.verified for r in receiver.requests)


def test_webhook_network_failures_are_temporary(receiver, closed_port):
    with WebhookChannel(SECRET, timeout=2.0) as channel:
        error = send_expecting_error(channel, make_webhook(f"http://127.0.0.1:{closed_port}/x"))
    assert not error.permanent

    receiver.delay = 1.0
    with WebhookChannel(SECRET, timeout=0.2) as channel:
        error = send_expecting_error(channel, make_webhook(receiver.url))
    assert not error.permanent
    assert "timed out" in str(error)


@pytest.mark.parametrize("url", ["ftp://example.org/hook", "not a url", "file:///etc/passwd"])
def test_webhook_bad_url_is_permanent(webhook_channel, url):
    assert send_expecting_error(webhook_channel, make_webhook(url)).permanent


def test_webhook_channel_refuses_email_and_hides_its_secret(webhook_channel):
    assert send_expecting_error(webhook_channel, make_email()).permanent
    assert SECRET.decode() not in repr(webhook_channel)
    with pytest.raises(ValueError, match="secret"):
        WebhookChannel(b"")
    with pytest.raises(ValueError, match="event_id"):
        OutgoingWebhook("http://x.test/", b"{}", "bad\r\nX-Injected: 1")


def test_webhook_uses_an_injected_client(receiver):
    import httpx

    with httpx.Client() as client:
        channel = WebhookChannel(SECRET, client=client)
        channel.send(make_webhook(receiver.url))
        channel.close()  # leaves a client it does not own open
        channel.send(make_webhook(receiver.url, event_id="evt-43"))
    assert [r.verified for r in receiver.requests] == [True, True]


def _signed(body: bytes, timestamp: int, secret: bytes = SECRET) -> dict[str, str]:
    return {
        "X-Appwarden-Timestamp": str(timestamp),
        "X-Appwarden-Signature": sign_webhook(secret, timestamp, body),
        "X-Appwarden-Event-Id": "evt-1",
    }


def test_verify_webhook_accepts_a_good_signature_with_any_header_case():
    body, ts = b'{"a": 1}', 1_700_000_000
    assert verify_webhook(SECRET, _signed(body, ts), body, now=ts + 10)
    lowered = {k.lower(): v for k, v in _signed(body, ts).items()}
    assert verify_webhook(SECRET, lowered, body, now=ts)
    assert verify_webhook(SECRET, _signed(body, ts), body, now=ts + 300)
    assert verify_webhook(SECRET, _signed(body, ts), body, now=ts - 300)


@pytest.mark.parametrize(
    "case",
    [
        "tampered-body",
        "wrong-secret",
        "stale",
        "future",
        "no-signature",
        "no-timestamp",
        "bad-timestamp",
        "other-timestamp",
        "garbage-signature",
    ],
)
def test_verify_webhook_rejects(case):
    body, ts = b'{"a": 1}', 1_700_000_000
    headers, now, checked_body = _signed(body, ts), float(ts), body
    if case == "tampered-body":
        checked_body = b'{"a": 2}'
    elif case == "wrong-secret":
        headers = _signed(body, ts, secret=b"another-secret")
    elif case == "stale":
        now = ts + 301
    elif case == "future":
        now = ts - 301
    elif case == "no-signature":
        del headers["X-Appwarden-Signature"]
    elif case == "no-timestamp":
        del headers["X-Appwarden-Timestamp"]
    elif case == "bad-timestamp":
        headers["X-Appwarden-Timestamp"] = "-1700000000"
    elif case == "other-timestamp":
        headers["X-Appwarden-Timestamp"] = str(ts + 1)
    elif case == "garbage-signature":
        headers["X-Appwarden-Signature"] = "v1=ž" + "0" * 63
    assert not verify_webhook(SECRET, headers, checked_body, now=now)


# --- maildir ---------------------------------------------------------------------------------


def test_maildir_writes_a_readable_message_into_new(tmp_path):
    root = tmp_path / "mail"
    channel = MaildirChannel(root)
    channel.send(make_email())

    files = list((root / "new").iterdir())
    assert len(files) == 1
    assert ":" not in files[0].name
    assert list((root / "tmp").iterdir()) == []
    box = mailbox.Maildir(root, factory=None, create=False)
    [message] = box.values()
    assert message["Message-ID"] == "<notice-1.abc@appwarden.test>"
    assert message["X-Appwarden-Kind"] == "announce"


def test_maildir_redelivery_replaces_rather_than_duplicates(tmp_path):
    channel = MaildirChannel(tmp_path)
    channel.send(make_email(body="first"))
    channel.send(make_email(body="second"))
    box = mailbox.Maildir(tmp_path, factory=None, create=False)
    [message] = box.values()
    assert "second" in message.get_payload()

    # A reader moved it to cur/ and marked it seen: a redelivery still does not duplicate.
    [key] = box.keys()
    seen = box.get_message(key)
    seen.set_subdir("cur")
    seen.add_flag("S")
    box[key] = seen
    channel.send(make_email(body="third"))
    assert list((tmp_path / "new").iterdir()) == []
    box = mailbox.Maildir(tmp_path, factory=None, create=False)
    assert len(box) == 1

    channel.send(make_email(message_id="<notice-2@appwarden.test>"))
    assert len(mailbox.Maildir(tmp_path, factory=None, create=False)) == 2


def test_maildir_keeps_ids_that_sanitise_alike_apart(tmp_path):
    channel = MaildirChannel(tmp_path)
    channel.send(make_email(message_id="<a/b@x>"))
    channel.send(make_email(message_id="<a:b@x>"))
    channel.send(make_email(message_id="<.hidden@x>"))
    names = sorted(p.name for p in (tmp_path / "new").iterdir())
    assert len(names) == 3
    assert not any(n.startswith(".") for n in names)
    assert len(mailbox.Maildir(tmp_path, factory=None, create=False)) == 3


def test_maildir_writes_webhooks_as_json(tmp_path):
    channel = MaildirChannel(tmp_path)
    item = make_webhook("https://hooks.example.org/T000/secret-path?token=x", event_id="evt-7")
    channel.send(item)
    channel.send(item)
    [path] = (tmp_path / "webhooks").iterdir()
    record = json.loads(path.read_text())
    assert record["event_id"] == "evt-7"
    assert record["body"] == {"event_id": "evt-7", "kind": "policy.released"}
    assert record["destination"] == "https://hooks.example.org"
    assert len(mailbox.Maildir(tmp_path, factory=None, create=False)) == 0


def test_maildir_write_failure_is_temporary(tmp_path):
    channel = MaildirChannel(tmp_path / "box")
    (tmp_path / "box" / "new").rmdir()
    (tmp_path / "box" / "new").write_text("not a directory")
    assert not send_expecting_error(channel, make_email()).permanent
    assert list((tmp_path / "box" / "tmp").iterdir()) == []


# --- retry schedule and rate limit -----------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "delay"),
    [
        (1, 30),
        (2, 60),
        (3, 120),
        (4, 240),
        (5, 480),
        (6, 960),
        (7, 1920),
        (8, 3600),
        (9, 3600),
        (10_000, 3600),
    ],
)
def test_backoff_delay_doubles_up_to_the_cap(attempt, delay):
    assert backoff_delay(attempt) == delay


def test_backoff_delay_options_and_bounds():
    assert backoff_delay(3, base=1.0, cap=10.0) == 4.0
    assert backoff_delay(5, base=1.0, cap=10.0) == 10.0
    with pytest.raises(ValueError, match="attempt"):
        backoff_delay(0)


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_rate_limiter_sleeps_until_a_token_is_free():
    fake = FakeTime()
    limiter = RateLimiter(3, clock=fake.clock, sleep=fake.sleep)
    for _ in range(3):
        limiter.acquire()
    assert fake.sleeps == []
    limiter.acquire()
    assert fake.sleeps == [pytest.approx(20.0)]

    fake.now += 10  # half a token back: the next one waits the other 10 s
    limiter.acquire()
    assert fake.sleeps[1:] == [pytest.approx(10.0)]

    fake.now += 3600  # a long pause refills the bucket, but never beyond max_per_minute
    fake.sleeps.clear()
    for _ in range(3):
        limiter.acquire()
    assert fake.sleeps == []
    limiter.acquire()
    assert fake.sleeps == [pytest.approx(20.0)]


def test_rate_limiter_needs_a_positive_limit():
    with pytest.raises(ValueError, match="max_per_minute"):
        RateLimiter(0)
