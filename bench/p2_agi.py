#!/usr/bin/env python
"""P2: FastAGI ``incoming`` route latency and throughput, versus a pyst2 process AGI doing the same work.

Run:  .venv/bin/python bench/p2_agi.py            (about 1.5-2.5 minutes; see ``--help``)

Two processes on two cores. The *server* process (``--serve``, started by this script, pinned to
``--server-cpu``) runs our real ``AgiServer`` with the real ``IncomingRoute`` on a fresh temporary
SQLite store, logging JSON at INFO exactly like production (into a temp file). The *client* (this
process, pinned to ``--client-cpu``) plays N Asterisk channels over raw asyncio sockets: each one
repeatedly connects, sends an Asterisk 22 header (distinct uniqueid, caller id from a pool),
answers every command with ``200 result=1`` and waits until the server closes. Closed loop, no
think time: N sessions are in flight at every moment.

Measured per session: *route latency* = header sent -> socket closed by the server (what the caller
waits); *first command* = header -> first command (normalise + history read + call/event writes);
*turnaround* = our answer -> the server's next command.

The comparison spawns ``bench/pyst2_incoming.py`` per session exactly as Asterisk runs a process AGI
(fork/exec, ``agi_*`` env on stdin, commands on stdout), also pinned to the server's core so both
variants get the same CPU budget, against its own fresh SQLite file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import itertools
import json
import math
import os
import pstats
import random
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callcenter.testing.fake_asterisk import build_header
from callcenter.testing.machine import machine_line

BENCH_DIR = Path(__file__).resolve().parent
PYST2_SCRIPT = BENCH_DIR / "pyst2_incoming.py"
ANSWER = b"200 result=1\n"
ROUTED_LINE = 'SET VARIABLE "CC_ROUTED" "1"'


# --------------------------------------------------------------------------------------------------
# measurements


@dataclass
class SessionResult:
    started: float  # perf_counter when the header was sent (FastAGI) or the process spawned (pyst2)
    ended: float
    first_command: float  # seconds from start to the first command line
    turnarounds: list[float]  # our answer -> next command line
    close_wait: float  # our last answer -> EOF
    commands: list[str]
    error: str | None = None

    @property
    def latency(self) -> float:
        return self.ended - self.started

    @property
    def routed(self) -> bool:
        """The route's last command was CC_ROUTED=1 (the dialplan uses our values)."""
        return self.error is None and bool(self.commands) and self.commands[-1] == ROUTED_LINE

    @property
    def recorded(self) -> bool:
        """CC_CALL_ID was set: the call row was written within the route's ``db_wait``."""
        return any(c.startswith('SET VARIABLE "CC_CALL_ID"') for c in self.commands)


@dataclass
class LevelResult:
    variant: str
    concurrency: int
    window: float
    sessions: list[SessionResult] = field(default_factory=list)
    errors: int = 0  # connection errors / timeouts: no session result at all
    server: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return len(self.sessions) / self.window if self.window > 0 else 0.0


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def ms(value: float) -> str:
    if math.isnan(value):
        return "—"
    return f"{value * 1000:.1f} ms" if value < 10 else f"{value:.1f} s"


# --------------------------------------------------------------------------------------------------
# server process


