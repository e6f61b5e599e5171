"""Supervision queries: the wallboard's figures for today, the call log, one call's record, statistics.

A regional government asks for yearly figures over about a million calls. Grouping a year of raw rows
per request took seconds (``bench/p6_stats.py``), so statistics are read from a roll-up:

* ``stats_rollup`` (migration 0007) holds, per UTC hour, everything ``statistics()`` adds up: calls,
  answered and abandoned (kept per hour for the by-hour and by-day figures), answer-time buckets,
  classifications, incident categories, dispatches per agency, the histogram of seconds from call
  arrival to the first accepted dispatch, and rating counts and score sums per call-taker and agency.
  The same rows summed per UTC day make a year a few hundred thousand small rows instead of millions.
* The hour key is whole hours since 1970 (``hour_key``). Local hours and days are UTC hours shifted
  by the centre's offset, which is exact because the offset is a whole number of hours - Indonesia's
  zones (WIB +7, WITA +8, WIT +9) have no daylight saving.
* Triggers on the source tables mark every hour a write touches in ``stats_dirty``, whoever writes;
  ``Rollup.refresh()`` recomputes those hours from the raw rows with the very queries that compute
  a raw answer (``fact_selects``), before every ``statistics()`` read. Whole hours of a period come
  from the roll-up, the ragged edges of a period not on an hour boundary from the raw rows, so the
  result equals the raw computation (``statistics(..., raw=True)``; the tests compare them).
* Everything that is summed is a count or a sum, so hours, days and edges add up exactly: shares,
  the within-10/15/20 s figures (cumulative bucket counts; the edges include 10, 15 and 20), rating
  averages (score sum / count) and percentiles are computed only at the end.
* Percentiles of "call arrival → first dispatch acceptance" are nearest-rank over a histogram of
  whole seconds (SQLite has no ``percentile_cont``): exact to the second, the resolution a report
  gives anyway.

Every table is counted by the time of the thing it counts: calls by arrival, incidents by creation,
dispatches by creation; ratings and dispatch acknowledgement belong to their incident's period.
All ranges are half-open ``[start, end)`` in UTC. The wallboard (one day) and the call log read the
raw rows: their indexes make them fast enough (migrations 0005 and 0007).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    and_,
    case,
    cast,
    delete,
    extract,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.forms.categories import CLASSIFICATIONS
from callcenter.store.calls import Store
from callcenter.store.dispatches import ACTIVE
from callcenter.store.models import (
    Call,
    CallEvent,
    Dispatch,
    Incident,
    IncidentAudit,
    Rating,
    StatsDirty,
    StatsRollup,
    User,
)

__all__ = [
    "ANSWER_BUCKETS",
    "CALL_STATUSES",
    "WITHIN",
    "CallFilter",
    "CallPage",
    "Period",
    "Rollup",
    "Stats",
    "fact_selects",
    "hour_key",
    "pct",
]

#: Upper edges (seconds, inclusive) of the answer-time histogram; a last open bucket follows.
ANSWER_BUCKETS: tuple[int, ...] = (5, 10, 15, 20, 30, 60, 120)
#: The service-level thresholds reported: NFPA 1225 (10 s), NENA-STA-020.1 (15 s and 20 s).
WITHIN: tuple[int, ...] = (10, 15, 20)
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

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
#: What the roll-up rows count (``StatsRollup.kind``). ``calls`` is read per hour (by hour, by day);
#: the others are summed over a period, so they are also kept per day.
CALLS_KIND = "calls"
SUMMED_KINDS: tuple[str, ...] = ("wait", "class", "category", "agency", "ack", "rate_taker", "rate_agency")
KINDS: tuple[str, ...] = (CALLS_KIND, *SUMMED_KINDS)
#: ``calls`` rows are keyed by what the call counts as (a call may be both, whatever the tracker does).
ANSWERED, ABANDONED = "answered", "abandoned"
#: The label of the answer-time bucket above the last edge.
OVER = "inf"
#: Changing this, or ``ANSWER_BUCKETS``, changes what the roll-up holds: the first refresh after the
#: change finds another definition recorded and rebuilds everything.
ROLLUP_VERSION = 1
ROLLUP_DEFINITION = f"v{ROLLUP_VERSION} wait<=" + ",".join(str(b) for b in ANSWER_BUCKETS)


def pct(part: int, whole: int) -> float | None:
    """Share in percent with one decimal, as regional reports print it ("19.3%"); None for no data."""
    return round(100.0 * part / whole, 1) if whole else None


def hour_floor(at: datetime) -> int:
    """The hour key (hours since 1970 UTC) of the hour ``at`` falls in."""
    return (at - EPOCH) // HOUR


def hour_ceil(at: datetime) -> int:
    """The hour key of the first hour boundary at or after ``at``."""
    return -((EPOCH - at) // HOUR)


def hour_start(hour: int) -> datetime:
    return EPOCH + hour * HOUR


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


# -- SQL shared by the roll-up and the raw computation -----------------------------------------------------


def hour_key(dialect: str, column: Any) -> ColumnElement[int]:
    """Whole hours since 1970 UTC of a timestamp column, in SQL. Migration 0007's triggers compute the
    same with the same expressions. SQLite stores UTC as ``YYYY-MM-DD HH:MM:SS.ffffff``: the hour is
    its first 13 characters, as the range filters (text comparisons) see it - ``strftime('%s')`` of the
    whole value would round 10:59:59.9999 up to 11:00. No bound parameters: PostgreSQL must see the
    same expression in ``GROUP BY`` as in the select list."""
    if dialect == "sqlite":
        hour = func.substr(column, literal_column("1"), literal_column("13")).concat(literal_column("':00:00'"))
        return cast(func.strftime(literal_column("'%s'"), hour), Integer) // literal_column("3600", Integer)
    return cast(func.floor(extract("epoch", column) / literal_column("3600")), Integer)


def _seconds_between(dialect: str, later: Any, earlier: Any) -> ColumnElement[Any]:
    if dialect == "sqlite":
        return (func.julianday(later) - func.julianday(earlier)) * literal_column("86400.0")
    return extract("epoch", later - earlier)


def _whole_seconds(dialect: str, seconds: ColumnElement[Any]) -> ColumnElement[int]:
    """Seconds floored to a whole number. SQLite's julianday() is a double of days, precise to about
    50 µs, so 12.000 s may come back as 11.99996: a millisecond of tolerance keeps it at 12."""
    if dialect == "sqlite":
        return cast(seconds + literal_column("0.001"), Integer)
    return cast(func.floor(seconds), Integer)


def _const(value: str) -> ColumnElement[str]:
    """A string constant rendered inline (a bound parameter would differ between select list and
    ``GROUP BY`` on PostgreSQL); only ever given the module's own names."""
    return literal_column(f"'{value}'", String)


