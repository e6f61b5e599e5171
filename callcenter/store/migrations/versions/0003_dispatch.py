"""dispatch, attempts, agency updates, service levels

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 15:06:59.394227
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "dispatches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("agency", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("accepted_line", sa.String(length=128), nullable=True),
        sa.Column("accepted_via", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("dispatches", schema=None) as batch_op:
        batch_op.create_index("ix_dispatches_agency_status", ["agency", "status"], unique=False)
        batch_op.create_index(batch_op.f("ix_dispatches_incident_id"), ["incident_id"], unique=False)

    op.create_table(
        "dispatch_attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("dispatch_id", sa.Integer(), nullable=False),
        sa.Column("line", sa.String(length=128), nullable=False),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("hangup_cause", sa.Integer(), nullable=True),
        sa.Column("reference", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["dispatch_id"], ["dispatches.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("dispatch_attempts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dispatch_attempts_dispatch_id"), ["dispatch_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_dispatch_attempts_reference"), ["reference"], unique=False)

    op.create_table(
        "dispatch_updates",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("dispatch_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("photo", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(["dispatch_id"], ["dispatches.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("dispatch_updates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dispatch_updates_dispatch_id"), ["dispatch_id"], unique=False)

    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sla_due_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("sla_met_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("sla_breached_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.drop_column("sla_breached_at")
        batch_op.drop_column("sla_met_at")
        batch_op.drop_column("sla_due_at")

    with op.batch_alter_table("dispatch_updates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dispatch_updates_dispatch_id"))

    op.drop_table("dispatch_updates")
    with op.batch_alter_table("dispatch_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dispatch_attempts_reference"))
        batch_op.drop_index(batch_op.f("ix_dispatch_attempts_dispatch_id"))

    op.drop_table("dispatch_attempts")
    with op.batch_alter_table("dispatches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dispatches_incident_id"))
        batch_op.drop_index("ix_dispatches_agency_status")

    op.drop_table("dispatches")
