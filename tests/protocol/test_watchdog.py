"""The watchdog protocol over real unix datagram sockets: the app's pings, and our stand-in for systemd.

The test binds the ``$NOTIFY_SOCKET`` itself, as systemd does, and reads what arrives with the kernel's
sender credentials. Receiving runs in a thread: the point of the pings is what happens when an event
loop stops turning, so the listener must not share one.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from callcenter.notify import Notifier, keep_alive
from callcenter.testing.app import AppProcess
from callcenter.testing.sipp import free_port
from callcenter.testing.wait import until
from callcenter.watchdog import CONFIG_ERROR, Supervisor, WatchdogSettings, parse

UCRED = struct.Struct("iII")


class Listener:
    """A bound NOTIFY_SOCKET; every datagram with its arrival time and sender pid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.1)
        self.received: list[tuple[float, int, dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(UCRED.size))
            except TimeoutError:
                continue
            pid = next((UCRED.unpack_from(p)[0] for lvl, kind, p in anc if kind == socket.SCM_CREDENTIALS), 0)
            self.received.append((time.monotonic(), pid, parse(data)))

    def times(self, key: str, since: float = 0.0) -> list[float]:
        return [t for t, _, fields in list(self.received) if key in fields and t >= since]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    lst = Listener(tmp_path / "notify")
    yield lst
    lst.close()


async def test_pings_stop_while_the_loop_is_blocked(listener: Listener) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "300000"})
    pinger = asyncio.create_task(keep_alive(notifier))
    await asyncio.sleep(0.5)
    blocked_at = time.monotonic()
    time.sleep(0.8)  # noqa: ASYNC251 - the bug under test: a synchronous call blocking the event loop
    unblocked_at = time.monotonic()
    await asyncio.sleep(0.4)
    pinger.cancel()
    notifier.close()
    pings = listener.times("WATCHDOG")
    assert all(pid == os.getpid() for _, pid, _ in listener.received)
    before = [t for t in pings if t < blocked_at]
    after = [t for t in pings if t > unblocked_at + 0.05]
    assert len(before) >= 4 and len(after) >= 2, pings
    # Nothing while the loop was blocked: the last ping before it and the first after it frame the block.
    during = [t for t in pings if blocked_at + 0.01 < t < unblocked_at]
    assert during == [], (during, blocked_at, unblocked_at)
    gaps = [b - a for a, b in itertools.pairwise(before)]
    assert max(gaps) < 0.3, gaps  # period / 3 while the loop turns


async def test_the_app_reports_ready_pings_and_stopping(listener: Listener, tmp_path: Path) -> None:
    env = {
        "NOTIFY_SOCKET": str(listener.path),
        "WATCHDOG_USEC": "1000000",
        "CALLCENTER_AGI_PORT": str(free_port("tcp")),
        # Nothing listens here: the app is ready without Asterisk (AMI keeps reconnecting).
        "CALLCENTER_AMI_PORT": str(free_port("tcp")),
        "CALLCENTER_STORE_URL": f"sqlite+aiosqlite:///{tmp_path}/cc.db",
        "CALLCENTER_DISPATCH_PROMPT_DIR": str(tmp_path / "prompts"),
        "CALLCENTER_DISPATCH_UPLOAD_DIR": str(tmp_path / "uploads"),
    }
    app = AppProcess(env, tmp_path / "app.log", free_port("tcp"))
    await app.start(wait_ami=False)
    assert app.proc is not None
    pid = app.proc.pid
    try:
        await until(lambda: bool(listener.times("READY")), timeout=10, what="READY=1")
        ready = next(fields for _, _, fields in listener.received if "READY" in fields)
        assert ready["READY"] == "1" and ready["MAINPID"] == str(pid)
        assert {p for _, p, _ in listener.received} == {pid}  # what systemd's NotifyAccess=main checks
        await asyncio.sleep(1.2)
        running = listener.times("WATCHDOG")
        assert len(running) >= 3, running

        os.kill(pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        await asyncio.sleep(1.5)
        silent = listener.times("WATCHDOG", since=stopped_at + 0.05)
        os.kill(pid, signal.SIGCONT)
        assert silent == [], "a frozen process must not look alive"
        resumed_at = time.monotonic()
        await until(lambda: bool(listener.times("WATCHDOG", since=resumed_at)), timeout=5, what="pings resume")
    finally:
        os.kill(pid, signal.SIGCONT)
        await app.stop()
    assert app.proc.returncode == 0
    assert listener.times("STOPPING"), listener.received[-3:]


CHILD = """
import os, socket, sys, time
addr = os.environ["NOTIFY_SOCKET"]
period = int(os.environ["WATCHDOG_USEC"]) / 1e6
marker = sys.argv[1]
runs = int(open(marker).read() or 0) if os.path.exists(marker) else 0
open(marker, "w").write(str(runs + 1))
if sys.argv[2] == "config-error":
    sys.exit(2)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"READY=1\\nSTATUS=child\\n", addr)
while True:
    s.sendto(b"WATCHDOG=1\\n", addr)
    time.sleep(period / 4)
"""


async def test_supervisor_replaces_a_frozen_child(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    readies: list[int] = []
    settings = WatchdogSettings(watchdog_sec=0.6, start_timeout=10, restart_sec=0.1, abort_timeout=0.3)
    sup = Supervisor(
        [sys.executable, str(script), str(tmp_path / "runs"), "ping"],
        settings=settings,
        on_ready=lambda pid, _n: readies.append(pid),
    )
    stop = asyncio.Event()
    running = asyncio.create_task(sup.run(stop))
    try:
        await until(lambda: len(readies) == 1, timeout=10, what="first READY")
        first = readies[0]
        await asyncio.sleep(1.0)
        assert sup.watchdog_kills == 0  # a pinging child is left alone
        os.kill(first, signal.SIGSTOP)
        frozen_at = time.monotonic()
        # Pings from any other process (here: the test) do not count for the child: NotifyAccess=main.
        forger = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        for _ in range(10):
            forger.sendto(b"WATCHDOG=1\n", str(sup.notify_path))
            await asyncio.sleep(0.05)
        forger.close()
        await until(lambda: len(readies) == 2, timeout=10, what="replacement READY")
        replaced_in = time.monotonic() - frozen_at
        assert readies[1] != first and sup.watchdog_kills == 1
        with pytest.raises(ProcessLookupError):
            os.kill(first, 0)  # the frozen process is gone, not just forgotten
        # watchdog_sec of silence, SIGABRT it cannot act on, SIGKILL after abort_timeout, restart.
        assert replaced_in < settings.watchdog_sec + settings.abort_timeout + settings.restart_sec + 3
    finally:
        stop.set()
        assert await asyncio.wait_for(running, 10) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(readies[-1], 0)


async def test_supervisor_gives_up_on_a_configuration_error(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    sup = Supervisor(
        [sys.executable, str(script), str(tmp_path / "runs"), "config-error"],
        settings=WatchdogSettings(restart_sec=0.1),
    )
    code = await asyncio.wait_for(sup.run(asyncio.Event()), 10)
    assert code == CONFIG_ERROR
    assert (tmp_path / "runs").read_text() == "1"  # not restarted: a bad file does not fix itself
