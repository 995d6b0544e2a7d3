"""Filling the gate's in-memory copy (`access.index.DecisionIndex`) from the store.

Each load reads on a connection of its own, outside any unit of work: the copy is read far from
any request's transaction, by the thread that keeps it current (`web.live_index`)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import Connection, Engine

from appwarden.access.index import DecisionIndex


def _reading(engine: Engine) -> Connection:
    return engine.connect().execution_options(appwarden_write=False)


def load_all(engine: Engine, index: DecisionIndex) -> None:
    """Replace the whole copy with what the store holds now."""
    with _reading(engine) as connection:
        index.load_all(connection)


def load_changed(engine: Engine, index: DecisionIndex, since: datetime) -> None:
    """Reload the devices whose decisions were written after `since`, or that got an identifier
    or an owner the copy does not hold (`DecisionIndex.changed`)."""
    with _reading(engine) as connection:
        index.load_devices(connection, index.changed(connection, since))


def load_devices(engine: Engine, index: DecisionIndex, device_ids: Collection[int]) -> None:
    """Reload these devices (after this process committed decisions for them)."""
    with _reading(engine) as connection:
        index.load_devices(connection, device_ids)


def moved(engine: Engine, index: DecisionIndex) -> bool:
    """Whether identifiers or owners were written that no catch-up has read yet."""
    with _reading(engine) as connection:
        return index.moved(connection)
