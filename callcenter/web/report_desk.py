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

from callcenter.store.quota import QuotaExceeded
from callcenter.store.reports import CALLED_BACK, TAKEN, report_json
from callcenter.store.roles import CALLTAKER, CENTRE_ROLES
from callcenter.supervision.callbacks import CallbackRefused, callback_json
from callcenter.web.access import error, require, user_of
from callcenter.web.keys import CALLBACKS, REPORT_QUEUE, REPORTS

log = structlog.get_logger("callcenter.web.reports")
routes = web.RouteTableDef()

_MAX_ID = 2**31 - 1


@routes.post("/api/reports/{report_id}/callback")
@require(*CENTRE_ROLES)
async def call_back(request: web.Request) -> web.StreamResponse:
    """Ring the requester's softphone, then the citizen who sent the report; 202 with both."""
    raw = request.match_info["report_id"]
    if not raw.isascii() or not raw.isdigit() or int(raw) > _MAX_ID:
        return error(404, "no such report")
    callbacks, report_queue = request.app.get(CALLBACKS), request.app.get(REPORT_QUEUE)
    if callbacks is None or report_queue is None:
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
    turn = await report_queue.turn(report_id)
    if turn is None:
        return error(409, "the report was not answered in the queue")
    try:
        cb = await callbacks.request(turn.id, user_id=user.id, interface=user.interface, number=report.number)
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


__all__ = ["routes"]
