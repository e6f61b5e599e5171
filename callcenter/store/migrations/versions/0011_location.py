"""caller location evidence: AML fixes, SMS location links, officers' positions

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 10:40:00

``location_links``: one row per SMS link a call-taker sent (random token, bound to one call, 1 h).
``location_fixes``: every position received for a call — AML over HTTPS or SMS, or the browser behind
a link — with accuracy radius, confidence, source and times; ``call_id`` may be NULL until the call is
known. ``dispatch_updates`` gains the officer's position at the update (the map's last positions).
None of these feed the statistics roll-up, so no triggers are touched.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "location_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(length=32), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("sms_sid", sa.String(length=64), nullable=True),
        sa.Column("fixes", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token"),
    )
    op.create_index("ix_location_links_call_id", "location_links", ["call_id"])
    op.create_index("ix_location_links_number", "location_links", ["number"])
    op.create_table(
        "location_fixes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("call_id", sa.String(length=32), nullable=True),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=False),
        sa.Column("longitude", sa.Float(), nullable=False),
        sa.Column("accuracy_m", sa.Float(), nullable=True),
        sa.Column("confidence", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("fixed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("link_id", sa.Integer(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["link_id"], ["location_links.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_location_fixes_call_id", "location_fixes", ["call_id"])
    op.create_index("ix_location_fixes_number_received", "location_fixes", ["number", "received_at"])
    # Plain ADD COLUMN (no batch copy): dispatch_updates has no statistics triggers to lose anyway.
    for column in ("latitude", "longitude", "accuracy_m"):
        op.add_column("dispatch_updates", sa.Column(column, sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dispatch_updates", schema=None) as batch_op:
        for column in ("accuracy_m", "longitude", "latitude"):
            batch_op.drop_column(column)
    op.drop_index("ix_location_fixes_number_received", table_name="location_fixes")
    op.drop_index("ix_location_fixes_call_id", table_name="location_fixes")
    op.drop_table("location_fixes")
    op.drop_index("ix_location_links_number", table_name="location_links")
    op.drop_index("ix_location_links_call_id", table_name="location_links")
    op.drop_table("location_links")
