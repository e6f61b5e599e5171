"""The map dashboard API (``GET /api/map``) and tile settings through the real app: who sees which
incidents and units, officers' positions from their status updates, the access trail, the pages' CSP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from callcenter.config import replace
from callcenter.store import Store
from callcenter.store.access import access_entries
from callcenter.store.accounts import UserInfo
from callcenter.store.models import Incident
from callcenter.testing.web import (
    SAMPLE_INTAKE,
    AppClient,
    app_client,
    make_user,
    seed_dispatch,
    seed_incident,
    test_config,
)
from callcenter.testing.web import UserSession as Browser
from callcenter.web.keys import STORE

TILES = "http://127.0.0.1:9/{z}/{x}/{y}.png"


class Env:
    def __init__(self, client: AppClient, store: Store, users: dict[str, UserInfo]) -> None:
        self.client, self.store, self.users = client, store, users
        self.browsers: list[Browser] = []

    async def as_user(self, name: str) -> Browser:
        browser = Browser(self.client)
        self.browsers.append(browser)
        return await browser.login(self.users[name])

    async def incident(self, category: str = "fire", **extra: Any) -> Incident:
        fields = {**SAMPLE_INTAKE, "category": category}
        return await seed_incident(self.store, fields, self.users["ayu"].id, **extra)

    async def dispatch(self, incident_id: int, agency: str, status: str = "accepted") -> int:
        return await seed_dispatch(self.store, incident_id, agency, status)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    cfg = replace(test_config(tmp_path), web={"host": "127.0.0.1", "port": 0, "map_tiles": TILES})
    async with app_client(cfg) as client:
        store = client.app[STORE]
        users = {
            "ayu": await make_user(store, "ayu", "calltaker", interface="PJSIP/taker1"),
            "sri": await make_user(store, "sri", "supervisor"),
            "damkar1": await make_user(store, "damkar1", "agency", agency="damkar"),
            "damkar2": await make_user(store, "damkar2", "agency", agency="damkar"),
            "polres1": await make_user(store, "polres1", "agency", agency="polres"),
            "admin": await make_user(store, "root", "admin"),
        }
        env = Env(client, store, users)
        try:
            yield env
        finally:
            for browser in env.browsers:
                await browser.close()


def by_reference(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["reference"]: i for i in body["incidents"]}


async def test_dashboard_shows_open_incidents_and_the_units_last_positions(env: Env) -> None:
    fire = await env.incident(latitude=-8.3581, longitude=114.6170)
    crime = await env.incident(category="crime", latitude=-8.36, longitude=114.62)
    await env.incident(latitude=None, longitude=None)  # no coordinates: nowhere to put it
    await env.incident(latitude=-8.1, longitude=114.1, status="closed")  # closed: off the map
    fire_damkar = await env.dispatch(fire.id, "damkar")
    fire_polres = await env.dispatch(fire.id, "polres")
    await env.dispatch(crime.id, "polres")

    officer, colleague = await env.as_user("damkar1"), await env.as_user("damkar2")
    polres = await env.as_user("polres1")
    for who, dispatch_id, state, position in [
        (officer, fire_damkar, "dispatched", {"latitude": "-8.3700", "longitude": "114.6000", "accuracy": "20"}),
        (officer, fire_damkar, "en_route", {"latitude": "-8.3650", "longitude": "114.6100", "accuracy": "15"}),
        (colleague, fire_damkar, "en_route", {}),  # no position: not a unit on the map
        (polres, fire_polres, "dispatched", {"latitude": "-8.35", "longitude": "114.63"}),
    ]:
        assert (await who.report(dispatch_id, state, position=position))[0] == 201

    for name in ("sri", "ayu"):
        status, body = await (await env.as_user(name)).get("/api/map")
        assert status == 200
        shown = by_reference(body)
        assert set(shown) == {fire.reference, crime.reference}
        entry = shown[fire.reference]
        assert (entry["latitude"], entry["longitude"], entry["category"]) == (-8.3581, 114.617, "fire")
        assert sorted((d["agency"], d["status"]) for d in entry["dispatches"]) == [
            ("damkar", "en_route"),
            ("polres", "dispatched"),
        ]
        units = {(u["agency"], u["officer"]): u for u in entry["units"]}
        assert set(units) == {("damkar", "damkar1"), ("polres", "polres1")}
        last = units[("damkar", "damkar1")]
        # The officer's newest positioned report: where the unit is and what it said there.
        assert (last["latitude"], last["longitude"], last["accuracy_m"], last["status"]) == (
            -8.365,
            114.61,
            15.0,
            "en_route",
        )
        assert last["dispatch_id"] == fire_damkar and last["dispatch_status"] == "en_route"
        assert shown[crime.reference]["units"] == []

    # An officer sees only incidents dispatched to their agency, and only their agency's units.
    status, body = await officer.get("/api/map")
    assert status == 200
    assert set(by_reference(body)) == {fire.reference}
    (entry,) = body["incidents"]
    assert [d["agency"] for d in entry["dispatches"]] == ["damkar"]
    assert [u["officer"] for u in entry["units"]] == ["damkar1"]
    status, body = await (await env.as_user("polres1")).get("/api/map")
    assert set(by_reference(body)) == {fire.reference, crime.reference}
    assert {u["agency"] for i in body["incidents"] for u in i["units"]} == {"polres"}


async def test_roles_and_tile_settings(env: Env) -> None:
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(str(env.client.make_url("/api/map"))) as resp:
            assert resp.status == 401
        async with anonymous.get(str(env.client.make_url("/api/map/settings"))) as resp:
            assert resp.status == 401
        # The pages let images come from the configured tile server, and from nowhere else.
        async with anonymous.get(str(env.client.make_url("/"))) as resp:
            assert "img-src 'self' data: http://127.0.0.1:9;" in resp.headers["Content-Security-Policy"]
        async with anonymous.get(str(env.client.make_url("/supervisor"))) as resp:
            assert "img-src 'self' data: http://127.0.0.1:9;" in resp.headers["Content-Security-Policy"]
    admin = await env.as_user("admin")
    assert (await admin.get("/api/map"))[0] == 403
    officer = await env.as_user("damkar1")
    assert await officer.get("/api/map/settings") == (
        200,
        {"tiles": TILES, "attribution": "© OpenStreetMap contributors"},
    )


async def test_an_officer_without_an_agency_is_refused(env: Env) -> None:
    env.users["lost"] = await make_user(env.store, "lost", "agency")
    await env.incident(latitude=-8.36, longitude=114.62)
    assert (await (await env.as_user("lost")).get("/api/map"))[0] == 403


async def test_reading_a_women_and_children_case_on_the_map_is_traced(env: Env) -> None:
    case = await env.incident(category="violence_women_children", latitude=-8.36, longitude=114.62)
    other = await env.incident(latitude=-8.37, longitude=114.63)
    await env.dispatch(case.id, "damkar")
    await env.dispatch(other.id, "damkar")
    assert (await (await env.as_user("damkar1")).get("/api/map"))[0] == 200
    assert (await (await env.as_user("sri")).get("/api/map"))[0] == 200
    assert (await (await env.as_user("polres1")).get("/api/map"))[0] == 200  # not theirs: not shown, not traced
    entries = await access_entries(env.store, subject_type="incident")
    assert sorted((e.action, e.subject_id, e.user_id) for e in entries) == sorted(
        [("map", str(case.id), env.users["damkar1"].id), ("map", str(case.id), env.users["sri"].id)]
    )


def test_openapi_fragment_describes_every_map_route() -> None:
    import json

    from aiohttp import web

    from callcenter.web import map_api
    from callcenter.web.openapi import FRAGMENTS

    fragment = json.loads((FRAGMENTS / "map.json").read_text(encoding="utf-8"))
    served = {(r.path, r.method.lower()) for r in map_api.routes if isinstance(r, web.RouteDef)}
    assert served == {(path, method) for path, ops in fragment["paths"].items() for method in ops}
