"""The store's change signal (``store/signals.py``): in-process on SQLite, LISTEN/NOTIFY between nodes on
PostgreSQL, and a listener that comes back after a database failover and then says "everything changed"."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from callcenter.store import Store
from callcenter.store.signals import ALL
from callcenter.testing.postgres import ThrowawayPostgres
from callcenter.testing.replication import ReplicatedPostgres
from callcenter.testing.wait import until


class Heard:
    def __init__(self, store: Store, topic: str = "dispatch") -> None:
        self.keys: list[str] = []
        store.signals.subscribe(topic, self.keys.append)


async def listening(*stores: Store) -> None:
    """Start the stores' listeners (quick checks, for quick tests) and wait until they listen."""
    for store in stores:
        store.signals.interval = 0.2
        await store.signals.start()
        await asyncio.wait_for(store.signals.listening.wait(), 10)


@pytest.fixture
async def pair(postgres: ThrowawayPostgres) -> AsyncIterator[tuple[Store, Store]]:
    url = postgres.create_database(f"s_{uuid.uuid4().hex[:16]}")
    stores = (Store.from_url(url, retry_for=5.0, node="a"), Store.from_url(url, retry_for=5.0, node="b"))
    await listening(*stores)
    yield stores
    for store in stores:
        await store.close()


async def test_sqlite_signals_stay_in_the_process(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    heard, other = Heard(store), Heard(store, "callback")
    await store.signals.start()  # nothing to listen to: one node
    await store.signals.changed("dispatch", 7)
    assert heard.keys == ["7"] and other.keys == []
    assert not store.signals.shared and store.signals.listening.is_set()
    await store.close()


@pytest.mark.postgres
async def test_a_change_on_one_node_reaches_the_other_once_and_its_own_at_once(pair: tuple[Store, Store]) -> None:
    a, b = pair
    on_a, on_b = Heard(a), Heard(b)
    await a.signals.changed("dispatch", 42)
    assert on_a.keys == ["42"]  # in-process, before any round trip
    await until(lambda: on_b.keys == ["42"], timeout=5, what="node b hears it")
    await asyncio.sleep(0.3)
    assert on_a.keys == ["42"] and on_b.keys == ["42"]  # a skips its own notification


@pytest.mark.postgres
async def test_malformed_notifications_are_ignored(pair: tuple[Store, Store]) -> None:
    a, b = pair
    on_b = Heard(b)
    async with a.engine.begin() as conn:
        await conn.execute(text("SELECT pg_notify('callcenter', 'no separators')"))
        await conn.execute(text("SELECT pg_notify('callcenter', 'dispatch:9@')"))
    await a.signals.changed("dispatch", 1)
    await until(lambda: on_b.keys == ["1"], timeout=5, what="the well-formed one")


@pytest.mark.postgres
async def test_the_listener_follows_a_failover_and_then_everything_changed() -> None:
    with ReplicatedPostgres() as cluster:
        a = Store.from_url(cluster.url, retry_for=30.0, node="a")
        b = Store.from_url(cluster.url, retry_for=30.0, node="b")
        try:
            for store in (a, b):
                store.signals.interval = 0.2
                await store.signals.start()
                await asyncio.wait_for(store.signals.listening.wait(), 10)
            on_b = Heard(b)
            await asyncio.to_thread(cluster.fail_over)
            await until(lambda: b.signals.connects >= 2 and b.signals.listening.is_set(), timeout=20, what="relisten")
            assert ALL in on_b.keys  # what was sent meanwhile is lost: re-read everything
            await until(a.signals.listening.is_set, timeout=20, what="a relistens")
            await a.signals.changed("dispatch", 5)
            await until(lambda: "5" in on_b.keys, timeout=10, what="news on the new primary")
        finally:
            await a.close()
            await b.close()


@pytest.mark.postgres
async def test_the_listener_survives_a_database_restart(own_postgres: ThrowawayPostgres) -> None:
    a = Store.from_url(own_postgres.url, retry_for=10.0, node="a")
    b = Store.from_url(own_postgres.url, retry_for=10.0, node="b")
    try:
        await listening(a, b)
        on_b = Heard(b)
        await asyncio.to_thread(own_postgres.restart)
        await until(lambda: b.signals.connects >= 2 and b.signals.listening.is_set(), timeout=20, what="relisten")
        assert on_b.keys == [ALL]
        await a.signals.changed("dispatch", 8)
        await until(lambda: on_b.keys == [ALL, "8"], timeout=10, what="news after the restart")
    finally:
        await a.close()
        await b.close()


@pytest.mark.postgres
async def test_announcing_never_waits_on_a_database_that_is_down(own_postgres: ThrowawayPostgres) -> None:
    """The writer's path does not wait for the notification: it goes out in the background, retried
    until the database is back, and the listeners that lost their session re-read everything."""
    a = Store.from_url(own_postgres.url, retry_for=10.0, node="a")
    b = Store.from_url(own_postgres.url, retry_for=10.0, node="b")
    try:
        await listening(a, b)
        on_a, on_b = Heard(a), Heard(b)
        await asyncio.to_thread(own_postgres.halt)
        started = asyncio.get_running_loop().time()
        await a.signals.changed("dispatch", 4)
        assert asyncio.get_running_loop().time() - started < 0.5
        assert on_a.keys == ["4"]  # this node's own subscribers at once
        await asyncio.sleep(0.5)
        await asyncio.to_thread(own_postgres.resume)
        await asyncio.wait_for(a.signals.sent(), 30)  # delivered after a retry, not dropped
        await until(lambda: ALL in on_b.keys, timeout=20, what="node b re-reads everything")
    finally:
        await a.close()
        await b.close()