async def serve(args: argparse.Namespace) -> None:
    """The FastAGI side: real server, real route, real store; control lines on stdin, replies on stdout."""
    from callcenter.agi.incoming import ROUTE, IncomingRoute
    from callcenter.agi.server import AgiServer, AgiStats
    from callcenter.config import AgiConfig, NumbersConfig, QueueConfig
    from callcenter.logs import configure_logging
    from callcenter.store import Calls, Store
    from callcenter.store.arrivals import Arrivals
    from callcenter.store.pending import PendingWrites
    from callcenter.tasks import Background

    configure_logging(args.log_level, json=True)
    store = Store.from_url(f"sqlite+aiosqlite:///{args.db}")
    await store.upgrade()
    background = Background()
    server = AgiServer(AgiConfig(host="127.0.0.1", port=0))
    arrivals = Arrivals(Calls(store), background, PendingWrites(), NumbersConfig(), QueueConfig())
    server.add_route(ROUTE, IncomingRoute(arrivals))
    await server.start()

    loop = asyncio.get_running_loop()
    control = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(control), sys.stdin)
    profiler = cProfile.Profile() if args.profile else None

    def reply(payload: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()

    reply({"port": server.port, "pid": os.getpid()})
    while line := (await control.readline()).strip():
        if line == b"reset":
            server.stats = AgiStats()
            cpu = time.process_time()
            since = time.perf_counter()
            if profiler is not None:
                profiler.enable()
            reply({"ok": True})
        elif line == b"stats":
            if profiler is not None:
                profiler.disable()
            stats = server.stats
            latencies = list(stats.recent_latencies)
            reply(
                {
                    "completed": stats.sessions_completed,
                    "failed": stats.sessions_failed,
                    "dropped": stats.sessions_dropped,
                    "commands": stats.commands_sent,
                    "cmd_p50": pct(latencies, 50),
                    "cmd_p99": pct(latencies, 99),
                    "background": len(background),
                    "cpu": time.process_time() - cpu,
                }
            )
        elif line == b"settle":
            # The route returns before its call record is written (background): a session is fully
            # handled only once that write is done, and the next level must not inherit a backlog.
            t0 = time.perf_counter()
            await background.settle()
            done = time.perf_counter()
            completed = server.stats.sessions_completed
            reply({"settled_in": done - t0, "sustained": completed / (done - since), "completed_all": completed})
    await server.stop(grace=2.0)
    await background.drain()
    await store.close()
    if profiler is not None:
        out = io.StringIO()
        ps = pstats.Stats(profiler, stream=out).strip_dirs()
        ps.sort_stats("tottime").print_stats(25)
        ps.sort_stats("cumulative").print_stats(40)
        await asyncio.to_thread(Path(args.profile).write_text, out.getvalue(), encoding="utf-8")
    reply({"bye": True})


class ServerProcess:
    """The ``--serve`` child: started pinned to one core, driven line by line over its stdin/stdout."""

    def __init__(self, db: Path, log: Path, cpu: int | None, log_level: str, profile: Path | None) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", "--db", str(db), "--log-level", log_level]
        if profile is not None:
            cmd += ["--profile", str(profile)]
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            preexec_fn=_pinner(cpu),  # noqa: PLW1509 - the pin runs before exec, no locks involved
        )
        hello = self._read()
        self.port: int = hello["port"]

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark server exited (rc={self.proc.poll()}); see its log")
        result: dict[str, Any] = json.loads(line)
        return result

    def ask(self, what: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(what.encode() + b"\n")
        self.proc.stdin.flush()
        return self._read()

    def stop(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._log.close()


def _pinner(cpu: int | None) -> Callable[[], None] | None:
    if cpu is None:
        return None
    cpus = {cpu}

    def pin() -> None:
        os.sched_setaffinity(0, cpus)

    return pin


# --------------------------------------------------------------------------------------------------
# load generator: fake Asterisk channels


class Channels:
    """Distinct uniqueids and a pool of valid Indonesian mobile numbers (so histories accumulate)."""

    def __init__(self, callers: int) -> None:
        self._seq = itertools.count(1)
        self._epoch = int(time.time())
        self._callers = callers

    def next(self) -> tuple[str, str]:
        n = next(self._seq)
        return f"{self._epoch}.{n}", f"0812{(n * 7919) % self._callers:08d}"


async def fastagi_session(port: int, channels: Channels) -> SessionResult:
    uniqueid, caller = channels.next()
    header = build_header(
        "incoming",
        args=(str(int(time.time())), "112"),
        env={"agi_callerid": caller},
        uniqueid=uniqueid,
        port=port,
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    commands: list[str] = []
    turnarounds: list[float] = []
    first = float("nan")
    try:
        writer.write(header)
        started = last = time.perf_counter()
        while True:
            line = await reader.readline()
            now = time.perf_counter()
            if not line.endswith(b"\n"):
                break
            if commands:
                turnarounds.append(now - last)
            else:
                first = now - started
            commands.append(line.decode("utf-8", "replace").rstrip("\r\n"))
            writer.write(ANSWER)
            last = time.perf_counter()
        ended = time.perf_counter()
    finally:
        writer.close()
    return SessionResult(started, ended, first, turnarounds, ended - last, commands)


def process_header(uniqueid: str, caller: str, arrived: str) -> bytes:
    """What Asterisk writes to a process AGI's stdin: the same block, minus the network keys."""
    block = build_header("", args=(arrived, "112"), env={"agi_callerid": caller}, uniqueid=uniqueid)
    lines = [line for line in block.split(b"\n") if line and not line.startswith((b"agi_network", b"agi_request"))]
    return b"agi_request: pyst2_incoming.py\n" + b"".join(line + b"\n" for line in lines) + b"\n"


async def process_session(channels: Channels, env: dict[str, str], cpu: int | None) -> SessionResult:
    uniqueid, caller = channels.next()
    arrived = str(int(time.time()))
    commands: list[str] = []
    turnarounds: list[float] = []
    first = float("nan")
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(PYST2_SCRIPT),
        arrived,
        "112",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
        preexec_fn=_pinner(cpu),
    )
    assert proc.stdin is not None and proc.stdout is not None
    last = started
    try:
        proc.stdin.write(process_header(uniqueid, caller, arrived))
        while True:
            line = await proc.stdout.readline()
            now = time.perf_counter()
            if not line.endswith(b"\n"):
                break
            if commands:
                turnarounds.append(now - last)
            else:
                first = now - started
            commands.append(line.decode("utf-8", "replace").rstrip("\r\n"))
            proc.stdin.write(ANSWER)
            last = time.perf_counter()
        rc = await proc.wait()
        ended = time.perf_counter()
    finally:
        with contextlib.suppress(ProcessLookupError):
            if proc.returncode is None:
                proc.kill()
    error = None if rc == 0 else f"rc={rc}"
    return SessionResult(started, ended, first, turnarounds, ended - last, commands, error)


async def run_fastagi_level(
    port: int, channels: Channels, concurrency: int, warmup: float, duration: float
) -> LevelResult:
    """Closed loop: ``concurrency`` channels back to back; only sessions inside the window count."""
    begin = time.perf_counter()
    window_start = begin + warmup
    window_end = window_start + duration
    results: list[SessionResult] = []
    errors = 0

    async def channel() -> None:
        nonlocal errors
        while time.perf_counter() < window_end:
            try:
                results.append(await asyncio.wait_for(fastagi_session(port, channels), 30))
            except (OSError, TimeoutError):
                errors += 1

    await asyncio.gather(*(channel() for _ in range(concurrency)))
    level = LevelResult("fastagi", concurrency, duration)
    level.sessions = [r for r in results if r.started >= window_start and r.ended <= window_end]
    level.errors = errors
    return level


async def run_open_level(port: int, channels: Channels, rate: float, warmup: float, duration: float) -> LevelResult:
    """Open loop: Poisson arrivals at ``rate``/s whatever the server does; concurrency is whatever results."""
    rng = random.Random(112)
    begin = time.perf_counter()
    window_start = begin + warmup
    window_end = window_start + duration
    results: list[SessionResult] = []
    errors = 0
    tasks: set[asyncio.Task[None]] = set()

    async def arrival() -> None:
        nonlocal errors
        try:
            results.append(await asyncio.wait_for(fastagi_session(port, channels), 30))
        except (OSError, TimeoutError):
            errors += 1

    due = begin
    while due < window_end:
        due += rng.expovariate(rate)
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        task = asyncio.create_task(arrival())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks)
    level = LevelResult(f"open@{rate:g}/s", 0, duration)
    level.sessions = [r for r in results if window_start <= r.started < window_end]
    level.errors = errors
    return level


async def run_process_level(
    channels: Channels, concurrency: int, launch_for: float, env: dict[str, str], cpu: int | None
) -> LevelResult:
    """Closed loop of spawned scripts; launches stop after ``launch_for`` s, every launched session finishes.

    Throughput = sessions / (first spawn -> last exit), so a first wave that outlasts the launch
    window (likely at 50 on one core) is still counted whole.
    """
    if concurrency == 1:  # warm the page cache / .pyc files; not counted
        await process_session(channels, env, cpu)
    begin = time.perf_counter()
    stop_launching = begin + launch_for
    results: list[SessionResult] = []
    errors = 0

    async def channel() -> None:
        nonlocal errors
        while time.perf_counter() < stop_launching:
            try:
                results.append(await asyncio.wait_for(process_session(channels, env, cpu), 300))
            except (OSError, TimeoutError):
                errors += 1

    await asyncio.gather(*(channel() for _ in range(concurrency)))
    window = max((r.ended for r in results), default=begin) - begin
    return LevelResult("pyst2", concurrency, window, sessions=results, errors=errors)


# --------------------------------------------------------------------------------------------------
# driver


def machine() -> str:
    return f"{machine_line()}, SQLite {sqlite3.sqlite_version}"


def describe(level: LevelResult) -> str:
    s = level.sessions
    lat = [r.latency for r in s]
    first = [r.first_command for r in s]
    turn = [t for r in s for t in r.turnarounds]
    close = [r.close_wait for r in s]
    extra = ""
    if level.server:
        sv = level.server
        extra = (
            f" | server: completed={sv['completed']} failed={sv['failed']} dropped={sv['dropped']}"
            f" cmd p50/p99={ms(sv['cmd_p50'])}/{ms(sv['cmd_p99'])} cpu={sv['cpu']:.1f}s"
            f" pending-bg={sv['background']}"
        )
        if "settled_in" in sv:
            extra += f" written after {sv['settled_in']:.1f} s more -> {sv['sustained']:.0f} sessions/s incl. DB write"
    return (
        f"{level.variant:7} {f'c={level.concurrency}' if level.concurrency else '':5} n={len(s):<6} {level.rate:8.1f}/s"
        f" | latency p50={ms(pct(lat, 50))} p99={ms(pct(lat, 99))} max={ms(max(lat, default=float('nan')))}"
        f" | first-cmd p50={ms(pct(first, 50))} p99={ms(pct(first, 99))}"
        f" | turnaround p50={ms(pct(turn, 50))} p99={ms(pct(turn, 99))}"
        f" | close p50={ms(pct(close, 50))}"
        f" | errors={level.errors} not-routed={sum(not r.routed for r in s)}"
        f" no-CC_CALL_ID={sum(not r.recorded for r in s)}{extra}"
    )


def table(fast: list[LevelResult], proc: dict[int, LevelResult]) -> str:
    rows = [
        "| concurrency | FastAGI p50 | p99 | max | routed/s | routed and written/s (1) | "
        "process AGI (pyst2) sessions/s | ratio (written / pyst2) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    unmeasured: list[int] = []
    saturated = max(proc.values(), key=lambda lv: lv.concurrency, default=None)
    for level in fast:
        lat = [r.latency for r in level.sessions]
        other = proc.get(level.concurrency)
        written = float(level.server.get("sustained", level.rate))
        if other is not None:
            p_rate, ratio = f"{other.rate:.2f}", f"{written / other.rate:.0f}x" if other.rate else "—"
        elif saturated is not None and saturated.rate:
            p_rate = f"not run (c={saturated.concurrency}: {saturated.rate:.2f})"
            ratio = f"{written / saturated.rate:.0f}x (2)"
            unmeasured.append(level.concurrency)
        else:
            p_rate, ratio = "not run", "—"
        rows.append(
            f"| {level.concurrency} | {ms(pct(lat, 50))} | {ms(pct(lat, 99))} | {ms(max(lat, default=float('nan')))}"
            f" | {level.rate:.0f} | {written:.0f} | {p_rate} | {ratio} |"
        )
    for c, other in sorted(proc.items()):
        if c not in {lv.concurrency for lv in fast}:
            rows.append(f"| {c} | — | — | — | — | — | {other.rate:.2f} | — |")
    rows += [
        "",
        "(1) every session the server completed from the level's start, divided by the time until its last call "
        "record was written (the route answers before its background write; pyst2 writes before it exits).",
    ]
    if unmeasured and saturated is not None:
        rows += [
            f"(2) process AGI not run at c={', '.join(map(str, unmeasured))}: ratio against its rate measured at "
            f"c={saturated.concurrency} in this run (its one core is already saturated there).",
        ]
    return "\n".join(rows)


def open_table(levels: list[LevelResult]) -> str:
    rows = [
        "| offered rate | FastAGI p50 | p99 | max | completed/s | first command p99 | no CC_CALL_ID |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in levels:
        lat = [r.latency for r in level.sessions]
        first = [r.first_command for r in level.sessions]
        rows.append(
            f"| {level.variant.removeprefix('open@')} | {ms(pct(lat, 50))} | {ms(pct(lat, 99))}"
            f" | {ms(max(lat, default=float('nan')))} | {level.rate:.0f} | {ms(pct(first, 99))}"
            f" | {sum(not r.recorded for r in level.sessions)} |"
        )
    return "\n".join(rows)


def process_table(proc: dict[int, LevelResult]) -> str:
    rows = [
        "| concurrency | pyst2 p50 | p99 | max | sessions/s | first command p50 |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for c, level in sorted(proc.items()):
        lat = [r.latency for r in level.sessions]
        first = [r.first_command for r in level.sessions]
        rows.append(
            f"| {c} | {ms(pct(lat, 50))} | {ms(pct(lat, 99))} | {ms(max(lat, default=float('nan')))}"
            f" | {level.rate:.2f} | {ms(pct(first, 50))} |"
        )
    return "\n".join(rows)


def db_counts(path: Path) -> tuple[int, int]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        calls = db.execute("select count(*) from calls").fetchone()[0]
        events = db.execute("select count(*) from call_events").fetchone()[0]
    return int(calls), int(events)


def db_rows(path: Path) -> str:
    calls, events = db_counts(path)
    return f"{calls} calls / {events} events"


def invalid(levels: Sequence[LevelResult], db: Path, expected_calls: int) -> list[str]:
    """Why these results must not be reported: a session that failed or did not route (a crashing
    script looks fast), or a store that does not hold exactly one call with two events per session."""
    problems = [
        f"{lv.variant} c={lv.concurrency}: {lv.errors} connection errors, "
        f"{sum(not r.routed for r in lv.sessions)} of {len(lv.sessions)} sessions not routed"
        for lv in levels
        if lv.errors or any(not r.routed for r in lv.sessions)
    ]
    calls, events = db_counts(db)
    if (calls, events) != (expected_calls, 2 * expected_calls):
        problems.append(f"{db.name}: {calls} calls / {events} events for {expected_calls} sessions")
    return problems


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


async def drive(args: argparse.Namespace, tmp: Path) -> int:
    if args.client_cpu is not None:
        os.sched_setaffinity(0, {args.client_cpu})
    channels = Channels(args.callers)
    concurrency = _ints(args.concurrency)
    proc_concurrency = _ints(args.process_concurrency)
    started = time.perf_counter()
    print(f"# P2 FastAGI benchmark — {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"machine: {machine()}")
    print(f"command: {' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv])}")
    print(
        f"pinning: server cpu={args.server_cpu}, client cpu={args.client_cpu}; "
        f"server log level {args.log_level} (JSON to a temp file, as in production)\n"
    )

    # ---- FastAGI ------------------------------------------------------------------------------
    fast_db = tmp / "fastagi.db"
    profile = tmp / "profile.txt" if args.profile else None
    server = await asyncio.to_thread(
        ServerProcess, fast_db, tmp / "server.log", args.server_cpu, args.log_level, profile
    )
    fast: list[LevelResult] = []
    opened: list[LevelResult] = []
    try:
        for c in concurrency:
            await asyncio.to_thread(server.ask, "reset")
            level = await run_fastagi_level(server.port, channels, c, args.warmup, args.duration)
            level.server = await asyncio.to_thread(server.ask, "stats")
            level.server.update(await asyncio.to_thread(server.ask, "settle"))
            fast.append(level)
            print(describe(level), flush=True)
            await asyncio.sleep(0.5)  # let background writes and TIME_WAIT settle between levels
        for rate in _floats(args.open_rates):
            await asyncio.to_thread(server.ask, "reset")
            level = await run_open_level(server.port, channels, rate, args.warmup / 2, args.open_duration)
            level.server = await asyncio.to_thread(server.ask, "stats")
            level.server.update(await asyncio.to_thread(server.ask, "settle"))
            opened.append(level)
            print(describe(level), flush=True)
            await asyncio.sleep(0.5)
    finally:
        await asyncio.to_thread(server.stop)
    log_lines = sum(1 for _ in (tmp / "server.log").open("rb"))
    print(f"fastagi store: {db_rows(fast_db)}; server log: {log_lines} lines")
    levels = [*fast, *opened]
    problems = invalid(levels, fast_db, sum(int(lv.server.get("completed_all", 0)) for lv in levels))

    # ---- process AGI (pyst2) --------------------------------------------------------------------
    proc: dict[int, LevelResult] = {}
    if proc_concurrency:
        proc_db = tmp / "pyst2.db"
        from callcenter.store import Store  # same Alembic migrations as the server's store

        store = Store.from_url(f"sqlite+aiosqlite:///{proc_db}")
        await store.upgrade()
        await store.close()
        env = {**os.environ, "CC_BENCH_DB": str(proc_db)}
        for c in proc_concurrency:
            level = await run_process_level(channels, c, args.process_duration, env, args.server_cpu)
            proc[c] = level
            print(describe(level), flush=True)
        print(f"pyst2 store: {db_rows(proc_db)}")
        # The c=1 level's uncounted warm-up session writes a call too.
        written = sum(len(lv.sessions) for lv in proc.values()) + (1 if 1 in proc else 0)
        problems += invalid(list(proc.values()), proc_db, written)

    print("\n## Result\n")
    print(table(fast, proc))
    if opened:
        print("\nFastAGI open loop (Poisson arrivals at a fixed rate; concurrency is whatever results):\n")
        print(open_table(opened))
    if proc:
        print("\nprocess AGI (pyst2) detail:\n")
        print(process_table(proc))
    print(
        f"\nFastAGI: closed loop, {args.warmup:g} s warm-up + {args.duration:g} s window per level"
        f" (open loop: {args.warmup / 2:g} s + {args.open_duration:g} s); "
        f"pyst2: launches for {args.process_duration:g} s, every launched session completes."
    )
    print(f"total run time {time.perf_counter() - started:.0f} s")
    if profile is not None and profile.exists():
        print("\n## Server profile (cProfile; numbers above are inflated by it)\n")
        print(profile.read_text(encoding="utf-8"))
    if problems:
        print("\nINVALID RUN — these numbers must not be reported:\n" + "\n".join(f"  {p}" for p in problems))
        return 1
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--concurrency", default="1,50,200", help="FastAGI levels (comma-separated)")
    p.add_argument("--open-rates", default="50,100", help="FastAGI open-loop arrival rates per s ('' to skip)")
    p.add_argument("--open-duration", type=float, default=6.0, help="measured seconds per open-loop rate")
    p.add_argument("--process-concurrency", default="1,50", help="pyst2 process AGI levels ('' to skip)")
    p.add_argument("--warmup", type=float, default=2.0, help="FastAGI warm-up seconds per level")
    p.add_argument("--duration", type=float, default=8.0, help="FastAGI measured seconds per level")
    p.add_argument("--process-duration", type=float, default=8.0, help="pyst2: seconds during which sessions start")
    p.add_argument("--callers", type=int, default=500, help="distinct caller numbers in the pool")
    p.add_argument("--server-cpu", type=int, default=0, help="core for the server / the AGI scripts (-1: no pin)")
    p.add_argument("--client-cpu", type=int, default=1, help="core for the load generator (-1: no pin)")
    p.add_argument("--log-level", default="INFO", help="server log level (production: INFO)")
    p.add_argument("--profile", action="store_true", help="cProfile the server during the measured levels")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (databases, server log)")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("server_cpu", "client_cpu"):
        value = getattr(args, name)
        if value is not None and value < 0:
            setattr(args, name, None)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    if "--serve" in (argv if argv is not None else sys.argv[1:]):
        sp = argparse.ArgumentParser()
        sp.add_argument("--serve", action="store_true")
        sp.add_argument("--db", required=True)
        sp.add_argument("--log-level", default="INFO")
        sp.add_argument("--profile")
        asyncio.run(serve(sp.parse_args(argv)))
        return 0
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="cc-bench-p2-"))
    try:
        return asyncio.run(drive(args, tmp))
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            for child in sorted(tmp.iterdir(), reverse=True):
                child.unlink()
            tmp.rmdir()


if __name__ == "__main__":
    sys.exit(main())
