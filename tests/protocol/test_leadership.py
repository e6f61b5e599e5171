"""One leader among app nodes: a session-level advisory lock on a real PostgreSQL, taken over when it dies."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from callcenter.store import Store
from callcenter.store.leadership import RETENTION_KEY, LeaderOnly, Leadership, TermLoop, one_at_a_time
from callcenter.testing.postgres import ThrowawayPostgres
from callcenter.testing.replication import ReplicatedPostgres, multi_host_url
from callcenter.testing.wait import until
from callcenter.web.keys import LEADERSHIP

AppClient = TestClient[web.Request, web.Application]

#: Short, so the tests are quick; takeover is bounded by about two intervals.
INTERVAL = 0.5


async def upgraded(url: str) -> str:
    """``url`` with the app's tables (the leader's epoch row lives in ``leader_epochs``)."""
    store = Store.from_url(url, retry_for=5.0)
    try:
        await store.upgrade()
    finally:
        await store.close()
    return url


@pytest.fixture
async def nodes(postgres: ThrowawayPostgres) -> AsyncIterator[tuple[Leadership, Leadership]]:
    """Two nodes contending for the lock of a database of their own."""
    url = await upgraded(postgres.create_database(f"l_{uuid.uuid4().hex[:16]}"))
    pair = (Leadership(url, interval=INTERVAL, node="a"), Leadership(url, interval=INTERVAL, node="b"))
    try:
        for node in pair:
            await node.start()
        await until(lambda: any(n.is_leader for n in pair), timeout=10, what="a leader")
        yield pair
    finally:
        for node in pair:
            await node.stop()


def _split(nodes: tuple[Leadership, Leadership]) -> tuple[Leadership, Leadership]:
    leader = next(n for n in nodes if n.is_leader)
    return leader, next(n for n in nodes if n is not leader)


@pytest.mark.postgres
async def test_exactly_one_leads(nodes: tuple[Leadership, Leadership]) -> None:
    await asyncio.sleep(INTERVAL * 4)  # the follower has tried several times by now
    assert sorted(n.is_leader for n in nodes) == [False, True]


@pytest.mark.postgres
async def test_killed_leader_session_moves_leadership_within_10s(
    nodes: tuple[Leadership, Leadership], postgres: ThrowawayPostgres
) -> None:
    leader, follower = _split(nodes)
    heard: list[tuple[str, bool]] = []

    def listener(name: str) -> Callable[[bool], None]:
        return lambda leading: heard.append((name, leading))

    for node in nodes:
        node.subscribe(listener(node.node))
    heard.clear()

    started = time.monotonic()
    assert postgres.sql(f"SELECT pg_terminate_backend({leader.backend_pid})") == "t"
    await until(lambda: follower.is_leader, timeout=10, what="the follower leads")
    took = time.monotonic() - started
    assert not leader.is_leader
    assert (leader.node, False) in heard and (follower.node, True) in heard
    assert took < 10
    # The old leader reconnects as a follower and stays one.
    await until(lambda: leader.backend_pid is not None, timeout=10, what="the old leader reconnected")
    await asyncio.sleep(INTERVAL * 3)
    assert follower.is_leader and not leader.is_leader


@pytest.mark.postgres
async def test_stopped_leader_hands_over(nodes: tuple[Leadership, Leadership]) -> None:
    leader, follower = _split(nodes)
    await leader.stop()
    assert not leader.is_leader
    await until(lambda: follower.is_leader, timeout=10, what="the follower leads")


@pytest.mark.postgres
async def test_leader_only_loop_runs_on_the_leader_and_moves(
    nodes: tuple[Leadership, Leadership], postgres: ThrowawayPostgres
) -> None:
    ticks: dict[str, int] = {"a": 0, "b": 0}

    def loop_of(name: str) -> LeaderOnly:
        async def tick() -> None:
            while True:
                ticks[name] += 1
                await asyncio.sleep(0.05)

        return LeaderOnly(next(n for n in nodes if n.node == name), tick, f"tick-{name}")

    loops = [loop_of("a"), loop_of("b")]
    try:
        leader, follower = _split(nodes)
        await until(lambda: ticks[leader.node] > 3, what="the leader's loop runs")
        assert ticks[follower.node] == 0
        postgres.sql(f"SELECT pg_terminate_backend({leader.backend_pid})")
        await until(lambda: ticks[follower.node] > 3, timeout=10, what="the loop moved to the new leader")
        frozen = ticks[leader.node]
        await asyncio.sleep(0.3)
        assert ticks[leader.node] == frozen, "the old leader's loop must have stopped"
    finally:
        for loop in loops:
            await loop.close()


async def test_sqlite_node_always_leads(tmp_path: object) -> None:
    node = Leadership(await upgraded(f"sqlite+aiosqlite:///{tmp_path}/one.db"))
    heard: list[bool] = []
    node.subscribe(heard.append)
    await node.start()
    assert node.is_leader and heard == [True]
    await node.stop()
    assert heard == [True, False]


@pytest.mark.postgres
async def test_leadership_comes_back_on_the_promoted_replica() -> None:
    """After a database failover the old primary's sessions are gone: one node leads on the new primary."""
    with ReplicatedPostgres() as pair:
        await upgraded(pair.url)
        pair_nodes = [Leadership(pair.url, interval=INTERVAL, node=name) for name in ("a", "b")]
        # A node pointed at the standby alone (no read-write requirement) must never lead from it.
        astray = Leadership(multi_host_url([pair.replica], pair.dbname, target_session_attrs="any"), interval=INTERVAL)
        try:
            for node in (*pair_nodes, astray):
                await node.start()
            await until(lambda: any(n.is_leader for n in pair_nodes), timeout=10, what="a leader")
            await asyncio.to_thread(pair.primary.halt, immediate=True)
            await until(lambda: not any(n.is_leader for n in pair_nodes), timeout=10, what="leadership dropped")
            assert not astray.is_leader
            # Once promoted, the standby astray points at IS the primary and astray may rightly lead from
            # it; what it had to show (never leading from a standby) is shown, so it leaves the race.
            await astray.stop()
            await asyncio.to_thread(pair.replica.promote)
            await until(lambda: any(n.is_leader for n in pair_nodes), timeout=10, what="a leader on the new primary")
            assert sum(n.is_leader for n in pair_nodes) == 1
        finally:
            for node in (*pair_nodes, astray):
                await node.stop()


