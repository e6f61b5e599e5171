"""The database behind every repository: its engine, and the transactions they all run in.

Writes retry through database hiccups (a locked SQLite file, a PostgreSQL restart) for a bounded
time; a write that still fails is logged whole, so the record survives in the log even then. What is
stored lives in the repositories beside this module (``calls.py``, ``incidents.py`` …), each built on a
:class:`Store`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog
from asyncpg.exceptions import TargetServerAttributeNotMatched  # type: ignore[import-untyped]
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from callcenter.store.flags import FlagIndex
from callcenter.store.migrate import upgrade_connection
from callcenter.store.signals import Signals

T = TypeVar("T")
#: Seconds past which a transaction is logged by name (waiting for the connection included).
SLOW_TRANSACTION = 5.0
log = structlog.get_logger("callcenter.store")


class StoreUnavailable(RuntimeError):
    """The database did not accept a write within the retry window."""


def new_call_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


def sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
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
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


class Store:
    """The database: its engine, and transactions that retry through outages. Repositories take one."""

    def __init__(self, engine: AsyncEngine, *, retry_for: float = 30.0, node: str = "") -> None:
        self.engine = engine
        self.retry_for = retry_for
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        #: Abuse flags in memory, so routing needs no query; filled and kept current by
        #: :meth:`Calls.load_flags <callcenter.store.calls.Calls.load_flags>` and ``Calls.flag_number``.
        self.flags = FlagIndex()
        #: "Read this again": changes announced to this node's subscribers and, on PostgreSQL, to the
        #: other nodes (``store/signals.py``); ``node`` names this process among them.
        self.signals = Signals(engine, node=node)
        #: Called with each transaction's duration in seconds (the app's /metrics histogram); None: nobody asks.
        self.on_latency: Callable[[float], None] | None = None

    @classmethod
    def from_url(cls, url: str, *, retry_for: float = 30.0, node: str = "") -> Store:
        return cls(make_engine(url), retry_for=retry_for, node=node)

    async def close(self) -> None:
        await self.signals.stop()
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
