#!/usr/bin/env python
"""Where the FastAGI route's time goes: the ``IncomingRoute`` store calls timed alone, on one core.

Run:  .venv/bin/python bench/p2_store.py [--cpu 0] [--sessions 300] [--concurrency 1,50,200]

For each concurrency it runs the route's database work (``caller_history``, ``open_call`` and two
``record_event``) for many fake calls on the real ``Store`` (SQLAlchemy async + aiosqlite, fresh
temp SQLite file), without any AGI, and prints per-operation p50/p99 and calls/s. The same work
on a sync SQLAlchemy engine (what ``bench/pyst2_incoming.py`` does, minus the process start) and
with plain ``sqlite3`` gives the floor the async stack is measured against.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from callcenter.store import Store, utcnow


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))] if ordered else 0.0


async def run_async(db: Path, sessions: int, concurrency: int) -> tuple[dict[str, list[float]], float, int]:
    store = Store.from_url(f"sqlite+aiosqlite:///{db}")
    await store.upgrade()
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
        started = time.perf_counter()
        await timed("caller_history", store.caller_history(number))
        await timed(
            "open_call",
            store.open_call(uniqueid=uid, arrived_at=utcnow(), routed_by="agi", caller_number=number, dialed="112"),
        )
        await timed("record_event arrived", store.record_event(uid, "arrived", source="agi", data={"dialed": "112"}))
        await timed("record_event routed", store.record_event(uid, "routed", source="agi", data={"priority": 10}))
        timings["whole call"].append(time.perf_counter() - started)

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
    """The same four transactions with a sync engine (pyst2_incoming.py's code path), one after another."""
    from sqlalchemy import create_engine, event, func, select
    from sqlalchemy.orm import Session, sessionmaker

    from callcenter.store.models import Call, CallEvent, NumberFlag

    def pragmas(conn: sqlite3.Connection, _record: object) -> None:
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000", "foreign_keys=ON"):
            conn.execute(f"PRAGMA {pragma}")

    engine = create_engine(f"sqlite:///{db}")
    event.listen(engine, "connect", pragmas)
    factory: Callable[[], Session] = sessionmaker(engine, expire_on_commit=False)
    started = time.perf_counter()
    for n in range(sessions):
        uid, number, now = f"s{uuid.uuid4().hex[:10]}.{n}", f"+62812{n % 500:08d}", utcnow()
        with factory() as s, s.begin():
            s.execute(select(func.count(Call.id), func.max(Call.arrived_at)).where(Call.caller_number == number)).one()
            list(s.scalars(select(NumberFlag).where(NumberFlag.number == number).limit(50)))
        with factory() as s, s.begin():
            if s.scalar(select(Call).where(Call.uniqueid == uid)) is None:
                call_id = uuid.uuid4().hex
                s.add(Call(id=call_id, uniqueid=uid, status="arrived", caller_number=number, arrived_at=now))
        for kind in ("arrived", "routed"):
            with factory() as s, s.begin():
                call = s.scalar(select(Call).where(Call.uniqueid == uid))
                assert call is not None
                s.add(CallEvent(call_id=call.id, kind=kind, at=utcnow(), source="agi", data={"k": 1}))
    elapsed = time.perf_counter() - started
    engine.dispose()
    return sessions / elapsed


def run_sqlite3(db: Path, sessions: int) -> float:
    """The floor: the same statements through plain sqlite3, four commits per call."""
    conn = sqlite3.connect(db, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000", "foreign_keys=ON"):
        conn.execute(f"PRAGMA {pragma}")
    started = time.perf_counter()
    for n in range(sessions):
        uid, number, now = f"q{uuid.uuid4().hex[:10]}.{n}", f"+62812{n % 500:08d}", datetime.now(UTC).isoformat()
        conn.execute("BEGIN")
        conn.execute("select count(id), max(arrived_at) from calls where caller_number = ?", (number,)).fetchone()
        conn.execute("select * from number_flags where number = ? limit 50", (number,)).fetchall()
        conn.execute("COMMIT")
        conn.execute("BEGIN")
        conn.execute("select id from calls where uniqueid = ?", (uid,)).fetchone()
        call_id = uuid.uuid4().hex
        conn.execute(
            "insert into calls (id, uniqueid, status, routed_by, caller_number, arrived_at) values (?,?,?,?,?,?)",
            (call_id, uid, "arrived", "agi", number, now),
        )
        conn.execute("COMMIT")
        for kind in ("arrived", "routed"):
            conn.execute("BEGIN")
            conn.execute("select id from calls where uniqueid = ?", (uid,)).fetchone()
            conn.execute(
                "insert into call_events (call_id, kind, at, source, data) values (?,?,?,?,?)",
                (call_id, kind, now, "agi", json.dumps({"k": 1})),
            )
            conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return sessions / elapsed


def main() -> None:
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
        print("| concurrency | operation | p50 | p99 | calls/s (4 transactions each) | peak threads |")
        print("|---:|---|---:|---:|---:|---:|")
        for c in (int(x) for x in args.concurrency.split(",")):
            timings, rate, threads = asyncio.run(run_async(db, args.sessions, c))
            for name, values in timings.items():
                shown = f"{rate:.0f}" if name == "whole call" else ""
                print(
                    f"| {c} | {name} | {pct(values, 50) * 1000:.2f} ms | {pct(values, 99) * 1000:.2f} ms"
                    f" | {shown} | {threads if shown else ''} |"
                )
        print(
            f"\nsync SQLAlchemy ORM, same 4 transactions, serial: {run_sync_sqlalchemy(db, args.sessions):.0f} calls/s"
        )
        print(f"plain sqlite3, same statements, serial:          {run_sqlite3(db, args.sessions):.0f} calls/s")
        with contextlib.closing(sqlite3.connect(db)) as conn:
            rows = conn.execute("select count(*) from calls").fetchone()[0]
        print(f"({rows} calls in the DB at the end)")


if __name__ == "__main__":
    main()
