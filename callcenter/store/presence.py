"""The app's record of who is logged in to the queue, and paused (``queue_logins``).

Asterisk is the authority on who is in the queue *now*; this table is what the app has asked for, so
that the queue can be put back together after Asterisk restarts and forgets every dynamic member.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store.engine import Store, utcnow
from callcenter.store.models import QueueLogin


@dataclass(frozen=True)
class LoginRecord:
    queue: str
    interface: str
    member_name: str
    paused: bool = False
    reason: str = ""
    user_id: int | None = None


def _record(row: QueueLogin) -> LoginRecord:
    return LoginRecord(row.queue, row.interface, row.member_name, row.paused, row.reason, row.user_id)


class QueueLogins:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def logged_in(self, queue: str) -> list[LoginRecord]:
        async def op(session: AsyncSession) -> list[LoginRecord]:
            rows = await session.scalars(
                select(QueueLogin).where(QueueLogin.queue == queue).order_by(QueueLogin.logged_in_at)
            )
            return [_record(r) for r in rows]

        return await self.store.transaction("queue_logins", op)

    async def log_in(self, record: LoginRecord) -> None:
        """Record a login (again: a repeated login keeps the first time and takes the new state)."""

        async def op(session: AsyncSession) -> None:
            now = utcnow()
            row = await session.get(QueueLogin, (record.queue, record.interface))
            if row is None:
                row = QueueLogin(queue=record.queue, interface=record.interface, logged_in_at=now)
                session.add(row)
            row.member_name = record.member_name
            row.user_id = record.user_id
            row.paused = record.paused
            row.reason = record.reason
            row.updated_at = now

        await self.store.transaction("queue_login", op)

    async def set_paused(self, queue: str, interface: str, paused: bool, reason: str) -> bool:
        """Record a pause state; False when the interface is not logged in (nothing to record)."""

        async def op(session: AsyncSession) -> bool:
            row = await session.get(QueueLogin, (queue, interface))
            if row is None:
                return False
            row.paused = paused
            row.reason = reason if paused else ""
            row.updated_at = utcnow()
            return True

        return await self.store.transaction("queue_pause", op)

    async def log_out(self, queue: str, interface: str) -> None:
        async def op(session: AsyncSession) -> None:
            await session.execute(
                delete(QueueLogin).where(QueueLogin.queue == queue, QueueLogin.interface == interface)
            )

        await self.store.transaction("queue_logout", op)
