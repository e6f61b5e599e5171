"""The P2 benchmark's process-AGI baseline (``bench/pyst2_incoming.py``) must do the route's work.

The benchmark compares our FastAGI route with this script; when the route's helpers changed, the
script once crashed right after its imports and the comparison measured a crash. Run as Asterisk
runs a process AGI (``agi_*`` block on stdin, commands on stdout), it must route and write the call.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

import pytest

from callcenter.config import QueueConfig
from callcenter.store import Calls, Store

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "pyst2_incoming.py"


async def _run_script(db: Path, caller: str, uniqueid: str) -> list[str]:
    header = (
        f"agi_request: pyst2_incoming.py\nagi_channel: PJSIP/citizen-00000001\nagi_uniqueid: {uniqueid}\n"
        f"agi_callerid: {caller}\nagi_extension: 112\n\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        "",
        "112",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"CC_BENCH_DB": str(db), "PATH": "/usr/bin:/bin"},
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(header.encode())
    commands = []
    async with asyncio.timeout(60):
        while line := await proc.stdout.readline():
            commands.append(line.decode().rstrip("\n"))
            proc.stdin.write(b"200 result=1\n")
        stderr = await proc.stderr.read()
        rc = await proc.wait()
    assert rc == 0, stderr.decode(errors="replace")[-2000:]
    return commands


@pytest.fixture
async def bench_db(tmp_path: Path) -> Path:
    db = tmp_path / "pyst2.db"
    store = Store.from_url(f"sqlite+aiosqlite:///{db}")
    await store.upgrade()
    calls = Calls(store)
    await calls.flag_number("+6281200000003", "prank")
    for _ in range(QueueConfig().prank_threshold):
        await calls.flag_number("+6281200000009", "hoax")
    await store.close()
    return db


async def test_routes_and_writes_the_call_like_the_route(bench_db: Path) -> None:
    commands = await _run_script(bench_db, "081200000003", "1795000000.1")
    queue = QueueConfig()
    assert commands[1:] == [
        f'SET VARIABLE "CC_PRIO" "{queue.default_priority}"',
        f'SET VARIABLE "CC_LANG" "{queue.language}"',
        'SET VARIABLE "CC_ROUTED" "1"',
    ]
    call_id = commands[0].removeprefix('SET VARIABLE "CC_CALL_ID" "').removesuffix('"')
    with sqlite3.connect(bench_db) as db:
        call = db.execute("select id, caller_number, routed_by, queue_priority from calls").fetchall()
        kinds = [k for (k,) in db.execute("select kind from call_events where call_id = ? order by id", (call_id,))]
    assert call == [(call_id, "+6281200000003", "agi", queue.default_priority)]
    assert kinds == ["arrived", "routed"]


async def test_a_repeat_prankster_waits_behind_and_hears_the_reminder(bench_db: Path) -> None:
    commands = await _run_script(bench_db, "081200000009", "1795000000.2")
    queue = QueueConfig()
    assert f'SET VARIABLE "CC_PRIO" "{queue.prank_priority}"' in commands
    assert any(c.startswith("STREAM FILE") and "callcenter/cc-prank-reminder" in c for c in commands)
    assert commands[-1] == 'SET VARIABLE "CC_ROUTED" "1"'
