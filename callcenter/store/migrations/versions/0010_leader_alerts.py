"""alerts to agency leaders (WhatsApp with SMS fallback) and the regional head's daily summary

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 10:45:00

``leader_alerts``: one row per message, written before it is sent (``key`` unique: each alert once,
whoever polls), with Twilio's message SID and the status its signed callbacks report; an SMS sent
because the WhatsApp message failed points at it with ``fallback_of``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leader_alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=True),
        sa.Column("agency", sa.String(length=32), nullable=True),
        sa.Column("recipient", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("sid", sa.String(length=64), nullable=True),
        sa.Column("error", sa.String(length=255), nullable=True),
        sa.Column("fallback_of", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["fallback_of"], ["leader_alerts.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    with op.batch_alter_table("leader_alerts", schema=None) as batch_op:
        batch_op.create_index("ix_leader_alerts_incident_id", ["incident_id"], unique=False)
        batch_op.create_index("ix_leader_alerts_sid", ["sid"], unique=False)


def downgrade() -> None:
    op.drop_table("leader_alerts")
