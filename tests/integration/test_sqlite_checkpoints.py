"""A server's commits leave the WAL checkpoint to a background thread (`db.engine.Checkpointer`),
so that no request waits for it; other processes keep SQLite's automatic checkpoint.

What a checkpoint does is visible in the database file itself: it copies the pages committed to
the write-ahead log into it. Until then the file stays as it was."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import text

from appwarden.db.engine import Checkpointer, make_engine

WRITTEN = 30 * 60 * 4000  # bytes of blobs _fill commits


def _fill(engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE IF NOT EXISTS filler (x BLOB)"))
    for _ in range(30):  # 30 commits of ~60 pages each: well past the 1,000-page default
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO filler VALUES (randomblob(4000))"), [{}] * 60)


def _autocheckpoint(engine) -> int:
    with engine.connect() as connection:
        return int(connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar())


def test_commits_do_not_checkpoint_and_the_thread_does(tmp_path):
    path = tmp_path / "server.db"
    engine = make_engine(f"sqlite:///{path}", background_checkpoints=True)
    assert _autocheckpoint(engine) == 0
    checkpointer = Checkpointer(engine, interval=0.05)
    try:
        _fill(engine)
        assert path.stat().st_size < WRITTEN / 10  # every page is still only in the log
        checkpointer.start()
        deadline = time.monotonic() + 10
        while path.stat().st_size < WRITTEN and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.stat().st_size >= WRITTEN  # the thread copied them
    finally:
        checkpointer.stop()
        engine.dispose()


def test_other_processes_keep_the_automatic_checkpoint(tmp_path):
    path = tmp_path / "cli.db"
    engine = make_engine(f"sqlite:///{path}")
    assert _autocheckpoint(engine) == 1000
    _fill(engine)
    assert path.stat().st_size >= WRITTEN / 2  # the commits copied what passed 1,000 pages
    assert Path(f"{path}-wal").exists()
    engine.dispose()
