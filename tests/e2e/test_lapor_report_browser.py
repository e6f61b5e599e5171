"""A citizen's report from the app, end to end: Chromium, the real Asterisk 22 and SIPp phones.

A citizen verifies their number on ``/lapor`` (the SMS code read from Twilio's local recorder) and holds
"Kebakaran" for 3 s with their position granted. The report enters THE SAME queue as 112 callers: while
nobody answers, the supervisor's wallboard shows it waiting, marked as an app report. Ayu's SIPp phone
(taker1, the queue's member) answers: her console pops the report (category, verified number, position
with its accuracy on the pop's map, time) instead of a caller, the report is hers, and a reload after the
line is released brings it back. One click on
"call back" rings her phone, then the citizen's line (a SIPp UAS on the test PBX's citizen trunk): the
report is linked to that call and marked called back.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Geolocation, expect

from callcenter.pbx.harness import TestPbx
from callcenter.store import Store
from callcenter.store.accounts import UserInfo
from callcenter.store.models import Callback, Report
from callcenter.store.reports import CALLED_BACK
from callcenter.testing import sipp
from callcenter.testing.app import AppProcess, pbx_env
from callcenter.testing.browser import dead_tiles, log_in, phone_port, report_from_lapor, rows
from callcenter.testing.fake_twilio import FakeTwilio
from callcenter.testing.web import make_user

pytestmark = pytest.mark.pbx

#: The citizen's number as typed on the phone, and as the centre stores it.
TYPED, NUMBER = "0812 3456 7890", "+6281234567890"
CITIZEN_AT: Geolocation = {"latitude": -7.0105, "longitude": 113.8624, "accuracy": 12}  # Sumenep


def one_pixel_png() -> bytes:
    """A valid 1x1 PNG (the photo the citizen adds), built rather than pasted."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")  # one row: filter 0, one red pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.fixture
async def report_app(
    pbx: TestPbx, pbx_ports: dict[str, int], tmp_path: Path, fake_twilio: FakeTwilio
) -> AsyncIterator[tuple[AppProcess, Store, UserInfo]]:
    await pbx.await_idle(timeout=30)
    url = f"sqlite+aiosqlite:///{tmp_path}/callcenter.db"
    store = Store.from_url(url, retry_for=5)
    await store.upgrade()
    await make_user(store, "sari", "supervisor")
    ayu = await make_user(store, "ayu", "calltaker", interface="PJSIP/taker1")  # taker1: the queue's member
    web_port = sipp.free_port("tcp")
    env = {
        **pbx_env(pbx, pbx_ports["agi"], url),
        **fake_twilio.app_env(f"http://127.0.0.1:{web_port}"),
        "CALLCENTER_REPORT_UPLOAD_DIR": str(tmp_path / "reports"),
        "CALLCENTER_WEB_MAP_TILES": dead_tiles(),
    }
    app = AppProcess(env, tmp_path / "app.log", web_port)
    try:
        await app.start()
        await app.wait_event("tracker.resynced")
        yield app, store, ayu
    finally:
        await app.stop()
        await store.close()


