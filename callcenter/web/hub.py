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
from collections.abc import Mapping
from typing import Any

import structlog
from aiohttp import web

from callcenter.forms.phone import normalize
from callcenter.queue.tracker import QueueTracker, member_json
from callcenter.store import Store
from callcenter.store.accounts import UserInfo
from callcenter.store.pending import PendingWrites
from callcenter.store.roles import AGENCY, CALLTAKER, CENTRE_ROLES, SUPERVISOR_ROLES

log = structlog.get_logger("callcenter.web.hub")


async def build_pop(store: Store, pending: PendingWrites, uniqueid: str, facts: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the call-taker sees when the caller is put through to them."""
    await pending.settle(uniqueid, timeout=0.5)
    call = await store.call_by_uniqueid(uniqueid)
    raw = call.caller_raw if call and call.caller_raw else str(facts.get("caller", ""))
    caller = normalize(raw)
    e164 = call.caller_number if call and call.caller_number else caller.e164
    history: dict[str, Any] = {"number": e164, "previous_calls": 0, "last_call_at": None, "flags": [], "incidents": []}
    if e164:
        found = await store.caller_history(e164, exclude_call_id=call.id if call else None)
        history = {
            "number": e164,
            "previous_calls": found.previous_calls,
            "last_call_at": found.last_call_at.isoformat() if found.last_call_at else None,
            "flags": [
                {"kind": f.kind, "at": f.at.isoformat(), "note": f.note, "call_id": f.call_id} for f in found.flags
            ],
            "incidents": await store.incidents_of_number(e164),
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
        "location": await store.known_location(call.id) if call else None,
    }


class LiveHub:
    """Fans tracker events out to the WebSockets of the call-takers they concern."""

    def __init__(
        self,
        store: Store,
        pending: PendingWrites,
        tracker: QueueTracker,
        *,
        ping_seconds: float,
        queue: str = "calltakers",
    ) -> None:
        self.store = store
        #: The call-takers' queue: whose member entry each console shows.
        self.queue = queue
        #: Interval of the JSON ``ping`` every page gets (``keepalive``).
        self.ping_seconds = ping_seconds
        self.pending = pending
        self.tracker = tracker
        self._sockets: dict[web.WebSocketResponse, UserInfo] = {}
        #: Caller uniqueid → the interface it is connected to, for routing ``call_ended``.
        self._calls: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0

    def add(self, ws: web.WebSocketResponse, user: UserInfo) -> None:
        self._sockets[ws] = user

    def remove(self, ws: web.WebSocketResponse) -> None:
        self._sockets.pop(ws, None)

    def clients_by_role(self) -> dict[str, int]:
        """Open consoles per role (``/metrics``)."""
        counts: dict[str, int] = {}
        for user in self._sockets.values():
            counts[user.role] = counts.get(user.role, 0) + 1
        return counts

    def _targets(self, interface: str) -> list[web.WebSocketResponse]:
        return [ws for ws, user in self._sockets.items() if user.interface and user.interface == interface]

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
        for ws, user in list(self._sockets.items()):
            if user.role not in CENTRE_ROLES:
                continue
            await self._send([ws], {"type": "pbx", "up": True})
            if user.role == CALLTAKER and user.interface:
                member = self.tracker.live.members.get((self.queue, user.interface))
                await self._send([ws], {"type": "member", "member": member_json(member) if member else None})

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pop(self, interface: str, payload: dict[str, Any]) -> None:
        started = time.perf_counter()
        pop = await build_pop(self.store, self.pending, str(payload["uniqueid"]), payload)
        await self._send(self._targets(interface), {"type": "pop", "call": pop})
        log.info(
            "console.pop",
            interface=interface,
            call_id=pop["call_id"],
            ms=round(1000 * (time.perf_counter() - started), 1),
        )

    def broadcast(self, message: dict[str, Any], *, roles: tuple[str, ...] = (), agency: str | None = None) -> None:
        """Send to every console of ``roles``, plus the officers of ``agency`` (dispatch news, SLA alarms)."""
        targets = [
            ws
            for ws, user in self._sockets.items()
            if user.role in roles or (agency is not None and user.role == AGENCY and user.agency == agency)
        ]
        if targets:
            self._spawn(self._send(targets, message))

    async def _call_ended(self, interface: str, uniqueid: str) -> None:
        call = await self.store.call_by_uniqueid(uniqueid)
        await self._send(self._targets(interface), {"type": "call_ended", "call_id": call.id if call else None})

    async def _send(self, sockets: list[web.WebSocketResponse], message: dict[str, Any]) -> None:
        for ws in sockets:
            if ws.closed:
                continue
            try:
                await ws.send_json(message)
                self.sent += 1
            except (ConnectionError, RuntimeError) as exc:
                log.info("console.send_failed", error=str(exc))

    async def keepalive(self) -> None:
        """Send every page a JSON ``ping`` each ``ping_seconds``: browsers hide the protocol-level pings
        (``heartbeat``) from page code, and a quiet console must still tell a silent link from a dead one
        (the pages reconnect after ~2.5 intervals without a message)."""
        while True:
            await asyncio.sleep(self.ping_seconds)
            await self._send(list(self._sockets), {"type": "ping"})

    async def close(self) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"server shutdown")
        for task in list(self._tasks):
            task.cancel()
