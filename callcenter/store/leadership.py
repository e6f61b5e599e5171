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
could act once more before its check fails, so the leader-only loops stay idempotent (conditional
updates) rather than trusting the lock alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from sqlalchemy import NullPool, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

log = structlog.get_logger("callcenter.leadership")

#: The advisory lock's key: one per database, so every node of one centre contends for the same lock.
LOCK_KEY = 112_000_001
#: Seconds between checks of the lock's connection (and between attempts to take the lock). A new
#: holder waits three of them before leading (``Leadership.grace``): takeover within about 4 s.
INTERVAL = 1.0
#: Server-side keepalives on the lock's connection: PostgreSQL drops (and unlocks) a vanished leader's
#: session after about idle + interval * count seconds, so a follower can take over.
KEEPALIVES = {"tcp_keepalives_idle": "3", "tcp_keepalives_interval": "1", "tcp_keepalives_count": "3"}

Listener = Callable[[bool], None]


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

    # -- internals -------------------------------------------------------------------------------

    def _set(self, leading: bool) -> None:
        if leading == self.is_leader:
            return
        if leading:
            self._leading.set()
        else:
            self._leading.clear()
        log.info("leadership.gained" if leading else "leadership.lost", node=self.node)
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
                    held_since = loop.time()
                    log.info("leadership.acquired", node=self.node, grace=self.grace)
            if held_since is not None and loop.time() - held_since >= self.grace:
                self._set(True)
            await asyncio.sleep(self.interval)


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
