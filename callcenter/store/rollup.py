"""The statistics roll-up: per UTC hour, everything the statistics add up, kept current by triggers.

Why and how (the hour key, the triggers, refresh on read, equality with the raw computation):
``docs/statistics.md``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
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
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store.engine import Store
from callcenter.store.models import (
    Call,
    Dispatch,
    Incident,
    Rating,
    StatsDirty,
    StatsRollup,
)

#: Upper edges (seconds, inclusive) of the answer-time histogram; a last open bucket follows.
ANSWER_BUCKETS: tuple[int, ...] = (5, 10, 15, 20, 30, 60, 120)

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


def hour_floor(at: datetime) -> int:
    """The hour key (hours since 1970 UTC) of the hour ``at`` falls in."""
    return (at - EPOCH) // HOUR


def hour_ceil(at: datetime) -> int:
    """The hour key of the first hour boundary at or after ``at``."""
    return -((EPOCH - at) // HOUR)


def hour_start(hour: int) -> datetime:
    return EPOCH + hour * HOUR


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


def sql_const(value: str) -> ColumnElement[str]:
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
        return [sql_const(kind).label("stat_kind"), hour_key(dialect, stamp).label("stat_hour"), key.label("stat_key")]

    calls_in = and_(Call.arrived_at >= start, Call.arrived_at < end)
    answered = Call.answered_at.is_not(None)
    abandoned = Call.status == ABANDONED
    timed = and_(answered, Call.wait_seconds.is_not(None))
    calls = case(
        (and_(answered, abandoned), sql_const(f"{ANSWERED},{ABANDONED}")),
        (answered, sql_const(ANSWERED)),
        (abandoned, sql_const(ABANDONED)),
        else_=sql_const("other"),
    )
    bucket = case(
        *[(Call.wait_seconds <= literal_column(str(le)), sql_const(str(le))) for le in ANSWER_BUCKETS],
        else_=sql_const(OVER),
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
            sql_const("rate_agency").label("stat_kind"),
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
            return int(await session.scalar(select(func.count()).select_from(StatsDirty)) or 0)

        return await self.store.transaction("stats_pending", op)
