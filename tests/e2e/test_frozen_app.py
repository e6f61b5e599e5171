"""End-to-end: the app frozen (SIGSTOP) while 112 calls keep arriving on the real PBX.

The app runs as production runs it: under a watchdog (here ``callcenter supervise``, the stand-in for
systemd's ``Type=notify`` + ``WatchdogSec``). Judged from Asterisk's own records (queue_log,
messages.log), not from the frozen app: every caller is in the queue at most 3 s after the greeting
ends, and the frozen process is killed and replaced by one that routes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest

from callcenter.dispatch.speech import wav_seconds
from callcenter.pbx.harness import TestPbx
from callcenter.store import Calls, Store
from callcenter.testing import sipp
from callcenter.testing.app import AppProcess, pbx_env
from callcenter.testing.pbxlog import entered_queue, greeting_to_queue
from callcenter.testing.wait import until

pytestmark = pytest.mark.pbx

#: The promise under test: a caller waits on us at most this long once the greeting has ended.
BOUND = 3.0
WATCHDOG_SEC = 2.0
FALLBACK_WARNING = "callcenter: no route from the app"
GREETING = "callcenter/cc-greeting"


def greeting_seconds(pbx: TestPbx) -> float:
    return wav_seconds(pbx.repo_root / "sounds" / "cc-greeting.wav")


async def test_frozen_app_callers_still_queue_and_the_app_is_replaced(
    pbx: TestPbx, pbx_ports: dict[str, int], tmp_path: Path
) -> None:
    await pbx.await_idle(timeout=30)
    db_url = f"sqlite+aiosqlite:///{tmp_path}/callcenter.db"
    env = pbx_env(pbx, pbx_ports["agi"], db_url)
    app = AppProcess(
        env,
        tmp_path / "app.log",
        sipp.free_port("tcp"),
        command=("supervise", "--watchdog-sec", str(WATCHDOG_SEC), "--restart-sec", "0.5"),
    )
    await app.start()
    first_pid = int((await app.wait_event("watchdog.ready"))["pid"])
    await app.wait_event("tracker.resynced")
    greeting = greeting_seconds(pbx)
    mark = len(pbx.log_text())
    taker = await sipp.answerer(
        dict(pbx.spec.takers)["taker1"], answer_after=0.5, hangup_by="remote", max_calls=None, timeout=120
    )
    placed: dict[str, float] = {}
    calls: list[sipp.SippProcess] = []
    frozen_at = 0.0  # epoch seconds, like the log's timestamps

    async def place(n: int) -> None:
        number = f"0812000{n:05d}"
        placed[number] = time.time()
        # On the line through the greeting and a few seconds of queue (answered or not), then hang up.
        calls.append(
            await sipp.caller(f"127.0.0.1:{pbx.spec.sip_port}", "112", caller_id=number, hold_seconds=greeting + 4)
        )

    try:
        for n in range(12):
            await place(n)
            if n == 1:
                # Frozen just after a caller arrived: that caller's route is never written.
                os.kill(first_pid, signal.SIGSTOP)
                frozen_at = time.time()
            await asyncio.sleep(1.5)
        # The replacement is up, connected to AMI and routing again.
        await until(lambda: len(app.events("watchdog.ready")) >= 2, timeout=30, what="replacement ready")
        await until(app.healthy, timeout=20, what="replacement healthy")
        await app.wait_event("tracker.resynced")
        await place(99)
        results = [await c.wait() for c in calls]
        await pbx.await_idle(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(first_pid, signal.SIGCONT)
        for c in calls:
            c.kill()
        await taker.stop()
        await app.stop()

    failed = [(r.failed, r.errors) for r in results if not r.ok]
    assert not failed, (failed, pbx.log_tail())
    entered = entered_queue(pbx)
    missing = sorted(set(placed) - set(entered))
    assert not missing, (missing, entered)
    # queue_log has whole seconds (rounded down), so this is never looser than the bound itself.
    late = {n: entered[n] - (placed[n] + greeting) for n in placed if entered[n] > placed[n] + greeting + BOUND}
    assert not late, late

    log = pbx.log_text()[mark:]
    waits = greeting_to_queue(log, GREETING, greeting)
    assert len(waits) == len(placed), waits
    # The freeze was real: callers in it were queued with the dialplan's defaults ...
    assert FALLBACK_WARNING in log
    # ... and the frozen process was killed by the watchdog, not merely outlived.
    timeouts = app.events("watchdog.timeout")
    assert [t["pid"] for t in timeouts] == [first_pid], timeouts
    with pytest.raises(ProcessLookupError):
        os.kill(first_pid, 0)
    readies = app.events("watchdog.ready")
    assert readies[-1]["pid"] != first_pid
    # Callers before the freeze and after the replacement were routed by the app in time; one during
    # the freeze was not, and the record does not pretend otherwise (the replacement knows it from
    # its resync of Asterisk's queue, if it was still waiting then).
    store = Store.from_url(db_url, retry_for=5)
    try:
        by_number = {c.caller_number: c for c in await Calls(store).recent_calls(100)}
        first, last = by_number["+6281200000000"], by_number["+6281200000099"]
        for call in (first, last):
            seen = [e.kind for e in await Calls(store).timeline(call.id)]
            assert call.routed_by == "app" and "routed" in seen and "fallback" not in seen, (call.uniqueid, seen)
        frozen = by_number.get("+6281200000002")
        assert frozen is None or frozen.routed_by != "app", frozen
    finally:
        await store.close()
    killed_after = _at(timeouts[0]) - frozen_at
    ready_after = _at(readies[-1]) - frozen_at
    print(
        f"\nnever-wait: {len(placed)} callers; greeting end -> Queue(): max {max(waits.values()):.3f} s, "
        f"median {sorted(waits.values())[len(waits) // 2]:.3f} s; SIGSTOP -> watchdog kill {killed_after:.1f} s, "
        f"-> replacement READY {ready_after:.1f} s"
    )


def _at(event: dict[str, object]) -> float:
    """A log line's ISO timestamp as epoch seconds."""
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()
