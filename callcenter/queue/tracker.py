"""Follows the call-taker queue from AMI events: writes each call's timeline and keeps the live picture.

The live picture (who waits, which call-taker is where) is rebuilt from Asterisk after every
(re)connect, so a restart of Asterisk or of this app loses no call: Asterisk is the authority on
what exists now, the database on what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import structlog
from panoramisk.message import Message

from callcenter.forms.phone import normalize
from callcenter.store import Store, StoreUnavailable, utcnow
from callcenter.store.lifecycle import close_call
from callcenter.store.models import Call
from callcenter.store.pending import PendingWrites

log = structlog.get_logger("callcenter.tracker")

#: Asterisk device states as QueueMemberStatus reports them (include/asterisk/devicestate.h).
DEVICE_STATES = {
    "0": "unknown",
    "1": "not_in_use",
    "2": "in_use",
    "3": "busy",
    "4": "invalid",
    "5": "unavailable",
    "6": "ringing",
    "7": "ring_in_use",
    "8": "on_hold",
}
#: A call in one of these states is over; later reports only add to its timeline.
FINAL = frozenset({"completed", "abandoned", "ended"})


@dataclass(frozen=True)
class WaitingCaller:
    uniqueid: str
    queue: str
    position: int
    caller: str
    joined_at: datetime


@dataclass(frozen=True)
class Member:
    interface: str
    name: str
    queue: str
    state: str = "unknown"
    paused: bool = False
    reason: str = ""
    in_call: bool = False


@dataclass
class LiveState:
    waiting: dict[str, WaitingCaller] = field(default_factory=dict)
    members: dict[tuple[str, str], Member] = field(default_factory=dict)
    #: Caller uniqueid → member interface, for calls in conversation now.
    connected: dict[str, str] = field(default_factory=dict)
    #: Caller uniqueid → (caller's channel, call-taker's channel) of the calls in ``connected``, from
    #: AgentConnect's ``Channel``/``DestChannel``: what a conference redirects (absent after a resync).
    channels: dict[str, tuple[str, str]] = field(default_factory=dict)


Listener = Callable[[str, Mapping[str, Any]], None]


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


def _seconds(value: Any) -> float | None:
    try:
        return float(str(value).strip())
    except (TypeError, ValueError):
        return None


def _is_true(value: Any) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes"}


class QueueTracker:
    def __init__(self, store: Store, *, region: str = "ID", pending: PendingWrites | None = None) -> None:
        self.store = store
        self.pending = pending or PendingWrites()
        self.region = region
        self.live = LiveState()
        #: Monotonic time each live entry was last reported; a resync only drops entries older than its query.
        self._touched: dict[tuple[str, object], float] = {}
        self._listeners: list[Listener] = []
        self._handlers: dict[str, Callable[[Message], Any]] = {
            "queuecallerjoin": self._on_join,
            "queuecallerleave": self._on_leave,
            "queuecallerabandon": self._on_abandon,
            "agentcalled": self._on_agent_called,
            "agentringnoanswer": self._on_ring_no_answer,
            "agentconnect": self._on_agent_connect,
            "agentcomplete": self._on_agent_complete,
            "agentdump": self._on_agent_dump,
            "queuememberstatus": self._on_member,
            "queuememberadded": self._on_member,
            "queuememberpause": self._on_member,
            "queuememberremoved": self._on_member_removed,
            "hangup": self._on_hangup,
            "blindtransfer": self._on_transfer,
            "attendedtransfer": self._on_transfer,
            "userevent": self._on_user_event,
        }

    # -- fan-out to consoles ---------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _publish(self, kind: str, payload: Mapping[str, Any]) -> None:
        for listener in list(self._listeners):
            try:
                listener(kind, payload)
            except Exception:
                log.exception("tracker.listener_failed", kind=kind)

    # -- entry point from the AMI client ---------------------------------------------------------

    async def handle(self, message: Message) -> None:
        name = str(message.get("Event", "")).lower()
        handler = self._handlers.get(name)
        if handler is None:
            return
        uniqueid = str(message.get("Uniqueid", ""))
        with structlog.contextvars.bound_contextvars(uniqueid=uniqueid or None, ami_event=name):
            try:
                await handler(message)
            except StoreUnavailable as exc:
                # The store already retried for its window; keep the whole event in the log.
                log.error("tracker.event_lost", error=str(exc), message=dict(message))
            except (KeyError, ValueError, TypeError) as exc:
                log.warning("tracker.malformed_event", error=str(exc), message=dict(message))

    async def _record(
        self,
        message: Message,
        kind: str,
        data: Mapping[str, Any],
        update: Callable[[Call], None] | None = None,
    ) -> None:
        uniqueid = str(message["Uniqueid"])
        if not uniqueid:
            raise ValueError("event without Uniqueid")
        await self.pending.settle(uniqueid)
        caller = normalize(str(message.get("CallerIDNum", "")), self.region)
        create = {
            "channel": message.get("Channel") or None,
            "linkedid": message.get("Linkedid") or None,
            "caller_raw": caller.raw or None,
            "caller_number": caller.e164,
        }
        call_id = await self.store.record_event(uniqueid, kind, source="ami", data=data, update=update, create=create)
        log.info("call." + kind, call_id=call_id, **data)

    # -- queue callers ---------------------------------------------------------------------------

    async def _on_join(self, m: Message) -> None:
        now = utcnow()
        queue, position = str(m["Queue"]), _int(m.get("Position"))
        uniqueid = str(m["Uniqueid"])
        self.live.waiting[uniqueid] = WaitingCaller(uniqueid, queue, position, str(m.get("CallerIDNum", "")), now)
        self._touch("waiting", uniqueid)
        self._publish("waiting", {"uniqueid": uniqueid, "queue": queue, "position": position})

        linkedid = str(m.get("Linkedid", "")) or None

        def update(call: Call) -> None:
            if call.status not in FINAL:
                call.status = "queued"
            call.queue = queue
            call.queued_at = call.queued_at or now
            call.linkedid = call.linkedid or linkedid

        await self._record(m, "queued", {"queue": queue, "position": position, "count": _int(m.get("Count"))}, update)

    async def _on_leave(self, m: Message) -> None:
        uniqueid = str(m["Uniqueid"])
        self._drop("waiting", self.live.waiting, uniqueid)
        self._publish("left", {"uniqueid": uniqueid})
        await self._record(m, "left_queue", {"queue": m.get("Queue", ""), "position": _int(m.get("Position"))})

    async def _on_abandon(self, m: Message) -> None:
        uniqueid = str(m["Uniqueid"])
        self._drop("waiting", self.live.waiting, uniqueid)
        position = _int(m.get("Position"))
        original = _int(m.get("OriginalPosition"), position)
        wait = _seconds(m.get("HoldTime"))

        def update(call: Call) -> None:
            call.status = "abandoned"
            call.abandon_position = position
            call.wait_seconds = wait
            call.hangup_by = call.hangup_by or "caller"

        data = {"queue": m.get("Queue", ""), "position": position, "original_position": original, "wait": wait}
        await self._record(m, "abandoned", data, update)
        self._publish("abandoned", {"uniqueid": uniqueid, **data})

    # -- call-takers ringing and answering -------------------------------------------------------

    async def _on_agent_called(self, m: Message) -> None:
        member = str(m.get("MemberName") or m.get("Interface", ""))

        def update(call: Call) -> None:
            if call.status == "queued":
                call.status = "ringing"

        await self._record(m, "ringing", {"member": member, "interface": m.get("Interface", "")}, update)
        self._publish("ringing", {"uniqueid": m["Uniqueid"], "member": member, "interface": m.get("Interface", "")})

    async def _on_ring_no_answer(self, m: Message) -> None:
        member = str(m.get("MemberName") or m.get("Interface", ""))
        ring_ms = _seconds(m.get("RingTime"))  # milliseconds here, unlike AgentConnect's seconds
        ring = None if ring_ms is None else ring_ms / 1000

        def update(call: Call) -> None:
            if call.status == "ringing":
                call.status = "queued"

        await self._record(m, "ring_no_answer", {"member": member, "ring_seconds": ring}, update)

    async def _on_agent_connect(self, m: Message) -> None:
        now = utcnow()
        uniqueid = str(m["Uniqueid"])
        member = str(m.get("MemberName") or m.get("Interface", ""))
        interface = str(m.get("Interface", ""))
        wait = _seconds(m.get("HoldTime"))
        self._drop("waiting", self.live.waiting, uniqueid)
        self.live.connected[uniqueid] = interface
        self._touch("connected", uniqueid)
        caller_channel, taker_channel = str(m.get("Channel", "")), str(m.get("DestChannel", ""))
        if caller_channel and taker_channel:
            self.live.channels[uniqueid] = (caller_channel, taker_channel)
        else:
            self.live.channels.pop(uniqueid, None)

        def update(call: Call) -> None:
            call.status = "answered"
            call.answered_at = now
            call.answered_by = member
            call.wait_seconds = wait

        data = {"member": member, "interface": interface, "wait": wait, "ring_seconds": _seconds(m.get("RingTime"))}
        # Publish before the write: the console's screen pop must not wait on the database.
        self._publish("connected", {"uniqueid": uniqueid, **data, "caller": m.get("CallerIDNum", "")})
        await self._record(m, "answered", data, update)

    async def _on_agent_complete(self, m: Message) -> None:
        if not m.get("Uniqueid"):
            # Asterisk leaves out the caller's channel snapshot when that channel is already gone;
            # the call-taker's interface still says which connected call this was.
            interface = str(m.get("Interface", ""))
            found = [u for u, i in self.live.connected.items() if i == interface]
            if len(found) != 1:
                raise ValueError("AgentComplete without Uniqueid for an interface with no single call")
            m = Message({**dict(m), "Uniqueid": found[0]})
        uniqueid = str(m["Uniqueid"])
        self._drop("connected", self.live.connected, uniqueid)
        self.live.channels.pop(uniqueid, None)
        reason = str(m.get("Reason", "")).lower()
        talk = _seconds(m.get("TalkTime"))
        by = {"caller": "caller", "agent": "calltaker", "transfer": "transfer"}.get(reason, reason or None)

        def update(call: Call) -> None:
            call.status = "completed"
            call.talk_seconds = talk
            call.hangup_by = by

        data = {"member": m.get("MemberName", ""), "talk": talk, "reason": reason}
        await self._record(m, "transferred" if reason == "transfer" else "completed", data, update)
        self._publish("completed", {"uniqueid": uniqueid, **data})

    async def _on_agent_dump(self, m: Message) -> None:
        await self._record(m, "agent_dump", {"member": m.get("MemberName", "")})

    async def _on_transfer(self, m: Message) -> None:
        # Transfer events name the transferer's channel; only record calls we already follow.
        for key in ("TransfereeUniqueid", "OrigTransfererUniqueid"):
            uniqueid = str(m.get(key, ""))
            if uniqueid and (uniqueid in self.live.connected or uniqueid in self.live.waiting):
                data = {"result": m.get("Result", ""), "extension": m.get("Extension", "")}
                await self.store.record_event(uniqueid, "transferred", source="ami", data=data)

    async def _on_user_event(self, m: Message) -> None:
        """``UserEvent(CallcenterOverflow,…)`` from the dialplan: the queue gave up and overflow is dialled."""
        if str(m.get("UserEvent", "")).lower() != "callcenteroverflow":
            return
        status = str(m.get("QueueStatus", ""))

        def update(call: Call) -> None:
            # Asterisk 22 reports a queue timeout as QueueCallerAbandon too; the overflow that follows
            # shows the caller did not give up, so that abandon is taken back.
            if call.status == "abandoned" and call.ended_at is None:
                call.abandon_position = None
                call.hangup_by = None
            if call.status not in FINAL or (call.status == "abandoned" and call.ended_at is None):
                call.status = "overflow"

        data = {"queue_status": status, "dial": m.get("Dial", ""), "round": _int(m.get("Round"), 1)}
        await self._record(m, "overflow", data, update)

    async def _on_hangup(self, m: Message) -> None:
        uniqueid = str(m.get("Uniqueid", ""))
        followed = uniqueid in self.live.waiting or uniqueid in self.live.connected
        self._drop("waiting", self.live.waiting, uniqueid)
        self._drop("connected", self.live.connected, uniqueid)
        self.live.channels.pop(uniqueid, None)
        # Hangups of call-taker legs and unrelated channels are not calls of ours; a caller that
        # hangs up before reaching the queue is reported by the dialplan's hangup handler.
        if not followed and await self.store.call_by_uniqueid(uniqueid) is None:
            return
        now = utcnow()
        cause = _int(m.get("Cause"), -1)

        def update(call: Call) -> None:
            close_call(call, now)
            call.hangup_cause = cause

        await self._record(m, "hangup", {"cause": cause, "cause_text": m.get("Cause-txt", "")}, update)
        self._publish("hangup", {"uniqueid": uniqueid})

    # -- call-taker presence as Asterisk reports it ----------------------------------------------

    async def _on_member(self, m: Message) -> None:
        queue = str(m["Queue"])
        interface = str(m.get("Interface") or m.get("Location") or "")
        if not interface:
            raise ValueError("member event without Interface")
        key = (queue, interface)
        old = self.live.members.get(key) or Member(interface, str(m.get("MemberName", interface)), queue)
        member = replace(
            old,
            name=str(m.get("MemberName") or m.get("Name") or old.name),
            state=DEVICE_STATES.get(str(m.get("Status", "")), old.state),
            paused=_is_true(m["Paused"]) if "Paused" in m else old.paused,
            reason=str(m.get("PausedReason") or m.get("Reason") or "") if "Paused" in m else old.reason,
            in_call=_is_true(m["InCall"]) if "InCall" in m else old.in_call,
        )
        self.live.members[key] = member
        self._touch("member", key)
        self._publish("member", member_json(member))

    async def _on_member_removed(self, m: Message) -> None:
        key = (str(m["Queue"]), str(m.get("Interface", "")))
        member = self._drop("member", self.live.members, key)
        if member is not None:
            self._publish("member_removed", member_json(member))

    # -- resynchronisation -----------------------------------------------------------------------

    def _touch(self, kind: str, key: object) -> None:
        self._touched[(kind, key)] = asyncio.get_running_loop().time()

    def _drop(self, kind: str, entries: dict[Any, Any], key: object) -> Any:
        """Remove a live entry, remembering when, so a resync snapshot taken earlier cannot bring it back."""
        self._touch(kind, key)
        return entries.pop(key, None)

    def _stale(self, kind: str, key: object, asked_mono: float) -> bool:
        """Reported before the resync query went out, so the snapshot is newer and wins."""
        return self._touched.get((kind, key), float("-inf")) < asked_mono

    def _prune(self, kind: str, entries: dict[Any, Any], keep: set[Any], asked_mono: float) -> None:
        for key in [k for k in entries if k not in keep and self._stale(kind, k, asked_mono)]:
            entries.pop(key)
            self._touched.pop((kind, key), None)

    async def resync(
        self,
        entries: list[Message],
        members: list[Message],
        channels: list[Message],
        asked_at: datetime | None = None,
        asked_mono: float | None = None,
    ) -> None:
        """Rebuild the live picture from Asterisk and close calls that ended while we were not listening.

        ``asked_at`` is when the channel list was requested: calls that arrived after it are not in
        the list yet are certainly not over, so they are left alone.
        """
        now = utcnow()
        asked_at = asked_at or now
        asked_mono = asyncio.get_running_loop().time() if asked_mono is None else asked_mono
        alive = {str(c.get("Uniqueid", "")) for c in channels}
        snapshot = {str(e.get("Uniqueid", "")) for e in entries}
        self._prune("waiting", self.live.waiting, snapshot, asked_mono)
        for e in entries:
            uniqueid = str(e.get("Uniqueid", ""))
            if not uniqueid or not self._stale("waiting", uniqueid, asked_mono):
                continue
            wait = _int(e.get("Wait"))
            self.live.waiting[uniqueid] = WaitingCaller(
                uniqueid,
                str(e.get("Queue", "")),
                _int(e.get("Position")),
                str(e.get("CallerIDNum", "")),
                now - timedelta(seconds=wait),
            )
            queue = str(e.get("Queue", ""))
            joined = now - timedelta(seconds=wait)

            def update(call: Call, queue: str = queue, joined: datetime = joined) -> None:
                if call.status not in FINAL:
                    call.status = "queued"
                call.queue = call.queue or queue
                call.queued_at = call.queued_at or joined

            await self._record(e, "resync_waiting", {"queue": queue, "position": _int(e.get("Position"))}, update)
        present = {(str(mm.get("Queue", "")), str(mm.get("Location") or mm.get("Interface", ""))) for mm in members}
        self._prune("member", self.live.members, present, asked_mono)
        for mm in members:
            mm_dict = dict(mm)
            mm_dict.setdefault("Interface", mm.get("Location", ""))
            mm_dict.setdefault("MemberName", mm.get("Name", ""))
            key = (str(mm.get("Queue", "")), str(mm_dict["Interface"]))
            if self._stale("member", key, asked_mono):
                with contextlib.suppress(KeyError, ValueError):
                    await self._on_member(Message(mm_dict))
        self._prune("connected", self.live.connected, alive, asked_mono)
        for gone in [u for u in self.live.channels if u not in self.live.connected]:
            del self.live.channels[gone]
        for call in await self.store.open_calls():
            if call.uniqueid in alive or call.arrived_at >= asked_at - timedelta(seconds=1):
                continue

            await self.store.record_event(
                call.uniqueid,
                "ended_unobserved",
                source="resync",
                data={"last_status": call.status},
                update=lambda c: _ended_unobserved(c, now),
            )
        # Forget tombstones the snapshot has superseded, so the map does not grow for ever.
        maps: dict[str, dict[Any, Any]] = {
            "waiting": self.live.waiting,
            "member": self.live.members,
            "connected": self.live.connected,
        }
        for touched in [k for k, t in self._touched.items() if t < asked_mono]:
            if touched[1] not in maps[touched[0]]:
                del self._touched[touched]
        log.info(
            "tracker.resynced",
            waiting=len(self.live.waiting),
            members=len(self.live.members),
            channels=len(alive),
        )
        self._publish("resync", {"waiting": len(self.live.waiting), "members": len(self.live.members)})


def _ended_unobserved(call: Call, now: datetime) -> None:
    """Gone from Asterisk while we were not listening: ended, outcome unknown (not "abandoned")."""
    call.ended_at = call.ended_at or now
    if call.status not in FINAL:
        call.status = "ended"


def member_json(member: Member) -> dict[str, Any]:
    return {
        "queue": member.queue,
        "interface": member.interface,
        "name": member.name,
        "state": member.state,
        "paused": member.paused,
        "reason": member.reason,
        "in_call": member.in_call,
    }


async def resync_from_ami(tracker: QueueTracker, ami: Any) -> None:
    """After every (re)connect: ask Asterisk for queue entries, members and live channels."""
    asked_at = utcnow()
    asked_mono = asyncio.get_running_loop().time()
    status = await ami.action({"Action": "QueueStatus"}, as_list=True, timeout=10)
    channels = await ami.action({"Action": "CoreShowChannels"}, as_list=True, timeout=10)
    status_list = status if isinstance(status, list) else [status]
    channel_list = channels if isinstance(channels, list) else [channels]
    entries = [m for m in status_list if str(m.get("Event", "")).lower() == "queueentry"]
    members = [m for m in status_list if str(m.get("Event", "")).lower() == "queuemember"]
    live = [m for m in channel_list if str(m.get("Event", "")).lower() == "coreshowchannel"]
    await tracker.resync(entries, members, live, asked_at, asked_mono)
