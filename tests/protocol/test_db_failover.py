"""Database failover: the store on a primary + synchronous streaming replica, the primary killed mid-stream.

The store URL names both servers with ``target_session_attrs=read-write`` (what production names the
Patroni members with). Writers keep going while the primary gets an immediate shutdown and the replica
is promoted: every write the store acknowledged must be on the new primary, and writing goes on there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.exc import ProgrammingError

from callcenter.store import Calls, Store, utcnow
from callcenter.store.models import Call
from callcenter.testing.replication import ReplicatedPostgres, multi_host_url
from callcenter.testing.wait import until

pytestmark = pytest.mark.postgres


@pytest.fixture
def pair() -> Iterator[ReplicatedPostgres]:
    with ReplicatedPostgres() as pg:
        yield pg


async def _uniqueids(url: str) -> set[str]:
    store = Store.from_url(url, retry_for=5.0)
    try:
        async with store.engine.connect() as conn:
            return set((await conn.scalars(select(Call.uniqueid))).all())
    finally:
        await store.close()


async def test_acknowledged_writes_survive_failover_and_writing_goes_on(pair: ReplicatedPostgres) -> None:
    store = Store.from_url(pair.url, retry_for=30.0)
    calls = Calls(store)
    acked: list[str] = []
    stop = asyncio.Event()

    async def writer(lane: int) -> None:
        i = 0
        while not stop.is_set():
            uniqueid = f"{lane}.{i}"
            await calls.open_call(uniqueid=uniqueid, arrived_at=utcnow(), routed_by="agi")
            acked.append(uniqueid)  # the store said "written": from here on it must never be lost
            i += 1

    try:
        await store.upgrade()
        writers = [asyncio.create_task(writer(lane)) for lane in range(4)]
        await until(lambda: len(acked) >= 100, timeout=20)

        await asyncio.to_thread(pair.primary.halt, immediate=True)
        at_failure = len(acked)
        await asyncio.sleep(0.3)  # no primary at all for a moment: writes wait and retry
        started = time.monotonic()
        await asyncio.to_thread(pair.replica.promote)
        await until(lambda: len(acked) >= at_failure + 100, timeout=20)
        resumed_after = time.monotonic() - started
        stop.set()
        await asyncio.wait_for(asyncio.gather(*writers), 30)

        assert not pair.replica.in_recovery()
        on_new_primary = await _uniqueids(pair.url)
        lost = [u for u in acked if u not in on_new_primary]
        assert not lost, f"{len(lost)} acknowledged writes lost: {lost[:5]}"
        assert len(on_new_primary) >= at_failure + 100
        assert resumed_after < 20
    finally:
        stop.set()
        await store.close()


async def test_no_read_write_host_yet_is_waited_out(pair: ReplicatedPostgres) -> None:
    """Mid-failover every reachable host may be a standby: the write waits for a promotion, it does not fail."""
    schema = Store.from_url(pair.url)
    await schema.upgrade()
    await schema.close()
    await asyncio.to_thread(pair.primary.halt, immediate=True)
    store = Store.from_url(multi_host_url([pair.replica], pair.dbname), retry_for=30.0)
    calls = Calls(store)
    try:
        write = asyncio.create_task(calls.open_call(uniqueid="p.1", arrived_at=utcnow(), routed_by="agi"))
        await asyncio.sleep(0.5)
        assert not write.done(), "the write should be waiting for a read-write host"
        await asyncio.to_thread(pair.replica.promote)
        await asyncio.wait_for(write, 20)
    finally:
        await store.close()
    assert await _uniqueids(pair.replica.url) == {"p.1"}


async def test_url_with_several_hosts_finds_the_read_write_one(pair: ReplicatedPostgres) -> None:
    """Replica named first: ``target_session_attrs=read-write`` skips it and lands on the primary."""
    url = multi_host_url([pair.replica, pair.primary], pair.dbname)
    store = Store.from_url(url, retry_for=5.0)
    calls = Calls(store)
    try:
        await store.upgrade()
        await calls.open_call(uniqueid="x.1", arrived_at=utcnow(), routed_by="agi")
        async with store.engine.connect() as conn:
            port = await conn.exec_driver_sql("SELECT inet_server_port()")
            assert port.scalar() == pair.primary.port
    finally:
        await store.close()
    # Replicated (synchronously flushed, applied a moment later): readable on the standby too.
    await until(lambda: _on_replica(pair), timeout=10, what="the row replayed on the standby")


async def _on_replica(pair: ReplicatedPostgres) -> bool:
    try:
        return await _uniqueids(pair.replica.url) == {"x.1"}
    except ProgrammingError:  # the standby has not replayed the migrations' tables yet: not there yet
        return False
