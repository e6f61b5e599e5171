"""Intake, incidents, drafts, call classification and number history for the browser console.

The contract is ``docs/console-api.md`` ("Intake, incidents, classification"). Input is never
trusted: a malformed body is a 400, a bad field a 422 naming it, an unknown id a 404 — a call-taker
mid-call gets a message to act on, never a 500. Validation lives in ``forms/intake.py`` and storage
in ``store/incidents.py``; this module only translates between HTTP and those two.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from callcenter.forms.categories import (
    CATEGORIES,
    CLASSIFICATION_CODES,
    CLASSIFICATIONS,
    FLAGS,
    PRIORITIES,
    VICTIM_CONDITIONS,
    labels,
)
from callcenter.forms.intake import LIMITS, MAX_VICTIMS, IntakeError, validate_intake
from callcenter.forms.phone import normalize
from callcenter.queue.live import report_id_of
from callcenter.store.incidents import EDITABLE
from callcenter.store.models import Incident
from callcenter.store.quality import REVIEW_DRAFT_PREFIX
from callcenter.store.roles import CALLTAKER, CENTRE_ROLES, SUPERVISOR
from callcenter.web.access import Reply, error, require, user_of
from callcenter.web.keys import CALLS, CONFIG, DISTRICTS, INCIDENTS, REPORTS, STORE
from callcenter.web.trail import trace_reads

routes = web.RouteTableDef()

#: A draft is whatever the form holds, but not a place to park files: 32 KiB of JSON at most.
MAX_DRAFT_BYTES = 32 * 1024
MAX_NOTE = 500
#: Call ids are 32 hex digits (``new_call_id``); keys are that or ``none``. Anything else cannot exist.
_CALL_KEY = re.compile(r"[A-Za-z0-9_.-]{1,32}")
#: Incident ids are positive 32-bit integers (PostgreSQL ``integer``); larger ones cannot exist.
_MAX_ID = 2**31 - 1


def _region(request: web.Request) -> str:
    return request.app[CONFIG].numbers.default_region


# -- request helpers ---------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")
    return value


async def _json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; NaN/Infinity (which Python's json accepts) and 1e999 are refused,
    because they would be stored and later break every JSON reply that includes them."""
    try:
        text = await request.text()
        body = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        raise Reply(error(400, "body is not valid JSON")) from None
    if not isinstance(body, dict):
        raise Reply(error(400, "body must be a JSON object"))
    return body


def _invalid(fields: dict[str, str], fields_en: dict[str, str] | None = None) -> web.Response:
    return error(422, "invalid input", fields=fields, fields_en=fields_en if fields_en is not None else fields)


def _limit(request: web.Request, default: int, maximum: int) -> int:
    raw = request.query.get("limit")
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"[0-9]{1,6}", raw) or int(raw) < 1:
        raise Reply(_invalid({"limit": "Harus bilangan bulat positif."}, {"limit": "Must be a positive whole number."}))
    return min(int(raw), maximum)


def _incident_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not re.fullmatch(r"[0-9]{1,10}", raw) or not 1 <= int(raw) <= _MAX_ID:
        raise Reply(error(404, "no such incident"))
    return int(raw)


def _iso(value: Any) -> Any:
    return value.isoformat() if value is not None else None


def incident_json(incident: Incident) -> dict[str, Any]:
    body: dict[str, Any] = {name: getattr(incident, name) for name in EDITABLE}
    body.update(
        id=incident.id,
        reference=incident.reference,
        call_id=incident.call_id,
        status=incident.status,
        created_by=incident.created_by,
        created_at=_iso(incident.created_at),
        updated_at=_iso(incident.updated_at),
    )
    return body


# -- schema ----------------------------------------------------------------------------------------


@routes.get("/api/intake/schema")
@require(*CENTRE_ROLES)
async def intake_schema(request: web.Request) -> web.Response:
    """Everything the form needs to draw itself, so the server alone decides which codes exist."""
    districts = request.app[DISTRICTS]
    return web.json_response(
        {
            "categories": labels(CATEGORIES),
            "priorities": labels(PRIORITIES),
            "victim_conditions": labels(VICTIM_CONDITIONS),
            "flags": labels(FLAGS),
            "districts": districts.as_json(),
            "classifications": labels(CLASSIFICATIONS),
            "limits": {**LIMITS, "victims_count": MAX_VICTIMS, "note": MAX_NOTE, "draft_bytes": MAX_DRAFT_BYTES},
        }
    )


# -- drafts ----------------------------------------------------------------------------------------


