"""Per-address request limits of the public pages (``/lapor``, the location link) and of the codes asked
per address, shared by every app node through the database (``store/address_limits.py``)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from callcenter.store.address_limits import AddressBuckets


class AddressLimiter:
    """At most ``limit`` requests per client address per ``window`` seconds, counted across app nodes.

    This node's own count (a sliding window in memory) answers first: an address already over the
    limit here is refused without a database round trip, so a flood from one address costs the
    database nothing. What passes here is then counted in the shared bucket (``name``), which
    every node consults: two nodes together allow the limit once, not twice. Without ``buckets`` (a
    single process in a unit test) the memory count is the whole limit.
    """

    def __init__(
        self,
        limit: int,
        *,
        window: float = 60.0,
        name: str = "public",
        buckets: AddressBuckets | None = None,
        clock: Callable[[], float] = time.time,
        prune_every: float = 60.0,
    ) -> None:
        self.limit = limit
        self.window = window
        self.name = name
        self.buckets = buckets
        self.clock = clock
        self.prune_every = prune_every
        self._pruned_at = 0.0
        self._seen: dict[str, deque[float]] = {}

    def _here(self, key: str, now: float) -> bool:
        if len(self._seen) > 10_000:  # forget idle addresses rather than grow without bound
            self._seen = {k: v for k, v in self._seen.items() if v and now - v[-1] < self.window}
        hits = self._seen.setdefault(key, deque())
        while hits and now - hits[0] >= self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        return True

    async def allow(self, address: str | None) -> bool:
        key = address or "?"
        now = self.clock()
        if not self._here(key, now):
            return False
        if self.buckets is None:
            return True
        if now - self._pruned_at >= self.prune_every:
            self._pruned_at = now
            await self.buckets.prune(now)
        interval = self.window / max(1, self.limit)
        if await self.buckets.take(self.name, key, interval=interval, burst=self.limit, now=now):
            return True
        hits = self._seen.get(key)
        if hits:
            hits.pop()  # refused by the shared count: not one this node let through
        return False


__all__ = ["AddressLimiter"]
