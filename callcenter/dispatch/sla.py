"""Service levels: every incident must have an agency acknowledge a dispatch within its category's time.

``sla_due_at`` is the call's arrival (or the incident's creation when there is no call) plus the
category's target from the agencies directory's ``[sla]`` table. A timer in the app (``sla_ctx`` in
``callcenter/wiring.py``) then, every few seconds:

1. fills in ``sla_due_at`` for recent incidents that have none (the intake endpoint does not know
   about service levels, so the timer makes sure every new incident gets one within a tick);
2. marks ``sla_met_at`` from the earliest accepted dispatch, whoever accepted it (phone, Twilio,
   web) — so the level is measured from the dispatch rows, the record of truth;
3. flags ``sla_breached_at`` once due has passed unmet (or met late), and tells the call-takers and
   supervisors with an ``sla_breach`` WebSocket message.

Step 3 is a conditional update (``WHERE sla_breached_at IS NULL``): only the instance whose update
hits the row announces the breach, so each incident is announced once even with two app instances.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.dispatch.agencies import Directory
from callcenter.store import Store, utcnow
from callcenter.store.models import Call, Dispatch, Incident

log = structlog.get_logger("callcenter.sla")

#: Used until the agencies directory provides its ``[sla]`` table: life and fire fast, the rest 15 min.
DEFAULT_TARGETS: Mapping[str, int] = {"medical": 300, "fire": 300, "default": 900}
#: Seconds between two passes of the timer; tests may set ``app[SLA_INTERVAL]`` before startup.
INTERVAL = 5.0
#: Incidents older than this without a due time are history (from before service levels existed):
#: they get none, or the first start would announce a breach for every old incident.
BACKFILL_WINDOW = timedelta(hours=24)


def target_seconds(targets: Mapping[str, Any], category: str) -> int:
    """The category's target, else the table's ``default``, else ours (a broken table must not
    leave an incident without a deadline)."""
    for key in (category, "default"):
        value = targets.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return int(value)
    return int(DEFAULT_TARGETS.get(category, DEFAULT_TARGETS["default"]))


def set_due(incident: Incident, targets: Mapping[str, Any], *, arrived_at: datetime | None = None) -> datetime:
    """Set ``incident.sla_due_at`` from the call's arrival (``arrived_at``) or the incident's creation.

    The clock starts when the citizen's call arrived, not when the intake was saved: the caller has
    been waiting since then. For use inside the session that creates or loads the incident.
    """
    start = arrived_at or incident.created_at
    due = start + timedelta(seconds=target_seconds(targets, incident.category))
    incident.sla_due_at = due
    return due


def targets(directory: Directory | None) -> Mapping[str, Any]:
    """The directory's ``[sla]`` table, else the defaults (before, or without, the dispatch core)."""
    table = directory.sla if directory is not None else None
    if isinstance(table, Mapping) and table:
        return table
    return DEFAULT_TARGETS


@dataclass(frozen=True)
class Breach:
    incident_id: int
    reference: str
    category: str
    due_at: datetime

    def message(self) -> dict[str, Any]:
        return {
            "type": "sla_breach",
            "incident_id": self.incident_id,
            "reference": self.reference,
            "category": self.category,
            "due_at": self.due_at.isoformat(),
        }


async def ensure_due(store: Store, targets: Mapping[str, Any], *, incident_id: int | None = None) -> int:
    """Give recent incidents without a due time one (or just ``incident_id``, whatever its age).

    Returns how many were set.
    """
    now = utcnow()

    async def op(session: AsyncSession) -> int:
        query = (
            select(Incident, Call.arrived_at)
            .outerjoin(Call, Call.id == Incident.call_id)
            .where(Incident.sla_due_at.is_(None), Incident.sla_breached_at.is_(None))
        )
        if incident_id is not None:
            query = query.where(Incident.id == incident_id)
        else:
            query = query.where(Incident.created_at >= now - BACKFILL_WINDOW)
        count = 0
        for incident, arrived_at in (await session.execute(query.limit(500))).all():
            set_due(incident, targets, arrived_at=arrived_at)
            count += 1
        return count

    return await store.transaction("sla_ensure_due", op)


async def sweep(store: Store, targets: Mapping[str, Any], *, now: datetime | None = None) -> list[Breach]:
    """One pass of the timer: due times, met times, and the breaches this pass newly flagged."""
    await ensure_due(store, targets)
    moment = now or utcnow()

    async def mark(session: AsyncSession) -> list[Breach]:
        first_accept = (
            select(func.min(Dispatch.accepted_at))
            .where(Dispatch.incident_id == Incident.id, Dispatch.accepted_at.is_not(None))
            .scalar_subquery()
        )
        await session.execute(
            update(Incident)
            .where(Incident.sla_met_at.is_(None), Incident.sla_due_at.is_not(None), first_accept.is_not(None))
            .values(sla_met_at=first_accept)
            .execution_options(synchronize_session=False)
        )
        # Checked against the dispatch rows too, not only ``sla_met_at``: an acceptance committed
        # after the update above (another transaction) must not be reported as a breach.
        accepted_in_time = exists().where(
            Dispatch.incident_id == Incident.id,
            Dispatch.accepted_at.is_not(None),
            Dispatch.accepted_at <= Incident.sla_due_at,
        )
        overdue = (
            await session.execute(
                select(Incident.id, Incident.reference, Incident.category, Incident.sla_due_at).where(
                    Incident.sla_breached_at.is_(None),
                    Incident.sla_due_at.is_not(None),
                    Incident.sla_due_at <= moment,
                    (Incident.sla_met_at.is_(None)) | (Incident.sla_met_at > Incident.sla_due_at),
                    ~accepted_in_time,
                )
            )
        ).all()
        breaches = []
        for incident_id, reference, category, due_at in overdue:
            assert due_at is not None  # selected for having one
            result = await session.execute(
                update(Incident)
                .where(Incident.id == incident_id, Incident.sla_breached_at.is_(None), ~accepted_in_time)
                .values(sla_breached_at=moment)
                .execution_options(synchronize_session=False)
            )
            if getattr(result, "rowcount", 0) == 1:
                breaches.append(Breach(incident_id, reference, category, due_at))
        return breaches

    return await store.transaction("sla_sweep", mark)
