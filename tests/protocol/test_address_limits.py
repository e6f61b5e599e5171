"""Per-address limits of the public pages and of the verification codes, shared by the app nodes
(``store/address_limits.py`` on the login guard's buckets, ``web/ratelimit.py``): on SQLite and
PostgreSQL two limiters on their own store objects (two nodes) allow the limit once between them,
concurrent requests are counted one after the other, the buckets stay out of the login guard's table
size; and two whole apps on one PostgreSQL refuse an address's ``/lapor/api`` requests together."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from callcenter.store import Store
from callcenter.store.address_limits import AddressBuckets
from callcenter.store.login_throttle import LoginRows
from callcenter.testing.postgres import ThrowawayPostgres
from callcenter.testing.web import AppClient
from callcenter.web.keys import CODE_LIMITER, LIMITER, STORE
from callcenter.web.ratelimit import AddressLimiter

ADDRESS = "198.51.100.7"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def other_node(db_url: str, store: Store) -> AsyncIterator[Store]:
    """A second store object on the same database: what another app node holds."""
    second = Store.from_url(db_url, retry_for=5.0)
    try:
        yield second
    finally:
        await second.close()


def limiter(store: Store, clock: Clock, limit: int = 3, window: float = 3600.0) -> AddressLimiter:
    return AddressLimiter(limit, window=window, name="codes", buckets=AddressBuckets(store), clock=clock)


async def test_two_nodes_allow_an_address_its_limit_once(store: Store, other_node: Store) -> None:
    clock = Clock()
    a, b = limiter(store, clock), limiter(other_node, clock)
    assert [await a.allow(ADDRESS), await a.allow(ADDRESS)] == [True, True]
    # Counted per node, B would allow three more; shared, it allows the one left.
    assert [await b.allow(ADDRESS), await b.allow(ADDRESS), await a.allow(ADDRESS)] == [True, False, False]
    assert await b.allow("203.0.113.9") is True  # another address has its own limit
    # Three an hour sustained: one more every 20 minutes (on either node), not the whole limit at once.
    clock.now += 1_200.0
    assert [await a.allow(ADDRESS), await b.allow(ADDRESS)] == [True, False]
    clock.now += 3_600.0
    assert [await b.allow(ADDRESS) for _ in range(4)] == [True, True, True, False]


async def test_concurrent_requests_on_two_nodes_are_counted_one_after_the_other(
    store: Store, other_node: Store
) -> None:
    clock = Clock()
    nodes = [limiter(store, clock, limit=5), limiter(other_node, clock, limit=5)]
    results = await asyncio.gather(*(nodes[i % 2].allow(ADDRESS) for i in range(12)))
    assert sorted(results) == [False] * 7 + [True] * 5


async def test_the_limits_buckets_are_pruned_and_never_fill_the_login_guards_table(store: Store) -> None:
    clock = Clock()
    public = AddressLimiter(2, window=60.0, name="public", buckets=AddressBuckets(store), clock=clock)
    for i in range(20):
        assert await public.allow(f"192.0.2.{i}")
    rows = LoginRows(store)
    assert await rows.prune(clock.now, 900.0) == 0  # the login guard counts only its own buckets
    assert len(await rows.existing([f"rate\x1fpublic\x1f192.0.2.{i}" for i in range(20)])) == 20
    clock.now += 31.0  # one request each: full again after half a minute
    await AddressBuckets(store).prune(clock.now)
    assert await rows.existing([f"rate\x1fpublic\x1f192.0.2.{i}" for i in range(20)]) == set()


@pytest.mark.postgres
async def test_two_app_nodes_share_the_lapor_limit_of_an_address(
    ami_app: Callable[..., Awaitable[AppClient]], postgres: ThrowawayPostgres
) -> None:
    url = postgres.create_database(f"r_{uuid.uuid4().hex[:16]}")
    a, b = [
        await ami_app(store={"url": url, "retry_for": 5.0, "node": name}, location={"public_per_minute": 4})
        for name in ("a", "b")
    ]
    assert a.app[STORE] is not b.app[STORE] and a.app[LIMITER] is not b.app[LIMITER]
    assert a.app[CODE_LIMITER].buckets is not None  # the codes per address are counted the same way
    statuses = [(await node.get("/lapor/api/state")).status for node in (a, b, a, b, a, b)]
    assert statuses == [200, 200, 200, 200, 429, 429]  # in memory per node: all six would pass
