"""The statistics roll-up (migration 0007, ``store/stats.py``) against the raw rows, on SQLite and PostgreSQL.

After every kind of write a writer can make - the ORM's inserts and updates, multi-row Core statements,
deletes with their foreign-key actions, another connection without the app (sqlite3 without foreign
keys, a PostgreSQL COPY, TRUNCATE), a writer whose transaction is still open while the refresh runs -
``statistics()`` read from the roll-up must equal the raw computation (``raw=True``) and an independent
recomputation in plain Python from the rows themselves, for periods on and off hour and day boundaries.
"""

from __future__ import annotations

import asyncio
import math
import random
import sqlite3
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, inspect, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.cli import main as cli_main
from callcenter.forms.categories import CLASSIFICATIONS
from callcenter.store import Calls, Store
from callcenter.store.migrate import downgrade_connection
from callcenter.store.models import Call, Dispatch, Incident, Rating, StatsDirty, StatsRollup
from callcenter.store.rollup import ANSWER_BUCKETS, hour_floor
from callcenter.store.stats import WITHIN, Period, Stats, pct
from callcenter.testing.rows import dispatch_row, incident_row, rating_row

OFFSET = timedelta(hours=8)
#: Local midnight of 2026-03-02 (UTC+8) = 2026-03-01 16:00 UTC.
DAY0 = datetime(2026, 3, 1, 16, 0, tzinfo=UTC)
CATEGORIES = ("medical", "fire", "disaster", "crime", "other")
AGENCIES = ("dinkes", "damkar", "pdam", "polres", "bpbd")
TAKERS = ("PJSIP/taker1", "PJSIP/taker2", "PJSIP/taker3")
CLASSES = (*(c.code for c in CLASSIFICATIONS), None, "legacy_code")
TRIGGER_TABLES = ("calls", "incidents", "dispatches", "ratings")


def periods() -> list[Period]:
    """On and off hour and day boundaries, inside one hour, across two partial hours, and all data."""
    at = DAY0
    return [
        Period(at, at + timedelta(days=3), OFFSET),  # three local days
        Period(at + timedelta(days=1), at + timedelta(days=2), OFFSET),  # one local day
        Period(at + timedelta(hours=5, minutes=17, seconds=33.5), at + timedelta(days=2, hours=3, minutes=42), OFFSET),
        Period(at + timedelta(hours=30, minutes=10), at + timedelta(hours=30, minutes=50), OFFSET),  # inside an hour
        Period(at + timedelta(hours=30, minutes=40), at + timedelta(hours=31, minutes=20), OFFSET),  # no whole hour
        Period(at + timedelta(hours=2), at + timedelta(hours=21), OFFSET),  # whole hours, no whole UTC day
        Period(at - timedelta(days=10), at + timedelta(days=20), OFFSET),  # everything
    ]


# -- the data ----------------------------------------------------------------------------------------------


def make_calls(rng: random.Random, n: int, start: datetime, hours: int, prefix: str) -> list[Call]:
    calls = []
    for i in range(n):
        arrived = start + timedelta(seconds=rng.randrange(hours * 3600))
        if i % 17 == 0:  # exactly on an hour boundary, or the last microsecond before one
            arrived = arrived.replace(minute=0, second=0) - (timedelta(microseconds=1) if i % 2 else timedelta(0))
        answered = rng.random() < 0.85
        wait = rng.choice((3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 29.9, 61.0, 130.0, rng.uniform(0, 40)))
        calls.append(
            Call(
                id=f"{prefix}{i:05d}",
                uniqueid=f"{prefix}-{i}",
                routed_by="agi",
                status="completed" if answered else rng.choice(("abandoned", "abandoned", "overflow")),
                arrived_at=arrived,
                answered_at=arrived + timedelta(seconds=wait) if answered else None,
                wait_seconds=wait if rng.random() < 0.95 else None,
                answered_by=rng.choice(TAKERS) if answered else None,
                classification=rng.choice(CLASSES),
            )
        )
    return calls