def _draft_key(request: web.Request) -> str:
    """An intake's key (a call id or ``none``: call-takers) or a review's (``review.<call id>``:
    supervisors); one mechanism for both forms, each kind only for the role that types it."""
    key = request.match_info["call_key"]
    review = key.startswith(REVIEW_DRAFT_PREFIX)
    if not _CALL_KEY.fullmatch(key.removeprefix(REVIEW_DRAFT_PREFIX) if review else key):
        raise Reply(error(404, "no such draft key"))
    if user_of(request).role != (SUPERVISOR if review else CALLTAKER):
        raise Reply(error(403, "not allowed for your role"))
    return key


@routes.get("/api/drafts/{call_key}")
@require(*CENTRE_ROLES)
async def get_draft(request: web.Request) -> web.Response:
    incidents = request.app[INCIDENTS]
    draft = await incidents.get_draft(user_of(request).id, _draft_key(request))
    if draft is None:
        return web.json_response({"data": None, "updated_at": None})
    return web.json_response({"data": draft.data, "updated_at": _iso(draft.updated_at)})


@routes.put("/api/drafts/{call_key}")
@require(*CENTRE_ROLES)
async def put_draft(request: web.Request) -> web.Response:
    """Not validated (half-typed forms are the point of a draft), only bounded in size."""
    incidents = request.app[INCIDENTS]
    key = _draft_key(request)
    body = await _json_object(request)
    data = body.get("data")
    if not isinstance(data, dict):
        return _invalid({"data": "Harus berupa objek JSON."}, {"data": "Must be a JSON object."})
    if len(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()) > MAX_DRAFT_BYTES:
        return error(413, f"draft larger than {MAX_DRAFT_BYTES} bytes")
    updated_at = await incidents.put_draft(user_of(request).id, key, data)
    return web.json_response({"updated_at": updated_at.isoformat()})


# -- incidents -------------------------------------------------------------------------------------


@routes.post("/api/incidents")
@require(*CENTRE_ROLES)
async def create_incident(request: web.Request) -> web.Response:
    incidents, districts = request.app[INCIDENTS], request.app[DISTRICTS]
    body = await _json_object(request)
    call_id = body.pop("call_id", None)
    if call_id is not None and (not isinstance(call_id, str) or not _CALL_KEY.fullmatch(call_id)):
        return _invalid({"call_id": "ID panggilan tidak valid."}, {"call_id": "Not a valid call id."})
    try:
        fields = validate_intake(body, districts=districts, region=_region(request))
    except IntakeError as exc:
        return _invalid(exc.fields, exc.fields_en)
    try:
        incident = await incidents.create(fields, call_id=call_id, user_id=user_of(request).id)
    except LookupError:
        return error(404, "no such call")
    return web.json_response({"incident": incident_json(incident)}, status=201)


@routes.get("/api/incidents")
@require(*CENTRE_ROLES)
async def list_incidents(request: web.Request) -> web.Response:
    incidents = request.app[INCIDENTS]
    limit = _limit(request, 50, 500)
    call_id = request.query.get("call_id") or None
    if call_id is not None and not _CALL_KEY.fullmatch(call_id):
        return web.json_response({"incidents": []})
    rows = await incidents.list(limit, call_id=call_id)
    await trace_reads(request.app[STORE], [user_of(request)], "list_incidents", rows)
    return web.json_response({"incidents": [incident_json(i) for i in rows]})


@routes.get("/api/incidents/{id}")
@require(*CENTRE_ROLES)
async def get_incident(request: web.Request) -> web.Response:
    incidents = request.app[INCIDENTS]
    incident_id = _incident_id(request)
    incident = await incidents.get(incident_id)
    if incident is None:
        return error(404, "no such incident")
    audit = await incidents.audit(incident_id)
    await trace_reads(request.app[STORE], [user_of(request)], "view_case", [incident])
    return web.json_response(
        {
            "incident": incident_json(incident),
            "audit": [{"at": _iso(a.at), "user": a.user, "action": a.action, "changes": a.changes} for a in audit],
        }
    )


@routes.patch("/api/incidents/{id}")
@require(*CENTRE_ROLES)
async def patch_incident(request: web.Request) -> web.Response:
    """Partial update; cross-field rules are checked against the stored incident the patch applies to."""
    incidents, districts = request.app[INCIDENTS], request.app[DISTRICTS]
    incident_id = _incident_id(request)
    body = await _json_object(request)
    current = await incidents.get(incident_id)
    if current is None:
        return error(404, "no such incident")
    stored = {name: getattr(current, name) for name in EDITABLE}
    try:
        fields = validate_intake(body, districts=districts, region=_region(request), partial=True, current=stored)
    except IntakeError as exc:
        return _invalid(exc.fields, exc.fields_en)
    try:
        incident = await incidents.update(incident_id, fields, user_id=user_of(request).id)
    except LookupError:
        return error(404, "no such incident")
    return web.json_response({"incident": incident_json(incident)})


