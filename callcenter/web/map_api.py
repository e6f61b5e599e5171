"""The maps' data (docs/location.md, "The map"): tile settings for every console, OKI's dashboard.

``GET /api/map/settings`` tells a page which tile template to give Leaflet (``[web] map_tiles``;
empty: none, markers on a blank background). ``GET /api/map`` is the dashboard: open incidents with
coordinates, their dispatches and their field officers' last positions and statuses
(``store/fieldmap.py``). The centre sees every incident; an agency officer only the incidents
dispatched to their agency, with their agency's units. Like every list that can show a
women-and-children case, the access trail is written before the answer goes out (``web/trail.py``).
"""

from __future__ import annotations

from aiohttp import web

from callcenter.store.fieldmap import field_map
from callcenter.store.roles import AGENCY, CONSOLE_ROLES
from callcenter.web.access import error, require, user_of
from callcenter.web.dispatch_api import agency_names
from callcenter.web.keys import CONFIG, DIRECTORY, STORE
from callcenter.web.trail import trace_reads

routes = web.RouteTableDef()


@routes.get("/api/map/settings")
@require(*CONSOLE_ROLES)
async def settings(request: web.Request) -> web.Response:
    config = request.app[CONFIG].web
    return web.json_response({"tiles": config.map_tiles, "attribution": config.map_attribution})


@routes.get("/api/map")
@require(*CONSOLE_ROLES)
async def dashboard(request: web.Request) -> web.Response:
    """Open incidents with coordinates (newest first) and their units' last positions and statuses."""
    user = user_of(request)
    agency: str | None = None
    if user.role == AGENCY:
        if not user.agency:
            return error(403, "no agency is linked to your account")
        agency = user.agency
    items = await field_map(request.app[STORE], agency=agency)
    await trace_reads(request.app[STORE], [user], "map", [item.incident for item in items])
    names = agency_names(request.app.get(DIRECTORY))
    incidents = []
    for item in items:
        body = item.as_json()
        for entry in [*body["dispatches"], *body["units"]]:
            entry["agency_name"] = names.get(entry["agency"], entry["agency"])
        incidents.append(body)
    return web.json_response({"incidents": incidents})
