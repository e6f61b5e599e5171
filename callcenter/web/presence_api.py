"""Supervisor control from the wallboard: pause (with a reason), unpause, log out a call-taker; listen to,
whisper to or barge into their live call (``supervision/listen.py``).

The same AMI actions as the call-taker's own buttons (``queue/presence.py``); the wallboard then shows
what Asterisk reports back, never what was asked for. Every use is written to the access log (who
paused whom, why), since it changes someone else's work and the centre must be able to account for it.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from callcenter.queue.ami import AmiError, AmiNotConnected
from callcenter.queue.presence import PAUSE_REASONS
from callcenter.store.access import log_access
from callcenter.store.roles import SUPERVISOR
from callcenter.supervision import listen
from callcenter.web.access import error, invalid, json_object, require, user_of
from callcenter.web.keys import AMI, CONFIG, PRESENCE, STORE, TRACKER

log = structlog.get_logger("callcenter.web.presence")
routes = web.RouteTableDef()

ACTIONS = ("pause", "unpause", "logout")


@routes.post("/api/supervisor/presence")
@require(SUPERVISOR)
async def control(request: web.Request) -> web.Response:
    """``{"interface": "PJSIP/taker1", "action": "pause"|"unpause"|"logout", "reason": …}`` for a queue member."""
    body = await json_object(request)
    action, reason, interface = body.get("action"), body.get("reason"), body.get("interface")
    fields: dict[str, str] = {}
    if action not in ACTIONS:
        fields["action"] = f"one of {', '.join(ACTIONS)}"
    if action == "pause" and reason not in PAUSE_REASONS:
        fields["reason"] = f"one of {', '.join(PAUSE_REASONS)}"
    queue = request.app[CONFIG].queue.name
    members = request.app[TRACKER].live.members
    if not isinstance(interface, str) or (queue, interface) not in members:
        fields["interface"] = "not a member of the queue now"
    if fields:
        return invalid(fields)
    assert isinstance(interface, str)
    user = user_of(request)
    detail = {"action": action, "reason": reason if action == "pause" else None, "username": user.username}
    # The trace first: an action on someone else's presence is never taken untraced.
    await log_access(request.app[STORE], user.id, f"presence_{action}", "member", interface, detail)
    presence = request.app[PRESENCE]
    try:
        if action == "pause":
            await presence.pause(interface, str(reason))
        elif action == "unpause":
            await presence.unpause(interface)
        else:
            await presence.log_out(interface)
    except AmiNotConnected:
        return error(503, "the telephone system is not reachable; try again")
    except AmiError as exc:
        return error(409, str(exc))
    log.info("supervisor.presence", user=user.username, interface=interface, action=action, reason=reason)
    return web.json_response({"requested": action, "interface": interface}, status=202)


@routes.post("/api/supervisor/spy")
@require(SUPERVISOR)
async def spy(request: web.Request) -> web.Response:
    """``{"interface": "PJSIP/taker1", "mode": "listen"|"whisper"|"barge"}``: ring the supervisor's own
    phone and join the call-taker's live call in that mode (ChanSpy). Access-logged before the call."""
    body = await json_object(request)
    user = user_of(request)
    if not user.interface:
        return error(409, "no phone is linked to your account: listening rings your own phone")
    interface, mode = body.get("interface"), body.get("mode")
    fields: dict[str, str] = {}
    if mode not in listen.MODES:
        fields["mode"] = f"one of {', '.join(listen.MODES)}"
    calls = [u for u, i in request.app[TRACKER].live.connected.items() if i == interface]
    if not isinstance(interface, str) or not calls:
        fields["interface"] = "not a call-taker on a call now"
    if fields:
        return invalid(fields)
    assert isinstance(interface, str) and isinstance(mode, str)
    detail = {"mode": mode, "uniqueid": calls[0], "phone": user.interface, "username": user.username}
    await log_access(request.app[STORE], user.id, f"spy_{mode}", "member", interface, detail)
    try:
        reference = await listen.start(request.app[AMI], user.interface, interface, mode)
    except AmiNotConnected:
        return error(503, "the telephone system is not reachable; try again")
    except AmiError as exc:
        return error(409, str(exc))
    log.info("supervisor.spy", user=user.username, interface=interface, mode=mode)
    return web.json_response({"requested": mode, "interface": interface, "reference": reference}, status=202)
