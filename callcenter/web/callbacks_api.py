"""Abandoned calls, one-click call-backs, rating requests, and the citizen's public rating page.

``docs/supervision.md`` ("API"): ``GET /api/abandoned``, ``POST /api/calls/{id}/callback``,
``POST /api/incidents/{id}/rating`` and ``GET``/``POST /rate/{token}``.

The services come from ``callcenter/supervision`` through their AppKeys at request time (they are
built by ``supervision_ctx`` after AMI and dispatch); until they exist the endpoints answer 503.

``/rate/{token}`` is the page behind the link we text to citizens: public, no session, no script.
It is a server-rendered form whose buttons POST the score; the random token in the path is the only
credential (so the page sends ``Referrer-Policy: no-referrer`` and ``Cache-Control: no-store``), and
the store accepts one score per token. The POST carries no CSRF token — there is no session to
forge — so the CSRF middleware must let ``/rate/`` through as a public POST prefix (``web/auth.py``).
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from callcenter.store import StoreUnavailable
from callcenter.supervision import CALLBACKS, RATINGS
from callcenter.supervision.callbacks import CallbackRefused, callback_json, default_window
from callcenter.supervision.ratings import VIAS, RatingRefused, rating_json
from callcenter.web.access import error, require, user_of

log = structlog.get_logger("callcenter.web.callbacks")
routes = web.RouteTableDef()

_CALL_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_MAX_ID = 2**31 - 1
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _parse_time(raw: str) -> datetime:
    """ISO date or datetime; a naive value is taken as UTC."""
    value = datetime.fromisoformat(raw)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@routes.get("/api/abandoned")
@require("calltaker", "supervisor")
async def abandoned(request: web.Request) -> web.StreamResponse:
    """Callers who hung up before an answer (last 24 h by default), each with its call-backs."""
    callbacks = request.app.get(CALLBACKS)
    if callbacks is None:
        return error(503, "call-backs are not available yet")
    start, end = default_window()
    fields: dict[str, str] = {}
    for name in ("from", "to"):
        raw = request.query.get(name)
        if raw:
            try:
                value = _parse_time(raw)
            except ValueError:
                fields[name] = "not an ISO date or datetime"
                continue
            if name == "from":
                start = value
            else:
                end = value
    if not fields and start >= end:
        fields["to"] = "must be after from"
    if fields:
        return error(422, "invalid filter", fields=fields)
    try:
        rows = await callbacks.abandoned(start, end)
    except StoreUnavailable:
        return error(503, "database unavailable, try again shortly")
    return web.json_response(rows)


@routes.post("/api/calls/{call_id}/callback")
@require("calltaker", "supervisor")
async def call_back(request: web.Request) -> web.StreamResponse:
    """Ring the requester's softphone (a supervisor without one: the overflow line), then the citizen."""
    callbacks = request.app.get(CALLBACKS)
    if callbacks is None:
        return error(503, "call-backs are not available yet")
    call_id = request.match_info["call_id"]
    if not _CALL_ID.match(call_id):
        return error(404, "no such call")
    user = user_of(request)
    if user.role == "calltaker" and not user.interface:
        return error(409, "your account has no softphone to call back from")
    try:
        cb = await callbacks.request(call_id, user_id=user.id, interface=user.interface)
    except LookupError:
        return error(404, "no such call")
    except CallbackRefused as exc:
        return error(exc.status, str(exc))
    except StoreUnavailable:
        return error(503, "database unavailable, try again shortly")
    return web.json_response({"callback": callback_json(cb)}, status=202)


@routes.post("/api/incidents/{incident_id}/rating")
@require("supervisor")
async def ask_rating(request: web.Request) -> web.StreamResponse:
    """Ask the citizen for a rating now, by ``ivr`` or ``sms`` (normally automatic)."""
    ratings = request.app.get(RATINGS)
    if ratings is None:
        return error(503, "ratings are not available yet")
    raw_id = request.match_info["incident_id"]
    if not raw_id.isascii() or not raw_id.isdigit() or int(raw_id) > _MAX_ID:
        return error(404, "no such incident")
    try:
        body: Any = await request.json()
    except ValueError:
        return error(400, "body must be JSON")
    via = body.get("via") if isinstance(body, dict) else None
    if via not in VIAS:
        return error(422, "invalid request", fields={"via": f"one of {', '.join(VIAS)}"})
    try:
        rating = await ratings.request(int(raw_id), via)
    except LookupError:
        return error(404, "no such incident")
    except RatingRefused as exc:
        return error(exc.status, str(exc))
    except StoreUnavailable:
        return error(503, "database unavailable, try again shortly")
    return web.json_response({"rating": rating_json(rating)}, status=202)


# -- the public page ---------------------------------------------------------------------------------


def _page(title: str, body: str, status: int = 200) -> web.Response:
    document = (
        '<!doctype html>\n<html lang="id"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title></head>"
        f'<body><main data-testid="rating-page"><h1>{html.escape(title)}</h1>{body}</main></body></html>\n'
    )
    return web.Response(text=document, status=status, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)


def _form(token: str, reference: str) -> str:
    buttons = "".join(
        f'<button type="submit" name="score" value="{n}" data-testid="rate-{n}">{n}</button> ' for n in range(1, 6)
    )
    return (
        f"<p>Laporan {html.escape(reference)}. Bagaimana pelayanan pusat panggilan 112 kepada Anda?</p>"
        "<p>1 = sangat buruk, 5 = sangat baik.</p>"
        f'<form method="post" action="/rate/{html.escape(token)}">{buttons}</form>'
    )


def _closed(score: int | None) -> str:
    if score is not None:
        return f"<p>Penilaian Anda ({score}) sudah kami terima. Terima kasih.</p>"
    return "<p>Tautan ini sudah tidak berlaku.</p>"


@routes.get("/rate/{token}")
async def rate_page(request: web.Request) -> web.StreamResponse:
    """Public: the 1-5 buttons, or a note that this link was already used."""
    ratings = request.app.get(RATINGS)
    token = request.match_info["token"]
    if ratings is None:
        return _page("Layanan belum tersedia", "<p>Silakan coba lagi nanti.</p>", 503)
    view = await ratings.by_token(token) if _TOKEN.match(token) else None
    if view is None:
        return _page("Tautan tidak dikenal", "<p>Tautan penilaian ini tidak dikenal.</p>", 404)
    if not view.open:
        return _page("Terima kasih", _closed(view.score))
    return _page("Nilai layanan 112", _form(token, view.reference))


@routes.post("/rate/{token}")
async def rate_submit(request: web.Request) -> web.StreamResponse:
    """Public: store the score once per token."""
    ratings = request.app.get(RATINGS)
    token = request.match_info["token"]
    if ratings is None:
        return _page("Layanan belum tersedia", "<p>Silakan coba lagi nanti.</p>", 503)
    if not _TOKEN.match(token):
        return _page("Tautan tidak dikenal", "<p>Tautan penilaian ini tidak dikenal.</p>", 404)
    form = await request.post()
    raw = form.get("score")
    if not isinstance(raw, str) or raw not in ("1", "2", "3", "4", "5"):
        return _page("Nilai tidak valid", "<p>Pilih nilai 1 sampai 5.</p>", 422)
    if await ratings.record_token(token, int(raw)):
        return _page("Terima kasih", "<p>Penilaian Anda sudah kami terima. Terima kasih.</p>")
    view = await ratings.by_token(token)
    if view is None:
        return _page("Tautan tidak dikenal", "<p>Tautan penilaian ini tidak dikenal.</p>", 404)
    return _page("Terima kasih", _closed(view.score), 409)
