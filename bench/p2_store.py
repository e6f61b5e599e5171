#!/usr/bin/env python
"""Where the FastAGI route's database time goes: the ``IncomingRoute`` write timed alone, on one core.

Run:  .venv/bin/python bench/p2_store.py [--cpu 0] [--sessions 300] [--concurrency 1,50,200]

The route reads nothing from the database (abuse flags are indexed in memory) and writes one
transaction per call in the background: ``Calls.open_call`` with the call row and its ``arrived``
and ``routed`` events. For each concurrency this runs that write for many fake calls on the real
``Store`` (SQLAlchemy async + aiosqlite, fresh temp SQLite file), without any AGI, and prints p50/p99
and calls/s. The same transaction on a sync SQLAlchemy engine (``bench/pyst2_incoming.py``'s
``record``, minus the process start) and with plain ``sqlite3`` gives the floor the async stack is
measured against. The DB must end with one call and two events per call written, or the run is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from callcenter.store import Calls, Store, new_call_id, utcnow

#: What the route stores with its ``routed`` event.
ROUTED = {"priority": 10, "language": "id", "abuse_count": 0, "reminder": False}


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))] if ordered else 0.0


async def run_async(db: Path, sessions: int, concurrency: int) -> tuple[dict[str, list[float]], float, int]:
    store = Store.from_url(f"sqlite+aiosqlite:///{db}")
    await store.upgrade()
    calls = Calls(store)
    timings: dict[str, list[float]] = defaultdict(list)
    seq = iter(range(sessions))
    peak_threads = 0

    async def timed(name: str, aw: Awaitable[object]) -> None:
        started = time.perf_counter()
        await aw
        timings[name].append(time.perf_counter() - started)

    async def one(n: int) -> None:
        uid = f"{uuid.uuid4().hex[:10]}.{n}"
        number = f"+62812{n % 500:08d}"
        now = utcnow()
        events = [("arrived", now, {"dialed": "112", "withheld": False}), ("routed", now, ROUTED)]
        write = calls.open_call(
            uniqueid=uid,
            call_id=new_call_id(),
            arrived_at=now,
            routed_by="agi",
            caller_raw=number,
            caller_number=number,
            dialed="112",
            queue_priority=10,
            language="id",
            events=events,
        )
        await timed("open_call (call + 2 events)", write)

    async def worker() -> None:
        nonlocal peak_threads
        for n in seq:
            await one(n)
            peak_threads = max(peak_threads, threading.active_count())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await store.close()
    return timings, sessions / elapsed, peak_threads


def run_sync_sqlalchemy(db: Path, sessions: int) -> float:
    """The same transaction with a sync engine: the pyst2 script's own ``record``, one call after another."""
    # bench/ is sys.path[0] when this runs as a script; mypy checks bench/ as a package and cannot see that.
    from pyst2_incoming import record  # type: ignore[import-not-found]
    from sqlalchemy import create_engine, event
    from sqlalchemy.orm import sessionmaker

    from callcenter.config import QueueConfig
    from callcenter.forms.phone import normalize
    from callcenter.store.arrivals import decide
    from callcenter.store.engine import sqlite_pragmas

    engine = create_engine(f"sqlite:///{db}")
    event.listen(engine, "connect", sqlite_pragmas)
    factory = sessionmaker(engine, expire_on_commit=False)
    routing = decide(0, QueueConfig())
    started = time.perf_counter()
    for n in range(sessions):
        caller = normalize(f"0812{n % 500:08d}", "ID")
        env = {"agi_uniqueid": f"s{uuid.uuid4().hex[:10]}.{n}", "agi_channel": "PJSIP/citizen-1"}
        record(factory, env, new_call_id(), caller, utcnow(), "112", routing)
    elapsed = time.perf_counter() - started
    engine.dispose()
    return sessions / elapsed


def run_sqlite3(db: Path, sessions: int) -> float:
    """The floor: the same statements through plain sqlite3, one commit per call."""
    conn = sqlite3.connect(db, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000", "foreign_keys=ON"):
        conn.execute(f"PRAGMA {pragma}")
    started = time.perf_counter()
    for n in range(sessions):
        uid, number, now = f"q{uuid.uuid4().hex[:10]}.{n}", f"+62812{n % 500:08d}", datetime.now(UTC).isoformat()
        conn.execute("BEGIN")
        conn.execute("select id from calls where uniqueid = ?", (uid,)).fetchone()
        call_id = uuid.uuid4().hex
        conn.execute(
            "insert into calls (id, uniqueid, status, routed_by, caller_number, arrived_at) values (?,?,?,?,?,?)",
            (call_id, uid, "arrived", "agi", number, now),
        )
        conn.executemany(
            "insert into call_events (call_id, kind, at, source, data) values (?,?,?,?,?)",
            [(call_id, kind, now, "agi", json.dumps(ROUTED)) for kind in ("arrived", "routed")],
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return sessions / elapsed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--cpu", type=int, default=0, help="pin to this core (-1: no pin)")
    p.add_argument("--sessions", type=int, default=300)
    p.add_argument("--concurrency", default="1,50,200")
    args = p.parse_args()
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    with tempfile.TemporaryDirectory(prefix="cc-bench-store-") as tmp:
        db = Path(tmp) / "store.db"
        print(f"pinned to cpu {args.cpu}; {args.sessions} calls per level; fresh DB {db.name}\n")
        print("| concurrency | operation | p50 | p99 | calls/s (one transaction each) | peak threads |")
        print("|---:|---|---:|---:|---:|---:|")
        levels = [int(x) for x in args.concurrency.split(",")]
        for c in levels:
            timings, rate, threads = asyncio.run(run_async(db, args.sessions, c))
            for name, values in timings.items():
                print(
                    f"| {c} | {name} | {pct(values, 50) * 1000:.2f} ms | {pct(values, 99) * 1000:.2f} ms"
                    f" | {rate:.0f} | {threads} |"
                )
        print(f"\nsync SQLAlchemy ORM, same transaction, serial: {run_sync_sqlalchemy(db, args.sessions):.0f} calls/s")
        print(f"plain sqlite3, same statements, serial:        {run_sqlite3(db, args.sessions):.0f} calls/s")
        with contextlib.closing(sqlite3.connect(db)) as conn:
            calls = conn.execute("select count(*) from calls").fetchone()[0]
            events = conn.execute("select count(*) from call_events").fetchone()[0]
        expected = args.sessions * (len(levels) + 2)
        print(f"({calls} calls / {events} events in the DB at the end)")
        if (calls, events) != (expected, 2 * expected):
            print(f"INVALID RUN: expected {expected} calls / {2 * expected} events")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
