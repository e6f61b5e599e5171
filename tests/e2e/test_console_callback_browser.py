"""End-to-end in a real browser: a call-taker calls back, from the console, a citizen who gave up.

Real Asterisk 22, SIPp phones and the real app as a child process; Chromium drives the call-taker
console. A SIPp citizen calls 112 and hangs up while taker1's phone rings unanswered; the call-taker
opens the console's abandoned panel, sees the caller (number, wait) and clicks call-back: the PBX rings
their own softphone (a SIPp UAS on taker1), then the citizen's line (a SIPp UAS on the test PBX's
"citizen" line, ``PbxSpec.citizens``). The outcome shows live on the console and is stored in
``callbacks``. A second caller who gives up while the panel is open appears at its next poll (nothing
tells a call-taker about it), and the panel stays usable on a phone-sized screen.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from callcenter.dispatch.speech import wav_seconds
from callcenter.pbx.harness import TestPbx
from callcenter.store import Store
from callcenter.store.accounts import UserInfo
from callcenter.store.models import Call
from callcenter.testing import sipp
from callcenter.testing.app import AppProcess, pbx_env
from callcenter.testing.browser import call_back_from_page, phone_port, rows
from callcenter.testing.wait import until
from callcenter.testing.web import DEFAULT_PASSWORD, make_user

pytestmark = pytest.mark.pbx

CALLER = "081234567890"
CALLER_E164 = "+6281234567890"
SECOND = "085712345678"
SECOND_E164 = "+6285712345678"
#: The console's poll of an open abandoned panel (ABANDONED_POLL_MS in console.js).
POLL_MS = 15_000


def mss(seconds: float) -> str:
    """The console's m:ss (JavaScript's Math.round, not Python's round-half-even)."""
    total = math.floor(seconds + 0.5)
    return f"{total // 60}:{total % 60:02d}"


@pytest.fixture
async def console_app(
    pbx: TestPbx, pbx_ports: dict[str, int], tmp_path: Path
) -> AsyncIterator[tuple[AppProcess, Store, UserInfo]]:
    await pbx.await_idle(timeout=30)
    url = f"sqlite+aiosqlite:///{tmp_path}/callcenter.db"
    store = Store.from_url(url, retry_for=5)
    await store.upgrade()
    # taker1 is the static queue member of the test PBX: Ayu's softphone.
    ayu = await make_user(store, "ayu", "calltaker", interface="PJSIP/taker1")
    app = AppProcess(pbx_env(pbx, pbx_ports["agi"], url), tmp_path / "app.log", sipp.free_port("tcp"))
    try:
        await app.start()
        await app.wait_event("supervision.ready")
        await app.wait_event("tracker.resynced")
        yield app, store, ayu
    finally:
        await app.stop()
        await store.close()


async def give_up(pbx: TestPbx, store: Store, caller_id: str, e164: str) -> Call:
    """A citizen calls 112 and hangs up while taker1's phone rings unanswered; their stored call."""
    ringing = await sipp.answerer(phone_port(pbx, "taker1"), answer_after=60, max_calls=None, timeout=90)
    try:
        hangup_after = wav_seconds(pbx.repo_root / "sounds" / "cc-greeting.wav") + 1.5
        caller = await sipp.early_hangup_caller(
            f"127.0.0.1:{pbx.spec.sip_port}", "112", caller_id=caller_id, hangup_after=hangup_after
        )
        result = await caller.wait()
        await pbx.await_idle()
    finally:
        await ringing.stop()
    assert result.returncode == 0, (result.errors, pbx.log_tail())

    async def stored() -> bool:
        return bool(await rows(store, Call, Call.status == "abandoned", Call.caller_number == e164))

    await until(stored, timeout=15, what=f"abandoned call of {e164} stored")
    (call,) = await rows(store, Call, Call.caller_number == e164)
    assert isinstance(call, Call) and call.wait_seconds is not None
    return call


