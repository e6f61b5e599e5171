"""Rows behind the alerts to agency leaders (``leader_alerts``) and the facts those alerts are about.

``supervision/leaders.py`` decides who gets what; this module reads the incidents and dispatches that
happened, keeps one row per message (written before sending, unique ``key``) and answers the regional
head's daily figures.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store.engine import Store, utcnow
from callcenter.store.models import Call, Dispatch, Incident, LeaderAlert

__all__ = ["AlertRow", "DailyFigures", "IncidentEvent", "LeaderAlertStore"]

#: Classifications counted as nuisance in the prank share.
NUISANCE = ("prank", "hoax", "silent")


@dataclass(frozen=True)
class IncidentEvent:
    event: str
    incident_id: int
    reference: str
    category: str
    priority: str
    district: str | None
    agency: str


@dataclass(frozen=True)
class AlertRow:
    id: int
    key: str
    event: str
    recipient: str
    channel: str
    body: str
    status: str
    sid: str | None


@dataclass(frozen=True)
class DailyFigures:
    calls: int
    answered: int
    incidents_by_category: dict[str, int]
    nuisance: int
    classified: int
    sla_due: int
    sla_met: int


class LeaderAlertStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def events_since(self, since: datetime) -> list[IncidentEvent]:
        """Dispatches created, service levels breached and dispatches resolved since ``since``."""

        async def op(session: AsyncSession) -> list[IncidentEvent]:
            cols = (Incident.id, Incident.reference, Incident.category, Incident.priority, Incident.district)
            out: list[IncidentEvent] = []
            rows = await session.execute(
                select(*cols, Dispatch.agency)
                .join(Dispatch, Dispatch.incident_id == Incident.id)
                .where(Dispatch.created_at >= since)
            )
            out += [IncidentEvent("dispatched", *r) for r in rows]
            rows = await session.execute(
                select(*cols, Dispatch.agency)
                .join(Dispatch, Dispatch.incident_id == Incident.id)
                .where(Incident.sla_breached_at >= since)
            )
            out += [IncidentEvent("sla_breached", *r) for r in rows]
            rows = await session.execute(
                select(*cols, Dispatch.agency)
                .join(Dispatch, Dispatch.incident_id == Incident.id)
                .where(Dispatch.status == "resolved", Dispatch.updated_at >= since)
            )
            out += [IncidentEvent("resolved", *r) for r in rows]
            return out

        return await self.store.transaction("leader_events", op)

    async def existing(self, keys: Iterable[str]) -> set[str]:
        wanted = list(set(keys))
        if not wanted:
            return set()

        async def op(session: AsyncSession) -> set[str]:
            found: set[str] = set()
            for i in range(0, len(wanted), 500):
                found |= set(
                    await session.scalars(select(LeaderAlert.key).where(LeaderAlert.key.in_(wanted[i : i + 500])))
                )
            return found

        return await self.store.transaction("leader_keys", op)

    async def claim(
        self,
        key: str,
        event: str,
        recipient: str,
        channel: str,
        body: str,
        *,
        incident_id: int | None = None,
        agency: str | None = None,
        fallback_of: int | None = None,
    ) -> int | None:
        """Write the alert's row (before sending); None when another poll already claimed ``key``."""

        async def op(session: AsyncSession) -> int:
            now = utcnow()
            row = LeaderAlert(
                key=key[:160],
                event=event,
                incident_id=incident_id,
                agency=agency,
                recipient=recipient,
                channel=channel,
                body=body,
                status="pending",
                fallback_of=fallback_of,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            await session.flush()
            return row.id

        try:
            return await self.store.transaction("leader_claim", op)
        except IntegrityError:
            return None

    async def settle(self, alert_id: int, status: str, *, sid: str | None = None, error: str | None = None) -> None:
        async def op(session: AsyncSession) -> None:
            values: dict[str, Any] = {"status": status[:16], "updated_at": utcnow()}
            if sid is not None:
                values["sid"] = sid[:64]
            if error is not None:
                values["error"] = error[:255]
            await session.execute(update(LeaderAlert).where(LeaderAlert.id == alert_id).values(**values))

        await self.store.transaction("leader_settle", op)

    async def get(self, alert_id: int) -> AlertRow | None:
        async def op(session: AsyncSession) -> AlertRow | None:
            r = await session.get(LeaderAlert, alert_id)
            if r is None:
                return None
            return AlertRow(r.id, r.key, r.event, r.recipient, r.channel, r.body, r.status, r.sid)

        return await self.store.transaction("leader_get", op)

    async def daily(self, start: datetime, end: datetime) -> DailyFigures:
        async def op(session: AsyncSession) -> DailyFigures:
            in_day = (Call.arrived_at >= start, Call.arrived_at < end)
            calls = await session.scalar(select(func.count()).select_from(Call).where(*in_day)) or 0
            answered = (
                await session.scalar(
                    select(func.count()).select_from(Call).where(*in_day, Call.answered_at.is_not(None))
                )
                or 0
            )
            nuisance = (
                await session.scalar(
                    select(func.count()).select_from(Call).where(*in_day, Call.classification.in_(NUISANCE))
                )
                or 0
            )
            classified = (
                await session.scalar(
                    select(func.count()).select_from(Call).where(*in_day, Call.classification.is_not(None))
                )
                or 0
            )
            rows = await session.execute(
                select(Incident.category, func.count())
                .where(Incident.created_at >= start, Incident.created_at < end)
                .group_by(Incident.category)
            )
            by_category = {str(c): int(n) for c, n in rows}
            due = await session.execute(
                select(Incident.sla_met_at, Incident.sla_due_at).where(
                    Incident.created_at >= start, Incident.created_at < end, Incident.sla_due_at.is_not(None)
                )
            )
            pairs = list(due)
            met = sum(1 for m, d in pairs if m is not None and d is not None and m <= d)
            return DailyFigures(int(calls), int(answered), by_category, int(nuisance), int(classified), len(pairs), met)

        return await self.store.transaction("leader_daily", op)
