"""What the benchmarks in ``bench/`` share: the test PBX of a one-off run, starting a SIPp on loopback, and
the ``main()`` that runs a benchmark in a temporary directory and leaves no process behind.

A benchmark starts Asterisk, the app and SIPp as real processes; an interrupted or failed run must
still stop them (SIGKILL as the last resort, also at interpreter exit) and remove its directory.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from callcenter.pbx.harness import TestPbx
from callcenter.pbx.render import PbxSpec
from callcenter.testing.app import AppProcess
from callcenter.testing.sipp import LOOPBACK, SippProcess, free_media_port, free_port, sipp_binary


def bench_spec(*, sip_port: int, ami_port: int, agi_port: int, **options: Any) -> PbxSpec:
    """The test PBX of a benchmark run: named after this process, a fresh AGI secret, FastAGI on loopback;
    ``options`` are the benchmark's own :class:`PbxSpec` fields (and may override ``instance``/``ami_secret``)."""
    fields: dict[str, Any] = {
        "instance": f"bench{os.getpid()}",
        "ami_secret": "bench-secret",
        "agi_secret": secrets.token_urlsafe(24),
        **options,
    }
    return PbxSpec(sip_port=sip_port, ami_port=ami_port, agi_url=f"agi://127.0.0.1:{agi_port}", **fields)


async def bench_sipp(name: str, args: Sequence[str], workdir: Path, port: int | None = None) -> SippProcess:
    """Start SIPp with ``args`` (target, scenario, rates) bound to loopback, with a media port of its own,
    no stdin, and a failed call counted rather than fatal; its files go to a directory under ``workdir``."""
    port = port if port is not None else free_port("udp")
    media = free_media_port()
    wd = Path(tempfile.mkdtemp(prefix=f"sipp-{name}-", dir=workdir))
    command = [sipp_binary(), *args, "-i", LOOPBACK, "-p", str(port), "-mi", LOOPBACK, "-mp", str(media)]
    command += ["-nostdin", "-timeout_error", "-max_recv_loops", "1000"]
    return await SippProcess(name, command, wd, port, media).start()


def kill_now(sipps: Sequence[SippProcess], app: AppProcess | None, pbx: TestPbx | None) -> None:
    """SIGKILL what a benchmark started, synchronously: the last resort when it cannot stop them in order."""
    for s in sipps:
        s.kill()
    if app is not None and app.proc is not None and app.proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            app.proc.kill()
    if pbx is not None:
        pbx._rt.kill()


class Killable(Protocol):
    def kill_all(self) -> None: ...


K = TypeVar("K", bound=Killable)


def run_bench(prefix: str, keep: bool, run: Callable[[Path, list[K]], Coroutine[Any, Any, int]]) -> int:
    """``main()`` of a benchmark that needs root (the Asterisk chroot mounts /proc): ``run(workdir,
    holder)`` in a fresh temporary directory; whatever it puts in ``holder`` is killed at the end (and at
    interpreter exit), an interrupt answers 130, and the directory goes unless ``keep``."""
    if os.geteuid() != 0:
        print("needs root (the Asterisk chroot mounts /proc)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    holder: list[K] = []

    def kill_all() -> None:
        for item in holder:
            item.kill_all()

    atexit.register(kill_all)
    try:
        return asyncio.run(run(workdir, holder))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted; everything stopped", file=sys.stderr)
        return 130
    finally:
        kill_all()
        if keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


__all__ = ["bench_sipp", "bench_spec", "kill_now", "run_bench"]
