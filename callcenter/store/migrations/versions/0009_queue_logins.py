"""queue logins

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 10:30:00

``queue_logins``: the call-takers the app has put in the queue, with their pause state, so that the app
puts them back after Asterisk restarts (``store/presence.py``, ``queue/presence.py``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queue_logins",
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("interface", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("member_name", sa.String(length=128), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("logged_in_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("queue", "interface"),
    )
    op.create_index("ix_queue_logins_user_id", "queue_logins", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_queue_logins_user_id", table_name="queue_logins")
    op.drop_table("queue_logins")
