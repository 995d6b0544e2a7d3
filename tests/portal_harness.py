"""What the portal and sign-in tests share (test helper): a clock file the server reads at every
call, settings for a server on the reference organisation, an HTTPS test client (session cookies
are `Secure`), sessions opened directly in the store, and the values the pages post back.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from appwarden.db.uow import unit_of_work
from appwarden.devices.models import Device
from appwarden.identity.service import get_person
from appwarden.settings import Settings
from appwarden.timeutil import iso, parse_instant
from appwarden.usecases import sign_in
from appwarden.usecases.sign_in import SessionRules
from appwarden.vocabulary import SignInMethod
from appwarden.web import pages

#: The reference memo's release (the `demo` fixture of tests/conftest.py) and an hour later.
RELEASE = parse_instant("2020-07-10T09:00:00-07:00")
MORNING = RELEASE + timedelta(hours=1)
SESSION_COOKIE = "__Host-appwarden-session"
FLOW_COOKIE = "__Host-appwarden-sign-in"


@dataclass
class TimeFile:
    """APPWARDEN_CLOCK=file:PATH: the server reads the instant from here at every call."""

    path: Path

    def set(self, when: datetime) -> datetime:
        self.path.write_text(iso(when) or "")
        return when

    def now(self) -> datetime:
        return parse_instant(self.path.read_text().strip())

    def advance(self, delta: timedelta) -> datetime:
        return self.set(self.now() + delta)

    @property
    def spec(self) -> str:
        return f"file:{self.path}"


def portal_settings(store: Any, clock: TimeFile, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": store.url,
        "env": "test",
        "clock": clock.spec,
        "maildir": tmp_path / "mail",
        "public_url": "https://appwarden.example.com",
    }
    values.update(overrides)
    return Settings(**values)


def https_client(app: Any, client: tuple[str, int] = ("192.0.2.10", 50000)) -> TestClient:
    """A browser on https://testserver (browsers send `Secure` cookies only over HTTPS),
    connecting from `client` (the socket peer the server sees)."""
    return TestClient(app, base_url="https://testserver", follow_redirects=False, client=client)


def open_session(
    store: Any,
    email: str,
    at: datetime,
    *,
    method: SignInMethod = SignInMethod.EMAIL,
    settings: Settings | None = None,
) -> str:
    """Sign `email` in directly in the store (as a sign-in route would); the cookie secret."""
    rules = SessionRules.from_settings(settings or Settings())
    with unit_of_work(store.engine, now=at) as uow:
        person = get_person(uow, email)
        return sign_in.open_session(uow, person.id, method, rules)


def signed_in(client: TestClient, secret: str) -> TestClient:
    client.cookies.set(SESSION_COOKIE, secret)
    return client


def person_client(app: Any, store: Any, email: str, at: datetime = MORNING) -> TestClient:
    """An HTTPS client whose browser holds a fresh session of `email`, opened at `at`."""
    return signed_in(https_client(app), open_session(store, email, at))


def device_named(store: Any, name: str) -> int:
    """The store id of the reference organisation's device called `name`."""
    with unit_of_work(store.engine, now=MORNING, write=False) as uow:
        found: int = uow.session.scalars(select(Device.id).where(Device.name == name)).one()
        return found


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    found = _CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def set_cookies(response: Any) -> dict[str, str]:
    """Each Set-Cookie header of a response by cookie name (the raw header, attributes and all)."""
    found = {}
    for header in response.headers.get_list("set-cookie"):
        found[header.split("=", 1)[0]] = header
    return found


_LINK = re.compile(r"https://appwarden\.example\.com(/auth/link/[A-Za-z0-9_-]+)")


def link_in(message: Any) -> str:
    """The sign-in link's path in a received mail (its text part)."""
    found = _LINK.search(message.get_body(preferencelist=("plain",)).get_content())
    assert found, (
        f"no sign-in link in the mail: {message.get_body(preferencelist=('plain',)).get_content()}"
    )
    return found.group(1)


def ask_for_link(client: TestClient, email: str, *, start: str = "/auth/sign-in") -> Any:
    """Open the sign-in page (or a portal page that leads there) and ask for a link."""
    page = client.get(start)
    if page.status_code == 303:
        page = client.get(page.headers["location"])
    return client.post("/auth/email", data={"email": email, "csrf": csrf_of(page.text)})


def follow_link(client: TestClient, path: str) -> Any:
    """Open a mailed link and press "Sign in"; the response to the button's POST."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    token = path.rsplit("/", 1)[1]
    return client.post("/auth/link", data={"token": token, "csrf": csrf_of(page.text)})


@contextmanager
def statements_while_rendering(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, int]]:
    """Count the SQL statements this thread sends while `pages.render` runs ("during") and
    otherwise ("outside"), and the renders: every page's queries must run before its template."""
    engine = app.state.runtime.engine
    rendering = threading.local()
    counts = {"during": 0, "outside": 0, "renders": 0}

    def count(*_args: Any) -> None:
        key = "during" if getattr(rendering, "on", False) else "outside"
        counts[key] += 1

    real = pages.render

    def watched(template: str, values: Any) -> str:
        rendering.on = True
        counts["renders"] += 1
        try:
            return real(template, values)
        finally:
            rendering.on = False

    monkeypatch.setattr(pages, "render", watched)
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield counts
    finally:
        event.remove(engine, "before_cursor_execute", count)
