"""One leader among the app nodes, for the work that must happen once: a PostgreSQL advisory lock.

Every node runs the same loops, but some of them act on the world or on shared rows (the service-level
timer, the statistics roll-up, the quality sample, rating calls): two nodes doing them twice is
wrong or wasteful. The node that holds a *session-level* advisory lock (``pg_try_advisory_lock``) on
a connection of its own leads; PostgreSQL releases the lock when that session ends, so a node that dies,
is partitioned away or loses its database connection stops leading without anyone telling it to, and
another node's next attempt takes the lock.

- The lock lives on a dedicated connection (not the pool's: a pooled connection is shared, reset and
  recycled), in autocommit, so it is never "idle in transaction".
- The holder checks that connection every ``interval`` seconds with a query bounded by ``2 * interval``;
  a failure or a timeout ends its leadership at once. A node that takes the lock waits that long (three
  intervals, :attr:`Leadership.grace`) before it acts, so the old leader has stopped by then.
  Server-side TCP keepalives bound how long a vanished leader's session can keep the lock.
- A standby also grants advisory locks (they are not replicated): the store URL must lead to the
  primary (``target_session_attrs=read-write``), and a session in recovery is never taken as a leader.
- SQLite is the embedded one-node store: that node is always the leader.

The grace period rests on the old leader's event loop running: a frozen process that wakes up after it
could act once more before its check fails. So the lock comes with a **fencing token**: each node that
takes it raises ``leader_epochs.epoch`` by one (:attr:`Leadership.epoch` is its term), and the writes
that place or close calls check, in their own transaction, that the epoch is still theirs
(:func:`check_term`, a ``FOR SHARE`` read: the next leader's raise waits for those transactions, and
every one after it sees the new epoch and is refused with :class:`Deposed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import structlog
from sqlalchemy import NullPool, bindparam, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, create_async_engine

from callcenter.store.engine import make_engine, utcnow
from callcenter.store.models import LeaderEpoch, UtcDateTime

log = structlog.get_logger("callcenter.leadership")

#: The advisory lock's key: one per database, so every node of one centre contends for the same lock.
LOCK_KEY = 112_000_001
#: The lock a ``callcenter retention run`` holds while it runs: the nodes' timers take turns.
RETENTION_KEY = 112_000_002
#: Seconds between checks of the lock's connection (and between attempts to take the lock). A new
#: holder waits three of them before leading (``Leadership.grace``): takeover within about 4 s.
INTERVAL = 1.0
#: Server-side keepalives on the lock's connection: PostgreSQL drops (and unlocks) a vanished leader's
#: session after about idle + interval * count seconds, so a follower can take over.
KEEPALIVES = {"tcp_keepalives_idle": "3", "tcp_keepalives_interval": "1", "tcp_keepalives_count": "3"}

Listener = Callable[[bool], None]

#: Raises the lock's epoch by one and returns it (an upsert: the first leader of a database writes 1).
BUMP_EPOCH = text(
    "INSERT INTO leader_epochs (key, epoch, node, since) VALUES (:key, 1, :node, :since) "
    "ON CONFLICT (key) DO UPDATE SET epoch = leader_epochs.epoch + 1, node = excluded.node, "
    "since = excluded.since RETURNING epoch"
).bindparams(bindparam("since", type_=UtcDateTime()))


class Deposed(RuntimeError):
    """A newer leader took over: this node's term is over and its write was refused."""


async def check_term(session: AsyncSession, epoch: int | None, *, key: int = LOCK_KEY) -> None:
    """Refuse the surrounding transaction (:class:`Deposed`) unless term ``epoch`` still leads.

    ``FOR SHARE`` (PostgreSQL): a new leader's epoch raise waits until this transaction ends, and a
    transaction after the raise reads the new epoch. SQLite has one writer at a time and one node.
    """
    current = await session.scalar(select(LeaderEpoch.epoch).where(LeaderEpoch.key == key).with_for_update(read=True))
    if epoch is None or current != epoch:
        raise Deposed(f"term {epoch} is over (the current term is {current})")


