"""Statements over a set of ids that may be a whole fleet's, a chunk at a time.

One statement cannot name every device of a large organisation: each value of an `IN (...)`
list is a parameter, and SQLite and PostgreSQL's protocol stop at a limit (psycopg refuses to send
more than 65,535). A memo's release names everyone in its audience, a retraction everyone it
blocked, `status` every device in scope. Whatever reads rows by such a set goes through here.

`one_of(column, values)` is how such a set is named. On PostgreSQL it is `column = ANY(:values)`,
one array parameter, rather than `IN` with a parameter per value: SQLAlchemy renders an `IN` list
anew at every execution, and psycopg parses a statement of more than 50 parameters anew every
time; together about 4 ms for 1,000 ids, which a page of a bulk import pays some twenty times
(docs/architecture.md, "Bulk ingest").
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import ARRAY, BindParameter, Boolean, ColumnElement, Select, any_, bindparam
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import QueryableAttribute, Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

T = TypeVar("T")

# Values per `IN (...)` list: well under SQLite's and PostgreSQL's parameter limits.
CHUNK = 5_000


def chunks(values: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class OneOf(ColumnElement[bool]):
    """`column IN (values)`, or on PostgreSQL `column = ANY(values)` (see the module docstring).
    Both forms' parameters are part of the statement, so a cached statement takes the values of
    the one it is executed for, whichever form the dialect compiled."""

    type = Boolean()
    # A condition, not a boolean value: without this SQLAlchemy writes it `(… IN (…)) = 1` in a
    # WHERE clause on SQLite (no native booleans), which SQLite cannot answer from an index: it
    # read every row of the table, a page of an import at a time (bench/README.md, W5).
    _is_implicitly_boolean = True
    inherit_cache = True
    _traverse_internals = [  # noqa: RUF012 - as SQLAlchemy's own constructs declare it
        ("column", InternalTraversal.dp_clauseelement),
        ("listed", InternalTraversal.dp_clauseelement),
        ("array", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: ColumnElement[Any], values: Any, key: str | None) -> None:
        self.column = column
        unique = key is None  # an anonymous parameter per use; a named one is given at execution
        self.listed: BindParameter[Any] = bindparam(key, values, expanding=True, unique=unique)
        self.array: BindParameter[Any] = bindparam(
            key, values, type_=ARRAY(column.type), unique=unique
        )


@compiles(OneOf)
def _in_list(element: OneOf, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column.in_(element.listed), **kw)


@compiles(OneOf, "postgresql")
def _any_of_array(element: OneOf, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column == any_(element.array), **kw)


def one_of(
    column: ColumnElement[Any] | QueryableAttribute[Any],
    values: Collection[Any] | None = None,
    *,
    key: str | None = None,
) -> OneOf:
    """`column` is one of `values` (a chunk: see `chunks`); or, with `key` and no values, of
    the values given at execution as `key` (a statement built once)."""
    return OneOf(column.expression, None if values is None else list(values), key)


def scalars_in(
    session: Session, query: Select[T], column: QueryableAttribute[Any], values: Collection[Any]
) -> list[T]:
    """`session.scalars(query.where(column IN values))`, a chunk of values at a time."""
    found: list[T] = []
    for part in chunks(sorted(set(values))):
        found += session.scalars(query.where(one_of(column, part)))
    return found
