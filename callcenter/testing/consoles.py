"""Logged-in consoles on real WebSockets and latency figures, for the benchmarks that time a message
reaching a call-taker's screen (``bench/p3_pop.py``, ``bench/p8_aml.py``)."""

from __future__ import annotations

import asyncio
import secrets
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from callcenter.testing.app import AppProcess
from callcenter.testing.fake_ami import FakeAmi
from callcenter.testing.machine import machine_line
from callcenter.testing.sipp import free_port
from callcenter.testing.web import login_session

__all__ = ["Console", "app_on_fake_ami", "latency_table", "pct"]


def pct(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def app_on_fake_ami(
    tmp: Path, store_url: str, extra_env: Mapping[str, str] | None = None
) -> tuple[FakeAmi, AppProcess]:
    """The app as its own process on ``store_url`` (log in ``tmp``), its AMI a scripted ``FakeAmi`` the bench
    drives: no PBX, so what is timed is the app alone. Both are started; the caller stops them."""
    fake = FakeAmi()
    await fake.start()
    env = {
        "CALLCENTER_AMI_PORT": str(fake.port),
        "CALLCENTER_AMI_USERNAME": fake.username,
        "CALLCENTER_AMI_SECRET": fake.secret,
        "CALLCENTER_AGI_PORT": str(free_port("tcp")),
        "CALLCENTER_AGI_SECRET": secrets.token_urlsafe(24),
        "CALLCENTER_STORE_URL": store_url,
        "CALLCENTER_LOG_LEVEL": "INFO",
        **(extra_env or {}),
    }
    app = AppProcess(env, tmp / "app.log", free_port("tcp"))
    await app.start()
    return fake, app


class Console:
    """One logged-in browser tab: a session cookie and the live WebSocket. ``on_message(data, at)`` hears
    every JSON message with this process's ``perf_counter`` at its arrival."""

    def __init__(
        self, base: str, username: str, password: str, on_message: Callable[[dict[str, Any], float], None]
    ) -> None:
        self.base = base
        self.username = username
        self.password = password
        self.on_message = on_message
        self.http: aiohttp.ClientSession | None = None
        self.task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Log in and connect. Open consoles one after another: concurrent logins from one address trip
        the login guard."""
        self.http = await login_session(self.base, self.username, self.password)
        ws = await self.http.ws_connect(f"{self.base}/api/ws")
        hello = await ws.receive_json()
        assert hello["type"] == "hello", hello
        self.task = asyncio.create_task(self._read(ws))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.on_message(msg.json(), time.perf_counter())

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.http is not None:
            await self.http.close()


def latency_table(header: str, consoles: int, what: str, latencies: list[float], lost: int) -> None:
    """Print the machine, the command and one table row: p50, p99, max and mean in ms."""
    print(f"machine: {machine_line()}")
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"{header}, {lost} lost\n")
    print(f"| consoles | {what} | p50 | p99 | max | mean | lost |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {consoles} | {len(latencies)} | {pct(latencies, 50):.1f} ms | {pct(latencies, 99):.1f} ms "
        f"| {max(latencies):.1f} ms | {statistics.mean(latencies):.1f} ms | {lost} |"
    )
