"""The live hub: fans the tracker's queue events out to the consoles' WebSockets, and anyone's broadcast.

The pop is driven by AMI's AgentConnect as the tracker sees it, not by anything the page does:
the call-taker's screen shows a caller only once Asterisk has really bridged that caller to their
softphone. Everything a pop needs is read in one short burst so it reaches the page well within
100 ms of the event. The routes that open the sockets are in ``web/live.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from callcenter.forms.phone import normalize
from callcenter.queue.live import member_json, report_id_of
from callcenter.queue.reports import report_pop
from callcenter.queue.tracker import QueueTracker
from callcenter.store import Calls
from callcenter.store.accounts import UserInfo
from callcenter.store.locations import Locations
from callcenter.store.pending import PendingWrites
from callcenter.store.reports import Reports
from callcenter.store.roles import AGENCY, CALLTAKER, CENTRE_ROLES, SUPERVISOR_ROLES

log = structlog.get_logger("callcenter.web.hub")
#: Ended calls whose console is remembered for late news (``LiveHub.send_to_call``).
ENDED_REMEMBERED = 500

#: Default seconds between checks of the open sockets' sessions (``[web] session_check_seconds``).
CHECK_SECONDS = 2.0
#: Close code of a socket whose session ended (4000-4999 are the application's): the page reconnects,
#: is refused, and shows the login.
SESSION_ENDED = 4401


@dataclass(frozen=True)
class Socket:
    """Who holds an open WebSocket, and under which session (the stored hash of its token)."""

    user: UserInfo
    session: str


#: Check which sessions are still valid, given their keys (``Accounts.sessions.live``: WebSessions).
SessionCheck = Callable[[set[str]], Awaitable[set[str]]]
#: Write the access trail for ``users`` reading these incidents before they are shown (``web/trail.py``);
#: raises when it cannot, and then nothing is sent.
Trace = Callable[[list[UserInfo], str, list[Mapping[str, Any]]], Awaitable[object]]


async def build_pop(
    calls: Calls,
    pending: PendingWrites,
    uniqueid: str,
    facts: Mapping[str, Any],
    locations: Locations | None = None,
    reports: Reports | None = None,
) -> dict[str, Any]:
    """Everything the call-taker sees when the caller is put through to them (for a citizen's report from
    the app: the report too, ``report``, and its position first among ``fixes``)."""
    await pending.settle(uniqueid, timeout=0.5)
    report_id = report_id_of(uniqueid)
    report = await reports.get(report_id) if reports is not None and report_id is not None else None
    shown = report_pop(report) if report is not None else None
    call = await calls.call_by_uniqueid(uniqueid)
    raw = call.caller_raw if call and call.caller_raw else str(facts.get("caller", ""))
    caller = normalize(raw)
    e164 = call.caller_number if call and call.caller_number else caller.e164
    history: dict[str, Any] = {"number": e164, "previous_calls": 0, "last_call_at": None, "flags": [], "incidents": []}
    if e164:
        found = await calls.caller_history(e164, exclude_call_id=call.id if call else None)
        history = {
            "number": e164,
            "previous_calls": found.previous_calls,
            "last_call_at": found.last_call_at.isoformat() if found.last_call_at else None,
            "flags": [
                {"kind": f.kind, "at": f.at.isoformat(), "note": f.note, "call_id": f.call_id} for f in found.flags
            ],
            "incidents": await calls.incidents_of_number(e164),
        }
    return {
        "call_id": call.id if call else None,
        "uniqueid": uniqueid,
        "caller": {"raw": raw, "e164": e164, "withheld": caller.withheld},
        "dialed": call.dialed if call else None,
        "arrived_at": call.arrived_at.isoformat() if call else None,
        "answered_at": call.answered_at.isoformat() if call and call.answered_at else None,
        "wait_seconds": facts.get("wait", call.wait_seconds if call else None),
        "member": facts.get("member", call.answered_by if call else None),
        "history": history,
        "location": await calls.known_location(call.id) if call else None,
        # Positions received for the call (AML, location link), newest first.
        "fixes": ([shown["fix"]] if shown and shown["fix"] else [])
        + (await locations.for_call(call) if call and locations else []),
        "report": shown,
    }


class LiveHub:
    """Fans tracker events out to the WebSockets of the call-takers they concern.

    A socket lives no longer than its session: logging out and deactivating an account close the
    session's (the user's) sockets at once (:meth:`end_sessions`), and every ``check_seconds`` the
    sessions of all open sockets are checked in one query (:meth:`check_sessions`), which catches
    idle and absolute expiry and changes made by another process (``callcenter user deactivate``).
    """

    def __init__(
        self,
        calls: Calls,
        pending: PendingWrites,
        tracker: QueueTracker,
        *,
        ping_seconds: float,
        queue: str = "calltakers",
        check_seconds: float = CHECK_SECONDS,
        sessions_alive: SessionCheck | None = None,
        trace: Trace | None = None,
        locations: Locations | None = None,
        reports: Reports | None = None,
    ) -> None:
        self.calls = calls
        self.reports = reports
        self.check_seconds = check_seconds
        self.sessions_alive = sessions_alive
        self.trace = trace
        self.locations = locations
        #: The call-takers' queue: whose member entry each console shows.
        self.queue = queue
        #: Interval of the JSON ``ping`` every page gets (``keepalive``).
        self.ping_seconds = ping_seconds
        self.pending = pending
        self.tracker = tracker
        self._sockets: dict[web.WebSocketResponse, Socket] = {}
        #: Caller uniqueid → the interface it is connected to, for routing ``call_ended``.
        self._calls: dict[str, str] = {}
        #: The same for calls that ended lately: the call-taker is still finishing that intake, and a
        #: position arriving after the hangup (an AML SMS, a late location link) belongs on that screen.
        self._ended: OrderedDict[str, str] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0

    def add(self, ws: web.WebSocketResponse, user: UserInfo, session: str) -> None:
        self._sockets[ws] = Socket(user, session)

    def remove(self, ws: web.WebSocketResponse) -> None:
        self._sockets.pop(ws, None)

    def clients_by_role(self) -> dict[str, int]:
        """Open consoles per role (``/metrics``)."""
        counts: dict[str, int] = {}
        for socket in self._sockets.values():
            counts[socket.user.role] = counts.get(socket.user.role, 0) + 1
        return counts

    def _targets(self, interface: str) -> list[web.WebSocketResponse]:
        return [ws for ws, s in self._sockets.items() if s.user.interface and s.user.interface == interface]

    def on_event(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Tracker listener (synchronous, inside the AMI consumer): hand off, never block it."""
        # Supervisors' wallboards refresh on any queue change (they fetch the figures themselves), so a
        # caller who waits only a few seconds still shows up between two polls.
        self.broadcast({"type": "queue", "event": kind}, roles=SUPERVISOR_ROLES)
        if kind == "connected":
            interface = str(payload.get("interface", ""))
            self._calls[str(payload["uniqueid"])] = interface
            if self._targets(interface):
                self._spawn(self._pop(interface, dict(payload)))
        elif kind in ("completed", "hangup"):
            interface = self._calls.pop(str(payload.get("uniqueid", "")), "")
            if interface:
                self._ended[str(payload.get("uniqueid", ""))] = interface
                while len(self._ended) > ENDED_REMEMBERED:
                    self._ended.popitem(last=False)
            if interface and self._targets(interface):
                self._spawn(self._call_ended(interface, str(payload.get("uniqueid", ""))))
        elif kind == "member":
            targets = self._targets(str(payload.get("interface", "")))
            if targets:
                self._spawn(self._send(targets, {"type": "member", "member": dict(payload)}))
        elif kind == "link":
            # The PBX is out of sight: no console may go on showing a queue state nobody can vouch for.
            self.broadcast({"type": "pbx", "up": False}, roles=CENTRE_ROLES)
        elif kind == "resync":
            self._spawn(self._after_resync())

    async def _after_resync(self) -> None:
        """The picture is Asterisk's again: every call-taker's console gets its member entry as it now is
        (also "not in the queue", which no member event would say)."""
        for ws, socket in list(self._sockets.items()):
            user = socket.user
            if user.role not in CENTRE_ROLES:
                continue
            await self._send([ws], {"type": "pbx", "up": True})
            if user.role == CALLTAKER and user.interface:
                member = self.tracker.live.members.get((self.queue, user.interface))
                await self._send([ws], {"type": "member", "member": member_json(member) if member else None})

    def send_to_call(self, uniqueid: str, message: dict[str, Any]) -> int:
        """Send to the consoles the call ``uniqueid`` is (or lately was) connected to; how many."""
        interface = (
            self._calls.get(uniqueid) or self.tracker.live.connected.get(uniqueid) or self._ended.get(uniqueid, "")
        )
        targets = self._targets(interface) if interface else []
        if targets:
            self._spawn(self._send(targets, message))
        return len(targets)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pop(self, interface: str, payload: dict[str, Any]) -> None:
        started = time.perf_counter()
        pop = await build_pop(
            self.calls, self.pending, str(payload["uniqueid"]), payload, self.locations, self.reports
        )
        message = {"type": "pop", "call": pop}
        await self._send_traced(self._targets(interface), message, "pop", pop["history"]["incidents"])
        log.info(
            "console.pop",
            interface=interface,
            call_id=pop["call_id"],
            ms=round(1000 * (time.perf_counter() - started), 1),
        )

    def broadcast(
        self,
        message: dict[str, Any],
        *,
        roles: tuple[str, ...] = (),
        agency: str | None = None,
        reads: tuple[str, list[Mapping[str, Any]]] | None = None,
    ) -> None:
        """Send to every console of ``roles``, plus the officers of ``agency`` (dispatch news, SLA alarms).

        ``reads`` names the incidents the message shows (an action and ``{id, reference, category}``
        items): a women-and-children case among them is traced for every recipient before it is sent."""
        targets = [
            ws
            for ws, s in self._sockets.items()
            if s.user.role in roles or (agency is not None and s.user.role == AGENCY and s.user.agency == agency)
        ]
        if not targets:
            return
        if reads is None:
            self._spawn(self._send(targets, message))
        else:
            self._spawn(self._send_traced(targets, message, *reads))

    async def _call_ended(self, interface: str, uniqueid: str) -> None:
        call = await self.calls.call_by_uniqueid(uniqueid)
        await self._send(self._targets(interface), {"type": "call_ended", "call_id": call.id if call else None})

    async def _send_traced(
        self, sockets: list[web.WebSocketResponse], message: dict[str, Any], action: str, incidents: list[Any]
    ) -> None:
        """Send ``message`` once its readers are in the access trail; untraced, it is not sent."""
        sockets = [ws for ws in sockets if ws in self._sockets]
        if self.trace is not None and incidents and sockets:
            try:
                await self.trace([self._sockets[ws].user for ws in sockets if ws in self._sockets], action, incidents)
            except Exception as exc:
                log.warning("console.trace_failed", action=action, error=str(exc))
                return
        await self._send(sockets, message)

    async def _send(self, sockets: list[web.WebSocketResponse], message: dict[str, Any]) -> None:
        for ws in sockets:
            # A socket whose session ended is out of the table before it is closed: nothing more reaches it.
            if ws.closed or ws not in self._sockets:
                continue
            try:
                await ws.send_json(message)
                self.sent += 1
            except (ConnectionError, RuntimeError) as exc:
                log.info("console.send_failed", error=str(exc))

    async def end_sessions(self, which: Callable[[Socket], bool], reason: str) -> int:
        """Close every socket ``which`` picks (a session logged out, a user deactivated): taken out of
        the table first, so no message reaches them after this call starts; returns how many."""
        ended = [(ws, s) for ws, s in self._sockets.items() if which(s)]
        for ws, s in ended:
            self._sockets.pop(ws, None)
            log.info("console.ws_session_ended", user_id=s.user.id, reason=reason)
        await asyncio.gather(*(self._close(ws, reason) for ws, _s in ended))
        return len(ended)

    @staticmethod
    async def _close(ws: web.WebSocketResponse, reason: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(code=SESSION_ENDED, message=reason.encode()[:120]), timeout=2.0)

    async def check_sessions(self) -> int:
        """Close the sockets whose session is no longer valid (one query for all of them). A database
        outage keeps them open: a console must not go dark because the check could not run."""
        if self.sessions_alive is None or not self._sockets:
            return 0
        asked = {s.session for s in self._sockets.values()}
        try:
            alive = await self.sessions_alive(asked)
        except Exception as exc:
            log.warning("console.session_check_failed", error=str(exc))
            return 0
        return await self.end_sessions(lambda s: s.session in asked and s.session not in alive, "session ended")

    async def keepalive(self) -> None:
        """Re-check the sockets' sessions every ``check_seconds``, and send every page a JSON ``ping``
        each ``ping_seconds``: browsers hide the protocol-level pings (``heartbeat``) from page code, and
        a quiet console must still tell a silent link from a dead one (the pages reconnect after ~2.5
        intervals without a message)."""
        loop = asyncio.get_running_loop()
        last_ping = loop.time()
        while True:
            await asyncio.sleep(min(self.check_seconds, self.ping_seconds))
            await self.check_sessions()
            if loop.time() - last_ping >= self.ping_seconds - 0.01:
                last_ping = loop.time()
                await self._send(list(self._sockets), {"type": "ping"})

    async def close(self) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"server shutdown")
        for task in list(self._tasks):
            task.cancel()
