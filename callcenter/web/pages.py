"""Placeholder: the console page and its static assets arrive here (see docs/console-api.md)."""

from __future__ import annotations

from aiohttp import web

routes = web.RouteTableDef()
