"""The centre's side of a citizen's report from the app: the one-click call-back from the report's pop.

``POST /api/reports/{id}/callback`` rings the requester's own softphone, then the report's verified number
(``supervision/callbacks.py``, as for an abandoned call), and links the report to that call: its
``callback_uniqueid`` is the call-back's Uniqueid (``callback-<id>``) and it is ``called_back``. The
call-back belongs to the report's turn in the queue (the call row the tracker made of it), so its outcome
reaches the console like any call-back (``{"type": "callback"}``).
"""

from __future__ import annotations

import structlog
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store.models import Call
from callcenter.store.quota import QuotaExceeded
from callcenter.store.reports import CALLED_BACK, TAKEN, report_json
from callcenter.store.roles import CALLTAKER, CENTRE_ROLES
from callcenter.supervision.callbacks import CallbackRefused, callback_json
from callcenter.web.access import error, require, user_of
from callcenter.web.keys import CALLBACKS, REPORTS, STORE

log = structlog.get_logger("callcenter.web.reports")
routes = web.RouteTableDef()

_MAX_ID = 2**31 - 1


async def report_turn(request: web.Request, report_id: int) -> str | None:
    """The call row of the report's latest turn in the queue that a call-taker answered."""

    async def op(session: AsyncSession) -> str | None:
        found: str | None = await session.scalar(
            select(Call.id)
            .where(Call.uniqueid.like(f"report-{report_id}-%-q"), Call.answered_at.is_not(None))
            .order_by(Call.answered_at.desc())
            .limit(1)
        )
        return found

    return await request.app[STORE].transaction("report_turn", op)


@routes.post("/api/reports/{report_id}/callback")
@require(*CENTRE_ROLES)
async def call_back(request: web.Request) -> web.StreamResponse:
    """Ring the requester's softphone, then the citizen who sent the report; 202 with both."""
    raw = request.match_info["report_id"]
    if not raw.isascii() or not raw.isdigit() or int(raw) > _MAX_ID:
        return error(404, "no such report")
    callbacks = request.app.get(CALLBACKS)
    if callbacks is None:
        return error(503, "call-backs are not available yet")
    report_id = int(raw)
    reports = request.app[REPORTS]
    report = await reports.get(report_id)
    if report is None:
        return error(404, "no such report")
    if report.status not in (TAKEN, CALLED_BACK):
        return error(409, f"the report is {report.status}: only a taken report is called back")
    user = user_of(request)
    if user.role == CALLTAKER and not user.interface:
        return error(409, "your account has no softphone to call back from")
    turn = await report_turn(request, report_id)
    if turn is None:
        return error(409, "the report was not answered in the queue")
    try:
        cb = await callbacks.request(turn, user_id=user.id, interface=user.interface, number=report.number)
    except LookupError:
        return error(404, "no such report")
    except CallbackRefused as exc:
        return error(409, str(exc))
    except QuotaExceeded as exc:
        return error(429, str(exc))
    linked = await reports.link_callback(report_id, f"callback-{cb.id}")
    log.info("report.callback_requested", report_id=report_id, callback_id=cb.id, user_id=user.id)
    shown = report_json(linked) if linked is not None else report_json(report)
    return web.json_response({"callback": callback_json(cb), "report": shown}, status=202)


__all__ = ["report_turn", "routes"]
