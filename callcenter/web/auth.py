"""Placeholder: sessions, CSRF, login throttling and the auth endpoints arrive here (see docs/console-api.md)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Middleware

routes = web.RouteTableDef()


def middlewares() -> list[Middleware]:
    return []
