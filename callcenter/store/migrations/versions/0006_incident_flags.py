"""incident flags

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 15:50:00

``incidents.flags``: the circumstances ticked on the intake (``needs_water``, ``trapped_people`` …),
a JSON list of codes the dispatch rules propose extra agencies by. Existing incidents get ``[]``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("flags", sa.JSON(), server_default=sa.text("'[]'"), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.drop_column("flags")
