"""The gate when PostgreSQL goes away mid-run (`on_store_failure`).

The server reaches PostgreSQL through a TCP forwarder the test can cut, which is what an outage
looks like from the application (refused connections, dropped sessions), without stopping the
server other tests use.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import httpx
import pytest
from sqlalchemy.engine import make_url
from tests.conftest import _empty_postgres
from tests.proxy_harness import free_port, serve_app

from appwarden.cli.main import run
from appwarden.db.engine import make_engine
from appwarden.settings import Settings
from appwarden.web.app import create_app

KEY = "outage-test-proxy-key-0123456789abcdef"
EAS = "/Microsoft-Server-ActiveSync"
ALICE = "6F24CAD599A5BF1A690246B8C68FAE8D"  # denied after the deadline
BOB = "B0B0A1D2E3F4A5B6C7D8E9F0A1B2C3D4"  # compliant
AT = "2020-07-11T12:00:00-07:00"


class Forwarder:
    """A TCP forwarder on 127.0.0.1 that can be cut (every connection dropped, new ones refused)
    and restored on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        if self._listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would not.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()


@pytest.fixture
def organisation(postgres_database: str, capsys) -> str:
    engine = make_engine(postgres_database)
    _empty_postgres(engine)
    engine.dispose()
    assert run(["--db", postgres_database, "demo", "--base-time", "2020-07-10T09:00:00-07:00"]) == 0
    # The worker keeps the materialised decisions current: the deadline has passed.
    assert run(["--db", postgres_database, "worker", "--once", "--at", AT]) == 0
    capsys.readouterr()
    return postgres_database


def ask(base: str, device: str, user: str) -> httpx.Response:
    return httpx.get(
        f"{base}/gate/forward",
        headers={
            "X-Appwarden-Proxy-Key": KEY,
            "X-Original-URI": f"{EAS}?Cmd=Sync&User={user}&DeviceId={device}&DeviceType=SmartPhone",
        },
        timeout=15,
    )


@pytest.mark.parametrize(
    ("mode", "alice", "bob", "source"),
    [
        ("last_known", 403, 200, "last_known"),
        ("allow", 200, 200, "store_unavailable"),
        ("deny", 403, 403, "store_unavailable"),
    ],
)
def test_on_store_failure(organisation, tmp_path, mode, alice, bob, source):
    url = make_url(organisation)
    forwarder = Forwarder((url.host or "127.0.0.1", url.port or 5432))
    forwarder.start()
    through = url.set(host="127.0.0.1", port=forwarder.port).render_as_string(hide_password=False)
    settings = Settings(
        database_url=through,
        env="test",
        clock=f"fixed:{AT}",
        gate_proxy_key=KEY,
        on_store_failure=mode,
        gate_index_seconds=0.2,
        maildir=tmp_path / "mail",
    )
    with serve_app(create_app(settings)) as port:
        base = f"http://127.0.0.1:{port}"
        assert ask(base, ALICE, "alice").status_code == 403
        assert ask(base, BOB, "bob").status_code == 200
        assert "x-appwarden-source" not in ask(base, BOB, "bob").headers

        forwarder.cut()
        answers = {who: ask(base, device, who) for who, device in (("alice", ALICE), ("bob", BOB))}
        assert answers["alice"].status_code == alice
        assert answers["bob"].status_code == bob
        assert answers["bob"].headers["x-appwarden-source"] == source
        if mode == "last_known":
            assert ask(base, ALICE, "bob").status_code == 403  # still not bob's phone
            assert answers["alice"].json()["policies"] == ["tiktok-mobile-email"]

        forwarder.start()  # the store is back
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            response = ask(base, BOB, "bob")
            if response.status_code == 200 and "x-appwarden-source" not in response.headers:
                break
            time.sleep(0.2)
        assert "x-appwarden-source" not in ask(base, BOB, "bob").headers
        assert ask(base, ALICE, "alice").status_code == 403
    forwarder.cut()
