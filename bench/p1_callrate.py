"""P1: highest zero-failure call rate through the full 112 path vs a bare Asterisk dialplan.

One real Asterisk 22 (``TestPbx``, instance ``bench<pid>``, free ports), the real app as a child
process (FastAGI + AMI tracker + a fresh SQLite store in a temp dir), one SIPp call-taker that
answers every call at once (``bench/p1_taker.xml``, ``-rtp_echo``; the queue has ``--members``
static members, all pointing at that one answerer, with ``ringinuse=yes`` so a member can take
several concurrent calls), and, per step, one SIPp
caller (``tests/sipp/uac_112.xml`` with a distinct caller number per call) at a fixed rate.

For each rate of the ladder the two paths run back to back with identical pacing and identical
caller behaviour (the caller hangs up ``--hold`` s after Asterisk's answer on both):

* **bare**: dials ``bare<N>`` (Answer, Wait(N), Hangup with N > hold), nothing else;
* **full**: dials 112: greeting (the app routes from AMI meanwhile), MixMonitor, Queue, call-taker answers;
* **noapp** (``--paths``, on by default): the same 112 dialplan with the app stopped — no route arrives by
  the end of the greeting, the dialplan queues with defaults — i.e. what Asterisk costs without us, so that
  full / noapp is our app's own share of the capacity.

A step passes when the SIPp caller reports every call successful and none failed and no channel
is left up afterwards; a full step must also have every call recorded by the app with
``routed_by='app'`` and an answer time, i.e. answered by a call-taker per the app's database (which
is also where "reached taker" comes from: the taker answers rings that app_queue then cancels,
which is normal for a queue, so its own counts are only reported). A noapp step must have every
call in the fallback (Asterisk's "no route from the app" warning) and answered per Asterisk's
queue_log (CONNECT). The highest passing rate of each path (below its first failure) gives
ratio = full / bare (the target) and full / noapp (the app's own cost).

    .venv/bin/python bench/p1_callrate.py                 # default ladder 4..25 calls/s, three paths, ~15 min
    .venv/bin/python bench/p1_callrate.py --rates 2,4 --duration 10   # quick check
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import wave
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from callcenter.pbx.chroot import default_cache_dir, ensure_chroot
from callcenter.pbx.harness import TestPbx
from callcenter.testing.app import AppProcess, pbx_env
from callcenter.testing.bench import bench_sipp, bench_spec, kill_now, run_bench
from callcenter.testing.machine import machine_line
from callcenter.testing.sipp import SippProcess, SippResult, free_port

REPO = Path(__file__).resolve().parents[1]
UAC_TEMPLATE = REPO / "tests" / "sipp" / "uac_112.xml"
TAKER_SCENARIO = Path(__file__).resolve().parent / "p1_taker.xml"
TICKS = os.sysconf("SC_CLK_TCK")
#: bare Answer/Wait/Hangup; the 112 path with the app; the 112 path with the app stopped (fallback).
PATHS = ("bare", "full", "noapp")


# -- small helpers ---------------------------------------------------------------------------------
def greeting_seconds() -> float:
    with wave.open(str(REPO / "sounds" / "cc-greeting.wav")) as w:
        return float(w.getnframes()) / float(w.getframerate())


def free_udp_port(taken: set[int]) -> int:
    while True:
        p = free_port("udp")
        if p not in taken:
            taken.add(p)
            return p


def proc_ticks(pid: int | None) -> int | None:
    """utime + stime of a whole process (all threads), in clock ticks."""
    if pid is None:
        return None
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]
    total = sum(parts[:8])
    return total - idle, total


class CpuSampler:
    """Cumulative CPU ticks of named processes, sampled every 0.5 s (SIPp exits before we ask)."""

    def __init__(self) -> None:
        self.pids: dict[str, int | None] = {}
        self.last: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def track(self, name: str, pid: int | None) -> None:
        self.pids[name] = pid
        self.last.pop(name, None)
        self.sample()

    def sample(self) -> None:
        for name, pid in self.pids.items():
            t = proc_ticks(pid)
            if t is not None:
                self.last[name] = t

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.5)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _spread(values: list[float], digits: int) -> str:
    """p50 / p95 / max of sorted ``values``."""
    if not values:
        return "—"
    p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
    return f"{values[len(values) // 2]:.{digits}f} / {p95:.{digits}f} / {values[-1]:.{digits}f}"


@dataclass
class StepResult:
    path: str
    rate: float
    calls: int
    caller: SippResult | None = None
    taker: SippResult | None = None
    app_total: int = 0
    app_agi: int = 0
    app_answered: int = 0
    fallback_warnings: int = 0
    #: Callers answered by a queue member per Asterisk's own queue_log (CONNECT lines).
    qlog_connects: int = 0
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    ast_warnings: Counter[str] = field(default_factory=Counter)
    app_warnings: Counter[str] = field(default_factory=Counter)
    stuck_channels: int = 0
    top: str = ""
    queue_delays: list[float] = field(default_factory=list)
    write_lags: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def caller_ok(self) -> int:
        return self.caller.successful if self.caller else 0

    @property
    def caller_failed(self) -> int:
        # Calls SIPp never placed (global timeout) count as failed too.
        if self.caller is None:
            return self.calls
        return self.caller.failed + max(0, self.calls - self.caller.successful - self.caller.failed)

    def delay_summary(self) -> str:
        return _spread(self.queue_delays, 1)

    def write_lag_summary(self) -> str:
        return _spread(self.write_lags, 2)

    @property
    def passed(self) -> bool:
        """Every caller successful, nothing left up, and on the full path every call answered per the app's DB.

        Not the taker's own counts: a ring that app_queue cancels (it moved on, or the CANCEL crossed the
        answer) is no failed call, and whether a caller reached a call-taker is what the database says.
        """
        ok = self.caller is not None and self.caller.returncode == 0 and self.caller_failed == 0
        ok = ok and self.caller_ok == self.calls and self.stuck_channels == 0
        if self.path == "full":
            ok = ok and self.app_agi == self.calls and self.app_answered == self.calls
        elif self.path == "noapp":
            ok = ok and self.fallback_warnings == self.calls and self.qlog_connects == self.calls
        return ok

    def taker_summary(self) -> str:
        """The SIPp taker's legs: INVITEs received, and (if any) those it counted as failed."""
        t = self.taker
        if t is None:
            return "—"
        return f"{t.incoming}" + (f" ({t.failed} failed)" if t.failed else "")


