"""appwarden needs SQLite 3.35 (`RETURNING`, `MATERIALIZED`): an older library is refused when
the engine is made, by name, before anything is written, rather than failing on the first import
with a bare syntax error."""

from __future__ import annotations

import sqlite3

import pytest

from appwarden.db.engine import make_engine
from appwarden.errors import AppwardenError


def test_an_sqlite_library_too_old_is_refused_by_name(monkeypatch, tmp_path):
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.34.1")
    with pytest.raises(
        AppwardenError, match=r"needs SQLite 3\.35\.0 or newer.*uses SQLite 3\.34\.1"
    ):
        make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    assert not (tmp_path / "old.db").exists()


def test_this_library_is_new_enough_for_the_store(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'new.db'}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT 1").scalar() == 1
    engine.dispose()
