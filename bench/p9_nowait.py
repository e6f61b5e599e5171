#!/usr/bin/env python
"""P9: a 112 caller's wait on us after the greeting (app running / frozen / stopped), and the watchdog.

The same real Asterisk 22 and production dialplan as the tests; the app runs the way production runs
it, under a watchdog (``callcenter supervise``, the stand-in for systemd). For each state a batch of
SIPp callers dials 112 one after another; for each caller Asterisk's own ``messages.log`` gives the
millisecond times of its ``Playback(greeting)`` and ``Queue()`` steps, so

    wait after the greeting = Queue() start - greeting start - greeting length

is what the caller waited on anything after the greeting, measured by Asterisk, not by the app under
test. ``queue_log`` confirms each caller entered the queue and when. States, side by side in one run:

* **running**: the app routes every caller during the greeting (``CC_ROUTE`` set over AMI);
* **frozen**: the app and its watchdog both ``SIGSTOP``ped (so nothing replaces it during the batch);
* **stopped**: no app process at all.

Then the watchdog: ``--rounds`` times the app alone is ``SIGSTOP``ped and the time to the watchdog's
timeout, to the replacement's ``READY=1`` and to a healthy (AMI-connected) replacement is taken from
the supervisor's log.

    .venv/bin/python bench/p9_nowait.py                # 10 callers per state, 3 watchdog rounds (~3 min)
    .venv/bin/python bench/p9_nowait.py --calls 30     # more callers per state

Needs root (the chroot). No timing is asserted; a batch in which a caller failed in SIPp or never
entered the queue is reported as such.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from callcenter.dispatch.speech import wav_seconds
from callcenter.pbx.chroot import default_cache_dir, ensure_chroot
from callcenter.pbx.harness import TestPbx
from callcenter.testing import sipp
from callcenter.testing.app import AppProcess, event_time, pbx_env
from callcenter.testing.bench import bench_spec
from callcenter.testing.pbxlog import entered_queue, greeting_to_queue
from callcenter.testing.wait import until

REPO = Path(__file__).resolve().parents[1]
GREETING = "callcenter/cc-greeting"
FALLBACK_WARNING = "callcenter: no route from the app"
BOUND = 3.0


@dataclass
class Batch:
    state: str
    callers: int
    waits: list[float] = field(default_factory=list)
    in_time: int = 0
    failed: int = 0
    fallbacks: int = 0
    #: Channels still up once every caller had hung up: hangup handlers waiting in AGI() on the app.
    lingering: int = 0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def calls(pbx: TestPbx, state: str, n: int, interval: float, prefix: int, *, idle: bool = True) -> Batch:
    """``n`` callers; ``idle=False`` does not wait for the PBX to clear (a frozen app holds hangup handlers)."""
    greeting = wav_seconds(REPO / "sounds" / "cc-greeting.wav")
    mark = len(pbx.log_text())
    placed: dict[str, float] = {}
    procs = []
    for i in range(n):
        number = f"08{prefix}{i:07d}"
        placed[number] = time.time()
        procs.append(
            await sipp.caller(
                f"127.0.0.1:{pbx.spec.sip_port}", "112", caller_id=number, hold_seconds=greeting + 2, timeout=90
            )
        )
        await asyncio.sleep(interval)
    results = [await p.wait() for p in procs]
    await asyncio.sleep(1.0)
    lingering = await asyncio.to_thread(pbx.active_channels)
    if idle:
        await pbx.await_idle(timeout=60)
    log = pbx.log_text()[mark:]
    entered = entered_queue(pbx)
    batch = Batch(state, n)
    batch.waits = list(greeting_to_queue(log, GREETING, greeting).values())
    batch.in_time = sum(1 for num, t in placed.items() if num in entered and entered[num] <= t + greeting + BOUND)
    batch.failed = sum(1 for r in results if not r.ok)
    # The dialplan's own Log(WARNING, …) lines, not the verbose "Executing … Log(…)" line before each.
    batch.fallbacks = sum(1 for line in log.splitlines() if "] WARNING[" in line and FALLBACK_WARNING in line)
    batch.lingering = lingering
    return batch


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-p7-"))
    ports = {name: sipp.free_port("udp") for name in ("sip", "taker1")}
    ports.update(ami=sipp.free_port("tcp"), agi=sipp.free_port("tcp"))
    spec = bench_spec(
        sip_port=ports["sip"],
        ami_port=ports["ami"],
        agi_port=ports["agi"],
        takers=(("taker1", ports["taker1"]),),
        static_members=("taker1",),
    )
    pbx = TestPbx(spec, ensure_chroot(default_cache_dir(), progress=print), REPO)
    pbx.start()
    env = pbx_env(pbx, ports["agi"], f"sqlite+aiosqlite:///{tmp}/bench.db")
    command = ("supervise", "--watchdog-sec", str(args.watchdog_sec))
    app = AppProcess(env, tmp / "app.log", sipp.free_port("tcp"), command=command)
    taker = await sipp.answerer(ports["taker1"], answer_after=0.5, hangup_by="remote", max_calls=None, timeout=3600)
    batches: list[Batch] = []
    rounds: list[tuple[float, float, float]] = []
    try:
        await app.start()
        await app.wait_event("tracker.resynced")
        batches.append(await calls(pbx, "running", args.calls, args.interval, 10))

        assert app.proc is not None
        supervisor, app_pid = app.proc.pid, int(app.events("watchdog.ready")[-1]["pid"])
        os.kill(supervisor, signal.SIGSTOP)
        os.kill(app_pid, signal.SIGSTOP)
        try:
            batches.append(await calls(pbx, "frozen", args.calls, args.interval, 20, idle=False))
        finally:
            os.kill(app_pid, signal.SIGCONT)
            os.kill(supervisor, signal.SIGCONT)
        await pbx.await_idle(timeout=60)
        await app.stop()
        batches.append(await calls(pbx, "stopped", args.calls, args.interval, 30))

        await app.start()
        for _ in range(args.rounds):
            await app.wait_event("tracker.resynced")
            pid = int((await app.wait_event("watchdog.ready"))["pid"])
            readies = len(app.events("watchdog.ready"))
            frozen_at = time.time()
            os.kill(pid, signal.SIGSTOP)

            def replaced(before: int = readies) -> bool:
                return len(app.events("watchdog.ready")) > before

            await until(replaced, timeout=60, what="replacement")
            await until(app.healthy, timeout=30, what="replacement healthy")
            healthy_at = time.time()
            killed = event_time(app.events("watchdog.timeout")[-1]) - frozen_at
            ready = event_time(app.events("watchdog.ready")[-1]) - frozen_at
            rounds.append((killed, ready, healthy_at - frozen_at))
    finally:
        with contextlib.suppress(Exception):
            await app.stop()
        await taker.stop()
        pbx.stop()
        shutil.rmtree(pbx.host_dir, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    greeting = wav_seconds(REPO / "sounds" / "cc-greeting.wav")
    print(f"\nmachine: nproc={os.cpu_count()}, {platform.python_implementation()} {platform.python_version()}")
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"greeting {greeting:.2f} s; callers every {args.interval} s; watchdog {args.watchdog_sec} s\n")
    print(
        "| app | callers | in the queue ≤ 3 s after the greeting | wait after the greeting p50 / p95 / max | "
        "dialplan fallbacks | failed in SIPp | channels left in the hangup handler |"
    )
    print("|---|---:|---:|---|---:|---:|---:|")
    for b in batches:
        w = b.waits or [float("nan")]
        measured = f"{statistics.median(w):.3f} / {pct(w, 0.95):.3f} / {max(w):.3f} s ({len(b.waits)} measured)"
        print(f"| {b.state} | {b.callers} | {b.in_time} | {measured} | {b.fallbacks} | {b.failed} | {b.lingering} |")
    if rounds:
        killed, ready, healthy = (statistics.median(r[i] for r in rounds) for i in range(3))
        print(
            f"\nwatchdog, {len(rounds)} rounds (median): SIGSTOP -> timeout {killed:.1f} s, -> replacement READY "
            f"{ready:.1f} s, -> replacement healthy (AMI logged in) {healthy:.1f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=10, help="callers per state")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between callers")
    parser.add_argument("--rounds", type=int, default=3, help="watchdog replacements to time")
    parser.add_argument("--watchdog-sec", type=float, default=3.0, help="as WatchdogSec= in the unit")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (database, app log)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
