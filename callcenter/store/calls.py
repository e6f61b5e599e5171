"""The call repository: every call write the AGI routes and the AMI tracker make, and the reads of calls,
their timelines and the numbers that call.

Calls are written by two reporters at once (the AGI route and the AMI tracker), so the writes here
create-or-update; the transactions and their retries are the :class:`~callcenter.store.engine.Store`'s.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import Table, bindparam, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store.engine import Store, new_call_id, utcnow
from callcenter.store.flags import ABUSE_KINDS
from callcenter.store.models import Call, CallEvent, Incident, NumberFlag
from callcenter.store.signals import ALL

T = TypeVar("T")
#: The signal topic of a number's abuse flags (key: the number in E.164, or ``*``): routing on every
#: node re-reads them (``Calls.reload_flags``).
FLAGS_TOPIC = "flags"


@dataclass(frozen=True)
class FlagRecord:
    kind: str
    at: datetime
    note: str
    call_id: str | None


@dataclass(frozen=True)
class CallerHistory:
    """What a call-taker (and the routing) should know about a number before answering."""

    number: str
    previous_calls: int
    last_call_at: datetime | None
    flags: tuple[FlagRecord, ...]

    def abuse_count(self, since: datetime) -> int:
        return sum(1 for f in self.flags if f.kind in ABUSE_KINDS and f.at >= since)


def _no_fields() -> Mapping[str, Any]:
    return {}


@dataclass(frozen=True)
class EventWrite:
    """One timeline entry for :meth:`Calls.record_events`: what ``record_event`` takes, as a value that
    can wait in a batch (``at`` is when it happened, not when the batch is written)."""

    uniqueid: str
    kind: str
    at: datetime
    source: str = "ami"
    data: Mapping[str, Any] = field(default_factory=dict)
    update: Callable[[Call], None] | None = None
    #: Fields of the call created from this entry if none exists yet (asked only then: a caller number
    #: costs a parse); None: record the entry only for a known call.
    create: Callable[[], Mapping[str, Any]] | None = _no_fields


class Calls:
    """Calls, their timelines, and what is known about the numbers calling (history, flags)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # Built once: constructing a statement costs more than running it from the compiled cache. Timeline
        # entries go in as plain INSERTs: an ORM object per event cost more than the database's work.
        self._call_by_uniqueid = select(Call).where(Call.uniqueid == bindparam("uniqueid"))
        self._calls_by_uniqueid = select(Call).where(Call.uniqueid.in_(bindparam("uniqueids", expanding=True)))
        self._insert_events = insert(cast(Table, CallEvent.__table__))

    # -- calls -----------------------------------------------------------------------------------

    async def open_call(
        self,
        *,
        uniqueid: str,
        arrived_at: datetime,
        routed_by: str,
        linkedid: str | None = None,
        channel: str | None = None,
        caller_raw: str | None = None,
        caller_number: str | None = None,
        dialed: str | None = None,
        queue_priority: int | None = None,
        language: str | None = None,
        call_id: str | None = None,
        events: Sequence[tuple[str, datetime, Mapping[str, Any]]] = (),
        source: str = "agi",
    ) -> str:
        """Create the call row for ``uniqueid`` (with ``call_id`` when given) and its first timeline
        ``events`` in one transaction, or fill in a row the tracker created first; returns the row's id.

        Exactly once whoever calls: an event whose kind the call's timeline already has (another node
        opened the call first, or the AGI and AMI paths both did) is not written again."""
        fields: dict[str, Any] = {
            "linkedid": linkedid,
            "channel": channel,
            "caller_raw": caller_raw,
            "caller_number": caller_number,
            "dialed": dialed,
            "routed_by": routed_by,
            "queue_priority": queue_priority,
            "language": language,
            "arrived_at": arrived_at,
        }

        async def op(session: AsyncSession) -> str:
            # Locked, so that two nodes opening the same call (both hear every arrival) take turns, and
            # the second sees the first's timeline entries and adds none of the same kind.
            call = await session.scalar(self._call_by_uniqueid.with_for_update(), {"uniqueid": uniqueid})
            recorded: set[str] = set()
            if call is None:
                call = Call(id=call_id or new_call_id(), uniqueid=uniqueid, status="arrived", **fields)
                session.add(call)
                await session.flush()
            else:
                for key, value in fields.items():
                    if value is not None and (key != "arrived_at" or value < call.arrived_at):
                        setattr(call, key, value)
                if events:
                    kinds = sorted({k for k, _at, _d in events})
                    found = await session.scalars(
                        select(CallEvent.kind).where(CallEvent.call_id == call.id, CallEvent.kind.in_(kinds))
                    )
                    recorded = set(found)
            rows = [
                {"call_id": call.id, "kind": k, "at": at, "source": source, "data": dict(d)}
                for k, at, d in events
                if k not in recorded
            ]
            if rows:
                await (await session.connection()).execute(self._insert_events, rows)
            return call.id

        return await self._upsert("open_call", op)

    async def _upsert(self, what: str, op: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Two reporters (AGI and AMI) may create the same call at once: the loser retries as an update."""
        try:
            return await self.store.transaction(what, op)
        except IntegrityError:
            return await self.store.transaction(what, op)

    async def record_event(
        self,
        uniqueid: str,
        kind: str,
        *,
        source: str,
        at: datetime | None = None,
        data: Mapping[str, Any] | None = None,
        update: Callable[[Call], None] | None = None,
        create: Mapping[str, Any] | None = None,
    ) -> str:
        """Append to a call's timeline and let ``update`` adjust its summary, in one transaction.

        A call not seen before (our AGI server was down, or we restarted mid-call) is created from
        ``create`` so that fallback calls are tracked all the same.
        """
        fields = dict(create or {})
        write = EventWrite(uniqueid, kind, at or utcnow(), source, data or {}, update, lambda: fields)
        (call_id,) = await self._write_events(f"event {kind}", [write])
        assert call_id is not None  # ``create`` is always given: an unknown call is created
        return call_id

    async def record_events(self, writes: Sequence[EventWrite]) -> list[str | None]:
        """Append many timeline entries, in order, and apply their summary updates, in one transaction.

        What ``record_event`` does per entry, for a batch: one read for all the calls concerned, one
        commit, so the AMI tracker's cost per event stays small when events come fast. Returns each
        entry's call id, None for an entry with ``create=None`` whose call is unknown (not recorded).
        """
        return await self._write_events(f"{len(writes)} events", writes)

    async def _write_events(self, what: str, writes: Sequence[EventWrite]) -> list[str | None]:
        async def op(session: AsyncSession) -> list[str | None]:
            uniqueids = sorted({w.uniqueid for w in writes})
            calls = {c.uniqueid: c for c in await session.scalars(self._calls_by_uniqueid, {"uniqueids": uniqueids})}
            created = False
            ids: list[str | None] = []
            rows: list[dict[str, Any]] = []
            for w in writes:
                call = calls.get(w.uniqueid)
                if call is None:
                    if w.create is None:
                        ids.append(None)
                        continue
                    fields = {"routed_by": "fallback", "arrived_at": w.at, "status": "arrived", **w.create()}
                    call = Call(id=new_call_id(), uniqueid=w.uniqueid, **fields)
                    session.add(call)
                    calls[w.uniqueid] = call
                    created = True
                rows.append({"call_id": call.id, "kind": w.kind, "at": w.at, "source": w.source, "data": dict(w.data)})
                if w.update is not None:
                    w.update(call)
                ids.append(call.id)
            if created:
                await session.flush()  # the rows the events below refer to
            if rows:
                # One multi-row INSERT for the batch (not the ORM's bulk path either); summary updates
                # are flushed at commit.
                await (await session.connection()).execute(self._insert_events, rows)
            return ids

        return await self._upsert(what, op)

    async def get_call(self, call_id: str) -> Call | None:
        async def op(session: AsyncSession) -> Call | None:
            return await session.get(Call, call_id)

        return await self.store.transaction("get_call", op)

    async def call_by_uniqueid(self, uniqueid: str) -> Call | None:
        async def op(session: AsyncSession) -> Call | None:
            return await session.scalar(self._call_by_uniqueid, {"uniqueid": uniqueid})

        return await self.store.transaction("call_by_uniqueid", op)

    async def timeline(self, call_id: str) -> list[CallEvent]:
        async def op(session: AsyncSession) -> list[CallEvent]:
            rows = await session.scalars(
                select(CallEvent).where(CallEvent.call_id == call_id).order_by(CallEvent.at, CallEvent.id)
            )
            return list(rows)

        return await self.store.transaction("timeline", op)

    async def recent_calls(self, limit: int = 50) -> list[Call]:
        async def op(session: AsyncSession) -> list[Call]:
            rows = await session.scalars(select(Call).order_by(Call.arrived_at.desc()).limit(limit))
            return list(rows)

        return await self.store.transaction("recent_calls", op)

    async def open_calls(self) -> list[Call]:
        """Calls not yet ended: what a resync after a restart has to reconcile with Asterisk."""

        async def op(session: AsyncSession) -> list[Call]:
            rows = await session.scalars(select(Call).where(Call.ended_at.is_(None)))
            return list(rows)

        return await self.store.transaction("open_calls", op)

    # -- numbers ---------------------------------------------------------------------------------

    async def caller_history(
        self, number: str, *, flags_since: timedelta = timedelta(days=365), exclude_call_id: str | None = None
    ) -> CallerHistory:
        """Calls and flags of ``number``; ``exclude_call_id`` leaves out the call being answered now."""
        since = utcnow() - flags_since

        async def op(session: AsyncSession) -> CallerHistory:
            where = [Call.caller_number == number]
            if exclude_call_id is not None:
                where.append(Call.id != exclude_call_id)
            count, last = (
                await session.execute(select(func.count(Call.id), func.max(Call.arrived_at)).where(*where))
            ).one()
            flags = await session.scalars(
                select(NumberFlag)
                .where(NumberFlag.number == number, NumberFlag.created_at >= since)
                .order_by(NumberFlag.created_at.desc())
                .limit(50)
            )
            # max() keeps the column's UTC type, so this is already an aware datetime (or None).
            last_at: datetime | None = last
            return CallerHistory(
                number=number,
                previous_calls=int(count),
                last_call_at=last_at,
                flags=tuple(FlagRecord(f.kind, f.created_at, f.note, f.call_id) for f in flags),
            )

        return await self.store.transaction("caller_history", op)

    async def incidents_of_number(self, number: str, limit: int = 10) -> list[dict[str, Any]]:
        """Earlier incidents reported from this number: a caller's history is more than call counts."""

        async def op(session: AsyncSession) -> list[dict[str, Any]]:
            rows = await session.execute(
                select(Incident.id, Incident.reference, Incident.category, Incident.created_at, Incident.status)
                .join(Call, Incident.call_id == Call.id)
                .where(Call.caller_number == number)
                .order_by(Incident.created_at.desc())
                .limit(limit)
            )
            return [
                {"id": i, "reference": ref, "category": cat, "created_at": at.isoformat(), "status": status}
                for i, ref, cat, at, status in rows
            ]

        return await self.store.transaction("incidents_of_number", op)

    async def known_location(self, call_id: str) -> dict[str, Any] | None:
        """The location already taken for this call (an intake submitted before a reload), if any."""

        async def op(session: AsyncSession) -> dict[str, Any] | None:
            incident = await session.scalar(
                select(Incident).where(Incident.call_id == call_id).order_by(Incident.id.desc()).limit(1)
            )
            if incident is None:
                return None
            return {
                "address": incident.address,
                "district": incident.district,
                "subdistrict": incident.subdistrict,
                "landmark": incident.landmark,
                "latitude": incident.latitude,
                "longitude": incident.longitude,
            }

        return await self.store.transaction("known_location", op)

    async def load_flags(self, window: timedelta) -> int:
        """Fill the store's ``flags`` from the database (at start); returns how many flags it holds."""
        since = utcnow() - window

        async def op(session: AsyncSession) -> list[tuple[str, str, datetime]]:
            rows = await session.execute(
                select(NumberFlag.number, NumberFlag.kind, NumberFlag.created_at).where(
                    NumberFlag.created_at >= since, NumberFlag.kind.in_(sorted(ABUSE_KINDS))
                )
            )
            return [(n, k, a) for n, k, a in rows]

        self.store.flags.load(await self.store.transaction("load_flags", op))
        return len(self.store.flags)

    async def flag_number(
        self,
        number: str,
        kind: str,
        *,
        call_id: str | None = None,
        note: str = "",
        created_by: str | None = None,
        at: datetime | None = None,
    ) -> None:
        async def op(session: AsyncSession) -> None:
            session.add(
                NumberFlag(
                    number=number,
                    kind=kind,
                    call_id=call_id,
                    note=note,
                    created_by=created_by,
                    created_at=when,
                )
            )

        when = at or utcnow()
        await self.store.transaction("flag_number", op)
        self.store.flags.add(number, kind, when)
        await self.store.signals.changed(FLAGS_TOPIC, number)

    async def reload_flags(self, number: str, window: timedelta) -> int:
        """Re-read one number's abuse flags into the index (``number`` :data:`~callcenter.store.signals.ALL`:
        every number's), after a signal that they changed on some node; returns the number's count."""
        if number == ALL:
            return await self.load_flags(window)
        since = utcnow() - window

        async def op(session: AsyncSession) -> list[tuple[str, datetime]]:
            rows = await session.execute(
                select(NumberFlag.kind, NumberFlag.created_at).where(
                    NumberFlag.number == number,
                    NumberFlag.created_at >= since,
                    NumberFlag.kind.in_(sorted(ABUSE_KINDS)),
                )
            )
            return [(k, a) for k, a in rows]

        flags = await self.store.transaction("reload_flags", op)
        self.store.flags.replace(number, flags)
        return len(flags)
