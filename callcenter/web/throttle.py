"""Login throttling that slows guessing without letting a stranger lock a call-taker out of 112.

A hard lockout hands every attacker a denial of service: five wrong passwords for ``ayu`` from
anywhere would keep ayu from her own desk, and twenty from the centre's shared address (a NAT, the
HTTPS proxy) would keep everyone out. Instead each attempt is *scheduled*:

* per (username, client) pair — the guesser — ``free`` failures go through at once, then each next
  attempt waits 1, 2, 4… seconds up to ``delay_max``: a guesser gets a handful of tries a minute;
* per client across usernames (password spraying from one address) and per username across clients
  (a botnet on one account) the wait grows the same way but never beyond ``shared_delay_max`` (a
  second): those buckets are shared with innocent people, so they slow, never stop;
* a (username, client) pair that has logged in successfully before is *known*: the shared buckets do
  not apply to it, so a call-taker at her usual desk is never slowed by what others do there.

A wait up to ``max_wait`` is served by the login handler sleeping before it checks the password (the
browser just sees a slower answer); a longer one is answered 429 with ``Retry-After``. Every attempt
counts as a failure when it is admitted — with no ``await`` between the check and the count, so a
burst of concurrent guesses cannot all slip through — and a success takes it back.

Memory is bounded (``max_entries``) without ever forgetting a delayed bucket: when the table is full,
only buckets whose wait is over and whose failures are older than ``window`` are dropped; if that frees
nothing, new pairs share one overflow bucket on the short (shared) schedule. Filling the table can
therefore neither erase a guesser's delay nor lock anybody out.

Too many failed or refused logins across the centre within ``window`` is reported once per window to ``on_attack``
(the composition root pushes it to the supervisors' wallboards and logs ``auth.login_attack``).

:class:`LoginGuard` is what the login handler needs; :class:`MemoryThrottle` keeps it in this process.
A database-backed guard (several app nodes sharing the counters) implements the same three methods.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

#: Waits up to this long are served by sleeping; longer ones get 429 with Retry-After.
MAX_WAIT = 2.0
#: The first wait once a bucket's free failures are used up; it doubles with each further failure.
BASE_DELAY = 1.0
SHARED_BASE_DELAY = 0.25
#: Free failures of the shared buckets, as a multiple of the pair's: a floor of people mistyping is normal.
SHARED_FACTOR = 4


@dataclass(frozen=True)
class Admission:
    """What the login handler does with an attempt: sleep ``wait`` seconds, then check the password;
    or, when ``refused`` > 0, answer 429 and let the client come back in that many seconds."""

    wait: float = 0.0
    refused: float = 0.0


@dataclass(frozen=True)
class AttackReport:
    """A burst of failed logins: how many within how long, from how many clients, and the busiest one.
    No usernames: people type passwords into the username field."""

    failures: int
    seconds: float
    clients: int
    top_client: str
    top_client_failures: int

    def as_json(self) -> dict[str, object]:
        return {
            "failures": self.failures,
            "seconds": round(self.seconds, 1),
            "clients": self.clients,
            "top_client": self.top_client,
            "top_client_failures": self.top_client_failures,
        }


class LoginGuard(Protocol):
    """The login handler's view of a throttle (async so that a shared, database-backed one fits)."""

    async def admit(self, username: str, client: str) -> Admission: ...

    async def failed(self, username: str, client: str) -> None: ...

    async def succeeded(self, username: str, client: str) -> None: ...


@dataclass(frozen=True)
class Schedule:
    """``free`` attempts without a wait, then ``base`` seconds doubling per failure up to ``cap``."""

    free: int
    base: float
    cap: float

    def delay(self, count: int) -> float:
        if count < self.free:
            return 0.0
        return min(self.cap, self.base * 2.0 ** min(count - self.free, 30))


@dataclass
class _Bucket:
    schedule: Schedule
    count: int = 0
    #: When the next attempt of this bucket may start.
    next_at: float = 0.0
    last: float = 0.0


Key = tuple[str, ...]


