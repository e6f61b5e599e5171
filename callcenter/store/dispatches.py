"""Dispatches as the web side sees them: read with their attempts and updates, and the agency's own writes.

The dispatch core (``callcenter/dispatch/dispatcher.py``) creates dispatches and attempts and records
phone acceptances; this module never does. What it adds is what an agency officer does in the browser:
accept a dispatch whose phone call they missed, and report progress (with a note and a photo) until the
incident is resolved. Status changes are conditional updates (``WHERE status = <what we read>``) so
that two officers clicking at once, or a phone acceptance racing a web one, cannot both win.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store.engine import Store, utcnow
from callcenter.store.models import Dispatch, DispatchAttempt, DispatchUpdate, Incident, User
from callcenter.store.quota import QuotaExceeded

#: Stored photo names (``DispatchUpdate.photo``): ``<dispatch id>-<32 hex>.<jpg|png>``. Whatever reads
#: or deletes a photo file checks the name against this first: nothing else is ever touched on disk.
PHOTO_NAME = re.compile(r"[0-9]{1,10}-[0-9a-f]{32}\.(jpg|png)")

log = structlog.get_logger("callcenter.dispatches")

#: The change signal's topic of a dispatch row (``store/signals.py``; key: the dispatch id): every node's
#: consoles re-read it, and the leader looks for work (a request made on another node).
SIGNAL_TOPIC = "dispatch"
#: Every status a dispatch can have (``dispatches.status``).
STATUSES = ("calling", "accepted", "dispatched", "en_route", "on_scene", "resolved", "cancelled", "failed")
#: Statuses in which the agency is being called or is working on it: dispatching the same agency again
#: returns the existing row instead of calling twice, and an incident with one is not rated yet.
ACTIVE = ("calling", "accepted", "dispatched", "en_route", "on_scene")
#: The agency's progress after acceptance, in order; each step may only go to the next one.
PROGRESS = ("accepted", "dispatched", "en_route", "on_scene", "resolved")
#: Statuses after which nothing changes any more.
FINAL = frozenset({"resolved", "cancelled"})
#: What an agency may report through ``add_update`` (acceptance has its own path).
UPDATE_STATUSES = ("dispatched", "en_route", "on_scene", "resolved", "cancelled")
#: A dispatch the agency may still accept from the web: the phone is ringing, or every line failed.
WEB_ACCEPTABLE = frozenset({"calling", "failed"})
#: Statuses at which a further report of the *same* status is a progress note (e.g. a second photo
#: from the scene), not a transition.
REPEATABLE = frozenset({"dispatched", "en_route", "on_scene"})

#: Incident fields an agency needs to respond (the briefing's content, plus the reporter's notes).
INCIDENT_FIELDS = (
    "id",
    "reference",
    "status",
    "category",
    "priority",
    "reporter_name",
    "callback_number",
    "address",
    "district",
    "subdistrict",
    "landmark",
    "latitude",
    "longitude",
    "victims_count",
    "victims_condition",
    "access_route",
    "notes",
)


#: Agency reports per dispatch, and photos among them: each photo is up to ``upload_max_bytes`` on disk.
MAX_UPDATES = 200
MAX_PHOTOS = 30


class TransitionError(ValueError):
    """The requested status does not follow from the dispatch's current one."""

    def __init__(self, current: str, requested: str) -> None:
        super().__init__(f"cannot go from {current} to {requested}")
        self.current = current
        self.requested = requested


def allowed_next(current: str) -> frozenset[str]:
    """Statuses an agency update may set from ``current`` (the ``accepted→…→resolved`` chain, or
    ``cancelled`` from anything not final; repeating a working status adds a note)."""
    if current in FINAL:
        return frozenset()
    options = {"cancelled"}
    if current in PROGRESS:
        index = PROGRESS.index(current)
        if index + 1 < len(PROGRESS):
            options.add(PROGRESS[index + 1])
    if current in REPEATABLE:
        options.add(current)
    return frozenset(options)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def photo_url(dispatch_id: int, name: str) -> str:
    return f"/api/dispatches/{dispatch_id}/photos/{name}"


