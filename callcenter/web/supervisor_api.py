"""Supervisor endpoints: wallboard, call log, call detail, recordings, statistics and CSV (docs/supervision.md).

Queries live in ``store/stats.py`` and ``store/calllog.py``; this module validates input (a bad filter is
a 422 naming the field, never a 500 or a silently empty result), shapes JSON/CSV and writes the access log. Sensitive
records — recordings and women-and-children cases — are only served after their access-log row is
committed: if the log cannot be written the request fails (503) rather than leaving no trace.

A recording's path comes from the database (Asterisk's MixMonitor file name, reported through the
hangup AGI), so it is treated as untrusted: it must lie under the configured ``queue.record_dir``
after normalisation, and the resolved file (symlinks followed) under ``recordings_root`` + that dir.
Anything else is answered 404, exactly like a missing file, so probing learns nothing.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timedelta
from typing import Any

import structlog
from aiohttp import web

from callcenter.forms.categories import CATEGORY_CODES, CLASSIFICATION_CODES
from callcenter.forms.phone import normalize
from callcenter.queue.live import member_json
from callcenter.store import utcnow
from callcenter.store.access import log_access
from callcenter.store.calllog import CALL_STATUSES, CallFilter, CallLog, call_row
from callcenter.store.recordings import recording_file
from callcenter.store.roles import SUPERVISOR
from callcenter.store.stats import Period, Stats
from callcenter.web.access import Reply, date_range, error, invalid, require, user_of
from callcenter.web.console_api import incident_json
from callcenter.web.keys import (
    AUTO_PAUSE,
    CALL_LOG,
    CONFIG,
    DISPATCHES,
    PRESENCE_BOARD,
    REPORT_QUEUE,
    STATS,
    STORE,
    TRACKER,
)
from callcenter.web.trail import trace_reads

log = structlog.get_logger("callcenter.web.supervisor")
routes = web.RouteTableDef()

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
MAX_OFFSET = 10_000_000
#: Statistics span at most two years: a yearly report with room, not an accidental full-history scan.
MAX_STATS_DAYS = 731
DEFAULT_STATS_DAYS = 30
_CALL_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_CODE = re.compile(r"[a-z0-9_-]{1,32}")
CSV_TABLES = (
    "by_category",
    "by_agency",
    "by_hour",
    "by_day",
    "classification",
    "answer_time",
    "ratings_calltaker",
    "ratings_agency",
    "calls",
)

# -- query parsing (a bad parameter raises Reply: the error middleware answers the 422) ----------------------


def _period(request: web.Request, stats: Stats) -> Period:
    """``from``/``to`` as given; without ``to``: up to the end of today; without ``from``: the 30 days
    before ``to`` (a month is what a supervisor opening the page wants, and it is cheap)."""
    start, end = date_range(request, stats.offset)
    if end is None:
        end = stats.local_midnight(utcnow()) + timedelta(days=1)
        if start is not None and end <= start:
            end = start + timedelta(days=1)
    if start is None:
        start = end - timedelta(days=DEFAULT_STATS_DAYS)
    if end - start > timedelta(days=MAX_STATS_DAYS):
        raise Reply(invalid({"to": f"the period may span at most {MAX_STATS_DAYS} days"}))
    return Period(start, end, stats.offset)


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name, "")
    if raw == "":
        return default
    if not re.fullmatch(r"[0-9]{1,9}", raw) or not lo <= int(raw) <= hi:
        raise Reply(invalid({name: f"must be a whole number from {lo} to {hi}"}))
    return int(raw)


async def _call_filter(request: web.Request, stats: Stats, calls: CallLog) -> CallFilter:
    q = request.query
    start, end = date_range(request, stats.offset)
    fields: dict[str, str] = {}
    number = None
    if q.get("number"):
        number = normalize(q["number"], request.app[CONFIG].numbers.default_region).e164
        if number is None:
            fields["number"] = "not a phone number"
    category = q.get("category") or None
    if category is not None and category not in CATEGORY_CODES:
        fields["category"] = "unknown category"
    classification = q.get("classification") or None
    if classification is not None and classification not in CLASSIFICATION_CODES | {"unclassified"}:
        fields["classification"] = "unknown classification"
    agency = q.get("agency") or None
    if agency is not None and not _CODE.fullmatch(agency):
        fields["agency"] = "not an agency code"
    status = q.get("status") or None
    if status is not None and status not in CALL_STATUSES:
        fields["status"] = "unknown status"
    calltaker = q.get("calltaker") or None
    if calltaker is not None and not re.fullmatch(r"[A-Za-z0-9_.@/-]{1,128}", calltaker):
        fields["calltaker"] = "not a user id, username or member name"
    if fields:
        raise Reply(invalid(fields))
    answered_by = await calls.calltaker_names(calltaker) if calltaker is not None else None
    return CallFilter(start, end, number, answered_by, category, classification, agency, status)


def _call_id(request: web.Request) -> str:
    raw = request.match_info["id"]
    if not _CALL_ID.fullmatch(raw):
        raise web.HTTPNotFound(text='{"error": "no such call"}', content_type="application/json")
    return raw


# -- wallboard ---------------------------------------------------------------------------------------------


@routes.get("/api/wallboard")
@require(SUPERVISOR)
async def wallboard(request: web.Request) -> web.Response:
    """The live queue from the tracker (no database read) and today's figures from the store."""
    stats = request.app[STATS]
    now = utcnow()
    tracker = request.app.get(TRACKER)
    waiting: list[dict[str, Any]] = []
    members: list[dict[str, Any]] = []
    if tracker is not None:
        for caller in sorted(tracker.live.waiting.values(), key=lambda w: (w.position, w.joined_at)):
            waiting.append(
                {
                    "uniqueid": caller.uniqueid,
                    "caller": caller.caller,
                    "position": caller.position,
                    "wait_seconds": round(max(0.0, (now - caller.joined_at).total_seconds()), 1),
                    # A citizen's report from the app, waiting in the same queue (``queue/reports.py``).
                    "report_id": caller.report_id,
                }
            )
        live_members = list(tracker.live.members.values())
        names = await request.app[CALL_LOG].member_names(
            [m.name for m in live_members] + [m.interface for m in live_members]
        )
        board = request.app.get(PRESENCE_BOARD)
        for member in sorted(tracker.live.members.values(), key=lambda m: (m.queue, m.interface)):
            display = names.get(member.interface) or names.get(member.name) or member.name
            row = {**member_json(member), "display_name": display}
            members.append(board.annotate(row, now) if board is not None else row)
    report_queue = request.app.get(REPORT_QUEUE)
    if report_queue is not None:
        # Reports not in the queue (being placed, failed, no call-taker logged in) still wait: shown too.
        for report in await report_queue.outside_queue():
            created = datetime.fromisoformat(report["created_at"])
            waiting.append(
                {
                    "uniqueid": None,
                    "caller": report["number"],
                    "position": None,
                    "wait_seconds": round(max(0.0, (now - created).total_seconds()), 1),
                    "report_id": report["report_id"],
                    "report": report,
                }
            )
    auto_pause = request.app.get(AUTO_PAUSE)
    today = await stats.today(now)
    return web.json_response(
        {
            "now": now.isoformat(),
            "waiting": waiting,
            "longest_wait": max((w["wait_seconds"] for w in waiting), default=0.0),
            "members": members,
            # Auto-pauses of the last hour (newest first), for a wallboard opened after the alert.
            "alerts": [
                a
                for a in (auto_pause.alerts if auto_pause is not None else [])
                if datetime.fromisoformat(a["at"]) > now - timedelta(hours=1)
            ],
            **today,
        }
    )


