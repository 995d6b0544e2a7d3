"""Planner statistics after large writes.

PostgreSQL plans every statement from the statistics `ANALYZE` gathers. Tables an import has just
filled have none, or statistics of when they were nearly empty, until autovacuum's next pass (a
minute later at best, never where autovacuum is off). Planned from those, the fleet evaluation
nests loops over thousands of rows: minutes instead of a second at 10,000 phones. So whoever
writes many rows refreshes the statistics of the tables it wrote, and the fleet evaluation
refreshes those that are missing or stale before it runs.

`ANALYZE` samples a bounded number of rows per table (300 × `default_statistics_target`), so it
costs well under a second per table whatever the fleet's size. It runs on a connection of its
own, committed at once: statistics gathered inside a read-only unit of work would be rolled back
with it, while the counters that say they are fresh would not. A table another session is
analysing (or altering) is skipped after a short lock wait rather than waited for.

SQLite's planner picks its indexes by rule, and appwarden's statements are measured fast on it
without `sqlite_stat1` (bench/: the fleet evaluation right after an import); `ANALYZE` there
would need the write lock, so on SQLite these functions do nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, bindparam, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

log = logging.getLogger("appwarden.db")

# A table counts as stale as autovacuum itself judges it (its defaults): more rows changed
# since the last ANALYZE than 50 plus a tenth of the rows it counted then. Never analysed counts
# as stale too (analysing an empty table costs next to nothing).
STALE_ROWS = 50
STALE_SHARE = 0.1
# How long an ANALYZE waits for a table another session holds (analysing it, say) before it
# leaves that table as it is.
LOCK_TIMEOUT = "2s"

# `reltuples` is what the last ANALYZE (or VACUUM) counted, -1 before the first; the counters of
# pg_stat_user_tables start at zero again in a copied database or after a crash, so a table
# never analysed is told by `reltuples` alone.
_STALE = text(
    """
    SELECT c.relname FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
    WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname IN :tables
      AND (c.reltuples < 0
           OR coalesce(s.n_mod_since_analyze, 0) > :rows + :share * c.reltuples)
    ORDER BY c.relname
    """
).bindparams(bindparam("tables", expanding=True))


def stale_tables(engine: Engine, tables: Iterable[str]) -> list[str]:
    """Of `tables`, those whose planner statistics are missing or stale (PostgreSQL; SQLite:
    none)."""
    names = sorted(set(tables))
    if engine.dialect.name != "postgresql" or not names:
        return []
    with engine.connect() as connection:
        rows = connection.execute(
            _STALE, {"tables": names, "rows": STALE_ROWS, "share": STALE_SHARE}
        )
        return [str(name) for name in rows.scalars()]


def refresh_statistics(
    engine: Engine, tables: Iterable[str], *, only_stale: bool = False
) -> list[str]:
    """ANALYZE `tables` (with `only_stale`, those `stale_tables` names) on PostgreSQL, each
    committed at once; returns the tables analysed. SQLite: nothing (see the module)."""
    if engine.dialect.name != "postgresql":
        return []
    names = stale_tables(engine, tables) if only_stale else sorted(set(tables))
    analysed: list[str] = []
    if not names:
        return analysed
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(f"SET lock_timeout = '{LOCK_TIMEOUT}'"))
        for name in names:
            quoted = connection.dialect.identifier_preparer.quote(name)
            try:
                connection.execute(text(f"ANALYZE {quoted}"))
            except DBAPIError as exc:  # a lock not granted in time: the next refresh does it
                log.warning("ANALYZE %s skipped: %s", name, str(exc.orig).strip())
                continue
            analysed.append(name)
        connection.execute(text("RESET lock_timeout"))
    return analysed


def publish_write_counts(session: Session) -> None:
    """Make this transaction's row counts visible in pg_stat_* as soon as it commits.

    PostgreSQL 15+ publishes a backend's counts at most once a second and, when it published
    less than a second before, holds them for up to 10 s; a staleness judgement made right
    after a quick import then sees nothing to analyse (`stale_tables`). Asking for the next
    flush (open to every role) makes the commit publish them. Nothing on SQLite, nor before 15,
    which has no such request (its statistics collector hears within half a second)."""
    bind = session.get_bind()
    version = bind.dialect.server_version_info or ()
    if bind.dialect.name == "postgresql" and version >= (15,):
        session.execute(text("SELECT pg_stat_force_next_flush()"))


# Settings for one set-based statement over the whole fleet (PostgreSQL), restored after it.
# JIT off: compiling the plan's hundreds of expressions cost 7.5 of 8.3 s at 2,000 phones
# without statistics, and a second of 1.3 with them, where the statement itself runs in a
# quarter of a second. work_mem: its per-device aggregates (identifier lists per device) spilled
# to disk at 2,000 phones with the default 4 MB; 64 MB measured a quarter to a third faster.
BULK_READ_SETTINGS: dict[str, str] = {"jit": "off", "work_mem": "64MB"}


@contextmanager
def bulk_read_settings(session: Session) -> Iterator[None]:
    """`BULK_READ_SETTINGS` for the statements of the block, local to the transaction and put
    back afterwards (one statement each way); nothing on SQLite."""
    if session.get_bind().dialect.name != "postgresql":
        yield
        return
    names = sorted(BULK_READ_SETTINGS)
    reads = ", ".join(f"current_setting('{name}')" for name in names)
    sets = ", ".join(f"set_config('{name}', :{name}, true)" for name in names)
    prior = session.execute(text(f"SELECT {reads}, {sets}"), BULK_READ_SETTINGS).one()
    yield
    session.execute(text(f"SELECT {sets}"), dict(zip(names, prior[: len(names)], strict=True)))
