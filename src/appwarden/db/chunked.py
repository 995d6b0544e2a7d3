"""Statements over a set of ids that may be a whole fleet's, a chunk at a time.

One statement cannot name every device of a large organisation: each value of an `IN (...)`
list is a parameter, and PostgreSQL's protocol stops at 65,535 of them (psycopg refuses to send
more). A memo's release names everyone in its audience, a retraction everyone it blocked, `status`
every device in scope. Whatever reads rows by such a set goes through here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import QueryableAttribute, Session

T = TypeVar("T")

# Values per `IN (...)` list: well under SQLite's and PostgreSQL's parameter limits.
CHUNK = 5_000


def chunks(values: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def scalars_in(
    session: Session, query: Select[T], column: QueryableAttribute[Any], values: Collection[Any]
) -> list[T]:
    """`session.scalars(query.where(column IN values))`, a chunk of values at a time."""
    found: list[T] = []
    for part in chunks(sorted(set(values))):
        found += session.scalars(query.where(column.in_(part)))
    return found
