"""Read-only JSON views of calls and the live queue (the console issue builds the full API on this)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aiohttp import web

from callcenter.store.models import Call, CallEvent
from callcenter.store.roles import CENTRE_ROLES
from callcenter.web.access import require
from callcenter.web.keys import AGI, AMI, CALLS, LEADERSHIP, TRACKER

routes = web.RouteTableDef()


def call_json(call: Call) -> dict[str, Any]:
    return {
        column.name: (value.isoformat() if hasattr(value, "isoformat") else value)
        for column in Call.__table__.columns
        for value in [getattr(call, column.name)]
    }


def event_json(event: CallEvent) -> dict[str, Any]:
    return {"kind": event.kind, "at": event.at.isoformat(), "source": event.source, "data": event.data}


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Liveness for a monitor: 200 only when AGI listens and the AMI link is logged in. ``leader`` says
    whether this node runs the once-only work now (docs/nodes.md); a follower is just as healthy."""
    app = request.app
    ami_ok = app[AMI].ready.is_set()
    leadership = app.get(LEADERSHIP)
    body = {
        "agi_port": app[AGI].port,
        "agi_sessions": app[AGI].active_sessions,
        "ami": ami_ok,
        "leader": leadership is not None and leadership.is_leader,
    }
    return web.json_response(body, status=200 if ami_ok else 503)


@routes.get("/api/calls")
@require(*CENTRE_ROLES)
async def list_calls(request: web.Request) -> web.Response:
    try:
        limit = min(max(int(request.query.get("limit", "50")), 1), 500)
    except ValueError:
        return web.json_response({"errors": {"limit": "must be a whole number"}}, status=400)
    calls = await request.app[CALLS].recent_calls(limit)
    return web.json_response({"calls": [call_json(c) for c in calls]})


@routes.get("/api/calls/{call_id}")
@require(*CENTRE_ROLES)
async def get_call(request: web.Request) -> web.Response:
    calls = request.app[CALLS]
    call = await calls.get_call(request.match_info["call_id"])
    if call is None:
        return web.json_response({"error": "no such call"}, status=404)
    events = await calls.timeline(call.id)
    return web.json_response({"call": call_json(call), "timeline": [event_json(e) for e in events]})


@routes.get("/api/queue")
@require(*CENTRE_ROLES)
async def queue_state(request: web.Request) -> web.Response:
    live = request.app[TRACKER].live
    return web.json_response(
        {
            "waiting": [asdict(w) | {"joined_at": w.joined_at.isoformat()} for w in live.waiting.values()],
            "members": [asdict(m) for m in live.members.values()],
            "connected": live.connected,
            # False while the AMI link is down: the lists are the last state seen, not known to be true now.
            "pbx": request.app[TRACKER].link_up,
        }
    )
