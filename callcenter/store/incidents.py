"""Incidents, their audit trail, intake drafts and call classification, on top of the call store.

An incident is what agencies act on, so every change to one is kept with who made it; drafts make
a reload or a dropped link during a call lose nothing; classifying a call as a prank, hoax or silent
call flags the caller's number through ``Calls.flag_number`` — the one path that also updates the
in-memory index the AGI routing consults, so the very next call from that number is routed with it.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any

import structlog
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.forms.categories import CLASSIFICATION_CODES, FLAGGING_CLASSIFICATIONS
from callcenter.forms.intake import FIELDS as INTAKE_FIELDS
from callcenter.store.calls import FLAGS_TOPIC, CallerHistory, Calls
from callcenter.store.engine import Store, utcnow
from callcenter.store.flags import ABUSE_KINDS
from callcenter.store.models import Call, Draft, Incident, IncidentAudit, NumberFlag, User
from callcenter.store.signals import ALL

log = structlog.get_logger("callcenter.incidents")

#: Columns of an incident a call-taker edits are exactly the intake's fields; the rest is set by the system.
EDITABLE = INTAKE_FIELDS
#: Attempts at a free reference number before giving up; each loser of a race retries once more.
_REFERENCE_ATTEMPTS = 20


#: Drafts kept per user: a call-taker has a few calls' forms open at most; past this the stalest go
#: (a session cannot fill the database with 32 KiB drafts under made-up keys).
MAX_DRAFTS_PER_USER = 50


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    user: str | None
    action: str
    changes: dict[str, Any]


@dataclass(frozen=True)
class PrankEntry:
    number: str
    kind: str
    at: datetime
    call_id: str | None
    note: str
    by: str | None


@dataclass(frozen=True)
class NumberHistory:
    caller: CallerHistory
    incidents: tuple[Incident, ...]


@dataclass(frozen=True)
class Classified:
    call_id: str
    classification: str
    #: Whether this classification wrote a new flag against the caller's number.
    flagged: bool


def _editable(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The intake's fields as column values; ``flags`` copied, so the row and its audit own their lists."""
    unknown = set(fields) - set(EDITABLE)
    if unknown:
        raise ValueError(f"not incident fields: {sorted(unknown)}")
    values = dict(fields)
    if "flags" in values:
        values["flags"] = list(values["flags"] or [])
    return values


