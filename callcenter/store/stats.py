"""Statistics by period and today's wallboard figures, read from the hourly roll-up (``store/rollup.py``).

How the figures are made and why they equal the raw computation: ``docs/statistics.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    and_,
    case,
    func,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.forms.categories import CLASSIFICATIONS
from callcenter.store.calllog import display_names
from callcenter.store.dispatches import ACTIVE
from callcenter.store.engine import Store
from callcenter.store.models import (
    Call,
    Dispatch,
    Incident,
    StatsRollup,
)
from callcenter.store.rollup import (
    ABANDONED,
    ANSWER_BUCKETS,
    ANSWERED,
    CALLS_KIND,
    SUMMED_KINDS,
    Rollup,
    fact_selects,
    hour_ceil,
    hour_floor,
    hour_start,
    sql_const,
)

#: The service-level thresholds reported: NFPA 1225 (10 s), NENA-STA-020.1 (15 s and 20 s).
WITHIN: tuple[int, ...] = (10, 15, 20)
#: Incident states that close it whatever its dispatches say.
CLOSED_INCIDENT: tuple[str, ...] = ("closed", "resolved", "cancelled")
CLASSIFICATION_ORDER: tuple[str, ...] = tuple(c.code for c in CLASSIFICATIONS)

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


@dataclass
class _Sums:
    """Roll-up or raw rows added up: per UTC hour ``[calls, answered, abandoned]``, and per (kind, key)
    ``[n, total]`` for everything summed over the whole period."""

    hours: dict[int, list[int]] = field(default_factory=dict)
    keyed: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def add_hour(self, hour: int, key: str, n: int) -> None:
        row = self.hours.setdefault(hour, [0, 0, 0])
        flags = key.split(",")
        row[0] += n
        row[1] += n if ANSWERED in flags else 0
        row[2] += n if ABANDONED in flags else 0

    def add(self, kind: str, key: str, n: int, total: int) -> None:
        row = self.keyed.setdefault((kind, key), [0, 0])
        row[0] += n
        row[1] += total

    def of(self, kind: str) -> list[tuple[str, int, int]]:
        return [(key, n, total) for (k, key), (n, total) in self.keyed.items() if k == kind and n]


class Stats:
    """Supervision queries over one store; ``offset`` is the centre's UTC offset."""

    def __init__(self, store: Store, *, offset: timedelta = timedelta(0)) -> None:
        if offset % timedelta(hours=1):
            raise ValueError("the local offset must be whole hours (hour-of-day is grouped on UTC hours)")
        self.store = store
        self.offset = offset
        self.dialect = store.engine.dialect.name
        self.rollup = Rollup(store)

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
            # The state lists are written into the SQL, not bound: with parameters, PostgreSQL switches
            # this prepared statement to a generic plan after five runs, and that plan took 0.4-1.1 s at
            # 1 M calls (bench/p6_stats.py) instead of 20 ms.
            open_dispatch = (
                select(Dispatch.incident_id, Dispatch.agency)
                .join(Incident, Incident.id == Dispatch.incident_id)
                .where(
                    Dispatch.status.in_([sql_const(s) for s in ACTIVE]),
                    Incident.status.not_in([sql_const(s) for s in CLOSED_INCIDENT]),
                )
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

    async def statistics(self, period: Period, *, raw: bool = False) -> dict[str, Any]:
        """Everything ``GET /api/stats`` shows, for ``period``: the roll-up refreshed, then read in one
        transaction. ``raw`` computes the same from the source rows alone (slow on a year: what the
        roll-up must equal, for tests and the benchmark)."""
        if not raw:
            await self.rollup.refresh()

        async def op(session: AsyncSession) -> dict[str, Any]:
            sums = _Sums()
            if raw:
                await self._add_raw(session, sums, period.start, period.end)
            else:
                await self._add_rolled_up(session, sums, period)
            names = await display_names(session, [key for key, _, _ in sums.of("rate_taker")])
            return self._body(sums, period, names)

        return await self.store.transaction("stats", op)

    async def _add_raw(self, session: AsyncSession, sums: _Sums, start: datetime, end: datetime) -> None:
        if start >= end:
            return
        for facts in fact_selects(self.dialect, start, end):
            for kind, hour, key, n, total in await session.execute(facts):
                if kind == CALLS_KIND:
                    sums.add_hour(int(hour), str(key), int(n))
                else:
                    sums.add(str(kind), str(key), int(n), _int(total))

    async def _add_rolled_up(self, session: AsyncSession, sums: _Sums, period: Period) -> None:
        """Whole hours from the roll-up (whole UTC days of them from the daily rows), the partial hours at
        either end of the period from the raw rows."""
        first, end = hour_ceil(period.start), hour_floor(period.end)
        if first >= end:
            await self._add_raw(session, sums, period.start, period.end)
            return
        await self._add_raw(session, sums, period.start, hour_start(first))
        await self._add_raw(session, sums, hour_start(end), period.end)
        rollup = StatsRollup
        for hour, key, n in await session.execute(
            select(rollup.hour, rollup.key, rollup.n).where(
                rollup.span == 1, rollup.kind == CALLS_KIND, rollup.hour >= first, rollup.hour < end
            )
        ):
            sums.add_hour(int(hour), str(key), int(n))
        day_first, day_end = -(-first // 24) * 24, end // 24 * 24
        if day_first < day_end:
            spans = [(24, day_first, day_end), (1, first, day_first), (1, day_end, end)]
        else:
            spans = [(1, first, end)]
        for span, lo, hi in spans:
            if lo >= hi:
                continue
            for kind, key, n, total in await session.execute(
                select(rollup.kind, rollup.key, func.sum(rollup.n), func.sum(rollup.total))
                .where(rollup.span == span, rollup.kind.in_(SUMMED_KINDS), rollup.hour >= lo, rollup.hour < hi)
                .group_by(rollup.kind, rollup.key)
            ):
                sums.add(str(kind), str(key), _int(n), _int(total))

    def _body(self, sums: _Sums, period: Period, names: dict[str, str]) -> dict[str, Any]:
        """The ``/api/stats`` document from the sums: shares, percentiles and averages only here."""
        by_hour = [0] * 24
        days: dict[date, list[int]] = {d: [0, 0, 0] for d in period.local_days()}
        total = answered_n = 0
        for hour, (count, answered, abandoned) in sums.hours.items():
            local = hour_start(hour) + self.offset
            by_hour[local.hour] += count
            day = days.setdefault(local.date(), [0, 0, 0])
            day[0] += count
            day[1] += answered
            day[2] += abandoned
            total += count
            answered_n += answered
        waits = {key: n for key, n, _ in sums.of("wait")}
        timed_n = sum(waits.values())
        buckets: list[dict[str, Any]] = []
        within: dict[str, float | None] = {}
        cumulative = 0
        for le in ANSWER_BUCKETS:
            n = waits.get(str(le), 0)
            cumulative += n
            buckets.append({"le_seconds": le, "count": n})
            if le in WITHIN:
                within[str(le)] = pct(cumulative, timed_n)
        buckets.append({"le_seconds": None, "count": timed_n - cumulative})
        classes = {key: n for key, n, _ in sums.of("class")}
        counts = {code: classes.get(code, 0) for code in CLASSIFICATION_ORDER}
        counts["unclassified"] = total - sum(counts.values())

        categories = sorted(((key, n) for key, n, _ in sums.of("category")), key=lambda r: (-r[1], r[0]))
        category_total = sum(n for _, n in categories)
        agencies = sorted(sums.of("agency"), key=lambda r: (-r[1], r[0]))
        agency_total = sum(n for _, n, _ in agencies)
        histogram = sorted((int(key), n) for key, n, _ in sums.of("ack"))

        takers = [
            {"calltaker": key, "display_name": names.get(key), "count": n, "average": round(score / n, 2)}
            for key, n, score in sorted(sums.of("rate_taker"), key=lambda r: (-r[1], r[0]))
        ]
        rated = [
            {"agency": key, "count": n, "average": round(score / n, 2)}
            for key, n, score in sorted(sums.of("rate_agency"), key=lambda r: (-r[1], r[0]))
        ]
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
            "by_category": [{"code": c, "count": n, "share": pct(n, category_total)} for c, n in categories],
            "by_agency": [
                {"code": a, "count": n, "share": pct(n, agency_total), "accepted": acc} for a, n, acc in agencies
            ],
            "dispatch_ack": {
                "count": sum(n for _, n in histogram),
                "p50": _nearest_rank(histogram, 50),
                "p90": _nearest_rank(histogram, 90),
            },
            "ratings": {"by_calltaker": takers, "by_agency": rated},
            "period": {
                "from": period.start.isoformat(),
                "to": period.end.isoformat(),
                "utc_offset_minutes": int(self.offset.total_seconds() // 60),
            },
        }
