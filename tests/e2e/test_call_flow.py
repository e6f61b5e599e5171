"""End-to-end: real Asterisk 22, real SIPp citizens and call-takers, the real app as a child process.

Each test follows one 112 call and checks what the database says about it, and that the caller
reached a human whatever happened to our server on the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import wave
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from callcenter.pbx.harness import TestPbx
from callcenter.store import Calls, Store, utcnow
from callcenter.store.models import Call
from callcenter.testing import sipp
from callcenter.testing.app import AppProcess, pbx_env
from callcenter.testing.wait import until

pytestmark = pytest.mark.pbx

CALLER = "081234567890"
#: The dialplan's warning when it queues a caller with its defaults (no route from the app in time).
FALLBACK_WARNING = "callcenter: no route from the app"
CALLER_E164 = "+6281234567890"


def target(pbx: TestPbx) -> str:
    return f"127.0.0.1:{pbx.spec.sip_port}"


def taker_port(pbx: TestPbx) -> int:
    return dict(pbx.spec.takers)["taker1"]


def app_env(pbx: TestPbx, ports: dict[str, int], url: str) -> dict[str, str]:
    return {
        **pbx_env(pbx, ports["agi"], url),
        "CALLCENTER_QUEUE_FLAGS_REFRESH": "0.5",
    }


@pytest.fixture
async def app(pbx: TestPbx, pbx_ports: dict[str, int], db_url: str, tmp_path: Path) -> AsyncIterator[AppProcess]:
    await pbx.await_idle(timeout=30)
    proc = AppProcess(app_env(pbx, pbx_ports, db_url), tmp_path / "app.log", sipp.free_port("tcp"))
    await proc.start()
    yield proc
    await proc.stop()


async def the_call(store: Store, *, status: Sequence[str], timeout: float = 30.0) -> Call:
    """The one call in the database, once it reached one of ``status``."""
    found: list[Call] = []

    async def reached() -> bool:
        calls = await Calls(store).recent_calls()
        found[:] = calls
        return len(calls) == 1 and calls[0].status in status

    try:
        await until(reached, timeout=timeout, what=f"call status in {status}")
    except TimeoutError:
        timelines = [[(e.kind, e.data) for e in await Calls(store).timeline(c.id)] for c in found]
        raise AssertionError(f"calls: {[(c.uniqueid, c.status) for c in found]} {timelines}") from None
    return found[0]


async def kinds(store: Store, call: Call) -> list[str]:
    calls = Calls(store)
    return [e.kind for e in await calls.timeline(call.id)]


async def has_kind(store: Store, call: Call, kind: str) -> bool:
    return kind in await kinds(store, call)


def wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return float(w.getnframes()) / float(w.getframerate())


def greeting_seconds(pbx: TestPbx) -> float:
    return wav_seconds(pbx.repo_root / "sounds" / "cc-greeting.wav")


def in_order(seen: list[str], expected: list[str]) -> bool:
    it = iter(seen)
    return all(kind in it for kind in expected)


async def answered_call(pbx: TestPbx, caller_id: str = CALLER, hold: float = 3.0) -> sipp.SippResult:
    """A citizen calls 112; taker1's softphone answers; the citizen hangs up ``hold`` s into the talk.

    SIPp counts its hold from Asterisk's answer, which comes before the greeting and the queue.
    """
    taker = await sipp.answerer(taker_port(pbx), answer_after=0.5, hangup_by="remote", max_calls=None)
    on_line = greeting_seconds(pbx) + 2.0 + hold
    try:
        call = await sipp.caller(target(pbx), "112", caller_id=caller_id, hold_seconds=on_line, timeout=60)
        res = await call.wait()
        assert res.ok, (res.errors, pbx.log_tail())
        await pbx.await_idle()
    finally:
        taker_res = await taker.stop()
    return taker_res


@pytest.mark.parametrize("db_url", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
async def test_answered_call_timeline(app: AppProcess, store: Store, pbx: TestPbx) -> None:
    taker = await answered_call(pbx, hold=3.0)
    assert taker.incoming == 1 and taker.successful == 1, (taker.errors, pbx.log_tail(), app.log_tail())

    call = await the_call(store, status=["completed"])
    # The hangup handler's report (with the recording's name) may land just after AgentComplete.
    await until(lambda: has_kind(store, call, "hangup_reported"), what="hangup reported")
    call = await the_call(store, status=["completed"])
    seen = await kinds(store, call)
    assert in_order(seen, ["arrived", "routed", "queued", "ringing", "answered", "completed"]), seen
    assert call.routed_by == "app"
    # The dialplan names the node whose CC_ROUTE it read (the routing marker, docs/nodes.md).
    (queued,) = [e for e in app.events("routing.queued") if e.get("uniqueid") == call.uniqueid]
    assert queued["ours"] and queued["routed_by"] == app.events("store.ready")[0]["node"], queued
    assert call.caller_number == CALLER_E164 and call.dialed == "112"
    assert call.answered_by == "taker1"
    assert call.wait_seconds is not None and 0 <= call.wait_seconds < 30
    assert call.talk_seconds is not None and call.talk_seconds >= 2
    assert call.hangup_by == "caller"
    assert call.queued_at is not None and call.answered_at is not None and call.queued_at <= call.answered_at
    assert call.linkedid
    assert call.recording is not None and call.recording.endswith(f"/{call.uniqueid}.wav")
    recording = pbx.host_path(call.recording)
    await until(lambda: recording.exists() and recording.stat().st_size > 1000, what=f"recording {recording}")
    # The app's log follows the call by its ids; the caller's number is in none of its lines (UU PDP).
    logged = app.log_path.read_text(errors="replace")
    assert call.id in logged
    assert CALLER[1:] not in logged, [line for line in logged.splitlines() if CALLER[1:] in line][:3]


async def test_caller_hangs_up_while_waiting(app: AppProcess, store: Store, pbx: TestPbx) -> None:
    # taker1's phone rings but nobody picks up (a ringing phone also makes Asterisk CANCEL cleanly,
    # where a dead port would leave INVITE retransmissions that a later test's phone would answer).
    await app.wait_event("tracker.resynced")
    taker = await sipp.answerer(taker_port(pbx), answer_after=60, max_calls=None, timeout=90)
    try:
        hangup_after = greeting_seconds(pbx) + 1.5
        call_proc = await sipp.early_hangup_caller(target(pbx), "112", caller_id=CALLER, hangup_after=hangup_after)
        await call_proc.wait()
        await pbx.await_idle()
    finally:
        await taker.stop()
    call = await the_call(store, status=["abandoned"])
    seen = await kinds(store, call)
    assert in_order(seen, ["arrived", "routed", "queued", "ringing", "abandoned"]), seen
    assert call.abandon_position == 1
    assert call.wait_seconds is not None and call.wait_seconds >= 0
    assert call.hangup_by == "caller"
    assert call.answered_at is None


async def test_app_stopped_call_still_reaches_call_taker(app: AppProcess, store: Store, pbx: TestPbx) -> None:
    await app.stop()
    mark = len(pbx.log_text())
    taker = await answered_call(pbx)
    assert taker.incoming == 1 and taker.successful == 1, taker.errors
    log = pbx.log_text()[mark:]
    assert FALLBACK_WARNING in log, log


async def test_app_killed_during_the_reminder_call_still_reaches_call_taker(
    app: AppProcess, store: Store, pbx: TestPbx
) -> None:
    # A repeat prankster: the app routes them during the greeting (low priority, reminder), and we kill
    # it while the dialplan plays the reminder. Nothing on the caller's way waits for the app any more.
    calls = Calls(store)
    for kind in ("prank", "hoax", "silent"):
        await calls.flag_number(CALLER_E164, kind, note="e2e", at=utcnow() - timedelta(days=1))
    # Written by another process (this test): the app's flag index picks them up on its refresh.
    await app.wait_event("store.flags_refreshed", timeout=10)
    await app.wait_event("tracker.resynced")
    mark = len(pbx.log_text())
    taker = await sipp.answerer(taker_port(pbx), answer_after=0.5, hangup_by="remote", max_calls=None)
    try:
        on_line = greeting_seconds(pbx) + wav_seconds(pbx.repo_root / "sounds" / "cc-prank-reminder.wav") + 6
        call_proc = await sipp.caller(target(pbx), "112", caller_id=CALLER, hold_seconds=on_line, timeout=60)
        routed = await app.wait_event("call.routed")
        assert routed["priority"] == 1 and routed["reminder"] is True, routed
        await until(lambda: "cc-prank-reminder" in pbx.log_text()[mark:], timeout=20, what="reminder playing")
        assert await app.kill() == -9
        res = await call_proc.wait()
        assert res.ok, (res.errors, pbx.log_tail())
        await pbx.await_idle()
    finally:
        taker_res = await taker.stop()
    assert taker_res.incoming == 1 and taker_res.successful == 1, taker_res.errors
    log = pbx.log_text()[mark:]
    # The app's decision was on the channel before the greeting ended: no fallback, reminder played.
    assert FALLBACK_WARNING not in log, log

    # The call was recorded before the kill; back up, the app closes it from Asterisk's state.
    await app.start()
    call = await the_call(store, status=["ended", "completed"])
    assert call.routed_by == "app" and call.caller_number == CALLER_E164
    assert call.queue_priority == 1  # the prankster priority was decided before the kill


async def _junk(port: int, stop: asyncio.Event) -> int:
    """Port-scanner and garbage traffic at the FastAGI port: early closes, half headers, binary junk."""
    sent = 0
    payloads = [
        b"",
        b"agi_network: yes\nagi_request: agi://",
        b"\x00\xff\x13\x37" * 64,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"agi_request agi://127.0.0.1/incoming\n\n",
        b"agi_network: yes\n" * 5000,
    ]
    while not stop.is_set():
        with contextlib.suppress(OSError):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(random.choice(payloads))
            with contextlib.suppress(OSError):
                await writer.drain()
            if random.random() < 0.5:
                writer.transport.abort()
            else:
                writer.close()
            sent += 1
        await asyncio.sleep(0.01)
    return sent


async def test_garbage_on_agi_port_does_not_touch_calls(
    app: AppProcess, store: Store, pbx: TestPbx, pbx_ports: dict[str, int]
) -> None:
    stop = asyncio.Event()
    junk = [asyncio.create_task(_junk(pbx_ports["agi"], stop)) for _ in range(4)]
    try:
        taker = await answered_call(pbx)
    finally:
        stop.set()
        sent = sum(await asyncio.gather(*junk))
    assert sent > 50
    assert taker.successful == 1, taker.errors
    call = await the_call(store, status=["completed"])
    assert call.routed_by == "app"
    assert in_order(await kinds(store, call), ["arrived", "routed", "queued", "answered", "completed"])
    assert await app.healthy()


async def test_unanswered_call_overflows_and_is_tracked(app: AppProcess, store: Store, pbx: TestPbx) -> None:
    """taker1 rings out; after the queue timeout the supervisor's line takes the call."""
    calls = Calls(store)
    assert pbx.spec.supervisor_port is not None
    taker = await sipp.answerer(taker_port(pbx), answer_after=60, max_calls=None, timeout=90)
    supervisor = await sipp.answerer(pbx.spec.supervisor_port, answer_after=0.5, hangup_by="remote", max_calls=None)
    try:
        on_line = greeting_seconds(pbx) + pbx.spec.queue_timeout + 5
        call_proc = await sipp.caller(target(pbx), "112", caller_id=CALLER, hold_seconds=on_line, timeout=60)
        res = await call_proc.wait()
        assert res.ok, (res.errors, pbx.log_tail())
        await pbx.await_idle()
    finally:
        await taker.stop()
        sup = await supervisor.stop()
    assert sup.incoming == 1 and sup.successful == 1, sup.errors
    call = await the_call(store, status=["overflow"])
    await until(lambda: has_kind(store, call, "hangup_reported"), what="hangup reported")
    seen = await kinds(store, call)
    assert in_order(seen, ["routed", "queued", "ringing", "overflow", "hangup"]), seen
    overflow = next(e for e in await calls.timeline(call.id) if e.kind == "overflow")
    assert overflow.data["queue_status"] == "TIMEOUT"
    report = next(e for e in await calls.timeline(call.id) if e.kind == "hangup_reported")
    assert report.data["dial_status"] == "ANSWER"
