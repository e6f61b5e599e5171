"""A per-address request limit for the public pages (one process serves a centre: kept in memory)."""

from __future__ import annotations

import time
from collections import deque


class AddressLimiter:
    """At most ``per_minute`` requests per client address in any 60 s."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._seen: dict[str, deque[float]] = {}

    def allow(self, address: str | None) -> bool:
        now = time.monotonic()
        key = address or "?"
        if len(self._seen) > 10_000:  # forget idle addresses rather than grow without bound
            self._seen = {k: v for k, v in self._seen.items() if v and now - v[-1] < 60}
        hits = self._seen.setdefault(key, deque())
        while hits and now - hits[0] >= 60:
            hits.popleft()
        if len(hits) >= self.per_minute:
            return False
        hits.append(now)
        return True


__all__ = ["AddressLimiter"]
