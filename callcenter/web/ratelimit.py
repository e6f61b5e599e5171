"""A per-address request limit for the public pages (kept in memory, per process: each node counts its own)."""

from __future__ import annotations

import time
from collections import deque


class AddressLimiter:
    """At most ``limit`` requests per client address in any ``window`` seconds (60 by default)."""

    def __init__(self, limit: int, *, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._seen: dict[str, deque[float]] = {}

    def allow(self, address: str | None) -> bool:
        now = time.monotonic()
        key = address or "?"
        if len(self._seen) > 10_000:  # forget idle addresses rather than grow without bound
            self._seen = {k: v for k, v in self._seen.items() if v and now - v[-1] < self.window}
        hits = self._seen.setdefault(key, deque())
        while hits and now - hits[0] >= self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        return True


__all__ = ["AddressLimiter"]
