"""``GET /api/openapi.json``: the API description, merged from the fragments each module ships."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web

FRAGMENTS = Path(__file__).parent / "openapi"
routes = web.RouteTableDef()


def build_spec(fragments: Path = FRAGMENTS) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "callcenter 112 console API", "version": "1"},
        "components": {
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "cc_session"},
                "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"},
            },
            "schemas": {},
        },
        "security": [{"session": []}],
        "paths": {},
    }
    for path in sorted(fragments.glob("*.json")):
        fragment = json.loads(path.read_text(encoding="utf-8"))
        for url, ops in fragment.get("paths", {}).items():
            spec["paths"].setdefault(url, {}).update(ops)
        spec["components"]["schemas"].update(fragment.get("components", {}).get("schemas", {}))
    return spec


@routes.get("/api/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    """Public on purpose: it describes the API, it grants nothing."""
    return web.json_response(build_spec())
