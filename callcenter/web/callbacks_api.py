"""Abandoned calls, one-click call-backs, rating requests, and the citizen's public rating page.

``docs/supervision.md`` ("API"): ``GET /api/abandoned``, ``POST /api/calls/{id}/callback``,
``POST /api/incidents/{id}/rating`` and ``GET``/``POST /rate/{token}``.

The services come from ``callcenter/supervision`` through their AppKeys at request time (they are
built by ``supervision_ctx`` after AMI and dispatch); until they exist the endpoints answer 503.
``from``/``to`` on the abandoned list are the centre's local days, read by the same helper as the
supervisor's statistics (``web/access.py``), so "10 January" is the same day on both pages. A database
outage is answered 503 by the app's error middleware, like everywhere else.

``/rate/{token}`` is the page behind the link we text to citizens: public, no session, no script.
It is a server-rendered form whose buttons POST the score; the random token in the path is the only
credential (so the page sends ``Referrer-Policy: no-referrer`` and ``Cache-Control: no-store``), and
the store accepts one score per token. The POST carries no CSRF token — there is no session to
forge — so the CSRF middleware must let ``/rate/`` through as a public POST prefix (``web/auth.py``).
"""

from __future__ import annotations

import html
import re
from typing import Any, TypeVar

import structlog
from aiohttp import web

from callcenter.store.quota import QuotaExceeded
from callcenter.store.roles import CALLTAKER, CENTRE_ROLES, SUPERVISOR
from callcenter.supervision.callbacks import CallbackRefused, abandoned_window, callback_json
from callcenter.supervision.ratings import VIAS, RatingRefused, rating_json
from callcenter.web.access import Reply, centre_offset, date_range, error, invalid, require, user_of
from callcenter.web.citizen_page import citizen_page
from callcenter.web.keys import CALLBACKS, RATINGS

log = structlog.get_logger("callcenter.web.callbacks")
routes = web.RouteTableDef()

_CALL_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_MAX_ID = 2**31 - 1
T = TypeVar("T")
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _service(request: web.Request, key: web.AppKey[T], what: str) -> T:
    """The supervision service behind ``key``, or a 503 while ``supervision_ctx`` has not built it."""
    service = request.app.get(key)
    if service is None:
        raise Reply(error(503, f"{what} are not available yet"))
    return service


@routes.get("/api/abandoned")
@require(*CENTRE_ROLES)
async def abandoned(request: web.Request) -> web.StreamResponse:
    """Callers who hung up before an answer, each with its call-backs (``abandoned_window`` fills in
    a missing bound)."""
    callbacks = _service(request, CALLBACKS, "call-backs")
    start, end = abandoned_window(*date_range(request, centre_offset(request.app)))
    if start >= end:
        raise Reply(invalid({"to": "must be after from"}))
    return web.json_response(await callbacks.abandoned(start, end))


@routes.post("/api/calls/{call_id}/callback")
@require(*CENTRE_ROLES)
async def call_back(request: web.Request) -> web.StreamResponse:
    """Ring the requester's softphone (a supervisor without one: the overflow line), then the citizen."""
    callbacks = _service(request, CALLBACKS, "call-backs")
    call_id = request.match_info["call_id"]
    if not _CALL_ID.match(call_id):
        return error(404, "no such call")
    user = user_of(request)
    if user.role == CALLTAKER and not user.interface:
        return error(409, "your account has no softphone to call back from")
    try:
        cb = await callbacks.request(call_id, user_id=user.id, interface=user.interface)
    except LookupError:
        return error(404, "no such call")
    except CallbackRefused as exc:
        return error(409, str(exc))
    except QuotaExceeded as exc:
        return error(429, str(exc))
    return web.json_response({"callback": callback_json(cb)}, status=202)


@routes.post("/api/incidents/{incident_id}/rating")
@require(SUPERVISOR)
async def ask_rating(request: web.Request) -> web.StreamResponse:
    """Ask the citizen for a rating now, by ``ivr`` or ``sms`` (normally automatic)."""
    ratings = _service(request, RATINGS, "ratings")
    raw_id = request.match_info["incident_id"]
    if not raw_id.isascii() or not raw_id.isdigit() or int(raw_id) > _MAX_ID:
        return error(404, "no such incident")
    try:
        body: Any = await request.json()
    except ValueError:
        return error(400, "body must be JSON")
    via = body.get("via") if isinstance(body, dict) else None
    if via not in VIAS:
        return invalid({"via": f"one of {', '.join(VIAS)}"})
    try:
        rating = await ratings.request(int(raw_id), via)
    except LookupError:
        return error(404, "no such incident")
    except RatingRefused as exc:
        return error(409, str(exc))
    except QuotaExceeded as exc:
        return error(429, str(exc))
    return web.json_response({"rating": rating_json(rating)}, status=202)


# -- the public page ---------------------------------------------------------------------------------


def _page(title: str, body: str, status: int = 200) -> web.Response:
    return citizen_page(title, body, testid="rating-page", headers=PAGE_HEADERS, status=status)


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
