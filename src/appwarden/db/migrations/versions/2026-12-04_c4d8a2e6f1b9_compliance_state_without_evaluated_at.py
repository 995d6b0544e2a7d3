"""compliance states without evaluated_at

`compliance_state.evaluated_at` moved at every evaluation and nothing read it: every report
rewrote every state row of its device even when its state stayed the same (most of a re-import's
state writes). A state row now changes only when the state, its reasons or its dates change.

Revision ID: c4d8a2e6f1b9
Revises: b7c3e9d1f2a6
Create Date: 2026-12-04 21:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "c4d8a2e6f1b9"
down_revision = "b7c3e9d1f2a6"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("compliance_state", schema=None) as batch_op:
        batch_op.drop_column("evaluated_at")


def downgrade() -> None:
    # The rows' last evaluation is not known any more: their `since` stands in for it.
    with op.batch_alter_table("compliance_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("evaluated_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE compliance_state SET evaluated_at = since")
    with op.batch_alter_table("compliance_state", schema=None) as batch_op:
        batch_op.alter_column("evaluated_at", nullable=False)
