"""drafts also keep quality reviews being typed: keys ``review.<call id>`` need more than 32 characters

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 16:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("drafts", schema=None) as batch_op:
        batch_op.alter_column("call_key", type_=sa.String(length=64), existing_type=sa.String(length=32))


def downgrade() -> None:
    op.execute("DELETE FROM drafts WHERE length(call_key) > 32")
    with op.batch_alter_table("drafts", schema=None) as batch_op:
        batch_op.alter_column("call_key", type_=sa.String(length=32), existing_type=sa.String(length=64))
