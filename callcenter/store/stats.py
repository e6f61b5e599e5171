"""Supervision queries: the wallboard's figures for today, the call log, one call's record, statistics.

A regional government asks for yearly figures over about a million calls, so everything here is
aggregated inside the database and only small results cross to Python:

* Per-call figures (by hour, by day, answer-time buckets, classification shares) come from ONE pass
  over ``calls`` grouped by the UTC hour of arrival. The hour key is a plain prefix of the stored
  timestamp on SQLite (``substr``: SQLAlchemy stores ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC) and
  ``date_trunc`` on PostgreSQL, so both backends group on something cheap; the at most 24-per-day rows are
  then shifted to the centre's local time in Python. That shift is exact because the offset is a
  whole number of hours — Indonesia's zones (WIB +7, WITA +8, WIT +9) have no daylight saving.
* Answer-time buckets are ``SUM(CASE …)`` columns of that same pass; the within-10/15/20 s shares are
  its cumulative sums (the bucket edges include 10, 15 and 20), so NENA/NFPA figures agree with the
  histogram by construction.
* Percentiles of "call arrival → first dispatch acceptance" are computed from a histogram of whole
  seconds grouped in SQL (SQLite has no ``percentile_cont``); nearest-rank over that histogram is
  exact to the second, which is the resolution a report gives anyway.

Every table is counted by the time of the thing it counts: calls by arrival, incidents by creation,
dispatches by creation; ratings and dispatch acknowledgement belong to their incident's period.
All ranges are half-open ``[start, end)`` in UTC.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Integer, Select, and_, case, cast, func, literal_column, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.forms.categories import CLASSIFICATIONS
from callcenter.store.calls import Store
from callcenter.store.models import (
    Call,
    CallEvent,
    Dispatch,
    Incident,
    IncidentAudit,
    Rating,
    User,
)

__all__ = [
    "ACTIVE_DISPATCH",
    "ANSWER_BUCKETS",
    "CALL_STATUSES",
    "WITHIN",
    "CallFilter",
    "CallPage",
    "Period",
    "Stats",
    "pct",
]

#: Upper edges (seconds, inclusive) of the answer-time histogram; a last open bucket follows.
ANSWER_BUCKETS: tuple[int, ...] = (5, 10, 15, 20, 30, 60, 120)
#: The service-level thresholds reported: NFPA 1225 (10 s), NENA-STA-020.1 (15 s and 20 s).
WITHIN: tuple[int, ...] = (10, 15, 20)
#: Dispatch states in which an agency is still working on (or being called about) an incident.
ACTIVE_DISPATCH: tuple[str, ...] = ("calling", "accepted", "dispatched", "en_route", "on_scene")
#: Incident states that close it whatever its dispatches say.
CLOSED_INCIDENT: tuple[str, ...] = ("closed", "resolved", "cancelled")
#: Every ``calls.status`` the tracker writes (``queue/tracker.py``, ``store/lifecycle.py``).
CALL_STATUSES: tuple[str, ...] = (
    "arrived",
    "queued",
    "ringing",
    "answered",
    "overflow",
    "completed",
    "abandoned",
    "ended",
)
CLASSIFICATION_ORDER: tuple[str, ...] = tuple(c.code for c in CLASSIFICATIONS)
WOMEN_AND_CHILDREN = "violence_women_children"

if any(b not in ANSWER_BUCKETS for b in WITHIN):  # pragma: no cover - a guard on the constants above
    raise AssertionError("every WITHIN threshold must be a bucket edge")


def pct(part: int, whole: int) -> float | None:
    """Share in percent with one decimal, as regional reports print it ("19.3%"); None for no data."""
    return round(100.0 * part / whole, 1) if whole else None


@dataclass(frozen=True)
class Period:
    """A half-open UTC range ``[start, end)`` and the centre's UTC offset for days and hours."""

    start: datetime
    end: datetime
    offset: timedelta = timedelta(0)

    def local_days(self) -> list[date]:
        first = (self.start + self.offset).date()
        last = (self.end - timedelta(microseconds=1) + self.offset).date()
        return [first + timedelta(days=i) for i in range((last - first).days + 1)] if last >= first else []


