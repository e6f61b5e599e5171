"""The tracker writes its timeline in batches: a burst over a real AMI socket, outages, shutdown, ordering.

Transactions are counted with a SQLAlchemy hook on the engine's commits and the store's batch calls,
never by timing.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from panoramisk.message import Message
from sqlalchemy import event, func, select
from structlog.testing import capture_logs

from callcenter.config import AmiConfig
from callcenter.queue.ami import AmiClient
from callcenter.queue.resync import resync, resync_from_ami
from callcenter.queue.tracker import QueueTracker
from callcenter.store import Calls, Store, utcnow
from callcenter.store.calls import EventWrite
from callcenter.store.models import Call
from callcenter.store.pending import PendingWrites
from callcenter.testing.fake_ami import FakeAmi, block
from callcenter.testing.wait import until

CALLS = 60


def make_client(fake_ami: FakeAmi, tracker: QueueTracker) -> AmiClient:
    cfg = AmiConfig(port=fake_ami.port, username="callcenter", secret="s3cret", reconnect_min=0.05, reconnect_max=0.2)

    async def on_ready(client: AmiClient) -> None:
        await resync_from_ami(tracker, client)

    return AmiClient(cfg, on_event=tracker.handle, on_ready=on_ready)


def call_events(uniqueid: str, n: int) -> list[dict[str, str]]:
    """What Asterisk reports for one answered call: the caller's events and the call-taker leg's hangup."""
    taker = f"PJSIP/taker{n % 7}"
    caller = {"Uniqueid": uniqueid, "Linkedid": uniqueid, "CallerIDNum": f"0812{n:08d}", "Queue": "calltakers"}
    return [
        {"Event": "QueueCallerJoin", **caller, "Channel": f"PJSIP/anonymous-{n:08x}", "Position": "1", "Count": "1"},
        {"Event": "AgentCalled", **caller, "Interface": taker, "MemberName": taker},
        {"Event": "QueueCallerLeave", **caller, "Position": "1", "Count": "0"},
        {"Event": "AgentConnect", **caller, "Interface": taker, "MemberName": taker, "HoldTime": "2", "RingTime": "1"},
        {
            "Event": "AgentComplete",
            **caller,
            "Interface": taker,
            "MemberName": taker,
            "TalkTime": str(n),
            "Reason": "caller",
        },
        {"Event": "Hangup", "Uniqueid": f"taker-{uniqueid}", "Channel": f"{taker}-{n:08x}", "Cause": "16"},
        {"Event": "Hangup", **caller, "Cause": "16", "Cause-txt": "Normal Clearing"},
    ]


def message(fields: Mapping[str, str]) -> Message:
    return Message(dict(fields))


class Commits:
    """Counts the engine's commits: one per transaction, whoever runs it."""

    def __init__(self, store: Store) -> None:
        self.count = 0
        event.listen(store.engine.sync_engine, "commit", self._on_commit)

    def _on_commit(self, _conn: Any) -> None:
        self.count += 1


async def _calls(store: Store) -> int:
    async with store.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(Call))).scalar_one())


async def test_burst_of_many_calls_lands_in_few_transactions(fake_ami: FakeAmi, store: Store) -> None:
    pending = PendingWrites()
    tracker = QueueTracker(Calls(store), pending=pending)
    published: list[tuple[str, str]] = []
    tracker.subscribe(lambda kind, payload: published.append((kind, str(payload.get("uniqueid", "")))))
    uniqueids = [f"1700000100.{n}" for n in range(CALLS)]
    # Half the calls were recorded by the AGI route first, half are known only from AMI (fallback).
    agi_ids = {
        u: await tracker.calls.open_call(uniqueid=u, arrived_at=utcnow(), routed_by="agi") for u in uniqueids[::2]
    }
    client = make_client(fake_ami, tracker)
    await client.start()
    try:
        await client.wait_ready(5)
        await until(lambda: ("resync", "") in published, what="resync done")
        commits = Commits(store)
        burst = [fields for n, u in enumerate(uniqueids) for fields in call_events(u, n)]
        await fake_ami.send_raw(b"".join(block(fields) for fields in burst))
        # The caller's hangup is published once its batch is written: the last thing of each call.
        await until(lambda: sum(kind == "hangup" for kind, _ in published) == CALLS, what="every hangup written")
        transactions = commits.count
    finally:
        await client.stop()

    written = sum(1 for fields in burst if fields["Uniqueid"] in uniqueids)  # the call-takers' legs are not ours
    assert written == CALLS * 6
    assert transactions < written, f"{transactions} transactions for {written} events: not batched"
    assert await _calls(store) == CALLS  # no call row for the call-takers' legs
    for n, uniqueid in enumerate(uniqueids):
        call = await tracker.calls.call_by_uniqueid(uniqueid)
        assert call is not None
        assert [e.kind for e in await tracker.calls.timeline(call.id)] == [
            "queued",
            "ringing",
            "left_queue",
            "answered",
            "completed",
            "hangup",
        ]
        assert call.status == "completed" and call.answered_by == f"PJSIP/taker{n % 7}"
        assert call.talk_seconds == n and call.hangup_by == "caller" and call.ended_at is not None
        assert call.hangup_cause == 16
        if uniqueid in agi_ids:
            assert call.id == agi_ids[uniqueid] and call.routed_by == "agi"
        else:
            assert call.routed_by == "fallback" and call.caller_number == f"+62812{n:08d}"
    assert not tracker.live.connected and not tracker.live.waiting
    assert len(pending) == 0  # every batch resolved its calls' pending entries