async def test_report_waits_pops_on_the_answering_console_and_is_called_back(
    report_app: tuple[AppProcess, Store, UserInfo], browser: Browser, pbx: TestPbx, fake_twilio: FakeTwilio
) -> None:
    app, store, ayu = report_app
    citizen = await browser.new_context(
        viewport={"width": 390, "height": 844}, geolocation=CITIZEN_AT, permissions=["geolocation"], locale="id-ID"
    )
    supervisor = await browser.new_context(viewport={"width": 1280, "height": 900})
    console = await browser.new_context(viewport={"width": 1280, "height": 900})
    phones: list[sipp.SippProcess] = []
    errors: list[str] = []
    try:
        board = await supervisor.new_page()
        await log_in(board, app.base_url, "sari")
        await board.goto(app.base_url + "/supervisor#wallboard")
        await expect(board.get_by_test_id("wb-waiting")).to_have_text("0", timeout=10_000)
        page = await console.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await log_in(page, app.base_url, "ayu")
        await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "online", timeout=10_000)

        # 1. The citizen's report; nobody answers taker1 yet, so it waits in the queue like a caller.
        report_id = await report_from_lapor(
            await citizen.new_page(), app.base_url, fake_twilio, TYPED, "fire", png=one_pixel_png()
        )
        item = board.locator(f'[data-testid="wb-waiting-caller"][data-report-id="{report_id}"]')
        await expect(item).to_have_attribute("data-queued", "1", timeout=10_000)
        await expect(item.get_by_test_id("wb-report-badge")).to_have_text("Laporan aplikasi")
        await expect(item).to_contain_text(NUMBER)
        await expect(board.get_by_test_id("wb-waiting")).to_have_text("1")

        # 2. Ayu's phone answers the queue: her console pops the report, with its position on the map.
        taker = await sipp.answerer(
            phone_port(pbx, "taker1"), answer_after=0.3, hangup_by="remote", max_calls=None, timeout=90
        )
        phones.append(taker)
        shown = page.get_by_test_id("pop-report")
        await expect(shown).to_be_visible(timeout=15_000)
        await expect(shown).to_have_attribute("data-report-id", str(report_id))
        await expect(shown.get_by_test_id("report-category")).to_have_text("Kebakaran")
        await expect(shown.get_by_test_id("report-number")).to_have_text(NUMBER)
        await expect(shown.get_by_test_id("report-position")).to_contain_text("± 12 m")
        photo = shown.get_by_test_id("report-photo")
        await expect(photo).to_be_visible()
        assert await photo.evaluate("img => img.complete && img.naturalWidth") == 1  # the citizen's picture
        await expect(page.get_by_test_id("pop-caller")).to_have_text(NUMBER)
        fix = page.get_by_test_id("pop-fix")
        await expect(fix).to_have_attribute("data-via", "app")
        await expect(fix).to_have_attribute("data-accuracy", "12")
        # The intake starts from the report: its category, the verified number, and its position on request.
        await expect(page.get_by_test_id("intake-category")).to_have_value("fire")
        await expect(page.get_by_test_id("intake-callback_number")).to_have_value(NUMBER)
        await page.get_by_test_id("copy-fix").click()
        await expect(page.get_by_test_id("intake-latitude")).to_have_value(str(CITIZEN_AT["latitude"]))
        await expect(item).to_be_hidden(timeout=10_000)  # taken: no longer waiting on the wallboard
        # The announcement plays and the line is released: the pop stays for the intake and the call-back.
        await expect(page.get_by_test_id("pop-status")).to_have_attribute("data-state", "ended", timeout=15_000)
        (report,) = await rows(store, Report, Report.id == report_id)
        assert (report.status, report.taken_by) == ("taken", ayu.id)
        # A reload after the line was released brings the report back (until it is called back).
        await page.reload()
        await expect(shown).to_have_attribute("data-report-id", str(report_id), timeout=10_000)
        await expect(page.get_by_test_id("pop-status")).to_have_attribute("data-state", "ended")

        # 3. One click: Ayu's phone rings and answers, then the citizen's phone.
        citizen_phone = await sipp.answerer(
            phone_port(pbx, "citizen"), answer_after=0.5, hangup_by="local", hold_seconds=2
        )
        phones.append(citizen_phone)
        await shown.get_by_test_id("report-callback").click()
        status = shown.get_by_test_id("report-callback-status")
        await expect(status).to_contain_text("Tersambung", timeout=30_000)
        result = await citizen_phone.wait(timeout=30)
        assert result.incoming == 1, result.errors
        await pbx.await_idle()
        taker_result = await taker.stop()
        assert taker_result.incoming == 2, taker_result.errors  # the report, then the call-back
        (report,) = await rows(store, Report, Report.id == report_id)
        (callback,) = await rows(store, Callback, Callback.requested_by == ayu.id)
        assert (callback.outcome, report.status) == ("answered", CALLED_BACK)
        assert report.callback_uniqueid == f"callback-{callback.id}"
        assert errors == []
    finally:
        for phone in phones:
            phone.kill()
        for context in (citizen, supervisor, console):
            await context.close()
