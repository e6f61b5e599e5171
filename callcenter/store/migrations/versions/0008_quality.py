"""quality review of call handling: sampled calls and their reviews

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 10:30:00

``quality_samples``: one row per call drawn for review (weekly rules or by hand), with the call-taker
it was matched to and the due date. ``quality_reviews``: one row per reviewer and sampled call; the
first submitted one is what the call-taker reads and acknowledges, the others calibrate against it.
Neither table feeds the statistics roll-up (quality scores are read straight from these small tables).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quality_samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(length=32), nullable=False),
        sa.Column("week", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("calltaker", sa.String(length=128), nullable=True),
        sa.Column("calltaker_id", sa.Integer(), nullable=True),
        sa.Column("drawn_by", sa.Integer(), nullable=True),
        sa.Column("drawn_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["calltaker_id"], ["users.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["drawn_by"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("call_id"),
    )
    with op.batch_alter_table("quality_samples", schema=None) as batch_op:
        batch_op.create_index("ix_quality_samples_week", ["week"], unique=False)
        batch_op.create_index("ix_quality_samples_due_at", ["due_at"], unique=False)
        batch_op.create_index("ix_quality_samples_calltaker_drawn", ["calltaker_id", "drawn_at"], unique=False)

    op.create_table(
        "quality_reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("reviewer_id", sa.Integer(), nullable=True),
        sa.Column("levels", sa.JSON(), nullable=False),
        sa.Column("deviations", sa.JSON(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("critical", sa.Boolean(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["sample_id"], ["quality_samples.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["reviewer_id"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sample_id", "reviewer_id", name="uq_quality_reviews_sample_reviewer"),
    )
    with op.batch_alter_table("quality_reviews", schema=None) as batch_op:
        batch_op.create_index("ix_quality_reviews_sample_id", ["sample_id"], unique=False)


def downgrade() -> None:
    op.drop_table("quality_reviews")
    op.drop_table("quality_samples")