async def test_batches_are_bounded_and_keep_each_calls_order(store: Store) -> None:
    tracker = QueueTracker(Calls(store), batch_size=10)
    sizes: list[int] = []
    record_events = tracker.calls.record_events

    async def counting(writes: Sequence[EventWrite]) -> list[str | None]:
        sizes.append(len(writes))
        return await record_events(writes)

    tracker.calls.record_events = counting  # type: ignore[method-assign]
    uniqueids = [f"1700000200.{n}" for n in range(12)]
    for n, uniqueid in enumerate(uniqueids):
        for fields in call_events(uniqueid, n)[:5]:
            await tracker.handle(message(fields))
    assert await tracker.flush(timeout=30)

    assert sum(sizes) == 12 * 5 and max(sizes) <= 10 and len(sizes) < 12 * 5
    for uniqueid in uniqueids:
        call = await tracker.calls.call_by_uniqueid(uniqueid)
        assert call is not None and call.status == "completed"
        events = await tracker.calls.timeline(call.id)
        assert [e.kind for e in events] == ["queued", "ringing", "left_queue", "answered", "completed"]
        assert [e.at for e in events] == sorted(e.at for e in events)


async def test_pending_writes_order_the_agi_route_and_the_tracker(store: Store) -> None:
    """The batch lands after the AGI route's first write; the hangup handler and the pop wait for the batch."""
    calls = Calls(store)
    pending = PendingWrites()
    tracker = QueueTracker(calls, pending=pending)
    gate = asyncio.Event()
    uniqueid = "1700000300.1"

    async def agi_write() -> str:
        await gate.wait()
        return await calls.open_call(uniqueid=uniqueid, arrived_at=utcnow(), routed_by="agi", call_id="agi-call-1")

    pending.track(uniqueid, asyncio.create_task(agi_write()))
    for fields in call_events(uniqueid, 1)[:4]:
        await tracker.handle(message(fields))
    batch = pending.latest(uniqueid)
    assert batch is not None, "the tracker's batch must be what later writers of this call wait for"
    assert uniqueid in tracker.live.connected  # the live picture does not wait for the database
    gate.set()
    await pending.settle(uniqueid, timeout=30)
    assert batch.done()

    call = await calls.call_by_uniqueid(uniqueid)
    assert call is not None
    assert call.id == "agi-call-1", "the tracker wrote before the AGI route's row and made its own"
    assert [e.kind for e in await calls.timeline(call.id)] == ["queued", "ringing", "left_queue", "answered"]
    assert call.status == "answered" and call.routed_by == "agi"


async def test_resync_reads_open_calls_after_buffered_writes(store: Store) -> None:
    """A call whose hangup still waits in a batch did not end unobserved."""
    calls = Calls(store)
    pending = PendingWrites()
    tracker = QueueTracker(calls, pending=pending)
    ended = "1700000400.1"
    await calls.open_call(uniqueid=ended, arrived_at=utcnow() - timedelta(minutes=5), routed_by="agi")
    await tracker.handle(message(call_events(ended, 1)[0]))
    assert await tracker.flush(timeout=30)
    # Another call's first write is slow, so the batch holding the hangup waits behind it.
    gate = asyncio.Event()
    slow = "1700000400.2"

    async def agi_write() -> str:
        await gate.wait()
        return await calls.open_call(uniqueid=slow, arrived_at=utcnow(), routed_by="agi")

    pending.track(slow, asyncio.create_task(agi_write()))
    await tracker.handle(message(call_events(slow, 2)[0]))
    await tracker.handle(message({"Event": "Hangup", "Uniqueid": ended, "Cause": "16"}))
    resyncing = asyncio.create_task(resync(tracker, [], [], [], asked_at=utcnow()))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not resyncing.done(), "resync must wait for the buffered hangup"
    gate.set()
    await asyncio.wait_for(resyncing, 30)
    assert await tracker.flush(timeout=30)

    call = await calls.call_by_uniqueid(ended)
    assert call is not None
    assert [e.kind for e in await calls.timeline(call.id)] == ["queued", "hangup"]
    assert call.status == "abandoned" and call.ended_at is not None


