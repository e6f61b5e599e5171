"""P5: a surge of 1,000 callers waiting at once — none lost, the app small, the live picture true.

One real Asterisk 22 (``TestPbx`` with the default ``PbxSpec`` limits: the point is that the test/demo
PBX itself holds the surge), the real app as a child process (FastAGI + AMI tracker + a fresh SQLite
store), two call-takers logged in through the app's console API and paused for training (so the queue
accepts callers and nobody takes them: the worst case, everyone waits), and one SIPp caller placing
``--calls`` 112 calls at ``--rate`` calls/s. Each caller stays on the line until the surge is over:
once all of them wait in the queue together (``QueueStatus``), they wait ``--dwell`` seconds more, the
pictures are compared, and Asterisk hangs every caller up (``channel request hangup all``).

Checked, from Asterisk's side and the app's:

* none lost: SIPp counts every call successful (answered, held, hung up by the caller) and none failed,
  and Asterisk's own ``queue_log`` has an ``ENTERQUEUE`` for every caller number SIPp dialled from;
* the app's resident memory (``VmHWM``, the peak) against 150 MB;
* the live picture (``/api/queue``, what the consoles and the wallboard read) against Asterisk's
  ``QueueStatus`` at the peak — the same callers by Uniqueid, the same members and pause states — and
  again once the surge has hung up (both empty); the time from the last call placed until they agree.

    .venv/bin/python bench/p5_surge.py                       # 1,000 callers at 40/s (~3 min)
    .venv/bin/python bench/p5_surge.py --calls 50 --rate 10  # quick check
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from callcenter.pbx.chroot import default_cache_dir, ensure_chroot
from callcenter.pbx.harness import TestPbx, own_cpu_group
from callcenter.store import Store
from callcenter.testing.ami import QueueProbe
from callcenter.testing.app import AppProcess, pbx_env
from callcenter.testing.bench import bench_sipp, bench_spec, kill_now, run_bench
from callcenter.testing.machine import machine_line
from callcenter.testing.sipp import SippProcess, SippResult, free_port
from callcenter.testing.web import login_session, make_user

REPO = Path(__file__).resolve().parents[1]
UAC_TEMPLATE = REPO / "tests" / "sipp" / "uac_112.xml"
PASSWORD = "bench-password-123"
TAKERS = (("ayu", "taker1"), ("budi", "taker2"))
TICKS = os.sysconf("SC_CLK_TCK")
RSS_TARGET_MB = 150.0


def proc_status(pid: int | None, key: str) -> float | None:
    """A ``/proc/<pid>/status`` size field (VmRSS, VmHWM) in MB."""
    if pid is None:
        return None
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return None


def reset_peak_rss(pid: int) -> None:
    """Reset the kernel's VmHWM of ``pid`` to its current RSS (``clear_refs`` 5, Linux 4.0+, as root)."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a whole process (all threads), in seconds."""
    if pid is None:
        return None
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def threads(pid: int | None) -> int:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/task"))
    return 0


def open_fds(pid: int | None) -> int:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return 0


@dataclass
class Sample:
    at: float
    asterisk_waiting: int
    app_waiting: int
    app_rss: float
    asterisk_rss: float
    asterisk_threads: int
    asterisk_fds: int


@dataclass
class Comparison:
    """The live picture against QueueStatus at one moment."""

    asterisk: set[str]
    app: set[str]
    members_asterisk: dict[str, tuple[bool, str]]
    members_app: dict[str, tuple[bool, str]]

    @property
    def equal(self) -> bool:
        return self.asterisk == self.app and self.members_asterisk == self.members_app

    def describe(self) -> str:
        missing, extra = self.asterisk - self.app, self.app - self.asterisk
        return (
            f"Asterisk {len(self.asterisk)} waiting, app {len(self.app)} (missing in the app {len(missing)}, "
            f"extra {len(extra)}); members Asterisk {sorted(self.members_asterisk.items())} "
            f"app {sorted(self.members_app.items())}"
        )


