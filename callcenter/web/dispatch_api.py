"""Dispatch endpoints of the console and of agency officers (docs/dispatch.md, "API").

Call-takers get the proposed agencies for an incident and send it to them; agency officers see their
agency's dispatches, accept one from the browser when the phone was missed, and report progress with
a note and a photo. Every change is pushed over the WebSocket to the centre and to that agency.

Who sees what is decided here, on every request: an agency officer only ever reads or writes their
own agency's dispatches and photos. Photos are checked by their first bytes (not by the name or the
type the browser claims), stored under a random name, and served only when a stored update of that
dispatch names them — a path in the URL never reaches the file system unchecked.

The dispatch core (the directory and the dispatcher, built by ``dispatch_ctx`` in ``callcenter/wiring.py``)
is read at request time with ``app.get``: without it (a test that leaves it out) the proposal and
dispatch endpoints answer 503.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from aiohttp import BodyPartReader, web

from callcenter.dispatch.agencies import Directory
from callcenter.dispatch.conference import Conference, ConferenceError
from callcenter.dispatch.sla import ensure_due, targets
from callcenter.forms.location import LocationError, accuracy, coordinates
from callcenter.queue.ami import AmiError, AmiNotConnected
from callcenter.store.accounts import UserInfo
from callcenter.store.dispatches import (
    PHOTO_NAME,
    UPDATE_STATUSES,
    DispatchView,
    TransitionError,
    allowed_next,
)
from callcenter.store.models import Call, Incident
from callcenter.store.quota import QuotaExceeded
from callcenter.store.roles import AGENCY, CENTRE_ROLES, CONSOLE_ROLES
from callcenter.web.access import Reply, error, require, user_of
from callcenter.web.keys import AMI, CALLS, CONFIG, DIRECTORY, DISPATCHER, DISPATCHES, NEWS, STORE, TRACKER
from callcenter.web.trail import trace_reads
from callcenter.web.uploads import photo_response, read_text, save_photo

log = structlog.get_logger("callcenter.web.dispatch")
routes = web.RouteTableDef()
#: Text parts of an agency update: the report, and where the officer's browser was.
TEXT_FIELDS = ("status", "note", "latitude", "longitude", "accuracy")

_MAX_ID = 2**31 - 1
MAX_NOTE = 2000
#: Bytes a text part of the update form may have (the note, in UTF-8, fits with room to spare).
_MAX_TEXT_PART = 4 * MAX_NOTE + 64
_MAX_AGENCIES = 50
_CODE = re.compile(r"[a-z0-9_-]{1,32}")


def agency_names(directory: Directory | None) -> dict[str, str]:
    """Code → display name of every agency in the directory (none without the dispatch core)."""
    if directory is None:
        return {}
    return {code: agency.name or code for code, agency in directory.agencies.items()}


# -- app state -------------------------------------------------------------------------------------------


def _upload_dir(app: web.Application) -> Path:
    return Path(app[CONFIG].dispatch.upload_dir).resolve()


# -- helpers ---------------------------------------------------------------------------------------------


def _id(request: web.Request, name: str, what: str) -> int:
    raw = request.match_info[name]
    if not re.fullmatch(r"[0-9]{1,10}", raw) or not 1 <= int(raw) <= _MAX_ID:
        raise Reply(error(404, f"no such {what}"))
    return int(raw)


def _invalid(fields: dict[str, str], fields_en: dict[str, str]) -> web.Response:
    return error(422, "invalid input", fields=fields, fields_en=fields_en)


def _own_agency(user: UserInfo) -> str:
    if not user.agency:
        raise Reply(error(403, "no agency is linked to your account"))
    return user.agency


def _may_see(user: UserInfo, agency: str) -> bool:
    return user.role in CENTRE_ROLES or (user.role == AGENCY and bool(user.agency) and user.agency == agency)


def _dispatch_json(app: web.Application, view: DispatchView) -> dict[str, Any]:
    body = view.as_json()
    body["agency_name"] = agency_names(app.get(DIRECTORY)).get(view.dispatch.agency, view.dispatch.agency)
    body["next"] = sorted(allowed_next(view.dispatch.status))
    return body


def publish(app: web.Application, view: DispatchView) -> None:
    """Tell the centre and the dispatch's agency about its new state, on every node: each re-reads the
    dispatch and sends it to its own consoles (``web/news.py``; a no-op without the live hub)."""
    news = app.get(NEWS)
    if news is not None:
        news.announce("dispatch", view.dispatch.id)


async def _traced(request: web.Request, action: str, views: Sequence[DispatchView]) -> None:
    """The access trail for the incidents these dispatch views carry (``web/trail.py``), before they go out."""
    incidents = [v.incident for v in views if v.incident is not None]
    await trace_reads(request.app[STORE], [user_of(request)], action, incidents)


def _sla_json(incident: Incident | None) -> dict[str, Any] | None:
    if incident is None:
        return None
    return {
        "due_at": incident.sla_due_at.isoformat() if incident.sla_due_at else None,
        "met_at": incident.sla_met_at.isoformat() if incident.sla_met_at else None,
        "breached_at": incident.sla_breached_at.isoformat() if incident.sla_breached_at else None,
    }


async def _incident(request: web.Request, incident_id: int, *, set_due: bool = False) -> Incident:
    """The incident (404 if none); ``set_due`` first gives it its service-level deadline if it has
    none yet, so the console's countdown starts with the dispatch panel, not a timer tick later."""
    store = request.app[STORE]
    if set_due:
        await ensure_due(store, targets(request.app.get(DIRECTORY)), incident_id=incident_id)

    async def op(session: Any) -> Incident | None:
        found: Incident | None = await session.get(Incident, incident_id)
        return found

    incident = await store.transaction("dispatch_incident", op)
    if incident is None:
        raise Reply(error(404, "no such incident"))
    return incident


