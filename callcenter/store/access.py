"""The access log: who opened which sensitive record, for UU PDP No. 27/2022 accountability.

Recordings and women-and-children cases hold specific (sensitive) personal data; a regional centre
must be able to say who listened to or read them, and when. Every reader of such a record calls
:func:`log_access` in the request that serves it, so that a record is never shown without its trace.
The retention job writes its runs here too, so deletions are accounted for in the same place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store.calls import Store, utcnow
from callcenter.store.models import AccessLog

__all__ = ["AccessEntry", "access_entries", "log_access"]


@dataclass(frozen=True)
class AccessEntry:
    id: int
    user_id: int | None
    at: datetime
    action: str
    subject_type: str
    subject_id: str
    detail: dict[str, Any]


async def log_access(
    store: Store,
    user_id: int | None,
    action: str,
    subject_type: str,
    subject_id: str,
    detail: Mapping[str, Any] | None = None,
) -> int:
    """Write one access-log row in its own transaction and return its id.

    Its own transaction on purpose: the trace must be committed even when the caller's work (say,
    streaming a recording) fails later. ``user_id`` is None for system actions (a retention run).
    Raises :class:`~callcenter.store.StoreUnavailable` when the database is gone: callers serving a
    sensitive record must then refuse to serve it rather than serve it untraced.
    """

    async def op(session: AsyncSession) -> int:
        row = AccessLog(
            user_id=user_id,
            at=utcnow(),
            action=action[:32],
            subject_type=subject_type[:16],
            subject_id=str(subject_id)[:64],
            detail=dict(detail or {}),
        )
        session.add(row)
        await session.flush()
        return row.id

    return await store.transaction("access_log", op)


async def access_entries(
    store: Store, *, subject_type: str | None = None, subject_id: str | None = None, limit: int = 100
) -> list[AccessEntry]:
    """The newest access-log rows (optionally for one subject), newest first: for audits and tests."""

    async def op(session: AsyncSession) -> list[AccessEntry]:
        query = select(AccessLog).order_by(AccessLog.at.desc(), AccessLog.id.desc()).limit(limit)
        if subject_type is not None:
            query = query.where(AccessLog.subject_type == subject_type)
        if subject_id is not None:
            query = query.where(AccessLog.subject_id == subject_id)
        return [
            AccessEntry(r.id, r.user_id, r.at, r.action, r.subject_type, r.subject_id, dict(r.detail))
            for r in await session.scalars(query)
        ]

    return await store.transaction("access_log_read", op)
