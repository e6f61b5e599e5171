"""The centre's side of citizen reports (``/lapor``): read a report and its photo, classify, close.

For call-takers and supervisors only. Taking a report and calling the citizen back belong to the
queue side (the report pops like a call; ``POST /api/reports/{id}/callback``). Classifying a report
prank or hoax flags the number exactly as a classified call does and counts against the number's use
of the app: ``[report] block_after_false`` such reports block it from the app, never from 112.
"""

from __future__ import annotations

from aiohttp import web

from callcenter.forms.categories import CLASSIFICATION_CODES
from callcenter.forms.phone import normalize
from callcenter.store.dispatches import PHOTO_NAME
from callcenter.store.models import Report
from callcenter.store.reports import report_json
from callcenter.store.roles import CENTRE_ROLES, SUPERVISOR_ROLES
from callcenter.web.access import Reply, error, invalid, json_object, require, user_of
from callcenter.web.keys import APP_NUMBERS, CONFIG, REPORTS
from callcenter.web.report_app import upload_dir
from callcenter.web.uploads import photo_response

routes = web.RouteTableDef()
_MAX_ID = 2**31 - 1


async def _report(request: web.Request) -> Report:
    raw = request.match_info["id"]
    report = await request.app[REPORTS].get(int(raw)) if raw.isdigit() and int(raw) <= _MAX_ID else None
    if report is None:
        raise Reply(error(404, "no such report"))
    return report


@routes.get("/api/reports")
@require(*CENTRE_ROLES)
async def waiting(request: web.Request) -> web.Response:
    """Reports nobody has taken yet, oldest first."""
    return web.json_response({"reports": [report_json(r) for r in await request.app[REPORTS].waiting()]})


@routes.get("/api/reports/{id}")
@require(*CENTRE_ROLES)
async def get_report(request: web.Request) -> web.Response:
    return web.json_response({"report": report_json(await _report(request))})


@routes.get("/api/reports/{id}/photo")
@require(*CENTRE_ROLES)
async def report_photo(request: web.Request) -> web.StreamResponse:
    """The report's photo (served as its checked type, sandboxed); 404 when it has none."""
    report = await _report(request)
    match = PHOTO_NAME.fullmatch(report.photo or "")
    if match is None:
        return error(404, "this report has no photo")
    return photo_response(upload_dir(request.app[CONFIG].report.upload_dir), match.group(0), match.group(1))


@routes.post("/api/reports/{id}/classify")
@require(*CENTRE_ROLES)
async def classify(request: web.Request) -> web.Response:
    """``{"classification"}``, a call classification code; prank/hoax count as false reports."""
    report = await _report(request)
    code = (await json_object(request)).get("classification")
    if not isinstance(code, str) or code not in CLASSIFICATION_CODES:
        return invalid({"classification": f"one of {', '.join(sorted(CLASSIFICATION_CODES))}"})
    user = user_of(request)
    classified = await request.app[REPORTS].classify(report.id, code, user_id=user.id, username=user.username)
    if classified is None:
        return error(404, "no such report")
    body = {
        "report": report_json(classified.report),
        "false_reports": classified.false_reports,
        "blocked": classified.blocked,
    }
    return web.json_response(body)


@routes.post("/api/reports/{id}/close")
@require(*CENTRE_ROLES)
async def close(request: web.Request) -> web.Response:
    """Done with the report (called back, or nothing more to do); 409 when it is closed already."""
    report = await _report(request)
    closed = await request.app[REPORTS].close(report.id)
    if closed is None:
        return error(409, "the report is closed already")
    return web.json_response({"report": report_json(closed)})


@routes.get("/api/report-numbers/blocked")
@require(*SUPERVISOR_ROLES)
async def blocked_numbers(request: web.Request) -> web.Response:
    """Numbers blocked from the report app after false reports (they can still call 112)."""
    rows = await request.app[APP_NUMBERS].blocked()
    numbers = [
        {
            "number": r.number,
            "false_reports": r.false_reports,
            "blocked_at": r.blocked_at.isoformat() if r.blocked_at else None,
        }
        for r in rows
    ]
    return web.json_response({"numbers": numbers})


@routes.post("/api/report-numbers/unblock")
@require(*SUPERVISOR_ROLES)
async def unblock_number(request: web.Request) -> web.Response:
    """``{"number"}``: a supervisor lifts the block after review; the false-report count starts afresh."""
    raw = (await json_object(request)).get("number")
    number = normalize(raw if isinstance(raw, str) else "", request.app[CONFIG].numbers.default_region).e164
    if number is None:
        return invalid({"number": "not a phone number"})
    if not await request.app[APP_NUMBERS].unblock(number):
        return error(404, "this number never used the report app")
    return web.json_response({"number": number, "blocked": False})


__all__ = ["routes"]
