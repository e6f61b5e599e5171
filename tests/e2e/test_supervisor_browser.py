"""End-to-end in a real browser: Chromium drives the supervision page while SIPp citizens call 112 on
the real Asterisk and SIPp phones ring, answer or stay silent.

A supervisor's shift, in order: watch a caller wait and give up on the wallboard, find an answered
call in the log and listen to its recording (which leaves a trace in ``access_log``), read the day's
statistics, and call the citizen who gave up back with one click. A call-taker is kept out.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, expect

from callcenter.dispatch.speech import wav_seconds
from callcenter.pbx.harness import TestPbx
from callcenter.store import Store
from callcenter.store.incidents import Incidents
from callcenter.store.models import AccessLog, Call
from callcenter.testing import sipp
from callcenter.testing.app import AppProcess, pbx_app
from callcenter.testing.browser import call_back_from_page, log_in, phone_port, rows
from callcenter.testing.wait import until

pytestmark = pytest.mark.pbx

ABANDONER = "081234567890"
ABANDONER_E164 = "+6281234567890"
TALKER = "085712345678"
TALKER_E164 = "+6285712345678"


def target(pbx: TestPbx) -> str:
    return f"127.0.0.1:{pbx.spec.sip_port}"


def greeting(pbx: TestPbx) -> float:
    return wav_seconds(pbx.repo_root / "sounds" / "cc-greeting.wav")


@pytest.fixture
async def sup_app(pbx: TestPbx, pbx_ports: dict[str, int], tmp_path: Path) -> AsyncIterator[tuple[AppProcess, Store]]:
    users = {"sari": ("supervisor", None), "ayu": ("calltaker", "PJSIP/taker1")}
    async with pbx_app(pbx, pbx_ports, tmp_path, users) as started:
        yield started


async def wallboard_json(page: Page) -> dict[str, Any]:
    resp = await page.request.get("/api/wallboard")
    assert resp.ok, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def test_supervisor_shift(sup_app: tuple[AppProcess, Store], browser: Browser, pbx: TestPbx) -> None:
    app, store = sup_app
    context = await browser.new_context(viewport={"width": 1400, "height": 900}, base_url=app.base_url)
    page = await context.new_page()
    phones: list[sipp.SippProcess] = []
    try:
        await log_in(page, app.base_url, "sari")
        # The page's timers run on a controllable clock (real time flows on): see the wallboard step.
        await page.clock.install()
        await page.goto(app.base_url + "/supervisor#wallboard")
        await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "online", timeout=10_000)
        board = page.get_by_test_id("wallboard")
        await expect(board).to_be_visible()
        await expect(page.get_by_test_id("wb-waiting")).to_have_text("0", timeout=10_000)
        await expect(page.get_by_test_id("wb-calls-today")).to_have_text("0")
        await expect(page.get_by_test_id("wb-abandoned")).to_have_text("0")
        await expect(page.get_by_test_id("wb-member-PJSIP-taker1")).to_be_visible()

        # 1. A citizen waits while taker1's phone rings unanswered, then gives up.
        ringing = await sipp.answerer(phone_port(pbx, "taker1"), answer_after=60, max_calls=None, timeout=90)
        phones.append(ringing)
        # In the queue for ~2.3 s: under the test PBX's 3 s queue timeout (after which it would overflow).
        abandoner = await sipp.early_hangup_caller(
            target(pbx), "112", caller_id=ABANDONER, hangup_after=greeting(pbx) + 2.5
        )
        phones.append(abandoner)

        async def queued() -> bool:
            return len((await wallboard_json(page))["waiting"]) == 1

        await until(queued, timeout=15, interval=0.1, what="caller waiting in the tracker")
        # Supervisors get no WebSocket message for queue changes, only the 5 s poll: a caller who waits
        # less than that may fall between two polls. Fire the page's own poll timer now.
        await page.clock.fast_forward(5000)
        await expect(page.get_by_test_id("wb-waiting")).to_have_text("1", timeout=2_000)
        await expect(page.get_by_test_id("wb-queue").get_by_test_id("wb-waiting-caller")).to_contain_text(
            ABANDONER  # the caller id as Asterisk reports it (the tracker does not normalise it)
        )
        await expect(page.get_by_test_id("wb-member-PJSIP-taker1")).to_have_attribute("data-state", "ringing")
        res = await abandoner.wait()
        await pbx.await_idle()
        await ringing.stop()
        assert res.returncode == 0, (res.errors, pbx.log_tail())
        # The ordinary 5 s poll brings the abandon.
        await expect(page.get_by_test_id("wb-waiting")).to_have_text("0", timeout=12_000)
        await expect(page.get_by_test_id("wb-abandoned")).to_have_text("1", timeout=12_000)
        await expect(page.get_by_test_id("wb-calls-today")).to_have_text("1")
        (abandoned,) = await rows(store, Call, Call.status == "abandoned")
        assert abandoned.caller_number == ABANDONER_E164

        # 2. A second citizen is answered by taker1 and talks for a few seconds (recorded).
        taker = await sipp.answerer(phone_port(pbx, "taker1"), answer_after=0.3, hangup_by="remote", max_calls=None)
        phones.append(taker)
        talker = await sipp.caller(
            target(pbx), "112", caller_id=TALKER, hold_seconds=greeting(pbx) + 2.0 + 4.0, timeout=60
        )
        phones.append(talker)
        await expect(page.get_by_test_id("wb-member-PJSIP-taker1")).to_have_attribute(
            "data-state", "busy", timeout=15_000
        )
        res = await talker.wait()
        assert res.ok, (res.errors, pbx.log_tail())
        await pbx.await_idle()
        taker_res = await taker.stop()
        # >= 1, not == 1: the ring-out phase's phone on this port did not answer Asterisk's CANCEL, so a
        # retransmitted INVITE of that old attempt may reach this phone too. That the talker's call was
        # answered by taker1 is checked on its own call record just below.
        assert taker_res.successful >= 1, taker_res.errors

        async def answered_and_reported() -> bool:
            found = await rows(store, Call, Call.caller_number == TALKER_E164, Call.status == "completed")
            return bool(found) and bool(found[0].recording)

        await until(answered_and_reported, timeout=15, what="answered call completed with its recording")
        (answered,) = await rows(store, Call, Call.caller_number == TALKER_E164)
        assert answered.answered_by == "taker1" and answered.wait_seconds is not None
        recording = pbx.host_path(answered.recording)
        await until(lambda: recording.exists() and recording.stat().st_size > 1000, what=f"recording {recording}")
        await expect(page.get_by_test_id("wb-calls-today")).to_have_text("2", timeout=12_000)
        await expect(page.get_by_test_id("wb-abandoned")).to_have_text("1")
        await expect(page.get_by_test_id("wb-within-20")).to_have_text(re.compile(r"^100([,.]0)?%$"))

        # 3. The call log: both calls; the answered one opens with its recording playable in the browser.
        await page.get_by_test_id("tab-log").click()
        log_rows = page.get_by_test_id("log-table").get_by_test_id("log-row")
        await expect(log_rows).to_have_count(2, timeout=10_000)
        row = page.locator(f'[data-testid="log-row"][data-call-id="{answered.id}"]')
        await expect(row).to_contain_text(TALKER_E164)
        await expect(page.locator(f'[data-testid="log-row"][data-call-id="{abandoned.id}"]')).to_contain_text(
            ABANDONER_E164
        )
        assert await rows(store, AccessLog) == []  # opening the page or the log plays nothing
        await row.click()
        detail = page.get_by_test_id("detail-panel")
        await expect(detail).to_be_visible()
        await expect(detail).to_contain_text(answered.id)
        audio = detail.get_by_test_id("detail-audio")
        await expect(audio).to_have_attribute("src", f"/api/calls/{answered.id}/recording")
        handle = await audio.element_handle()
        assert handle is not None
        loaded = await handle.evaluate(
            """el => new Promise((resolve) => {
                const done = () =>
                    resolve({ready: el.readyState, duration: el.duration, error: el.error && el.error.code});
                el.addEventListener("loadedmetadata", done, { once: true });
                el.addEventListener("error", done, { once: true });
                el.preload = "metadata";
                el.load();
            })"""
        )
        assert loaded["error"] is None and loaded["ready"] >= 1, loaded
        assert loaded["duration"] >= 3, loaded  # ~4 s of talk recorded (MixMonitor starts at the answer)
        resp = await page.request.get(f"/api/calls/{answered.id}/recording")
        assert resp.status == 200 and resp.headers["content-type"].startswith("audio/wav")
        assert len(await resp.body()) > 1000
        me = await (await page.request.get("/api/me")).json()
        plays = await rows(store, AccessLog, AccessLog.subject_id == answered.id)
        assert plays and {(a.action, a.subject_type) for a in plays} == {("play_recording", "call")}
        assert all(a.user_id == me["user"]["id"] for a in plays), [a.user_id for a in plays]

        # 4. Statistics after a classification through the API and an incident for the answered call.
        resp = await page.request.post(
            f"/api/calls/{answered.id}/classification",
            data={"classification": "genuine"},
            headers={"X-CSRF-Token": me["csrf_token"]},
        )
        assert resp.status == 200, await resp.text()
        await Incidents(store).create(
            {
                "reporter_name": "Made Wirawan",
                "callback_number": TALKER_E164,
                "address": "Jl. Udayana 12",
                "district": "Negara",
                "subdistrict": "Lelateng",
                "category": "fire",
                "priority": "critical",
                "victims_count": 0,
                "victims_condition": "",
                "access_route": "",
            },
            call_id=answered.id,
            user_id=None,
        )
        await page.get_by_test_id("tab-stats").click()
        category = page.get_by_test_id("stats-category-table")
        await expect(category.locator("tbody tr")).to_have_count(1, timeout=10_000)
        await expect(category.locator("tbody tr")).to_contain_text("Kebakaran")
        await expect(category.locator("tbody tr td").nth(1)).to_have_text("1")
        await expect(page.locator('[data-testid="stats-chart-category"] g[data-code="fire"]')).to_have_count(1)
        cls_rows = page.get_by_test_id("stats-classification-table").locator("tbody tr")
        genuine = cls_rows.filter(has_text="Darurat (asli)")
        await expect(genuine.locator("td").nth(1)).to_have_text("1")
        await expect(genuine.locator("td").nth(2)).to_have_text(re.compile(r"^50([,.]0)?%$"))
        day_rows = page.get_by_test_id("stats-day-table").locator("tbody tr")
        await page.get_by_test_id("stats-day").locator("summary").click()
        today = day_rows.last
        await expect(today.locator("td").nth(1)).to_have_text("2")  # calls
        await expect(today.locator("td").nth(2)).to_have_text("1")  # answered
        await expect(today.locator("td").nth(3)).to_have_text("1")  # abandoned
        csv_link = page.get_by_test_id("stats-csv-by_category")
        href = await csv_link.get_attribute("href")
        assert href
        csv = await page.request.get(href)
        assert csv.status == 200 and "fire" in await csv.text(), await csv.text()

        # 5. The citizen who gave up, called back in one click from the supervisor's overflow line.
        await page.get_by_test_id("tab-abandoned").click()
        ab_rows = page.get_by_test_id("abandoned-table").locator("tbody tr")
        await expect(ab_rows).to_have_count(1, timeout=10_000)
        await expect(ab_rows).to_contain_text(ABANDONER_E164)
        status = page.get_by_test_id(f"callback-status-{abandoned.id}")
        await expect(status).to_have_text("\N{EN DASH}")  # no call-back yet
        assert pbx.spec.supervisor_port is not None
        supervisor_phone = await sipp.answerer(
            pbx.spec.supervisor_port, answer_after=0.3, hangup_by="remote", timeout=60
        )
        phones.append(supervisor_phone)
        cb = await call_back_from_page(page, pbx, store, abandoned.id, supervisor_phone, phones)
        assert cb.outcome == "answered"
        await expect(page.get_by_test_id(f"abandoned-callback-{abandoned.id}")).to_be_enabled()
    finally:
        for phone in phones:
            phone.kill()
        await context.close()


async def test_call_taker_is_kept_out(sup_app: tuple[AppProcess, Store], browser: Browser) -> None:
    app, _ = sup_app
    context = await browser.new_context(base_url=app.base_url)
    page = await context.new_page()
    try:
        await log_in(page, app.base_url, "ayu")
        await page.goto(app.base_url + "/supervisor#wallboard")
        gate = page.get_by_test_id("sup-gate")
        await expect(gate).to_be_visible(timeout=10_000)
        await expect(gate).to_contain_text("khusus untuk supervisor")
        await expect(page.get_by_test_id("wallboard")).to_be_hidden()
        await expect(page.get_by_test_id("login-link")).to_be_hidden()
        for path in ("/api/wallboard", "/api/calls/log", "/api/stats"):
            resp = await page.request.get(path)
            assert resp.status == 403, (path, resp.status, await resp.text())
        # The abandoned list is theirs too (they call back from their own phone).
        assert (await page.request.get("/api/abandoned")).status == 200
    finally:
        await context.close()


async def test_a_login_attack_shows_on_the_wallboard(sup_app: tuple[AppProcess, Store], browser: Browser) -> None:
    """Issue 12: failed logins piling up put a banner on the supervisor's wallboard (nobody is locked out)."""
    app, _ = sup_app
    context = await browser.new_context(base_url=app.base_url)
    page = await context.new_page()
    try:
        await log_in(page, app.base_url, "sari")
        await page.goto(app.base_url + "/supervisor#wallboard")
        await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "online", timeout=10_000)
        banner = page.get_by_test_id("login-attack-banner")
        await expect(banner).to_be_hidden()
        async with aiohttp.ClientSession() as http:

            async def guess(i: int) -> int:
                body = {"username": f"guess{i}", "password": "not-the-password"}
                async with http.post(f"{app.base_url}/api/login", json=body) as resp:
                    return resp.status

            statuses = await asyncio.gather(*(guess(i) for i in range(25)))
        assert set(statuses) <= {401, 429}
        await expect(banner).to_be_visible(timeout=10_000)
        await expect(banner).to_contain_text("Serangan login")
        await page.get_by_role("button", name="Tutup").click()
        await expect(banner).to_be_hidden()
    finally:
        await context.close()
