"""The call store: every write the AGI routes and the AMI tracker make, behind one object.

Writes retry through database hiccups (a locked SQLite file, a PostgreSQL restart) for a bounded
time; a write that still fails is logged whole, so the record survives in the log even then.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

import structlog
from asyncpg.exceptions import TargetServerAttributeNotMatched  # type: ignore[import-untyped]
from sqlalchemy import Table, bindparam, event, func, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from callcenter.store.flags import ABUSE_KINDS, FlagIndex
from callcenter.store.migrate import upgrade_connection
from callcenter.store.models import Call, CallEvent, Incident, NumberFlag

T = TypeVar("T")
#: Seconds past which a transaction is logged by name (waiting for the connection included).
SLOW_TRANSACTION = 5.0
log = structlog.get_logger("callcenter.store")


class StoreUnavailable(RuntimeError):
    """The database did not accept a write within the retry window."""


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
    """One timeline entry for :meth:`Store.record_events`: what ``record_event`` takes, as a value that
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


def new_call_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL lets the web and the tracker read while a write commits; busy_timeout rides out short locks."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


#: SQLSTATE classes worth retrying: connection exception, transaction rollback (serialization failure,
#: deadlock), insufficient resources (too many connections), operator intervention (shutting down,
#: starting up), system error.
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
#: SQLite result codes (and their extended variants) worth retrying: locks, a file that cannot be opened
#: (yet), I/O errors.
_TRANSIENT_SQLITE = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_PROTOCOL")


def _no_primary_yet(orig: BaseException | None) -> bool:
    """asyncpg reached the hosts of a several-host URL but none is read-write: a failover in progress
    (the old primary demoted or gone, the new one not promoted yet), which ends by itself."""
    while orig is not None:
        if isinstance(orig, TargetServerAttributeNotMatched):
            return True
        orig = orig.__cause__
    return False


def _transient(exc: BaseException) -> bool:
    """Whether a failed write may succeed if tried again: the database was unreachable or busy."""
    if isinstance(exc, OSError | PoolTimeout):  # connection refused/reset, timeouts; no pooled connection
        # free in time (SQLite has one: a burst of writes on a starved machine queues behind it)
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if isinstance(orig, OSError) or _no_primary_yet(orig):
        return True
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(sqlstate, str) and sqlstate:
        return sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES
    sqlite_error = getattr(orig, "sqlite_errorname", None)
    if isinstance(sqlite_error, str):
        return sqlite_error.startswith(_TRANSIENT_SQLITE)
    # A driver that tells us nothing more: trust the DB-API class.
    return isinstance(exc, OperationalError | InterfaceError)


def make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # One connection: SQLite has one writer anyway, and threads queueing for its lock cost more
        # than queueing in the pool (bench/p2_agi.py measured p99 at 50 calls/s: 27 ms → 4 ms).
        engine = create_async_engine(url, pool_size=1, max_overflow=0)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


