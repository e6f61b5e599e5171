"""Failed-login throttling, in memory per username and per client address.

One process serves a centre, and a restart forgetting the counters is acceptable. The composition root
builds one :class:`LoginThrottle` per app from ``[web] login_max_failures`` / ``login_lockout_seconds``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

#: An address is locked after this many times ``login_max_failures``: a whole call-centre floor may
#: share one address (NAT, a proxy), and one person mistyping must not lock everyone out of 112.
ADDRESS_FACTOR = 4


@dataclass
class _Strikes:
    count: int = 0
    last: float = 0.0
    locked_until: float = 0.0


class LoginThrottle:
    """Counts login attempts per username and per address; too many failures lock for a while.

    Every attempt is counted as a failure *before* the password is checked (and taken back when it
    succeeds): the check-and-count happens with no ``await`` in between, so a burst of concurrent
    guesses cannot all slip past the limit while their hashes are still being verified.
    Strikes older than the lockout period are forgotten, so occasional typos never add up.
    """

    def __init__(
        self,
        max_failures: int,
        lockout_seconds: float,
        *,
        address_factor: int = ADDRESS_FACTOR,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 10_000,
    ) -> None:
        self.max_failures = max_failures
        self.lockout_seconds = lockout_seconds
        self.address_factor = address_factor
        self.clock = clock
        self.max_entries = max_entries
        self._entries: dict[tuple[str, str], _Strikes] = {}

    @property
    def enabled(self) -> bool:
        return self.max_failures > 0

    def _keys(self, username: str, remote: str) -> list[tuple[tuple[str, str], int]]:
        return [(("user", username), self.max_failures), (("addr", remote), self.max_failures * self.address_factor)]

    def locked_for(self, username: str, remote: str) -> float:
        """Seconds until this username and address may try again (0: now)."""
        now = self.clock()
        remaining = 0.0
        for key, _limit in self._keys(username, remote):
            entry = self._entries.get(key)
            if entry is not None:
                remaining = max(remaining, entry.locked_until - now)
        return remaining

    def attempt(self, username: str, remote: str) -> float:
        """Start a login attempt: 0 if it may go ahead (and it is counted), else seconds locked."""
        if not self.enabled:
            return 0.0
        locked = self.locked_for(username, remote)
        if locked > 0:
            return locked
        now = self.clock()
        for key, limit in self._keys(username, remote):
            entry = self._entries.setdefault(key, _Strikes())
            if now - entry.last > self.lockout_seconds:
                entry.count = 0
            entry.count += 1
            entry.last = now
            if entry.count >= limit:
                entry.locked_until = now + self.lockout_seconds
                entry.count = 0
        self._prune(now)
        return 0.0

    def succeeded(self, username: str, remote: str) -> None:
        """The attempt was right: clear the username, take back the address's strike."""
        self._entries.pop(("user", username), None)
        entry = self._entries.get(("addr", remote))
        if entry is not None and entry.count > 0:
            entry.count -= 1

    def _prune(self, now: float) -> None:
        """Bound memory against someone trying a million usernames: forget stale entries first."""
        if len(self._entries) <= self.max_entries:
            return
        stale = [k for k, e in self._entries.items() if now - e.last > self.lockout_seconds and e.locked_until <= now]
        for k in stale:
            del self._entries[k]
        if len(self._entries) > self.max_entries:
            oldest = sorted(self._entries, key=lambda k: self._entries[k].last)
            for k in oldest[: len(self._entries) - self.max_entries]:
                del self._entries[k]