def _running(name: str) -> int:
    return sum(1 for t in asyncio.all_tasks() if t.get_name() == name and not t.done())


@pytest.mark.postgres
async def test_two_apps_on_one_database_run_the_once_only_loops_once(
    ami_app: Callable[..., Awaitable[AppClient]], postgres: ThrowawayPostgres
) -> None:
    """The composition root's wiring: two app nodes, one SLA timer / roll-up refresh / quality draw between them."""
    url = postgres.create_database(f"l_{uuid.uuid4().hex[:16]}")
    apps = [await ami_app(store={"url": url, "retry_for": 5.0}) for _ in range(2)]
    nodes = [client.app[LEADERSHIP] for client in apps]
    await until(lambda: any(n.is_leader for n in nodes), timeout=10, what="a leader")
    loops = ("sla-timer", "stats-refresh", "quality-draw")
    await until(lambda: all(_running(name) == 1 for name in loops), what="the leader's loops")
    await asyncio.sleep(nodes[0].interval * 2)
    assert sum(n.is_leader for n in nodes) == 1
    assert all(_running(name) == 1 for name in loops)

    leader = next(n for n in nodes if n.is_leader)
    postgres.sql(f"SELECT pg_terminate_backend({leader.backend_pid})")
    await until(lambda: any(n.is_leader and n is not leader for n in nodes), timeout=10, what="leadership moved")
    assert not leader.is_leader
    assert all(_running(name) == 1 for name in loops)


@pytest.mark.postgres
async def test_a_job_started_on_two_nodes_runs_one_after_the_other(postgres: ThrowawayPostgres) -> None:
    """``one_at_a_time`` (``callcenter retention run`` on every node's timer): the second waits for the first."""
    url = postgres.create_database(f"l_{uuid.uuid4().hex[:16]}")
    running: list[str] = []
    overlap: list[bool] = []
    first_in = asyncio.Event()

    async def job(name: str) -> None:
        async with one_at_a_time(url, RETENTION_KEY):
            overlap.append(bool(running))
            running.append(name)
            first_in.set()
            await asyncio.sleep(0.3)
            running.remove(name)

    first = asyncio.create_task(job("a"))
    await first_in.wait()
    await asyncio.gather(first, job("b"))
    assert overlap == [False, False]


async def test_a_new_term_starts_after_the_previous_one_gave_its_work_up(tmp_path: object) -> None:
    """Leadership lost and regained at once: the new term's loop waits for the old one's ``on_end``, so
    the old term cannot give up what the new one just took over."""
    node = Leadership(await upgraded(f"sqlite+aiosqlite:///{tmp_path}/flap.db"))
    events: list[str] = []

    async def step(term: int | None) -> None:
        events.append(f"step {term}")

    async def on_end() -> None:
        events.append("ending")
        await asyncio.sleep(0.2)
        events.append("ended")

    await node.start()
    loop = TermLoop(node, step, "flap", poll=60, on_end=on_end)
    try:
        await until(lambda: events == [f"step {node.epoch}"], what="the first term's step")
        node._set(False)  # what the lock's loss does, and its regain right after
        node._set(True)
        await until(lambda: len(events) == 4, what="the second term's step")
        assert events[1:] == ["ending", "ended", f"step {node.epoch}"]
        assert loop.term == node.epoch
    finally:
        await loop.close()
        await node.stop()