class Store:
    def __init__(self, engine: AsyncEngine, *, retry_for: float = 30.0) -> None:
        self.engine = engine
        self.retry_for = retry_for
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        #: Abuse flags in memory, so routing needs no query; see ``load_flags``.
        self.flags = FlagIndex()
        # Built once: constructing a statement costs more than running it from the compiled cache. Timeline
        # entries go in as plain INSERTs: an ORM object per event cost more than the database's work.
        self._call_by_uniqueid = select(Call).where(Call.uniqueid == bindparam("uniqueid"))
        self._calls_by_uniqueid = select(Call).where(Call.uniqueid.in_(bindparam("uniqueids", expanding=True)))
        self._insert_events = insert(cast(Table, CallEvent.__table__))
        #: Called with each transaction's duration in seconds (the app's /metrics histogram); None: nobody asks.
        self.on_latency: Callable[[float], None] | None = None

    @classmethod
    def from_url(cls, url: str, *, retry_for: float = 30.0) -> Store:
        return cls(make_engine(url), retry_for=retry_for)

    async def close(self) -> None:
        await self.engine.dispose()

    async def upgrade(self) -> None:
        """Bring the schema to the newest Alembic revision (what ``callcenter db upgrade`` runs)."""
        async with self.engine.begin() as conn:
            await conn.run_sync(upgrade_connection)

    async def transaction(self, what: str, op: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run ``op`` in a transaction, retrying on connection-level failures with backoff.

        Only failures that can go away by themselves (see :func:`_transient`) are retried, up to
        ``retry_for`` seconds, with a last attempt at the deadline; anything else (bad data, a missing
        table) is raised at once rather than held for the whole window and reported as an outage.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            return await self._transaction(what, op, started + self.retry_for)
        finally:
            took = loop.time() - started
            if self.on_latency is not None:
                self.on_latency(took)
            if took > SLOW_TRANSACTION:
                # Which work holds the database (SQLite has one connection: everyone else waits behind it).
                log.warning("store.slow_transaction", what=what, seconds=round(took, 2))

    async def _transaction(self, what: str, op: Callable[[AsyncSession], Awaitable[T]], deadline: float) -> T:
        loop = asyncio.get_running_loop()
        delay = 0.05
        while True:
            try:
                async with self._sessions() as session, session.begin():
                    return await op(session)
            except IntegrityError:
                raise
            except (DBAPIError, OSError, PoolTimeout) as exc:
                remaining = deadline - loop.time()
                if not _transient(exc):
                    raise
                if remaining <= 0:
                    raise StoreUnavailable(f"{what}: {exc}") from exc
                log.warning("store.retry", what=what, error=str(exc).splitlines()[0], delay=delay)
                await asyncio.sleep(min(delay, remaining))
                delay = min(delay * 2, 2.0)

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
        ``events`` in one transaction, or fill in a row the tracker created first; returns the row's id."""
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
            call = await session.scalar(self._call_by_uniqueid, {"uniqueid": uniqueid})
            if call is None:
                call = Call(id=call_id or new_call_id(), uniqueid=uniqueid, status="arrived", **fields)
                session.add(call)
                await session.flush()
            else:
                for key, value in fields.items():
                    if value is not None and (key != "arrived_at" or value < call.arrived_at):
                        setattr(call, key, value)
            rows = [{"call_id": call.id, "kind": k, "at": at, "source": source, "data": dict(d)} for k, at, d in events]
            if rows:
                await (await session.connection()).execute(self._insert_events, rows)
            return call.id

        return await self._upsert("open_call", op)

    async def _upsert(self, what: str, op: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Two reporters (AGI and AMI) may create the same call at once: the loser retries as an update."""
        try:
            return await self.transaction(what, op)
        except IntegrityError:
            return await self.transaction(what, op)

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

        return await self.transaction("get_call", op)

    async def call_by_uniqueid(self, uniqueid: str) -> Call | None:
        async def op(session: AsyncSession) -> Call | None:
            return await session.scalar(self._call_by_uniqueid, {"uniqueid": uniqueid})

        return await self.transaction("call_by_uniqueid", op)

    async def timeline(self, call_id: str) -> list[CallEvent]:
        async def op(session: AsyncSession) -> list[CallEvent]:
            rows = await session.scalars(
                select(CallEvent).where(CallEvent.call_id == call_id).order_by(CallEvent.at, CallEvent.id)
            )
            return list(rows)

        return await self.transaction("timeline", op)

    async def recent_calls(self, limit: int = 50) -> list[Call]:
        async def op(session: AsyncSession) -> list[Call]:
            rows = await session.scalars(select(Call).order_by(Call.arrived_at.desc()).limit(limit))
            return list(rows)

        return await self.transaction("recent_calls", op)

    async def open_calls(self) -> list[Call]:
        """Calls not yet ended: what a resync after a restart has to reconcile with Asterisk."""

        async def op(session: AsyncSession) -> list[Call]:
            rows = await session.scalars(select(Call).where(Call.ended_at.is_(None)))
            return list(rows)

        return await self.transaction("open_calls", op)

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

        return await self.transaction("caller_history", op)

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

        return await self.transaction("incidents_of_number", op)

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

        return await self.transaction("known_location", op)

    async def load_flags(self, window: timedelta) -> int:
        """Fill ``flags`` from the database (at start); returns how many flags it holds."""
        since = utcnow() - window

        async def op(session: AsyncSession) -> list[tuple[str, str, datetime]]:
            rows = await session.execute(
                select(NumberFlag.number, NumberFlag.kind, NumberFlag.created_at).where(
                    NumberFlag.created_at >= since, NumberFlag.kind.in_(sorted(ABUSE_KINDS))
                )
            )
            return [(n, k, a) for n, k, a in rows]

        self.flags.load(await self.transaction("load_flags", op))
        return len(self.flags)

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
        await self.transaction("flag_number", op)
        self.flags.add(number, kind, when)