async def _load(request: web.Request, dispatch_id: int) -> DispatchView:
    """The dispatch, if this user may act on it: 404 when unknown, 403 for another agency's."""
    view = await request.app[DISPATCHES].get(dispatch_id)
    if view is None:
        raise Reply(error(404, "no such dispatch"))
    if not _may_see(user_of(request), view.dispatch.agency):
        raise Reply(error(403, "not your agency's dispatch"))
    return view


# -- proposal and dispatch (centre) -----------------------------------------------------------------------


@routes.get("/api/incidents/{id}/proposal")
@require(*CENTRE_ROLES)
async def proposal(request: web.Request) -> web.Response:
    """The agencies the rules propose for the incident (by category, district and its intake flags)
    first, then every other one to add by hand."""
    incident_id = _id(request, "id", "incident")
    directory = request.app.get(DIRECTORY)
    if directory is None:
        return error(503, "dispatch not configured")
    incident = await _incident(request, incident_id, set_due=True)
    flags = [f for f in (incident.flags or []) if isinstance(f, str)]
    proposed = list(dict.fromkeys(directory.propose(incident.category, incident.district, flags)))
    names = agency_names(directory)
    codes = proposed + sorted(code for code in names if code not in proposed)
    return web.json_response(
        {
            "agencies": [{"code": c, "name": names.get(c, c), "proposed": c in proposed} for c in codes],
            "sla": _sla_json(incident),
        }
    )


@routes.post("/api/incidents/{id}/dispatch")
@require(*CENTRE_ROLES)
async def dispatch(request: web.Request) -> web.Response:
    """Hand the incident to the dispatch core, which calls every chosen agency in parallel."""
    incident_id = _id(request, "id", "incident")
    directory, dispatcher = request.app.get(DIRECTORY), request.app.get(DISPATCHER)
    if directory is None or dispatcher is None:
        return error(503, "dispatch not configured")
    try:
        body = json.loads(await request.text())
    except ValueError:
        return error(400, "body is not valid JSON")
    codes = body.get("agencies") if isinstance(body, dict) else None
    if (
        not isinstance(codes, list)
        or not codes
        or len(codes) > _MAX_AGENCIES
        or not all(isinstance(c, str) and _CODE.fullmatch(c) for c in codes)
    ):
        return _invalid({"agencies": "Pilih minimal satu instansi."}, {"agencies": "Choose at least one agency."})
    codes = list(dict.fromkeys(codes))
    known = agency_names(directory)
    unknown = [c for c in codes if c not in known]
    if unknown:
        return _invalid(
            {"agencies": f"Instansi tidak dikenal: {', '.join(unknown)}."},
            {"agencies": f"Unknown agency: {', '.join(unknown)}."},
        )
    incident = await _incident(request, incident_id, set_due=True)
    try:
        created = await dispatcher.dispatch(incident_id, codes, user_id=user_of(request).id)
    except LookupError:
        return error(404, "no such incident")
    except ValueError as exc:
        return _invalid({"agencies": str(exc)}, {"agencies": str(exc)})
    ids = [int(getattr(d, "id", 0)) for d in created]
    views = await request.app[DISPATCHES].get_many(i for i in ids if i)
    await _traced(request, "dispatch", views)
    for view in views:
        publish(request.app, view)
    log.info("dispatch.requested", incident_id=incident_id, agencies=codes, user=user_of(request).username)
    return web.json_response(
        {"dispatches": [_dispatch_json(request.app, v) for v in views], "sla": _sla_json(incident)}, status=202
    )


# -- reading dispatches -------------------------------------------------------------------------------


