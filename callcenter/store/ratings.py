"""Rows of the citizen ratings (``ratings``): what ``supervision/ratings.py`` reads and writes. The rules
(when to ask, IVR or SMS, the SMS fallback) live there; this module only knows the table.

Every change of a rating's status or score is a conditional update on the status it expects: of two
answers racing (one token opened twice, a key pressed while the call hangs up), one is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store.dispatches import ACTIVE
from callcenter.store.engine import Store, utcnow
from callcenter.store.leadership import check_term
from callcenter.store.models import Dispatch, Incident, Rating
from callcenter.store.quota import QuotaExceeded

#: Statuses in which a rating still takes a score (asked, not yet settled).
ANSWERABLE = ("requested", "calling")


class RatingRows:
    """The ``ratings`` table, on the app's store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def due(self, since: datetime, limit: int = 50) -> list[int]:
        """Incidents with no rating yet, no dispatch still active, and a dispatch ``resolved`` since ``since``."""

        async def op(session: AsyncSession) -> list[int]:
            active = exists().where(and_(Dispatch.incident_id == Incident.id, Dispatch.status.in_(ACTIVE)))
            rated = exists().where(Rating.incident_id == Incident.id)
            resolved = (
                select(Dispatch.incident_id)
                .where(Dispatch.status == "resolved")
                .group_by(Dispatch.incident_id)
                .having(func.max(Dispatch.updated_at) >= since)
            )
            rows = await session.scalars(
                select(Incident.id).where(Incident.id.in_(resolved), ~active, ~rated).order_by(Incident.id).limit(limit)
            )
            return list(rows)

        return await self.store.transaction("rating_due", op)

    async def incident(self, incident_id: int) -> Incident | None:
        async def op(session: AsyncSession) -> Incident | None:
            return await session.get(Incident, incident_id)

        return await self.store.transaction("rating_incident", op)

    async def create(
        self, incident_id: int, via: str, token: str | None, *, max_texts: int, term: int | None = None
    ) -> Rating:
        """A ``requested`` rating; an SMS one only while the incident has had fewer than ``max_texts``
        (QuotaExceeded otherwise: a citizen is texted about one incident a bounded number of times).
        ``term``: the leader's, checked in the same transaction (``Deposed``: nothing written)."""

        async def op(session: AsyncSession) -> Rating:
            if term is not None:
                await check_term(session, term)
            if via == "sms":
                texts = await session.scalar(
                    select(func.count())
                    .select_from(Rating)
                    .where(Rating.incident_id == incident_id, Rating.via == "sms")
                )
                if int(texts or 0) >= max_texts:
                    raise QuotaExceeded(f"this incident's citizen was already texted {max_texts} times")
            r = Rating(incident_id=incident_id, via=via, status="requested", requested_at=utcnow(), token=token)
            session.add(r)
            await session.flush()
            return r

        return await self.store.transaction("rating_create", op)

    async def with_incident(self, rating_id: int) -> tuple[Rating, Incident] | None:
        async def op(session: AsyncSession) -> tuple[Rating, Incident] | None:
            found = (
                await session.execute(
                    select(Rating, Incident)
                    .join(Incident, Incident.id == Rating.incident_id)
                    .where(Rating.id == rating_id)
                )
            ).first()
            return None if found is None else (found[0], found[1])

        return await self.store.transaction("rating_fallback_read", op)

    async def claim_text(self, incident_id: int, token: str) -> Rating | None:
        """The incident's SMS rating, written now; None when it has one already (one text per incident)."""

        async def op(session: AsyncSession) -> Rating | None:
            texted = await session.scalar(
                select(Rating.id).where(Rating.incident_id == incident_id, Rating.via == "sms").limit(1)
            )
            if texted is not None:
                return None
            r = Rating(incident_id=incident_id, via="sms", status="requested", requested_at=utcnow(), token=token)
            session.add(r)
            await session.flush()
            return r

        return await self.store.transaction("rating_fallback_claim", op)

    async def unaskable(self, incident_id: int) -> None:
        """``via = 'none'``, ``failed``: the incident was looked at and cannot be asked."""

        async def op(session: AsyncSession) -> None:
            session.add(Rating(incident_id=incident_id, via="none", status="failed", requested_at=utcnow()))

        await self.store.transaction("rating_unaskable", op)

    async def by_token(self, token: str) -> tuple[Rating, str] | None:
        """The SMS rating of ``token`` and its incident's reference."""

        async def op(session: AsyncSession) -> tuple[Rating, str] | None:
            found = (
                await session.execute(
                    select(Rating, Incident.reference)
                    .join(Incident, Incident.id == Rating.incident_id)
                    .where(Rating.token == token, Rating.via == "sms")
                )
            ).first()
            return None if found is None else (found[0], str(found[1]))

        return await self.store.transaction("rating_token", op)

    async def score(self, where: Any, score: int) -> Rating | None:
        """Store ``score`` on the answerable, unscored rating matching ``where``; None if there is none
        (settled, scored already, or another answer won)."""
        now = utcnow()

        async def op(session: AsyncSession) -> Rating | None:
            target = await session.scalar(
                select(Rating).where(where, Rating.status.in_(ANSWERABLE), Rating.score.is_(None))
            )
            if target is None:
                return None
            result = await session.execute(
                update(Rating)
                .where(Rating.id == target.id, Rating.status.in_(ANSWERABLE), Rating.score.is_(None))
                .values(status="rated", score=score, rated_at=now)
            )
            if not getattr(result, "rowcount", 0):
                return None
            await session.refresh(target)
            return target

        return await self.store.transaction("rating_score", op)

    async def get(self, rating_id: int) -> Rating | None:
        async def op(session: AsyncSession) -> Rating | None:
            return await session.get(Rating, rating_id)

        return await self.store.transaction("rating_get", op)

    async def set_status(self, rating_id: int, status: str, *, expect: Sequence[str]) -> Rating | None:
        """Move the rating to ``status`` if it is in one of ``expect``; the updated row, or None."""

        async def op(session: AsyncSession) -> Rating | None:
            result = await session.execute(
                update(Rating).where(Rating.id == rating_id, Rating.status.in_(expect)).values(status=status)
            )
            if not getattr(result, "rowcount", 0):
                return None
            return await session.get(Rating, rating_id)

        return await self.store.transaction("rating_status", op)


__all__ = ["ANSWERABLE", "RatingRows"]