@dataclass(frozen=True)
class CallFilter:
    """Call-log filters; every one given must hold (None: not filtered)."""

    start: datetime | None = None
    end: datetime | None = None
    #: E.164, matched exactly (the index on ``caller_number`` serves it).
    number: str | None = None
    #: The names a call-taker may appear under in ``answered_by`` (member name, interface, username).
    answered_by: tuple[str, ...] | None = None
    category: str | None = None
    #: A classification code, or ``"unclassified"`` for calls nobody classified.
    classification: str | None = None
    agency: str | None = None
    status: str | None = None


@dataclass(frozen=True)
class CallPage:
    calls: list[dict[str, Any]]
    total: int


@dataclass(frozen=True)
class CallDetail:
    call: Call
    events: list[CallEvent]
    incident: Incident | None
    #: Username of each audit entry's author (None once deleted), oldest first.
    audit: list[tuple[IncidentAudit, str | None]]
    rating: Rating | None
    calltaker: str | None
    incidents: list[dict[str, Any]] = field(default_factory=list)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _int(value: Any) -> int:
    return int(value or 0)


def _nearest_rank(histogram: Sequence[tuple[int, int]], p: float) -> int | None:
    """The ``p``-th percentile (nearest-rank) of a sorted ``(value, count)`` histogram."""
    total = sum(n for _, n in histogram)
    if not total:
        return None
    rank = max(1, math.ceil(p / 100.0 * total))
    seen = 0
    for value, n in histogram:
        seen += n
        if seen >= rank:
            return value
    return histogram[-1][0]  # pragma: no cover - unreachable: seen reaches total