async def log_in(page: Page, base_url: str) -> None:
    await page.goto(base_url + "/")
    await page.get_by_test_id("login-username").fill("ayu")
    await page.get_by_test_id("login-password").fill(DEFAULT_PASSWORD)
    await page.get_by_test_id("login-submit").click()
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "online", timeout=10_000)


async def test_call_taker_calls_back_an_abandoned_caller(
    console_app: tuple[AppProcess, Store, UserInfo], browser: Browser, pbx: TestPbx
) -> None:
    app, store, ayu = console_app
    # 1. A citizen gives up in the queue before the call-taker opens the console.
    call = await give_up(pbx, store, CALLER, CALLER_E164)

    context = await browser.new_context(viewport={"width": 1280, "height": 800}, base_url=app.base_url)
    page = await context.new_page()
    phones: list[sipp.SippProcess] = []
    try:
        # The page's timers run on a controllable clock (real time flows on): see the poll in step 4.
        await page.clock.install()
        await log_in(page, app.base_url)

        # 2. The abandoned panel is folded; opened, it lists the caller with their number and wait.
        panel = page.get_by_test_id("abandoned-panel")
        table = panel.get_by_test_id("abandoned-table")
        await expect(table).to_be_hidden()
        await expect(page.get_by_test_id("abandoned-toggle")).to_contain_text("Panggilan terputus")
        await page.get_by_test_id("abandoned-toggle").click()
        await expect(table).to_be_visible()
        ab_rows = table.get_by_test_id("abandoned-row")
        await expect(ab_rows).to_have_count(1, timeout=10_000)
        row = table.locator(f'[data-testid="abandoned-row"][data-call-id="{call.id}"]')
        await expect(row).to_contain_text(CALLER_E164)
        assert call.wait_seconds is not None
        await expect(row.get_by_test_id("abandoned-wait")).to_have_text(mss(call.wait_seconds))
        status = page.get_by_test_id(f"callback-status-{call.id}")
        await expect(status).to_have_text("\N{EN DASH}")  # no call-back yet
        count = page.get_by_test_id("abandoned-count")
        await expect(count).to_have_text("1")

        # 3. One click: Ayu's softphone rings and answers, then the citizen's line rings and answers.
        taker = await sipp.answerer(phone_port(pbx, "taker1"), answer_after=0.3, hangup_by="remote", timeout=60)
        phones.append(taker)
        cb = await call_back_from_page(page, pbx, store, call.id, taker, phones)
        assert (cb.outcome, cb.reason, cb.requested_by) == ("answered", "answer", ayu.id), app.log_tail()
        assert cb.ended_at is not None
        await expect(page.get_by_test_id(f"abandoned-callback-{call.id}")).to_be_enabled()
        # The call-back message made the panel re-read the list: the caller has been reached.
        await expect(count).to_be_hidden()
        await expect(status).to_contain_text("Tersambung")

        # 4. A second citizen gives up while the panel is open: no message tells a call-taker, the poll does.
        second = await give_up(pbx, store, SECOND, SECOND_E164)
        await page.clock.fast_forward(POLL_MS)
        await expect(ab_rows).to_have_count(2, timeout=5_000)
        await expect(ab_rows.first).to_have_attribute("data-call-id", second.id)  # newest first
        await expect(ab_rows.first).to_contain_text(SECOND_E164)
        await expect(count).to_have_text("1")

        # 5. English, and a phone-sized screen: the list and its buttons fit without sideways scrolling.
        await page.get_by_test_id("lang-select").select_option("en")
        await expect(page.get_by_test_id("abandoned-toggle")).to_contain_text("Abandoned calls")
        await expect(status).to_contain_text("Connected")
        await page.set_viewport_size({"width": 390, "height": 844})
        second_button = page.get_by_test_id(f"abandoned-callback-{second.id}")
        await second_button.scroll_into_view_if_needed()
        await expect(second_button).to_be_in_viewport()
        overflow = await page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, overflow
    finally:
        for phone in phones:
            phone.kill()
        await context.close()