class MemoryThrottle:
    """The :class:`LoginGuard` of one process (see the module docstring for the rules)."""

    def __init__(
        self,
        *,
        free_failures: int = 3,
        delay_max: float = 60.0,
        shared_delay_max: float = 1.0,
        window: float = 900.0,
        alert_failures: int = 20,
        on_attack: Callable[[AttackReport], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 50_000,
        max_known: int = 10_000,
        max_wait: float = MAX_WAIT,
    ) -> None:
        self.enabled = free_failures > 0
        self.pair = Schedule(free_failures, BASE_DELAY, delay_max)
        self.shared = Schedule(free_failures * SHARED_FACTOR, SHARED_BASE_DELAY, shared_delay_max)
        self.window = window
        self.alert_failures = alert_failures
        self.on_attack = on_attack
        self.clock = clock
        self.max_entries = max_entries
        self.max_known = max_known
        self.max_wait = max_wait
        self._buckets: dict[Key, _Bucket] = {}
        self._known: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._failures: deque[tuple[float, str]] = deque(maxlen=max(alert_failures, 1))
        self._alerted_at: float | None = None
        self._prune_after = 0.0

    def __len__(self) -> int:
        return len(self._buckets)

    # -- the guard ----------------------------------------------------------------------------------

    def _keys(self, username: str, client: str) -> list[tuple[Key, Schedule]]:
        keys: list[tuple[Key, Schedule]] = [(("pair", username, client), self.pair)]
        if (username, client) not in self._known:
            keys += [(("client", client), self.shared), (("user", username), self.shared)]
        return keys

    def _expired(self, bucket: _Bucket, now: float) -> bool:
        return now >= bucket.next_at and now - bucket.last > self.window

    async def admit(self, username: str, client: str) -> Admission:
        if not self.enabled:
            return Admission()
        now = self.clock()
        buckets = [self._bucket(key, schedule, now) for key, schedule in self._keys(username, client)]
        start = max([now] + [b.next_at for b in buckets])
        if start - now > self.max_wait:
            self._note_failure(client, now)  # a refused attempt is as much a sign of attack as a wrong one
            return Admission(refused=start - now)
        for bucket in buckets:
            if self._expired(bucket, now):
                bucket.count = 0
            bucket.count += 1
            bucket.last = start
            bucket.next_at = max(bucket.next_at, start + bucket.schedule.delay(bucket.count))
        return Admission(wait=start - now)

    async def failed(self, username: str, client: str) -> None:
        """The password was wrong (the attempt stays counted): watch for an attack on the centre."""
        if self.enabled:
            self._note_failure(client, self.clock())

    def _note_failure(self, client: str, now: float) -> None:
        if self.alert_failures <= 0:
            return
        self._failures.append((now, client))
        if len(self._failures) < self.alert_failures:
            return
        first = self._failures[0][0]
        if now - first > self.window:
            return
        if self._alerted_at is not None and now - self._alerted_at < self.window:
            return
        self._alerted_at = now
        clients = Counter(c for _t, c in self._failures)
        top, top_count = clients.most_common(1)[0]
        report = AttackReport(len(self._failures), now - first, len(clients), top, top_count)
        if self.on_attack is not None:
            self.on_attack(report)

    async def succeeded(self, username: str, client: str) -> None:
        """Right password: the pair starts afresh and is known from now on; the shared buckets get
        their count back (their schedule stays: it is shared with whoever else is trying)."""
        if not self.enabled:
            return
        shared = [("client", client), ("user", username)] if (username, client) not in self._known else []
        self._buckets.pop(("pair", username, client), None)
        for key in shared:
            bucket = self._buckets.get(key)
            if bucket is not None and bucket.count > 0:
                bucket.count -= 1
        self._known[(username, client)] = None
        self._known.move_to_end((username, client))
        while len(self._known) > self.max_known:
            self._known.popitem(last=False)

    # -- memory -------------------------------------------------------------------------------------

    def _bucket(self, key: Key, schedule: Schedule, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is not None:
            return bucket
        if len(self._buckets) >= self.max_entries:
            self._prune(now)
        if len(self._buckets) >= self.max_entries:
            # Full of live buckets: this one shares an overflow bucket on the shared (short) schedule,
            # so neither a guesser's delay is forgotten nor a newcomer held for long.
            key, schedule = ("overflow", key[0]), self.shared
            bucket = self._buckets.get(key)
            if bucket is not None:
                return bucket
        bucket = self._buckets[key] = _Bucket(schedule)
        return bucket

    def _prune(self, now: float) -> None:
        """Drop buckets whose wait is over and whose failures are older than the window; a scan that
        found nothing is not repeated for a second (a full table must not make every login O(n))."""
        if now < self._prune_after:
            return
        stale = [k for k, b in self._buckets.items() if self._expired(b, now)]
        for key in stale:
            del self._buckets[key]
        if len(self._buckets) >= self.max_entries:
            self._prune_after = now + 1.0


__all__ = ["Admission", "AttackReport", "LoginGuard", "MemoryThrottle", "Schedule"]
