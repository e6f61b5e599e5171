"""The live console's routes: the WebSocket, the current call after a reload, queue presence.

What travels on the sockets (screen pops, dispatch news, alarms) comes from the hub (``web/hub.py``).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import structlog
from aiohttp import WSMsgType, web

from callcenter.queue.ami import AmiError, AmiNotConnected
from callcenter.queue.live import Member, member_json
from callcenter.queue.presence import PAUSE_REASONS
from callcenter.store.accounts import UserInfo
from callcenter.store.roles import CALLTAKER, CENTRE_ROLES, CONSOLE_ROLES
from callcenter.web.access import SESSION, error, require, user_of
from callcenter.web.hub import build_pop
from callcenter.web.keys import (
    CALLS,
    CONFIG,
    HUB,
    LOCATIONS,
    PENDING,
    PRESENCE,
    REPORT_QUEUE,
    REPORTS,
    STORE,
    TRACKER,
)
from callcenter.web.trail import trace_reads

log = structlog.get_logger("callcenter.web.live")
routes = web.RouteTableDef()

PING_SECONDS = 20.0


def _same_origin(request: web.Request) -> bool:
    """A browser always sends Origin on WebSocket upgrades; another site's page must not ride our cookie."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser (tests, tools); the session cookie still has to be valid
    return urlsplit(origin).netloc == request.host


@routes.get("/api/ws")
@require(*CONSOLE_ROLES)
async def websocket(request: web.Request) -> web.StreamResponse:
    if not _same_origin(request):
        return error(403, "cross-origin WebSocket refused")
    user = user_of(request)
    ws = web.WebSocketResponse(heartbeat=PING_SECONDS, max_msg_size=64 * 1024)
    await ws.prepare(request)
    hub = request.app[HUB]
    hub.add(ws, user, request[SESSION])
    log.info("console.ws_open", user=user.username, interface=user.interface)
    try:
        await ws.send_json({"type": "hello", "user": user.as_json()})
        async for msg in ws:
            # The console only listens; anything it sends is answered with a ping so it can
            # measure the link, and otherwise ignored.
            if msg.type == WSMsgType.TEXT:
                await ws.send_json({"type": "ping"})
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        hub.remove(ws)
    return ws


def _member_of(request: web.Request, user: UserInfo) -> Member | None:
    if not user.interface:
        return None
    queue = request.app[CONFIG].queue.name
    return request.app[TRACKER].live.members.get((queue, user.interface))


@routes.get("/api/console/current")
@require(*CENTRE_ROLES)
async def current(request: web.Request) -> web.Response:
    """What the console must show after a reload: the call connected to this user's phone now, else the
    citizen's report this user took lately (its line is released seconds after the pop; ``ended``)."""
    user = user_of(request)
    app = request.app
    member = _member_of(request, user)
    tracker = app[TRACKER]
    found = [u for u, i in tracker.live.connected.items() if user.interface and i == user.interface][:1]
    ended = False
    report_queue = app.get(REPORT_QUEUE)
    if not found and report_queue is not None:
        turn = await report_queue.open_turn(user.id)
        found, ended = ([turn], True) if turn else ([], False)
    pop = None
    if found:
        pop = await build_pop(app[CALLS], app[PENDING], found[0], {}, app.get(LOCATIONS), app.get(REPORTS))
        await trace_reads(app[STORE], [user], "pop", pop["history"]["incidents"])
    body = {"call": pop, "ended": ended, "member": member_json(member) if member else None, "pbx": tracker.link_up}
    return web.json_response(body)


@routes.get("/api/presence")
@require(CALLTAKER)
async def presence_state(request: web.Request) -> web.Response:
    member = _member_of(request, user_of(request))
    # ``pbx`` false: the link to Asterisk is down and ``member`` is the last state seen, not known now.
    return web.json_response({"member": member_json(member) if member else None, "pbx": request.app[TRACKER].link_up})


@routes.post("/api/presence")
@require(CALLTAKER)
async def presence_change(request: web.Request) -> web.Response:
    user = user_of(request)
    if not user.interface:
        return error(409, "no softphone is linked to your account")
    try:
        body = await request.json()
    except ValueError:
        return error(400, "body must be JSON")
    if not isinstance(body, dict):
        return error(400, "body must be a JSON object")
    action, reason = body.get("action"), body.get("reason")
    presence = request.app[PRESENCE]
    try:
        if action == "login":
            await presence.log_in(user.interface, user.display_name, user_id=user.id)
        elif action == "logout":
            await presence.log_out(user.interface)
        elif action == "pause":
            if reason not in PAUSE_REASONS:
                return web.json_response(
                    {"error": "invalid input", "fields": {"reason": f"one of {', '.join(PAUSE_REASONS)}"}}, status=422
                )
            await presence.pause(user.interface, str(reason))
        elif action == "unpause":
            await presence.unpause(user.interface)
        else:
            return web.json_response(
                {"error": "invalid input", "fields": {"action": "one of login, logout, pause, unpause"}}, status=422
            )
    except AmiNotConnected:
        return error(503, "the telephone system is not reachable; try again")
    except AmiError as exc:
        # Asterisk refused (e.g. already a member): the page shows what Asterisk reports anyway.
        return error(409, str(exc))
    log.info("console.presence", user=user.username, action=action, reason=reason)
    return web.json_response({"requested": action}, status=202)