def attempt_json(attempt: DispatchAttempt) -> dict[str, Any]:
    return {
        "id": attempt.id,
        "line": attempt.line,
        "via": attempt.via,
        "started_at": _iso(attempt.started_at),
        "ended_at": _iso(attempt.ended_at),
        "outcome": attempt.outcome,
        "reason": attempt.reason,
        "hangup_cause": attempt.hangup_cause,
    }


@dataclass(frozen=True)
class UpdateView:
    update: DispatchUpdate
    #: Username of the officer who reported it (None once the user is deleted).
    user: str | None

    def as_json(self) -> dict[str, Any]:
        u = self.update
        return {
            "id": u.id,
            "at": _iso(u.at),
            "status": u.status,
            "note": u.note,
            "photo": u.photo,
            "photo_url": photo_url(u.dispatch_id, u.photo) if u.photo else None,
            "user": self.user,
            # Where the officer's browser was at the report (the map's last position), if it said.
            "position": (
                {"latitude": u.latitude, "longitude": u.longitude, "accuracy_m": u.accuracy_m}
                if u.latitude is not None and u.longitude is not None
                else None
            ),
        }


def incident_summary(incident: Incident) -> dict[str, Any]:
    body: dict[str, Any] = {name: getattr(incident, name) for name in INCIDENT_FIELDS}
    body.update(
        created_at=_iso(incident.created_at),
        sla_due_at=_iso(incident.sla_due_at),
        sla_met_at=_iso(incident.sla_met_at),
        sla_breached_at=_iso(incident.sla_breached_at),
    )
    return body


def dispatch_json(
    d: Dispatch, attempts: Iterable[DispatchAttempt] = (), updates: Iterable[UpdateView] | None = None
) -> dict[str, Any]:
    """The contract's ``Dispatch`` (docs/dispatch.md) with its attempts, and its updates when given.

    The one serialiser of a dispatch row: the API, the agency screens and the dispatch core's live
    messages all use it. The core's messages leave ``updates`` out (it does not read them), and the
    consoles keep the updates they have when a message has none.
    """
    body: dict[str, Any] = {
        "id": d.id,
        "incident_id": d.incident_id,
        "agency": d.agency,
        "status": d.status,
        "created_by": d.created_by,
        "created_at": _iso(d.created_at),
        "updated_at": _iso(d.updated_at),
        "accepted_at": _iso(d.accepted_at),
        "accepted_line": d.accepted_line,
        "accepted_via": d.accepted_via,
        "attempts": [attempt_json(a) for a in attempts],
    }
    if updates is not None:
        body["updates"] = [u.as_json() for u in updates]
    return body


@dataclass(frozen=True)
class DispatchView:
    """A dispatch with what the screens show about it: how it was called, what the agency reported."""

    dispatch: Dispatch
    attempts: tuple[DispatchAttempt, ...] = ()
    updates: tuple[UpdateView, ...] = ()
    incident: Incident | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self, *, with_incident: bool = True) -> dict[str, Any]:
        """The contract's ``Dispatch`` (docs/dispatch.md) plus attempts, updates and, for agency
        screens, the incident's fields (a new dispatch must be actionable without a second request)."""
        body = dispatch_json(self.dispatch, self.attempts, self.updates)
        if with_incident and self.incident is not None:
            body["incident"] = incident_summary(self.incident)
        body.update(self.extra)
        return body


async def _views(session: AsyncSession, dispatches: Sequence[Dispatch], *, with_incident: bool) -> list[DispatchView]:
    """Attach attempts, updates (and incidents) to ``dispatches`` with one query each, not one per row."""
    if not dispatches:
        return []
    ids = [d.id for d in dispatches]
    attempts: dict[int, list[DispatchAttempt]] = {i: [] for i in ids}
    for attempt in await session.scalars(
        select(DispatchAttempt)
        .where(DispatchAttempt.dispatch_id.in_(ids))
        .order_by(DispatchAttempt.started_at, DispatchAttempt.id)
    ):
        attempts[attempt.dispatch_id].append(attempt)
    updates: dict[int, list[UpdateView]] = {i: [] for i in ids}
    rows = await session.execute(
        select(DispatchUpdate, User.username)
        .outerjoin(User, User.id == DispatchUpdate.user_id)
        .where(DispatchUpdate.dispatch_id.in_(ids))
        .order_by(DispatchUpdate.at, DispatchUpdate.id)
    )
    for upd, username in rows:
        updates[upd.dispatch_id].append(UpdateView(upd, username))
    incidents: dict[int, Incident] = {}
    if with_incident:
        incident_ids = sorted({d.incident_id for d in dispatches})
        incidents = {i.id: i for i in await session.scalars(select(Incident).where(Incident.id.in_(incident_ids)))}
    return [
        DispatchView(d, tuple(attempts[d.id]), tuple(updates[d.id]), incidents.get(d.incident_id)) for d in dispatches
    ]


