"""``callcenter demo --nodes 2`` as the README runs it: the test PBX, a throwaway PostgreSQL, two app nodes
under their watchdogs, the demo's SIPp phones. A citizen's call placed with ``callcenter call`` is
routed and shows on the consoles of both nodes; Ctrl-C (SIGINT) stops everything and removes the
database."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from callcenter.config import load_config
from callcenter.demo import place_call, run_demo
from callcenter.testing.sipp import free_port
from callcenter.testing.wait import until
from callcenter.testing.web import login_session

pytestmark = [pytest.mark.pbx, pytest.mark.postgres]

PASSWORD = "demo-test-password-1"


def two_free_tcp_ports() -> int:
    """A port whose next one is free too (the demo's second node takes port + 1)."""
    while True:
        port = free_port("tcp")
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port


async def healthz(url: str) -> dict[str, Any] | None:
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as resp:
            return dict(await resp.json()) if resp.status == 200 else None
    except aiohttp.ClientError:
        return None


@pytest.fixture
def instance(pbx_chroot: Path) -> Iterator[str]:
    """The demo PBX's instance name for this run; its directory in the chroot is removed afterwards."""
    name = f"demotest{os.getpid()}"
    yield name
    shutil.rmtree(pbx_chroot / "srv" / f"cc-{name}", ignore_errors=True)


async def test_demo_with_two_nodes(
    instance: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As a user runs it: settings in the environment, which the demo's app nodes inherit.
    env = {
        "CALLCENTER_DEMO_PASSWORD": PASSWORD,
        "CALLCENTER_WEB_PORT": str(two_free_tcp_ports()),
        "CALLCENTER_AGI_PORT": str(two_free_tcp_ports()),
        "CALLCENTER_AMI_PORT": str(free_port("tcp")),
        "CALLCENTER_PBX_SIP_PORT": str(free_port("udp")),
        "CALLCENTER_PBX_INSTANCE": instance,
        # Not used with --nodes 2 (the demo's own PostgreSQL); a one-node run would write here.
        "CALLCENTER_STORE_URL": f"sqlite+aiosqlite:///{tmp_path}/unused.db",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = load_config()
    urls = [f"http://127.0.0.1:{config.web.port + i}" for i in range(2)]
    demo = asyncio.create_task(run_demo(config, nodes=2))
    try:

        async def up() -> bool:
            if demo.done():
                raise AssertionError(f"the demo ended early: {demo.result()}\n{capsys.readouterr().out}")
            bodies = await asyncio.gather(*(healthz(u) for u in urls))
            return all(bodies) and sorted(bool(b and b["leader"]) for b in bodies) == [False, True]

        await until(up, timeout=120, interval=0.5, what="both demo nodes healthy, one leading")
        assert await place_call(config, "112", "081234567890", hold=1.0) == 0
        for url in urls:
            async with await login_session(url, "ayu", PASSWORD) as http:

                async def recorded(http: aiohttp.ClientSession = http, url: str = url) -> bool:
                    async with http.get(f"{url}/api/calls") as resp:
                        return len((await resp.json())["calls"]) == 1

                await until(recorded, timeout=30, what=f"the call on {url}")
    finally:
        if not demo.done():
            os.kill(os.getpid(), signal.SIGINT)  # the demo's Ctrl-C
        code = await asyncio.wait_for(demo, timeout=60)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "node 2 running: console " + urls[1] in out
    found = re.search(r"throwaway PostgreSQL on 127\.0\.0\.1:(\d+)", out)
    assert found is not None, out
    # Everything is gone: the database server, the PBX instance.
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", int(found[1]))
    assert not [p for p in Path("/proc").glob("[0-9]*") if f"/srv/cc-{instance}/" in cmdline(p)], "Asterisk left"


def cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
