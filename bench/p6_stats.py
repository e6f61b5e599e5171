"""P6: supervision statistics on 1 M calls, on SQLite and PostgreSQL.

Generates a year of calls (default 1 000 000) with realistic shapes — ~30 % prank/silent, categories
in the proportions of the Jembrana report, a day/night curve, answer times mostly under 15 s — plus
their incidents, dispatches and ratings, bulk-loaded (sqlite3 ``executemany``; asyncpg ``COPY``) into a
fresh SQLite file and a fresh throwaway PostgreSQL database, both upgraded through the real migrations.
Then times each query behind the supervisor endpoints 5x (``store/stats.py`` through ``Store``, i.e.
what a request costs minus JSON) and prints a markdown table: median and max per backend.

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
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from callcenter.store import Store
from callcenter.store.stats import CallFilter, Period, Stats

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


# -- timing ----------------------------------------------------------------------------------------------


async def time_queries(store: Store, end: datetime, repeat: int) -> dict[str, list[float]]:
    stats = Stats(store, offset=OFFSET)
    year = Period(end - timedelta(days=365), end, OFFSET)
    month = Period(end - timedelta(days=30), end, OFFSET)
    takers = await stats.calltaker_names("PJSIP/taker3")
    cases: dict[str, Callable[[], Awaitable[Any]]] = {
        "wallboard today": lambda: stats.today(end - timedelta(hours=3)),
        "stats: 30 days (all tables)": lambda: stats.statistics(month),
        "stats: 365 days (all tables)": lambda: stats.statistics(year),
        "log: first page, no filter": lambda: stats.call_log(CallFilter(), limit=50),
        "log: 30 days + classification=prank": lambda: stats.call_log(
            CallFilter(month.start, month.end, classification="prank"), limit=50
        ),
        "log: calltaker (365 days)": lambda: stats.call_log(CallFilter(answered_by=takers), limit=50),
        "log: category=fire": lambda: stats.call_log(CallFilter(category="fire"), limit=50),
        "log: agency=bpbd, 30 days": lambda: stats.call_log(
            CallFilter(month.start, month.end, agency="bpbd"), limit=50
        ),
        "log: status=abandoned, page 20": lambda: stats.call_log(CallFilter(status="abandoned"), limit=50, offset=950),
    }
    # The parts of /api/stats separately, over the year, to see where time goes.
    for part in ("_calls_pass", "_by_category", "_by_agency", "_dispatch_ack", "_ratings"):

        def run(part: str = part) -> Awaitable[Any]:
            async def op(session: Any) -> Any:
                return await getattr(stats, part)(session, year)

            return store.transaction(part, op)

        cases[f"  365 d part {part.lstrip('_')}"] = run
    results: dict[str, list[float]] = {}
    for name, case in cases.items():
        await case()  # warm the cache: supervisors reload pages; the first cold read is not the steady state
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            await case()
            times.append((time.perf_counter() - t0) * 1000)
        results[name] = times
        print(f"  {name:<40} median {statistics.median(times):8.1f} ms  max {max(times):8.1f} ms", flush=True)
    return results


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
                print(
                    f"{backend}: generated and loaded {args.calls} calls in {time.perf_counter() - t0:.0f} s",
                    flush=True,
                )
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
    print(
        f"`{' '.join(['.venv/bin/python', *sys.argv])}` — {args.calls} calls over 365 days,"
        f" {args.repeat} runs each, warm"
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
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
