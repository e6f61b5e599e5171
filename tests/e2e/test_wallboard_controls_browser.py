"""End-to-end in Chromium on the real PBX: a supervisor controls call-takers' presence from the wallboard.

Pause with a reason and unpause the static member taker1, log out a call-taker who joined the queue from
their console (taker2), each confirmed by what Asterisk reports back, with the time in state shown; then
taker1's phone lets offered calls ring out until the app pauses it with the reason "tidak menjawab" and
the wallboard alerts the supervisor.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from callcenter.dispatch.speech import wav_seconds
from callcenter.pbx.harness import TestPbx
from callcenter.store import Store
from callcenter.store.models import AccessLog, CallEvent
from callcenter.testing import sipp
from callcenter.testing.app import AppProcess, pbx_app
from callcenter.testing.browser import log_in, phone_port, rows
from callcenter.testing.wait import until
from callcenter.testing.web import login_session

pytestmark = pytest.mark.pbx

AUTOPAUSE_AFTER = 2


@pytest.fixture
async def wb_app(pbx: TestPbx, pbx_ports: dict[str, int], tmp_path: Path) -> AsyncIterator[tuple[AppProcess, Store]]:
    users = {"sari": ("supervisor", None), "ayu": ("calltaker", "PJSIP/taker1"), "budi": ("calltaker", "PJSIP/taker2")}
    env = {"CALLCENTER_QUEUE_AUTOPAUSE_AFTER": str(AUTOPAUSE_AFTER)}
    async with pbx_app(pbx, pbx_ports, tmp_path, users, env) as started:
        yield started


async def member_state(page: Page, interface: str) -> str | None:
    return await page.get_by_test_id(f"wb-member-{interface.replace('/', '-')}").get_attribute("data-state")


async def test_wallboard_presence_controls(wb_app: tuple[AppProcess, Store], browser: Browser, pbx: TestPbx) -> None:
    app, store = wb_app
    context = await browser.new_context(viewport={"width": 1400, "height": 1000}, base_url=app.base_url)
    page = await context.new_page()
    phones: list[sipp.SippProcess] = []
    try:
        await log_in(page, app.base_url, "sari")
        await page.goto(app.base_url + "/supervisor#wallboard")
        await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "online", timeout=10_000)
        taker1 = page.get_by_test_id("wb-member-PJSIP-taker1")
        await expect(taker1).to_have_attribute("data-state", "ready", timeout=10_000)
        # Seen at the app's start (a resync): the state began before, so the time reads as a lower bound.
        await expect(taker1.get_by_test_id("wb-member-time")).to_have_text(re.compile(r"^≥ \d+:\d\d$"))

        # 1. Pause with a reason, as Asterisk reports it; the time in the pause counts from its start.
        await page.get_by_test_id("wb-reason-PJSIP-taker1").select_option("training")
        await page.get_by_test_id("wb-pause-PJSIP-taker1").click()
        await expect(taker1).to_have_attribute("data-state", "paused", timeout=10_000)
        await expect(taker1).to_have_attribute("data-reason", "training")
        await expect(taker1).to_contain_text("Pelatihan")
        await expect(taker1.get_by_test_id("wb-member-time")).to_have_text(re.compile(r"^0:0\d$"))
        await page.get_by_test_id("wb-unpause-PJSIP-taker1").click()
        await expect(taker1).to_have_attribute("data-state", "ready", timeout=10_000)

        # 2. Log out a call-taker who joined from their console.
        budi = await login_session(app.base_url, "budi")
        async with budi, budi.post(f"{app.base_url}/api/presence", json={"action": "login"}) as resp:
            assert resp.status == 202, await resp.text()
        taker2 = page.get_by_test_id("wb-member-PJSIP-taker2")
        await expect(taker2).to_have_attribute("data-state", "ready", timeout=10_000)
        await page.get_by_test_id("wb-logout-PJSIP-taker2").click()
        await expect(taker2).to_have_count(0, timeout=10_000)
        traces = await rows(store, AccessLog, AccessLog.subject_type == "member")
        assert sorted((t.action, t.subject_id) for t in traces) == [
            ("presence_logout", "PJSIP/taker2"),
            ("presence_pause", "PJSIP/taker1"),
            ("presence_unpause", "PJSIP/taker1"),
        ]

        # 3. taker1's phone rings and nobody answers: after AUTOPAUSE_AFTER ring-outs the app pauses it.
        ringing = await sipp.answerer(phone_port(pbx, "taker1"), answer_after=120, max_calls=None, timeout=120)
        phones.append(ringing)
        greeting = wav_seconds(pbx.repo_root / "sounds" / "cc-greeting.wav")
        for n in range(AUTOPAUSE_AFTER + 1):
            if await member_state(page, "PJSIP/taker1") == "paused":
                break
            # Past the test PBX's 3 s queue timeout: the ring times out (AgentRingNoAnswer), then overflow.
            caller = await sipp.early_hangup_caller(
                f"127.0.0.1:{pbx.spec.sip_port}", "112", caller_id=f"08123400000{n}", hangup_after=greeting + 4.5
            )
            phones.append(caller)
            await caller.wait()
            await pbx.await_idle()
        await expect(taker1).to_have_attribute("data-state", "paused", timeout=15_000)
        await expect(taker1).to_have_attribute("data-reason", "tidak menjawab")
        await expect(taker1).to_contain_text("Tidak menjawab")
        alert = page.get_by_test_id("wb-alert")
        await expect(alert).to_have_count(1, timeout=10_000)
        await expect(alert).to_contain_text("dijeda otomatis")
        missed = await rows(store, CallEvent, CallEvent.kind == "ring_no_answer")
        assert len(missed) >= AUTOPAUSE_AFTER, [(e.call_id, e.data) for e in missed]
        await ringing.stop()
        # The supervisor lets them back in.
        await page.get_by_test_id("wb-unpause-PJSIP-taker1").click()
        await expect(taker1).to_have_attribute("data-state", "ready", timeout=10_000)
    finally:
        for phone in phones:
            await phone.stop()
        await context.close()


@pytest.fixture
async def spy_app(pbx: TestPbx, pbx_ports: dict[str, int], tmp_path: Path) -> AsyncIterator[tuple[AppProcess, Store]]:
    users = {"sari": ("supervisor", "PJSIP/supervisor"), "ayu": ("calltaker", "PJSIP/taker1")}
    async with pbx_app(pbx, pbx_ports, tmp_path, users) as started:
        yield started


async def test_listen_whisper_barge_from_the_wallboard(
    spy_app: tuple[AppProcess, Store], browser: Browser, pbx: TestPbx, pbx_ports: dict[str, int]
) -> None:
    """A citizen talks to taker1; the supervisor listens, whispers and barges in turn from the wallboard:
    each time their own phone (SIPp) rings, answers and ChanSpy joins taker1's channel on the real PBX."""
    app, store = spy_app
    context = await browser.new_context(viewport={"width": 1400, "height": 1000}, base_url=app.base_url)
    page = await context.new_page()
    phones: list[sipp.SippProcess] = []
    try:
        await log_in(page, app.base_url, "sari")
        await page.goto(app.base_url + "/supervisor#wallboard")
        taker = await sipp.answerer(phone_port(pbx, "taker1"), answer_after=0.3, hangup_by="remote", timeout=120)
        phones.append(taker)
        greeting = wav_seconds(pbx.repo_root / "sounds" / "cc-greeting.wav")
        citizen = await sipp.caller(
            f"127.0.0.1:{pbx.spec.sip_port}", "112", caller_id="081234500099", hold_seconds=greeting + 40, timeout=90
        )
        phones.append(citizen)
        taker1 = page.get_by_test_id("wb-member-PJSIP-taker1")
        await expect(taker1).to_have_attribute("data-state", "busy", timeout=20_000)
        supervisor = await sipp.answerer(
            pbx_ports["supervisor"], answer_after=0.3, hold_seconds=2.5, hangup_by="remote", max_calls=None, timeout=90
        )
        phones.append(supervisor)
        for n, mode in enumerate(("listen", "whisper", "barge"), start=1):
            await page.get_by_test_id(f"wb-{mode}-PJSIP-taker1").click()
            await expect(page.get_by_test_id("wb-spy")).to_be_visible()

            def spied(count: int = n) -> bool:
                started = app.events("spy.started")
                return len(started) >= count and all("PJSIP/taker1-" in e.get("spyee", "") for e in started)

            await until(spied, timeout=20, what=f"ChanSpy {mode} started on taker1's channel")
            # On the real PBX: the supervisor's channel runs ChanSpy on taker1 with the mode's options.
            options = {"listen": "qES", "whisper": "qESw", "barge": "qESB"}[mode]

            def spying(opts: str = options) -> bool:
                return any(
                    line.startswith("PJSIP/supervisor-") and f"!ChanSpy!PJSIP/taker1-,{opts}!" in line
                    for line in pbx.cli("core show channels concise").splitlines()
                )

            await until(spying, timeout=10, what=f"ChanSpy {options} on the supervisor's channel")
        traces = await rows(store, AccessLog, AccessLog.subject_id == "PJSIP/taker1")
        assert sorted(t.action for t in traces) == ["spy_barge", "spy_listen", "spy_whisper"]
        assert all(t.detail["phone"] == "PJSIP/supervisor" for t in traces)
        result = await supervisor.stop()
        assert result.incoming == 3, result.errors
        pbx.cli("channel request hangup all")  # the citizen's 40 s call and the three spies
        await pbx.await_idle()
    finally:
        for phone in phones:
            await phone.stop()
        await context.close()
