"""The call log: filtered pages of calls, one call's whole record, the names call-takers appear under.

Read from the raw rows, not the roll-up: their indexes make them fast enough (migrations 0005, 0007).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    func,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store.engine import Store
from callcenter.store.models import (
    Call,
    CallEvent,
    Dispatch,
    Incident,
    IncidentAudit,
    Rating,
    User,
)

#: Every ``calls.status`` the tracker writes (``queue/tracker.py``, ``store/lifecycle.py``).
CALL_STATUSES: tuple[str, ...] = (
    "arrived",
    "queued",
    "ringing",
    "answered",
    "overflow",
    "completed",
    "abandoned",
    "ended",
)


@dataclass(frozen=True)
class CallFilter:
    """Call-log filters; every one given must hold (None: not filtered)."""

    start: datetime | None = None
    end: datetime | None = None
    #: E.164, matched exactly (the index on ``caller_number`` serves it).
    number: str | None = None
    #: The names a call-taker may appear under in ``answered_by`` (member name, interface, username).
    answered_by: tuple[str, ...] | None = None
    category: str | None = None
    #: A classification code, or ``"unclassified"`` for calls nobody classified.
    classification: str | None = None
    agency: str | None = None
    status: str | None = None


@dataclass(frozen=True)
class CallPage:
    calls: list[dict[str, Any]]
    total: int


@dataclass(frozen=True)
class CallDetail:
    call: Call
    events: list[CallEvent]
    incident: Incident | None
    #: Username of each audit entry's author (None once deleted), oldest first.
    audit: list[tuple[IncidentAudit, str | None]]
    rating: Rating | None
    calltaker: str | None
    incidents: list[dict[str, Any]] = field(default_factory=list)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def display_names(session: AsyncSession, members: Sequence[str]) -> dict[str, str]:
    """``answered_by`` value → the user's display name; the tracker stores the member name, which
    is the interface (``PJSIP/taker1``) unless the queue names members, then often the username."""
    wanted = sorted(set(members))
    if not wanted:
        return {}
    names: dict[str, str] = {}
    rows = await session.execute(
        select(User.interface, User.username, User.display_name).where(
            or_(User.interface.in_(wanted), User.username.in_(wanted))
        )
    )
    for interface, username, display in rows:
        for key in (interface, username):
            if key in wanted:
                names[key] = display
    return names


class CallLog:
    """The supervisor's call log over one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def member_names(self, members: Sequence[str]) -> dict[str, str]:
        """Display names of queue members (by interface or member name) for the wallboard."""

        async def op(session: AsyncSession) -> dict[str, str]:
            return await display_names(session, members)

        return await self.store.transaction("stats_members", op)

    # -- call log --------------------------------------------------------------------------------------------

    async def calltaker_names(self, ident: str) -> tuple[str, ...]:
        """The ``answered_by`` values a call-taker given by user id or username may appear under; the
        raw value itself when no user matches (a member named in ``queues.conf`` but not a user)."""

        async def op(session: AsyncSession) -> tuple[str, ...]:
            query = select(User.interface, User.username)
            query = query.where(User.id == int(ident)) if ident.isdigit() else query.where(User.username == ident)
            row = (await session.execute(query)).first()
            if row is None:
                return (ident,)
            return tuple(v for v in (row[0], row[1]) if v)

        return await self.store.transaction("stats_calltaker", op)

    def _conditions(self, f: CallFilter) -> list[ColumnElement[bool]]:
        conds: list[ColumnElement[bool]] = []
        if f.start is not None:
            conds.append(Call.arrived_at >= f.start)
        if f.end is not None:
            conds.append(Call.arrived_at < f.end)
        if f.number is not None:
            conds.append(Call.caller_number == f.number)
        if f.answered_by is not None:
            conds.append(Call.answered_by.in_(f.answered_by))
        if f.classification == "unclassified":
            conds.append(Call.classification.is_(None))
        elif f.classification is not None:
            conds.append(Call.classification == f.classification)
        if f.status is not None:
            conds.append(Call.status == f.status)
        # IN (subquery) rather than EXISTS: both planners turn it into a lookup from the (small) set of
        # matching incidents to calls by primary key, instead of probing incidents once per call.
        if f.category is not None:
            conds.append(
                Call.id.in_(
                    select(Incident.call_id).where(Incident.category == f.category, Incident.call_id.is_not(None))
                )
            )
        if f.agency is not None:
            conds.append(
                Call.id.in_(
                    select(Incident.call_id)
                    .join(Dispatch, Dispatch.incident_id == Incident.id)
                    .where(Dispatch.agency == f.agency, Incident.call_id.is_not(None))
                )
            )
        return conds

    def _page_query(self, f: CallFilter) -> Select[Call]:
        return select(Call).where(*self._conditions(f)).order_by(Call.arrived_at.desc(), Call.id.desc())

    async def call_log(self, f: CallFilter, *, limit: int = 50, offset: int = 0) -> CallPage:
        """One page of calls matching ``f``, newest first, and how many match in all."""

        async def op(session: AsyncSession) -> CallPage:
            total = int(await session.scalar(select(func.count()).select_from(Call).where(*self._conditions(f))) or 0)
            calls = list(await session.scalars(self._page_query(f).limit(limit).offset(offset)))
            return CallPage(await self._rows(session, calls), total)

        return await self.store.transaction("call_log", op)

    async def iter_calls(self, f: CallFilter, *, batch: int = 2000) -> AsyncIterator[list[dict[str, Any]]]:
        """Every call matching ``f``, newest first, in batches (for the CSV export): keyset pagination
        on (arrived_at, id), so the millionth row costs what the first did and no transaction stays open."""
        last: tuple[datetime, str] | None = None
        while True:

            async def op(session: AsyncSession, last: tuple[datetime, str] | None = last) -> list[dict[str, Any]]:
                query = self._page_query(f)
                if last is not None:
                    at, call_id = last
                    query = query.where(or_(Call.arrived_at < at, and_(Call.arrived_at == at, Call.id < call_id)))
                return await self._rows(session, list(await session.scalars(query.limit(batch))))

            rows = await self.store.transaction("call_log_export", op)
            if not rows:
                return
            yield rows
            if len(rows) < batch:
                return
            tail = rows[-1]
            last = (datetime.fromisoformat(tail["arrived_at"]), tail["id"])

    async def _rows(self, session: AsyncSession, calls: list[Call]) -> list[dict[str, Any]]:
        """``CallRow``s for a page: the page's incidents and call-taker names with one query each."""
        ids = [c.id for c in calls]
        incidents: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        if ids:
            for inc_id, reference, category, call_id in await session.execute(
                select(Incident.id, Incident.reference, Incident.category, Incident.call_id)
                .where(Incident.call_id.in_(ids))
                .order_by(Incident.id)
            ):
                incidents[str(call_id)].append({"id": inc_id, "reference": reference, "category": category})
        names = await display_names(session, [c.answered_by for c in calls if c.answered_by])
        return [call_row(c, names.get(c.answered_by or ""), incidents[c.id]) for c in calls]

    # -- one call --------------------------------------------------------------------------------------------

    async def call_detail(self, call_id: str) -> CallDetail | None:
        """The call, its timeline, its (latest) incident with audit trail and latest rating; dispatches
        are read by the caller through ``Dispatches`` (they carry attempts and updates)."""

        async def op(session: AsyncSession) -> CallDetail | None:
            call = await session.get(Call, call_id)
            if call is None:
                return None
            events = list(
                await session.scalars(
                    select(CallEvent).where(CallEvent.call_id == call_id).order_by(CallEvent.at, CallEvent.id)
                )
            )
            all_incidents = list(
                await session.scalars(select(Incident).where(Incident.call_id == call_id).order_by(Incident.id))
            )
            incident = all_incidents[-1] if all_incidents else None
            audit: list[tuple[IncidentAudit, str | None]] = []
            rating = None
            if incident is not None:
                audit = [
                    (a, u)
                    for a, u in await session.execute(
                        select(IncidentAudit, User.username)
                        .outerjoin(User, User.id == IncidentAudit.user_id)
                        .where(IncidentAudit.incident_id == incident.id)
                        .order_by(IncidentAudit.at, IncidentAudit.id)
                    )
                ]
                rating = await session.scalar(
                    select(Rating).where(Rating.incident_id == incident.id).order_by(Rating.id.desc()).limit(1)
                )
            names = await display_names(session, [call.answered_by] if call.answered_by else [])
            summaries = [{"id": i.id, "reference": i.reference, "category": i.category} for i in all_incidents]
            return CallDetail(call, events, incident, audit, rating, names.get(call.answered_by or ""), summaries)

        return await self.store.transaction("call_detail", op)


def call_row(call: Call, calltaker: str | None, incidents: list[dict[str, Any]]) -> dict[str, Any]:
    """The contract's ``CallRow``: what the call log shows and the CSV export writes."""
    return {
        "id": call.id,
        "uniqueid": call.uniqueid,
        "arrived_at": _iso(call.arrived_at),
        "answered_at": _iso(call.answered_at),
        "ended_at": _iso(call.ended_at),
        "caller_number": call.caller_number,
        "caller_raw": call.caller_raw,
        "status": call.status,
        "wait_seconds": call.wait_seconds,
        "talk_seconds": call.talk_seconds,
        "answered_by": call.answered_by,
        "calltaker": calltaker,
        "hangup_by": call.hangup_by,
        "classification": call.classification,
        "incidents": incidents,
        "has_recording": bool(call.recording),
    }
