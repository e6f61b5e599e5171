"""The map dashboard in Chromium, with no tile server reachable and no PBX: the supervisor's map tab
and the agency view show an open incident's marker and the field officer's last position."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from callcenter.store import Store
from callcenter.store.dispatches import Dispatches
from callcenter.store.incidents import Incidents
from callcenter.testing import sipp
from callcenter.testing.app import AppProcess
from callcenter.testing.browser import dead_tiles, log_in
from callcenter.testing.web import make_user, seed_dispatch


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[AppProcess]:
    env = {
        "CALLCENTER_STORE_URL": f"sqlite+aiosqlite:///{tmp_path}/callcenter.db",
        "CALLCENTER_AGI_PORT": str(sipp.free_port("tcp")),
        "CALLCENTER_AMI_PORT": str(sipp.free_port("tcp")),  # nothing listens: AMI keeps retrying quietly
        "CALLCENTER_WEB_MAP_TILES": dead_tiles(),  # as offline: markers on a blank background
    }
    process = AppProcess(env, tmp_path / "app.log", sipp.free_port("tcp"))
    await process.start(wait_ami=False)
    try:
        yield process
    finally:
        await process.stop()


async def seed(store: Store) -> tuple[str, int]:
    """An open fire in Negara dispatched to damkar, whose officer reported en route with a position."""
    taker = await make_user(store, "ayu", "calltaker")
    officer = await make_user(store, "damkar1", "agency", agency="damkar")
    await make_user(store, "sri", "supervisor")
    fields = {
        "reporter_name": "Made",
        "callback_number": "+6281234567890",
        "address": "Jl. Ngurah Rai 12, Negara",
        "category": "fire",
        "priority": "high",
        "latitude": -8.3581,
        "longitude": 114.617,
    }
    incident = await Incidents(store).create(fields, call_id=None, user_id=taker.id)
    assert incident.latitude == -8.3581

    dispatch_id = await seed_dispatch(store, incident.id, "damkar", "dispatched")
    await Dispatches(store).add_update(dispatch_id, officer.id, "en_route", position=(-8.365, 114.61, 15.0))
    return incident.reference, incident.id


async def check_dashboard(page: Page, map_id: str, status_id: str, incident_id: int) -> None:
    await expect(page.get_by_test_id(status_id)).to_have_attribute("data-count", "1", timeout=10_000)
    board = page.get_by_test_id(map_id)
    marker = board.get_by_test_id("map-incident")
    await expect(marker).to_have_count(1)
    await expect(marker).to_have_attribute("data-id", str(incident_id))
    await expect(marker).to_have_attribute("data-lat", "-8.3581")
    await expect(marker).to_have_attribute("data-lng", "114.617")
    assert "leaflet-marker-icon" in (await marker.get_attribute("class") or "")
    unit = board.get_by_test_id("map-unit")
    await expect(unit).to_have_count(1)
    await expect(unit).to_have_attribute("data-lat", "-8.365")
    await expect(unit).to_have_attribute("data-status", "en_route")
    await expect(unit).to_have_attribute("data-officer", "damkar1")
    await expect(board).to_have_attribute("data-tiles", "unreachable", timeout=10_000)


async def test_dashboard_shows_incident_and_unit_without_tiles(app: AppProcess, store: Store, browser: Browser) -> None:
    _reference, incident_id = await seed(store)
    errors: list[str] = []
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await log_in(page, app.base_url, "sri")
    await page.goto(app.base_url + "/supervisor#map")
    await expect(page.get_by_test_id("sup-map-view")).to_be_visible(timeout=10_000)
    await check_dashboard(page, "sup-map", "sup-map-status", incident_id)
    await page.close()

    # The officer's browser is on the scene: its status update carries its position to the map.
    context = await browser.new_context(
        viewport={"width": 1280, "height": 900},
        geolocation={"latitude": -8.3590, "longitude": 114.6180, "accuracy": 8},
        permissions=["geolocation"],
    )
    officer = await context.new_page()
    officer.on("pageerror", lambda exc: errors.append(str(exc)))
    await log_in(officer, app.base_url, "damkar1")
    await expect(officer.get_by_test_id("agency-view")).to_be_visible(timeout=10_000)
    await check_dashboard(officer, "agency-map", "agency-map-status", incident_id)
    await officer.get_by_test_id("agency-update-status").select_option("on_scene")
    await officer.get_by_test_id("agency-update-submit").click()
    unit = officer.get_by_test_id("agency-map").get_by_test_id("map-unit")
    await expect(unit).to_have_attribute("data-status", "on_scene", timeout=10_000)
    await expect(unit).to_have_attribute("data-lat", "-8.359")
    await expect(unit).to_have_attribute("data-lng", "114.618")
    await context.close()
    assert errors == []