def fact_selects(dialect: str, start: datetime, end: datetime) -> list[Select[Any]]:
    """SELECTs of everything statistics add up, per UTC hour, from the raw rows in ``[start, end)``.

    Each yields ``(kind, hour, key, n, total)`` rows, the columns of ``stats_rollup``: refreshing an
    hour inserts exactly what they return for that hour, and a raw answer (or the edge of a period
    not on an hour boundary) adds up what they return for its range, so both agree by construction.
    """
    group: tuple[ColumnElement[Any], ...] = (literal_column("stat_hour"), literal_column("stat_key"))

    def head(kind: str, stamp: Any, key: Any) -> list[Any]:
        return [_const(kind).label("stat_kind"), hour_key(dialect, stamp).label("stat_hour"), key.label("stat_key")]

    calls_in = and_(Call.arrived_at >= start, Call.arrived_at < end)
    answered = Call.answered_at.is_not(None)
    abandoned = Call.status == ABANDONED
    timed = and_(answered, Call.wait_seconds.is_not(None))
    calls = case(
        (and_(answered, abandoned), _const(f"{ANSWERED},{ABANDONED}")),
        (answered, _const(ANSWERED)),
        (abandoned, _const(ABANDONED)),
        else_=_const("other"),
    )
    bucket = case(
        *[(Call.wait_seconds <= literal_column(str(le)), _const(str(le))) for le in ANSWER_BUCKETS],
        else_=_const(OVER),
    )
    zero = literal_column("0", Integer).label("stat_total")
    count = func.count().label("stat_n")
    incidents_in = and_(Incident.created_at >= start, Incident.created_at < end)

    first = (
        select(Dispatch.incident_id.label("incident_id"), func.min(Dispatch.accepted_at).label("first_at"))
        .join(Incident, Incident.id == Dispatch.incident_id)
        .where(Dispatch.accepted_at.is_not(None), incidents_in)
        .group_by(Dispatch.incident_id)
        .subquery()
    )
    ack = cast(_whole_seconds(dialect, _seconds_between(dialect, first.c.first_at, Call.arrived_at)), String(16))
    rated = and_(Rating.score.is_not(None), incidents_in)
    # One row per (rating, agency that accepted a dispatch of its incident): an agency dispatched
    # twice to one incident still gets that incident's rating once.
    pairs = (
        select(
            Rating.id.label("rid"),
            Rating.score.label("score"),
            Dispatch.agency.label("agency"),
            hour_key(dialect, Incident.created_at).label("h"),
        )
        .join(Incident, Incident.id == Rating.incident_id)
        .join(Dispatch, Dispatch.incident_id == Incident.id)
        .where(rated, Dispatch.accepted_at.is_not(None))
        .distinct()
        .subquery()
    )
    return [
        select(*head(CALLS_KIND, Call.arrived_at, calls), count, zero).where(calls_in).group_by(*group),
        select(*head("wait", Call.arrived_at, bucket), count, zero).where(calls_in, timed).group_by(*group),
        select(*head("class", Call.arrived_at, Call.classification), count, zero)
        .where(calls_in, Call.classification.is_not(None))
        .group_by(*group),
        select(*head("category", Incident.created_at, Incident.category), count, zero)
        .where(incidents_in)
        .group_by(*group),
        select(
            *head("agency", Dispatch.created_at, Dispatch.agency),
            count,
            func.count(Dispatch.accepted_at).label("stat_total"),
        )
        .where(Dispatch.created_at >= start, Dispatch.created_at < end)
        .group_by(*group),
        select(*head("ack", Incident.created_at, ack), count, zero)
        .select_from(first)
        .join(Incident, Incident.id == first.c.incident_id)
        .join(Call, Call.id == Incident.call_id)
        .group_by(*group),
        select(
            *head("rate_taker", Incident.created_at, Call.answered_by),
            count,
            func.sum(Rating.score).label("stat_total"),
        )
        .select_from(Rating)
        .join(Incident, Incident.id == Rating.incident_id)
        .join(Call, Call.id == Incident.call_id)
        .where(rated, Call.answered_by.is_not(None))
        .group_by(*group),
        select(
            _const("rate_agency").label("stat_kind"),
            pairs.c.h.label("stat_hour"),
            pairs.c.agency.label("stat_key"),
            count,
            func.sum(pairs.c.score).label("stat_total"),
        ).group_by(*group),
    ]