@dataclass
class Result:
    calls: int
    rate: float
    caller: SippResult | None = None
    enterqueue: int = 0
    enterqueue_numbers: int = 0
    abandons: int = 0
    other_qlog: Counter[str] = field(default_factory=Counter)
    fallbacks: int = 0
    db_calls: int = 0
    db_agi: int = 0
    db_queued: int = 0
    peak_asterisk: int = 0
    peak_app: int = 0
    peak: Comparison | None = None
    peak_agree_after: float | None = None
    after: Comparison | None = None
    after_agree_after: float | None = None
    app_hwm: float = 0.0
    app_hwm_before: float = 0.0
    app_rss_end: float = 0.0
    asterisk_hwm: float = 0.0
    asterisk_threads_max: int = 0
    asterisk_fds_max: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0
    place_seconds: float = 0.0
    #: Seconds from the first call placed until all callers waited in the queue at once (None: never).
    all_waiting_after: float | None = None
    samples: list[Sample] = field(default_factory=list)
    ast_warnings: Counter[str] = field(default_factory=Counter)
    app_warnings: Counter[str] = field(default_factory=Counter)

    @property
    def lost(self) -> int:
        """Callers not in Asterisk's queue_log or failed in SIPp."""
        placed_ok = self.caller.successful if self.caller else 0
        return max(self.calls - self.enterqueue_numbers, self.calls - placed_ok)


