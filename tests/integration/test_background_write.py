"""A write in the background on the unit of work's own PostgreSQL connection (db/background.py):
a statement the caller sends while it runs waits for it rather than interleaving with it, and
the write's error reaches the caller, over whatever the aborted transaction made the block meet.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy import text

from appwarden.db.background import in_background
from appwarden.db.engine import make_engine
from appwarden.db.uow import UnitOfWork, unit_of_work

AT = datetime(2020, 7, 11, 18, tzinfo=UTC)


def _copy(uow: UnitOfWork, table: str, started: threading.Event) -> Callable[[], None]:
    """A `COPY` of two rows into `table` that stays open a while after its first row."""
    dbapi = uow.session.connection().connection.driver_connection
    assert dbapi is not None

    def write() -> None:
        with dbapi.cursor() as cursor, cursor.copy(f"COPY {table} (n) FROM STDIN") as copy:
            copy.write_row((1,))
            started.set()
            threading.Event().wait(0.3)  # the caller's statement is sent meanwhile
            copy.write_row((2,))

    return write


def test_a_statement_sent_during_the_write_waits_for_it(postgres_database: str):
    engine = make_engine(postgres_database)
    try:
        with unit_of_work(engine, now=AT) as uow:
            uow.session.execute(text("CREATE TEMPORARY TABLE probe (n integer) ON COMMIT DROP"))
            started = threading.Event()
            with in_background(_copy(uow, "probe", started)):
                assert started.wait(5)
                counted = uow.session.scalar(text("SELECT count(*) FROM probe"))
            assert counted == 2
    finally:
        engine.dispose()


def test_the_writes_error_reaches_the_caller_over_the_blocks(postgres_database: str):
    engine = make_engine(postgres_database)

    def copy_into_a_missing_table() -> None:
        with (
            unit_of_work(engine, now=AT) as uow,
            in_background(_copy(uow, "no_such_table", threading.Event())),
        ):
            uow.session.execute(text("SELECT 1"))  # fails in the transaction the write aborted

    try:
        with pytest.raises(psycopg.errors.UndefinedTable):
            copy_into_a_missing_table()
        with unit_of_work(engine, now=AT) as uow:  # the connection is usable again
            assert uow.session.scalar(text("SELECT 1")) == 1
    finally:
        engine.dispose()
