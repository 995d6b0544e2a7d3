"""compliance states and first sightings indexed by device

A report reads its device's states and first sightings by device id; both primary keys lead with
the version or policy, so without these indexes each report scanned every device's rows.

Revision ID: 5d2c81f0a7e4
Revises: 9f4297b59b1f
Create Date: 2026-12-03 15:20:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "5d2c81f0a7e4"
down_revision = "9f4297b59b1f"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("compliance_state", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_compliance_state_device_id"), ["device_id"], unique=False
        )
    with op.batch_alter_table("policy_first_seen", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_policy_first_seen_device_id"), ["device_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("policy_first_seen", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_policy_first_seen_device_id"))
    with op.batch_alter_table("compliance_state", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_compliance_state_device_id"))
