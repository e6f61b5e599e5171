#!/usr/bin/env python
"""P7: SIGKILL of the leading app node → the first caller routed by the survivor, and leadership moved.

The layout of docs/nodes.md on one machine: a real Asterisk 22 with the production dialplan (``TestPbx``,
instance ``bench<pid>``), one throwaway PostgreSQL, two app nodes as processes on it
(``callcenter.testing.nodes.AppNodes``, as in tests/e2e/test_nodes_chaos.py), a SIPp call-taker answering
every call, and SIPp citizens dialling 112 every ``--interval`` s for the whole run. Each trial:

1. both nodes up (healthy, AMI resynchronised) and exactly one leading (``/healthz``);
2. ``SIGKILL`` of the leader's process at t0 (wall clock);
3. **routed**: t0 → the survivor's first ``call.routed`` log line after t0, i.e. the first caller the
   survivor routed itself (``CC_ROUTE`` written over AMI; the caller still queues with defaults at the
   end of the greeting if nobody routes it). Its floor is the wait for the next arrival (``--interval``);
4. **leader**: t0 → the survivor's ``leadership.gained`` log line (the advisory lock's session is gone
   with the process; the survivor's next try takes it and waits its grace period, docs/nodes.md);
5. the killed node is started again (it comes back as a follower) for the next trial, whose leader is
   then the other node.

Log times and t0 come from the same clock (this machine's). The callers the dialplan queued with its
defaults during the run (Asterisk's "no route from the app" warning) are counted: a kill can catch a
caller whose route the dying node had not written yet.

    .venv/bin/python bench/p7_failover.py              # 10 trials (~3 min)
    .venv/bin/python bench/p7_failover.py --trials 3   # quick check

Needs root (the chroot) and PostgreSQL's server binaries. Nothing is asserted; a trial in which the
survivor did not route or lead within 60 s is reported as failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from callcenter.pbx.chroot import default_cache_dir, ensure_chroot
from callcenter.pbx.harness import TestPbx
from callcenter.testing import sipp
from callcenter.testing.app import AppProcess, event_time
from callcenter.testing.bench import bench_spec
from callcenter.testing.browser import greeting_seconds
from callcenter.testing.machine import machine_line
from callcenter.testing.nodes import AppNodes
from callcenter.testing.pbxlog import fell_back
from callcenter.testing.postgres import ThrowawayPostgres
from callcenter.testing.wait import until

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Trial:
    routed: float | None = None
    leader: float | None = None


def first_after(node: AppProcess, event: str, t0: float) -> float | None:
    """Seconds from ``t0`` to ``node``'s first ``event`` log line after it."""
    times = [event_time(e) for e in node.events(event)]
    later = [t for t in times if t >= t0]
    return min(later) - t0 if later else None


async def trial(nodes: AppNodes, timeout: float) -> Trial:
    leader = await nodes.leader(timeout=60)
    (survivor,) = nodes.others(leader)
    t0 = time.time()
    await leader.kill()
    result = Trial()

    def seen() -> bool:
        result.routed = first_after(survivor, "call.routed", t0)
        result.leader = first_after(survivor, "leadership.gained", t0)
        return result.routed is not None and result.leader is not None

    with contextlib.suppress(TimeoutError):
        await until(seen, timeout=timeout, interval=0.05)
    # Back as a follower for the next trial (the other node leads it).
    await leader.start(timeout=60)
    await leader.wait_event("tracker.resynced", timeout=60)
    return result


def spread(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{statistics.median(values):.2f} s / {max(values):.2f} s"


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-p7-"))
    ports = {name: sipp.free_port("udp") for name in ("sip", "taker1")}
    ports.update(ami=sipp.free_port("tcp"), agi=sipp.free_port("tcp"), agi2=sipp.free_port("tcp"))
    spec = bench_spec(
        sip_port=ports["sip"],
        ami_port=ports["ami"],
        agi_port=ports["agi"],
        agi_fallbacks=(f"agi://127.0.0.1:{ports['agi2']}",),
        takers=(("taker1", ports["taker1"]),),
        static_members=("taker1",),
        # One SIPp answerer takes every caller at once: the queue never backs up over the run.
        ringinuse=True,
    )
    pbx = TestPbx(spec, await asyncio.to_thread(ensure_chroot, default_cache_dir(), progress=print), REPO)
    pg = ThrowawayPostgres(dbname="bench")
    trials: list[Trial] = []
    nodes: AppNodes | None = None
    callers: sipp.SippProcess | None = None
    taker: sipp.SippProcess | None = None
    try:
        await asyncio.to_thread(pg.start)
        await pbx.astart()
        nodes = AppNodes(pbx, pg.url, tmp, [ports["agi"], ports["agi2"]])
        await nodes.start()
        taker = await sipp.answerer(ports["taker1"], answer_after=0.2, max_calls=None, timeout=3600)
        # Enough citizens for every trial, one every --interval s; stopped once the trials are done.
        count = int(args.trials * 40 / args.interval) + 20
        callers = await sipp.caller(
            f"127.0.0.1:{spec.sip_port}",
            "112",
            "081234567890",
            hold_seconds=greeting_seconds(pbx) + 2,
            calls=count,
            every=args.interval,
            # Never hold a caller back: a steady stream whatever the number of calls open.
            limit=1000,
            timeout=3600,
        )
        await until(lambda: any(n.events("call.routed") for n in nodes or []), timeout=60, what="a routed caller")
        for i in range(args.trials):
            result = await trial(nodes, args.timeout)
            trials.append(result)
            print(f"trial {i + 1}: routed {result.routed}, leader {result.leader}", flush=True)
            await asyncio.sleep(args.settle)
    finally:
        if callers is not None:
            callers.kill()
        if taker is not None:
            await taker.stop()
        if nodes is not None:
            await nodes.stop()
        fallbacks = len(fell_back(pbx))
        await pbx.astop()
        shutil.rmtree(pbx.host_dir, ignore_errors=True)
        await asyncio.to_thread(pg.stop)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    routed = [t.routed for t in trials if t.routed is not None]
    leader = [t.leader for t in trials if t.leader is not None]
    failed = sum(1 for t in trials if t.routed is None or t.leader is None)
    print(f"\nmachine: {machine_line()}")
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    summary = f"callers every {args.interval} s; {len(trials)} trials, {failed} failed"
    print(f"{summary}; dialplan fallbacks in the run: {fallbacks}\n")
    print("| trials | SIGKILL → first caller routed by the survivor, p50 / max | SIGKILL → survivor leads, p50 / max |")
    print("|---:|---|---|")
    print(f"| {len(trials)} | {spread(routed)} | {spread(leader)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between callers")
    parser.add_argument("--timeout", type=float, default=60.0, help="longest wait for the survivor per trial")
    parser.add_argument("--settle", type=float, default=2.0, help="pause between trials")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (node logs)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
