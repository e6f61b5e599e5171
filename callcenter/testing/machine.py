"""One line that says which machine a benchmark ran on, so every bench's figures carry it the same way."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The processor's model name from /proc/cpuinfo ('' where there is none)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return ""


def machine_line() -> str:
    """``nproc=2 (AMD EPYC …), Linux 6.1, Python 3.11.7``: printed at the top of every bench run."""
    return f"nproc={os.cpu_count()} ({cpu_model()}), Linux {platform.release()}, Python {platform.python_version()}"
