"""The shared login guard (``SharedThrottle`` on ``store/login_throttle.py``): the in-memory guard's rules on
database rows, on SQLite and PostgreSQL, and two app nodes on one PostgreSQL slowing the same guesser."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable

import pytest

from callcenter.store import Store
from callcenter.store.login_throttle import LoginRows
from callcenter.testing.postgres import ThrowawayPostgres
from callcenter.testing.web import AppClient, UserSession, make_user
from callcenter.web.keys import LOGIN_GUARD, STORE
from callcenter.web.throttle import MAX_WAIT, Admission, AttackReport, SharedThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def guard(store: Store, clock: Clock, **kwargs: object) -> SharedThrottle:
    return SharedThrottle(LoginRows(store), clock=clock, **kwargs)  # type: ignore[arg-type]


async def fail(t: SharedThrottle, user: str, client: str) -> Admission:
    admission = await t.admit(user, client)
    if not admission.refused:
        await t.failed(user, client)
    return admission


async def test_a_guesser_waits_longer_and_longer_but_is_never_locked(store: Store) -> None:
    clock = Clock()
    t = guard(store, clock, free_failures=3, delay_max=60.0)
    waits = [(await fail(t, "ayu", "198.51.100.7")).wait for _ in range(4)]
    assert waits == [0.0, 0.0, 0.0, 1.0]  # then 2, 4, 8… seconds: refused while the wait is longer than a sleep
    assert (await t.admit("ayu", "198.51.100.7")).refused == 3.0
    clock.now += 1_000.0  # never longer than delay_max after the last attempt
    assert (await t.admit("ayu", "198.51.100.7")).refused == 0
    assert await t.admit("ayu", "203.0.113.5") == Admission()  # ayu at her own desk: not slowed


async def test_a_success_clears_the_pair_and_old_failures_are_forgotten(store: Store) -> None:
    clock = Clock()
    t = guard(store, clock, free_failures=2, window=60.0)
    await fail(t, "ayu", "a")
    await fail(t, "ayu", "a")
    assert (await t.admit("ayu", "a")).wait == 1.0
    await t.succeeded("ayu", "a")
    assert await t.admit("ayu", "a") == Admission()
    await t.failed("ayu", "a")
    await fail(t, "ayu", "a")
    clock.now += 61.0
    assert await t.admit("ayu", "a") == Admission()


async def test_shared_buckets_slow_a_sprayer_by_a_second_at_most_and_spare_known_desks(store: Store) -> None:
    clock = Clock()
    t = guard(store, clock, free_failures=3, shared_delay_max=1.0)
    await t.admit("ayu", "10.0.0.9")
    await t.succeeded("ayu", "10.0.0.9")
    for i in range(30):
        admission = await fail(t, f"user{i}", "10.0.0.9")
        assert admission.refused == 0 and admission.wait <= 1.0
        clock.now += admission.wait
    assert await t.admit("ayu", "10.0.0.9") == Admission()  # her usual desk: never slowed by the sprayer


async def test_flooding_a_full_table_neither_erases_a_delay_nor_locks_anyone_out(store: Store) -> None:
    clock = Clock()
    t = guard(store, clock, free_failures=1, max_entries=10, prune_every=0.0)
    await fail(t, "ayu", "guesser")
    assert (await fail(t, "ayu", "guesser")).wait == 1.0
    for i in range(20):  # a flood of fresh pairs fills the table
        await fail(t, f"x{i}", f"c{i}")
    assert (await t.admit("ayu", "guesser")).refused > 0  # the guesser's delay survived the flood
    # A newcomer shares the overflow buckets on the short schedule: slowed by seconds at most, never stopped.
    admission = await t.admit("newcomer", "desk")
    assert admission.refused <= MAX_WAIT + 1.0
    clock.now += admission.refused
    assert (await t.admit("newcomer", "desk")).refused == 0


async def test_concurrent_attempts_are_counted_one_after_the_other(store: Store) -> None:
    t = guard(store, Clock(), free_failures=3)
    admissions = await asyncio.gather(*(t.admit("ayu", "bot") for _ in range(8)))
    assert sorted(a.wait for a in admissions if not a.refused) == [0.0, 0.0, 0.0, 1.0]


async def test_an_attack_is_reported_once_per_window(store: Store) -> None:
    clock = Clock()
    reports: list[AttackReport] = []
    ids: list[int] = []
    t = guard(store, clock, alert_failures=5, window=60.0, on_attack=reports.append, announce=ids.append)
    for i in range(12):
        await fail(t, f"u{i}", "203.0.113.9" if i % 3 else "198.51.100.1")
        clock.now += 1.0
    assert len(reports) == 1 and len(ids) == 1
    assert reports[0].failures == 5 and reports[0].top_client == "203.0.113.9"
    assert await t.attack(str(ids[0])) == reports[0].as_json()
    clock.now += 61.0
    for i in range(5):
        await fail(t, f"v{i}", "192.0.2.1")
    assert len(reports) == 2


async def two_nodes(
    ami_app: Callable[..., Awaitable[AppClient]], postgres: ThrowawayPostgres, web: dict[str, object]
) -> tuple[AppClient, AppClient]:
    """Two whole apps on one fresh PostgreSQL database, listening to each other's signals."""
    url = postgres.create_database(f"g_{uuid.uuid4().hex[:16]}")
    nodes = [await ami_app(store={"url": url, "retry_for": 5.0, "node": name}, web=web) for name in ("a", "b")]
    for node in nodes:
        await asyncio.wait_for(node.app[STORE].signals.listening.wait(), 10)
    return nodes[0], nodes[1]


