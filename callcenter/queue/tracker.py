"""Follows the call-taker queue from AMI events: writes each call's timeline and keeps the live picture.

The live picture (who waits, which call-taker is where) is rebuilt from Asterisk after every
(re)connect, so a restart of Asterisk or of this app loses no call: Asterisk is the authority on
what exists now, the database on what happened.

The live picture changes as each event is handled; the timeline is written behind it in batches.
Events that arrive while a batch is being written are gathered into the next one (one transaction
each, at most ``batch_size`` events, in arrival order), so the AMI consumer never waits on the
database and a burst of events costs a few transactions instead of one each. Every batch is
registered in ``PendingWrites`` for the calls it holds: the hangup handler's report and the
console's pop wait for it, as they wait for the AGI route's first write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import structlog
from panoramisk.message import Message

from callcenter.forms.phone import normalize
from callcenter.store import Store, StoreUnavailable, utcnow
from callcenter.store.calls import EventWrite
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
#: Runs once the event it belongs to is in the database (a publication that must not run ahead of it).
AfterWrite = Callable[[], None]


@dataclass
class _Batch:
    """Events written in one transaction; ``done`` resolves when they are written or given up."""

    done: asyncio.Future[None]
    writes: list[tuple[EventWrite, AfterWrite | None]] = field(default_factory=list)
    #: Other writes of these calls still on their way (the AGI route's first write): this batch lands after them.
    waits_for: set[asyncio.Future[Any]] = field(default_factory=set)


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


def is_true(value: Any) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes"}


class QueueTracker:
    def __init__(
        self,
        store: Store,
        *,
        region: str = "ID",
        pending: PendingWrites | None = None,
        batch_size: int = 200,
        backlog_limit: int = 50_000,
        outage_pause: float = 1.0,
    ) -> None:
        self.store = store
        # Not ``pending or …``: an empty PendingWrites is falsy, and the app's shared one starts empty.
        self.pending = pending if pending is not None else PendingWrites()
        self.region = region
        self.live = LiveState()
        #: At most this many events per transaction: a long backlog is written in bounded steps.
        self.batch_size = batch_size
        #: Events kept while the database is down; past this the oldest are logged whole and dropped.
        self.backlog_limit = backlog_limit
        #: Pause between write rounds during an outage (the store itself retries within each round).
        self.outage_pause = outage_pause
        #: Batches written so far (one transaction each, unless a bad event forced one per event).
        self.batches_written = 0
        #: Callers queued by the dialplan's fallback, without our routing (``dialplan_fallback``).
        self.fallbacks = 0
        #: Whether the live picture follows Asterisk now: False from a lost link (or Asterisk's Shutdown)
        #: until the resync after the next connect. The consoles show "not known" meanwhile.
        self.link_up = False
        #: Monotonic time each live entry was last reported; a resync only drops entries older than its query.
        self._touched: dict[tuple[str, object], float] = {}
        self._listeners: list[Listener] = []
        #: Batches not started yet, oldest first; the writer takes them one at a time.
        self._open: deque[_Batch] = deque()
        self._queued = 0
        self._writing: _Batch | None = None
        self._writer: asyncio.Task[None] | None = None
        self._last: asyncio.Future[None] | None = None
        self._handlers: dict[str, Callable[[Message], None]] = {
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
            "shutdown": lambda _m: self.link_down(),
        }

    @property
    def backlog(self) -> int:
        """Events handled (in the live picture) but not yet written to the timeline."""
        return self._queued + (len(self._writing.writes) if self._writing is not None else 0)

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
        try:
            handler(message)
        except (KeyError, ValueError, TypeError) as exc:
            uniqueid = str(message.get("Uniqueid", ""))
            with structlog.contextvars.bound_contextvars(uniqueid=uniqueid or None, ami_event=name):
                # The keys, not the message: its values carry callers' numbers and names.
                log.warning("tracker.malformed_event", error=str(exc), keys=sorted(message)[:30])

    def _record(
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

        self._enqueue(EventWrite(uniqueid, kind, utcnow(), "ami", data, update, create), after)

    # -- batched writes --------------------------------------------------------------------------

    def _enqueue(self, write: EventWrite, after: AfterWrite | None = None) -> None:
        """Add to the newest batch not being written yet; start the writer if it is idle."""
        batch = self._open[-1] if self._open and len(self._open[-1].writes) < self.batch_size else None
        if batch is None:
            batch = _Batch(asyncio.get_running_loop().create_future())
            self._open.append(batch)
            self._last = batch.done
        prior = self.pending.latest(write.uniqueid)
        if prior is not None and prior is not batch.done:
            batch.waits_for.add(prior)
        self.pending.track(write.uniqueid, batch.done)
        batch.writes.append((write, after))
        self._queued += 1
        if self._queued > self.backlog_limit:
            self._drop_oldest()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_batches(), name="tracker-writes")

    def _drop_oldest(self) -> None:
        """The database has been gone for long: keep memory bounded, and the dropped event in the log."""
        oldest = self._open[0]
        write, _ = oldest.writes.pop(0)
        self._queued -= 1
        _log_lost(write, "backlog full")
        if not oldest.writes:
            self._open.popleft()
            oldest.done.set_result(None)

    async def _write_batches(self) -> None:
        """The one writer: batches in order, each after the other writes its calls wait for."""
        while self._open:
            batch = self._writing = self._open.popleft()
            self._queued -= len(batch.writes)
            try:
                if batch.waits_for:
                    await asyncio.wait(batch.waits_for, timeout=5.0)
                await self._write(batch)
            except Exception:
                # A bug here must not stop the timeline for good; the events are in the log.
                log.exception("tracker.batch_failed")
                for write, _ in batch.writes:
                    _log_lost(write, "batch failed")
            finally:
                self._writing = None
                if not batch.done.done():
                    batch.done.set_result(None)

    async def _write(self, batch: _Batch) -> None:
        writes = [w for w, _ in batch.writes]
        try:
            ids = await self._commit(writes)
        except Exception:
            # Not an outage (that is waited out): bad data or a bug in an update. One such event must
            # not take the others of its batch with it, so each is tried on its own.
            if len(writes) > 1:
                log.warning("tracker.batch_split", events=len(writes))
            ids = [await self._commit_alone(write) for write in writes]
        for (write, after), call_id in zip(batch.writes, ids, strict=True):
            if call_id is None:
                continue  # known_only and not a call of ours
            log.info("call." + write.kind, call_id=call_id, uniqueid=write.uniqueid, **write.data)
            if after is not None:
                after()

    async def _commit(self, writes: list[EventWrite]) -> list[str | None]:
        """One transaction; a database outage is waited out, round after round, never dropped."""
        while True:
            try:
                ids = await self.store.record_events(writes)
            except StoreUnavailable as exc:
                log.error("tracker.writes_delayed", error=str(exc), events=len(writes), queued=self._queued)
                await asyncio.sleep(self.outage_pause)
                continue
            self.batches_written += 1
            return ids

    async def _commit_alone(self, write: EventWrite) -> str | None:
        try:
            return (await self._commit([write]))[0]
        except Exception:
            log.exception("tracker.event_failed", uniqueid=write.uniqueid, kind=write.kind)
            _log_lost(write, "write failed")
            return None

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event handled so far is written; False if ``timeout`` came first."""
        last = self._last
        if last is None or last.done():
            return True
        done, _ = await asyncio.wait({last}, timeout=timeout)
        return bool(done)

    async def close(self, timeout: float = 10.0) -> None:
        """Write what is buffered (bounded: the database may be down), then stop the writer.

        The composition root calls it when the AMI client stops, before the store closes. What could not
        be written is logged whole.
        """
        if await self.flush(timeout):
            return
        writer = self._writer
        left = [w for b in ([self._writing] if self._writing else []) + list(self._open) for w, _ in b.writes]
        self._open.clear()
        self._queued = 0
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        for write in left:
            _log_lost(write, "shutdown")

    # -- queue callers ---------------------------------------------------------------------------

    def _on_join(self, m: Message) -> None:
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

        data: dict[str, Any] = {"queue": queue, "position": position, "count": _int(m.get("Count"))}
        if dialplan_fallback(m):
            # Queued by the dialplan's fallback (the app did not route this call): counted for /metrics.
            self.fallbacks += 1
            data["fallback"] = True
        self._record(m, "queued", data, update)

    def _on_leave(self, m: Message) -> None:
        uniqueid = str(m["Uniqueid"])
        self._drop("waiting", self.live.waiting, uniqueid)
        self._publish("left", {"uniqueid": uniqueid})
        self._record(m, "left_queue", {"queue": m.get("Queue", ""), "position": _int(m.get("Position"))})

    def _on_abandon(self, m: Message) -> None:
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
        # Wallboards re-read today's figures on this publication: it follows the write.
        self._record(
            m, "abandoned", data, update, after=lambda: self._publish("abandoned", {"uniqueid": uniqueid, **data})
        )

    # -- call-takers ringing and answering -------------------------------------------------------

    def _on_agent_called(self, m: Message) -> None:
        member = str(m.get("MemberName") or m.get("Interface", ""))

        def update(call: Call) -> None:
            if call.status == "queued":
                call.status = "ringing"

        ringing = {"uniqueid": m["Uniqueid"], "member": member, "interface": m.get("Interface", "")}
        self._record(
            m,
            "ringing",
            {"member": member, "interface": m.get("Interface", "")},
            update,
            after=lambda: self._publish("ringing", ringing),
        )

    def _on_ring_no_answer(self, m: Message) -> None:
        member = str(m.get("MemberName") or m.get("Interface", ""))
        ring_ms = _seconds(m.get("RingTime"))  # milliseconds here, unlike AgentConnect's seconds
        ring = None if ring_ms is None else ring_ms / 1000

        def update(call: Call) -> None:
            if call.status == "ringing":
                call.status = "queued"

        self._record(m, "ring_no_answer", {"member": member, "ring_seconds": ring}, update)

    def _on_agent_connect(self, m: Message) -> None:
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
        self._record(m, "answered", data, update)

    def _on_agent_complete(self, m: Message) -> None:
        if not m.get("Uniqueid"):
            # Asterisk leaves out the caller's channel snapshot when that channel is already gone. The
            # call-taker's leg still says which call it was: its Linkedid is the caller's Uniqueid (the
            # caller's channel started the call), its channel name is the one AgentConnect reported,
            # and failing both, an interface that has exactly one connected call (ringinuse=no).
            linked, dest = str(m.get("DestLinkedid", "")), str(m.get("DestChannel", ""))
            interface = str(m.get("Interface", ""))
            found = [linked] if linked in self.live.connected else []
            found = found or [u for u, (_, taker) in self.live.channels.items() if dest and taker == dest]
            found = found or [u for u, i in self.live.connected.items() if i == interface]
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
        self._record(
            m,
            "transferred" if reason == "transfer" else "completed",
            data,
            update,
            after=lambda: self._publish("completed", {"uniqueid": uniqueid, **data}),
        )

    def _on_agent_dump(self, m: Message) -> None:
        self._record(m, "agent_dump", {"member": m.get("MemberName", "")})

    def _on_transfer(self, m: Message) -> None:
        # Transfer events name the transferer's channel; only record calls we already follow.
        for key in ("TransfereeUniqueid", "OrigTransfererUniqueid"):
            uniqueid = str(m.get(key, ""))
            if uniqueid and (uniqueid in self.live.connected or uniqueid in self.live.waiting):
                data = {"result": m.get("Result", ""), "extension": m.get("Extension", "")}
                self._enqueue(EventWrite(uniqueid, "transferred", utcnow(), data=data))

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

        data = {"queue_status": status, "dial": m.get("Dial", ""), "round": _int(m.get("Round"), 1)}
        self._record(m, "overflow", data, update)

    def _on_hangup(self, m: Message) -> None:
        uniqueid = str(m.get("Uniqueid", ""))
        followed = uniqueid in self.live.waiting or uniqueid in self.live.connected
        self._drop("waiting", self.live.waiting, uniqueid)
        self._drop("connected", self.live.connected, uniqueid)
        self.live.channels.pop(uniqueid, None)
        if not uniqueid:
            return
        now = utcnow()
        cause = _int(m.get("Cause"), -1)

        def update(call: Call) -> None:
            close_call(call, now)
            call.hangup_cause = cause

        # Hangups of call-taker legs and unrelated channels are not calls of ours (the batch skips a
        # channel it finds no call for); a caller that hangs up before reaching the queue is reported
        # by the dialplan's hangup handler.
        self._record(
            m,
            "hangup",
            {"cause": cause, "cause_text": m.get("Cause-txt", "")},
            update,
            after=lambda: self._publish("hangup", {"uniqueid": uniqueid}),
            known_only=not followed,
        )

    # -- call-taker presence as Asterisk reports it ----------------------------------------------

    def _on_member(self, m: Message) -> None:
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
            paused=is_true(m["Paused"]) if "Paused" in m else old.paused,
            reason=str(m.get("PausedReason") or m.get("Reason") or "") if "Paused" in m else old.reason,
            in_call=is_true(m["InCall"]) if "InCall" in m else old.in_call,
        )
        self.live.members[key] = member
        self._touch("member", key)
        self._publish("member", member_json(member))

    def _on_member_removed(self, m: Message) -> None:
        key = (str(m["Queue"]), str(m.get("Interface", "")))
        member = self._drop("member", self.live.members, key)
        if member is not None:
            self._publish("member_removed", member_json(member))

    # -- resynchronisation -----------------------------------------------------------------------

    def link_down(self) -> None:
        """The AMI link is gone (or Asterisk announced its shutdown): what the picture shows is not known
        to be true any more. Consoles are told at once; the next resync makes the picture true again."""
        if not self.link_up:
            return
        self.link_up = False
        log.warning("tracker.link_down", waiting=len(self.live.waiting), members=len(self.live.members))
        self._publish("link", {"up": False})

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

            self._record(e, "resync_waiting", {"queue": queue, "position": _int(e.get("Position"))}, update)
        present = {(str(mm.get("Queue", "")), str(mm.get("Location") or mm.get("Interface", ""))) for mm in members}
        self._prune("member", self.live.members, present, asked_mono)
        for mm in members:
            mm_dict = dict(mm)
            mm_dict.setdefault("Interface", mm.get("Location", ""))
            mm_dict.setdefault("MemberName", mm.get("Name", ""))
            key = (str(mm.get("Queue", "")), str(mm_dict["Interface"]))
            if self._stale("member", key, asked_mono):
                with contextlib.suppress(KeyError, ValueError):
                    self._on_member(Message(mm_dict))
        self._prune("connected", self.live.connected, alive, asked_mono)
        for gone in [u for u in self.live.channels if u not in self.live.connected]:
            del self.live.channels[gone]
        # Open calls are read once everything handled so far is written: a call whose end is still
        # in a batch must not pass for one that ended unobserved. An outage fails the read below.
        await self.flush(timeout=self.store.retry_for)
        for call in await self.store.open_calls():
            if call.uniqueid in alive or call.arrived_at >= asked_at - timedelta(seconds=1):
                continue
            self._enqueue(
                EventWrite(
                    call.uniqueid,
                    "ended_unobserved",
                    now,
                    source="resync",
                    data={"last_status": call.status},
                    update=lambda c: _ended_unobserved(c, now),
                )
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
        self.link_up = True
        self._publish("resync", {"waiting": len(self.live.waiting), "members": len(self.live.members)})


def _log_lost(write: EventWrite, reason: str) -> None:
    """An event the timeline will not get: the log keeps all of it, for a person to replay."""
    log.error(
        "tracker.event_lost",
        reason=reason,
        uniqueid=write.uniqueid,
        kind=write.kind,
        at=write.at.isoformat(),
        source=write.source,
        data=dict(write.data),
    )


def _ended_unobserved(call: Call, now: datetime) -> None:
    """Gone from Asterisk while we were not listening: ended, outcome unknown (not "abandoned")."""
    call.ended_at = call.ended_at or now
    if call.status not in FINAL:
        call.status = "ended"


def dialplan_fallback(m: Message) -> bool:
    """Whether the channel carries ``CC_FALLBACK=1``, the dialplan's mark of a call it queued without our
    routing. Asterisk adds ``ChanVariable: CC_FALLBACK=…`` to the channel's AMI events when manager.conf
    lists it in ``channelvars`` (the test PBX does; README says so for a centre's own Asterisk)."""
    found = m.get("ChanVariable")
    values = found if isinstance(found, list) else [found]
    return any(str(v).strip() == "CC_FALLBACK=1" for v in values if v is not None)


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


async def resync_from_ami(
    tracker: QueueTracker, ami: Any, *, restore: Callable[[list[Message]], Awaitable[Any]] | None = None
) -> None:
    """After every (re)connect: ask Asterisk for queue entries, members and live channels.

    ``restore`` gets the members Asterisk reports before anything else happens (the presence puts the
    call-takers back that a restarted Asterisk forgot); the member events its actions cause reach the
    live picture after the snapshot, so the snapshot does not undo them.
    """
    asked_at = utcnow()
    asked_mono = asyncio.get_running_loop().time()
    status = await ami.action({"Action": "QueueStatus"}, as_list=True, timeout=10)
    status_list = status if isinstance(status, list) else [status]
    entries = [m for m in status_list if str(m.get("Event", "")).lower() == "queueentry"]
    members = [m for m in status_list if str(m.get("Event", "")).lower() == "queuemember"]
    if restore is not None:
        await restore(members)
    channels = await ami.action({"Action": "CoreShowChannels"}, as_list=True, timeout=10)
    channel_list = channels if isinstance(channels, list) else [channels]
    live = [m for m in channel_list if str(m.get("Event", "")).lower() == "coreshowchannel"]
    await tracker.resync(entries, members, live, asked_at, asked_mono)
