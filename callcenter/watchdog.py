"""A stand-in for systemd's service watchdog, for the demo and for machines without systemd as PID 1.

Production runs ``callcenter run`` from ``deploy/systemd/callcenter.service`` (``Type=notify``,
``WatchdogSec=``, ``Restart=always``). Where PID 1 is not systemd (this sandbox, a container, the
demo) ``callcenter supervise`` does the same job with the same protocol, so the app runs the way it
does in production:

* bind a unix datagram socket and start the app with ``$NOTIFY_SOCKET`` and ``$WATCHDOG_USEC``;
* accept datagrams only from the app's own process (``NotifyAccess=main``: the kernel's
  ``SCM_CREDENTIALS`` says who sent each one);
* the app must send ``READY=1`` within ``start_timeout`` and then ``WATCHDOG=1`` at least once per
  ``watchdog_sec``; when it does not, it gets SIGABRT (Python's faulthandler prints every thread's
  stack: the post-mortem of a blocked loop) and SIGKILL ``abort_timeout`` later (a SIGSTOPped process
  cannot act on SIGABRT), like ``WatchdogSignal=SIGABRT`` + ``TimeoutAbortSec=``;
* whatever way the app ends, it is started again after ``restart_sec`` (``Restart=always``), except
  for an exit with a configuration error before it was ever ready (``RestartPreventExitStatus=2``):
  restarting cannot fix a bad file;
* SIGTERM/SIGINT to the supervisor stop the app with SIGTERM, SIGKILL after ``stop_timeout``.

Killing the frozen process is what closes its sockets: Asterisk's AGI sessions to it end and the
dialplan goes on (``docs/never-wait.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import struct
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from callcenter.notify import NOTIFY_SOCKET, WATCHDOG_PID, WATCHDOG_USEC

log = structlog.get_logger("callcenter.watchdog")

#: ``struct ucred`` from ``SCM_CREDENTIALS``: pid, uid, gid.
_UCRED = struct.Struct("iII")
#: Exit status of ``callcenter`` for a configuration error (see ``cli.py``).
CONFIG_ERROR = 2


@dataclass(frozen=True)
class WatchdogSettings:
    """The systemd unit's settings this stand-in honours, with the same meaning."""

    #: ``WatchdogSec=``: longest silence between two ``WATCHDOG=1``.
    watchdog_sec: float = 3.0
    #: ``TimeoutStartSec=``: from start to ``READY=1`` (migrations, the flag index, listeners).
    start_timeout: float = 60.0
    #: ``RestartSec=``.
    restart_sec: float = 0.5
    #: ``TimeoutStopSec=``: SIGTERM to SIGKILL on an orderly stop.
    stop_timeout: float = 15.0
    #: ``TimeoutAbortSec=``: SIGABRT to SIGKILL after a watchdog timeout.
    abort_timeout: float = 2.0

    def __post_init__(self) -> None:
        for name in ("watchdog_sec", "start_timeout", "stop_timeout", "abort_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


def parse(datagram: bytes) -> dict[str, str]:
    """``KEY=VALUE`` lines of one sd_notify datagram; lines without ``=`` are ignored, as systemd does."""
    fields: dict[str, str] = {}
    for line in datagram.decode("utf-8", "replace").split("\n"):
        key, sep, value = line.partition("=")
        if sep and key:
            fields[key] = value
    return fields


class NotifySocket:
    """The receiving end of ``$NOTIFY_SOCKET``: datagrams with their sender's pid, on the event loop."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(str(self.path))
        os.chmod(self.path, 0o600)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.setblocking(False)
        self.messages: asyncio.Queue[tuple[int, dict[str, str]]] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                data, ancillary, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(_UCRED.size))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("watchdog.receive_failed", error=str(exc))
                return
            pid = 0
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= _UCRED.size:
                    pid = _UCRED.unpack_from(payload)[0]
            self.messages.put_nowait((pid, parse(data)))

    def close(self) -> None:
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()


class Supervisor:
    """Runs ``argv`` under the watchdog until ``stop`` is set; see the module docstring."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        settings: WatchdogSettings | None = None,
        on_ready: Callable[[int, int], None] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(os.environ if env is None else env)
        self.settings = settings or WatchdogSettings()
        #: Called with (pid, how many times the app was started before) at each ``READY=1``.
        self.on_ready = on_ready
        self.pid: int | None = None
        #: Where the app's datagrams go while ``run`` runs.
        self.notify_path: Path | None = None
        self.starts = 0
        self.watchdog_kills = 0

    async def run(self, stop: asyncio.Event) -> int:
        """Supervise until ``stop``; the exit status is the app's last when it could not be kept running."""
        directory = Path(tempfile.mkdtemp(prefix="callcenter-notify-"))
        notify = NotifySocket(directory)
        self.notify_path = notify.path
        try:
            while not stop.is_set():
                code, was_ready = await self._run_once(notify, stop)
                if stop.is_set():
                    return 0
                if code == CONFIG_ERROR and not was_ready:
                    log.error("watchdog.gave_up", code=code, reason="configuration error")
                    return code
                log.warning("watchdog.restarting", after=self.settings.restart_sec, last_code=code)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.restart_sec):
                        await stop.wait()
            return 0
        finally:
            notify.close()
            shutil.rmtree(directory, ignore_errors=True)

    async def _run_once(self, notify: NotifySocket, stop: asyncio.Event) -> tuple[int, bool]:
        s = self.settings
        env = {
            **self.env,
            NOTIFY_SOCKET: str(notify.path),
            WATCHDOG_USEC: str(int(s.watchdog_sec * 1_000_000)),
        }
        # systemd sets WATCHDOG_PID between fork and exec; we cannot, and an inherited one would be wrong.
        env.pop(WATCHDOG_PID, None)
        proc = await asyncio.create_subprocess_exec(*self.argv, env=env, stdin=asyncio.subprocess.DEVNULL)
        self.pid = proc.pid
        started = time.monotonic()
        log.info("watchdog.spawned", pid=proc.pid, start=self.starts)
        self.starts += 1
        exited = asyncio.ensure_future(proc.wait())
        stopping = asyncio.ensure_future(stop.wait())
        ready = False
        deadline = started + s.start_timeout
        last_ping = started
        try:
            while True:
                message = asyncio.ensure_future(notify.messages.get())
                left = max(0.0, deadline - time.monotonic())
                await asyncio.wait({exited, stopping, message}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                if not message.done():
                    message.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await message
                elif message.exception() is None:
                    pid, fields = message.result()
                    if pid != proc.pid:
                        log.warning("watchdog.foreign_message", sender=pid, pid=proc.pid, keys=sorted(fields))
                    else:
                        now = time.monotonic()
                        if fields.get("READY") == "1" and not ready:
                            ready = True
                            log.info("watchdog.ready", pid=proc.pid, startup_seconds=round(now - started, 3))
                            if self.on_ready is not None:
                                self.on_ready(proc.pid, self.starts - 1)
                        if fields.get("STOPPING") == "1":
                            log.info("watchdog.app_stopping", pid=proc.pid)
                        if ready and ("WATCHDOG" in fields or "READY" in fields):
                            last_ping = now
                            deadline = now + s.watchdog_sec
                if exited.done():
                    code = exited.result()
                    log.warning("watchdog.exited", pid=proc.pid, code=code, was_ready=ready)
                    return code, ready
                if stopping.done():
                    return await self._terminate(proc, exited), ready
                if time.monotonic() >= deadline:
                    what = "watchdog" if ready else "start"
                    silent = time.monotonic() - (last_ping if ready else started)
                    log.error("watchdog.timeout", pid=proc.pid, kind=what, silent_for=round(silent, 3))
                    self.watchdog_kills += 1
                    return await self._abort(proc, exited), ready
        finally:
            stopping.cancel()
            if not exited.done():
                exited.cancel()

    async def _abort(self, proc: asyncio.subprocess.Process, exited: asyncio.Future[int]) -> int:
        """SIGABRT (a stack dump from faulthandler), then SIGKILL for a process that cannot act on it."""
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGABRT)
        done, _ = await asyncio.wait({exited}, timeout=self.settings.abort_timeout)
        if not done:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        code = await exited
        log.warning("watchdog.killed", pid=proc.pid, code=code)
        return code

    async def _terminate(self, proc: asyncio.subprocess.Process, exited: asyncio.Future[int]) -> int:
        log.info("watchdog.stopping", pid=proc.pid)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        done, _ = await asyncio.wait({exited}, timeout=self.settings.stop_timeout)
        if not done:
            log.warning("watchdog.stop_timeout", pid=proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        return await exited


async def supervise(argv: Sequence[str], settings: WatchdogSettings, env: Mapping[str, str] | None = None) -> int:
    """``callcenter supervise``: run until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return await Supervisor(argv, env=env, settings=settings).run(stop)
