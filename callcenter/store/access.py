"""The access log: who opened which sensitive record, for UU PDP No. 27/2022 accountability.

Recordings and women-and-children cases hold specific (sensitive) personal data; a regional centre
must be able to say who listened to or read them, and when. Every reader of such a record calls
:func:`log_access` in the request that serves it, so that a record is never shown without its trace.
The retention job writes its runs here too, so deletions are accounted for in the same place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Text, cast, select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.forms.categories import WOMEN_AND_CHILDREN
from callcenter.store.engine import Store, utcnow
from callcenter.store.models import AccessLog, IncidentAudit

__all__ = ["AccessEntry", "access_entries", "log_access", "log_accesses", "sensitive_incidents"]


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


@dataclass(frozen=True)
class Access:
    """One row for :func:`log_accesses`."""

    user_id: int | None
    action: str
    subject_type: str
    subject_id: str
    detail: Mapping[str, Any]


async def log_accesses(store: Store, rows: Sequence[Access]) -> None:
    """Write several access-log rows in one transaction (a list read by several people at once);
    like :func:`log_access`, raises when the database is gone, and the reader must not be served."""
    if not rows:
        return
    now = utcnow()

    async def op(session: AsyncSession) -> None:
        session.add_all(
            AccessLog(
                user_id=r.user_id,
                at=now,
                action=r.action[:32],
                subject_type=r.subject_type[:16],
                subject_id=str(r.subject_id)[:64],
                detail=dict(r.detail),
            )
            for r in rows
        )

    await store.transaction("access_log", op)


async def sensitive_incidents(store: Store, categories: Mapping[int, str | None]) -> set[int]:
    """Which of these incidents (id → category as read) are women-and-children cases: filed under that
    category now, or *ever* (its audit trail names it). A case moved to another category stays
    traced, so recategorising it can neither hide who read it nor open a window to read it untraced."""
    found = {i for i, category in categories.items() if category == WOMEN_AND_CHILDREN}
    rest = sorted(set(categories) - found)
    if not rest:
        return found

    async def op(session: AsyncSession) -> set[int]:
        ids: set[int] = set()
        for start in range(0, len(rest), 500):
            rows = await session.scalars(
                select(IncidentAudit.incident_id)
                .where(
                    IncidentAudit.incident_id.in_(rest[start : start + 500]),
                    cast(IncidentAudit.changes, Text).like(f"%{WOMEN_AND_CHILDREN}%"),
                )
                .distinct()
            )
            ids.update(rows)
        return ids

    return found | await store.transaction("sensitive_incidents", op)


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
