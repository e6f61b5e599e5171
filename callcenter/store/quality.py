"""Rows of the quality review (``quality_samples``, ``quality_reviews``): what ``supervision/quality.py`` reads
and writes. The rules (what to sample, how to score) live there; this module only knows the tables.

A call's call-taker is its ``answered_by`` as the queue reported it: the member name, which is the
interface (``PJSIP/taker1``), the endpoint (``taker1``, a static member), or the name the console
logged in with (the user's display name). :func:`calltaker_keys` maps all of these to the account.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store.engine import Store, utcnow
from callcenter.store.models import Call, Draft, Incident, QualityReview, QualitySample, User
from callcenter.store.roles import CALLTAKER

__all__ = [
    "REVIEW_DRAFT_PREFIX",
    "Candidate",
    "NewSample",
    "QualityStore",
    "ReviewRow",
    "SampleRow",
    "ScoreRow",
    "calltaker_keys",
    "review_draft_key",
]

#: A review being typed is kept like an intake being typed (the ``drafts`` rows, ``/api/drafts/{key}``),
#: under this prefix and the call's id, so a reviewer's reload loses nothing.
REVIEW_DRAFT_PREFIX = "review."


def review_draft_key(call_id: str) -> str:
    return REVIEW_DRAFT_PREFIX + call_id


@dataclass(frozen=True)
class Candidate:
    """An answered call that may be drawn."""

    id: str
    arrived_at: datetime
    answered_by: str | None
    calltaker_id: int | None
    critical: bool


@dataclass(frozen=True)
class NewSample:
    call_id: str
    week: str
    reason: str
    calltaker: str | None
    calltaker_id: int | None
    drawn_by: int | None
    drawn_at: datetime
    due_at: datetime


@dataclass(frozen=True)
class ReviewRow:
    id: int
    reviewer_id: int | None
    reviewer: str | None
    levels: dict[str, Any]
    deviations: dict[str, Any]
    score: float
    critical: bool
    comment: str
    submitted_at: datetime
    acknowledged_at: datetime | None


@dataclass(frozen=True)
class SampleRow:
    id: int
    call_id: str
    arrived_at: datetime
    caller_number: str | None
    week: str
    reason: str
    calltaker: str | None
    calltaker_id: int | None
    calltaker_name: str | None
    drawn_at: datetime
    due_at: datetime
    #: Oldest submitted first: ``reviews[0]`` is the primary review.
    reviews: tuple[ReviewRow, ...]


@dataclass(frozen=True)
class ScoreRow:
    calltaker_id: int | None
    calltaker: str
    week: str
    reviews: int
    average: float
    critical: int


def calltaker_keys(users: Iterable[tuple[int, str, str, str | None]]) -> dict[str, int]:
    """``answered_by`` value → user id for call-takers (id, username, display name, interface)."""
    keys: dict[str, int] = {}
    for uid, username, display, interface in users:
        for key in (display, username, interface, interface.split("/", 1)[-1] if interface else None):
            if key:
                keys.setdefault(key, uid)
    return keys


class QualityStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def _keys(self, session: AsyncSession) -> dict[str, int]:
        rows = await session.execute(
            select(User.id, User.username, User.display_name, User.interface).where(User.role == CALLTAKER)
        )
        # Interfaces and usernames first (unique), display names last (they may repeat).
        ordered = sorted(rows, key=lambda r: r[0])
        exact = calltaker_keys((u, n, "", i) for u, n, _, i in ordered)
        for uid, _, display, _ in ordered:
            exact.setdefault(display, uid)
        return exact

    def _critical(self) -> Any:
        return (
            select(Incident.id)
            .where(Incident.call_id == Call.id, Incident.priority == "critical")
            .exists()
            .label("critical")
        )

    async def answered_calls(self, start: datetime, end: datetime) -> list[Candidate]:
        async def op(session: AsyncSession) -> list[Candidate]:
            keys = await self._keys(session)
            rows = await session.execute(
                select(Call.id, Call.arrived_at, Call.answered_by, self._critical())
                .where(Call.arrived_at >= start, Call.arrived_at < end, Call.answered_at.is_not(None))
                .order_by(Call.arrived_at, Call.id)
            )
            return [Candidate(i, at, by, keys.get(by or ""), bool(crit)) for i, at, by, crit in rows]

        return await self.store.transaction("quality_candidates", op)

    async def candidate(self, call_id: str) -> Candidate | None:
        async def op(session: AsyncSession) -> Candidate | None:
            row = (
                await session.execute(
                    select(Call.id, Call.arrived_at, Call.answered_by, self._critical()).where(
                        Call.id == call_id, Call.answered_at.is_not(None)
                    )
                )
            ).first()
            if row is None:
                return None
            keys = await self._keys(session)
            return Candidate(row[0], row[1], row[2], keys.get(row[2] or ""), bool(row[3]))

        return await self.store.transaction("quality_candidate", op)

    async def sampled_reasons(self, start: datetime, end: datetime) -> dict[str, str]:
        """Sampled calls that arrived in [start, end) → their reason."""

        async def op(session: AsyncSession) -> dict[str, str]:
            rows = await session.execute(
                select(QualitySample.call_id, QualitySample.reason)
                .join(Call, Call.id == QualitySample.call_id)
                .where(Call.arrived_at >= start, Call.arrived_at < end)
            )
            return {c: r for c, r in rows}

        return await self.store.transaction("quality_sampled", op)

    async def covered_months(self, months: Iterable[str], offset: timedelta) -> set[tuple[int, str]]:
        """(call-taker id, ``YYYY-MM``) pairs of ``months`` (local) with a sampled call already."""
        wanted = sorted(set(months))
        if not wanted:
            return set()
        first = datetime.strptime(wanted[0] + "-01", "%Y-%m-%d").replace(tzinfo=UTC) - offset
        last = datetime.strptime(wanted[-1] + "-01", "%Y-%m-%d").replace(tzinfo=UTC) - offset + timedelta(days=32)

        async def op(session: AsyncSession) -> set[tuple[int, str]]:
            rows = await session.execute(
                select(QualitySample.calltaker_id, Call.arrived_at)
                .join(Call, Call.id == QualitySample.call_id)
                .where(QualitySample.calltaker_id.is_not(None), Call.arrived_at >= first, Call.arrived_at < last)
            )
            out = set()
            for uid, at in rows:
                month = (at.astimezone(UTC) + offset).strftime("%Y-%m")
                if uid is not None and month in wanted:
                    out.add((uid, month))
            return out

        return await self.store.transaction("quality_months", op)

    async def add_samples(self, rows: Sequence[NewSample]) -> list[NewSample]:
        """Insert the samples whose call is not sampled yet (a concurrent draw may have won); returns those added."""
        if not rows:
            return []

        async def op(session: AsyncSession) -> list[NewSample]:
            taken = set(
                await session.scalars(
                    select(QualitySample.call_id).where(QualitySample.call_id.in_([r.call_id for r in rows]))
                )
            )
            fresh = [r for r in rows if r.call_id not in taken]
            for r in fresh:
                session.add(
                    QualitySample(
                        call_id=r.call_id,
                        week=r.week,
                        reason=r.reason,
                        calltaker=r.calltaker,
                        calltaker_id=r.calltaker_id,
                        drawn_by=r.drawn_by,
                        drawn_at=r.drawn_at,
                        due_at=r.due_at,
                    )
                )
            await session.flush()
            return fresh

        try:
            return await self.store.transaction("quality_draw", op)
        except IntegrityError:  # a concurrent draw took one of the same calls: the next draw tops up
            return []

    async def _samples(self, session: AsyncSession, *conds: Any, limit: int = 500) -> list[SampleRow]:
        taker = User.__table__.alias("taker")
        rows = await session.execute(
            select(QualitySample, Call.arrived_at, Call.caller_number, taker.c.display_name)
            .join(Call, Call.id == QualitySample.call_id)
            .outerjoin(taker, taker.c.id == QualitySample.calltaker_id)
            .where(*conds)
            .order_by(QualitySample.due_at, QualitySample.id)
            .limit(limit)
        )
        found = list(rows)
        reviews: dict[int, list[ReviewRow]] = {}
        if found:
            review_rows = await session.execute(
                select(QualityReview, User.display_name)
                .outerjoin(User, User.id == QualityReview.reviewer_id)
                .where(QualityReview.sample_id.in_([s.id for s, *_ in found]))
                .order_by(QualityReview.submitted_at, QualityReview.id)
            )
            for r, name in review_rows:
                reviews.setdefault(r.sample_id, []).append(
                    ReviewRow(
                        r.id,
                        r.reviewer_id,
                        name,
                        dict(r.levels),
                        dict(r.deviations),
                        r.score,
                        r.critical,
                        r.comment,
                        r.submitted_at,
                        r.acknowledged_at,
                    )
                )
        return [
            SampleRow(
                s.id,
                s.call_id,
                arrived,
                number,
                s.week,
                s.reason,
                s.calltaker,
                s.calltaker_id,
                name,
                s.drawn_at,
                s.due_at,
                tuple(reviews.get(s.id, ())),
            )
            for s, arrived, number, name in found
        ]

    async def samples(
        self, *, week: str | None = None, calltaker_id: int | None = None, limit: int = 500
    ) -> list[SampleRow]:
        conds = []
        if week is not None:
            conds.append(QualitySample.week == week)
        if calltaker_id is not None:
            conds.append(QualitySample.calltaker_id == calltaker_id)

        async def op(session: AsyncSession) -> list[SampleRow]:
            return await self._samples(session, *conds, limit=limit)

        return await self.store.transaction("quality_samples", op)

    async def sample_of_call(self, call_id: str) -> SampleRow | None:
        async def op(session: AsyncSession) -> list[SampleRow]:
            return await self._samples(session, QualitySample.call_id == call_id, limit=1)

        found = await self.store.transaction("quality_sample", op)
        return found[0] if found else None

    async def add_review(
        self,
        sample_id: int,
        call_id: str,
        reviewer_id: int,
        levels: dict[str, int | None],
        deviations: dict[str, str],
        score: float,
        critical: bool,
        comment: str,
    ) -> bool:
        """Store one reviewer's review and drop its draft; False when that reviewer already reviewed the call."""

        async def op(session: AsyncSession) -> None:
            session.add(
                QualityReview(
                    sample_id=sample_id,
                    reviewer_id=reviewer_id,
                    levels=dict(levels),
                    deviations=dict(deviations),
                    score=score,
                    critical=critical,
                    comment=comment,
                    submitted_at=utcnow(),
                )
            )
            await session.flush()
            key = review_draft_key(call_id)
            await session.execute(delete(Draft).where(Draft.user_id == reviewer_id, Draft.call_key == key))

        try:
            await self.store.transaction("quality_review", op)
        except IntegrityError:
            return False
        return True

    async def acknowledge(self, review_id: int, user_id: int) -> str:
        """``ok``, ``done`` (acknowledged before) or ``missing`` (not the primary review of this user's call)."""

        async def op(session: AsyncSession) -> str:
            review = await session.get(QualityReview, review_id)
            if review is None:
                return "missing"
            sample = await session.get(QualitySample, review.sample_id)
            first = await session.scalar(
                select(QualityReview.id)
                .where(QualityReview.sample_id == review.sample_id)
                .order_by(QualityReview.submitted_at, QualityReview.id)
                .limit(1)
            )
            if sample is None or sample.calltaker_id != user_id or first != review_id:
                return "missing"
            done = await session.execute(
                update(QualityReview)
                .where(QualityReview.id == review_id, QualityReview.acknowledged_at.is_(None))
                .values(acknowledged_at=utcnow())
            )
            return "ok" if done.rowcount else "done"  # type: ignore[attr-defined]

        return await self.store.transaction("quality_ack", op)

    async def scores(self, start: datetime, end: datetime, offset: timedelta) -> list[ScoreRow]:
        """Primary review scores of calls that arrived in [start, end), per call-taker and local ISO week."""

        async def op(session: AsyncSession) -> list[ScoreRow]:
            first = (
                select(QualityReview.sample_id, func.min(QualityReview.id).label("rid"))
                .group_by(QualityReview.sample_id)
                .subquery()
            )
            rows = await session.execute(
                select(
                    QualitySample.calltaker_id,
                    QualitySample.calltaker,
                    User.display_name,
                    Call.arrived_at,
                    QualityReview.score,
                    QualityReview.critical,
                )
                .join(first, first.c.sample_id == QualitySample.id)
                .join(QualityReview, and_(QualityReview.id == first.c.rid))
                .join(Call, Call.id == QualitySample.call_id)
                .outerjoin(User, User.id == QualitySample.calltaker_id)
                .where(Call.arrived_at >= start, Call.arrived_at < end)
            )
            groups: dict[tuple[int | None, str, str], list[tuple[float, bool]]] = {}
            for uid, raw, name, at, score, critical in rows:
                year, week, _ = (at.astimezone(UTC) + offset).date().isocalendar()
                key = (uid, name or raw or "?", f"{year}-W{week:02d}")
                groups.setdefault(key, []).append((score, critical))
            return [
                ScoreRow(uid, who, week, len(v), round(sum(s for s, _ in v) / len(v), 1), sum(1 for _, c in v if c))
                for (uid, who, week), v in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][2]))
            ]

        return await self.store.transaction("quality_scores", op)
