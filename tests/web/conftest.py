"""Fixtures of the portal's page tests: the server's clock file, an hour after the reference
memo's release, and an application on the reference organisation that reads it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.portal_harness import MORNING, TimeFile, https_client, portal_settings

from appwarden.web.app import create_app


@pytest.fixture
def clock(tmp_path: Path) -> TimeFile:
    time = TimeFile(tmp_path / "now")
    time.set(MORNING)
    return time


@pytest.fixture
def app(
    store: Any, demo: None, clock: TimeFile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """The portal on the reference organisation, mail to a maildir (a module that needs another
    organisation defines its own `app`)."""
    monkeypatch.setenv("APPWARDEN_MAILDIR", str(tmp_path / "mail"))
    app = create_app(portal_settings(store, clock, tmp_path))
    with https_client(app):
        yield app
