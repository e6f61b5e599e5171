"""citizen reports from the /lapor app, and the app's verified numbers and devices

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 15:50:00

``app_numbers``: one row per phone number that asked for a verification code: the current code's
salted hash, expiry and wrong attempts, the codes sent in the current hour, when it was verified, how
many of its reports the centre classified prank/hoax and when that blocked it from the app (never from
calling 112). ``app_devices``: the long-lived device tokens (SHA-256 only) a verified number's
browsers hold. ``reports``: one row per report: category, the browser's fix, an optional photo's
stored name, the client's address group (for the per-address limit), and its handling (waiting →
taken → called_back → closed; the call-taker; the call-back's uniqueid; the classification).
None of these feed the statistics roll-up, so no triggers are touched.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "app_numbers",
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("code_hash", sa.String(length=64), nullable=True),
        sa.Column("code_salt", sa.String(length=32), nullable=True),
        sa.Column("code_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("code_attempts", sa.Integer(), nullable=False),
        sa.Column("codes_window_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("codes_sent", sa.Integer(), nullable=False),
        sa.Column("false_reports", sa.Integer(), nullable=False),
        sa.Column("blocked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("number"),
    )
    op.create_table(
        "app_devices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["number"], ["app_numbers.number"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_app_devices_number", "app_devices", ["number"])
    op.create_table(
        "reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=True),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=True),
        sa.Column("longitude", sa.Float(), nullable=True),
        sa.Column("accuracy_m", sa.Float(), nullable=True),
        sa.Column("photo", sa.String(length=64), nullable=True),
        sa.Column("client_group", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("taken_by", sa.Integer(), nullable=True),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("callback_uniqueid", sa.String(length=64), nullable=True),
        sa.Column("called_back_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("classification", sa.String(length=32), nullable=True),
        sa.Column("classified_by", sa.Integer(), nullable=True),
        sa.Column("classified_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["device_id"], ["app_devices.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["taken_by"], ["users.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["classified_by"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_reports_number_created", "reports", ["number", "created_at"])
    op.create_index("ix_reports_client_created", "reports", ["client_group", "created_at"])
    op.create_index("ix_reports_status_created", "reports", ["status", "created_at"])
    op.create_index("ix_reports_callback_uniqueid", "reports", ["callback_uniqueid"])


def downgrade() -> None:
    op.drop_index("ix_reports_callback_uniqueid", table_name="reports")
    op.drop_index("ix_reports_status_created", table_name="reports")
    op.drop_index("ix_reports_client_created", table_name="reports")
    op.drop_index("ix_reports_number_created", table_name="reports")
    op.drop_table("reports")
    op.drop_index("ix_app_devices_number", table_name="app_devices")
    op.drop_table("app_devices")
    op.drop_table("app_numbers")
