"""indexes for supervision statistics and the call log

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 15:40:00

Why each exists (``store/stats.py``, measured by ``bench/p6_stats.py`` on 1 M calls):

* ``ix_calls_arrived_stats`` covers the one grouped pass over calls (arrival, answer, wait, status,
  classification): the statistics read the index, never the wide call rows.
* ``ix_calls_answered_by_arrived`` / ``ix_calls_status_arrived``: call-log filters by call-taker or
  status, already in newest-first order.
* ``ix_incidents_created_category``: categories of a period from the index alone.
* ``ix_incidents_sla_breached_at``: the wallboard's breaches today.
* ``ix_dispatches_incident_accepted``: first acceptance per incident (dispatch acknowledgement).
* ``ix_dispatches_created_agency``: dispatches per agency in a period, accepted counted from the index.
* ``ix_dispatches_status_agency``: the wallboard's open work per agency, by the active statuses.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

INDEXES: tuple[tuple[str, str, list[str]], ...] = (
    ("ix_calls_arrived_stats", "calls", ["arrived_at", "answered_at", "wait_seconds", "status", "classification"]),
    ("ix_calls_answered_by_arrived", "calls", ["answered_by", "arrived_at"]),
    ("ix_calls_status_arrived", "calls", ["status", "arrived_at"]),
    ("ix_incidents_created_category", "incidents", ["created_at", "category"]),
    ("ix_incidents_sla_breached_at", "incidents", ["sla_breached_at"]),
    ("ix_dispatches_incident_accepted", "dispatches", ["incident_id", "accepted_at"]),
    ("ix_dispatches_created_agency", "dispatches", ["created_at", "agency", "accepted_at"]),
    ("ix_dispatches_status_agency", "dispatches", ["status", "agency", "incident_id"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