def node_name() -> str:
    """Who leads, for the logs and ``pg_stat_activity``: host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Leadership:
    """Whether this node leads; :meth:`subscribe` to hear when that changes."""

    def __init__(self, url: URL | str, *, key: int = LOCK_KEY, interval: float = INTERVAL, node: str = "") -> None:
        self.url = url
        self.key = key
        self.interval = interval
        self.node = node or node_name()
        #: One node only (SQLite): always the leader, nothing to contend for.
        self.single = make_url(url).get_backend_name() != "postgresql"
        #: The lock session's server process id while connected (``pg_terminate_backend`` in tests).
        self.backend_pid: int | None = None
        #: This node's term (``leader_epochs.epoch``) since it took the lock; None while it holds none.
        self.epoch: int | None = None
        self._leading = asyncio.Event()
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def is_leader(self) -> bool:
        return self._leading.is_set()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(True)`` when this node becomes the leader and ``listener(False)`` when it stops
        (at once with True if it already leads); returns the unsubscribe function."""
        self._listeners.append(listener)
        if self.is_leader:
            listener(True)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def wait_leader(self) -> None:
        await self._leading.wait()

    async def start(self) -> None:
        if self.single:
            # One node: still a new term per start, so the rows a previous run left are taken over.
            # (The store's SQLite settings, busy timeout included: a script may be writing just now.)
            engine = make_engine(make_url(self.url).render_as_string(hide_password=False))
            try:
                async with engine.begin() as conn:
                    self.epoch = await self._bump(conn)
            finally:
                await engine.dispose()
            self._set(True)
            return
        self._task = asyncio.create_task(self._run(), name="leadership")

    async def stop(self) -> None:
        """Give up leadership (the lock's session ends, so another node can take it at once)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._set(False)
        self.epoch = None

    # -- internals -------------------------------------------------------------------------------

    def _set(self, leading: bool) -> None:
        if leading == self.is_leader:
            return
        if leading:
            self._leading.set()
        else:
            self._leading.clear()
        log.info("leadership.gained" if leading else "leadership.lost", node=self.node, epoch=self.epoch)
        for listener in list(self._listeners):
            try:
                listener(leading)
            except Exception:  # one broken listener must not keep the others from hearing it
                log.exception("leadership.listener_failed")

    async def _run(self) -> None:
        settings = {**KEEPALIVES, "application_name": f"callcenter-leader {self.node}"[:63]}
        engine = create_async_engine(self.url, poolclass=NullPool, connect_args={"server_settings": settings})
        try:
            while True:
                try:
                    async with engine.connect() as conn:
                        try:
                            await self._hold(await conn.execution_options(isolation_level="AUTOCOMMIT"))
                        except BaseException:
                            # Stop leading first, then drop the session without a goodbye: a graceful
                            # close could wait on a partitioned network for as long as TCP does.
                            self._set(False)
                            with contextlib.suppress(Exception):
                                await conn.invalidate()
                            raise
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the database went away, or the check timed out: try again
                    if self.is_leader:
                        log.warning("leadership.connection_lost", node=self.node, error=str(exc).splitlines()[0])
                    else:
                        log.debug("leadership.connect_failed", error=str(exc).splitlines()[0])
                finally:
                    self.backend_pid = None
                    self._set(False)
                    self.epoch = None
                await asyncio.sleep(self.interval)
        finally:
            await engine.dispose()

    @property
    def grace(self) -> float:
        """How long a node holds the lock before it acts as leader: the longest the previous holder can
        take to notice it lost its session (its next check, ``interval`` away, timing out after
        ``2 * interval``), so the two never act together. Every node must use the same interval."""
        return self.interval * 3

    async def _hold(self, conn: AsyncConnection) -> None:
        """Try for the lock every interval while following; check the session every interval while holding it."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.interval * 2):
            self.backend_pid = await conn.scalar(text("SELECT pg_backend_pid()"))
        held_since: float | None = None
        while True:
            async with asyncio.timeout(self.interval * 2):
                if held_since is not None:
                    await conn.execute(text("SELECT 1"))
                elif await conn.scalar(text("SELECT pg_is_in_recovery()")):
                    # A standby's lock would not be seen by the primary's nodes: never lead from one.
                    raise RuntimeError("the leader's connection reached a standby; needs target_session_attrs")
                elif await conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}):
                    # The fencing token first: from here on the previous term's writes are refused.
                    self.epoch = await self._bump(conn)
                    held_since = loop.time()
                    log.info("leadership.acquired", node=self.node, grace=self.grace, epoch=self.epoch)
            if held_since is not None and loop.time() - held_since >= self.grace:
                self._set(True)
            await asyncio.sleep(self.interval)

    async def _bump(self, conn: AsyncConnection) -> int:
        epoch = await conn.scalar(BUMP_EPOCH, {"key": self.key, "node": self.node[:128], "since": utcnow()})
        return int(epoch)


