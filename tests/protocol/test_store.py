"""The call store against the embedded SQLite file and a real PostgreSQL server (started by the tests)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, StatementError

from callcenter.store import Calls, Store, StoreUnavailable, utcnow
from callcenter.store.migrate import alembic_config, downgrade_connection
from callcenter.store.models import Base, Call
from callcenter.testing.postgres import ThrowawayPostgres

APP_TABLES = {"calls", "call_events", "number_flags"}
NUMBER = "+4915112345678"


def _head() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def _tables(store: Store) -> set[str]:
    async with store.engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def _revision(store: Store) -> str | None:
    async with store.engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


async def _count_calls(store: Store, uniqueid: str) -> int:
    async with store.engine.connect() as conn:
        result = await conn.execute(select(func.count()).select_from(Call).where(Call.uniqueid == uniqueid))
        return int(result.scalar_one())


def _assert_utc(value: datetime | None, expected: datetime) -> None:
    assert value is not None
    assert value.tzinfo is not None, "naive datetime came back"
    assert value.utcoffset() == timedelta(0)
    assert value == expected  # same instant, microseconds kept


# -- migrations ----------------------------------------------------------------------------------


async def test_migrations_upgrade_downgrade_and_back(db_url: str) -> None:
    store = Store.from_url(db_url)
    calls = Calls(store)
    try:
        assert await _tables(store) == set()
        await store.upgrade()
        assert await _tables(store) >= APP_TABLES
        assert await _revision(store) == _head()

        def diff(conn: Connection) -> list[object]:
            return list(compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata))

        async with store.engine.connect() as conn:
            assert await conn.run_sync(diff) == [], "migrations and models disagree"

        async with store.engine.begin() as conn:
            await conn.run_sync(downgrade_connection, "base")
        assert (await _tables(store)) & APP_TABLES == set()
        assert await _revision(store) is None

        await store.upgrade()
        await store.upgrade()  # a second upgrade at head is a no-op
        assert await _tables(store) >= APP_TABLES
        assert await _revision(store) == _head()
        call_id = await calls.open_call(uniqueid="1.1", arrived_at=utcnow(), routed_by="agi")
        assert (await calls.get_call(call_id)) is not None
    finally:
        await store.close()


# -- calls and timelines -------------------------------------------------------------------------


async def test_open_call_creates_then_updates(store: Store) -> None:
    calls = Calls(store)
    t0 = utcnow()
    call_id = await calls.open_call(
        uniqueid="1700000000.1",
        arrived_at=t0,
        routed_by="agi",
        channel="PJSIP/trunk-00000001",
        caller_raw="015112345678",
        caller_number=NUMBER,
    )
    call = await calls.get_call(call_id)
    assert call is not None
    assert (call.uniqueid, call.routed_by, call.status, call.caller_number) == (
        "1700000000.1",
        "agi",
        "arrived",
        NUMBER,
    )
    _assert_utc(call.arrived_at, t0)

    again = await calls.open_call(
        uniqueid="1700000000.1", arrived_at=t0 + timedelta(seconds=5), routed_by="agi", dialed="112", queue_priority=2
    )
    assert again == call_id
    assert await _count_calls(store, "1700000000.1") == 1
    call = await calls.get_call(call_id)
    assert call is not None
    assert call.dialed == "112" and call.queue_priority == 2
    assert call.channel == "PJSIP/trunk-00000001"  # None does not wipe what is known
    _assert_utc(call.arrived_at, t0)  # a later arrival time does not move the call

    await calls.open_call(uniqueid="1700000000.1", arrived_at=t0 - timedelta(seconds=3), routed_by="agi")
    call = await calls.get_call(call_id)
    assert call is not None
    _assert_utc(call.arrived_at, t0 - timedelta(seconds=3))  # an earlier one does


async def test_record_event_for_unknown_call_creates_fallback(store: Store) -> None:
    calls = Calls(store)
    at = utcnow()

    def queued(call: Call) -> None:
        call.queued_at = at
        call.status = "queued"

    call_id = await calls.record_event(
        "1700000000.7",
        "queue_join",
        source="ami",
        at=at,
        data={"queue": "emergency", "position": 1},
        update=queued,
        create={"caller_number": NUMBER, "channel": "PJSIP/trunk-7"},
    )
    call = await calls.call_by_uniqueid("1700000000.7")
    assert call is not None and call.id == call_id
    assert call.routed_by == "fallback"
    assert call.status == "queued" and call.caller_number == NUMBER and call.channel == "PJSIP/trunk-7"
    _assert_utc(call.arrived_at, at)
    _assert_utc(call.queued_at, at)

    events = await calls.timeline(call_id)
    assert [(e.kind, e.source, e.data) for e in events] == [
        ("queue_join", "ami", {"queue": "emergency", "position": 1})
    ]

    assert await calls.record_event("1700000000.7", "hangup", source="hangup", at=at + timedelta(1)) == call_id
    assert [e.kind for e in await calls.timeline(call_id)] == ["queue_join", "hangup"]
    assert await _count_calls(store, "1700000000.7") == 1

    # The AGI report arriving late fills in the same call.
    assert await calls.open_call(uniqueid="1700000000.7", arrived_at=at, routed_by="agi", dialed="112") == call_id
    assert await _count_calls(store, "1700000000.7") == 1


async def test_timeline_is_ordered_by_time_then_arrival(store: Store) -> None:
    calls = Calls(store)
    t = utcnow()
    call_id = await calls.open_call(uniqueid="1700000000.9", arrived_at=t, routed_by="agi")
    for kind, offset in [("c", 3), ("a", 1), ("b1", 2), ("b2", 2), ("start", 0)]:
        await calls.record_event("1700000000.9", kind, source="ami", at=t + timedelta(seconds=offset))
    events = await calls.timeline(call_id)
    assert [e.kind for e in events] == ["start", "a", "b1", "b2", "c"]
    assert [e.at for e in events] == sorted(e.at for e in events)
    assert await calls.timeline("no-such-call") == []


async def test_concurrent_reports_of_a_new_call_make_one_row(store: Store) -> None:
    calls = Calls(store)
    uniqueid = "1700000000.42"
    t = utcnow()

    async def agi() -> str:
        return await calls.open_call(uniqueid=uniqueid, arrived_at=t, routed_by="agi", caller_number=NUMBER)

    async def ami(i: int) -> str:
        return await calls.record_event(uniqueid, f"ev{i:02d}", source="ami", at=t + timedelta(milliseconds=i))

    ids = await asyncio.gather(*(agi() if i % 2 == 0 else ami(i) for i in range(20)))
    assert len(set(ids)) == 1
    assert await _count_calls(store, uniqueid) == 1
    events = await calls.timeline(ids[0])
    assert [e.kind for e in events] == [f"ev{i:02d}" for i in range(1, 20, 2)]
    call = await calls.get_call(ids[0])
    assert call is not None
    assert call.routed_by == "agi" and call.caller_number == NUMBER


# -- numbers -------------------------------------------------------------------------------------


async def test_caller_history_counts_calls_and_recent_flags(store: Store) -> None:
    calls = Calls(store)
    now = utcnow()
    for days in (400, 30, 2):
        await calls.open_call(
            uniqueid=f"h.{days}", arrived_at=now - timedelta(days=days), routed_by="agi", caller_number=NUMBER
        )
    other = await calls.open_call(uniqueid="o.1", arrived_at=now, routed_by="agi", caller_number="+4930123456")
    await calls.flag_number(NUMBER, "silent", at=now - timedelta(days=1), note="no speech")
    await calls.flag_number(NUMBER, "prank", at=now - timedelta(days=10), created_by="ct1")
    await calls.flag_number(NUMBER, "misdial", at=now - timedelta(days=20))
    await calls.flag_number(NUMBER, "hoax", at=now - timedelta(days=400))
    await calls.flag_number("+4930123456", "prank", at=now, call_id=other)

    history = await calls.caller_history(NUMBER)
    assert history.number == NUMBER
    assert history.previous_calls == 3
    _assert_utc(history.last_call_at, now - timedelta(days=2))
    assert [f.kind for f in history.flags] == ["silent", "prank", "misdial"]  # newest first; the hoax is too old
    assert history.flags[0].note == "no speech"
    _assert_utc(history.flags[1].at, now - timedelta(days=10))
    assert history.abuse_count(now - timedelta(days=365)) == 2
    assert history.abuse_count(now - timedelta(days=5)) == 1

    recent = await calls.caller_history(NUMBER, flags_since=timedelta(days=5))
    assert [f.kind for f in recent.flags] == ["silent"]
    assert recent.previous_calls == 3

    unknown = await calls.caller_history("+4940999999")
    assert (unknown.previous_calls, unknown.last_call_at, unknown.flags) == (0, None, ())


async def test_datetimes_come_back_aware_utc(store: Store) -> None:
    # A wall-clock time in another zone, with microseconds: stored and returned as the same UTC instant.
    calls = Calls(store)
    local = datetime(2026, 3, 29, 3, 30, 15, 123456, tzinfo=timezone(timedelta(hours=14)))
    answered = local + timedelta(seconds=12, microseconds=1)

    def answer(call: Call) -> None:
        call.answered_at = answered

    call_id = await calls.open_call(uniqueid="tz.1", arrived_at=local, routed_by="agi", caller_number=NUMBER)
    await calls.record_event("tz.1", "answer", source="ami", at=answered, update=answer)
    await calls.flag_number(NUMBER, "prank", at=local, call_id=call_id)

    call = await calls.get_call(call_id)
    assert call is not None
    _assert_utc(call.arrived_at, local)
    _assert_utc(call.answered_at, answered)
    assert call.arrived_at.tzinfo == UTC
    (event,) = await calls.timeline(call_id)
    _assert_utc(event.at, answered)
    # The comparison in the flag window runs in UTC too, on both backends.
    history = await calls.caller_history(NUMBER, flags_since=utcnow() - local + timedelta(minutes=1))
    _assert_utc(history.last_call_at, local)
    (flag,) = history.flags
    _assert_utc(flag.at, local)
    assert (await calls.caller_history(NUMBER, flags_since=utcnow() - local - timedelta(minutes=1))).flags == ()
    for listed in (await calls.recent_calls(), await calls.open_calls()):
        (only,) = listed
        _assert_utc(only.arrived_at, local)

    with pytest.raises((ValueError, StatementError), match="naive datetime"):
        await calls.open_call(uniqueid="tz.2", arrived_at=datetime(2026, 1, 1, 12, 0), routed_by="agi")


# -- failures ------------------------------------------------------------------------------------


async def test_non_transient_errors_are_raised_at_once(db_url: str) -> None:
    """A missing table is a bug, not an outage: no retrying for the whole window, no StoreUnavailable."""
    store = Store.from_url(db_url, retry_for=30.0)
    calls = Calls(store)
    try:
        started = time.monotonic()
        with pytest.raises(DBAPIError):
            await calls.open_call(uniqueid="x.1", arrived_at=utcnow(), routed_by="agi")
        assert time.monotonic() - started < 5
    finally:
        await store.close()


@pytest.mark.postgres
async def test_postgres_bad_data_is_not_an_outage(postgres: ThrowawayPostgres) -> None:
    store = Store.from_url(postgres.create_database("bad_data"), retry_for=30.0)
    calls = Calls(store)
    try:
        await store.upgrade()
        started = time.monotonic()
        with pytest.raises(DBAPIError, match="too long") as raised:
            await calls.open_call(uniqueid="x.2", arrived_at=utcnow(), routed_by="agi", dialed="1" * 40)
        assert not isinstance(raised.value, StoreUnavailable)
        assert time.monotonic() - started < 5
    finally:
        await store.close()


@pytest.mark.postgres
async def test_postgres_down_raises_store_unavailable_then_recovers(own_postgres: ThrowawayPostgres) -> None:
    store = Store.from_url(own_postgres.url, retry_for=1.0)
    calls = Calls(store)
    try:
        await store.upgrade()
        await calls.open_call(uniqueid="d.1", arrived_at=utcnow(), routed_by="agi")
        own_postgres.halt()

        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="open_call"):
            await calls.open_call(uniqueid="d.2", arrived_at=utcnow(), routed_by="agi")
        elapsed = time.monotonic() - started
        assert 0.9 <= elapsed < 5, elapsed  # it did retry for the window, and gave up after it
        with pytest.raises(StoreUnavailable):
            await calls.caller_history(NUMBER)

        own_postgres.resume()
        await calls.open_call(uniqueid="d.3", arrived_at=utcnow(), routed_by="agi")  # same store, same pool
        assert [await _count_calls(store, u) for u in ("d.1", "d.2", "d.3")] == [1, 0, 1]
    finally:
        await store.close()


@pytest.mark.postgres
async def test_postgres_write_during_restart_is_not_lost(own_postgres: ThrowawayPostgres) -> None:
    store = Store.from_url(own_postgres.url, retry_for=30.0)
    calls = Calls(store)
    try:
        await store.upgrade()
        call_id = await calls.open_call(uniqueid="r.1", arrived_at=utcnow(), routed_by="agi")
        own_postgres.halt()  # the server goes down with the pool's connections open

        event = asyncio.create_task(calls.record_event("r.1", "hold", source="ami", data={"n": 1}))
        new_call = asyncio.create_task(calls.open_call(uniqueid="r.2", arrived_at=utcnow(), routed_by="agi"))
        await asyncio.sleep(0.5)
        assert not event.done() and not new_call.done(), "writes should be waiting for the database"

        await asyncio.to_thread(own_postgres.resume)
        assert await asyncio.wait_for(event, 30) == call_id
        await asyncio.wait_for(new_call, 30)

        assert [(e.kind, e.data) for e in await calls.timeline(call_id)] == [("hold", {"n": 1})]
        assert await _count_calls(store, "r.2") == 1
    finally:
        await store.close()


@pytest.mark.postgres
async def test_postgres_writes_ride_out_a_restart(own_postgres: ThrowawayPostgres) -> None:
    store = Store.from_url(own_postgres.url, retry_for=30.0)
    calls = Calls(store)
    try:
        await store.upgrade()
        call_id = await calls.open_call(uniqueid="s.1", arrived_at=utcnow(), routed_by="agi")
        await asyncio.gather(*(calls.caller_history(NUMBER) for _ in range(5)))  # several pooled connections

        async def writer(lane: int) -> None:
            for i in range(15):
                await calls.record_event("s.1", f"e{lane}.{i:02d}", source="ami")
                await asyncio.sleep(0.02)

        async def restart() -> None:
            await asyncio.sleep(0.1)
            await asyncio.to_thread(own_postgres.restart)

        await asyncio.wait_for(asyncio.gather(writer(0), writer(1), writer(2), restart()), 60)
        kinds = sorted(e.kind for e in await calls.timeline(call_id))
        assert kinds == sorted(f"e{lane}.{i:02d}" for lane in range(3) for i in range(15))
    finally:
        await store.close()


# -- SQLite specifics ----------------------------------------------------------------------------


async def test_sqlite_file_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    store = Store.from_url(f"sqlite+aiosqlite:///{path}")
    calls = Calls(store)
    try:
        await store.upgrade()
        await calls.open_call(uniqueid="w.1", arrived_at=utcnow(), routed_by="agi")
        async with store.engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        await store.close()
    with sqlite3.connect(path) as raw:  # WAL is a property of the file, not just of our connections
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    raw.close()


async def test_sqlite_gone_raises_store_unavailable(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    store = Store.from_url(f"sqlite+aiosqlite:///{folder / 'callcenter.db'}", retry_for=1.0)
    calls = Calls(store)
    try:
        await store.upgrade()
        await calls.open_call(uniqueid="g.1", arrived_at=utcnow(), routed_by="agi")
        await store.engine.dispose()
        shutil.rmtree(folder)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await calls.open_call(uniqueid="g.2", arrived_at=utcnow(), routed_by="agi")
        assert 0.9 <= time.monotonic() - started < 5
        await asyncio.sleep(0.1)  # let aiosqlite's threads of the failed connects finish on this loop
    finally:
        await store.close()


async def test_flag_index_follows_writes_and_reloads(store: Store, db_url: str) -> None:
    """Routing reads abuse flags from memory: they must match the database after writes and restarts."""
    now = utcnow()
    await Calls(store).flag_number(NUMBER, "prank", at=now - timedelta(days=1))
    await Calls(store).flag_number(NUMBER, "misdial", at=now - timedelta(days=1))
    await Calls(store).flag_number(NUMBER, "hoax", at=now - timedelta(days=60))
    assert store.flags.count(NUMBER, now - timedelta(days=30)) == 1
    assert store.flags.count(NUMBER, now - timedelta(days=90)) == 2

    reopened = Store.from_url(db_url, retry_for=5.0)
    try:
        assert await Calls(reopened).load_flags(timedelta(days=30)) == 1
        assert reopened.flags.count(NUMBER, now - timedelta(days=30)) == 1
        assert reopened.flags.count(NUMBER, now - timedelta(days=90)) == 1  # older than the loaded window
    finally:
        await reopened.close()
