"""Quality review endpoints (``supervision/quality.py`` has the rules; ``docs/supervision.md``, "Quality review").

Supervisors draw and list the weekly sample, review a call beside its recording (the recording is
served by ``/api/calls/{id}/recording``, which writes the access log as for any listening) and read
scores per call-taker over time (JSON and CSV). Call-takers read the reviews of their own calls and
acknowledge them.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from typing import Any

from aiohttp import web

from callcenter.store import utcnow
from callcenter.store.roles import CALLTAKER, CENTRE_ROLES, SUPERVISOR
from callcenter.supervision.quality import QualityError, form_json, review_json, sample_json, week_bounds
from callcenter.web.access import Reply, date_range, error, invalid, json_object, require, user_of
from callcenter.web.keys import QUALITY
from callcenter.web.supervisor_api import csv_cell, serve_recording

routes = web.RouteTableDef()

_CALL_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_WEEK = re.compile(r"[0-9]{4}-W[0-9]{2}")
MAX_SCORE_DAYS = 731


def _call_id(request: web.Request) -> str:
    raw = request.match_info["id"]
    if not _CALL_ID.fullmatch(raw):
        raise Reply(error(404, "no such call"))
    return raw


def _quality_error(exc: QualityError) -> web.Response:
    if exc.fields:
        return invalid(exc.fields)
    return error(409 if exc.conflict else 422, str(exc))


def _week(request: web.Request, raw: Any) -> str:
    quality = request.app[QUALITY]
    if raw in (None, ""):
        return quality.current_week()
    if not isinstance(raw, str) or not _WEEK.fullmatch(raw):
        raise Reply(invalid({"week": "an ISO week like 2026-W49"}))
    try:
        week_bounds(raw, quality.offset)
    except QualityError as exc:
        raise Reply(_quality_error(exc)) from None
    return raw


@routes.get("/api/quality/form")
@require(*CENTRE_ROLES)
async def form(request: web.Request) -> web.Response:
    return web.json_response(form_json())


@routes.get("/api/quality/samples")
@require(SUPERVISOR)
async def samples(request: web.Request) -> web.Response:
    """The sample of one week (default: the current one), soonest due first, with each call's status."""
    quality = request.app[QUALITY]
    week = _week(request, request.query.get("week"))
    rows = await quality.store.samples(week=week)
    now = utcnow()
    return web.json_response(
        {
            "week": week,
            "current_week": quality.current_week(now),
            "previous_week": quality.previous_week(now),
            "samples": [sample_json(s, now, viewer_id=user_of(request).id, with_reviews=False) for s in rows],
        }
    )


@routes.post("/api/quality/samples")
@require(SUPERVISOR)
async def draw(request: web.Request) -> web.Response:
    """Draw (top up) the sample of a week now: ``{"week": "2026-W49"}``, default the current week."""
    body = await json_object(request)
    week = _week(request, body.get("week"))
    added = await request.app[QUALITY].draw(week, by=user_of(request).id)
    return web.json_response(
        {"week": week, "added": len(added), "reasons": sorted({a.reason for a in added})}, status=201 if added else 200
    )


@routes.get("/api/quality/calls/{id}")
@require(SUPERVISOR)
async def call_quality(request: web.Request) -> web.Response:
    """The call's sample entry with every review and the calibration differences (``sample`` null if not drawn);
    blind (no scores) until this supervisor has submitted their own review."""
    call_id = _call_id(request)
    sample = await request.app[QUALITY].store.sample_of_call(call_id)
    me = user_of(request).id
    return web.json_response(
        {
            "sample": sample_json(sample, utcnow(), viewer_id=me) if sample else None,
            "reviewed_by_me": bool(sample and any(r.reviewer_id == me for r in sample.reviews)),
        }
    )


@routes.post("/api/quality/calls/{id}")
@require(SUPERVISOR)
async def add_call(request: web.Request) -> web.Response:
    """Put an answered call into the review sample by hand."""
    try:
        sample = await request.app[QUALITY].add_call(_call_id(request), user_of(request).id)
    except LookupError as exc:
        return error(404, str(exc))
    return web.json_response({"sample": sample_json(sample, utcnow(), viewer_id=user_of(request).id)}, status=201)


