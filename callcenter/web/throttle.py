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

:class:`LoginGuard` is what the login handler needs; :class:`MemoryThrottle` keeps it in this process;
:class:`SharedThrottle` keeps it in the database (``store/login_throttle.py``), so that every app node
sharing the store slows the same guesser — what the app runs, on SQLite as on PostgreSQL.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from callcenter.store.login_throttle import LoginRows, bucket_key
from callcenter.store.models import LoginBucket

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


class BucketState(Protocol):
    """What the schedule reads and moves in a bucket (in memory, or a locked database row)."""

    count: int
    next_at: float
    last: float


def schedule_attempt(
    buckets: Sequence[tuple[BucketState, Schedule]], now: float, max_wait: float, window: float
) -> Admission:
    """One attempt against its buckets: it may start when the latest of them allows; if that is more
    than ``max_wait`` away it is refused (nothing counted), else it is counted in each bucket (a bucket
    whose wait is over and whose failures left the ``window`` starts afresh) and moves its next start."""
    start = max([now] + [b.next_at for b, _s in buckets])
    if start - now > max_wait:
        return Admission(refused=start - now)
    for bucket, schedule in buckets:
        if now >= bucket.next_at and now - bucket.last > window:
            bucket.count = 0
        bucket.count += 1
        bucket.last = start
        bucket.next_at = max(bucket.next_at, start + schedule.delay(bucket.count))
    return Admission(wait=start - now)


class _Rules:
    """The rules both guards apply (see the module docstring); they differ only in where buckets live."""

    def __init__(
        self,
        free_failures: int,
        delay_max: float,
        shared_delay_max: float,
        window: float,
        alert_failures: int,
        on_attack: Callable[[AttackReport], None] | None,
        clock: Callable[[], float],
        max_wait: float,
    ) -> None:
        self.enabled = free_failures > 0
        self.pair = Schedule(free_failures, BASE_DELAY, delay_max)
        self.shared = Schedule(free_failures * SHARED_FACTOR, SHARED_BASE_DELAY, shared_delay_max)
        self.window = window
        self.alert_failures = alert_failures
        self.on_attack = on_attack
        self.clock = clock
        self.max_wait = max_wait


class MemoryThrottle(_Rules):
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
        super().__init__(free_failures, delay_max, shared_delay_max, window, alert_failures, on_attack, clock, max_wait)
        self.max_entries = max_entries
        self.max_known = max_known
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
        admission = schedule_attempt([(b, b.schedule) for b in buckets], now, self.max_wait, self.window)
        if admission.refused:
            self._note_failure(client, now)  # a refused attempt is as much a sign of attack as a wrong one
        return admission

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


class SharedThrottle(_Rules):
    """The :class:`LoginGuard` of several app nodes: :class:`MemoryThrottle`'s rules on buckets in the
    database (``store/login_throttle.py``), so a guesser slowed on one node is slowed on every node.

    Each attempt locks its buckets in one transaction (no two attempts, on any node, are counted from
    the same state). A full table (``max_entries`` buckets, counted at each prune) puts new keys in
    the overflow buckets on the shared schedule, as in memory: a delayed bucket is never dropped, only
    those whose wait is over and whose failures left the window (pruned every ``prune_every`` seconds).
    Times are wall-clock seconds: the nodes' clocks must agree (NTP), as for the sessions' expiry.
    An attack report is stored once per window by whichever node sees it, and ``announce`` is called
    with its id (the wiring turns that into a signal: every node's supervisors hear of it).
    """

    def __init__(
        self,
        rows: LoginRows,
        *,
        free_failures: int = 3,
        delay_max: float = 60.0,
        shared_delay_max: float = 1.0,
        window: float = 900.0,
        alert_failures: int = 20,
        on_attack: Callable[[AttackReport], None] | None = None,
        announce: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.time,
        max_entries: int = 200_000,
        max_wait: float = MAX_WAIT,
        prune_every: float = 60.0,
    ) -> None:
        super().__init__(free_failures, delay_max, shared_delay_max, window, alert_failures, on_attack, clock, max_wait)
        self.rows = rows
        self.announce = announce
        self.max_entries = max_entries
        self.prune_every = prune_every
        self._pruned_at: float | None = None
        self._full = False

    async def _keys(self, username: str, client: str, now: float) -> dict[str, Schedule]:
        keys = {bucket_key("pair", username, client): self.pair}
        if not await self.rows.is_known(username, client):
            keys[bucket_key("client", client)] = self.shared
            keys[bucket_key("user", username)] = self.shared
        if self._pruned_at is None or now - self._pruned_at >= self.prune_every:
            self._pruned_at = now
            self._full = await self.rows.prune(now, self.window) >= self.max_entries
        if self._full:
            found = await self.rows.existing(list(keys))
            kept = {k: s for k, s in keys.items() if k in found}
            for key in keys:
                if key not in found:
                    kept.setdefault(bucket_key("overflow", key.split("\x1f", 1)[0]), self.shared)
            keys = kept
        return keys

    async def admit(self, username: str, client: str) -> Admission:
        if not self.enabled:
            return Admission()
        now = self.clock()
        keys = await self._keys(username, client, now)

        def decide(buckets: dict[str, LoginBucket]) -> Admission:
            return schedule_attempt([(buckets[k], s) for k, s in keys.items()], now, self.max_wait, self.window)

        admission = await self.rows.attempt(list(keys), decide)
        if admission.refused:
            await self._note_failure(client, now)  # a refused attempt is as much a sign of attack as a wrong one
        return admission

    async def failed(self, username: str, client: str) -> None:
        if self.enabled:
            await self._note_failure(client, self.clock())

    async def _note_failure(self, client: str, now: float) -> None:
        if self.alert_failures <= 0:
            return
        await self.rows.failed(now, client)
        alert = await self.rows.maybe_alert(now, self.window, self.alert_failures)
        if alert is None:
            return
        report = AttackReport(alert.failures, alert.seconds, alert.clients, alert.top_client, alert.top_client_failures)
        if self.on_attack is not None:
            self.on_attack(report)
        if self.announce is not None:
            self.announce(alert.id)

    async def attack(self, key: str) -> dict[str, object] | None:
        """A stored attack report by id, as the supervisors' wallboard shows it (``web/news.py``)."""
        alert = await self.rows.alert(int(key)) if key.isdigit() else None
        if alert is None:
            return None
        return AttackReport(
            alert.failures, alert.seconds, alert.clients, alert.top_client, alert.top_client_failures
        ).as_json()

    async def succeeded(self, username: str, client: str) -> None:
        if not self.enabled:
            return
        now = self.clock()
        known = await self.rows.is_known(username, client)
        await self.rows.forget(bucket_key("pair", username, client))
        if not known:

            def give_back(buckets: dict[str, LoginBucket]) -> None:
                for bucket in buckets.values():
                    if bucket.count > 0:
                        bucket.count -= 1

            await self.rows.attempt([bucket_key("client", client), bucket_key("user", username)], give_back)
        await self.rows.remember(username, client, now)


__all__ = [
    "Admission",
    "AttackReport",
    "LoginGuard",
    "MemoryThrottle",
    "Schedule",
    "SharedThrottle",
    "schedule_attempt",
]