class Incidents:
    """Incident records for the console API; every method is one ``Store.transaction`` (plus retries).

    ``tz`` decides the day in a reference number: the centre reads ``112-20250101-0001`` as its own
    calendar day, so the default is the server's local zone (set ``TZ`` to the centre's, e.g.
    Asia/Makassar for Bali). ``flags_window`` must match the routing's ``prank_window_days``: it is
    the window the in-memory flag index is reloaded with when a flag is withdrawn. ``calls`` is the app's
    call repository (flags and caller histories go through it); without one, a repository on ``store``.
    """

    def __init__(
        self,
        store: Store,
        *,
        calls: Calls | None = None,
        tz: tzinfo | None = None,
        flags_window: timedelta = timedelta(days=30),
    ) -> None:
        self.store = store
        self.calls = calls if calls is not None else Calls(store)
        self.tz = tz
        self.flags_window = flags_window
        # Classification reads "is this call flagged yet" and then flags: serialised so that a
        # double-clicked button cannot flag one call twice (within this process).
        self._classify_lock = asyncio.Lock()

    # -- incidents ---------------------------------------------------------------------------------

    def _day(self, at: datetime) -> str:
        local = at.astimezone(self.tz) if self.tz is not None else at.astimezone()
        return local.strftime("%Y%m%d")

    async def create(self, fields: Mapping[str, Any], *, call_id: str | None, user_id: int | None) -> Incident:
        """Store a validated intake; the reference is the day's next number, race-safe.

        Two call-takers saving at once may compute the same number; the unique constraint rejects
        the second, which then takes the next one. Raises LookupError for an unknown ``call_id``
        (checked first, so that an IntegrityError can only mean a taken reference).
        """
        values = _editable(fields)
        for attempt in range(_REFERENCE_ATTEMPTS):
            now = utcnow()
            prefix = f"112-{self._day(now)}-"

            async def op(session: AsyncSession, now: datetime = now, prefix: str = prefix) -> Incident:
                if call_id is not None and await session.get(Call, call_id) is None:
                    raise LookupError(f"no call {call_id}")
                last = await session.scalar(
                    select(Incident.reference)
                    .where(Incident.reference.like(prefix + "%"))
                    # Longest first: 10000 sorts after 9999 only by length.
                    .order_by(func.length(Incident.reference).desc(), Incident.reference.desc())
                    .limit(1)
                )
                seq = int(last.rsplit("-", 1)[1]) + 1 if last else 1
                incident = Incident(
                    reference=f"{prefix}{seq:04d}",
                    call_id=call_id,
                    status="new",
                    created_by=user_id,
                    created_at=now,
                    updated_at=now,
                    **values,
                )
                session.add(incident)
                await session.flush()
                changes = {"call_id": [None, call_id], **{k: [None, v] for k, v in values.items()}}
                session.add(
                    IncidentAudit(incident_id=incident.id, user_id=user_id, at=now, action="created", changes=changes)
                )
                if user_id is not None:
                    await session.execute(
                        delete(Draft).where(Draft.user_id == user_id, Draft.call_key == (call_id or "none"))
                    )
                return incident

            try:
                incident = await self.store.transaction("incident_create", op)
            except IntegrityError:
                log.info("incident.reference_taken", attempt=attempt + 1)
                await asyncio.sleep(0.005 * (attempt + 1))
                continue
            log.info("incident.created", id=incident.id, reference=incident.reference, call_id=call_id)
            return incident
        raise RuntimeError("no free incident reference after repeated attempts")

    async def update(self, incident_id: int, fields: Mapping[str, Any], *, user_id: int | None) -> Incident:
        """Apply validated changes; the audit row lists only what really changed (nothing: no row).

        Raises LookupError for an unknown incident.
        """
        values = _editable(fields)

        async def op(session: AsyncSession) -> Incident:
            incident = await session.get(Incident, incident_id, with_for_update=True)
            if incident is None:
                raise LookupError(f"no incident {incident_id}")
            # Flags come validated in one canonical order, so a list compares equal when the set is.
            changes = {
                name: [getattr(incident, name), value]
                for name, value in values.items()
                if getattr(incident, name) != value
            }
            if not changes:
                return incident
            now = utcnow()
            for name, (_old, new) in changes.items():
                setattr(incident, name, new)
            incident.updated_at = now
            session.add(
                IncidentAudit(incident_id=incident.id, user_id=user_id, at=now, action="updated", changes=changes)
            )
            return incident

        return await self.store.transaction("incident_update", op)

    async def get(self, incident_id: int) -> Incident | None:
        async def op(session: AsyncSession) -> Incident | None:
            return await session.get(Incident, incident_id)

        return await self.store.transaction("incident_get", op)

    async def audit(self, incident_id: int) -> list[AuditEntry]:
        """The incident's changes, oldest first, with usernames (None once a user is deleted)."""

        async def op(session: AsyncSession) -> list[AuditEntry]:
            rows = await session.execute(
                select(IncidentAudit, User.username)
                .outerjoin(User, User.id == IncidentAudit.user_id)
                .where(IncidentAudit.incident_id == incident_id)
                .order_by(IncidentAudit.at, IncidentAudit.id)
            )
            return [AuditEntry(a.at, username, a.action, dict(a.changes)) for a, username in rows]

        return await self.store.transaction("incident_audit", op)

    async def list(self, limit: int = 50, call_id: str | None = None) -> list[Incident]:
        """Newest first; ``call_id`` narrows to one call's incidents."""

        async def op(session: AsyncSession) -> list[Incident]:
            query = select(Incident).order_by(Incident.created_at.desc(), Incident.id.desc()).limit(limit)
            if call_id is not None:
                query = query.where(Incident.call_id == call_id)
            return list(await session.scalars(query))

        return await self.store.transaction("incident_list", op)

    # -- drafts ----------------------------------------------------------------------------------

    async def get_draft(self, user_id: int, call_key: str) -> Draft | None:
        async def op(session: AsyncSession) -> Draft | None:
            return await session.get(Draft, (user_id, call_key))

        return await self.store.transaction("draft_get", op)

    async def put_draft(self, user_id: int, call_key: str, data: Mapping[str, Any]) -> datetime:
        """Insert or replace the user's draft for ``call_key``; returns its new ``updated_at``.

        Saves arrive every few seconds while typing, and two may overlap after a reconnect: the
        loser of an insert race retries as an update.
        """
        now = utcnow()

        async def op(session: AsyncSession) -> datetime:
            draft = await session.get(Draft, (user_id, call_key))
            if draft is None:
                session.add(Draft(user_id=user_id, call_key=call_key, data=dict(data), updated_at=now))
                await session.flush()
                # A quota, not a refusal: what is being typed now is kept, the stalest drafts go.
                stale = list(
                    await session.scalars(
                        select(Draft.call_key)
                        .where(Draft.user_id == user_id)
                        .order_by(Draft.updated_at.desc(), Draft.call_key)
                        .offset(MAX_DRAFTS_PER_USER)
                    )
                )
                if stale:
                    await session.execute(delete(Draft).where(Draft.user_id == user_id, Draft.call_key.in_(stale)))
            else:
                draft.data = dict(data)
                draft.updated_at = now
            return now

        try:
            return await self.store.transaction("draft_put", op)
        except IntegrityError:
            return await self.store.transaction("draft_put", op)

    async def delete_draft(self, user_id: int, call_key: str) -> bool:
        async def op(session: AsyncSession) -> bool:
            result = await session.execute(delete(Draft).where(Draft.user_id == user_id, Draft.call_key == call_key))
            return bool(getattr(result, "rowcount", 0))

        return await self.store.transaction("draft_delete", op)

    # -- classification --------------------------------------------------------------------------

    async def classify(self, call_id: str, classification: str, *, user_id: int | None, note: str = "") -> Classified:
        """Record what the call was; prank/hoax/silent flag the caller's number once per call.

        Re-classifying keeps one flag per call: prank → hoax relabels the flag, prank → genuine
        withdraws it (a misclick must not push a genuine caller's next emergency down the queue),
        and the routing's index is reloaded so the withdrawal counts at once. Raises LookupError
        for an unknown call and ValueError for an unknown classification.
        """
        if classification not in CLASSIFICATION_CODES:
            raise ValueError(f"unknown classification {classification!r}")
        abusive = classification in FLAGGING_CLASSIFICATIONS

        async def op(session: AsyncSession) -> tuple[str | None, str | None, str | None]:
            call = await session.get(Call, call_id)
            if call is None:
                raise LookupError(f"no call {call_id}")
            call.classification = classification
            call.classified_by = user_id
            call.classified_at = utcnow()
            username = await session.scalar(select(User.username).where(User.id == user_id)) if user_id else None
            flags = list(
                await session.scalars(
                    select(NumberFlag).where(NumberFlag.call_id == call_id, NumberFlag.kind.in_(sorted(ABUSE_KINDS)))
                )
            )
            withdrawn = False
            for flag in flags:
                if abusive:
                    flag.kind = classification
                else:
                    await session.delete(flag)
                    withdrawn = True
            number = call.caller_number
            needs_flag = abusive and not flags and number is not None and number.startswith("+")
            return (number if needs_flag else None), username, ((number or ALL) if withdrawn else None)

        async with self._classify_lock:
            to_flag, username, withdrawn = await self.store.transaction("classify", op)
            if to_flag is not None:
                # Outside the transaction above: flag_number keeps the routing index in step. Should it
                # fail, the classification stands unflagged and repeating the request flags it.
                await self.calls.flag_number(to_flag, classification, call_id=call_id, note=note, created_by=username)
            if withdrawn is not None:
                await self.calls.load_flags(self.flags_window)
                await self.store.signals.changed(FLAGS_TOPIC, withdrawn)
        log.info("call.classified", call_id=call_id, classification=classification, flagged=to_flag is not None)
        return Classified(call_id, classification, to_flag is not None)

    # -- numbers ---------------------------------------------------------------------------------

    async def history(self, number: str) -> NumberHistory:
        """What the console shows about a number: earlier calls, flags and incidents from its calls."""
        caller = await self.calls.caller_history(number)

        async def op(session: AsyncSession) -> list[Incident]:
            rows = await session.scalars(
                select(Incident)
                .join(Call, Call.id == Incident.call_id)
                .where(Call.caller_number == number)
                .order_by(Incident.created_at.desc())
                .limit(50)
            )
            return list(rows)

        incidents = await self.store.transaction("number_incidents", op)
        return NumberHistory(caller, tuple(incidents))

    async def prank_log(self, limit: int = 100) -> builtins.list[PrankEntry]:
        """Prank, hoax and silent flags, newest first: the supervisor's view of repeat offenders."""

        async def op(session: AsyncSession) -> list[PrankEntry]:
            rows = await session.scalars(
                select(NumberFlag)
                .where(NumberFlag.kind.in_(sorted(ABUSE_KINDS)))
                .order_by(NumberFlag.created_at.desc(), NumberFlag.id.desc())
                .limit(limit)
            )
            return [PrankEntry(f.number, f.kind, f.created_at, f.call_id, f.note, f.created_by) for f in rows]

        return await self.store.transaction("prank_log", op)
