"""Prank, hoax and silent flags per number, held in memory for routing.

Routing a 112 call must not wait on the database, and it needs only one fact from it: how often
this number was flagged lately. Flags are few (one per classified abusive call), so a map loaded at
start and updated on every new flag answers that without a query. The database stays the record;
this is an index of it. Flags saved on another app node arrive as a store signal naming the number,
whose flags are then re-read (``Calls.reload_flags``); a periodic full reload is the safety net.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from datetime import datetime

#: Flag kinds that count against a number when its next call is routed.
ABUSE_KINDS = frozenset({"prank", "hoax", "silent"})


class FlagIndex:
    def __init__(self) -> None:
        self._times: dict[str, list[datetime]] = {}

    def load(self, flags: Iterable[tuple[str, str, datetime]]) -> None:
        """Replace the index with ``(number, kind, at)`` rows read from the database."""
        self._times = {}
        for number, kind, at in flags:
            self.add(number, kind, at)

    def add(self, number: str, kind: str, at: datetime) -> None:
        if kind in ABUSE_KINDS:
            bisect.insort(self._times.setdefault(number, []), at)

    def replace(self, number: str, flags: Iterable[tuple[str, datetime]]) -> None:
        """Put ``number``'s ``(kind, at)`` flags as the database now has them in place of what was indexed."""
        self._times.pop(number, None)
        for kind, at in flags:
            self.add(number, kind, at)

    def count(self, number: str, since: datetime) -> int:
        times = self._times.get(number)
        if not times:
            return 0
        return len(times) - bisect.bisect_left(times, since)

    def prune(self, before: datetime) -> None:
        """Drop flags too old to matter any more, so the index stays as small as the window."""
        for number in list(self._times):
            times = self._times[number]
            del times[: bisect.bisect_left(times, before)]
            if not times:
                del self._times[number]

    def __len__(self) -> int:
        return sum(len(t) for t in self._times.values())
