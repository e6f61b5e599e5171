"""login throttling shared by the app nodes

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 16:10:00

``login_buckets``: the login guard's buckets (failures and the next allowed attempt per key);
``login_known``: pairs that logged in before; ``login_failures``: failures within the attack window;
``login_alerts``: attack reports for the supervisors. All written by ``store/login_throttle.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_buckets",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("next_at", sa.Float(), nullable=False),
        sa.Column("last", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_login_buckets_next_last", "login_buckets", ["next_at", "last"], unique=False)
    op.create_table(
        "login_known",
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("username", "client"),
    )
    op.create_table(
        "login_failures",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_login_failures_at", "login_failures", ["at"], unique=False)
    op.create_table(
        "login_alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("clients", sa.Integer(), nullable=False),
        sa.Column("top_client", sa.String(length=64), nullable=False),
        sa.Column("top_client_failures", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("login_alerts")
    op.drop_index("ix_login_failures_at", table_name="login_failures")
    op.drop_table("login_failures")
    op.drop_table("login_known")
    op.drop_index("ix_login_buckets_next_last", table_name="login_buckets")
    op.drop_table("login_buckets")
