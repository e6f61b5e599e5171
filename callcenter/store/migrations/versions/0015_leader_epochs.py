"""leader epochs: the fencing token of the node that leads, and which term owns an in-flight call

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 16:00:00

``leader_epochs``: one row per leadership lock; ``epoch`` goes up by one each time a node takes the
lock (``store/leadership.py``). A leader's writes about the calls it places check, in the same
transaction, that the epoch is still its own, so a deposed or frozen old leader cannot place or close
anything after a new one took over. ``dispatches.leader_epoch`` and ``callbacks.leader_epoch``: the
term that places the calls of a dispatch / call-back still ``calling`` (NULL: requested on any node,
not yet claimed by the leader; lower than the current epoch: a previous leader's, to take over).
``callbacks.phone`` and ``callbacks.number``: the dial string of the phone that rings first (the
requester's) and the citizen's number, so the leader can place a call-back requested on another node.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leader_epochs",
        sa.Column("key", sa.BigInteger(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("node", sa.String(length=128), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    # Plain ADD COLUMN (no batch copy): neither table carries statistics triggers.
    op.add_column("dispatches", sa.Column("leader_epoch", sa.BigInteger(), nullable=True))
    op.add_column("callbacks", sa.Column("leader_epoch", sa.BigInteger(), nullable=True))
    op.add_column("callbacks", sa.Column("phone", sa.String(length=128), nullable=True))
    op.add_column("callbacks", sa.Column("number", sa.String(length=32), nullable=True))


def downgrade() -> None:
    # Plain DROP COLUMN: a batch copy of ``dispatches`` would drop its statistics triggers.
    op.drop_column("callbacks", "number")
    op.drop_column("callbacks", "phone")
    op.drop_column("callbacks", "leader_epoch")
    op.drop_column("dispatches", "leader_epoch")
    op.drop_table("leader_epochs")
