"""The citizen side of the report app in Chromium, against the app as a child process (no PBX needed):
open ``/lapor``, verify the number with the code read from Twilio's local recorder, see the granted
position, press a category briefly (nothing is sent), hold it 3 s with a photo chosen (the report is
stored with the position and the photo, and the confirmation shows), and the service worker holds
the app shell and no API answer (offline, the app still opens and says to call 112). The centre side
(the report in the queue, the pop, the call-back on the real PBX) is tests/e2e/test_lapor_report_browser.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Geolocation, expect

from callcenter.store import Store
from callcenter.store.models import Report
from callcenter.testing import sipp
from callcenter.testing.app import AppProcess
from callcenter.testing.browser import rows
from callcenter.testing.fake_twilio import FakeTwilio

TYPED = "0812 3456 7890"
NUMBER = "+6281234567890"
#: Where the citizen's phone says it is (Negara, Jembrana).
CITIZEN_AT: Geolocation = {"latitude": -8.3655, "longitude": 114.6201, "accuracy": 12}
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"
    b"\x00\x00\x00\x0cIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x9a\xa0\xa0\x00\x00\x00\x00IEND\xaeB`\x82"
)


@pytest.fixture
async def app(tmp_path: Path, db_url: str, fake_twilio: FakeTwilio) -> AsyncIterator[AppProcess]:
    web_port = sipp.free_port("tcp")
    env = {
        "CALLCENTER_STORE_URL": db_url,
        "CALLCENTER_AGI_PORT": str(sipp.free_port("tcp")),
        "CALLCENTER_AMI_PORT": str(sipp.free_port("tcp")),  # nothing listens: AMI keeps retrying quietly
        "CALLCENTER_REPORT_UPLOAD_DIR": str(tmp_path / "reports"),
        **fake_twilio.app_env(f"http://127.0.0.1:{web_port}"),
    }
    process = AppProcess(env, tmp_path / "app.log", web_port)
    await process.start(wait_ami=False)
    try:
        yield process
    finally:
        await process.stop()


async def test_verify_hold_three_seconds_and_the_report_is_stored(
    app: AppProcess, store: Store, browser: Browser, fake_twilio: FakeTwilio, tmp_path: Path
) -> None:
    # A phone-sized browser that lets the page know where it is.
    context = await browser.new_context(
        viewport={"width": 390, "height": 844},
        geolocation=CITIZEN_AT,
        permissions=["geolocation"],
        locale="id-ID",
        has_touch=True,
    )
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(app.base_url + "/lapor")
    assert page.url == app.base_url + "/lapor/"

    # Verification, once: the code comes by SMS (read back from Twilio's recorder).
    await expect(page.get_by_test_id("lapor-screen-number")).to_be_visible()
    await page.get_by_test_id("lapor-number").fill(TYPED)
    await page.get_by_test_id("lapor-send-code").click()
    await expect(page.get_by_test_id("lapor-screen-code")).to_be_visible()
    (sms,) = fake_twilio.messages()
    assert sms.param("To") == NUMBER
    code = next(word for word in sms.param("Body").replace(".", " ").split() if word.isdigit() and len(word) == 6)
    await page.get_by_test_id("lapor-code").fill("000000" if code != "000000" else "111111")
    await page.get_by_test_id("lapor-verify").click()
    await expect(page.get_by_test_id("lapor-message")).to_contain_text("Kode salah")
    await page.get_by_test_id("lapor-code").fill(code)
    await page.get_by_test_id("lapor-verify").click()
    await expect(page.get_by_test_id("lapor-screen-report")).to_be_visible()
    await expect(page.get_by_test_id("lapor-verified-number")).to_contain_text("7890")
    location = page.get_by_test_id("lapor-location")
    await expect(location).to_have_attribute("data-state", "fixed", timeout=10_000)
    await expect(location).to_have_attribute("data-accuracy", "12")

    fire = page.get_by_test_id("lapor-cat-fire")
    await expect(fire).to_contain_text("Kebakaran")
    await expect(page.get_by_test_id("lapor-categories").locator("button")).to_have_count(13)
    box = await fire.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    # A tap and a short press send nothing (no pocket reports).
    await fire.click()
    await page.mouse.move(x, y)
    await page.mouse.down()
    await expect(fire).to_have_attribute("data-holding", "true")
    # Released once the fill has visibly started (~0.5 s in): well short of the 3 s hold.
    await page.wait_for_function(
        "() => Number(document.querySelector('[data-testid=lapor-cat-fire]').dataset.progress) >= 15", timeout=3000
    )
    await page.mouse.up()
    await expect(fire).to_have_attribute("data-holding", "false")
    await expect(page.get_by_test_id("lapor-message")).to_contain_text("Dibatalkan")
    await expect(page.get_by_test_id("lapor-screen-report")).to_be_visible()
    assert await rows(store, Report) == []

    # With a photo chosen, hold 3 s: the progress fills, the report goes, the citizen is told.
    await page.get_by_test_id("lapor-photo").set_input_files(
        {"name": "kebakaran.png", "mimeType": "image/png", "buffer": PNG}
    )
    await expect(page.get_by_test_id("lapor-photo-status")).to_contain_text("akan dikirim")
    await page.mouse.move(x, y)
    await page.mouse.down()
    await page.wait_for_function(
        "() => Number(document.querySelector('[data-testid=lapor-cat-fire]').dataset.progress) >= 30", timeout=3000
    )
    done = page.get_by_test_id("lapor-done")
    await expect(done).to_be_visible(timeout=10_000)
    await page.mouse.up()
    await expect(done).to_have_text("Laporan diterima, petugas 112 akan menelepon Anda")
    report_id = await page.get_by_test_id("lapor-report-id").get_attribute("data-report-id")

    (report,) = await rows(store, Report)
    assert str(report.id) == report_id
    assert (report.number, report.category, report.status) == (NUMBER, "fire", "waiting")
    assert (report.latitude, report.longitude, report.accuracy_m) == (-8.3655, 114.6201, 12.0)
    assert report.photo and (tmp_path / "reports" / report.photo).read_bytes() == PNG

    # Installable: the service worker controls /lapor/ and has cached the shell, never an API answer.
    scope = await page.evaluate("navigator.serviceWorker.ready.then(r => r.scope)")
    assert scope == app.base_url + "/lapor/"
    cached: list[str] = await page.evaluate(
        """async () => {
            const urls = [];
            for (const name of await caches.keys()) {
                for (const req of await (await caches.open(name)).keys()) urls.push(new URL(req.url).pathname);
            }
            return urls;
        }"""
    )
    assert "/lapor/" in cached and "/lapor/app.js" in cached
    assert not [u for u in cached if u.startswith("/lapor/api/")]
    # Offline, the installed app still opens from that cache and tells the citizen to call 112.
    await context.set_offline(True)
    await page.reload()
    await expect(page.get_by_test_id("lapor-message")).to_contain_text("telepon 112")
    await expect(page.get_by_test_id("lapor-call-112")).to_be_visible()
    await context.set_offline(False)

    # A finger on a phone's touch screen: a short touch sends nothing, a 3 s touch sends (still verified).
    await page.reload()
    medical = page.get_by_test_id("lapor-cat-medical")
    await expect(medical).to_be_visible()
    box = await medical.bounding_box()
    assert box is not None
    touch = await context.new_cdp_session(page)
    point = [{"x": box["x"] + box["width"] / 2, "y": box["y"] + box["height"] / 2}]

    async def finger(kind: str) -> None:
        await touch.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [] if kind == "touchEnd" else point})

    await finger("touchStart")
    await page.wait_for_function(
        "() => Number(document.querySelector('[data-testid=lapor-cat-medical]').dataset.progress) >= 15", timeout=3000
    )
    await finger("touchEnd")
    await expect(medical).to_have_attribute("data-holding", "false")
    await expect(page.get_by_test_id("lapor-message")).to_contain_text("Dibatalkan")
    assert len(await rows(store, Report)) == 1
    await finger("touchStart")
    await expect(page.get_by_test_id("lapor-done")).to_be_visible(timeout=10_000)
    await finger("touchEnd")
    second = await page.get_by_test_id("lapor-report-id").get_attribute("data-report-id")
    assert [(str(r.id), r.category) for r in await rows(store, Report)][-1] == (second, "medical")
    assert errors == []
    await context.close()
