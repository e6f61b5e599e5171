"""P6: supervision statistics on 1 M calls, on SQLite and PostgreSQL.

Generates a year of calls (default 1 000 000) with realistic shapes — ~30 % prank/silent, categories
in the proportions of the Jembrana report, a day/night curve, answer times mostly under 15 s — plus
their incidents, dispatches and ratings, bulk-loaded (sqlite3 ``executemany``; asyncpg ``COPY``) into a
fresh SQLite file and a fresh throwaway PostgreSQL database, both upgraded through the real migrations,
so the roll-up triggers fire during the load as they would for any bulk import.

Then, per backend:

1. the one-time build of the statistics roll-up (what the first refresh after upgrading does), timed;
2. ``statistics()`` compared with the raw computation (``raw=True``) for 30 days, 365 days and a period
   off the hour boundaries - they must be equal - with the raw computation's time for reference;
3. each query behind the supervisor endpoints timed 5x after 6 untimed runs (``store/stats.py`` through
   ``Store``, i.e. what a request costs minus JSON). The statistics are timed twice: right after a
   trickle of writes (``Trickle``: a minute of the centre, not timed) so that the refresh on read is
   included, and with nothing dirty. Prints a markdown table: median and max per backend.

    .venv/bin/python bench/p6_stats.py                    # 1 M calls, both backends
    .venv/bin/python bench/p6_stats.py --calls 100000 --backends sqlite

Target: <= 500 ms per query.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from callcenter.store import Store
from callcenter.store.calllog import CallFilter, CallLog
from callcenter.store.rollup import Rollup
from callcenter.store.stats import Period, Stats

OFFSET = timedelta(hours=8)  # WITA (Bali), the Jembrana report's zone
CATEGORIES = (
    ("medical", 127),
    ("disaster", 91),
    ("infectious_disease", 55),
    ("wild_animal", 42),
    ("fire", 36),
    ("traffic_accident", 31),
    ("mental_abandoned", 26),
    ("crime", 6),
    ("violence_women_children", 8),
    ("other", 58),
)
AGENCIES = {
    "medical": ("dinkes",),
    "disaster": ("bpbd",),
    "infectious_disease": ("dinkes",),
    "wild_animal": ("distan",),
    "fire": ("damkar", "pdam"),
    "traffic_accident": ("polres", "dinkes"),
    "mental_abandoned": ("dinsos",),
    "crime": ("polres",),
    "violence_women_children": ("dpppa", "polres"),
    "other": ("satpolpp",),
}
#: (classification, weight): ~30 % prank/silent, as Jakarta/Semarang report.
CLASSIFICATIONS = (
    ("genuine", 35),
    ("non_emergency", 15),
    ("prank", 17),
    ("silent", 13),
    ("hoax", 2),
    ("misdial", 5),
    ("abandoned", 8),
    (None, 5),
)
#: Relative call volume per local hour (quiet at night, busy late morning and evening).
HOURLY = (2, 1, 1, 1, 1, 2, 4, 6, 7, 8, 8, 7, 6, 6, 6, 6, 7, 7, 8, 8, 7, 5, 4, 3)
TAKERS = tuple(f"PJSIP/taker{i}" for i in range(1, 13))
#: Untimed runs of each query before the timed ones (see ``time_queries``).
WARM_RUNS = 6
CALL_COLS = (
    "id",
    "uniqueid",
    "caller_number",
    "routed_by",
    "status",
    "arrived_at",
    "answered_at",
    "ended_at",
    "answered_by",
    "wait_seconds",
    "talk_seconds",
    "classification",
    "recording",
)


def _ts(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S.%f")


def generate(n: int, end: datetime, seed: int = 112) -> Iterator[tuple[str, Any]]:
    """Yields ("call", row) / ("incident", row) / ("dispatch", row) / ("rating", row) tuples; datetimes
    are UTC-aware. Incidents for genuine calls (plus a few non-emergency ones)."""
    rng = random.Random(seed)
    start = end - timedelta(days=365)
    hours = list(range(24))
    cats = [c for c, _ in CATEGORIES]
    cat_w = [w for _, w in CATEGORIES]
    cls = [c for c, _ in CLASSIFICATIONS]
    cls_w = [w for _, w in CLASSIFICATIONS]
    incident_id = dispatch_id = rating_id = 0
    numbers = [f"+62812{rng.randrange(10**7, 10**8)}" for _ in range(200_000)]
    for i in range(n):
        day = rng.randrange(365)
        local_hour = rng.choices(hours, HOURLY)[0]
        arrived = start + timedelta(days=day, hours=local_hour, seconds=rng.random() * 3600) - OFFSET
        arrived = arrived.replace(tzinfo=UTC)
        klass = rng.choices(cls, cls_w)[0]
        wait = min(rng.expovariate(1 / 7.0), 300.0)
        if klass == "abandoned" or rng.random() < 0.03:
            status, answered, taker, talk = "abandoned", None, None, None
        else:
            status, answered, taker = "completed", arrived + timedelta(seconds=wait), rng.choice(TAKERS)
            talk = rng.uniform(5, 40) if klass in ("prank", "silent", "misdial") else rng.uniform(60, 400)
        ended = (answered or arrived) + timedelta(seconds=talk or wait)
        call_id = f"{i:032x}"
        yield (
            "call",
            (
                call_id,
                f"{1700000000 + i}.{i % 1000}",
                rng.choice(numbers),
                "agi",
                status,
                arrived,
                answered,
                ended,
                taker,
                wait,
                talk,
                klass,
                f"/var/spool/asterisk/monitor/callcenter/{i}.wav" if answered else None,
            ),
        )
        if klass == "genuine" or (klass == "non_emergency" and rng.random() < 0.1):
            incident_id += 1
            cat = rng.choices(cats, cat_w)[0]
            created = ended - timedelta(seconds=rng.uniform(0, 30))
            breached = created + timedelta(minutes=10) if rng.random() < 0.05 else None
            yield ("incident", (incident_id, f"112-{incident_id:010d}", call_id, "new", cat, created, breached))
            resolved_all = True
            for agency in AGENCIES[cat][: 1 + (rng.random() < 0.3)]:
                dispatch_id += 1
                accepted = created + timedelta(seconds=rng.expovariate(1 / 40.0)) if rng.random() < 0.93 else None
                recent = (end - created) < timedelta(days=2)
                d_status = ("on_scene" if recent else "resolved") if accepted else ("calling" if recent else "failed")
                resolved_all &= d_status == "resolved"
                yield ("dispatch", (dispatch_id, incident_id, agency, d_status, created, accepted or created, accepted))
            if resolved_all and rng.random() < 0.4:
                rating_id += 1
                yield (
                    "rating",
                    (rating_id, incident_id, "sms", "rated", rng.choices((1, 2, 3, 4, 5), (1, 1, 2, 4, 6))[0], ended),
                )


# -- loading ---------------------------------------------------------------------------------------------

SQL = {
    "call": f"INSERT INTO calls ({', '.join(CALL_COLS)}) VALUES ({', '.join('?' * len(CALL_COLS))})",
    "incident": (
        "INSERT INTO incidents (id, reference, call_id, status, category, priority, reporter_name, callback_number,"
        " address, landmark, victims_count, victims_condition, access_route, notes, created_at, updated_at,"
        " sla_breached_at) VALUES (?, ?, ?, ?, ?, 'normal', 'Made', '+6281200000000', 'Jl. Ngurah Rai', '', 0, '',"
        " '', '', ?, ?, ?)"
    ),
    "dispatch": (
        "INSERT INTO dispatches (id, incident_id, agency, status, created_at, updated_at, accepted_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)"
    ),
    "rating": (
        "INSERT INTO ratings (id, incident_id, via, status, score, requested_at, rated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
    ),
}


def _sqlite_row(kind: str, row: tuple[Any, ...]) -> tuple[Any, ...]:
    out = tuple(_ts(v) if isinstance(v, datetime) else v for v in row)
    if kind == "incident":  # created_at doubles as updated_at
        return (*out[:6], out[5], out[6])
    if kind == "rating":
        return (*out, out[5])  # requested_at = rated_at
    return out


def load_sqlite(path: Path, n: int, end: datetime) -> None:
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    batches: dict[str, list[tuple[Any, ...]]] = {k: [] for k in SQL}
    order = ("call", "incident", "dispatch", "rating")

    def flush() -> None:
        for kind in order:
            if batches[kind]:
                con.executemany(SQL[kind], batches[kind])
                batches[kind].clear()

    for kind, row in generate(n, end):
        batches[kind].append(_sqlite_row(kind, row))
        if len(batches["call"]) >= 50_000:
            flush()
    flush()
    con.commit()
    con.execute("ANALYZE")
    con.close()


async def load_postgres(url: str, n: int, end: datetime) -> None:
    import asyncpg  # type: ignore[import-untyped]

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    con = await asyncpg.connect(dsn)
    try:
        columns = {
            "call": ("calls", CALL_COLS),
            "incident": (
                "incidents",
                (
                    "id",
                    "reference",
                    "call_id",
                    "status",
                    "category",
                    "created_at",
                    "sla_breached_at",
                    "priority",
                    "reporter_name",
                    "callback_number",
                    "address",
                    "landmark",
                    "victims_count",
                    "victims_condition",
                    "access_route",
                    "notes",
                    "updated_at",
                ),
            ),
            "dispatch": (
                "dispatches",
                ("id", "incident_id", "agency", "status", "created_at", "updated_at", "accepted_at"),
            ),
            "rating": ("ratings", ("id", "incident_id", "via", "status", "score", "requested_at", "rated_at")),
        }
        batches: dict[str, list[tuple[Any, ...]]] = {k: [] for k in columns}

        async def flush() -> None:
            for kind in ("call", "incident", "dispatch", "rating"):
                if batches[kind]:
                    table, cols = columns[kind]
                    await con.copy_records_to_table(table, records=batches[kind], columns=list(cols))
                    batches[kind].clear()

        for kind, raw in generate(n, end):
            row = raw
            if kind == "incident":
                row = (*raw, "normal", "Made", "+6281200000000", "Jl. Ngurah Rai", "", 0, "", "", "", raw[5])
            elif kind == "rating":
                row = (*raw, raw[5])
            batches[kind].append(row)
            if len(batches["call"]) >= 50_000:
                await flush()
        await flush()
        for table in ("incidents", "dispatches", "ratings"):
            await con.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        await con.execute("VACUUM ANALYZE")
    finally:
        await con.close()


async def vacuum(url: str) -> None:
    import asyncpg

    con = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await con.execute("VACUUM ANALYZE stats_rollup, stats_dirty")
    finally:
        await con.close()


# -- timing ----------------------------------------------------------------------------------------------


class Trickle:
    """What a centre writes between two looks at the statistics (about a minute at 1 M calls a year):
    a few new calls in the current hour going through arrival, answer and classification, one of them
    with an incident, an accepted dispatch and a rating, plus a supervisor correcting an old call's
    classification. Written through the ORM like the app, so the triggers mark the hours they touch
    (the current hour, the old call's hour and the rated incident's hour)."""

    def __init__(self, store: Store, end: datetime) -> None:
        self.store = store
        self.end = end
        self.n = 0
        self.rng = random.Random(7)
        self.tag = uuid.uuid4().hex[:8]  # ids of their own, whatever else the database holds

    async def __call__(self) -> None:
        from callcenter.store.models import Call
        from callcenter.testing.rows import dispatch_row, incident_row, rating_row

        self.n += 1
        n, rng = self.n, self.rng
        now = self.end - timedelta(minutes=30) + timedelta(seconds=n)
        ids = [f"trickle{self.tag}{n:06d}{i}" for i in range(4)]

        async def arrive(session: Any) -> None:
            for i, call_id in enumerate(ids):
                session.add(
                    Call(
                        id=call_id,
                        uniqueid=call_id,
                        routed_by="agi",
                        status="queued",
                        arrived_at=now + timedelta(seconds=i),
                    )
                )

        async def answer(session: Any) -> None:
            for call_id in ids:
                call = await session.get(Call, call_id)
                wait = rng.uniform(2, 25)
                call.status, call.answered_by, call.wait_seconds = "answered", rng.choice(TAKERS), wait
                call.answered_at = call.arrived_at + timedelta(seconds=wait)

        async def classify(session: Any) -> None:
            for call_id in ids:
                call = await session.get(Call, call_id)
                call.status, call.classification = "completed", rng.choice(("genuine", "prank", "silent"))
            created = now + timedelta(minutes=2)
            incident = incident_row(f"112-T-{self.tag}-{n:06d}", created, call_id=ids[0])
            session.add(incident)
            await session.flush()
            session.add(
                dispatch_row(
                    incident.id, "damkar", created, status="accepted", accepted_at=created + timedelta(seconds=40)
                )
            )
            session.add(rating_row(incident.id, created, 5))
            old = f"{rng.randrange(900_000):032x}"  # a call from earlier in the year, reclassified
            old_call = await session.get(Call, old)
            if old_call is not None:
                old_call.classification = "hoax" if old_call.classification != "hoax" else "prank"

        for step in (arrive, answer, classify):
            await self.store.transaction("trickle", step)


async def time_queries(store: Store, end: datetime, repeat: int) -> dict[str, list[float]]:
    stats = Stats(store, offset=OFFSET)
    calls = CallLog(store)
    year = Period(end - timedelta(days=365), end, OFFSET)
    month = Period(end - timedelta(days=30), end, OFFSET)
    takers = await calls.calltaker_names("PJSIP/taker3")
    trickle = Trickle(store, end)
    cases: dict[str, tuple[bool, Callable[[], Awaitable[Any]]]] = {
        "wallboard today": (False, lambda: stats.today(end - timedelta(hours=3))),
        "stats: 30 days, after a trickle (refresh included)": (True, lambda: stats.statistics(month)),
        "stats: 365 days, after a trickle (refresh included)": (True, lambda: stats.statistics(year)),
        "stats: 30 days, nothing dirty": (False, lambda: stats.statistics(month)),
        "stats: 365 days, nothing dirty": (False, lambda: stats.statistics(year)),
        "  of which the refresh after a trickle": (True, stats.rollup.refresh),
        "log: first page, no filter": (False, lambda: calls.call_log(CallFilter(), limit=50)),
        "log: 30 days + classification=prank": (
            False,
            lambda: calls.call_log(CallFilter(month.start, month.end, classification="prank"), limit=50),
        ),
        "log: calltaker (365 days)": (False, lambda: calls.call_log(CallFilter(answered_by=takers), limit=50)),
        "log: category=fire": (False, lambda: calls.call_log(CallFilter(category="fire"), limit=50)),
        "log: agency=bpbd, 30 days": (
            False,
            lambda: calls.call_log(CallFilter(month.start, month.end, agency="bpbd"), limit=50),
        ),
        "log: status=abandoned, page 20": (
            False,
            lambda: calls.call_log(CallFilter(status="abandoned"), limit=50, offset=950),
        ),
    }
    results: dict[str, list[float]] = {}
    for name, (dirty, case) in cases.items():
        # Warm up: supervisors reload pages, so the first cold read is not the steady state; and PostgreSQL
        # plans a prepared statement anew for its first five runs only, then may switch to a generic plan
        # (the wallboard's once took 0.4-1.1 s from the sixth run on), so the timed runs come after those.
        for _ in range(WARM_RUNS):
            if dirty:
                await trickle()
            await case()
        times = []
        for _ in range(repeat):
            if dirty:
                await trickle()  # not timed: the writes a minute of the centre makes
            t0 = time.perf_counter()
            await case()
            times.append((time.perf_counter() - t0) * 1000)
        results[name] = times
        print(f"  {name:<52} median {statistics.median(times):8.1f} ms  max {max(times):8.1f} ms", flush=True)
    return results


async def check_equal(store: Store, end: datetime) -> dict[str, float]:
    """The roll-up must give exactly what the raw rows give: compared once per backend, on the periods
    timed and one off the hour boundaries; returns the raw computation's time (what a request cost
    before the roll-up)."""
    stats = Stats(store, offset=OFFSET)
    ragged = Period(end - timedelta(days=45, minutes=17), end - timedelta(days=3, minutes=41), OFFSET)
    raw_ms: dict[str, float] = {}
    for name, period in (
        ("30 days", Period(end - timedelta(days=30), end, OFFSET)),
        ("365 days", Period(end - timedelta(days=365), end, OFFSET)),
        ("42 days off the hour", ragged),
    ):
        rolled = await stats.statistics(period)
        t0 = time.perf_counter()
        raw = await stats.statistics(period, raw=True)
        raw_ms[name] = (time.perf_counter() - t0) * 1000
        if rolled != raw:
            raise SystemExit(f"roll-up and raw computation differ for {name}")
        print(f"  roll-up == raw for {name} (raw computation: {raw_ms[name]:.0f} ms)", flush=True)
    return raw_ms


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (SQLite file)")
    args = parser.parse_args()
    end = datetime(2026, 11, 25, 4, 0, tzinfo=UTC)
    tmp = Path(tempfile.mkdtemp(prefix="p6_stats_"))
    results: dict[str, dict[str, list[float]]] = {}
    once: dict[str, dict[str, float]] = {}
    try:
        for backend in args.backends.split(","):
            pg = None
            if backend == "sqlite":
                url = f"sqlite+aiosqlite:///{tmp / 'stats.db'}"
            else:
                from callcenter.testing import postgres

                # The test server's 32 MB of shared buffers is a laptop setting; a centre's server has more.
                postgres.SERVER_SETTINGS.update(shared_buffers="256MB", work_mem="64MB")
                pg = postgres.ThrowawayPostgres()
                pg.start()
                url = pg.create_database("p6stats")
            try:
                store = Store.from_url(url)
                await store.upgrade()
                t0 = time.perf_counter()
                if backend == "sqlite":
                    await store.close()
                    await asyncio.to_thread(load_sqlite, tmp / "stats.db", args.calls, end)
                    store = Store.from_url(url)
                else:
                    await load_postgres(url, args.calls, end)
                loaded = time.perf_counter() - t0
                print(f"{backend}: generated and loaded {args.calls} calls in {loaded:.0f} s (triggers on)", flush=True)
                # The one-time build after the bulk load: what the first refresh after upgrading does.
                t0 = time.perf_counter()
                hours = await Rollup(store).refresh()
                built = time.perf_counter() - t0
                print(f"{backend}: roll-up built from raw rows in {built:.1f} s ({hours} hours)", flush=True)
                if backend != "sqlite":
                    # The throwaway server runs without autovacuum; a real one soon does this by itself
                    # (statistics for the new table, the load's dirty marks cleared away).
                    await vacuum(url)
                once[backend] = {"load s": loaded, "build s": built}
                once[backend].update({f"raw {k} ms": v for k, v in (await check_equal(store, end)).items()})
                results[backend] = await time_queries(store, end, args.repeat)
                await store.close()
            finally:
                if pg is not None:
                    pg.stop()
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    backends = list(results)
    print()
    load = Path("/proc/loadavg").read_text().split()[:3]  # noqa: ASYNC240 - one tiny read at the end
    print(
        f"`{' '.join(['.venv/bin/python', *sys.argv])}` — {args.calls} calls over 365 days,"
        f" {args.repeat} runs each, warm; load average before the table: {' '.join(load)}"
    )
    print()
    print("| query | " + " | ".join(f"{b} median ms | {b} max ms" for b in backends) + " |")
    print("|---|" + "---:|---:|" * len(backends))
    for name in next(iter(results.values())):
        cells = []
        for b in backends:
            t = results[b][name]
            cells += [f"{statistics.median(t):.1f}", f"{max(t):.1f}"]
        print(f"| {name.strip()} | " + " | ".join(cells) + " |")
    print()
    for b, figures in once.items():
        print(f"{b}: " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
