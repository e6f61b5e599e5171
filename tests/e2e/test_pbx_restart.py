"""End-to-end: Asterisk restarts under the app while 112 calls keep arriving.

A PBX of this module's own (restarting the session's would take its static member along), with no
static queue members: every call-taker is in the queue only because the app put them there. After
Asterisk restarts (and forgets them), the app must put them back, pause state and reason included,
before the next caller reaches the queue: no caller finds an empty queue and overflows.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import time
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from callcenter.pbx.harness import TestPbx
from callcenter.pbx.render import PbxSpec
from callcenter.store import Calls, Store
from callcenter.testing import sipp
from callcenter.testing.ami import QueueProbe
from callcenter.testing.app import AppProcess, pbx_env
from callcenter.testing.wait import until
from callcenter.testing.web import login_session, make_user

pytestmark = pytest.mark.pbx

QUEUE = "calltakers"


@pytest.fixture(scope="module")
def restart_pbx(pbx_chroot: Path, repo_root: Path) -> Iterator[TestPbx]:
    ports: dict[str, int] = {}
    for name in ("sip", "taker1", "taker2", "supervisor"):
        while (port := sipp.free_port("udp")) in ports.values():
            pass
        ports[name] = port
    spec = PbxSpec(
        instance=f"pyrestart{os.getpid()}",
        sip_port=ports["sip"],
        ami_port=sipp.free_port("tcp"),
        ami_secret="pytest-restart",
        agi_url=f"agi://127.0.0.1:{sipp.free_port('tcp')}",
        agi_secret=secrets.token_urlsafe(24),
        queue_timeout=30,
        member_timeout=15,
        overflow_timeout=10,
        takers=(("taker1", ports["taker1"]), ("taker2", ports["taker2"])),
        supervisor_port=ports["supervisor"],
    )
    pbx = TestPbx(spec, pbx_chroot, repo_root)
    pbx.start()
    try:
        yield pbx
    finally:
        pbx.stop()
        shutil.rmtree(pbx.host_dir, ignore_errors=True)


@pytest.fixture
async def app(restart_pbx: TestPbx, tmp_path: Path) -> AsyncIterator[AppProcess]:
    agi_port = int(restart_pbx.spec.agi_url.rsplit(":", 1)[1])
    url = f"sqlite+aiosqlite:///{tmp_path}/callcenter.db"
    store = Store.from_url(url)
    await store.upgrade()
    await make_user(store, "ayu", "calltaker", interface="PJSIP/taker1")
    await make_user(store, "budi", "calltaker", interface="PJSIP/taker2")
    await store.close()
    proc = AppProcess(pbx_env(restart_pbx, agi_port, url), tmp_path / "app.log", sipp.free_port("tcp"))
    await proc.start()
    yield proc
    await proc.stop()


async def test_call_takers_back_in_the_queue_after_asterisk_restarts(
    app: AppProcess, restart_pbx: TestPbx, tmp_path: Path
) -> None:
    pbx = restart_pbx
    await app.wait_event("tracker.resynced")
    base = app.base_url
    async with await login_session(base, "ayu") as ayu, await login_session(base, "budi") as budi:
        for session, body in ((ayu, {"action": "login"}), (budi, {"action": "login"})):
            async with session.post(f"{base}/api/presence", json=body) as resp:
                assert resp.status == 202, await resp.text()
        async with budi.post(f"{base}/api/presence", json={"action": "pause", "reason": "break"}) as resp:
            assert resp.status == 202, await resp.text()
    want = {"PJSIP/taker1": (False, ""), "PJSIP/taker2": (True, "break")}
    url = f"sqlite+aiosqlite:///{tmp_path}/callcenter.db"
    store = Store.from_url(url, retry_for=5)
    callers: sipp.SippProcess | None = None
    taker = await sipp.answerer(dict(pbx.spec.takers)["taker1"], answer_after=0.5, max_calls=None, timeout=120)
    assert pbx.spec.supervisor_port is not None
    overflow = await sipp.answerer(pbx.spec.supervisor_port, answer_after=0.5, max_calls=None, timeout=120)
    try:
        async with QueueProbe(pbx.spec.ami_port, pbx.spec.ami_secret, QUEUE) as probe:
            await until(lambda: _members_are(probe, want), timeout=10, what="both call-takers in the queue")
            # Callers keep arriving, one every 3 s, each on the line for the greeting and a short talk.
            callers = await _callers(pbx, every=3.0, calls=6)
            await until(lambda: _answered(store, after=0.0), timeout=30, what="a call answered before the restart")

            await asyncio.to_thread(pbx.restart)
            booted = time.time()
            # Asterisk forgot them; the app puts both back, budi still on his break.
            await until(lambda: _members_are(probe, want), timeout=10, what="call-takers back after the restart")
            back_after = time.time() - booted
            # The next caller is answered by ayu, the restored call-taker (the only one not paused).
            await until(lambda: _answered(store, after=booted), timeout=30, what="a caller answered after the restart")
            kinds = [e.kind for e in await Calls(store).timeline(await _answered_call(store, after=booted))]
    finally:
        # A call whose INVITE met the stopped Asterisk would retransmit for half a minute: not waited for.
        await callers.stop() if callers is not None else None
        await taker.stop()
        overflow_res = await overflow.stop()
        await store.close()
    assert overflow_res.incoming == 0, "a caller found the queue empty and overflowed"
    assert back_after < 5.0, back_after
    assert {e["interface"] for e in app.events("presence.restored")} == set(want)
    # The tracker follows the restarted Asterisk: the call's timeline is whole.
    it = iter(kinds)
    assert all(k in it for k in ("routed", "queued", "ringing", "answered")), kinds


async def _callers(pbx: TestPbx, *, every: float, calls: int) -> sipp.SippProcess:
    """A SIPp citizen placing ``calls`` 112 calls, one every ``every`` s, each on the line for the greeting,
    the queue and a short talk."""
    with wave.open(str(pbx.repo_root / "sounds" / "cc-greeting.wav")) as w:
        hold = float(w.getnframes()) / float(w.getframerate()) + 4.0
    target = f"127.0.0.1:{pbx.spec.sip_port}"
    return await sipp.caller(target, "112", hold_seconds=hold, timeout=120, calls=calls, every=every)


async def _members_are(probe: QueueProbe, want: dict[str, tuple[bool, str]]) -> bool:
    try:
        return (await probe.snapshot(timeout=2)).members == want
    except Exception:
        return False  # Asterisk restarting: ask again


async def _answered_call(store: Store, *, after: float) -> str:
    """The id of a call that arrived after ``after`` (epoch s) and was answered by ayu; "" if none yet."""
    calls = Calls(store)
    for c in await calls.recent_calls(50):
        if c.answered_at is not None and c.arrived_at.timestamp() > after and c.answered_by in ("Ayu", "taker1"):
            return c.id
    return ""


async def _answered(store: Store, *, after: float) -> bool:
    return bool(await _answered_call(store, after=after))
