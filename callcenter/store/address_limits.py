"""Per-address request limits every app node shares: the public pages (``/lapor``, the location link)
and the verification codes asked per address.

Counted in memory, each node would allow the full limit on its own (two nodes: twice the SMS codes a
centre pays for). The rows are the login guard's buckets (``login_buckets``, ``store/login_throttle.py``:
the same idea, a key and when its next request may come), under keys of their own
(``rate\\x1f<limit>\\x1f<address>``), locked and updated in one transaction by the same
:meth:`LoginRows.attempt`, so concurrent requests on two nodes are counted one after the other.

Each limit is the generic cell rate algorithm: a bucket's ``next_at`` is the theoretical arrival time
of the next request; a request is admitted while that lies less than ``(burst - 1) * interval`` ahead,
and moves it ``interval`` on. With ``burst`` = the limit and ``interval`` = window / limit, an address
gets the whole limit at once and then one request per interval: the limit per window, sustained.
"""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store.engine import Store
from callcenter.store.login_throttle import RATE_KIND, LoginRows, bucket_key
from callcenter.store.models import LoginBucket


class AddressBuckets:
    """The buckets of the per-address limits, on the app's store."""

    def __init__(self, store: Store) -> None:
        self.rows = LoginRows(store)

    async def take(self, limit: str, address: str, *, interval: float, burst: int, now: float) -> bool:
        """Admit one request of ``address`` under ``limit`` (a name: ``public``, ``codes``) at ``now``
        (wall-clock seconds: the nodes' clocks agree, NTP); False when the address is over it."""
        key = bucket_key(RATE_KIND, limit, address)
        tolerance = interval * (max(1, burst) - 1)

        def decide(buckets: dict[str, LoginBucket]) -> bool:
            bucket = buckets[key]
            due = max(bucket.next_at, now)
            if due - now > tolerance:
                return False
            bucket.next_at = due + interval
            bucket.last = now
            bucket.count += 1
            return True

        return await self.rows.attempt([key], decide)

    async def prune(self, now: float) -> None:
        """Drop the buckets that are full again (their next request is due): they hold nothing."""

        async def op(session: AsyncSession) -> None:
            await session.execute(
                delete(LoginBucket).where(
                    LoginBucket.key.startswith(RATE_KIND + "\x1f", autoescape=True), LoginBucket.next_at <= now
                )
            )

        await self.rows.store.transaction("rate_prune", op)


__all__ = ["AddressBuckets"]