class Surge:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.sip_port = free_port("udp")
        self.taker_port = free_port("udp")
        self.ami_port = free_port("tcp")
        self.agi_port = free_port("tcp")
        self.web_port = free_port("tcp")
        self.spec = bench_spec(
            sip_port=self.sip_port,
            ami_port=self.ami_port,
            agi_port=self.agi_port,
            instance=f"p5b{os.getpid()}",
            # Nobody overflows during the surge: the queue holds everyone for its whole length.
            queue_timeout=3600,
            overflow_dial="",
            takers=tuple((name, self.taker_port) for _, name in TAKERS),
        )
        self.db_path = workdir / "callcenter.db"
        self.pbx: TestPbx | None = None
        self.app: AppProcess | None = None
        self.ami: QueueProbe | None = None
        self.supervisor: aiohttp.ClientSession | None = None
        self.sipps: list[SippProcess] = []
        self.uac = workdir / "p5_uac.xml"
        self.uac.write_text(UAC_TEMPLATE.read_text().replace("[caller_id]", "[field0]"))
        self.numbers = [f"0813{i:08d}" for i in range(args.calls)]
        #: Set once QueueStatus counts every caller of the surge waiting.
        self.all_in = asyncio.Event()
        self.cpu_groups: list[Path | None] = []
        #: Observation requests that failed (counted, reported; the figures come from those that worked).
        self.errors: Counter[str] = Counter()

    # -- lifecycle
    async def start(self) -> None:
        chroot = ensure_chroot(default_cache_dir())
        self.pbx = TestPbx(self.spec, chroot, REPO)
        await self.pbx.astart()
        url = f"sqlite+aiosqlite:///{self.db_path}"
        store = Store.from_url(url)
        await store.upgrade()
        for username, endpoint in TAKERS:
            await make_user(store, username, "calltaker", password=PASSWORD, interface=f"PJSIP/{endpoint}")
        await make_user(store, "sari", "supervisor", password=PASSWORD)
        await store.close()
        env = pbx_env(self.pbx, self.agi_port, url)
        self.app = AppProcess(env, self.workdir / "app.log", self.web_port)
        await self.app.start()
        await self.app.wait_event("tracker.resynced", timeout=20)
        base = self.app.base_url
        for username, _ in TAKERS:
            async with await login_session(base, username, PASSWORD) as taker:
                for body in ({"action": "login"}, {"action": "pause", "reason": "training"}):
                    async with taker.post(f"{base}/api/presence", json=body) as resp:
                        assert resp.status == 202, (username, body, resp.status, await resp.text())
        self.supervisor = await login_session(base, "sari", PASSWORD)
        self.ami = await QueueProbe(self.ami_port, self.spec.ami_secret, self.spec.queue).__aenter__()
        # Both takers in the queue, paused, as Asterisk and the app see it, before the first caller.
        deadline = time.monotonic() + 20
        while True:
            cmp = await self.compare()
            if cmp.equal and all(p for p, _ in cmp.members_asterisk.values()) and len(cmp.members_asterisk) == 2:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"call-takers not logged in and paused: {cmp.describe()}")
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        for s in self.sipps:
            with contextlib.suppress(Exception):
                await s.stop(grace=2)
        for group in self.cpu_groups:
            if group is not None:
                with contextlib.suppress(OSError):
                    group.rmdir()
        if self.supervisor is not None:
            await self.supervisor.close()
        if self.ami is not None:
            await self.ami.__aexit__(None, None, None)
        if self.app is not None:
            with contextlib.suppress(Exception):
                await self.app.stop(timeout=30)
        if self.pbx is not None:
            with contextlib.suppress(Exception):
                await self.pbx.astop(timeout=60)
            shutil.rmtree(self.pbx.host_dir, ignore_errors=True)

    def kill_all(self) -> None:
        kill_now(self.sipps, self.app, self.pbx)

    # -- observation
    async def queue_status(self) -> tuple[set[str], dict[str, tuple[bool, str]]]:
        assert self.ami is not None
        snap = await self.ami.snapshot()
        return set(snap.waiting), snap.members

    async def live_picture(self) -> tuple[set[str], dict[str, tuple[bool, str]]]:
        assert self.supervisor is not None and self.app is not None
        timeout = aiohttp.ClientTimeout(total=30)
        async with self.supervisor.get(f"{self.app.base_url}/api/queue", timeout=timeout) as resp:
            resp.raise_for_status()
            body: dict[str, Any] = await resp.json()
        waiting = {str(w["uniqueid"]) for w in body["waiting"]}
        members = {str(m["interface"]): (bool(m["paused"]), str(m["reason"])) for m in body["members"]}
        return waiting, members

    async def compare(self) -> Comparison:
        # App first, then Asterisk: a caller who joins in between shows as "missing in the app" and the
        # comparison is simply taken again.
        app, app_members = await self.live_picture()
        ast, ast_members = await self.queue_status()
        return Comparison(ast, app, ast_members, app_members)

    async def until_equal(self, timeout: float) -> tuple[Comparison | None, float | None]:
        started = time.monotonic()
        cmp: Comparison | None = None
        while True:
            try:
                cmp = await self.compare()
            except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:  # an answer late or refused: noted
                self.errors[f"compare: {type(exc).__name__}: {str(exc)[:80]}"] += 1
            else:
                if cmp.equal:
                    return cmp, time.monotonic() - started
            if time.monotonic() - started > timeout:
                return cmp, None
            await asyncio.sleep(0.25)

    def qlog(self) -> list[list[str]]:
        assert self.pbx is not None
        try:
            text = (self.pbx.host_dir / "log" / "queue_log").read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [line.split("|") for line in text.splitlines()]

    def db_counts(self) -> tuple[int, int, int]:
        with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)) as db:
            row = db.execute(
                "SELECT count(*), coalesce(sum(routed_by = 'agi'), 0), coalesce(sum(queued_at IS NOT NULL), 0) "
                "FROM calls"
            ).fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    async def sample_loop(self, res: Result, stop: asyncio.Event) -> None:
        assert self.pbx is not None and self.app is not None and self.app.proc is not None
        t0 = time.monotonic()
        while not stop.is_set():
            try:
                ast, _ = await self.queue_status()
                app, _ = await self.live_picture()
                pid = self.pbx.pid
                s = Sample(
                    time.monotonic() - t0,
                    len(ast),
                    len(app),
                    proc_status(self.app.proc.pid, "VmRSS") or 0.0,
                    proc_status(pid, "VmRSS") or 0.0,
                    threads(pid),
                    open_fds(pid),
                )
                res.samples.append(s)
                res.peak_asterisk = max(res.peak_asterisk, s.asterisk_waiting)
                if s.asterisk_waiting >= res.calls:
                    self.all_in.set()
                res.peak_app = max(res.peak_app, s.app_waiting)
                res.asterisk_threads_max = max(res.asterisk_threads_max, s.asterisk_threads)
                res.asterisk_fds_max = max(res.asterisk_fds_max, s.asterisk_fds)
            except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
                self.errors[f"sample: {type(exc).__name__}: {str(exc)[:80]}"] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    async def start_caller(self, hold: float, timeout: float) -> SippProcess:
        inf = self.workdir / "callers.csv"
        inf.write_text("\n".join(["SEQUENTIAL", *[f"{n};" for n in self.numbers]]) + "\n")
        args = [f"127.0.0.1:{self.sip_port}", "-sf", str(self.uac), "-s", "112", "-inf", str(inf)]
        args += ["-set", "hold_ms", str(round(hold * 1000))]
        args += ["-r", f"{self.args.rate:g}", "-rp", "1000", "-m", str(self.args.calls)]
        args += ["-l", str(self.args.calls + 10), "-timeout", f"{round(timeout)}s"]
        # SIPp stops itself when starved of CPU for long (its "overload" watchdog: 120 scheduling delays
        # over 500 ms). A surge that takes both cores is what this measures, so it must not quit.
        args += ["-watchdog_minor_maxtriggers", "1000000", "-watchdog_major_maxtriggers", "1000000"]
        proc = await bench_sipp("caller", args, self.workdir)
        self.sipps.append(proc)
        # SIPp plays each caller's speech from a thread of its own (~300 at once at 40 calls/s): as the
        # outside world, it gets a CPU share of its own like Asterisk, not one per thread over the app's.
        if proc.pid is not None:
            self.cpu_groups.append(own_cpu_group(proc.pid, f"callcenter-p5-sipp-{os.getpid()}"))
        return proc

    # -- the surge
    async def run(self) -> Result:
        assert self.pbx is not None and self.app is not None and self.app.proc is not None
        args = self.args
        res = Result(args.calls, args.rate)
        res.place_seconds = args.calls / args.rate
        # Callers stay until the surge is ended from Asterisk's side: at the peak, all of them wait at
        # once however long placing took on a loaded machine.
        hold = args.max_wait
        pids = {"asterisk": self.pbx.pid, "app": self.app.proc.pid}
        cpu0 = {k: cpu_seconds(p) or 0.0 for k, p in pids.items()}
        log_mark = self.pbx.log_file.stat().st_size if self.pbx.log_file.exists() else 0
        app_mark = len(self.app.log_lines())
        # The peak before the surge is the logins' (argon2id takes 64 MiB per hash, by design): reset the
        # kernel's high-water mark so that VmHWM at the end is the surge's own peak.
        res.app_hwm_before = proc_status(self.app.proc.pid, "VmHWM") or 0.0
        reset_peak_rss(self.app.proc.pid)
        stop = asyncio.Event()
        sampler = asyncio.create_task(self.sample_loop(res, stop))
        t0 = time.monotonic()
        caller = await self.start_caller(hold, timeout=hold + 300)
        # The peak: every caller in the queue at once (per QueueStatus), or the most that got there.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_in.wait(), res.place_seconds * 3 + 120)
            res.all_waiting_after = time.monotonic() - t0
        await asyncio.sleep(args.dwell)
        res.peak, res.peak_agree_after = await self.until_equal(timeout=60)
        # The surge ends: Asterisk hangs up every caller (SIPp takes the BYE as a normal end of its call).
        for _ in range(3):
            try:
                await self.pbx.acli("channel request hangup all", timeout=60)
                break
            except (subprocess.TimeoutExpired, RuntimeError) as exc:  # a CLI late on a loaded machine
                self.errors[f"hangup all: {type(exc).__name__}"] += 1
        res.caller = await caller.wait(timeout=300)
        res.wall = time.monotonic() - t0
        await self.pbx.await_idle(timeout=120)
        res.after, res.after_agree_after = await self.until_equal(timeout=30)
        stop.set()
        await sampler
        res.cpu = {k: (cpu_seconds(p) or 0.0) - cpu0[k] for k, p in pids.items()}
        res.app_hwm = proc_status(self.app.proc.pid, "VmHWM") or 0.0
        res.app_rss_end = proc_status(self.app.proc.pid, "VmRSS") or 0.0
        res.asterisk_hwm = proc_status(self.pbx.pid, "VmHWM") or 0.0
        lines = self.qlog()
        numbers = set(self.numbers)
        entered = [f for f in lines if len(f) > 6 and f[4] == "ENTERQUEUE"]
        res.enterqueue = len(entered)
        res.enterqueue_numbers = len({f[6] for f in entered} & numbers)
        res.abandons = sum(1 for f in lines if len(f) > 4 and f[4] == "ABANDON")
        res.other_qlog = Counter(f[4] for f in lines if len(f) > 4 and f[4] not in ("ENTERQUEUE", "ABANDON"))
        # The tracker writes behind the live picture: give the database a moment to catch up.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            res.db_calls, res.db_agi, res.db_queued = self.db_counts()
            if res.db_queued >= args.calls:
                break
            await asyncio.sleep(1)
        text = self.pbx.log_file.read_bytes()[log_mark:].decode(errors="replace")
        res.fallbacks = sum(1 for ln in text.splitlines() if "WARNING[" in ln and "AGI routing failed" in ln)
        for ln in text.splitlines():
            if "WARNING[" in ln or "ERROR[" in ln:
                key = ln.split("]", 3)[-1].strip()[:100]
                res.ast_warnings[key] += 1
        for entry in self.app.log_lines()[app_mark:]:
            level = str(entry.get("level", "")).lower()
            if level in ("warning", "error", "critical"):
                res.app_warnings[f"{level} {entry.get('event', '?')}"] += 1
        return res