@routes.get("/api/incidents/{id}/dispatches")
@require(*CONSOLE_ROLES)
async def incident_dispatches(request: web.Request) -> web.Response:
    """All of the incident's dispatches for the centre; an officer gets only their agency's (and a 403
    when there is none, whether the incident exists or not: ids are not to be probed)."""
    incident_id = _id(request, "id", "incident")
    user = user_of(request)
    store = request.app[DISPATCHES]
    if user.role == AGENCY:
        views = await store.list_for_incident(incident_id, agency=_own_agency(user))
        if not views:
            return error(403, "not dispatched to your agency")
        incident = views[0].incident or await _incident(request, incident_id)
    else:
        incident = await _incident(request, incident_id)
        views = await store.list_for_incident(incident_id)
    await trace_reads(request.app[STORE], [user], "agency_view", [incident, *(v.incident for v in views if v.incident)])
    return web.json_response(
        {"dispatches": [_dispatch_json(request.app, v) for v in views], "sla": _sla_json(incident)}
    )


@routes.get("/api/agency/dispatches")
@require(AGENCY)
async def agency_dispatches(request: web.Request) -> web.Response:
    """The officer's agency's dispatches, newest first, each with what the agency needs to respond."""
    agency = _own_agency(user_of(request))
    raw = request.query.get("limit", "")
    if raw and (not re.fullmatch(r"[0-9]{1,6}", raw) or int(raw) < 1):
        return _invalid({"limit": "Harus bilangan bulat positif."}, {"limit": "Must be a positive whole number."})
    limit = min(int(raw), 500) if raw else 50
    views = await request.app[DISPATCHES].list_for_agency(agency, limit)
    await _traced(request, "agency_view", views)
    names = agency_names(request.app.get(DIRECTORY))
    return web.json_response(
        {
            "agency": {"code": agency, "name": names.get(agency, agency)},
            "dispatches": [_dispatch_json(request.app, v) for v in views],
        }
    )


# -- agency actions -----------------------------------------------------------------------------------------


@routes.post("/api/dispatches/{id}/accept")
@require(AGENCY)
async def accept(request: web.Request) -> web.Response:
    """Accept in the browser; a dispatch already accepted (by phone or by a colleague) answers 409."""
    dispatch_id = _id(request, "id", "dispatch")
    current = await _load(request, dispatch_id)
    user = user_of(request)
    dispatcher = request.app.get(DISPATCHER)
    store = request.app[DISPATCHES]
    try:
        if current.dispatch.status == "calling" and dispatcher is not None:
            # Through the dispatch core while its task still rings the duty lines: it stops them.
            if await dispatcher.accept_from_web(dispatch_id, user_id=user.id) is None:
                latest = await store.get(dispatch_id)
                raise TransitionError(latest.dispatch.status if latest else "unknown", "accepted")
            view = await store.record_acceptance(dispatch_id, user.id)
        else:
            view = await store.accept_from_web(dispatch_id, user.id, user.username)
    except LookupError:
        return error(404, "no such dispatch")
    except TransitionError as exc:
        return error(409, "dispatch cannot be accepted now", current=exc.current)
    await _traced(request, "agency_view", [view])
    publish(request.app, view)
    return web.json_response({"dispatch": _dispatch_json(request.app, view)})


# -- conference (centre) ----------------------------------------------------------------------------------


@routes.post("/api/dispatches/{id}/conference")
@require(*CENTRE_ROLES)
async def conference(request: web.Request) -> web.Response:
    """Bring the accepted agency officer into the incident's call: caller, call-taker and officer in one
    ConfBridge room (``callcenter/dispatch/conference.py``)."""
    dispatch_id = _id(request, "id", "dispatch")
    view = await _load(request, dispatch_id)
    ami, tracker = request.app.get(AMI), request.app.get(TRACKER)
    if ami is None or tracker is None or not ami.ready.is_set():
        return error(503, "the telephone system is not reachable; try again")
    store = request.app[STORE]
    incident_id = view.dispatch.incident_id

    async def op(session: Any) -> Call | None:
        incident: Incident | None = await session.get(Incident, incident_id)
        if incident is None or incident.call_id is None:
            return None
        found: Call | None = await session.get(Call, incident.call_id)
        return found

    call = await store.transaction("conference_call", op)
    user = user_of(request)
    try:
        started = await Conference(ami, request.app[CALLS], tracker.live.channels).start(
            call, view.dispatch, user=user.username
        )
    except ConferenceError as exc:
        return error(409, str(exc))
    except AmiNotConnected:
        return error(503, "the telephone system is not reachable; try again")
    except AmiError as exc:
        # Asterisk refused (the call ended a moment ago, the line is unknown): nothing changed.
        return error(409, f"the telephone system refused: {exc}")
    log.info("dispatch.conference", dispatch_id=dispatch_id, incident_id=incident_id, user=user.username)
    return web.json_response(
        {
            "conference": {
                "room": started.room,
                "dispatch_id": dispatch_id,
                "incident_id": incident_id,
                "officer_line": started.officer_line,
            }
        },
        status=202,
    )