class Stats:
    """Read-only supervision queries over one store; ``offset`` is the centre's UTC offset."""

    def __init__(self, store: Store, *, offset: timedelta = timedelta(0)) -> None:
        if offset % timedelta(hours=1):
            raise ValueError("the local offset must be whole hours (hour-of-day is grouped on UTC hours)")
        self.store = store
        self.offset = offset
        self.dialect = store.engine.dialect.name

    # -- dialect helpers -----------------------------------------------------------------------------

    def _utc_hour(self, column: Any) -> ColumnElement[Any]:
        """The UTC hour a timestamp falls in, as something cheap to group on (see module docstring)."""
        if self.dialect == "sqlite":
            return func.substr(column, 1, 13)
        return func.date_trunc("hour", func.timezone("UTC", column))

    def _hour_value(self, key: Any) -> datetime:
        if isinstance(key, str):
            return datetime.strptime(key, "%Y-%m-%d %H").replace(tzinfo=UTC)
        if isinstance(key, datetime):
            return key.replace(tzinfo=UTC) if key.tzinfo is None else key.astimezone(UTC)
        raise TypeError(f"unexpected hour key {key!r}")

    def _seconds_between(self, later: Any, earlier: Any) -> ColumnElement[Any]:
        if self.dialect == "sqlite":
            return (func.julianday(later) - func.julianday(earlier)) * 86400.0
        return func.extract("epoch", later - earlier)

    def _whole_seconds(self, seconds: ColumnElement[Any]) -> ColumnElement[Any]:
        """Seconds floored to a whole number. SQLite's julianday() is a double of days, precise to about
        50 µs, so 12.000 s may come back as 11.99996: a millisecond of tolerance keeps it at 12."""
        if self.dialect == "sqlite":
            return cast(seconds + 0.001, Integer)
        return func.floor(seconds)

    def local_midnight(self, now: datetime) -> datetime:
        """Start of the centre's current day, in UTC."""
        local = (now.astimezone(UTC) + self.offset).replace(hour=0, minute=0, second=0, microsecond=0)
        return local - self.offset

    # -- wallboard ---------------------------------------------------------------------------------------

    async def today(self, now: datetime) -> dict[str, Any]:
        """Today's (local day) figures for the wallboard; one indexed range scan plus three small counts."""
        start = self.local_midnight(now)
        answered = Call.answered_at.is_not(None)
        timed = and_(answered, Call.wait_seconds.is_not(None))

        async def op(session: AsyncSession) -> dict[str, Any]:
            row = (
                await session.execute(
                    select(
                        func.count(),
                        func.sum(case((timed, 1), else_=0)),
                        func.sum(case((Call.status == "abandoned", 1), else_=0)),
                        *[func.sum(case((and_(timed, Call.wait_seconds <= s), 1), else_=0)) for s in WITHIN],
                    ).where(Call.arrived_at >= start)
                )
            ).one()
            open_dispatch = (
                select(Dispatch.incident_id, Dispatch.agency)
                .join(Incident, Incident.id == Dispatch.incident_id)
                .where(Dispatch.status.in_(ACTIVE_DISPATCH), Incident.status.not_in(CLOSED_INCIDENT))
                .subquery()
            )
            by_agency = await session.execute(
                select(open_dispatch.c.agency, func.count()).group_by(open_dispatch.c.agency)
            )
            open_ids = select(open_dispatch.c.incident_id).distinct().scalar_subquery()
            by_category = await session.execute(
                select(Incident.category, func.count()).where(Incident.id.in_(open_ids)).group_by(Incident.category)
            )
            breaches = await session.scalar(
                select(func.count()).select_from(Incident).where(Incident.sla_breached_at >= start)
            )
            total, timed_n, abandoned = _int(row[0]), _int(row[1]), _int(row[2])
            return {
                "calls_today": total,
                "answered_today": timed_n,
                "answered_within": {str(s): pct(_int(n), timed_n) for s, n in zip(WITHIN, row[3:], strict=True)},
                "abandoned_today": abandoned,
                "open_incidents": {
                    "by_category": {str(c): int(n) for c, n in by_category},
                    "by_agency": {str(a): int(n) for a, n in by_agency},
                },
                "sla_breaches_today": _int(breaches),
            }

        return await self.store.transaction("stats_today", op)

    # -- statistics ----------------------------------------------------------------------------------------

    async def statistics(self, period: Period) -> dict[str, Any]:
        """Everything ``GET /api/stats`` shows, for ``period`` (one transaction, six aggregate queries)."""

        async def op(session: AsyncSession) -> dict[str, Any]:
            body = await self._calls_pass(session, period)
            body["by_category"] = await self._by_category(session, period)
            body["by_agency"] = await self._by_agency(session, period)
            body["dispatch_ack"] = await self._dispatch_ack(session, period)
            body["ratings"] = await self._ratings(session, period)
            body["period"] = {
                "from": period.start.isoformat(),
                "to": period.end.isoformat(),
                "utc_offset_minutes": int(self.offset.total_seconds() // 60),
            }
            return body

        return await self.store.transaction("stats", op)

    async def _calls_pass(self, session: AsyncSession, period: Period) -> dict[str, Any]:
        """By hour, by day, answer-time buckets and classification shares: one grouped pass over calls."""
        hour = self._utc_hour(Call.arrived_at).label("hour")
        answered = Call.answered_at.is_not(None)
        timed = and_(answered, Call.wait_seconds.is_not(None))
        columns: list[Any] = [
            hour,
            func.count(),
            func.sum(case((answered, 1), else_=0)),
            func.sum(case((Call.status == "abandoned", 1), else_=0)),
            func.sum(case((timed, 1), else_=0)),
            *[func.sum(case((and_(timed, Call.wait_seconds <= le), 1), else_=0)) for le in ANSWER_BUCKETS],
            *[func.sum(case((Call.classification == code, 1), else_=0)) for code in CLASSIFICATION_ORDER],
        ]
        rows = await session.execute(
            select(*columns)
            .where(Call.arrived_at >= period.start, Call.arrived_at < period.end)
            .group_by(literal_column("hour"))
        )
        by_hour = [0] * 24
        days: dict[date, list[int]] = {d: [0, 0, 0] for d in period.local_days()}
        n_b, n_c = len(ANSWER_BUCKETS), len(CLASSIFICATION_ORDER)
        cumulative = [0] * n_b
        classes = [0] * n_c
        total = answered_n = timed_n = 0
        for row in rows:
            local = self._hour_value(row[0]) + self.offset
            count, ans, abandoned, tim = _int(row[1]), _int(row[2]), _int(row[3]), _int(row[4])
            by_hour[local.hour] += count
            day = days.setdefault(local.date(), [0, 0, 0])
            day[0] += count
            day[1] += ans
            day[2] += abandoned
            total += count
            answered_n += ans
            timed_n += tim
            for i in range(n_b):
                cumulative[i] += _int(row[5 + i])
            for i in range(n_c):
                classes[i] += _int(row[5 + n_b + i])
        buckets: list[dict[str, Any]] = []
        previous = 0
        for le, cum in zip(ANSWER_BUCKETS, cumulative, strict=True):
            buckets.append({"le_seconds": le, "count": cum - previous})
            previous = cum
        buckets.append({"le_seconds": None, "count": timed_n - previous})
        within = {str(s): pct(cumulative[ANSWER_BUCKETS.index(s)], timed_n) for s in WITHIN}
        counts = dict(zip(CLASSIFICATION_ORDER, classes, strict=True))
        counts["unclassified"] = total - sum(classes)
        return {
            "calls": total,
            "answered": answered_n,
            "abandoned": sum(d[2] for d in days.values()),
            "by_hour": by_hour,
            "by_day": [
                {"day": d.isoformat(), "count": v[0], "answered": v[1], "abandoned": v[2]}
                for d, v in sorted(days.items())
            ],
            "classification_share": {code: pct(n, total) for code, n in counts.items()},
            "classification_counts": counts,
            "answer_time": {"answered": timed_n, "buckets": buckets, "within": within},
        }

    async def _by_category(self, session: AsyncSession, period: Period) -> list[dict[str, Any]]:
        rows = (
            await session.execute(
                select(Incident.category, func.count())
                .where(Incident.created_at >= period.start, Incident.created_at < period.end)
                .group_by(Incident.category)
            )
        ).all()
        total = sum(int(n) for _, n in rows)
        ordered = sorted(((str(c), int(n)) for c, n in rows), key=lambda r: (-r[1], r[0]))
        return [{"code": c, "count": n, "share": pct(n, total)} for c, n in ordered]

    async def _by_agency(self, session: AsyncSession, period: Period) -> list[dict[str, Any]]:
        rows = (
            await session.execute(
                select(Dispatch.agency, func.count(), func.sum(case((Dispatch.accepted_at.is_not(None), 1), else_=0)))
                .where(Dispatch.created_at >= period.start, Dispatch.created_at < period.end)
                .group_by(Dispatch.agency)
            )
        ).all()
        total = sum(int(n) for _, n, _ in rows)
        ordered = sorted(((str(a), int(n), _int(acc)) for a, n, acc in rows), key=lambda r: (-r[1], r[0]))
        return [{"code": a, "count": n, "share": pct(n, total), "accepted": acc} for a, n, acc in ordered]

    async def _dispatch_ack(self, session: AsyncSession, period: Period) -> dict[str, Any]:
        """Call arrival → first accepted dispatch, per incident created in the period (p50/p90, seconds)."""
        first = (
            select(Dispatch.incident_id.label("incident_id"), func.min(Dispatch.accepted_at).label("first_at"))
            .join(Incident, Incident.id == Dispatch.incident_id)
            .where(
                Dispatch.accepted_at.is_not(None),
                Incident.created_at >= period.start,
                Incident.created_at < period.end,
            )
            .group_by(Dispatch.incident_id)
            .subquery()
        )
        seconds = self._whole_seconds(self._seconds_between(first.c.first_at, Call.arrived_at))
        key = seconds.label("s")
        rows = (
            await session.execute(
                select(key, func.count())
                .select_from(first)
                .join(Incident, Incident.id == first.c.incident_id)
                .join(Call, Call.id == Incident.call_id)
                .group_by(literal_column("s"))
            )
        ).all()
        histogram = sorted((int(s), int(n)) for s, n in rows if s is not None)
        return {
            "count": sum(n for _, n in histogram),
            "p50": _nearest_rank(histogram, 50),
            "p90": _nearest_rank(histogram, 90),
        }

    async def _ratings(self, session: AsyncSession, period: Period) -> dict[str, Any]:
        rated = and_(
            Rating.score.is_not(None),
            Incident.created_at >= period.start,
            Incident.created_at < period.end,
        )
        by_taker = (
            await session.execute(
                select(Call.answered_by, func.count(), func.avg(Rating.score))
                .select_from(Rating)
                .join(Incident, Incident.id == Rating.incident_id)
                .join(Call, Call.id == Incident.call_id)
                .where(rated, Call.answered_by.is_not(None))
                .group_by(Call.answered_by)
            )
        ).all()
        names = await self._display_names(session, [str(a) for a, _, _ in by_taker])
        # One row per (rating, agency that accepted a dispatch of its incident): an agency dispatched
        # twice to one incident still gets that incident's rating once.
        pairs = (
            select(Rating.id.label("rid"), Rating.score.label("score"), Dispatch.agency.label("agency"))
            .join(Incident, Incident.id == Rating.incident_id)
            .join(Dispatch, Dispatch.incident_id == Incident.id)
            .where(rated, Dispatch.accepted_at.is_not(None))
            .distinct()
            .subquery()
        )
        by_agency = (
            await session.execute(
                select(pairs.c.agency, func.count(), func.avg(pairs.c.score)).group_by(pairs.c.agency)
            )
        ).all()

        def avg(value: Any) -> float | None:
            return round(float(value), 2) if value is not None else None

        takers = [
            {"calltaker": str(a), "display_name": names.get(str(a)), "count": int(n), "average": avg(m)}
            for a, n, m in by_taker
        ]
        agencies = [{"agency": str(a), "count": int(n), "average": avg(m)} for a, n, m in by_agency]
        takers.sort(key=lambda r: (-int(r["count"] or 0), str(r["calltaker"])))
        agencies.sort(key=lambda r: (-int(r["count"] or 0), str(r["agency"])))
        return {"by_calltaker": takers, "by_agency": agencies}

    async def _display_names(self, session: AsyncSession, members: Sequence[str]) -> dict[str, str]:
        """``answered_by`` value → the user's display name; the tracker stores the member name, which
        is the interface (``PJSIP/taker1``) unless the queue names members, then often the username."""
        wanted = sorted(set(members))
        if not wanted:
            return {}
        names: dict[str, str] = {}
        rows = await session.execute(
            select(User.interface, User.username, User.display_name).where(
                or_(User.interface.in_(wanted), User.username.in_(wanted))
            )
        )
        for interface, username, display in rows:
            for key in (interface, username):
                if key in wanted:
                    names[key] = display
        return names

    async def member_names(self, members: Sequence[str]) -> dict[str, str]:
        """Display names of queue members (by interface or member name) for the wallboard."""

        async def op(session: AsyncSession) -> dict[str, str]:
            return await self._display_names(session, members)

        return await self.store.transaction("stats_members", op)

    # -- call log --------------------------------------------------------------------------------------------

    async def calltaker_names(self, ident: str) -> tuple[str, ...]:
        """The ``answered_by`` values a call-taker given by user id or username may appear under; the
        raw value itself when no user matches (a member named in ``queues.conf`` but not a user)."""

        async def op(session: AsyncSession) -> tuple[str, ...]:
            query = select(User.interface, User.username)
            query = query.where(User.id == int(ident)) if ident.isdigit() else query.where(User.username == ident)
            row = (await session.execute(query)).first()
            if row is None:
                return (ident,)
            return tuple(v for v in (row[0], row[1]) if v)

        return await self.store.transaction("stats_calltaker", op)

    def _conditions(self, f: CallFilter) -> list[ColumnElement[bool]]:
        conds: list[ColumnElement[bool]] = []
        if f.start is not None:
            conds.append(Call.arrived_at >= f.start)
        if f.end is not None:
            conds.append(Call.arrived_at < f.end)
        if f.number is not None:
            conds.append(Call.caller_number == f.number)
        if f.answered_by is not None:
            conds.append(Call.answered_by.in_(f.answered_by))
        if f.classification == "unclassified":
            conds.append(Call.classification.is_(None))
        elif f.classification is not None:
            conds.append(Call.classification == f.classification)
        if f.status is not None:
            conds.append(Call.status == f.status)
        # IN (subquery) rather than EXISTS: both planners turn it into a lookup from the (small) set of
        # matching incidents to calls by primary key, instead of probing incidents once per call.
        if f.category is not None:
            conds.append(
                Call.id.in_(
                    select(Incident.call_id).where(Incident.category == f.category, Incident.call_id.is_not(None))
                )
            )
        if f.agency is not None:
            conds.append(
                Call.id.in_(
                    select(Incident.call_id)
                    .join(Dispatch, Dispatch.incident_id == Incident.id)
                    .where(Dispatch.agency == f.agency, Incident.call_id.is_not(None))
                )
            )
        return conds

    def _page_query(self, f: CallFilter) -> Select[Call]:
        return select(Call).where(*self._conditions(f)).order_by(Call.arrived_at.desc(), Call.id.desc())

    async def call_log(self, f: CallFilter, *, limit: int = 50, offset: int = 0) -> CallPage:
        """One page of calls matching ``f``, newest first, and how many match in all."""

        async def op(session: AsyncSession) -> CallPage:
            total = _int(await session.scalar(select(func.count()).select_from(Call).where(*self._conditions(f))))
            calls = list(await session.scalars(self._page_query(f).limit(limit).offset(offset)))
            return CallPage(await self._rows(session, calls), total)

        return await self.store.transaction("call_log", op)

    async def iter_calls(self, f: CallFilter, *, batch: int = 2000) -> AsyncIterator[list[dict[str, Any]]]:
        """Every call matching ``f``, newest first, in batches (for the CSV export): keyset pagination
        on (arrived_at, id), so the millionth row costs what the first did and no transaction stays open."""
        last: tuple[datetime, str] | None = None
        while True:

            async def op(session: AsyncSession, last: tuple[datetime, str] | None = last) -> list[dict[str, Any]]:
                query = self._page_query(f)
                if last is not None:
                    at, call_id = last
                    query = query.where(or_(Call.arrived_at < at, and_(Call.arrived_at == at, Call.id < call_id)))
                return await self._rows(session, list(await session.scalars(query.limit(batch))))

            rows = await self.store.transaction("call_log_export", op)
            if not rows:
                return
            yield rows
            if len(rows) < batch:
                return
            tail = rows[-1]
            last = (datetime.fromisoformat(tail["arrived_at"]), tail["id"])

    async def _rows(self, session: AsyncSession, calls: list[Call]) -> list[dict[str, Any]]:
        """``CallRow``s for a page: the page's incidents and call-taker names with one query each."""
        ids = [c.id for c in calls]
        incidents: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        if ids:
            for inc_id, reference, category, call_id in await session.execute(
                select(Incident.id, Incident.reference, Incident.category, Incident.call_id)
                .where(Incident.call_id.in_(ids))
                .order_by(Incident.id)
            ):
                incidents[str(call_id)].append({"id": inc_id, "reference": reference, "category": category})
        names = await self._display_names(session, [c.answered_by for c in calls if c.answered_by])
        return [call_row(c, names.get(c.answered_by or ""), incidents[c.id]) for c in calls]

    # -- one call --------------------------------------------------------------------------------------------

    async def call_detail(self, call_id: str) -> CallDetail | None:
        """The call, its timeline, its (latest) incident with audit trail and latest rating; dispatches
        are read by the caller through ``Dispatches`` (they carry attempts and updates)."""

        async def op(session: AsyncSession) -> CallDetail | None:
            call = await session.get(Call, call_id)
            if call is None:
                return None
            events = list(
                await session.scalars(
                    select(CallEvent).where(CallEvent.call_id == call_id).order_by(CallEvent.at, CallEvent.id)
                )
            )
            all_incidents = list(
                await session.scalars(select(Incident).where(Incident.call_id == call_id).order_by(Incident.id))
            )
            incident = all_incidents[-1] if all_incidents else None
            audit: list[tuple[IncidentAudit, str | None]] = []
            rating = None
            if incident is not None:
                audit = [
                    (a, u)
                    for a, u in await session.execute(
                        select(IncidentAudit, User.username)
                        .outerjoin(User, User.id == IncidentAudit.user_id)
                        .where(IncidentAudit.incident_id == incident.id)
                        .order_by(IncidentAudit.at, IncidentAudit.id)
                    )
                ]
                rating = await session.scalar(
                    select(Rating).where(Rating.incident_id == incident.id).order_by(Rating.id.desc()).limit(1)
                )
            names = await self._display_names(session, [call.answered_by] if call.answered_by else [])
            summaries = [{"id": i.id, "reference": i.reference, "category": i.category} for i in all_incidents]
            return CallDetail(call, events, incident, audit, rating, names.get(call.answered_by or ""), summaries)

        return await self.store.transaction("call_detail", op)


def call_row(call: Call, calltaker: str | None, incidents: list[dict[str, Any]]) -> dict[str, Any]:
    """The contract's ``CallRow``: what the call log shows and the CSV export writes."""
    return {
        "id": call.id,
        "uniqueid": call.uniqueid,
        "arrived_at": _iso(call.arrived_at),
        "answered_at": _iso(call.answered_at),
        "ended_at": _iso(call.ended_at),
        "caller_number": call.caller_number,
        "caller_raw": call.caller_raw,
        "status": call.status,
        "wait_seconds": call.wait_seconds,
        "talk_seconds": call.talk_seconds,
        "answered_by": call.answered_by,
        "calltaker": calltaker,
        "hangup_by": call.hangup_by,
        "classification": call.classification,
        "incidents": incidents,
        "has_recording": bool(call.recording),
    }
