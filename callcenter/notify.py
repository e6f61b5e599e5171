"""The sd_notify(3) protocol, sender side: tell the service manager we are ready, alive, stopping.

systemd (``Type=notify``, ``WatchdogSec=``) passes a unix datagram socket in ``$NOTIFY_SOCKET`` and
the watchdog period in ``$WATCHDOG_USEC``; the service sends newline-separated ``KEY=VALUE``
datagrams to it: ``READY=1`` once it serves, ``WATCHDOG=1`` at least once per period, ``STOPPING=1``
when it shuts down. A service whose ``WATCHDOG=1`` stops arriving is killed and restarted.

Why this matters for a 112 centre: a frozen process (SIGSTOP, an event loop blocked by a bug, a
stuck disk read) keeps its sockets open, so Asterisk's AGI connections to it hang instead of
failing over. The pings come from a task on the event loop itself (:func:`keep_alive`), so a loop
that stops turning stops the pings and the manager replaces the process. Sending never blocks: the
socket is non-blocking and a datagram that does not fit is dropped (the next one follows).

The same protocol is spoken by our stand-in for systemd (``callcenter/watchdog.py``) in the demo and
by the tests, which bind the socket themselves. ``sdnotify`` from PyPI does the same in blocking
mode; these few lines avoid a blocking send on the loop and a dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger("callcenter.notify")

NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"
#: Pings per watchdog period; systemd recommends at least two, three leaves room for a busy machine.
PINGS_PER_PERIOD = 3


def socket_address(value: str) -> str | bytes:
    """``$NOTIFY_SOCKET`` as ``sendto`` takes it: a path, or ``@name`` for the abstract namespace."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def watchdog_period(env: Mapping[str, str], pid: int | None = None) -> float | None:
    """The watchdog period in seconds, or None when no watchdog is asked of this process.

    As ``sd_watchdog_enabled(3)``: ``$WATCHDOG_USEC`` must be a positive integer, and when
    ``$WATCHDOG_PID`` is set it must name this process (a child that inherited the variables must not
    ping for its parent).
    """
    raw = env.get(WATCHDOG_USEC, "")
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = env.get(WATCHDOG_PID, "")
    if owner:
        try:
            if int(owner) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return usec / 1_000_000


def encode(fields: Mapping[str, str]) -> bytes:
    """One datagram: ``KEY=VALUE`` lines; newlines inside a value would start a forged key, so they go."""
    lines = []
    for key, value in fields.items():
        if not key or not key.replace("_", "").isalnum() or not key.isupper():
            raise ValueError(f"bad sd_notify key {key!r}")
        lines.append(f"{key}={value.replace(chr(10), ' ')}")
    return ("\n".join(lines) + "\n").encode()


class Notifier:
    """Sends sd_notify datagrams when ``$NOTIFY_SOCKET`` is set; does nothing otherwise."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get(NOTIFY_SOCKET, "")
        self.address: str | bytes | None = socket_address(address) if address else None
        self.watchdog = watchdog_period(env)
        self._sock: socket.socket | None = None
        self._warned = False
        self.sent = 0
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str) -> bool:
        """Send one datagram (e.g. ``send(READY="1", STATUS="serving")``); False if it could not go now."""
        if self.address is None:
            return False
        data = encode(fields)
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(data, self.address)
        except OSError as exc:
            # A full queue (the manager is slow) or a manager that went away: never block, never raise.
            # One warning, not one per ping: a dead manager would otherwise flood the log.
            self.dropped += 1
            if not self._warned:
                self._warned = True
                log.warning("notify.send_failed", error=str(exc), fields=sorted(fields))
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


async def keep_alive(notifier: Notifier, period: float | None = None) -> None:
    """Send ``WATCHDOG=1`` several times per watchdog period, for as long as the event loop turns.

    Deliberately a plain task with ``asyncio.sleep``: if anything blocks the loop, this stops too.
    """
    period = notifier.watchdog if period is None else period
    if period is None or not notifier.enabled:
        return
    interval = period / PINGS_PER_PERIOD
    log.info("notify.watchdog", period=period, interval=round(interval, 3))
    while True:
        notifier.send(WATCHDOG="1")
        await asyncio.sleep(interval)
