"""The shared login guard's storage: buckets, known pairs, failures and attack alerts in the database.

Every app node reads and writes the same rows, so a guesser slowed on node A is slowed on node B.
The policy (free failures, doubling waits, which buckets apply) is the web layer's
(``web/throttle.py``); this module only runs it on locked rows: :meth:`LoginRows.attempt` locks the
attempt's buckets (created first if missing, in key order so two nodes never deadlock), hands them to
the policy, and writes what it changed in the same transaction, so concurrent attempts on two nodes
are counted one after the other like attempts in one process.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store.engine import Store
from callcenter.store.models import LoginAlert, LoginBucket, LoginFailure, LoginKnown

T = TypeVar("T")
#: The bucket whose ``last`` is the time of the latest attack alert (locked while deciding one).
ALERT_KEY = "alert"
#: The first part of the per-address limits' keys (``store/address_limits.py``): buckets in this table that
#: are not the login guard's, so they do not count towards its size (a flood of addresses on the public
#: pages must not push logins into the overflow buckets).
RATE_KIND = "rate"
_MAX_KEY = 200
_MAX_NAME = 64


def bucket_key(*parts: str) -> str:
    """A bucket's key from its parts (kind, username, client); long ones (typed garbage) are hashed."""
    key = "\x1f".join(parts)
    if len(key) <= _MAX_KEY:
        return key
    return f"{parts[0]}\x1fsha256:{hashlib.sha256(key.encode()).hexdigest()}"


def _name(value: str) -> str:
    return value if len(value) <= _MAX_NAME else "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:48]


@dataclass(frozen=True)
class AlertRow:
    """An attack report as stored (``LoginAlert``)."""

    id: int
    failures: int
    seconds: float
    clients: int
    top_client: str
    top_client_failures: int


class LoginRows:
    """Rows of the shared login guard; one per app, on the app's store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _insert(self, session: AsyncSession) -> Any:
        return pg_insert if session.bind is not None and session.bind.dialect.name == "postgresql" else sqlite_insert

    async def existing(self, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` have a bucket (no lock: for the overflow decision only)."""

        async def op(session: AsyncSession) -> set[str]:
            return set(await session.scalars(select(LoginBucket.key).where(LoginBucket.key.in_(list(keys)))))

        return await self.store.transaction("login_existing", op)

    async def attempt(
        self,
        keys: Sequence[str],
        decide: Callable[[dict[str, LoginBucket]], T],
        *,
        failure: tuple[float, str] | None = None,
    ) -> T:
        """Lock the buckets of ``keys`` (creating missing ones), let ``decide`` change them, store the
        changes; ``failure`` (at, client) is recorded in the same transaction. Returns ``decide``'s result."""
        ordered = sorted(set(keys))

        async def op(session: AsyncSession) -> T:
            insert = self._insert(session)
            stmt = insert(LoginBucket).values([{"key": k, "count": 0, "next_at": 0.0, "last": 0.0} for k in ordered])
            await session.execute(stmt.on_conflict_do_nothing(index_elements=["key"]))
            rows = await session.scalars(
                select(LoginBucket).where(LoginBucket.key.in_(ordered)).order_by(LoginBucket.key).with_for_update()
            )
            buckets = {row.key: row for row in rows}
            result = decide(buckets)
            if failure is not None:
                session.add(LoginFailure(at=failure[0], client=_name(failure[1])))
            return result

        return await self.store.transaction("login_attempt", op)

    async def forget(self, key: str) -> None:
        async def op(session: AsyncSession) -> None:
            await session.execute(delete(LoginBucket).where(LoginBucket.key == key))

        await self.store.transaction("login_forget", op)

    async def is_known(self, username: str, client: str) -> bool:
        async def op(session: AsyncSession) -> bool:
            found = await session.get(LoginKnown, (_name(username), _name(client)))
            return found is not None

        return await self.store.transaction("login_known", op)

    async def remember(self, username: str, client: str, at: float) -> None:
        async def op(session: AsyncSession) -> None:
            insert = self._insert(session)
            stmt = insert(LoginKnown).values(username=_name(username), client=_name(client), at=at)
            await session.execute(stmt.on_conflict_do_update(index_elements=["username", "client"], set_={"at": at}))

        await self.store.transaction("login_remember", op)

    async def failed(self, at: float, client: str) -> None:
        async def op(session: AsyncSession) -> None:
            session.add(LoginFailure(at=at, client=_name(client)))

        await self.store.transaction("login_failed", op)

    async def maybe_alert(self, now: float, window: float, threshold: int) -> AlertRow | None:
        """If ``threshold`` failures or more fell within the last ``window`` seconds and no alert was
        raised within the window, store one (once, whichever node asks first) and return it."""

        async def op(session: AsyncSession) -> AlertRow | None:
            since = now - window
            count = int(await session.scalar(select(func.count(LoginFailure.id)).where(LoginFailure.at >= since)) or 0)
            if count < threshold:
                return None
            insert = self._insert(session)
            stmt = insert(LoginBucket).values(key=ALERT_KEY, count=0, next_at=0.0, last=0.0)
            await session.execute(stmt.on_conflict_do_nothing(index_elements=["key"]))
            marker = await session.scalar(select(LoginBucket).where(LoginBucket.key == ALERT_KEY).with_for_update())
            assert marker is not None
            if marker.count > 0 and now - marker.last < window:
                return None
            marker.count += 1
            marker.last = now
            rows = (
                await session.execute(select(LoginFailure.at, LoginFailure.client).where(LoginFailure.at >= since))
            ).all()
            clients = Counter(client for _at, client in rows)
            top, top_count = clients.most_common(1)[0]
            first = min(at for at, _client in rows)
            alert = LoginAlert(
                at=now,
                failures=len(rows),
                seconds=now - first,
                clients=len(clients),
                top_client=top,
                top_client_failures=top_count,
            )
            session.add(alert)
            await session.flush()
            return AlertRow(alert.id, alert.failures, alert.seconds, alert.clients, top, top_count)

        return await self.store.transaction("login_alert", op)

    async def alert(self, alert_id: int) -> AlertRow | None:
        async def op(session: AsyncSession) -> AlertRow | None:
            a = await session.get(LoginAlert, alert_id)
            if a is None:
                return None
            return AlertRow(a.id, a.failures, a.seconds, a.clients, a.top_client, a.top_client_failures)

        return await self.store.transaction("login_alert_read", op)

    async def prune(self, now: float, window: float) -> int:
        """Drop buckets whose wait is over and whose failures are older than ``window`` (never a delayed
        one), and failures older than the window; returns how many buckets are left."""

        async def op(session: AsyncSession) -> int:
            await session.execute(
                delete(LoginBucket).where(
                    LoginBucket.key != ALERT_KEY, LoginBucket.next_at <= now, LoginBucket.last < now - window
                )
            )
            await session.execute(delete(LoginFailure).where(LoginFailure.at < now - window))
            ours = ~LoginBucket.key.startswith(RATE_KIND + "\x1f", autoescape=True)
            return int(await session.scalar(select(func.count()).select_from(LoginBucket).where(ours)) or 0)

        return await self.store.transaction("login_prune", op)


__all__ = ["ALERT_KEY", "RATE_KIND", "AlertRow", "LoginRows", "bucket_key"]
