"""OKI's map dashboard, read in one transaction: open incidents with coordinates and their field units.

An incident is on the map while it is open (not closed, resolved or cancelled) and the intake has a
latitude/longitude. Each of its dispatches brings the agency's status and, per officer, the newest
status update that carried the officer's browser position (``dispatch_updates``): where that unit
was last seen. An agency officer's map holds only incidents dispatched to their own agency, and
only their agency's units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store.engine import Store
from callcenter.store.models import Dispatch, DispatchUpdate, Incident, User
from callcenter.store.stats import CLOSED_INCIDENT

#: At most this many incidents on one map (newest first): a dashboard, not an archive.
MAP_LIMIT = 300


@dataclass(frozen=True)
class Unit:
    """One officer of one dispatch, where their last positioned status update put them."""

    dispatch_id: int
    agency: str
    dispatch_status: str
    officer: str | None
    update: DispatchUpdate

    def as_json(self) -> dict[str, Any]:
        u = self.update
        return {
            "dispatch_id": self.dispatch_id,
            "agency": self.agency,
            "dispatch_status": self.dispatch_status,
            "officer": self.officer,
            "status": u.status,
            "at": u.at.isoformat(),
            "latitude": u.latitude,
            "longitude": u.longitude,
            "accuracy_m": u.accuracy_m,
        }


@dataclass(frozen=True)
class MapIncident:
    incident: Incident
    #: ``{"id", "agency", "status"}`` of each of its dispatches (the viewer's agency's only, for an officer).
    dispatches: tuple[dict[str, Any], ...]
    units: tuple[Unit, ...]

    def as_json(self) -> dict[str, Any]:
        i = self.incident
        return {
            "id": i.id,
            "reference": i.reference,
            "status": i.status,
            "category": i.category,
            "priority": i.priority,
            "address": i.address,
            "district": i.district,
            "latitude": i.latitude,
            "longitude": i.longitude,
            "created_at": i.created_at.isoformat(),
            "dispatches": list(self.dispatches),
            "units": [u.as_json() for u in self.units],
        }


async def field_map(store: Store, *, agency: str | None = None, limit: int = MAP_LIMIT) -> list[MapIncident]:
    """The open incidents with coordinates, newest first, with their dispatches and units;
    ``agency`` narrows everything to that agency's dispatches."""

    async def op(session: AsyncSession) -> list[MapIncident]:
        query = (
            select(Incident)
            .where(
                Incident.latitude.is_not(None),
                Incident.longitude.is_not(None),
                Incident.status.not_in(CLOSED_INCIDENT),
            )
            .order_by(Incident.created_at.desc(), Incident.id.desc())
            .limit(limit)
        )
        if agency is not None:
            query = query.where(Incident.id.in_(select(Dispatch.incident_id).where(Dispatch.agency == agency)))
        incidents = list(await session.scalars(query))
        if not incidents:
            return []
        dq = select(Dispatch).where(Dispatch.incident_id.in_([i.id for i in incidents])).order_by(Dispatch.id)
        if agency is not None:
            dq = dq.where(Dispatch.agency == agency)
        dispatches = list(await session.scalars(dq))
        by_id = {d.id: d for d in dispatches}
        last: dict[tuple[int, int | None], tuple[DispatchUpdate, str | None]] = {}
        if by_id:
            rows = await session.execute(
                select(DispatchUpdate, User.username)
                .outerjoin(User, User.id == DispatchUpdate.user_id)
                .where(
                    DispatchUpdate.dispatch_id.in_(list(by_id)),
                    DispatchUpdate.latitude.is_not(None),
                    DispatchUpdate.longitude.is_not(None),
                )
                .order_by(DispatchUpdate.at, DispatchUpdate.id)
            )
            for upd, username in rows:
                last[(upd.dispatch_id, upd.user_id)] = (upd, username)  # the newest wins
        result = []
        for incident in incidents:
            own = [d for d in dispatches if d.incident_id == incident.id]
            units = tuple(
                Unit(d.id, d.agency, d.status, username, upd)
                for d in own
                for (dispatch_id, _user), (upd, username) in last.items()
                if dispatch_id == d.id
            )
            result.append(
                MapIncident(
                    incident,
                    tuple({"id": d.id, "agency": d.agency, "status": d.status} for d in own),
                    units,
                )
            )
        return result

    return await store.transaction("field_map", op)


__all__ = ["MAP_LIMIT", "MapIncident", "Unit", "field_map"]