# -- call log and detail -------------------------------------------------------------------------------------


@routes.get("/api/calls/log")
@require(SUPERVISOR)
async def call_log(request: web.Request) -> web.Response:
    stats = request.app[STATS]
    limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _int_param(request, "offset", 0, 0, MAX_OFFSET)
    filters = await _call_filter(request, stats, request.app[CALL_LOG])
    page = await request.app[CALL_LOG].call_log(filters, limit=limit, offset=offset)
    incidents = [i for call in page.calls for i in call["incidents"]]
    await trace_reads(request.app[STORE], [user_of(request)], "call_log", incidents)
    return web.json_response({"calls": page.calls, "total": page.total, "limit": limit, "offset": offset})


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@routes.get("/api/calls/{id}/detail")
@require(SUPERVISOR)
async def call_detail(request: web.Request) -> web.Response:
    """Everything about one call; opening a women-and-children case is logged before it is shown."""
    dispatches = request.app[DISPATCHES]
    call_id = _call_id(request)
    detail = await request.app[CALL_LOG].call_detail(call_id)
    if detail is None:
        return error(404, "no such call")
    incident = detail.incident
    seen = [*detail.incidents, *([incident] if incident is not None else [])]
    await trace_reads(request.app[STORE], [user_of(request)], "view_case", seen, {"call_id": call_id})
    views = await dispatches.list_for_incident(incident.id) if incident is not None else []
    rating = detail.rating
    call = detail.call
    body = call_row(call, detail.calltaker, detail.incidents)
    body.update(
        channel=call.channel,
        dialed=call.dialed,
        routed_by=call.routed_by,
        queue=call.queue,
        queue_priority=call.queue_priority,
        language=call.language,
        queued_at=_iso(call.queued_at),
        abandon_position=call.abandon_position,
        hangup_cause=call.hangup_cause,
        classified_at=_iso(call.classified_at),
        classified_by=call.classified_by,
    )
    incident_body = None
    if incident is not None:
        incident_body = incident_json(incident)
        incident_body.update(
            sla_due_at=_iso(incident.sla_due_at),
            sla_met_at=_iso(incident.sla_met_at),
            sla_breached_at=_iso(incident.sla_breached_at),
        )
    return web.json_response(
        {
            "call": body,
            "timeline": [
                {"id": e.id, "kind": e.kind, "at": e.at.isoformat(), "source": e.source, "data": e.data}
                for e in detail.events
            ],
            "incident": incident_body,
            "incident_audit": [
                {"at": a.at.isoformat(), "user": u, "action": a.action, "changes": a.changes} for a, u in detail.audit
            ],
            "dispatches": [v.as_json(with_incident=False) for v in views],
            "rating": (
                {
                    "via": rating.via,
                    "status": rating.status,
                    "score": rating.score,
                    "requested_at": _iso(rating.requested_at),
                    "rated_at": _iso(rating.rated_at),
                }
                if rating is not None
                else None
            ),
            "recording_url": f"/api/calls/{call_id}/recording" if call.recording else None,
        }
    )