@routes.post("/api/dispatches/{id}/updates")
@require(AGENCY)
async def add_update(request: web.Request) -> web.Response:
    """multipart/form-data: ``status``, ``note``, optional ``photo`` (JPEG/PNG ≤ ``upload_max_bytes``) and
    the officer's position (``latitude``, ``longitude``, ``accuracy`` in m, from the browser)."""
    dispatch_id = _id(request, "id", "dispatch")
    view = await _load(request, dispatch_id)
    cfg = request.app[CONFIG].dispatch
    limit = cfg.upload_max_bytes
    if request.content_length is not None and request.content_length > limit + 64 * 1024:
        return error(413, f"photo larger than {limit} bytes")
    directory = _upload_dir(request.app)
    fields: dict[str, str] = {}
    photo: str | None = None
    if request.content_type == "application/x-www-form-urlencoded":
        # A report without a photo may come as a plain form (scripts, curl); there is no file to stream.
        for key, value in (await request.post()).items():
            if key not in TEXT_FIELDS or not isinstance(value, str):
                return _invalid({key[:64]: "Kolom tidak dikenal."}, {key[:64]: "Unknown field."})
            fields[key] = value
    elif not request.content_type.startswith("multipart/"):
        return error(415, "send multipart/form-data")
    try:
        reader = await request.multipart() if not fields else None
        while reader is not None and (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                return error(400, "nested multipart is not accepted")
            if part.name in TEXT_FIELDS and part.name not in fields:
                fields[part.name] = await read_text(part, _MAX_TEXT_PART)
            elif part.name == "photo" and photo is None:
                photo = await save_photo(part, directory, str(dispatch_id), limit)
            else:
                return _invalid({str(part.name)[:64]: "Kolom tidak dikenal."}, {str(part.name)[:64]: "Unknown field."})

        status = fields.get("status", "").strip()
        note = fields.get("note", "").strip()
        problems: dict[str, tuple[str, str]] = {}
        if status not in UPDATE_STATUSES:
            problems["status"] = ("Status tidak dikenal.", f"One of {', '.join(UPDATE_STATUSES)}.")
        if len(note) > MAX_NOTE or "\x00" in note:
            problems["note"] = (
                f"Terlalu panjang (maksimal {MAX_NOTE} karakter) atau mengandung karakter kontrol.",
                f"Too long (at most {MAX_NOTE} characters) or contains control characters.",
            )
        position = None
        if fields.get("latitude") or fields.get("longitude"):
            try:
                lat, lon = coordinates(fields.get("latitude"), fields.get("longitude"))
                position = (lat, lon, accuracy(fields.get("accuracy")))
            except LocationError as exc:
                problems["position"] = ("Posisi tidak valid.", str(exc))
        if problems:
            raise Reply(_invalid({k: v[0] for k, v in problems.items()}, {k: v[1] for k, v in problems.items()}))
        try:
            updated = await request.app[DISPATCHES].add_update(
                dispatch_id, user_of(request).id, status, note, photo, position
            )
        except TransitionError as exc:
            raise Reply(
                error(
                    422,
                    "invalid input",
                    fields={"status": f"Tidak bisa dari {exc.current} ke {exc.requested}."},
                    fields_en={"status": f"Cannot go from {exc.current} to {exc.requested}."},
                    current=exc.current,
                    allowed=sorted(allowed_next(exc.current)),
                )
            ) from None
        except LookupError:
            raise Reply(error(404, "no such dispatch")) from None
        except QuotaExceeded as exc:
            raise Reply(error(429, str(exc))) from None
    except BaseException:
        # Nothing refers to a photo of a refused update: don't keep it.
        if photo is not None:
            with contextlib.suppress(FileNotFoundError):
                (directory / photo).unlink()
        raise
    log.info("dispatch.reported", dispatch_id=dispatch_id, agency=view.dispatch.agency, status=status)
    await _traced(request, "agency_view", [updated])
    publish(request.app, updated)
    return web.json_response({"dispatch": _dispatch_json(request.app, updated)}, status=201)


@routes.get("/api/dispatches/{id}/photos/{name}")
@require(*CONSOLE_ROLES)
async def photo(request: web.Request) -> web.StreamResponse:
    """A photo of one of the dispatch's updates, to the centre and to the dispatch's own agency."""
    dispatch_id = _id(request, "id", "dispatch")
    name = request.match_info["name"]
    match = PHOTO_NAME.fullmatch(name)
    if match is None:
        return error(404, "no such photo")
    await _load(request, dispatch_id)
    if not await request.app[DISPATCHES].photo_belongs(dispatch_id, name):
        return error(404, "no such photo")
    return photo_response(_upload_dir(request.app), name, match.group(1))