class LeaderOnly:
    """Runs one loop only while this node leads: started when it gains leadership, cancelled when it loses it."""

    def __init__(self, leadership: Leadership, loop: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        self.loop = loop
        self.name = name
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe = leadership.subscribe(self._changed)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _changed(self, leading: bool) -> None:
        if leading and not self.running:
            self._task = asyncio.create_task(self.loop(), name=self.name)
        elif not leading and self._task is not None:
            self._task.cancel()
            self._task = None

    async def close(self) -> None:
        self._unsubscribe()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def one_at_a_time(url: URL | str, key: int) -> AsyncIterator[None]:
    """Hold PostgreSQL advisory lock ``key`` (waiting for it) for the block: the same job started on
    several nodes runs one after another, never side by side. SQLite (one node): nothing to wait for."""
    if make_url(url).get_backend_name() != "postgresql":
        yield
        return
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as raw:
            conn = await raw.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    finally:
        await engine.dispose()


class TermLoop:
    """While this node leads: ``step(term)`` at once, then every ``poll`` seconds or as soon as
    :meth:`wake` is called; ``on_end()`` when leadership ends (or at :meth:`close`).

    The leader's claim loops (dispatches, call-backs) are this: rows requested on any node are claimed
    within ``poll`` seconds without any signal, and at once when a change signal wakes the leader.
    """

    def __init__(
        self,
        leadership: Leadership,
        step: Callable[[int | None], Coroutine[Any, Any, None]],
        name: str,
        *,
        poll: float,
        on_end: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        self.leadership = leadership
        self.step = step
        self.name = name
        self.poll = poll
        self.on_end = on_end
        #: The term this loop runs in now (None while this node follows).
        self.term: int | None = None
        self._wake = asyncio.Event()
        self._current: asyncio.Task[Any] | None = None
        self._loop = LeaderOnly(leadership, self._run, name)

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        # A previous term's run may still be ending (its ``on_end``: giving its calls up): let it finish
        # first, so it cannot give up what this term takes over.
        previous, self._current = self._current, asyncio.current_task()
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
        term = self.term = self.leadership.epoch
        log.info("leadership.term_loop", loop=self.name, term=term)
        try:
            while True:
                self._wake.clear()
                try:
                    await self.step(term)
                except Deposed as exc:  # leadership is about to move: the next term takes over
                    log.warning("leadership.deposed", loop=self.name, term=term, error=str(exc))
                except Exception as exc:  # the database hiccuped: the next look finds the same rows
                    log.warning("leadership.step_failed", loop=self.name, error=repr(exc)[:200])
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll):
                        await self._wake.wait()
        finally:
            if self._current is asyncio.current_task():
                self.term = None
            if self.on_end is not None:
                await self.on_end()

    async def close(self) -> None:
        await self._loop.close()
