"""A write on the unit of work's own connection that runs while the caller computes.

The bulk path's largest writes, a page's observation rows (a fresh load's `COPY` of new rows,
a re-import's update of every row seen again), keep the PostgreSQL server busy for most of a
second while this process would wait; the caller needs none of those rows from the store
meanwhile (it has them in memory, and goes on applying the batch's reports and evaluating its
devices). Run in a thread, the writes and the caller's work overlap (docs/architecture.md,
"Bulk ingest"; `devices.bulk.observations_written`).

Why this is safe on one connection: psycopg holds the connection's lock for each statement and
for a whole `COPY` block, and every statement, commit or rollback takes that lock. A statement
the caller sends meanwhile waits for the one running: it can cost the overlap, never the order
of the protocol. It may run between two of the write's statements, so the caller must send none
that reads what the write changes. The thread uses the driver's connection only, never the ORM
session, which stays the caller's alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Write = Callable[[], None]


@contextmanager
def in_background(write: Write) -> Iterator[None]:
    """Run `write` in a thread while the block runs; when the block ends, wait for it and raise
    its error, if any (over the block's own: the write's failure is the cause of whatever the
    block met afterwards in an aborted transaction)."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            write()
        except BaseException as exc:  # handed to the caller's thread, raised there
            failed.append(exc)

    thread = threading.Thread(target=run, name="appwarden-background-write", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()
        if failed:
            raise failed[0]
