"""A change signal among the app nodes of one store: "``<topic>:<key>`` changed, read it again".

Several app nodes share one PostgreSQL; each serves its own consoles' WebSockets and keeps its own
in-memory indexes. When one node commits a change the others must show or index (a dispatch's new
state, a caller's position, a prank flag), it calls :meth:`Signals.changed` after the commit:

- the node's own subscribers run at once, in this process (so the node that made the change never
  depends on the database round trip to tell its own consoles);
- on PostgreSQL, ``pg_notify('callcenter', '<topic>:<key>@<node>')`` tells every other node, whose
  dedicated ``LISTEN`` connection hands it to their subscribers (a node skips its own notifications:
  it handled them already).

The notification is only the signal to re-read, never the data: a subscriber reads the row named by
the key from the database, so what every node shows is what was committed. Notifications are not
durable: while a node's listening connection is down (a database restart or failover) it misses
them. So after every reconnect, subscribers are called with the key :data:`ALL` ("anything may have
changed"), and they re-read everything they show; the consoles do the same on their own reconnects.

On SQLite (the embedded one-node store) there is nobody else to tell: :meth:`changed` only runs the
local subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import re
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from sqlalchemy import NullPool, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from callcenter.tasks import Background

log = structlog.get_logger("callcenter.signals")

#: The one ``LISTEN``/``NOTIFY`` channel of the app.
CHANNEL = "callcenter"
#: The key subscribers get after the listening connection came back: re-read everything.
ALL = "*"
#: Seconds between checks of the listening connection (a check is bounded by twice this).
INTERVAL = 1.0
#: Seconds a notification is retried while the database does not answer (a failover takes seconds).
NOTIFY_FOR = 30.0
#: PostgreSQL's limit on a notification's payload is 8000 bytes; ours are far shorter.
MAX_PAYLOAD = 7000
_TOPIC = re.compile(r"^[a-z][a-z0-9_]{0,39}$")

Handler = Callable[[str], Awaitable[object] | None]


def default_node() -> str:
    """A store's name among the nodes when none is configured: ``<host>.<pid>.<random>`` (two stores in
    one process, a script's and the app's, are two senders), in the characters a dialplan ``FILTER``
    keeps (the name is the routing marker on the channel, ``queue/routing.py``)."""
    return clean_node(f"{socket.gethostname()[:24]}.{os.getpid()}.{secrets.token_hex(2)}")


def clean_node(name: str) -> str:
    """A node name as it may travel: letters, digits, ``.`` and ``_`` (anything else becomes ``_``), ≤ 40."""
    return re.sub(r"[^A-Za-z0-9._]", "_", name)[:40]


class Signals:
    """Subscribe to topics; announce changes after commits (see the module docstring)."""

    def __init__(self, engine: AsyncEngine, *, node: str = "", interval: float = INTERVAL) -> None:
        self.engine = engine
        self.node = clean_node(node) if node else default_node()
        self.interval = interval
        #: Several nodes can share this store (PostgreSQL): notify them and listen to them.
        self.shared = engine.url.get_backend_name() == "postgresql"
        #: The listening session's server process id while connected (tests terminate it).
        self.backend_pid: int | None = None
        #: Whether the listening connection is up (always True on SQLite: nothing to miss).
        self.listening = asyncio.Event()
        #: Times the listening connection came (back) up; each one is followed by an :data:`ALL` round.
        self.connects = 0
        self._handlers: dict[str, list[Handler]] = {}
        #: Subscribers' coroutines running now.
        self._tasks = Background()
        #: Notifications on their way (``changed`` does not wait for them).
        self._sending = Background()
        #: Seconds a notification keeps being retried through a database hiccup.
        self.notify_for = NOTIFY_FOR
        self._listener: asyncio.Task[None] | None = None
        if not self.shared:
            self.listening.set()

    # -- subscribing and announcing -----------------------------------------------------------------

    def subscribe(self, topic: str, handler: Handler) -> Callable[[], None]:
        """Call ``handler(key)`` whenever ``topic`` changes on any node (or with :data:`ALL`); returns
        the unsubscribe function. A handler may be a coroutine function; it must not block."""
        if not _TOPIC.match(topic):
            raise ValueError(f"bad signal topic {topic!r}")
        handlers = self._handlers.setdefault(topic, [])
        handlers.append(handler)
        return lambda: handlers.remove(handler) if handler in handlers else None

    async def changed(self, topic: str, key: object) -> None:
        """``topic``/``key`` was committed: this node's subscribers run now, the other nodes' once the
        notification reaches them. Never raises and never waits on the database: the notification is
        sent in the background, retried through a hiccup for ``notify_for`` seconds (a lost one costs
        the other nodes a refresh, not the write)."""
        key = str(key)
        self._dispatch(topic, key)
        if not self.shared:
            return
        payload = f"{topic}:{key}@{self.node}"
        if len(payload.encode()) > MAX_PAYLOAD:
            log.warning("signals.payload_too_long", topic=topic)
            return
        self._sending.spawn(self._notify(topic, payload), name=f"signal-notify-{topic}")

    async def _notify(self, topic: str, payload: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.notify_for
        delay = 0.1
        while True:
            try:
                async with asyncio.timeout(self.interval * 5), self.engine.begin() as conn:
                    await conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": payload})
                return
            except Exception as exc:  # the database is away: try again, then give up (listeners re-read all
                # after their own reconnect)
                error = str(exc).splitlines()[0] if str(exc) else repr(exc)
                if loop.time() + delay > deadline:
                    log.warning("signals.notify_failed", topic=topic, error=error)
                    return
                log.info("signals.notify_retry", topic=topic, error=error, delay=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def received(self, payload: str) -> None:
        """A notification's payload (``<topic>:<key>@<node>``): run the subscribers unless it is ours."""
        body, _, node = payload.rpartition("@")
        topic, sep, key = body.partition(":")
        if not sep or not node:
            log.warning("signals.malformed", length=len(payload))
            return
        if node != self.node:
            self._dispatch(topic, key)

    def _dispatch(self, topic: str, key: str) -> None:
        for handler in list(self._handlers.get(topic, ())):
            try:
                result = handler(key)
            except Exception:  # one broken subscriber must not keep the others from hearing it
                log.exception("signals.handler_failed", topic=topic)
                continue
            if inspect.isawaitable(result):
                self._spawn(topic, result)

    def _spawn(self, topic: str, awaitable: Awaitable[object]) -> None:
        async def run() -> None:
            try:
                await awaitable
            except Exception:
                log.exception("signals.handler_failed", topic=topic)

        self._tasks.spawn(run(), name=f"signal-{topic}")

    def everything_changed(self) -> None:
        """Call every subscriber with :data:`ALL` (after the listening connection came back)."""
        for topic in list(self._handlers):
            self._dispatch(topic, ALL)

    async def settle(self) -> None:
        """Wait for the subscribers' running coroutines (tests; shutdown)."""
        await self._tasks.settle()

    # -- the listening connection -------------------------------------------------------------------

    async def start(self) -> None:
        if self.shared and self._listener is None:
            self._listener = asyncio.create_task(self._listen_forever(), name="signals-listen")

    async def sent(self) -> None:
        """Wait until the notifications on their way are sent (or given up)."""
        await self._sending.settle()

    async def stop(self) -> None:
        """Stop listening; notifications still on their way get a moment to go out (shutdown announces)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self.sent()
        await self._sending.cancel()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        await self._tasks.cancel()

    async def _listen_forever(self) -> None:
        settings = {"application_name": f"callcenter-signals {self.node}"[:63]}
        engine = create_async_engine(self.engine.url, poolclass=NullPool, connect_args={"server_settings": settings})
        try:
            while True:
                try:
                    async with engine.connect() as conn:
                        try:
                            await self._listen(conn)
                        finally:
                            self.listening.clear()
                            self.backend_pid = None
                            # Drop the session without a goodbye: a graceful close could wait on a dead peer.
                            with contextlib.suppress(Exception):
                                await conn.invalidate()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the database went away: listen again, then re-read everything
                    log.warning("signals.connection_lost", error=str(exc).splitlines()[0] if str(exc) else repr(exc))
                await asyncio.sleep(self.interval)
        finally:
            await engine.dispose()

    async def _listen(self, conn: Any) -> None:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        raw = (await conn.get_raw_connection()).driver_connection
        lost = asyncio.Event()

        def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            self.received(payload)

        async with asyncio.timeout(self.interval * 5):
            # A standby accepts LISTEN but never hears the primary's NOTIFY: the URL must lead to the primary.
            if await conn.scalar(text("SELECT pg_is_in_recovery()")):
                raise RuntimeError("the signals' connection reached a standby; needs target_session_attrs")
            self.backend_pid = await conn.scalar(text("SELECT pg_backend_pid()"))
            await raw.add_listener(CHANNEL, on_notify)
        raw.add_termination_listener(lambda _conn: lost.set())
        self.connects += 1
        self.listening.set()
        log.info("signals.listening", node=self.node, connects=self.connects)
        if self.connects > 1:
            # What was announced while we were away is lost: everything is to be read again.
            self.everything_changed()
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await lost.wait()
            if lost.is_set():
                break
            async with asyncio.timeout(self.interval * 2):
                await conn.execute(text("SELECT 1"))
        raise ConnectionError("listening connection closed")


__all__ = ["ALL", "CHANNEL", "Signals", "clean_node", "default_node"]