@routes.get("/api/calls/{id}/recording")
@require(SUPERVISOR)
async def recording(request: web.Request) -> web.StreamResponse:
    """The call's WAV with Range support; each served request is logged first (the <audio> element
    asks in ranges, so one listening is usually several rows: each is an access to the audio)."""
    return await serve_recording(request, _call_id(request))


async def serve_recording(request: web.Request, call_id: str, **trace: Any) -> web.StreamResponse:
    """The call's recording for the logged-in user, after its access-log row (``trace`` adds detail)."""
    detail = await request.app[CALL_LOG].call_detail(call_id)
    if detail is None:
        return error(404, "no such call")
    cfg = request.app[CONFIG]
    path = recording_file(detail.call.recording, cfg.queue.record_dir, cfg.supervision.recordings_root)
    if path is None:
        if detail.call.recording:
            log.warning("recording.refused_or_missing", call_id=call_id, recording=detail.call.recording)
        return error(404, "no recording")
    user = user_of(request)
    await log_access(
        request.app[STORE],
        user.id,
        "play_recording",
        "call",
        call_id,
        {"range": request.headers.get("Range"), "username": user.username, **trace},
    )
    return web.FileResponse(path, headers={"Content-Type": "audio/wav", "Cache-Control": "no-store"})


# -- statistics --------------------------------------------------------------------------------------------