async def test_bad_event_does_not_take_its_batch_with_it(store: Store) -> None:
    calls = Calls(store)
    tracker = QueueTracker(calls)

    def broken(_call: Call) -> None:
        raise ValueError("bug in an update")

    with capture_logs() as logs:
        await tracker.handle(message(call_events("1700000500.1", 1)[0]))
        tracker.enqueue(EventWrite("1700000500.2", "queued", utcnow(), update=broken))
        await tracker.handle(message(call_events("1700000500.3", 3)[0]))
        assert await tracker.flush(timeout=30)

    assert {e["uniqueid"] for e in logs if e["event"] == "tracker.event_lost"} == {"1700000500.2"}
    assert await calls.call_by_uniqueid("1700000500.2") is None
    for uniqueid in ("1700000500.1", "1700000500.3"):
        call = await calls.call_by_uniqueid(uniqueid)
        assert call is not None and call.status == "queued"


async def test_outage_is_waited_out_and_nothing_is_lost(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    store = Store.from_url(f"sqlite+aiosqlite:///{folder / 'callcenter.db'}", retry_for=0.3)
    await store.upgrade()
    calls = Calls(store)
    tracker = QueueTracker(calls, outage_pause=0.05)
    try:
        uniqueid = "1700000600.1"
        events = call_events(uniqueid, 6)
        await tracker.handle(message(events[0]))
        assert await tracker.flush(timeout=30)
        await store.engine.dispose()
        away = folder.rename(tmp_path / "away")  # the database is gone: connects fail, retried, then given up
        with capture_logs() as logs:
            for fields in events[1:]:
                await tracker.handle(message(fields))
            await until(
                lambda: sum(e["event"] == "tracker.writes_delayed" for e in logs) >= 2,
                timeout=30,
                what="the batch was retried after StoreUnavailable",
            )
            assert not await tracker.flush(timeout=0)
            away.rename(folder)  # the database is back
            assert await tracker.flush(timeout=30)
        assert not [e for e in logs if e["event"] == "tracker.event_lost"]
        call = await calls.call_by_uniqueid(uniqueid)
        assert call is not None and call.status == "completed" and call.ended_at is not None
        kinds = [e.kind for e in await calls.timeline(call.id)]
        assert kinds == ["queued", "ringing", "left_queue", "answered", "completed", "hangup"]
    finally:
        if not folder.exists():
            shutil.rmtree(tmp_path / "away", ignore_errors=True)
        await asyncio.sleep(0.1)  # let aiosqlite's threads of the failed connects finish on this loop
        await store.close()


async def test_tracker_close_writes_what_it_holds(tmp_path: Path) -> None:
    """The app's shutdown closes the tracker (AMI stage) before the store: buffered events are written."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'callcenter.db'}"
    store = Store.from_url(url)
    await store.upgrade()
    tracker = QueueTracker(Calls(store))
    for fields in call_events("1700000700.1", 7):
        await tracker.handle(message(fields))
    await tracker.close()  # no flush first: closing must not lose the buffered events
    await store.close()

    reopened = Store.from_url(url)
    calls = Calls(reopened)
    try:
        call = await calls.call_by_uniqueid("1700000700.1")
        assert call is not None and call.status == "completed"
        assert len(await calls.timeline(call.id)) == 6
    finally:
        await reopened.close()


async def test_backlog_over_its_limit_goes_to_the_log_oldest_first(store: Store) -> None:
    """While nothing is written (here: no yield to the writer), the buffer stays bounded; nothing vanishes silently."""
    calls = Calls(store)
    tracker = QueueTracker(calls, backlog_limit=2)
    uniqueids = [f"1700000800.{n}" for n in range(5)]
    with capture_logs() as logs:
        for n, uniqueid in enumerate(uniqueids):
            await tracker.handle(message(call_events(uniqueid, n)[0]))
        assert await tracker.flush(timeout=30)

    lost = [e["uniqueid"] for e in logs if e["event"] == "tracker.event_lost"]
    assert lost == uniqueids[:3]
    assert all(
        e["reason"] == "backlog full" and e["kind"] == "queued" for e in logs if e["event"] == "tracker.event_lost"
    )
    for uniqueid in uniqueids[3:]:
        call = await calls.call_by_uniqueid(uniqueid)
        assert call is not None and call.status == "queued"
