"""The callcenter app as a real child process, for end-to-end tests, benchmarks and the demo.

A child process (not an in-test event loop) because the promises under test are about the process:
it can be stopped, killed with SIGKILL in the middle of an AGI session, and started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from callcenter.pbx.harness import TestPbx
from callcenter.store import Store
from callcenter.testing import sipp
from callcenter.testing.wait import until
from callcenter.testing.web import make_user


def event_time(event: Mapping[str, Any]) -> float:
    """When the app logged ``event`` (its ISO ``timestamp``, UTC), as epoch seconds."""
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def pbx_env(pbx: TestPbx, agi_port: int, store_url: str) -> dict[str, str]:
    """Environment that wires an app to a running test PBX: ports, AMI secret, queue, paths.

    Asterisk runs in its chroot, so the paths it writes (recordings, briefing prompts) differ from the
    ones the app reads; both sides of each pair are set here, once for every end-to-end test.
    """
    return {
        "CALLCENTER_AGI_PORT": str(agi_port),
        "CALLCENTER_AGI_SECRET": pbx.spec.agi_secret,
        "CALLCENTER_AMI_PORT": str(pbx.spec.ami_port),
        "CALLCENTER_AMI_SECRET": pbx.spec.ami_secret,
        "CALLCENTER_AMI_RECONNECT_MAX": "1",
        "CALLCENTER_QUEUE_NAME": pbx.spec.queue,
        "CALLCENTER_STORE_URL": store_url,
        "CALLCENTER_QUEUE_RECORD_DIR": str(pbx.spec.record_path),
        "CALLCENTER_SUPERVISION_RECORDINGS_ROOT": str(pbx.chroot),
        "CALLCENTER_DISPATCH_PROMPT_DIR": str(pbx.host_dir / "prompts"),
        "CALLCENTER_DISPATCH_PROMPT_DIR_ASTERISK": str(pbx.spec.instance_dir / "prompts"),
        # Tests ring the test phones unanswered on purpose (abandon, overflow): no auto-pause unless a
        # test turns it on (tests/e2e/test_wallboard_controls_browser.py does).
        "CALLCENTER_QUEUE_AUTOPAUSE_AFTER": "0",
    }


def dispatch_env(pbx: TestPbx, agi_port: int, store_url: str, agencies: Path) -> dict[str, str]:
    """``pbx_env`` plus an agencies file, one attempt per line and a 20 s accept window: dispatch tests."""
    return {
        **pbx_env(pbx, agi_port, store_url),
        "CALLCENTER_DISPATCH_AGENCIES_FILE": str(agencies),
        "CALLCENTER_DISPATCH_ATTEMPTS_PER_LINE": "1",
        "CALLCENTER_DISPATCH_ACCEPT_TIMEOUT": "20",
    }


class AppProcess:
    """``callcenter run`` as a child process; ``command=("supervise", …)`` runs it under the watchdog
    stand-in instead (``proc`` is then the supervisor, and the app's pid is in its log)."""

    def __init__(
        self, env: Mapping[str, str], log_path: Path, web_port: int, command: Sequence[str] = ("run",)
    ) -> None:
        self.env = dict(env)
        self.command = tuple(command)
        self.log_path = log_path
        self.web_port = web_port
        self.proc: asyncio.subprocess.Process | None = None
        self._log_offset = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    async def start(self, *, wait_ami: bool = True, timeout: float = 30.0) -> None:
        env = {**os.environ, **self.env, "CALLCENTER_WEB_PORT": str(self.web_port), "CALLCENTER_LOG_JSON": "true"}
        # ``callcenter run`` needs a FastAGI secret; an app wired to a PBX gets the PBX's (pbx_env), one
        # without a PBX (browser tests on seeded data) a throwaway: no Asterisk will ever ask it anything.
        env.setdefault("CALLCENTER_AGI_SECRET", secrets.token_urlsafe(24))
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "callcenter.cli",
            *self.command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
        )
        log.close()
        try:
            await until(lambda: self.healthy(require_ami=wait_ami), timeout=timeout, what="app healthy")
        except BaseException:
            # A start that failed must not leave the process behind (a fixture that raises never stops it).
            await self.kill()
            raise

    async def healthy(self, *, require_ami: bool = True) -> bool:
        if self.proc is None or self.proc.returncode is not None:
            raise RuntimeError(f"app exited with {self.proc and self.proc.returncode}:\n{self.log_tail()}")
        try:
            async with aiohttp.ClientSession() as http, http.get(f"{self.base_url}/healthz") as resp:
                return resp.status == 200 or (not require_ami and resp.status == 503)
        except aiohttp.ClientError:
            return False

    async def get_json(self, path: str) -> Any:
        async with aiohttp.ClientSession() as http, http.get(f"{self.base_url}{path}") as resp:
            resp.raise_for_status()
            return await resp.json()

    async def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait: an orderly shutdown, as systemd does it."""
        return await self._end(signal.SIGTERM, timeout)

    async def kill(self) -> int | None:
        """SIGKILL: the app dies on the spot, open AGI sessions and all."""
        return await self._end(signal.SIGKILL, 10.0)

    async def _end(self, sig: signal.Signals, timeout: float) -> int | None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return None if proc is None else proc.returncode
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            async with asyncio.timeout(timeout):
                return await proc.wait()
        except TimeoutError:
            proc.kill()
            return await proc.wait()

    def log_lines(self, since_start: bool = True) -> list[dict[str, Any]]:
        """The app's JSON log lines (this run's only, by default); other lines are skipped."""
        if not self.log_path.exists():
            return []
        with self.log_path.open("rb") as f:
            if since_start:
                f.seek(self._log_offset)
            raw = f.read().decode(errors="replace")
        lines = []
        for line in raw.splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    lines.append(entry)
        return lines

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.log_lines() if e.get("event") == name]

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    async def wait_event(self, name: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(name)
            if found:
                return found[-1]
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no log event {name!r} within {timeout}s:\n{self.log_tail()}")


@contextlib.asynccontextmanager
async def pbx_app(
    pbx: TestPbx,
    pbx_ports: dict[str, int],
    tmp_path: Path,
    users: Mapping[str, tuple[str, str | None]],
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[tuple[AppProcess, Store]]:
    """The app as a child process on the test PBX (SQLite in ``tmp_path``) with ``users``
    (username -> (role, interface)), started and resynchronised with Asterisk; and its store."""
    await pbx.await_idle(timeout=30)
    url = f"sqlite+aiosqlite:///{tmp_path}/callcenter.db"
    store = Store.from_url(url, retry_for=5)
    await store.upgrade()
    for username, (role, interface) in users.items():
        await make_user(store, username, role, interface=interface)
    app = AppProcess(
        {**pbx_env(pbx, pbx_ports["agi"], url), **(env or {})}, tmp_path / "app.log", sipp.free_port("tcp")
    )
    try:
        await app.start()
        await app.wait_event("supervision.ready")
        await app.wait_event("tracker.resynced")
        yield app, store
    finally:
        await app.stop()
        await store.close()
