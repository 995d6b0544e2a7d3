"""Alembic environment. Migrations never import application models: autogenerate receives the
metadata through `config.attributes["target_metadata"]` from `appwarden.db.migrate`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

config = context.config


def run_with(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=config.attributes.get("target_metadata"),
        render_as_batch=True,  # SQLite can only ALTER through table copies
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - appwarden always passes its own connection
    raise RuntimeError("run migrations with `appwarden db upgrade`")
run_with(connection)
