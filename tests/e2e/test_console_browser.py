"""End-to-end in a real browser: Chromium drives the console while SIPp citizens call 112 on the
real Asterisk and a SIPp softphone answers as the logged-in call-taker.

What a call-taker does on a shift, in order: log in, pause and come back, get a caller popped on
screen, survive a page reload mid-call with the typed intake intact, submit it, and classify a
prank that then shows on that number's next call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from callcenter.pbx.harness import TestPbx
from callcenter.store import Calls, Store
from callcenter.store.incidents import Incidents
from callcenter.testing import sipp
from callcenter.testing.app import AppProcess, pbx_env
from callcenter.testing.browser import citizen_call
from callcenter.testing.browser import log_in as browser_log_in
from callcenter.testing.wait import until
from callcenter.testing.web import make_user

pytestmark = pytest.mark.pbx

PASSWORD = "correct-horse-battery"


@pytest.fixture
async def console_app(
    pbx: TestPbx, pbx_ports: dict[str, int], tmp_path: Path
) -> AsyncIterator[tuple[AppProcess, Store]]:
    await pbx.await_idle(timeout=30)
    url = f"sqlite+aiosqlite:///{tmp_path}/callcenter.db"
    store = Store.from_url(url, retry_for=5)
    await store.upgrade()
    # taker1 is the static queue member of the test PBX: Ayu's softphone.
    await make_user(store, "ayu", "calltaker", password=PASSWORD, interface="PJSIP/taker1")
    env = {
        **pbx_env(pbx, pbx_ports["agi"], url),
    }
    app = AppProcess(env, tmp_path / "app.log", sipp.free_port("tcp"))
    await app.start()
    try:
        yield app, store
    finally:
        await app.stop()
        await store.close()


async def log_in(page: Page, base_url: str) -> None:
    await browser_log_in(page, base_url, "ayu")
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "online", timeout=10_000)


async def test_call_taker_shift(console_app: tuple[AppProcess, Store], browser: Browser, pbx: TestPbx) -> None:
    app, store = console_app
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    await log_in(page, app.base_url)

    # Presence as Asterisk reports it: taker1 is a static member; pause with a reason, then come back.
    state = page.get_by_test_id("presence-state")
    await expect(state).to_have_attribute("data-state", "not_in_use", timeout=10_000)
    await page.get_by_test_id("presence-reason").select_option("break")
    await page.get_by_test_id("presence-pause").click()
    await expect(state).to_have_attribute("data-state", "paused", timeout=10_000)
    await page.get_by_test_id("presence-unpause").click()
    await expect(state).not_to_have_attribute("data-state", "paused", timeout=10_000)

    # Call 1: a genuine emergency. The caller pops, the intake survives a reload, and is submitted.
    async with citizen_call(pbx, "081234567890", talk=25):
        await expect(page.get_by_test_id("pop-caller")).to_contain_text("+6281234567890", timeout=15_000)
        await expect(page.get_by_test_id("intake-callback_number")).to_have_value("+6281234567890")
        await page.get_by_test_id("intake-reporter_name").fill("Budi Santoso")
        await page.get_by_test_id("intake-address").fill("Jl. Ngurah Rai 12, depan pasar")
        await page.wait_for_timeout(1200)  # past the draft autosave debounce
        await page.reload()
        await expect(page.get_by_test_id("pop-caller")).to_contain_text("+6281234567890", timeout=10_000)
        await expect(page.get_by_test_id("intake-reporter_name")).to_have_value("Budi Santoso")
        await page.get_by_test_id("intake-category").select_option("fire")
        await page.get_by_test_id("intake-victims_count").fill("2")
        await page.get_by_test_id("intake-access_route").fill("Masuk dari Jl. Gatot Subroto, gang kedua")
        await page.get_by_test_id("intake-submit").click()
        await expect(page.get_by_test_id("incident-reference")).to_contain_text("112-", timeout=10_000)
        reference = (await page.get_by_test_id("incident-reference").inner_text()).strip()

    incidents = await Incidents(store).list(limit=10)
    assert len(incidents) == 1
    incident = incidents[0]
    assert incident.reference in reference
    assert incident.reporter_name == "Budi Santoso" and incident.category == "fire" and incident.victims_count == 2
    call = await Calls(store).get_call(incident.call_id or "")
    assert call is not None and call.caller_number == "+6281234567890" and call.answered_by == "taker1"

    # Call 2: a prank, classified as such on the console.
    async with citizen_call(pbx, "085712345678", talk=8):
        await expect(page.get_by_test_id("pop-caller")).to_contain_text("+6285712345678", timeout=15_000)
        await page.get_by_test_id("classify-prank").click()
        await page.get_by_test_id("confirm-yes").click()
        await expect(page.get_by_test_id("classification-result")).to_be_visible(timeout=5_000)

    async def flagged() -> bool:
        history = await Calls(store).caller_history("+6285712345678")
        return [f.kind for f in history.flags] == ["prank"]

    await until(flagged, what="prank flag stored")

    # Call 3: the same number again — its history on the pop shows the prank.
    async with citizen_call(pbx, "085712345678", talk=6):
        await expect(page.get_by_test_id("pop-caller")).to_contain_text("+6285712345678", timeout=15_000)
        await expect(page.locator("[data-testid=pop-flag][data-kind=prank]")).to_be_visible(timeout=5_000)
    await page.close()
