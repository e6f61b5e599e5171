"""Where is the caller, end to end: a SIPp citizen on the real Asterisk, the console in Chromium.

While the citizen is on the line to Ayu: an AML HTTPS message for the caller's number shows on her
pop (accuracy, source, age); she texts a location link (read back from Twilio's local recorder),
the "citizen" opens it in a second Chromium context with geolocation granted at a known position,
and that position shows on her pop and goes into the intake's latitude/longitude with one click.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, Geolocation, expect

from callcenter.pbx.harness import TestPbx
from callcenter.store import Calls, Store
from callcenter.store.models import LocationFix
from callcenter.testing import sipp
from callcenter.testing.app import AppProcess, pbx_env
from callcenter.testing.browser import citizen_call, dead_tiles, log_in, rows
from callcenter.testing.fake_twilio import FakeTwilio
from callcenter.testing.web import make_user

pytestmark = pytest.mark.pbx

AML_SECRET = "e2e-aml-secret"
CALLER = "081234567890"
CALLER_E164 = "+6281234567890"
#: Where the citizen's browser says it is (Negara, Jembrana).
CITIZEN_AT: Geolocation = {"latitude": -8.3655, "longitude": 114.6201, "accuracy": 12}


@pytest.fixture
async def located_app(
    pbx: TestPbx, pbx_ports: dict[str, int], tmp_path: Path, fake_twilio: FakeTwilio
) -> AsyncIterator[tuple[AppProcess, Store]]:
    await pbx.await_idle(timeout=30)
    url = f"sqlite+aiosqlite:///{tmp_path}/callcenter.db"
    store = Store.from_url(url, retry_for=5)
    await store.upgrade()
    await make_user(store, "ayu", "calltaker", interface="PJSIP/taker1")
    web_port = sipp.free_port("tcp")
    env = {
        **pbx_env(pbx, pbx_ports["agi"], url),
        # The link must open on this very app (loopback is a secure context for the Geolocation API).
        **fake_twilio.app_env(f"http://127.0.0.1:{web_port}"),
        "CALLCENTER_LOCATION_AML_SECRET": AML_SECRET,
        # No tile server reachable: the pop's map still shows the caller and the intake's point.
        "CALLCENTER_WEB_MAP_TILES": dead_tiles(),
    }
    app = AppProcess(env, tmp_path / "app.log", web_port)
    await app.start()
    try:
        yield app, store
    finally:
        await app.stop()
        await store.close()


async def test_aml_and_location_link_reach_the_pop(
    located_app: tuple[AppProcess, Store], browser: Browser, pbx: TestPbx, fake_twilio: FakeTwilio
) -> None:
    app, store = located_app
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await log_in(page, app.base_url, "ayu")
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "online", timeout=10_000)
    fix = page.get_by_test_id("pop-fix")
    popmap = page.get_by_test_id("pop-map")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    async with citizen_call(pbx, CALLER, talk=40):
        await expect(page.get_by_test_id("pop-caller")).to_contain_text(CALLER_E164, timeout=15_000)
        await expect(fix).not_to_have_attribute("data-fix-id", re.compile(".+"))

        # The handset's AML arrives while the citizen is on the line.
        aml = {
            "v": "3",
            "emergency_number": "112",
            "location_latitude": "-8.3581234",
            "location_longitude": "114.6170123",
            "location_accuracy": "14",
            "location_source": "gps",
            "location_certainty": "68",
            "device_number": CALLER,
        }
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{app.base_url}/aml", data=aml, headers={"X-AML-Key": AML_SECRET}) as resp,
        ):
            assert resp.status == 200, await resp.text()
        await expect(fix).to_have_attribute("data-via", "aml_https", timeout=5_000)
        await expect(fix).to_contain_text("-8.358123, 114.617012")
        await expect(fix).to_contain_text("± 14 m (68 %)")
        await expect(fix).to_contain_text("GPS")
        await expect(page.get_by_test_id("pop-fix-age")).to_contain_text("lalu")
        # On the pop's map: the position with its accuracy circle (Leaflet's SVG path, 14 m).
        circle = popmap.get_by_test_id("map-fix-circle")
        await expect(circle).to_have_attribute("data-lat", "-8.3581234")
        await expect(circle).to_have_attribute("data-lng", "114.6170123")
        await expect(circle).to_have_attribute("data-radius", "14")
        assert "leaflet-interactive" in (await circle.get_attribute("class") or "")
        await expect(popmap.get_by_test_id("map-intake")).to_have_count(0)

        # Ayu texts the location link; the citizen opens it with location allowed.
        await page.get_by_test_id("send-location-link").click()
        await expect(page.get_by_test_id("location-link-status")).to_have_attribute(
            "data-state", "sent", timeout=10_000
        )
        (sms,) = fake_twilio.messages()
        assert sms.param("To") == CALLER_E164
        found = re.search(r"(http://127\.0\.0\.1:\d+/l/[A-Za-z0-9_-]+)", sms.param("Body"))
        assert found, sms.param("Body")
        citizen = await browser.new_context(geolocation=CITIZEN_AT, permissions=["geolocation"], locale="id-ID")
        try:
            phone = await citizen.new_page()
            await phone.goto(found.group(1))
            await expect(phone.get_by_test_id("locate-status")).to_have_attribute("data-state", "sent", timeout=15_000)
        finally:
            await citizen.close()

        await expect(fix).to_have_attribute("data-via", "link", timeout=5_000)
        await expect(fix).to_contain_text("-8.365500, 114.620100")
        await expect(fix).to_contain_text("± 12 m (95 %)")
        await page.get_by_test_id("copy-fix").click()
        await expect(page.get_by_test_id("intake-latitude")).to_have_value("-8.3655")
        await expect(page.get_by_test_id("intake-longitude")).to_have_value("114.6201")
        # The map follows: the circle moved to the link's position, the intake's marker joined it,
        # and it moves as the call-taker corrects the coordinates by hand.
        await expect(circle).to_have_attribute("data-lat", "-8.3655")
        await expect(circle).to_have_attribute("data-radius", "12")
        intake = popmap.get_by_test_id("map-intake")
        await expect(intake).to_have_attribute("data-lat", "-8.3655")
        await expect(intake).to_have_attribute("data-lng", "114.6201")
        await page.get_by_test_id("intake-latitude").fill("-8.3702")
        await expect(intake).to_have_attribute("data-lat", "-8.3702")
        await expect(popmap).to_have_attribute("data-tiles", "unreachable")
        assert errors == []

    stored = await rows(store, LocationFix)
    assert sorted(f.via for f in stored) == ["aml_https", "link"]
    assert len({f.call_id for f in stored}) == 1 and stored[0].call_id is not None
    call = await Calls(store).get_call(stored[0].call_id or "")
    assert call is not None and call.caller_number == CALLER_E164
    await page.close()
