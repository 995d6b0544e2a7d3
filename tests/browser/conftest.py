"""Browser tests: Playwright driving Debian's Chromium (/usr/bin/chromium, never a downloaded
browser) against a real server on a port, walked through time with APPWARDEN_CLOCK=file:… and
`appwarden worker --once`, mail read from the test SMTP server.

Every portal page a test visits goes through `Pages.check`: axe-core (axe-playwright-python)
must report no serious or critical violation, the page must fit a 390×844 phone with no
horizontal scroll, and a screenshot goes to the git-ignored `artifacts/` folder. Without Chromium
or Playwright these tests skip, and fail under APPWARDEN_REQUIRE_SERVICES=1 (CI).
"""

from __future__ import annotations

import re
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tests.portal_harness import RELEASE, TimeFile, open_session
from tests.proxy_harness import free_port, serve_app, unavailable

from appwarden.cli.main import run
from appwarden.db.engine import make_engine
from appwarden.settings import Settings
from appwarden.timeutil import iso
from appwarden.vocabulary import SignInMethod
from appwarden.web.app import create_app

CHROMIUM = Path("/usr/bin/chromium")
#: Without the background-networking flags Chromium keeps trying to reach hosts this network
#: refuses (the machines' reference on running services).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 390, "height": 844}
SESSION_COOKIE = "__Host-appwarden-session"
#: A browser test that has not finished after this long fails (rather than hanging the run:
#: a page.evaluate, for one, has no timeout of its own).
TEST_SECONDS = 120
#: Where the draft portal's clock starts: the first inventory is two days old.
DRAFT_START = RELEASE - timedelta(days=10)
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


@pytest.fixture(autouse=True)
def _deadline() -> Iterator[None]:
    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"the browser test took over {TEST_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One browser per test module. Not per session: Playwright's sync API keeps an asyncio loop
    running in the main thread while it is open, and every later `asyncio.run` of the suite (the
    gate's store-path tests, the flood test) would then fail."""
    if not CHROMIUM.exists():
        unavailable("Chromium", f"{CHROMIUM} is missing (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        unavailable("Playwright", f"playwright is not installed: {exc}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Portal:
    """A running appwarden on a port, on the reference organisation, and the tools to walk it:
    its clock, its command line and its worker."""

    url: str
    db: str
    clock: TimeFile
    smtp: Any

    def cli(self, *args: str) -> int:
        return run(["--db", self.db, *args])

    def worker(self) -> None:
        assert self.cli("worker", "--once", "--at", iso(self.clock.now())) == 0

    def mail_to(self, address: str, kind: str) -> Any:
        """The newest mail of this kind (X-Appwarden-Kind) received for `address`."""
        found = [m for m in self.smtp.by_header("To", address) if m["X-Appwarden-Kind"] == kind]
        assert found, f"no {kind} mail for {address}"
        return found[-1]

    def signed_in(
        self, pages: Pages, email: str, *, method: SignInMethod = SignInMethod.EMAIL, **options: Any
    ) -> Any:
        """A phone-sized page whose browser holds a session of `email` opened with `method` (in
        the store, as a sign-in would; the sign-ins themselves are walked in
        test_portal_walk.py). A password session carries the person's roles."""
        engine = make_engine(self.db)
        try:
            store = SimpleNamespace(engine=engine)
            secret = open_session(store, email, self.clock.now(), method=method)
        finally:
            engine.dispose()
        page = pages.new_page(**options)
        cookie = {"name": SESSION_COOKIE, "value": secret, "domain": "127.0.0.1", "path": "/"}
        page.context.add_cookies([{**cookie, "secure": True, "httpOnly": True, "sameSite": "Lax"}])
        return page

    def link_in(self, message: Any, pattern: str) -> str:
        text = message.get_body(preferencelist=("plain",)).get_content()
        found = re.search(re.escape(self.url) + pattern, text)
        assert found, f"no link like {pattern} in the mail"
        return found.group(0)


def _serve(
    tmp_path: Path, template: Path, smtp: Any, monkeypatch: Any, start: datetime, *demo: str
) -> Iterator[Portal]:
    """A server on a copy of the migrated template, with `appwarden demo DEMO…` loaded, its
    clock file at `start`."""
    db_path = tmp_path / "portal.db"
    shutil.copy(template, db_path)
    db = f"sqlite:///{db_path}"
    port = free_port()
    clock = TimeFile(tmp_path / "now")
    clock.set(start)
    for name, value in {
        "APPWARDEN_ENV": "test",
        "APPWARDEN_CLOCK": clock.spec,
        "APPWARDEN_DATABASE_URL": db,
        "APPWARDEN_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "APPWARDEN_MAILDIR": str(tmp_path / "mail"),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("APPWARDEN_ACTOR", raising=False)
    assert run(["--db", db, "demo", *demo]) == 0
    with serve_app(create_app(Settings()), port=port):
        yield Portal(f"http://127.0.0.1:{port}", db, clock, smtp)


@pytest.fixture
def portal(
    sqlite_template: Path, tmp_path: Path, smtp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Portal]:
    """The reference memo released at RELEASE (a real server, no embedded worker: tests run
    `worker --once` when they want the side effects)."""
    base = ("--base-time", iso(RELEASE) or "")
    yield from _serve(tmp_path, sqlite_template, smtp_server, monkeypatch, RELEASE, *base)


@pytest.fixture
def draft_portal(
    sqlite_template: Path, tmp_path: Path, smtp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Portal]:
    """The reference organisation with the memo still a draft (`demo --draft`), the clock at
    DRAFT_START: ten days before the memo's release, its inventory fresh."""
    base = ("--draft", "--base-time", iso(RELEASE) or "")
    yield from _serve(tmp_path, sqlite_template, smtp_server, monkeypatch, DRAFT_START, *base)


def axe_violations(page: Any, impacts: tuple[str, ...] = ("serious", "critical")) -> list[str]:
    """axe-core's violations of `impacts` on the page as it is now, one line each (rule, impact,
    help, where): axe-core is injected from axe-playwright-python's bundled axe.min.js (pinned
    in constraints.txt), so nothing is fetched from the network."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
        for v in results.response["violations"]
        if v["impact"] in impacts
    ]


@dataclass
class Pages:
    """A browser context at phone size; `check` audits the page it is on."""

    browser: Any
    name: str
    checked: list[str] = field(default_factory=list)

    def new_page(self, **options: Any) -> Any:
        context = self.browser.new_context(viewport=PHONE, **options)
        page = context.new_page()
        page.set_default_timeout(10_000)
        return page

    def check(self, page: Any, label: str) -> None:
        """axe-core: no serious or critical violation; no horizontal scroll at 390×844; a
        screenshot in artifacts/."""
        serious = axe_violations(page)
        assert serious == [], f"{label}: {serious}"
        widths = page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1], f"{label}: scrolls sideways ({widths[0]} > {widths[1]})"
        assert page.viewport_size == PHONE
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{self.name}-{label}.png"), full_page=True)
        self.checked.append(label)


@pytest.fixture
def pages(chromium: Any, request: pytest.FixtureRequest) -> Iterator[Pages]:
    made = Pages(chromium, request.node.name.removeprefix("test_")[:40])
    yield made
    for context in chromium.contexts:
        context.close()
