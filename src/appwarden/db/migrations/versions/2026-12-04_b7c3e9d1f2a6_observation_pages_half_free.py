"""observation pages half free on PostgreSQL

Every report rewrites its observations' `last_seen_at`. With half of each page free, PostgreSQL
writes the new row versions in place (heap-only tuples) instead of adding entries to the table's
three indexes. Pages already written keep their fill until rewritten (VACUUM FULL, or as rows
move); new pages follow the setting. SQLite has no such option: nothing changes there.

Revision ID: b7c3e9d1f2a6
Revises: 5d2c81f0a7e4
Create Date: 2026-12-04 21:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "b7c3e9d1f2a6"
down_revision = "5d2c81f0a7e4"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE observation SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE observation RESET (fillfactor)")
