"""agent enrolment codes, agent keys, check manifests; bundle ids covered by a url scheme

Revision ID: 9f4297b59b1f
Revises: 20ab2d7e94f7
Create Date: 2026-12-02 13:31:29.777123
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "9f4297b59b1f"
down_revision = "20ab2d7e94f7"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "agent_enrolment_code",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["device.id"],
            name=op.f("fk_agent_enrolment_code_device_id_device"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("code_hash", name=op.f("pk_agent_enrolment_code")),
    )
    with op.batch_alter_table("agent_enrolment_code", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_agent_enrolment_code_device_id"), ["device_id"], unique=False
        )

    op.create_table(
        "agent_key",
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_signed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["device.id"],
            name=op.f("fk_agent_key_device_id_device"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("agent_id", name=op.f("pk_agent_key")),
    )
    with op.batch_alter_table("agent_key", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agent_key_device_id"), ["device_id"], unique=False)

    op.create_table(
        "check_manifest",
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("policy_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("manifest_hash", sa.String(length=64), nullable=False),
        sa.Column("identifiers", sa.JSON(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agent_key.agent_id"],
            name=op.f("fk_check_manifest_agent_id_agent_key"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_check_manifest")),
    )
    with op.batch_alter_table("check_manifest", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_check_manifest_agent_id"), ["agent_id"], unique=False)

    with op.batch_alter_table("policy_identifier", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("covered_by_scheme", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:

    with op.batch_alter_table("policy_identifier", schema=None) as batch_op:
        batch_op.drop_column("covered_by_scheme")

    with op.batch_alter_table("check_manifest", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_check_manifest_agent_id"))

    op.drop_table("check_manifest")
    with op.batch_alter_table("agent_key", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agent_key_device_id"))

    op.drop_table("agent_key")
    with op.batch_alter_table("agent_enrolment_code", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agent_enrolment_code_device_id"))

    op.drop_table("agent_enrolment_code")