@pytest.mark.postgres
async def test_bad_logins_on_node_a_delay_the_same_user_and_client_on_node_b(
    ami_app: Callable[..., Awaitable[AppClient]], postgres: ThrowawayPostgres
) -> None:
    a, b = await two_nodes(ami_app, postgres, {"login_free_failures": 2, "login_delay_max": 60.0})
    await make_user(a.app[STORE], "ayu", "calltaker")
    assert isinstance(a.app[LOGIN_GUARD], SharedThrottle) and isinstance(b.app[LOGIN_GUARD], SharedThrottle)
    wrong = {"username": "ayu", "password": "not her password"}
    for _ in range(2):
        resp = await a.post("/api/login", json=wrong)
        assert resp.status == 401
    started = time.monotonic()
    resp = await b.post("/api/login", json=wrong)  # node B: the same guesser's third try waits
    assert resp.status == 401 and time.monotonic() - started >= 0.9
    # Waits double (2 s, 4 s…): soon one is longer than a sleep and the attempt is refused.
    statuses = [(await b.post("/api/login", json=wrong)).status for _ in range(2)]
    assert statuses[-1] == 429, statuses
    # Someone else on node A is not slowed by it.
    await make_user(a.app[STORE], "budi", "calltaker")
    started = time.monotonic()
    resp = await a.post("/api/login", json={"username": "budi", "password": "wrong"})
    assert resp.status == 401 and time.monotonic() - started < 0.9


@pytest.mark.postgres
async def test_an_attack_seen_on_node_a_is_on_the_wallboard_of_node_b_once(
    ami_app: Callable[..., Awaitable[AppClient]], postgres: ThrowawayPostgres
) -> None:
    a, b = await two_nodes(ami_app, postgres, {"login_free_failures": 50, "login_alert_failures": 4})
    sri = await make_user(a.app[STORE], "sri", "supervisor")
    session = await UserSession(b).login(sri)
    try:
        ws = await session.ws()
        for i in range(6):
            assert (await a.post("/api/login", json={"username": f"u{i}", "password": "x"})).status == 401
        banners = []
        with contextlib.suppress(TimeoutError):
            while True:
                message = await ws.receive_json(timeout=1.0)
                if message["type"] == "login_attack":
                    banners.append(message)
        assert len(banners) == 1 and banners[0]["failures"] == 4 and banners[0]["clients"] == 1
    finally:
        await session.close()
