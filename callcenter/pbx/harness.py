"""Run a real Asterisk 22 instance in the sid chroot for tests, benchmarks and the demo.

Layout: each instance lives in ``<chroot>/srv/cc-<instance>/`` (``etc``, ``lib``, ``log``,
``run``, ``spool``, ``data``, ``moh``, ``recordings``) and is started with
``chroot <dir> asterisk -f -n -C /srv/cc-<instance>/etc/asterisk.conf``. Several instances
share one chroot; ``/proc`` is bind-mounted while at least one of them runs (a marker file per
instance under ``<chroot>/srv/.proc-users`` counts them, guarded by an ``fcntl`` lock).

Asterisk runs as root without ``-U``: inside the chroot the ``asterisk`` user cannot read the
configs we render as root, and the chroot is the isolation boundary anyway.

Processes are never left behind: ``stop()`` is called by the context manager, and a
``weakref.finalize`` (which also runs at interpreter exit) kills the process group and drops
the ``/proc`` reference if the owner forgot.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import time
import weakref
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from types import TracebackType

from callcenter.pbx.render import PbxSpec, render, write_hold_tone

CORE_DATA_DIR = PurePosixPath("/usr/share/asterisk")
PROC_USERS_DIR = "srv/.proc-users"


class PbxError(RuntimeError):
    """Asterisk did not start, stop or answer; the message carries the tail of its log."""


def _is_mounted(path: Path) -> bool:
    target = str(path.resolve())
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 1 and parts[1] == target:
                return True
    return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _chroot_lock(chroot: Path) -> Iterator[None]:
    lock = chroot.parent / f"{chroot.name}.mount.lock"
    with lock.open("a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def acquire_proc(chroot: Path, instance: str) -> None:
    """Register ``instance`` as a /proc user and mount /proc if nobody had it mounted."""
    with _chroot_lock(chroot):
        users = chroot / PROC_USERS_DIR
        users.mkdir(parents=True, exist_ok=True)
        (users / instance).write_text(str(os.getpid()))
        proc = chroot / "proc"
        if not _is_mounted(proc):
            proc.mkdir(exist_ok=True)
            subprocess.run(["mount", "--bind", "/proc", str(proc)], check=True, capture_output=True)


def release_proc(chroot: Path, instance: str) -> None:
    """Drop ``instance``'s /proc reference; unmount when no live user is left.

    Markers of dead owners (a test run killed with SIGKILL) do not count, so a crash never
    keeps /proc mounted forever.
    """
    with _chroot_lock(chroot):
        users = chroot / PROC_USERS_DIR
        with contextlib.suppress(FileNotFoundError):
            (users / instance).unlink()
        live = 0
        if users.is_dir():
            for marker in users.iterdir():
                try:
                    pid = int(marker.read_text().strip() or "0")
                except (OSError, ValueError):
                    pid = 0
                if pid and _pid_alive(pid):
                    live += 1
                else:
                    with contextlib.suppress(OSError):
                        marker.unlink()
        proc = chroot / "proc"
        if live == 0 and _is_mounted(proc):
            res = subprocess.run(["umount", str(proc)], check=False, capture_output=True)
            if res.returncode != 0:
                subprocess.run(["umount", "-l", str(proc)], check=False, capture_output=True)


def own_cpu_group(pid: int, name: str) -> Path | None:
    """Move process ``pid`` (all its threads, and those it starts later) into a v1 ``cpu`` cgroup ``name``
    of its own, so that it shares CPU with the rest of the machine as one: None (nothing done) where the
    hierarchy is not there or not writable. The caller removes the group (``rmdir``) once ``pid`` is gone."""
    root = Path("/sys/fs/cgroup/cpu")
    if not (root / "cgroup.procs").exists():
        return None
    group = root / name
    try:
        group.mkdir(exist_ok=True)
        (group / "cgroup.procs").write_text(str(pid))
    except OSError:
        return None
    return group


class _Runtime:
    """What the finalizer needs; deliberately holds no reference to the TestPbx."""

    def __init__(self, chroot: Path, instance: str) -> None:
        self.chroot = chroot
        self.instance = instance
        self.proc: subprocess.Popen[bytes] | None = None
        self.proc_acquired = False
        self.cpu_group: Path | None = None

    def kill(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.proc = None
        if self.cpu_group is not None:
            with contextlib.suppress(OSError):
                self.cpu_group.rmdir()
            self.cpu_group = None
        if self.proc_acquired:
            self.proc_acquired = False
            release_proc(self.chroot, self.instance)


class TestPbx:
    """One Asterisk instance rendered from a ``PbxSpec``.

    Synchronous methods block (they wrap subprocesses); the ``a*`` variants run them in a
    thread so async tests and the demo can use them without stalling the event loop.
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, spec: PbxSpec, chroot: Path, repo_root: Path) -> None:
        self.spec = spec
        self.chroot = chroot
        self.repo_root = repo_root
        self.inner_dir = spec.instance_dir
        self.host_dir = self.host_path(self.inner_dir)
        self.conf_inner = self.inner_dir / "etc" / "asterisk.conf"
        self._rt = _Runtime(chroot, spec.instance)
        self._finalizer = weakref.finalize(self, _Runtime.kill, self._rt)

    # -- paths ---------------------------------------------------------------------------------
    def host_path(self, path_inside_chroot: str | PurePosixPath) -> Path:
        """Where a path as Asterisk sees it (inside the chroot) is on the host."""
        return self.chroot / str(path_inside_chroot).lstrip("/")

    @property
    def recordings_dir(self) -> Path:
        return self.host_path(self.spec.record_path)

    @property
    def log_file(self) -> Path:
        return self.host_dir / "log" / "messages.log"

    @property
    def console_file(self) -> Path:
        return self.host_dir / "log" / "console.out"

    @property
    def running(self) -> bool:
        return self._rt.proc is not None and self._rt.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._rt.proc.pid if self._rt.proc is not None else None

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for f in (self.log_file, self.console_file):
            with contextlib.suppress(FileNotFoundError):
                out.append(f"--- {f}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out) or "(no Asterisk log written)"

    # -- lifecycle -----------------------------------------------------------------------------
    def _prepare_dirs(self) -> None:
        for sub in ("etc", "lib", "log", "run", "spool", "cache"):
            d = self.host_dir / sub
            if sub in ("run", "etc"):
                shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True, exist_ok=True)
        # Each start gets a fresh messages.log (the previous one is kept once), so log
        # assertions only ever see this run.
        with contextlib.suppress(FileNotFoundError):
            self.log_file.replace(self.log_file.with_name("messages.log.prev"))
        with contextlib.suppress(FileNotFoundError):
            self.console_file.replace(self.console_file.with_name("console.out.prev"))
        self.recordings_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_data_dir()
        write_hold_tone(self.host_path(self.spec.moh_dir) / "cc-hold.wav")
        render(self.spec, self.host_dir / "etc", self.repo_root / "dialplans" / "callcenter.conf")

    def _prepare_data_dir(self) -> None:
        """astdatadir of its own: the core data via symlinks, plus our prompts as real files.

        A private data dir lets two instances from two work trees carry different prompts
        without touching the chroot's shared /usr/share/asterisk.
        """
        data = self.host_dir / "data"
        shutil.rmtree(data, ignore_errors=True)
        (data / "sounds").mkdir(parents=True)
        core = self.host_path(CORE_DATA_DIR)
        for entry in core.iterdir():
            if entry.name != "sounds":
                (data / entry.name).symlink_to(CORE_DATA_DIR / entry.name)
        for entry in (core / "sounds").iterdir():
            (data / "sounds" / entry.name).symlink_to(CORE_DATA_DIR / "sounds" / entry.name)
        ours = data / "sounds" / "callcenter"
        ours.mkdir()
        for wav in sorted((self.repo_root / "sounds").glob("*.wav")):
            shutil.copyfile(wav, ours / wav.name)

    def _kill_stale(self) -> None:
        """An earlier run of the same instance killed hard may still hold our ports."""
        pidfile = self.host_dir / "run" / "asterisk.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"asterisk" in cmdline and str(self.conf_inner).encode() in cmdline:
                os.kill(pid, signal.SIGKILL)
                for _ in range(50):
                    if not _pid_alive(pid):
                        break
                    time.sleep(0.1)

    def asterisk_cmd(self, *args: str) -> list[str]:
        """``chroot <dir> asterisk -C <our asterisk.conf> ARGS`` (also for -rx from other processes)."""
        return ["chroot", str(self.chroot), "asterisk", "-C", str(self.conf_inner), *args]

    def start(self, timeout: float = 60.0) -> None:
        if self.running:
            return
        self._kill_stale()
        self._prepare_dirs()
        acquire_proc(self.chroot, self.spec.instance)
        self._rt.proc_acquired = True
        try:
            with self.console_file.open("ab") as out:
                self._rt.proc = subprocess.Popen(
                    self.asterisk_cmd("-f", "-n", "-q"),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self._own_cpu_group()
            self._wait_booted(timeout)
        except BaseException:
            self._rt.kill()
            raise

    def _own_cpu_group(self) -> None:
        """Put Asterisk in a CPU cgroup of its own, as systemd puts each service in its own.

        The kernel shares CPU per cgroup, then per thread inside it. Without a group of its own, a surge's
        2,000 Asterisk threads (a channel thread and a MixMonitor thread per waiting caller) outweigh the
        app's few a thousand to one, and its event loop starves (bench/p5_surge.py measured 6 CPU-s for the
        app in 342 s, AMI pings unanswered). Nothing happens where the v1 ``cpu`` hierarchy is not
        writable; the group goes with the instance (``_Runtime.kill``).
        """
        proc = self._rt.proc
        if proc is not None:
            self._rt.cpu_group = own_cpu_group(proc.pid, f"callcenter-pbx-{self.spec.instance}")

    def _wait_booted(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            proc = self._rt.proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise PbxError(f"Asterisk exited during start (code {code})\n{self.log_tail()}")
            left = max(1.0, deadline - time.monotonic())
            try:
                res = subprocess.run(
                    self.asterisk_cmd("-rx", "core waitfullybooted"),
                    check=False,
                    capture_output=True,
                    text=True,
                    timeout=left,
                    stdin=subprocess.DEVNULL,
                )
            except subprocess.TimeoutExpired:
                break
            last = (res.stdout + res.stderr).strip()
            if res.returncode == 0 and "fully booted" in last.lower():
                return
            time.sleep(0.2)
        raise PbxError(f"Asterisk not fully booted after {timeout:.0f} s ({last!r})\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful ``core stop now``; SIGKILL after ``timeout``; release /proc in any case."""
        proc = self._rt.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(
                    self.asterisk_cmd("-rx", "core stop now"),
                    check=False,
                    capture_output=True,
                    timeout=timeout,
                    stdin=subprocess.DEVNULL,
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
        self._rt.kill()

    def restart(self, timeout: float = 60.0) -> None:
        self.stop()
        self.start(timeout)

    def cli(self, command: str, timeout: float = 10.0) -> str:
        """Run one CLI command (``asterisk -rx``) and return its output."""
        if not self.running:
            raise PbxError(f"instance {self.spec.instance} is not running")
        res = subprocess.run(
            self.asterisk_cmd("-rx", command),
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if res.returncode != 0:
            raise PbxError(f"asterisk -rx {command!r} failed ({res.returncode}): {res.stderr.strip()}")
        return res.stdout

    def active_channels(self) -> int:
        out = self.cli("core show channels count")
        for line in out.splitlines():
            if "active channel" in line:
                return int(line.split()[0])
        raise PbxError(f"unexpected 'core show channels count' output: {out!r}")

    def wait_idle(self, timeout: float = 20.0) -> None:
        """Block until no channel is up (between tests, so one test's call never leaks)."""
        deadline = time.monotonic() + timeout
        while self.active_channels() > 0:
            if time.monotonic() > deadline:
                raise PbxError("channels still up:\n" + self.cli("core show channels concise"))
            time.sleep(0.2)

    # -- async wrappers ------------------------------------------------------------------------
    async def astart(self, timeout: float = 60.0) -> None:
        await asyncio.to_thread(self.start, timeout)

    async def astop(self, timeout: float = 15.0) -> None:
        await asyncio.to_thread(self.stop, timeout)

    async def acli(self, command: str, timeout: float = 10.0) -> str:
        return await asyncio.to_thread(self.cli, command, timeout)

    async def await_idle(self, timeout: float = 20.0) -> None:
        await asyncio.to_thread(self.wait_idle, timeout)

    # -- context managers ----------------------------------------------------------------------
    def __enter__(self) -> TestPbx:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> TestPbx:
        await self.astart()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.astop()