# -- the roll-up -------------------------------------------------------------------------------------------


class Rollup:
    """Keeps ``stats_rollup`` equal to what ``fact_selects`` gives for every hour (see module docstring).

    Concurrency. Writers only insert their own marks (SQLite: one writer at a time; PostgreSQL: keyed by
    transaction), so they never wait for a refresh. A refresh deletes the marks it can see - committed
    ones - and then recomputes their hours with statements that see at least those commits; a change
    still in flight keeps its mark for the next refresh, so none is lost under READ COMMITTED.
    Refreshes take a transaction-level advisory lock on PostgreSQL, so two of them (two requests, the
    background task, the CLI) never write the same hours with snapshots in the wrong order. SQLite has one
    writer at a time; a refresh starts with its DELETE because the driver opens the transaction only at
    the first write, and the reads that recompute the hours must belong to it.

    Each step is its own short transaction of at most ``chunk_hours`` dirty hours: a rebuild of years
    never holds SQLite's single write lock (and with it the tracker and the AGI routes) for long.
    """

    #: Identifies the refresh lock among PostgreSQL advisory locks ("112 STAT").
    LOCK_KEY = 0x112_57A7

    def __init__(self, store: Store, *, chunk_hours: int = 24 * 7) -> None:
        self.store = store
        self.dialect = store.engine.dialect.name
        self.chunk_hours = chunk_hours

    async def refresh(self) -> int:
        """Bring every hour marked dirty up to date (rebuilding all when the roll-up's definition differs
        or it was never built); returns how many hours were recomputed."""

        async def state(session: AsyncSession) -> tuple[str | None, int | None, int | None]:
            recorded = await session.scalar(select(StatsRollup.key).where(StatsRollup.span == 0))
            lo, hi = (await session.execute(select(func.min(StatsDirty.hour), func.max(StatsDirty.hour)))).one()
            return recorded, lo, hi

        recorded, lo, hi = await self.store.transaction("stats_state", state)
        if recorded != ROLLUP_DEFINITION:
            await self.store.transaction("stats_invalidate", lambda session: self._invalidate(session, force=False))
            recorded, lo, hi = await self.store.transaction("stats_state", state)
        if lo is None or hi is None:
            return 0
        done = 0
        # Marks committed after this point may arrive while we work: they wait for the next refresh,
        # so that a busy centre cannot keep one refresh running for ever.
        for _ in range((hi - lo) // self.chunk_hours + 2):
            hours = await self.store.transaction("stats_refresh", self._refresh_chunk)
            if hours is None:
                break
            done += hours
        return done

    async def rebuild(self) -> int:
        """Recompute the whole roll-up from the raw rows (``callcenter stats rebuild``)."""
        await self.store.transaction("stats_invalidate", lambda session: self._invalidate(session, force=True))
        return await self.refresh()

    async def _lock(self, session: AsyncSession) -> None:
        if self.dialect == "postgresql":
            await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": self.LOCK_KEY})

    async def _invalidate(self, session: AsyncSession, *, force: bool) -> None:
        """Forget the roll-up and mark every hour from the first to the last source row dirty; the
        refresh then recomputes them in chunks. The definition is recorded in the same transaction.
        Unless ``force``d, nothing is done when another refresh has just done it."""
        await self._lock(session)
        if not force:
            recorded = await session.scalar(select(StatsRollup.key).where(StatsRollup.span == 0))
            if recorded == ROLLUP_DEFINITION:
                return
        await session.execute(delete(StatsRollup))
        await session.execute(delete(StatsDirty))
        bounds = []
        for column in (Call.arrived_at, Incident.created_at, Dispatch.created_at):
            lo, hi = (await session.execute(select(func.min(column), func.max(column)))).one()
            if lo is not None and hi is not None:
                bounds += [hour_floor(lo), hour_floor(hi)]
        if bounds:
            hours = range(min(bounds), max(bounds) + 1)
            await session.execute(insert(StatsDirty), [{"hour": h, "tx": 0} for h in hours])
        await session.execute(
            insert(StatsRollup).values(span=0, kind="meta", hour=0, key=ROLLUP_DEFINITION, n=0, total=0)
        )

    async def _refresh_chunk(self, session: AsyncSession) -> int | None:
        """Take the dirty marks of the lowest ``chunk_hours`` hours and recompute those hours; None when
        nothing was dirty."""
        await self._lock(session)
        window = StatsDirty.hour < select(func.min(StatsDirty.hour)).scalar_subquery() + self.chunk_hours
        if self.dialect == "sqlite":
            taken = delete(StatsDirty).where(window).returning(StatsDirty.hour)
            hours = sorted(set((await session.scalars(taken)).all()))
        else:
            cte = delete(StatsDirty).where(window).returning(StatsDirty.hour).cte("taken")
            hours = sorted(set((await session.scalars(select(cte.c.hour).distinct())).all()))
        if not hours:
            return None
        await self._recompute(session, hours[0], hours[-1] + 1)
        return len(hours)

    async def _recompute(self, session: AsyncSession, first: int, end: int) -> None:
        """Replace the roll-up of hours ``[first, end)`` (and of the days they fall in) by what the raw
        rows say. Hours in between that were not dirty are recomputed too: same result, fewer queries."""
        rollup = StatsRollup
        await session.execute(
            delete(rollup).where(rollup.span == 1, rollup.kind.in_(KINDS), rollup.hour >= first, rollup.hour < end)
        )
        columns = ["span", "kind", "hour", "key", "n", "total"]
        for facts in fact_selects(self.dialect, hour_start(first), hour_start(end)):
            sub = facts.subquery()
            await session.execute(insert(rollup).from_select(columns, select(literal_column("1", Integer), *sub.c)))
        day_first, day_end = first // 24 * 24, -(-end // 24) * 24
        await session.execute(
            delete(rollup).where(
                rollup.span == 24, rollup.kind.in_(SUMMED_KINDS), rollup.hour >= day_first, rollup.hour < day_end
            )
        )
        day = (rollup.hour // literal_column("24", Integer) * literal_column("24", Integer)).label("day_hour")
        daily = (
            select(
                literal_column("24", Integer), rollup.kind, day, rollup.key, func.sum(rollup.n), func.sum(rollup.total)
            )
            .where(rollup.span == 1, rollup.kind.in_(SUMMED_KINDS), rollup.hour >= day_first, rollup.hour < day_end)
            .group_by(rollup.kind, literal_column("day_hour"), rollup.key)
        )
        await session.execute(insert(rollup).from_select(columns, daily))

    async def pending(self) -> int:
        """How many dirty marks wait for a refresh."""

        async def op(session: AsyncSession) -> int:
            return _int(await session.scalar(select(func.count()).select_from(StatsDirty)))

        return await self.store.transaction("stats_pending", op)


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
                    Dispatch.status.in_([_const(s) for s in ACTIVE]),
                    Incident.status.not_in([_const(s) for s in CLOSED_INCIDENT]),
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
            names = await self._display_names(session, [key for key, _, _ in sums.of("rate_taker")])
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