@routes.get("/api/stats")
@require(SUPERVISOR)
async def statistics(request: web.Request) -> web.Response:
    stats = request.app[STATS]
    return web.json_response(await stats.statistics(_period(request, stats)))


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")


def csv_cell(value: Any) -> Any:
    """Neutralise spreadsheet formulas (OWASP CSV injection): a text cell starting with = + - @ is
    prefixed with ', except plain numbers (E.164 caller numbers start with +)."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([[csv_cell(v) for v in row] for row in rows])
    return out.getvalue()


def stats_csv(table: str, body: dict[str, Any]) -> str:
    """One statistics table of ``/api/stats`` as CSV."""
    if table == "by_category":
        return _csv(["code", "count", "share"], [[r["code"], r["count"], r["share"]] for r in body["by_category"]])
    if table == "by_agency":
        return _csv(
            ["code", "count", "share", "accepted"],
            [[r["code"], r["count"], r["share"], r["accepted"]] for r in body["by_agency"]],
        )
    if table == "by_hour":
        return _csv(["hour", "count"], [[h, n] for h, n in enumerate(body["by_hour"])])
    if table == "by_day":
        return _csv(
            ["day", "count", "answered", "abandoned"],
            [[r["day"], r["count"], r["answered"], r["abandoned"]] for r in body["by_day"]],
        )
    if table == "classification":
        counts = body["classification_counts"]
        return _csv(
            ["classification", "count", "share"],
            [[c, counts[c], body["classification_share"][c]] for c in counts],
        )
    if table == "answer_time":
        rows = [
            [r["le_seconds"] if r["le_seconds"] is not None else "inf", r["count"]]
            for r in body["answer_time"]["buckets"]
        ]
        return _csv(["le_seconds", "count"], rows)
    if table == "ratings_calltaker":
        return _csv(
            ["calltaker", "display_name", "count", "average"],
            [[r["calltaker"], r["display_name"], r["count"], r["average"]] for r in body["ratings"]["by_calltaker"]],
        )
    if table == "ratings_agency":
        return _csv(
            ["agency", "count", "average"],
            [[r["agency"], r["count"], r["average"]] for r in body["ratings"]["by_agency"]],
        )
    raise KeyError(table)


CALL_COLUMNS = (
    "id",
    "arrived_at",
    "answered_at",
    "ended_at",
    "caller_number",
    "status",
    "wait_seconds",
    "talk_seconds",
    "answered_by",
    "calltaker",
    "classification",
    "incidents",
    "categories",
    "has_recording",
)


@routes.get("/api/stats/{table}.csv")
@require(SUPERVISOR)
async def stats_table_csv(request: web.Request) -> web.StreamResponse:
    table = request.match_info["table"]
    if table not in CSV_TABLES:
        return error(404, "no such table", tables=list(CSV_TABLES))
    stats = request.app[STATS]
    headers = {
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f'attachment; filename="{table}.csv"',
    }
    if table != "calls":
        return web.Response(text=stats_csv(table, await stats.statistics(_period(request, stats))), headers=headers)
    filters = await _call_filter(request, stats, request.app[CALL_LOG])
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    header = io.StringIO()
    csv.writer(header, lineterminator="\r\n").writerow(CALL_COLUMNS)
    await response.write(header.getvalue().encode())
    user = user_of(request)
    async for batch in request.app[CALL_LOG].iter_calls(filters):
        # Traced before each batch is written; a trail that cannot be written aborts the download.
        incidents = [i for call in batch for i in call["incidents"]]
        await trace_reads(request.app[STORE], [user], "export_csv", incidents)
        rows = [
            [
                *(r[c] for c in CALL_COLUMNS[:11]),
                " ".join(i["reference"] for i in r["incidents"]),
                " ".join(i["category"] for i in r["incidents"]),
                int(r["has_recording"]),
            ]
            for r in batch
        ]
        chunk = io.StringIO()
        csv.writer(chunk, lineterminator="\r\n").writerows([[csv_cell(v) for v in row] for row in rows])
        await response.write(chunk.getvalue().encode())
    await response.write_eof()
    return response