# -- the bench -----------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.greeting = greeting_seconds()
        self.hold = args.hold if args.hold else round(self.greeting + args.answer_margin + args.talk, 1)
        self.bare_wait = math.ceil(self.hold) + 5
        taken: set[int] = set()
        self.sip_port = free_udp_port(taken)
        self.taker_port = free_udp_port(taken)
        self.ami_port = free_port("tcp")
        self.agi_port = free_port("tcp")
        self.web_port = free_port("tcp")
        self.spec = bench_spec(
            sip_port=self.sip_port,
            ami_port=self.ami_port,
            agi_port=self.agi_port,
            queue_timeout=30,
            overflow_dial="",
            # N queue members, all the same SIPp answerer: with ONE member app_queue rings one waiting
            # caller at a time (autofill counts available members) and the others re-check only once a
            # second, so a backlog snowballs; production has many takers, and so does the bench.
            takers=tuple((f"taker{i}", self.taker_port) for i in range(1, args.members + 1)),
            static_members=tuple(f"taker{i}" for i in range(1, args.members + 1)),
            ringinuse=True,
            # 4000 ports = 2000 channels; the derived 200-port window would cap us at ~100 channels.
            rtp_start=22000,
            rtp_end=25999,
            # The test PBX's default cap (500 channels) ended the full path's ladder at 55/s last time:
            # raised here so that what ends a ladder is the machine, not a safety limit.
            maxcalls=args.maxcalls,
        )
        self.db_path = workdir / "callcenter.db"
        self.pbx: TestPbx | None = None
        self.app: AppProcess | None = None
        self.sipps: list[SippProcess] = []
        self.cpu = CpuSampler()
        self.caller_seq = 0
        self.uac_scenario = workdir / "p1_uac.xml"
        # The production caller scenario, with a distinct caller number per call (injection file).
        self.uac_scenario.write_text(UAC_TEMPLATE.read_text().replace("[caller_id]", "[field0]"))

    # -- lifecycle
    async def start(self) -> None:
        chroot = ensure_chroot(default_cache_dir())
        self.pbx = TestPbx(self.spec, chroot, REPO)
        await self.pbx.astart()
        env = pbx_env(self.pbx, self.agi_port, f"sqlite+aiosqlite:///{self.db_path}")
        self.app = AppProcess(env, self.workdir / "app.log", self.web_port)
        await self.app.start()
        with contextlib.suppress(TimeoutError):
            await self.app.wait_event("tracker.resynced", timeout=10)
        self.cpu.start()
        self.cpu.track("asterisk", self.pbx.pid)
        self.cpu.track("app", self.app.proc.pid if self.app.proc else None)

    async def close(self) -> None:
        await self.cpu.stop()
        for s in self.sipps:
            with contextlib.suppress(Exception):
                await s.stop(grace=2)
        if self.app is not None:
            with contextlib.suppress(Exception):
                await self.app.stop()
        if self.pbx is not None:
            with contextlib.suppress(Exception):
                await self.pbx.astop()
            shutil.rmtree(self.pbx.host_dir, ignore_errors=True)

    def kill_all(self) -> None:
        """Synchronous last resort (atexit)."""
        kill_now(self.sipps, self.app, self.pbx)

    # -- SIPp
    async def _sipp(self, name: str, args: list[str], port: int) -> SippProcess:
        proc = await bench_sipp(name, args, self.workdir, port)
        self.sipps.append(proc)
        return proc

    async def start_taker(self, timeout: float) -> SippProcess:
        args = ["-sf", str(TAKER_SCENARIO), "-rtp_echo", "-timeout", f"{round(timeout)}s"]
        return await self._sipp("taker", args, self.taker_port)

    async def start_caller(self, service: str, rate: float, calls: int, timeout: float) -> SippProcess:
        inf = self.workdir / f"callers-{self.caller_seq}.csv"
        lines = ["SEQUENTIAL"] + [f"0812{(self.caller_seq + i) % 10**8:08d};" for i in range(calls)]
        inf.write_text("\n".join(lines) + "\n")
        self.caller_seq += calls
        target = f"127.0.0.1:{self.sip_port}"
        args = [target, "-sf", str(self.uac_scenario), "-s", service, "-inf", str(inf)]
        args += ["-set", "hold_ms", str(round(self.hold * 1000))]
        args += ["-r", f"{rate:g}", "-rp", "1000", "-m", str(calls), "-l", str(self.args.limit)]
        args += ["-timeout", f"{round(timeout)}s"]
        return await self._sipp("caller", args, free_port("udp"))

    # -- observation
    def db_counts(self) -> tuple[int, int, int]:
        if not self.db_path.exists():
            return 0, 0, 0
        with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)) as db:
            row = db.execute(
                "SELECT count(*), coalesce(sum(routed_by = 'app'), 0), "
                "coalesce(sum(answered_at IS NOT NULL), 0) FROM calls"
            ).fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    def max_rowid(self) -> int:
        if not self.db_path.exists():
            return 0
        with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)) as db:
            return int(db.execute("SELECT coalesce(max(rowid), 0) FROM calls").fetchone()[0])

    def queue_delays(self, after_rowid: int) -> list[float]:
        """Per call: arrival (dialplan ${EPOCH}, whole seconds) to ``queued_at``, in s.

        ``queued_at`` is stamped by the app when its AMI tracker *processes* QueueCallerJoin, so
        beyond the greeting (+ AGI) this is the app's event-processing lag, not call-path latency
        (the caller's own timing is SIPp's: a call that reached the taker late would fail).
        """
        with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)) as db:
            rows = db.execute(
                "SELECT arrived_at, queued_at FROM calls WHERE rowid > ? AND queued_at IS NOT NULL", (after_rowid,)
            ).fetchall()
        return sorted(
            (datetime.fromisoformat(q) - datetime.fromisoformat(a)).total_seconds() for a, q in rows if a and q
        )

    def write_lags(self, after_rowid: int, log_index: int) -> list[float]:
        """Per call: ``queued_at`` to the moment its ``queued`` entry was committed, in s.

        The tracker stamps ``queued_at`` when it handles QueueCallerJoin and writes the timeline in
        batches behind it; ``call.queued`` is logged once that batch has committed. So this is how far
        the database runs behind the tracker's live picture (with one write per event it was ~0).
        """
        assert self.app is not None
        committed: dict[str, datetime] = {}
        for entry in self.app.log_lines()[log_index:]:
            if entry.get("event") == "call.queued" and entry.get("call_id") and entry.get("timestamp"):
                with contextlib.suppress(ValueError):
                    committed.setdefault(str(entry["call_id"]), datetime.fromisoformat(str(entry["timestamp"])))
        with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)) as db:
            rows = db.execute(
                "SELECT id, queued_at FROM calls WHERE rowid > ? AND queued_at IS NOT NULL", (after_rowid,)
            ).fetchall()
        lags = []
        for call_id, queued_at in rows:
            at = committed.get(call_id)
            if at is not None and queued_at:
                queued = datetime.fromisoformat(queued_at)
                queued = queued if queued.tzinfo else queued.replace(tzinfo=UTC)
                lags.append((at - queued).total_seconds())
        return sorted(lags)

    @property
    def queue_log(self) -> Path:
        assert self.pbx is not None
        return self.pbx.host_dir / "log" / "queue_log"

    def qlog_size(self) -> int:
        try:
            return self.queue_log.stat().st_size
        except FileNotFoundError:
            return 0

    def qlog_connects_since(self, offset: int) -> int:
        """CONNECT lines (``epoch|uniqueid|queue|member|CONNECT|holdtime|…``) app_queue wrote since ``offset``."""
        try:
            with self.queue_log.open("rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except FileNotFoundError:
            return 0
        return sum(1 for line in text.splitlines() if line.split("|")[4:5] == ["CONNECT"])

    async def stop_app(self) -> None:
        assert self.app is not None
        await self.app.stop()
        self.cpu.pids.pop("app", None)

    async def start_app(self) -> None:
        assert self.app is not None
        await self.app.start()
        with contextlib.suppress(TimeoutError):
            await self.app.wait_event("tracker.resynced", timeout=10)
        self.cpu.track("app", self.app.proc.pid if self.app.proc else None)

    def ast_log_size(self) -> int:
        assert self.pbx is not None
        try:
            return self.pbx.log_file.stat().st_size
        except FileNotFoundError:
            return 0

    def ast_warning_count_since(self, offset: int, needle: str) -> int:
        """WARNING lines of the Asterisk log since ``offset`` that contain ``needle`` (the dialplan's own
        ``Log(WARNING, …)``; the verbose "Executing … Log(…)" line that precedes it is not counted)."""
        assert self.pbx is not None
        try:
            with self.pbx.log_file.open("rb") as f:
                f.seek(offset)
                return sum(1 for line in f if b"] WARNING[" in line and needle.encode() in line)
        except FileNotFoundError:
            return 0

    def ast_warnings_since(self, offset: int) -> Counter[str]:
        assert self.pbx is not None
        try:
            with self.pbx.log_file.open("rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except FileNotFoundError:
            return Counter()
        out: Counter[str] = Counter()
        for line in text.splitlines():
            m = re.search(r"\b(WARNING|ERROR)\[\d+\](?:\[[^\]]*\])?\s+(\S+):\s*(.*)", line)
            if m:
                msg = re.sub(r"[0-9]+(\.[0-9]+)?", "#", m.group(3))[:110]
                out[f"{m.group(1)} {m.group(2)}: {msg}"] += 1
        return out

    def app_warnings_since(self, index: int) -> tuple[Counter[str], int]:
        assert self.app is not None
        lines = self.app.log_lines()
        out: Counter[str] = Counter()
        for e in lines[index:]:
            level = str(e.get("level", e.get("levelname", ""))).lower()
            if level in ("warning", "error", "critical"):
                out[f"{level} {e.get('event', '?')}"] += 1
        return out, len(lines)

    async def top_snapshot(self) -> str:
        proc = await asyncio.create_subprocess_exec(
            "top", "-b", "-n1", "-w", "150", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        out, _ = await proc.communicate()
        return "\n".join(out.decode(errors="replace").splitlines()[:18])

    # -- one step
    async def step(self, path: str, rate: float) -> StepResult:
        assert self.pbx is not None and self.app is not None
        calls = max(1, round(rate * self.args.duration))
        res = StepResult(path, rate, calls)
        await self.pbx.await_idle(timeout=60)
        service = f"bare{self.bare_wait}" if path == "bare" else "112"
        budget = calls / rate + self.hold + 40
        db0 = self.db_counts()
        rowid0 = self.max_rowid()
        log0 = self.ast_log_size()
        qlog0 = self.qlog_size()
        _, app_idx = self.app_warnings_since(0)
        if path == "noapp":
            await self.stop_app()
        try:
            return await self._step(res, path, service, rate, calls, budget, db0, rowid0, log0, qlog0, app_idx)
        finally:
            if path == "noapp":
                await self.start_app()

    async def _step(
        self,
        res: StepResult,
        path: str,
        service: str,
        rate: float,
        calls: int,
        budget: float,
        db0: tuple[int, int, int],
        rowid0: int,
        log0: int,
        qlog0: int,
        app_idx: int,
    ) -> StepResult:
        assert self.pbx is not None and self.app is not None
        taker = await self.start_taker(budget + 30) if path != "bare" else None
        if taker is not None:
            await asyncio.sleep(0.3)  # let the UAS bind before the first INVITE
            self.cpu.track("sipp-taker", taker.pid)
        mach0 = machine_ticks()
        self.cpu.sample()
        base = {k: v for k, v in self.cpu.last.items() if k in self.cpu.pids and k in ("asterisk", "app")}
        t0 = time.monotonic()
        caller = await self.start_caller(service, rate, calls, budget)
        self.cpu.track("sipp-caller", caller.pid)

        async def snap() -> None:
            await asyncio.sleep(min(calls / rate, self.args.duration) * 0.75)
            res.top = await self.top_snapshot()

        snap_task = asyncio.create_task(snap())
        res.caller = await caller.wait(timeout=budget + 10)
        res.wall = time.monotonic() - t0
        self.cpu.sample()
        mach1 = machine_ticks()
        snap_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await snap_task
        elapsed_ticks = max(1, mach1[1] - mach0[1]) / (os.cpu_count() or 1)
        for name in ("asterisk", "app", "sipp-caller", "sipp-taker"):
            if name in self.cpu.last and (name in base or name.startswith("sipp-")):
                used = self.cpu.last[name] - base.get(name, 0)
                if name == "sipp-taker" and taker is None:
                    continue
                res.cpu[name] = 100.0 * used / elapsed_ticks
        res.cpu["machine"] = 100.0 * (mach1[0] - mach0[0]) / elapsed_ticks
        # Everything else on the machine during the step (kernel softirq for loopback UDP included).
        res.cpu["other"] = max(0.0, res.cpu["machine"] - sum(v for k, v in res.cpu.items() if k != "machine"))
        try:
            await self.pbx.await_idle(timeout=30)
        except Exception:
            res.stuck_channels = self.pbx.active_channels()
            res.note = f"{res.stuck_channels} channels still up 30 s after the last call; hung up"
            with contextlib.suppress(Exception):
                await self.pbx.acli("channel request hangup all")
                await self.pbx.await_idle(timeout=30)
        if taker is not None:
            await asyncio.sleep(1.5)  # the taker's last BYE/200 and one stat dump
            res.taker = await taker.stop()
            self.cpu.pids.pop("sipp-taker", None)
            # The app writes from AMI/AGI-hangup events: give it a moment to catch up.
            deadline = time.monotonic() + (20 if path == "full" else 0)
            last, stable_since = None, time.monotonic()
            while time.monotonic() < deadline:
                counts = self.db_counts()
                if counts[1] - db0[1] >= calls and counts[2] - db0[2] >= calls:
                    break
                if counts != last:
                    last, stable_since = counts, time.monotonic()
                elif time.monotonic() - stable_since > 5:
                    break
                await asyncio.sleep(0.5)
        self.cpu.pids.pop("sipp-caller", None)
        db1 = self.db_counts()
        res.app_total, res.app_agi, res.app_answered = (db1[i] - db0[i] for i in range(3))
        if path == "full":
            res.queue_delays = self.queue_delays(rowid0)
            res.write_lags = self.write_lags(rowid0, app_idx)
        res.ast_warnings = self.ast_warnings_since(log0)
        res.fallback_warnings = self.ast_warning_count_since(log0, "callcenter: no route from the app")
        res.qlog_connects = self.qlog_connects_since(qlog0)
        if path != "noapp":
            res.app_warnings, _ = self.app_warnings_since(app_idx)
        for s in (caller, taker):
            if s is not None and s in self.sipps:
                self.sipps.remove(s)
        return res


# -- reporting -----------------------------------------------------------------------------------
def fmt_cpu(r: StepResult | None) -> str:
    if r is None or not r.cpu:
        return "—"
    short = {
        "asterisk": "ast",
        "app": "app",
        "sipp-caller": "uac",
        "sipp-taker": "uas",
        "machine": "all",
        "other": "rest",
    }
    return " ".join(f"{short[k]} {v:.0f}" for k, v in r.cpu.items())


Row = tuple[float, dict[str, StepResult]]


def table(rows: list[Row]) -> str:
    out = [
        "| rate (calls/s) | calls | bare ok / failed | full ok / failed | full: reached taker (app DB) | "
        "full: taker INVITEs | full: app recorded (routed / answered) | "
        "full: app lag arrival→queued_at p50 / p95 / max (s) | full: DB behind queued_at p50 / p95 / max (s) | "
        "noapp ok / failed | noapp: fallbacks / reached taker (queue_log) | "
        "bare | full | noapp | CPU % bare (of 200) | CPU % full (of 200) | CPU % noapp (of 200) |",
        "|---:|---:|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rate, got in rows:
        bare, full, noapp = got.get("bare"), got.get("full"), got.get("noapp")
        calls = next((r.calls for r in got.values()), 0)

        def ok(r: StepResult | None) -> str:
            return f"{r.caller_ok} / {r.caller_failed}" if r else "—"

        def verdict(r: StepResult | None) -> str:
            return ("pass" if r.passed else "**FAIL**") if r else "—"

        reached = f"{full.app_answered}" if full else "—"
        taker = full.taker_summary() if full else "—"
        app = f"{full.app_agi} / {full.app_answered}" if full else "—"
        delay = full.delay_summary() if full else "—"
        behind = full.write_lag_summary() if full else "—"
        fallback = f"{noapp.fallback_warnings} / {noapp.qlog_connects}" if noapp else "—"
        out.append(
            f"| {rate:g} | {calls} | {ok(bare)} | {ok(full)} | {reached} | {taker} | {app} | {delay} | {behind} "
            f"| {ok(noapp)} | {fallback} | {verdict(bare)} | {verdict(full)} | {verdict(noapp)} "
            f"| {fmt_cpu(bare)} | {fmt_cpu(full)} | {fmt_cpu(noapp)} |"
        )
    return "\n".join(out)


def details(r: StepResult) -> str:
    lines = [f"### {r.path} @ {r.rate:g}/s: {'pass' if r.passed else 'FAIL'} (wall {r.wall:.1f} s) {r.note}"]
    if r.caller:
        lines.append(
            f"caller sipp rc={r.caller.returncode} ok={r.caller.successful} failed={r.caller.failed} "
            f"outgoing={r.caller.outgoing}"
        )
        if r.caller.errors.strip():
            lines.append("caller errors (tail): " + " | ".join(r.caller.errors.strip().splitlines()[-3:])[:400])
    if r.taker:
        lines.append(
            f"taker sipp rc={r.taker.returncode} incoming={r.taker.incoming} "
            f"ok={r.taker.successful} failed={r.taker.failed} (answered and cancelled rings both end ok)"
        )
        if r.taker.errors.strip():
            lines.append("taker errors (tail): " + " | ".join(r.taker.errors.strip().splitlines()[-3:])[:400])
    if r.path == "noapp":
        lines.append(
            f"app stopped: Asterisk 'no route from the app' fallbacks={r.fallback_warnings}; "
            f"answered by a member per queue_log (CONNECT)={r.qlog_connects}"
        )
    if r.path == "full":
        lines.append(
            f"queue_log CONNECT={r.qlog_connects}; "
            f"app: calls={r.app_total} routed_by=app={r.app_agi} answered (reached taker)={r.app_answered}; "
            f"Asterisk 'no route from the app' fallbacks={r.fallback_warnings}; "
            f"app-seen arrival→queued_at p50/p95/max {r.delay_summary()} s (incl. greeting); "
            f"queued entry committed after queued_at p50/p95/max {r.write_lag_summary()} s"
        )
    for k, n in r.ast_warnings.most_common(4):
        lines.append(f"asterisk log x{n}: {k}")
    for k, n in r.app_warnings.most_common(4):
        lines.append(f"app log x{n}: {k}")
    return "\n".join(lines)


def other_load(workdir: Path) -> str:
    """Other Asterisk/SIPp/pytest/bench processes on the machine (noise for this run)."""
    try:
        cmd = ["pgrep", "-af", "asterisk|sipp|pytest|bench/"]
        out = subprocess.run(cmd, check=False, capture_output=True, text=True).stdout
    except OSError:
        return "?"
    me = f"cc-bench{os.getpid()}"
    mine = {str(os.getpid())}
    others = [
        line
        for line in out.splitlines()
        if me not in line
        and line.split(" ", 1)[0] not in mine
        and "pgrep" not in line
        and "p1_callrate" not in line
        and str(workdir) not in line
    ]
    return "\n".join(others) if others else "(none)"


# -- main ----------------------------------------------------------------------------------------
async def run(args: argparse.Namespace, workdir: Path, bench_holder: list[Bench]) -> int:
    bench = Bench(args, workdir)
    bench_holder.append(bench)
    rates = [float(x) for x in args.rates.split(",")]
    paths = [p for p in args.paths.split(",") if p]
    if not paths or any(p not in PATHS for p in paths):
        print(f"--paths: choose from {','.join(PATHS)}", file=sys.stderr)
        return 2
    started = time.monotonic()
    print(f"# P1 call-rate benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
    print(f"machine: {machine_line()}")
    print(f"command: {' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv])}")
    print(f"other asterisk/sipp/pytest/bench processes at start: {other_load(workdir)}")
    print(
        f"caller hold {bench.hold:.1f} s after answer on both paths (greeting {bench.greeting:.2f} s + "
        f"{args.answer_margin:g} s to reach the taker + {args.talk:g} s talk); bare = Answer, Wait({bench.bare_wait}), "
        f"Hangup; {args.duration:g} s of calls per step; {args.members} queue members; workdir {workdir}",
        flush=True,
    )
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        await bench.start()
        # Warm-up: one call through each path, so a wiring error is reported as such, not as "rate 0".
        warm = [await _single(bench, path) for path in paths]
        if not all(r.passed for r in warm):
            print("warm-up call failed; the setup is broken, not the rate:")
            for r in warm:
                print(details(r))
            assert bench.pbx is not None and bench.app is not None
            print(bench.pbx.log_tail(20))
            print(bench.app.log_tail(20))
            return 2
        print("warm-up: one call through each path OK\n", flush=True)

        rows: list[Row] = []
        failed = dict.fromkeys(paths, False)
        best = dict.fromkeys(paths, 0.0)
        for rate in rates:
            if all(failed.values()):
                break
            est = len(paths) * (rate * args.duration / rate + bench.hold + 8)
            if time.monotonic() - started + est > args.max_minutes * 60:
                print(f"(stopping before {rate:g}/s: the run would exceed --max-minutes {args.max_minutes:g})")
                break
            got: dict[str, StepResult] = {}
            for path in paths:
                if failed[path]:
                    continue
                r = await bench.step(path, rate)
                got[path] = r
                print(details(r), flush=True)
                if r.passed:
                    best[path] = rate
                else:
                    failed[path] = True
                    if r.top:
                        print(f"top -b -n1 at 3/4 of the {path} step:\n```\n{r.top}\n```", flush=True)
                await asyncio.sleep(args.settle)
            rows.append((rate, got))

        print("\n## Result\n")
        print(table(rows))
        print()
        lower = " (never failed: a lower bound)"
        print(
            "max rate with zero failures: "
            + ", ".join(f"{path} {best[path]:g}/s{'' if failed[path] else lower}" for path in paths)
        )
        summary: dict[str, object] = {f"{path}_max": best[path] for path in paths}
        bare_max, full_max = best.get("bare", 0.0), best.get("full", 0.0)
        ratio = (full_max / bare_max) if bare_max else float("nan")
        summary["ratio"] = ratio
        if "bare" in paths and "full" in paths:
            print(f"P1 ratio full/bare {bounded(ratio, failed['full'], failed['bare'])}", end="")
            if failed["bare"] or (failed["full"] and ratio < 0.95):
                print(f" (target >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'})")
            else:
                print(" (target >= 0.95: not decided — extend --rates until the bare path fails)")
        if "noapp" in paths and "full" in paths and best["noapp"]:
            own = full_max / best["noapp"]
            summary["ratio_full_noapp"] = own
            print(
                "app's own cost: full (app running) / noapp (same dialplan, app stopped) "
                + bounded(own, failed["full"], failed["noapp"])
            )
        print(f"machine: {machine_line()}")
        print(
            f"run time {(time.monotonic() - started) / 60:.1f} min; "
            f"other asterisk/sipp/pytest/bench processes at end: {other_load(workdir)}"
        )
        summary["rates"] = rates
        (workdir / "summary.json").write_text(json.dumps(summary))
        return 0
    finally:
        await bench.close()


def bounded(ratio: float, num_failed: bool, den_failed: bool) -> str:
    """A ratio of two highest-passing rates is exact only when both paths failed at the next rate: a path
    that never failed has a lower bound for its maximum."""
    if num_failed and den_failed:
        return f"= {ratio:.2f}"
    if num_failed:
        return f"<= {ratio:.2f} (the denominator never failed)"
    if den_failed:
        return f">= {ratio:.2f} (the numerator never failed)"
    return f"~ {ratio:.2f} (neither failed: undetermined)"


async def _single(bench: Bench, path: str) -> StepResult:
    saved = bench.args.duration
    bench.args.duration = 1.0
    try:
        return await bench.step(path, 1.0)
    finally:
        bench.args.duration = saved


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="4,8,12,15,18,20,22,25", help="calls/s ladder (default %(default)s)")
    ap.add_argument(
        "--duration", type=float, default=20.0, help="seconds of call starts per step (calls = rate x this)"
    )
    ap.add_argument("--talk", type=float, default=2.0, help="seconds of talk with the call-taker (default %(default)s)")
    ap.add_argument("--answer-margin", type=float, default=1.5, help="s allowed from greeting end to taker answer")
    ap.add_argument("--hold", type=float, default=0.0, help="override the caller hold time (s after answer)")
    ap.add_argument("--members", type=int, default=40, help="queue members (endpoints on one SIPp answerer)")
    ap.add_argument("--limit", type=int, default=450, help="SIPp -l: max simultaneous calls of the caller")
    ap.add_argument("--settle", type=float, default=2.0, help="pause between steps (s)")
    ap.add_argument("--max-minutes", type=float, default=20.0, help="do not start a rate that would end past this")
    ap.add_argument(
        "--paths", default=",".join(PATHS), help="paths run at each rate, in this order (default %(default)s)"
    )
    ap.add_argument("--maxcalls", type=int, default=3000, help="the PBX's maxcalls (channels; default %(default)s)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (DB, app log, SIPp logs)")
    args = ap.parse_args()
    return run_bench("p1-callrate-", args.keep, functools.partial(run, args))


if __name__ == "__main__":
    socket.setdefaulttimeout(10)
    sys.exit(main())