def report(res: Result, errors: Counter[str]) -> str:
    caller = res.caller
    ok = caller.successful if caller else 0
    failed = caller.failed if caller else res.calls
    hwm_ok = "met" if res.app_hwm <= RSS_TARGET_MB else "**not met**"
    peak_ok = res.peak is not None and res.peak.equal
    after_ok = res.after is not None and res.after.equal
    out = [
        "| callers | placed at | SIPp ok / failed | in queue_log (ENTERQUEUE, by number) | lost | "
        "peak waiting Asterisk / app | live picture = QueueStatus at the peak | after the surge | "
        "app RSS peak in the surge (VmHWM) | Asterisk RSS peak, threads, fds | CPU s Asterisk / app |",
        "|---:|---:|---|---|---:|---|---|---|---|---|---|",
        f"| {res.calls} | {res.rate:g}/s ({res.place_seconds:.0f} s) | {ok} / {failed} | {res.enterqueue_numbers} "
        f"| {res.lost} | {res.peak_asterisk} / {res.peak_app} "
        f"| {'equal' if peak_ok else 'DIFFERENT'}{_after(res.peak_agree_after)} "
        f"| {'equal' if after_ok else 'DIFFERENT'}{_after(res.after_agree_after)} "
        f"| {res.app_hwm:.1f} MB ({hwm_ok} ≤ {RSS_TARGET_MB:.0f}) "
        f"| {res.asterisk_hwm:.0f} MB, {res.asterisk_threads_max}, {res.asterisk_fds_max} "
        f"| {res.cpu.get('asterisk', 0):.0f} / {res.cpu.get('app', 0):.0f} |",
        "",
        f"queue_log: {res.enterqueue} ENTERQUEUE, {res.abandons} ABANDON, other {dict(res.other_qlog)}; "
        f"dialplan fallbacks (AGI routing failed): {res.fallbacks}; app DB: {res.db_calls} calls, "
        f"{res.db_agi} routed by AGI, {res.db_queued} with queued_at; wall {res.wall:.0f} s; all {res.calls} "
        f"waiting at once {_after(res.all_waiting_after, 'after the first call') or 'never'}; app RSS peak before "
        f"the surge (start-up and three logins) {res.app_hwm_before:.1f} MB, at the end {res.app_rss_end:.1f} MB",
    ]
    if res.peak is not None:
        out.append(f"at the peak: {res.peak.describe()}")
    if res.after is not None and not after_ok:
        out.append(f"after: {res.after.describe()}")
    if caller is not None and caller.errors.strip():
        out.append("SIPp errors (tail): " + " | ".join(caller.errors.strip().splitlines()[-3:])[:400])
    for k, n in errors.most_common(5):
        out.append(f"observation failed x{n}: {k}")
    for k, n in res.ast_warnings.most_common(5):
        out.append(f"asterisk log x{n}: {k}")
    for k, n in res.app_warnings.most_common(5):
        out.append(f"app log x{n}: {k}")
    out.append("")
    out.append("timeline (s: Asterisk waiting / app waiting, app RSS MB, Asterisk RSS MB / threads / fds):")
    step = max(1, len(res.samples) // 25)
    out.append(
        "  "
        + "; ".join(
            f"{s.at:.0f}: {s.asterisk_waiting}/{s.app_waiting} {s.app_rss:.0f} {s.asterisk_rss:.0f}/"
            f"{s.asterisk_threads}/{s.asterisk_fds}"
            for s in res.samples[::step]
        )
    )
    return "\n".join(out)


def _after(seconds: float | None, what: str = "after asking") -> str:
    return "" if seconds is None else f" ({seconds:.1f} s {what})"


async def run(args: argparse.Namespace, workdir: Path, holder: list[Surge]) -> int:
    print(f"# P5 surge benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
    print(f"machine: {machine_line()}; load average at start {os.getloadavg()}")
    print(f"command: {' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv])}", flush=True)
    surge = Surge(args, workdir)
    holder.append(surge)
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        await surge.start()
        spec = surge.spec
        print(
            f"PBX: maxcalls {spec.maxcalls}, maxfiles {spec.maxfiles}, RTP {spec.rtp_range[0]}-{spec.rtp_range[1]}; "
            f"{args.calls} callers at {args.rate:g}/s, all waiting together for {args.dwell:g} s, "
            "then hung up by Asterisk; 2 call-takers logged in and paused",
            flush=True,
        )
        res = await surge.run()
        print()
        print(report(res, surge.errors))
        print(f"load average at end {os.getloadavg()}")
        ok = res.lost == 0 and res.peak is not None and res.peak.equal and res.after is not None and res.after.equal
        return 0 if ok else 1
    finally:
        await surge.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=1000, help="callers in the surge (default %(default)s)")
    ap.add_argument("--rate", type=float, default=40.0, help="calls placed per second (default %(default)s)")
    ap.add_argument("--dwell", type=float, default=10.0, help="s all callers wait together before the comparison")
    ap.add_argument("--max-wait", type=float, default=900.0, help="s a caller stays at most (SIPp hold)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (DB, app log, SIPp logs)")
    args = ap.parse_args()
    return run_bench("p5-surge-", args.keep, functools.partial(run, args))


if __name__ == "__main__":
    sys.exit(main())