async def seed(store: Store, seed_value: int = 112) -> None:
    rng = random.Random(seed_value)
    calls = make_calls(rng, 260, DAY0 - timedelta(hours=6), 24 * 4, "c")

    async def op(session: AsyncSession) -> None:
        session.add_all(calls)
        await session.flush()
        for n, call in enumerate(calls[::2]):
            created = call.arrived_at + timedelta(seconds=rng.randrange(20, 4000))
            inc = incident_row(f"112-T-{n:05d}", created, call_id=call.id, category=rng.choice(CATEGORIES))
            session.add(inc)
            await session.flush()
            for agency in rng.sample(AGENCIES, rng.choice((0, 1, 1, 2, 3))):
                accepted = created + timedelta(seconds=rng.randrange(5, 900)) if rng.random() < 0.8 else None
                session.add(dispatch_row(inc.id, agency, created + timedelta(seconds=1), accepted_at=accepted))
            if rng.random() < 0.5:
                session.add(rating_row(inc.id, created, rng.choice((1, 2, 3, 4, 5, None))))

    await store.transaction("seed", op)


# -- an independent recomputation ----------------------------------------------------------------------------


async def oracle(store: Store, period: Period) -> dict[str, Any]:
    """What ``/api/stats`` must say, computed in Python from every row (no user names in these tests)."""

    async def load(session: AsyncSession) -> tuple[list[Call], list[Incident], list[Dispatch], list[Rating]]:
        return (
            list(await session.scalars(select(Call))),
            list(await session.scalars(select(Incident))),
            list(await session.scalars(select(Dispatch))),
            list(await session.scalars(select(Rating))),
        )

    calls, incidents, dispatches, ratings = await store.transaction("oracle", load)

    def within(at: datetime) -> bool:
        return period.start <= at < period.end

    by_id = {c.id: c for c in calls}
    by_hour = [0] * 24
    days: dict[date, list[int]] = {d: [0, 0, 0] for d in period.local_days()}
    buckets: Counter[int | None] = Counter()
    classes: Counter[str] = Counter()
    total = answered = timed = 0
    for call in calls:
        if not within(call.arrived_at):
            continue
        local = call.arrived_at + OFFSET
        total += 1
        by_hour[local.hour] += 1
        day = days.setdefault(local.date(), [0, 0, 0])
        day[0] += 1
        if call.answered_at is not None:
            answered += 1
            day[1] += 1
            if call.wait_seconds is not None:
                timed += 1
                buckets[next((le for le in ANSWER_BUCKETS if call.wait_seconds <= le), None)] += 1
        if call.status == "abandoned":
            day[2] += 1
        if call.classification is not None:
            classes[call.classification] += 1
    counts = {c.code: classes[c.code] for c in CLASSIFICATIONS}
    counts["unclassified"] = total - sum(counts.values())
    cumulative = {s: sum(n for le, n in buckets.items() if le is not None and le <= s) for s in WITHIN}

    period_incidents = {i.id: i for i in incidents if within(i.created_at)}
    category = Counter(i.category for i in period_incidents.values())
    cat_total = sum(category.values())
    agency: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for d in dispatches:
        if within(d.created_at):
            agency[d.agency][0] += 1
            agency[d.agency][1] += d.accepted_at is not None
    agency_total = sum(n for n, _ in agency.values())
    first: dict[int, datetime] = {}
    for d in dispatches:
        if d.incident_id in period_incidents and d.accepted_at is not None:
            first[d.incident_id] = min(first.get(d.incident_id, d.accepted_at), d.accepted_at)
    ack = sorted(
        math.floor((at - by_id[call_id].arrived_at).total_seconds())
        for iid, at in first.items()
        if (call_id := period_incidents[iid].call_id or "") in by_id
    )

    def rank(p: int) -> int | None:
        return ack[max(1, math.ceil(p / 100 * len(ack))) - 1] if ack else None

    takers: dict[str, list[int]] = defaultdict(list)
    per_agency: dict[str, list[int]] = defaultdict(list)
    for r in ratings:
        inc = period_incidents.get(r.incident_id)
        if r.score is None or inc is None:
            continue
        rated_call = by_id.get(inc.call_id or "")
        if rated_call is not None and rated_call.answered_by is not None:
            takers[rated_call.answered_by].append(r.score)
        for a in {d.agency for d in dispatches if d.incident_id == inc.id and d.accepted_at is not None}:
            per_agency[a].append(r.score)
    return {
        "calls": total,
        "answered": answered,
        "abandoned": sum(d[2] for d in days.values()),
        "by_hour": by_hour,
        "by_day": [
            {"day": d.isoformat(), "count": v[0], "answered": v[1], "abandoned": v[2]} for d, v in sorted(days.items())
        ],
        "classification_share": {code: pct(n, total) for code, n in counts.items()},
        "classification_counts": counts,
        "answer_time": {
            "answered": timed,
            "buckets": [{"le_seconds": le, "count": buckets[le]} for le in (*ANSWER_BUCKETS, None)],
            "within": {str(s): pct(cumulative[s], timed) for s in WITHIN},
        },
        "by_category": [
            {"code": c, "count": n, "share": pct(n, cat_total)}
            for c, n in sorted(category.items(), key=lambda r: (-r[1], r[0]))
        ],
        "by_agency": [
            {"code": a, "count": n, "share": pct(n, agency_total), "accepted": acc}
            for a, (n, acc) in sorted(agency.items(), key=lambda r: (-r[1][0], r[0]))
        ],
        "dispatch_ack": {"count": len(ack), "p50": rank(50), "p90": rank(90)},
        "ratings": {
            "by_calltaker": [
                {"calltaker": t, "display_name": None, "count": len(s), "average": round(sum(s) / len(s), 2)}
                for t, s in sorted(takers.items(), key=lambda r: (-len(r[1]), r[0]))
            ],
            "by_agency": [
                {"agency": a, "count": len(s), "average": round(sum(s) / len(s), 2)}
                for a, s in sorted(per_agency.items(), key=lambda r: (-len(r[1]), r[0]))
            ],
        },
        "period": {
            "from": period.start.isoformat(),
            "to": period.end.isoformat(),
            "utc_offset_minutes": int(OFFSET.total_seconds() // 60),
        },
    }


async def check(stats: Stats, what: str) -> None:
    """Roll-up == raw == oracle for every test period, and nothing left dirty after the reads."""
    for period in periods():
        rolled = await stats.statistics(period)
        assert rolled == await stats.statistics(period, raw=True), f"{what}: roll-up != raw for {period}"
        assert rolled == await oracle(stats.store, period), f"{what}: roll-up != oracle for {period}"
    assert await stats.rollup.pending() == 0, what


async def dirty_hours(store: Store) -> set[int]:
    async def op(session: AsyncSession) -> set[int]:
        return set(await session.scalars(select(StatsDirty.hour)))

    return await store.transaction("dirty", op)


@pytest.fixture
async def stats(store: Store) -> AsyncIterator[Stats]:
    await seed(store)
    stats = Stats(store, offset=OFFSET)
    # Small chunks: the refresh's chunked path runs in every test, not only on years of data.
    stats.rollup.chunk_hours = 7
    yield stats


async def call_of(store: Store, call_id: str) -> Call:
    calls = Calls(store)
    call = await calls.get_call(call_id)
    assert call is not None
    return call


async def an_incident(store: Store, *, rated: bool = False, dispatched: bool = False) -> Incident:
    async def op(session: AsyncSession) -> Incident:
        query = select(Incident).order_by(Incident.id)
        if rated:
            query = query.where(Incident.id.in_(select(Rating.incident_id).where(Rating.score.is_not(None))))
        if dispatched:
            query = query.where(Incident.id.in_(select(Dispatch.incident_id).where(Dispatch.accepted_at.is_not(None))))
        found = (await session.scalars(query.limit(1))).first()
        assert found is not None
        return found

    return await store.transaction("pick", op)


# -- tests ---------------------------------------------------------------------------------------------------


async def test_rollup_follows_orm_writes(stats: Stats) -> None:
    store = stats.store
    await check(stats, "seeded")
    assert await stats.rollup.refresh() == 0  # nothing dirty: nothing recomputed

    # The tracker's life of a call: arrives, is queued, answered, ends; one hour dirty, one recomputed.
    now = DAY0 + timedelta(days=1, hours=3, minutes=20)

    async def arrive(session: AsyncSession) -> None:
        session.add(Call(id="new1", uniqueid="new-1", routed_by="agi", status="arrived", arrived_at=now))

    await store.transaction("arrive", arrive)
    assert await dirty_hours(store) == {hour_floor(now)}
    assert await stats.rollup.refresh() == 1

    async def answer(session: AsyncSession) -> None:
        call = await session.get(Call, "new1")
        assert call is not None
        call.status, call.answered_at, call.wait_seconds = "answered", now + timedelta(seconds=9), 9.0
        call.answered_by = "PJSIP/taker2"

    await store.transaction("answer", answer)
    await check(stats, "answered")

    async def unrelated(session: AsyncSession) -> None:
        call = await session.get(Call, "new1")
        assert call is not None
        call.ended_at, call.talk_seconds, call.recording = now + timedelta(minutes=3), 171.0, "/rec/new1.wav"

    await store.transaction("hangup", unrelated)
    assert await dirty_hours(store) == set(), "columns the statistics do not read mark nothing"

    async def classify(session: AsyncSession) -> None:
        for call_id, klass in (("c00003", "prank"), ("c00004", None), ("c00005", "legacy_code")):
            call = await session.get(Call, call_id)
            assert call is not None
            call.classification = klass
        call = await session.get(Call, "c00006")
        assert call is not None
        call.status = "abandoned"

    await store.transaction("classify", classify)
    await check(stats, "classified")

    # A call moved to another day, and a call-taker renamed: the ack times and ratings of its incident
    # (counted in the incident's hour, not the call's) change too.
    rated = await an_incident(store, rated=True, dispatched=True)
    assert rated.call_id is not None

    async def move(session: AsyncSession) -> None:
        call = await session.get(Call, rated.call_id)
        assert call is not None
        call.arrived_at -= timedelta(days=1, minutes=7)
        call.answered_by = "PJSIP/taker9"

    await store.transaction("move", move)
    await check(stats, "call moved")

    async def incidents(session: AsyncSession) -> None:
        first, second, third = list(await session.scalars(select(Incident).order_by(Incident.id).limit(3)))
        first.category = "crime"
        second.created_at += timedelta(days=1, hours=2)
        third.call_id = "new1"

    await store.transaction("incidents", incidents)
    await check(stats, "incidents changed")

    dispatched = await an_incident(store, dispatched=True)

    async def dispatches(session: AsyncSession) -> None:
        rows = list(await session.scalars(select(Dispatch).order_by(Dispatch.id).limit(4)))
        rows[0].accepted_at = None
        rows[0].status = "failed"
        rows[1].agency = "bnn"
        rows[2].created_at += timedelta(hours=5)
        await session.delete(rows[3])
        session.add(
            dispatch_row(
                dispatched.id,
                "damkar",
                dispatched.created_at,
                status="accepted",
                accepted_at=dispatched.created_at + timedelta(seconds=1),
            )
        )

    await store.transaction("dispatches", dispatches)
    await check(stats, "dispatches changed")

    async def ratings(session: AsyncSession) -> None:
        rows = list(await session.scalars(select(Rating).order_by(Rating.id).limit(3)))
        rows[0].score = 1 if rows[0].score != 1 else 5
        rows[1].score = None
        await session.delete(rows[2])
        session.add(rating_row(dispatched.id, dispatched.created_at, 4))

    await store.transaction("ratings", ratings)
    await check(stats, "ratings changed")


async def test_rollup_follows_deletes_and_bulk_statements(stats: Stats) -> None:
    store = stats.store
    await check(stats, "seeded")
    victim = await an_incident(store, rated=True, dispatched=True)
    assert victim.call_id is not None

    async def bulk(session: AsyncSession) -> None:
        # A deleted call leaves its incident (call_id set NULL by the foreign key): its ack and rating
        # figures go, its category stays.
        await session.execute(delete(Call).where(Call.id == victim.call_id))
        await session.execute(
            update(Call).where(Call.arrived_at < DAY0 + timedelta(hours=20)).values(classification="hoax")
        )
        await session.execute(
            update(Call).where(Call.status == "overflow").values(status="abandoned", answered_at=None)
        )

    await store.transaction("bulk", bulk)
    await check(stats, "bulk updates and a deleted call")

    async def cascade(session: AsyncSession) -> None:
        # An incident deleted with its dispatches and ratings (ON DELETE CASCADE), and a whole day of
        # calls the way a retention script might.
        gone = await an_incident(store, rated=True, dispatched=True)
        await session.execute(delete(Incident).where(Incident.id == gone.id))
        await session.execute(
            delete(Call).where(Call.arrived_at >= DAY0 + timedelta(days=2), Call.arrived_at < DAY0 + timedelta(days=3))
        )

    await store.transaction("cascade", cascade)
    await check(stats, "cascading deletes")


async def test_rebuild_and_definition_change(stats: Stats) -> None:
    store = stats.store
    await check(stats, "seeded")

    async def rows(session: AsyncSession) -> list[tuple[Any, ...]]:
        result = await session.execute(select(StatsRollup).order_by(*StatsRollup.__table__.primary_key))
        return [(r.span, r.kind, r.hour, r.key, r.n, r.total) for r in result.scalars()]

    before = await store.transaction("rows", rows)
    assert await stats.rollup.rebuild() > 0
    assert await store.transaction("rows", rows) == before, "incremental refreshes and a rebuild agree"

    async def forget(session: AsyncSession) -> None:
        await session.execute(update(StatsRollup).where(StatsRollup.span == 0).values(key="v0 an older definition"))
        await session.execute(delete(StatsRollup).where(StatsRollup.span == 1, StatsRollup.kind == "calls"))

    await store.transaction("forget", forget)
    await check(stats, "definition changed")
    assert await store.transaction("rows", rows) == before


async def test_migration_up_down_keeps_writes_made_meanwhile(db_url: str) -> None:
    store = Store.from_url(db_url, retry_for=5.0)
    try:
        await store.upgrade()
        await seed(store)
        stats = Stats(store, offset=OFFSET)
        await check(stats, "at head")
        assert await triggers(store) == {
            f"stats_{t}_{op}" for t in TRIGGER_TABLES for op in ("insert", "update", "delete")
        }

        async with store.engine.begin() as conn:
            await conn.run_sync(downgrade_connection, "0006")
        async with store.engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        assert not tables & {"stats_rollup", "stats_dirty"}
        assert await triggers(store) == set()

        async def write(session: AsyncSession) -> None:  # no triggers, no roll-up: plain writes still work
            session.add_all(make_calls(random.Random(7), 40, DAY0, 48, "d"))
            call = await session.get(Call, "c00010")
            assert call is not None
            call.classification = "silent"

        await store.transaction("write at 0006", write)
        await store.upgrade()
        await check(stats, "upgraded again: the first refresh rebuilds, including writes made meanwhile")
    finally:
        await store.close()


async def triggers(store: Store) -> set[str]:
    sql = (
        "SELECT name FROM sqlite_master WHERE type = 'trigger'"
        if store.engine.dialect.name == "sqlite"
        else "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
    )
    async with store.engine.connect() as conn:
        names = set((await conn.execute(text(sql))).scalars())
    return {n for n in names if n.startswith("stats_") and not n.endswith("_truncate")}


async def test_sqlite_writer_without_the_app(stats: Stats, backend: str, db_url: str) -> None:
    """A script on the same file with plain sqlite3 and foreign keys off (SQLite's default): a deleted
    call leaves incidents pointing at nothing, which the raw joins drop - and so must the roll-up."""
    if backend != "sqlite":
        pytest.skip("sqlite3 writer")
    await check(stats, "seeded")
    victim = await an_incident(stats.store, rated=True, dispatched=True)
    con = sqlite3.connect(db_url.split(":///", 1)[1])
    try:
        con.execute("DELETE FROM calls WHERE id = ?", (victim.call_id,))
        con.execute("UPDATE calls SET wait_seconds = 11.0 WHERE wait_seconds < 5")
        con.execute(
            "INSERT INTO calls (id, uniqueid, routed_by, status, arrived_at, answered_at, wait_seconds, classification)"
            " VALUES ('s1', 's-1', 'agi', 'completed', '2026-03-02 03:00:00.000000', '2026-03-02 03:00:12.000000',"
            " 12.0, 'genuine')"
        )
        con.commit()
    finally:
        con.close()
    await check(stats, "sqlite3 writer")


@pytest.mark.postgres
async def test_postgres_copy_truncate_and_a_writer_in_flight(stats: Stats, backend: str, db_url: str) -> None:
    if backend != "postgresql":
        pytest.skip("PostgreSQL writers")
    import asyncpg  # type: ignore[import-untyped]

    store = stats.store
    await check(stats, "seeded")
    con = await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        # COPY fires the statement triggers with transition tables.
        rows = [
            (f"p{i}", f"p-{i}", "agi", "abandoned", DAY0 + timedelta(hours=i, minutes=i), "prank") for i in range(30)
        ]
        await con.copy_records_to_table(
            "calls", records=rows, columns=["id", "uniqueid", "routed_by", "status", "arrived_at", "classification"]
        )
        await check(stats, "COPY")

        # TRUNCATE fires no row triggers: it drops the roll-up's definition row, so the next refresh rebuilds.
        await con.execute("TRUNCATE ratings")
        await check(stats, "TRUNCATE")

        # The race: an hour is already dirty (committed), and a writer changes that same hour but has not
        # committed when the refresh runs. The refresh takes the committed mark and recomputes the hour
        # without the uncommitted change; the writer's own mark survives for the next refresh.
        hour_start = DAY0 + timedelta(hours=9)
        in_hour = await store.transaction(
            "in hour",
            lambda s: s.scalars(
                select(Call.id)
                .where(Call.arrived_at >= hour_start, Call.arrived_at < hour_start + timedelta(hours=1))
                .order_by(Call.id)
                .limit(2)
            ),
        )
        first, second = list(in_hour)
        await con.execute("UPDATE calls SET classification = 'race1' WHERE id = $1", first)  # a committed mark
        hour = hour_floor(hour_start)
        assert hour in await dirty_hours(store)
        writer = await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            tx = writer.transaction()
            await tx.start()
            await writer.execute(
                "UPDATE calls SET classification = 'race2', status = 'abandoned' WHERE id = $1", second
            )
            # The refresh does not wait for the writer: it takes only the committed marks.
            assert await asyncio.wait_for(stats.rollup.refresh(), 10) >= 1
            assert await dirty_hours(store) == set()
            await tx.commit()
        finally:
            await writer.close()
        assert hour in await dirty_hours(store), "the writer's mark outlived the refresh"
        await check(stats, "writer committed after the refresh")
    finally:
        await con.close()


async def test_no_lost_update_between_concurrent_refreshes(stats: Stats, db_url: str) -> None:
    """Two refreshes (two requests, or the background task and a request) while writes go on: the
    roll-up still ends equal to the raw rows."""
    store = stats.store
    await check(stats, "seeded")
    other_engine_store = Store.from_url(db_url, retry_for=5.0)
    other = Stats(other_engine_store, offset=OFFSET)
    try:
        for round_ in range(5):

            async def write(session: AsyncSession, round_: int = round_) -> None:
                for call in make_calls(random.Random(round_), 5, DAY0 + timedelta(hours=round_), 3, f"r{round_}-"):
                    session.add(call)
                await session.execute(
                    update(Call)
                    .where(Call.arrived_at >= DAY0 + timedelta(hours=round_ * 7), Call.classification == "genuine")
                    .values(classification="prank")
                )

            await asyncio.gather(stats.rollup.refresh(), other.rollup.refresh(), store.transaction("write", write))
        await check(stats, "concurrent refreshes")
    finally:
        await other_engine_store.close()


async def test_rollup_is_compact(stats: Stats) -> None:
    """Days of whole hours are read from the day rows: one row per kind and key and day, not per hour."""
    store = stats.store
    await stats.statistics(periods()[0])

    async def count(session: AsyncSession) -> dict[int, int]:
        rows = await session.execute(select(StatsRollup.span, func.count()).group_by(StatsRollup.span))
        return {int(span): int(n) for span, n in rows}

    spans = await store.transaction("count", count)
    assert spans[0] == 1 and spans[24] < spans[1]


async def test_cli_rebuild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    store = Store.from_url(url, retry_for=2)
    await store.upgrade()
    await seed(store)
    await store.close()
    monkeypatch.setenv("CALLCENTER_STORE_URL", url)
    monkeypatch.setenv("CALLCENTER_LOG_JSON", "false")
    monkeypatch.delenv("CALLCENTER_CONFIG", raising=False)
    # The CLI runs its own event loop: run it in a thread so that it does not nest in the test's.
    assert await asyncio.to_thread(cli_main, ["stats", "rebuild"]) == 0
    store = Store.from_url(url, retry_for=2)
    try:
        stats = Stats(store, offset=OFFSET)
        assert await stats.rollup.pending() == 0
        assert await stats.rollup.refresh() == 0, "the CLI left nothing to do"
        await check(stats, "rebuilt by the CLI")
    finally:
        await store.close()
