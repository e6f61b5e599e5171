"""The P5 surge benchmark (``bench/p5_surge.py``) still runs, on a handful of callers.

Benchmarks are not tests, but one that no longer runs measures nothing: a small surge through the real
PBX and the app must come out with every caller in Asterisk's queue_log, none lost, and the live picture
equal to QueueStatus (the script's exit status says so).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.pbx

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "p5_surge.py"


async def test_p5_surge_runs_on_a_small_surge(pbx_chroot: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        *("--calls", "6", "--rate", "6", "--dwell", "1", "--max-wait", "120"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(180):
        out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    row = next(line for line in text.splitlines() if line.startswith("| 6 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "6 / 0" and cells[3] == "6" and cells[4] == "0", row  # SIPp ok/failed, queue_log, lost
    assert cells[6].startswith("equal") and cells[7].startswith("equal"), row
