"""The small public pages citizens open from an SMS link (rating, location): one HTML shell.

No session, no console assets: a title, a body the caller builds from escaped text, the security
headers of the page (each page sets its own Content-Security-Policy), and ``lang="id"``.
"""

from __future__ import annotations

import html
from collections.abc import Mapping

from aiohttp import web


def citizen_page(
    title: str, body: str, *, testid: str, headers: Mapping[str, str], status: int = 200, head: str = ""
) -> web.Response:
    """``body`` and ``head`` are HTML already (escape what comes from outside); ``title`` is text."""
    document = (
        '<!doctype html>\n<html lang="id"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>{head}</head>"
        f'<body><main data-testid="{html.escape(testid)}"><h1>{html.escape(title)}</h1>{body}</main></body></html>\n'
    )
    return web.Response(text=document, status=status, content_type="text/html", charset="utf-8", headers=headers)


__all__ = ["citizen_page"]