@routes.post("/api/quality/calls/{id}/reviews")
@require(SUPERVISOR)
async def submit(request: web.Request) -> web.Response:
    """Submit this supervisor's review; a second supervisor's review of the same call calibrates."""
    call_id = _call_id(request)
    body = await json_object(request)
    try:
        sample = await request.app[QUALITY].submit(call_id, user_of(request).id, body)
    except QualityError as exc:
        return _quality_error(exc)
    except LookupError as exc:
        return error(404, str(exc))
    return web.json_response({"sample": sample_json(sample, utcnow(), viewer_id=user_of(request).id)}, status=201)


@routes.get("/api/quality/mine")
@require(CALLTAKER)
async def mine(request: web.Request) -> web.Response:
    """The reviews of this call-taker's calls: the primary review of each, never the calibration ones."""
    user = user_of(request)
    rows = await request.app[QUALITY].store.samples(calltaker_id=user.id)
    now = utcnow()
    out = []
    for sample in rows:
        if not sample.reviews:
            continue
        body = sample_json(sample, now, viewer_id=None, with_reviews=False)
        body.pop("calibration")
        body["review"] = review_json(sample.reviews[0], primary=True)
        out.append(body)
    out.sort(key=lambda s: (s["review"]["acknowledged_at"] is not None, s["review"]["submitted_at"]))
    return web.json_response({"reviews": out, "unread": sum(1 for s in out if not s["review"]["acknowledged_at"])})


@routes.post("/api/quality/reviews/{review_id}/acknowledge")
@require(CALLTAKER)
async def acknowledge(request: web.Request) -> web.Response:
    raw = request.match_info["review_id"]
    if not raw.isdigit() or len(raw) > 12:
        return error(404, "no such review of your calls")
    try:
        await request.app[QUALITY].acknowledge(int(raw), user_of(request).id)
    except LookupError as exc:
        return error(404, str(exc))
    except QualityError as exc:
        return _quality_error(exc)
    return web.json_response({"acknowledged": int(raw)})


@routes.get("/api/quality/reviews/{review_id}/recording")
@require(CALLTAKER)
async def my_recording(request: web.Request) -> web.StreamResponse:
    """The recording of a reviewed call of this call-taker's own, to hear it with the review (APCO: the
    employee hears the recording and reads the review); access-logged like every listening."""
    raw = request.match_info["review_id"]
    user = user_of(request)
    samples = await request.app[QUALITY].store.samples(calltaker_id=user.id) if raw.isdigit() else []
    found = next((s for s in samples if s.reviews and str(s.reviews[0].id) == raw), None)
    if found is None:
        return error(404, "no such review of your calls")
    return await serve_recording(request, found.call_id, via="quality_review", review_id=int(raw))


async def _scores(request: web.Request) -> list[dict[str, Any]]:
    quality = request.app[QUALITY]
    start, end = date_range(request, quality.offset)
    now = utcnow()
    end = end or now + timedelta(days=1)
    start = start or end - timedelta(days=91)
    if end - start > timedelta(days=MAX_SCORE_DAYS):
        raise Reply(invalid({"to": f"the period may span at most {MAX_SCORE_DAYS} days"}))
    rows = await quality.store.scores(start, end, quality.offset)
    return [
        {
            "calltaker_id": r.calltaker_id,
            "calltaker": r.calltaker,
            "week": r.week,
            "reviews": r.reviews,
            "average": r.average,
            "critical": r.critical,
        }
        for r in rows
    ]


@routes.get("/api/quality/scores")
@require(SUPERVISOR)
async def scores(request: web.Request) -> web.Response:
    """Primary review scores per call-taker and ISO week of the call (default: the last 13 weeks)."""
    return web.json_response({"scores": await _scores(request)})


@routes.get("/api/quality/scores.csv")
@require(SUPERVISOR)
async def scores_csv(request: web.Request) -> web.Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    columns = ["calltaker", "week", "reviews", "average", "critical"]
    writer.writerow(columns)
    writer.writerows([[csv_cell(r[c]) for c in columns] for r in await _scores(request)])
    return web.Response(
        text=out.getvalue(),
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="quality_scores.csv"',
        },
    )