class Dispatches:
    """Reads and agency writes on dispatches; every method is one ``Store.transaction``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def list_for_incident(self, incident_id: int, *, agency: str | None = None) -> list[DispatchView]:
        """The incident's dispatches, oldest first (the order they were sent); ``agency`` narrows to one."""

        async def op(session: AsyncSession) -> list[DispatchView]:
            query = select(Dispatch).where(Dispatch.incident_id == incident_id).order_by(Dispatch.id)
            if agency is not None:
                query = query.where(Dispatch.agency == agency)
            return await _views(session, list(await session.scalars(query)), with_incident=False)

        return await self.store.transaction("dispatch_list_incident", op)

    async def list_for_agency(self, agency: str, limit: int = 50) -> list[DispatchView]:
        """The agency's dispatches, newest first, each with its incident."""

        async def op(session: AsyncSession) -> list[DispatchView]:
            rows = await session.scalars(
                select(Dispatch)
                .where(Dispatch.agency == agency)
                .order_by(Dispatch.created_at.desc(), Dispatch.id.desc())
                .limit(limit)
            )
            return await _views(session, list(rows), with_incident=True)

        return await self.store.transaction("dispatch_list_agency", op)

    async def get(self, dispatch_id: int) -> DispatchView | None:
        async def op(session: AsyncSession) -> DispatchView | None:
            dispatch = await session.get(Dispatch, dispatch_id)
            if dispatch is None:
                return None
            return (await _views(session, [dispatch], with_incident=True))[0]

        return await self.store.transaction("dispatch_get", op)

    async def get_many(self, dispatch_ids: Iterable[int]) -> list[DispatchView]:
        """Several dispatches by id (in id order), e.g. the ones the dispatch core just created."""
        ids = sorted(set(dispatch_ids))

        async def op(session: AsyncSession) -> list[DispatchView]:
            rows = await session.scalars(select(Dispatch).where(Dispatch.id.in_(ids)).order_by(Dispatch.id))
            return await _views(session, list(rows), with_incident=True)

        return await self.store.transaction("dispatch_get_many", op) if ids else []

    async def photo_belongs(self, dispatch_id: int, name: str) -> bool:
        """Whether ``name`` is a photo of one of this dispatch's updates: the only photos we serve."""

        async def op(session: AsyncSession) -> bool:
            found = await session.scalar(
                select(DispatchUpdate.id)
                .where(DispatchUpdate.dispatch_id == dispatch_id, DispatchUpdate.photo == name)
                .limit(1)
            )
            return found is not None

        return await self.store.transaction("dispatch_photo", op)

    async def add_update(
        self,
        dispatch_id: int,
        user_id: int | None,
        status: str,
        note: str = "",
        photo: str | None = None,
        position: tuple[float, float, float | None] | None = None,
    ) -> DispatchView:
        """Record an agency report and move the dispatch to ``status``.

        Raises LookupError for an unknown dispatch, ValueError for a status agencies don't report,
        and TransitionError when ``status`` does not follow the current one (including a concurrent
        change that got there first).
        """
        if status not in UPDATE_STATUSES:
            raise ValueError(f"unknown status {status!r}")

        async def op(session: AsyncSession) -> DispatchView:
            dispatch = await session.get(Dispatch, dispatch_id)
            if dispatch is None:
                raise LookupError(f"no dispatch {dispatch_id}")
            current = dispatch.status
            if status not in allowed_next(current):
                raise TransitionError(current, status)
            counts = (
                await session.execute(
                    select(func.count(DispatchUpdate.id), func.count(DispatchUpdate.photo)).where(
                        DispatchUpdate.dispatch_id == dispatch_id
                    )
                )
            ).one()
            if counts[0] >= MAX_UPDATES or (photo is not None and counts[1] >= MAX_PHOTOS):
                # Repeatable statuses ("on scene" again, with a photo) are the officer's diary, not storage.
                raise QuotaExceeded(f"at most {MAX_UPDATES} updates and {MAX_PHOTOS} photos per dispatch")
            now = utcnow()
            result = await session.execute(
                update(Dispatch)
                .where(Dispatch.id == dispatch_id, Dispatch.status == current)
                .values(status=status, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            if getattr(result, "rowcount", 0) != 1:
                raise TransitionError(current, status)
            lat, lon, acc = position if position is not None else (None, None, None)
            session.add(
                DispatchUpdate(
                    dispatch_id=dispatch_id,
                    user_id=user_id,
                    at=now,
                    status=status,
                    note=note,
                    photo=photo,
                    latitude=lat,
                    longitude=lon,
                    accuracy_m=acc,
                )
            )
            await session.flush()
            await session.refresh(dispatch)
            return (await _views(session, [dispatch], with_incident=True))[0]

        view = await self.store.transaction("dispatch_update", op)
        log.info("dispatch.update", dispatch_id=dispatch_id, status=status, photo=photo is not None)
        return view

    async def record_acceptance(self, dispatch_id: int, user_id: int | None) -> DispatchView:
        """Note who accepted in the browser, after the dispatch core accepted the dispatch itself
        (it stops the ringing lines; the timeline should still say which officer it was)."""

        async def op(session: AsyncSession) -> DispatchView:
            dispatch = await session.get(Dispatch, dispatch_id)
            if dispatch is None:
                raise LookupError(f"no dispatch {dispatch_id}")
            at = dispatch.accepted_at or utcnow()
            session.add(DispatchUpdate(dispatch_id=dispatch_id, user_id=user_id, at=at, status="accepted", note=""))
            await session.flush()
            return (await _views(session, [dispatch], with_incident=True))[0]

        return await self.store.transaction("dispatch_accept_note", op)

    async def accept_from_web(self, dispatch_id: int, user_id: int | None, username: str) -> DispatchView:
        """The officer accepts in the browser (the phone was missed, or every line failed).

        Only while ``calling``/``failed``: a dispatch already accepted by phone stays as it was.
        Also meets the incident's service level if nothing had yet. Raises LookupError for an
        unknown dispatch and TransitionError when it is past accepting.
        """

        async def op(session: AsyncSession) -> DispatchView:
            dispatch = await session.get(Dispatch, dispatch_id)
            if dispatch is None:
                raise LookupError(f"no dispatch {dispatch_id}")
            current = dispatch.status
            if current not in WEB_ACCEPTABLE:
                raise TransitionError(current, "accepted")
            now = utcnow()
            result = await session.execute(
                update(Dispatch)
                .where(Dispatch.id == dispatch_id, Dispatch.status.in_(sorted(WEB_ACCEPTABLE)))
                .values(
                    status="accepted",
                    updated_at=now,
                    accepted_at=now,
                    accepted_line=f"web:{username}"[:128],
                    accepted_via="web",
                )
                .execution_options(synchronize_session=False)
            )
            if getattr(result, "rowcount", 0) != 1:
                raise TransitionError(current, "accepted")
            await session.execute(
                update(Incident)
                .where(Incident.id == dispatch.incident_id, Incident.sla_met_at.is_(None))
                .values(sla_met_at=now)
                .execution_options(synchronize_session=False)
            )
            session.add(DispatchUpdate(dispatch_id=dispatch_id, user_id=user_id, at=now, status="accepted", note=""))
            await session.flush()
            await session.refresh(dispatch)
            return (await _views(session, [dispatch], with_incident=True))[0]

        view = await self.store.transaction("dispatch_accept_web", op)
        log.info("dispatch.accepted", dispatch_id=dispatch_id, via="web", by=username)
        return view