# -- classification and numbers --------------------------------------------------------------------


@routes.post("/api/calls/{call_id}/classification")
@require(*CENTRE_ROLES)
async def classify_call(request: web.Request) -> web.Response:
    incidents = request.app[INCIDENTS]
    call_id = request.match_info["call_id"]
    if not _CALL_KEY.fullmatch(call_id):
        return error(404, "no such call")
    body = await _json_object(request)
    fields: dict[str, str] = {}
    fields_en: dict[str, str] = {}
    for key in body:
        if key not in ("classification", "note"):
            fields[str(key)[:64]], fields_en[str(key)[:64]] = "Kolom tidak dikenal.", "Unknown field."
    classification = body.get("classification")
    if not isinstance(classification, str) or classification not in CLASSIFICATION_CODES:
        fields["classification"], fields_en["classification"] = "Pilihan tidak dikenal.", "Unknown choice."
    note = body.get("note")
    if note is None:
        note = ""
    if not isinstance(note, str):
        fields["note"], fields_en["note"] = "Harus berupa teks.", "Must be text."
    elif len(note.strip()) > MAX_NOTE or "\x00" in note:
        fields["note"] = f"Terlalu panjang (maksimal {MAX_NOTE} karakter) atau mengandung karakter kontrol."
        fields_en["note"] = f"Too long (at most {MAX_NOTE} characters) or contains control characters."
    if fields:
        return _invalid(fields, fields_en)
    assert isinstance(classification, str) and isinstance(note, str)
    user = user_of(request)
    try:
        result = await incidents.classify(call_id, classification, user_id=user.id, note=note.strip())
    except LookupError:
        return error(404, "no such call")
    answer: dict[str, Any] = {"call_id": result.call_id, "classification": result.classification}
    call = await request.app[CALLS].get_call(result.call_id)
    report_id = report_id_of(call.uniqueid) if call is not None else None
    if report_id is not None:
        # The queue call of a citizen's report from /lapor: the report gets the same classification, and a
        # prank/hoax counts against the number's use of the app (flagged once: by the call, when it could).
        classified = await request.app[REPORTS].classify(
            report_id, classification, user_id=user.id, username=user.username, flag=not result.flagged
        )
        if classified is not None:
            counted = {"false_reports": classified.false_reports, "blocked": classified.blocked}
            answer["report"] = {"id": report_id, **counted}
    return web.json_response(answer)


@routes.get("/api/numbers/{e164}/history")
@require(*CENTRE_ROLES)
async def number_history(request: web.Request) -> web.Response:
    """Any spelling of a number (``0812…``, ``+62812…``) finds the same history: it is keyed by E.164."""
    incidents = request.app[INCIDENTS]
    raw = request.match_info["e164"]
    caller = normalize(raw[:64], _region(request))
    if caller.withheld:
        return web.json_response(
            {"number": None, "previous_calls": 0, "last_call_at": None, "flags": [], "incidents": []}
        )
    if caller.e164 is None:
        return _invalid({"number": "Nomor telepon tidak valid."}, {"number": "Not a valid phone number."})
    found = await incidents.history(caller.e164)
    await trace_reads(request.app[STORE], [user_of(request)], "number_history", found.incidents)
    history = found.caller
    return web.json_response(
        {
            "number": history.number,
            "previous_calls": history.previous_calls,
            "last_call_at": _iso(history.last_call_at),
            "flags": [{"kind": f.kind, "at": _iso(f.at), "note": f.note, "call_id": f.call_id} for f in history.flags],
            "incidents": [
                {
                    "id": i.id,
                    "reference": i.reference,
                    "category": i.category,
                    "created_at": _iso(i.created_at),
                    "status": i.status,
                }
                for i in found.incidents
            ],
        }
    )


@routes.get("/api/pranks")
@require(SUPERVISOR)
async def prank_log(request: web.Request) -> web.Response:
    incidents = request.app[INCIDENTS]
    limit = _limit(request, 100, 1000)
    pranks = await incidents.prank_log(limit)
    return web.json_response(
        {
            "pranks": [
                {"number": p.number, "kind": p.kind, "at": _iso(p.at), "call_id": p.call_id, "note": p.note, "by": p.by}
                for p in pranks
            ]
        }
    )
