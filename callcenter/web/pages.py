"""The console page and its static assets (see docs/console-api.md, "Pages and assets").

Everything the browser needs is served by the app itself from ``web/static/`` (no CDN: the console
must work on a closed network). Both the page and the assets carry the security headers: a strict
CSP (no inline script or style, nothing from another origin, no framing), ``nosniff`` (so a file is
only ever run as the type we send) and a same-origin referrer policy.

The page is public on purpose: it holds no data; it asks ``/api/me`` and shows the login form on 401.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from pathlib import Path

from aiohttp import web
from aiohttp.abc import AbstractRouter

from callcenter.web.keys import CONFIG

STATIC = Path(__file__).parent / "static"

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; "
        "script-src 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

#: Sent explicitly: with ``nosniff`` a module script is refused unless its type is a JavaScript one,
#: and the system's mime.types may still say ``application/javascript`` or nothing at all.
CONTENT_TYPES: dict[str, str] = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


def _secure(headers: MutableMapping[str, str]) -> None:
    headers.update(SECURITY_HEADERS)


def tile_origin(template: str) -> str | None:
    """The origin the maps' tiles come from (``{s}`` subdomains as ``*``), for the page's ``img-src``;
    None without tiles or for an unusable template (then the browser simply gets none)."""
    found = re.fullmatch(r"(https?://)([A-Za-z0-9.{}*:\[\]-]+)/.*", template)
    if found is None:
        return None
    host = found.group(2).replace("{s}", "*")
    if not re.fullmatch(r"[A-Za-z0-9.*:\[\]-]+", host):
        return None
    return found.group(1) + host


def _page(request: web.Request, name: str) -> web.StreamResponse:
    """A page: always fresh (a deployed fix reaches every desk at the next reload), with the
    security headers; the configured tile server is the one other origin its images may come from."""
    response = web.FileResponse(STATIC / name)
    response.content_type = "text/html"
    response.headers["Cache-Control"] = "no-store"
    _secure(response.headers)
    config = request.app.get(CONFIG)
    origin = tile_origin(config.web.map_tiles) if config is not None else None
    if origin is not None:
        response.headers["Content-Security-Policy"] = SECURITY_HEADERS["Content-Security-Policy"].replace(
            "img-src 'self' data:", f"img-src 'self' data: {origin}"
        )
    return response


class SecureStaticResource(web.StaticResource):
    """``web.static`` with the security headers and fixed content types on every answer (404 too)."""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            response = await super()._handle(request)
        except web.HTTPException as exc:
            _secure(exc.headers)
            raise
        _secure(response.headers)
        filename = request.match_info.get("filename", "")
        content_type = CONTENT_TYPES.get(Path(filename).suffix.lower())
        # Only for a file that exists: a 404 keeps its own (plain text) type.
        if (
            content_type is not None
            and isinstance(response, web.FileResponse)
            and (Path(self.get_info()["directory"]) / filename).is_file()
        ):
            response.content_type = content_type
        return response


class _SecureStaticDef(web.AbstractRouteDef):
    """Route definition that registers a :class:`SecureStaticResource` (what ``routes.static`` does)."""

    def __init__(self, prefix: str, path: Path) -> None:
        self.prefix = prefix
        self.path = path

    def register(self, router: AbstractRouter) -> list[web.AbstractRoute]:
        assert isinstance(router, web.UrlDispatcher)
        resource = SecureStaticResource(self.prefix, self.path, append_version=False)
        router.register_resource(resource)
        return list(resource)


async def index(request: web.Request) -> web.StreamResponse:
    """The console: one page for call-takers and agency officers."""
    return _page(request, "index.html")


async def supervisor(request: web.Request) -> web.StreamResponse:
    """The supervision page (docs/supervision.md); public like ``/``: it holds no data and asks the API."""
    return _page(request, "supervisor.html")


#: The page module's routes: ``GET /``, ``GET /supervisor`` and ``/static/...``.
routes: list[web.AbstractRouteDef] = [
    web.get("/", index),
    web.get("/supervisor", supervisor),
    _SecureStaticDef("/static", STATIC),
]
