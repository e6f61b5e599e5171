"""Follows the call-taker queue from AMI events: writes each call's timeline and keeps the live picture.

The live picture (who waits, which call-taker is where: ``queue/live.py``) is rebuilt from Asterisk
after every (re)connect (``queue/resync.py``), so a restart of Asterisk or of this app loses no call.

The live picture changes as each event is handled; the timeline is written behind it in batches by
the :class:`~callcenter.queue.timeline.TimelineWriter` (``queue/timeline.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog
from panoramisk.message import Message

from callcenter.forms.phone import normalize
from callcenter.queue.live import LiveState, WaitingCaller, member_json, report_id_of
from callcenter.queue.timeline import AfterWrite, TimelineWriter
from callcenter.store import Calls, utcnow
from callcenter.store.calls import EventWrite
from callcenter.store.lifecycle import close_call
from callcenter.store.models import Call
from callcenter.store.pending import PendingWrites

log = structlog.get_logger("callcenter.tracker")

#: A call in one of these states is over; later reports only add to its timeline.
FINAL = frozenset({"completed", "abandoned", "ended"})


Listener = Callable[[str, Mapping[str, Any]], None]


def int_field(value: Any, default: int = 0) -> int:
    """An AMI header as an int (``default`` when absent or not a number)."""
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


def _seconds(value: Any) -> float | None:
    try:
        return float(str(value).strip())
    except (TypeError, ValueError):
        return None


class QueueTracker:
    def __init__(
        self,
        calls: Calls,
        *,
        region: str = "ID",
        pending: PendingWrites | None = None,
        batch_size: int = 200,
        backlog_limit: int = 50_000,
        outage_pause: float = 1.0,
    ) -> None:
        self.calls = calls
        # Not ``pending or …``: an empty PendingWrites is falsy, and the app's shared one starts empty.
        self.pending = pending if pending is not None else PendingWrites()
        self.region = region
        self.live = LiveState()
        #: The timeline's write-behind (``queue/timeline.py``).
        self.writer = TimelineWriter(
            calls, self.pending, batch_size=batch_size, backlog_limit=backlog_limit, outage_pause=outage_pause
        )
        #: Callers queued by the dialplan's fallback, without our routing (``dialplan_fallback``).
        self.fallbacks = 0
        #: Whether the live picture follows Asterisk now: False from a lost link (or Asterisk's Shutdown)
        #: until the resync after the next connect. The consoles show "not known" meanwhile.
        self.link_up = False
        self._listeners: list[Listener] = []
        self._handlers: dict[str, Callable[[Message], None]] = {
            "queuecallerjoin": self._on_join,
            "queuecallerleave": self._on_leave,
            "queuecallerabandon": self._on_abandon,
            "agentcalled": self._on_agent_called,
            "agentringnoanswer": self._on_ring_no_answer,
            "agentconnect": self._on_agent_connect,
            "agentcomplete": self._on_agent_complete,
            "agentdump": self._on_agent_dump,
            "queuememberstatus": self.member_event,
            "queuememberadded": self.member_event,
            "queuememberpause": self.member_event,
            "queuememberremoved": self._on_member_removed,
            "hangup": self._on_hangup,
            "blindtransfer": self._on_transfer,
            "attendedtransfer": self._on_transfer,
            "userevent": self._on_user_event,
            "shutdown": lambda _m: self.link_down(),
        }

    @property
    def backlog(self) -> int:
        """Events handled (in the live picture) but not yet written to the timeline."""
        return self.writer.backlog

    # -- fan-out to consoles ---------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def publish(self, kind: str, payload: Mapping[str, Any]) -> None:
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
        try:
            handler(message)
        except (KeyError, ValueError, TypeError) as exc:
            uniqueid = str(message.get("Uniqueid", ""))
            with structlog.contextvars.bound_contextvars(uniqueid=uniqueid or None, ami_event=name):
                # The keys, not the message: its values carry callers' numbers and names.
                log.warning("tracker.malformed_event", error=str(exc), keys=sorted(message)[:30])

    def record(
        self,
        message: Message,
        kind: str,
        data: Mapping[str, Any],
        update: Callable[[Call], None] | None = None,
        *,
        after: AfterWrite | None = None,
        known_only: bool = False,
    ) -> None:
        """Queue a timeline entry for the call of ``message`` (created from it if unknown, unless ``known_only``)."""
        uniqueid = str(message["Uniqueid"])
        if not uniqueid:
            raise ValueError("event without Uniqueid")
        create = None
        if not known_only:
            # Only needed for a call the AGI route never recorded; the writer asks for it then.
            def create() -> Mapping[str, Any]:
                caller = normalize(str(message.get("CallerIDNum", "")), self.region)
                return {
                    "channel": message.get("Channel") or None,
                    "linkedid": message.get("Linkedid") or None,
                    "caller_raw": caller.raw or None,
                    "caller_number": caller.e164,
                }

        self.enqueue(EventWrite(uniqueid, kind, utcnow(), "ami", data, update, create), after)

    def enqueue(self, write: EventWrite, after: AfterWrite | None = None) -> None:
        self.writer.enqueue(write, after)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event handled so far is written; False if ``timeout`` came first."""
        return await self.writer.flush(timeout)

    async def close(self, timeout: float = 10.0) -> None:
        """Write what is buffered (bounded), then stop the writer: the wiring calls it before the store closes."""
        await self.writer.close(timeout)

    # -- queue callers ---------------------------------------------------------------------------

    def _on_join(self, m: Message) -> None:
        now = utcnow()
        queue, position = str(m["Queue"]), int_field(m.get("Position"))
        uniqueid = str(m["Uniqueid"])
        report_id = report_id_of(uniqueid)
        caller = str(m.get("CallerIDNum", ""))
        self.live.waiting[uniqueid] = WaitingCaller(uniqueid, queue, position, caller, now, report_id)
        self.live.touch("waiting", uniqueid)
        self.publish("waiting", {"uniqueid": uniqueid, "queue": queue, "position": position, "report_id": report_id})

        linkedid = str(m.get("Linkedid", "")) or None

        def update(call: Call) -> None:
            if call.status not in FINAL:
                call.status = "queued"
            call.queue = queue
            call.queued_at = call.queued_at or now
            call.linkedid = call.linkedid or linkedid
            if report_id is not None:
                # Not dialled by anyone: the citizen's report from the app, queued by us.
                call.dialed, call.routed_by = "lapor", "report"

        data: dict[str, Any] = {"queue": queue, "position": position, "count": int_field(m.get("Count"))}
        if report_id is not None:
            data["report_id"] = report_id
        if dialplan_fallback(m):
            # Queued by the dialplan's fallback (the app did not route this call): counted for /metrics.
            self.fallbacks += 1
            data["fallback"] = True
        self.record(m, "queued", data, update)

    def _on_leave(self, m: Message) -> None:
        uniqueid = str(m["Uniqueid"])
        self.live.drop("waiting", uniqueid)
        self.publish("left", {"uniqueid": uniqueid})
        self.record(m, "left_queue", {"queue": m.get("Queue", ""), "position": int_field(m.get("Position"))})

    def _on_abandon(self, m: Message) -> None:
        uniqueid = str(m["Uniqueid"])
        self.live.drop("waiting", uniqueid)
        position = int_field(m.get("Position"))
        original = int_field(m.get("OriginalPosition"), position)
        wait = _seconds(m.get("HoldTime"))

        def update(call: Call) -> None:
            call.status = "abandoned"
            call.abandon_position = position
            call.wait_seconds = wait
            call.hangup_by = call.hangup_by or "caller"

        data = {"queue": m.get("Queue", ""), "position": position, "original_position": original, "wait": wait}
        # Wallboards re-read today's figures on this publication: it follows the write.
        self.record(
            m, "abandoned", data, update, after=lambda: self.publish("abandoned", {"uniqueid": uniqueid, **data})
        )

    # -- call-takers ringing and answering -------------------------------------------------------

    def _on_agent_called(self, m: Message) -> None:
        member = str(m.get("MemberName") or m.get("Interface", ""))

        def update(call: Call) -> None:
            if call.status == "queued":
                call.status = "ringing"

        ringing = {"uniqueid": m["Uniqueid"], "member": member, "interface": m.get("Interface", "")}
        self.record(
            m,
            "ringing",
            {"member": member, "interface": m.get("Interface", "")},
            update,
            after=lambda: self.publish("ringing", ringing),
        )

    def _on_ring_no_answer(self, m: Message) -> None:
        member = str(m.get("MemberName") or m.get("Interface", ""))
        ring_ms = _seconds(m.get("RingTime"))  # milliseconds here, unlike AgentConnect's seconds
        ring = None if ring_ms is None else ring_ms / 1000

        def update(call: Call) -> None:
            if call.status == "ringing":
                call.status = "queued"

        self.record(m, "ring_no_answer", {"member": member, "ring_seconds": ring}, update)

    def _on_agent_connect(self, m: Message) -> None:
        now = utcnow()
        uniqueid = str(m["Uniqueid"])
        member = str(m.get("MemberName") or m.get("Interface", ""))
        interface = str(m.get("Interface", ""))
        wait = _seconds(m.get("HoldTime"))
        self.live.drop("waiting", uniqueid)
        self.live.connected[uniqueid] = interface
        self.live.touch("connected", uniqueid)
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
        report = {"report_id": report_id_of(uniqueid)}
        self.publish("connected", {"uniqueid": uniqueid, **data, "caller": m.get("CallerIDNum", ""), **report})
        self.record(m, "answered", data, update)

    def _on_agent_complete(self, m: Message) -> None:
        if not m.get("Uniqueid"):
            # The caller's channel is already gone: the call-taker's leg says which call it was.
            found = self.live.connected_call(
                str(m.get("DestLinkedid", "")), str(m.get("DestChannel", "")), str(m.get("Interface", ""))
            )
            m = Message({**dict(m), "Uniqueid": found})
        uniqueid = str(m["Uniqueid"])
        self.live.drop("connected", uniqueid)
        self.live.channels.pop(uniqueid, None)
        reason = str(m.get("Reason", "")).lower()
        talk = _seconds(m.get("TalkTime"))
        by = {"caller": "caller", "agent": "calltaker", "transfer": "transfer"}.get(reason, reason or None)

        def update(call: Call) -> None:
            call.status = "completed"
            call.talk_seconds = talk
            call.hangup_by = by

        data = {"member": m.get("MemberName", ""), "talk": talk, "reason": reason}
        self.record(
            m,
            "transferred" if reason == "transfer" else "completed",
            data,
            update,
            after=lambda: self.publish("completed", {"uniqueid": uniqueid, **data}),
        )

    def _on_agent_dump(self, m: Message) -> None:
        self.record(m, "agent_dump", {"member": m.get("MemberName", "")})

    def _on_transfer(self, m: Message) -> None:
        # Transfer events name the transferer's channel; only record calls we already follow.
        for key in ("TransfereeUniqueid", "OrigTransfererUniqueid"):
            uniqueid = str(m.get(key, ""))
            if uniqueid and (uniqueid in self.live.connected or uniqueid in self.live.waiting):
                data = {"result": m.get("Result", ""), "extension": m.get("Extension", "")}
                self.enqueue(EventWrite(uniqueid, "transferred", utcnow(), data=data))

    def _on_user_event(self, m: Message) -> None:
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

        data = {"queue_status": status, "dial": m.get("Dial", ""), "round": int_field(m.get("Round"), 1)}
        self.record(m, "overflow", data, update)

    def _on_hangup(self, m: Message) -> None:
        uniqueid = str(m.get("Uniqueid", ""))
        followed = uniqueid in self.live.waiting or uniqueid in self.live.connected
        self.live.drop("waiting", uniqueid)
        self.live.drop("connected", uniqueid)
        self.live.channels.pop(uniqueid, None)
        if not uniqueid:
            return
        now = utcnow()
        cause = int_field(m.get("Cause"), -1)

        def update(call: Call) -> None:
            close_call(call, now)
            call.hangup_cause = cause

        # Hangups of call-taker legs and unrelated channels are not calls of ours (the batch skips a
        # channel it finds no call for); a caller that hangs up before reaching the queue is reported
        # by the dialplan's hangup handler.
        self.record(
            m,
            "hangup",
            {"cause": cause, "cause_text": m.get("Cause-txt", "")},
            update,
            after=lambda: self.publish("hangup", {"uniqueid": uniqueid}),
            known_only=not followed,
        )

    # -- call-taker presence as Asterisk reports it ----------------------------------------------

    def member_event(self, m: Message) -> None:
        self.publish("member", member_json(self.live.apply_member(m)))

    def _on_member_removed(self, m: Message) -> None:
        key = (str(m["Queue"]), str(m.get("Interface", "")))
        member = self.live.drop("member", key)
        if member is not None:
            self.publish("member_removed", member_json(member))

    # -- resynchronisation -----------------------------------------------------------------------

    def link_down(self) -> None:
        """The AMI link is gone (or Asterisk announced its shutdown): what the picture shows is not known
        to be true any more. Consoles are told at once; the next resync makes the picture true again."""
        if not self.link_up:
            return
        self.link_up = False
        log.warning("tracker.link_down", waiting=len(self.live.waiting), members=len(self.live.members))
        self.publish("link", {"up": False})


def dialplan_fallback(m: Message) -> bool:
    """Whether the channel carries ``CC_FALLBACK=1``, the dialplan's mark of a call it queued without our
    routing. Asterisk adds ``ChanVariable: CC_FALLBACK=…`` to the channel's AMI events when manager.conf
    lists it in ``channelvars`` (the test PBX does; README says so for a centre's own Asterisk)."""
    found = m.get("ChanVariable")
    values = found if isinstance(found, list) else [found]
    return any(str(v).strip() == "CC_FALLBACK=1" for v in values if v is not None)
