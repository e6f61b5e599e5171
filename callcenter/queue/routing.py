"""Routing of a 112 caller from AMI, off the caller's path: the dialplan never waits for us.

The dialplan (``[callcenter-emergency]``) announces the call with ``UserEvent(CallcenterArrival)``
right after answering, plays the greeting, and then queues at once with whatever is in ``CC_ROUTE``
by then, or with its own defaults. The greeting (3.7 s for the packaged prompt) is our window: on the arrival event this
router counts the caller's abuse flags (in memory), decides priority, language and the anti-prank
reminder (``store/arrivals.py``), records the call in the background and writes the decision onto the
channel with one AMI ``Setvar`` of ``CC_ROUTE`` = ``<priority>/<language>/<reminder 0|1>/<node>``. One
variable, so the dialplan sees all of the decision or none of it.

Several app nodes (docs/nodes.md, "Which node routes a 112 call"): every node follows AMI, so every
node hears the arrival and routes it, from the same flags (shared through the store) to the same
decision; each writes ``CC_ROUTE`` with its own name as ``<node>``, the last write wins, and the
dialplan reports the name it read as ``RoutedBy`` in ``UserEvent(CallcenterQueue)``. Nobody waits for
anybody: a killed or frozen node simply does not write, and the survivor's value is there. The call's
row and its ``arrived``/``routed`` entries are written once whoever writes first (``Calls.open_call``).

A frozen, dead or disconnected app therefore costs a caller nothing but the refinement: they are
queued with defaults at the end of the greeting, and the dialplan says so in
``UserEvent(CallcenterQueue)`` (``Fallback: 1``). If we did decide but too late (a loop that was
blocked during the greeting and caught up), the caller's entry is corrected with
``QueueChangePriorityCaller`` when their ``QueueCallerJoin`` arrives; the reminder is not played then
(it would mean pulling them out of the queue).

AMI rights used: ``Setvar`` (write ``call``), ``QueueChangePriorityCaller`` (write ``agent``), and
reading ``user`` events. Nothing here needs to write ``system``, ``command`` or ``config``
(``docs/deploy.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from panoramisk.message import Message

from callcenter.logs import ref
from callcenter.store.arrivals import Arrivals, Routing

log = structlog.get_logger("callcenter.routing")

#: ``UserEvent`` names the dialplan emits (AMI lower-cases nothing; we compare lower-cased).
ARRIVAL_EVENT = "CallcenterArrival"
QUEUE_EVENT = "CallcenterQueue"
#: The channel variable the dialplan reads after the greeting.
ROUTE_VARIABLE = "CC_ROUTE"
#: Decisions kept for calls not yet queued; a call that never queues (hung up in the greeting) is
#: forgotten on its Hangup, and past this many the oldest go (bounded memory whatever happens).
MAX_OPEN = 10_000


class AmiActions(Protocol):
    async def action(self, action: dict[str, str], *, as_list: bool = False, timeout: float | None = None) -> Any: ...


def route_value(routing: Routing, node: str = "") -> str:
    """``CC_ROUTE`` as the dialplan cuts it: ``<priority>/<language>/<reminder>/<node>`` (the node that
    wrote it: the dialplan's ``RoutedBy``)."""
    return f"{routing.priority}/{routing.language}/{1 if routing.reminder else 0}/{node}"


@dataclass
class RoutingStats:
    """Counters for health output and metrics; one event loop, so plain fields."""

    #: Arrival events handled (calls we decided for).
    arrivals: int = 0
    #: ``CC_ROUTE`` written on the channel (AMI answered).
    applied: int = 0
    #: ``Setvar`` refused or unanswered (the channel was gone, the link dropped).
    apply_failed: int = 0
    #: Callers the dialplan queued with our route (``CallcenterQueue``, ``Fallback: 0``). Those it queued
    #: with its defaults are the tracker's ``fallbacks`` (``/metrics``), from ``CC_FALLBACK`` on their events.
    queued_routed: int = 0
    #: Of those, the ones whose ``CC_ROUTE`` this node wrote (``RoutedBy`` is this node's name).
    queued_ours: int = 0
    #: Of those fallbacks, the ones we had decided for, too late for the dialplan.
    late: int = 0
    #: Late ones moved to the decided priority with QueueChangePriorityCaller.
    reprioritized: int = 0


@dataclass
class _Open:
    routing: Routing
    channel: str
    #: The dialplan queued with its defaults: correct the priority when the caller joins.
    fix: int | None = None


class CallRouter:
    def __init__(self, arrivals: Arrivals, ami: AmiActions, *, node: str = "") -> None:
        self.arrivals = arrivals
        self.ami = ami
        #: This node's name, written with every route (``[store] node``; letters, digits, ``.``, ``_``).
        self.node = node
        self.stats = RoutingStats()
        self._open: dict[str, _Open] = {}

    async def handle(self, message: Message) -> None:
        """The AMI fan-out calls this for every event, in Asterisk's order; nothing here waits on I/O."""
        name = str(message.get("Event", "")).lower()
        if name == "userevent":
            kind = str(message.get("UserEvent", "")).lower()
            if kind == ARRIVAL_EVENT.lower():
                self._on_arrival(message)
            elif kind == QUEUE_EVENT.lower():
                self._on_queue(message)
        elif name == "queuecallerjoin":
            self._on_join(message)
        elif name == "hangup":
            self._open.pop(str(message.get("Uniqueid", "")), None)

    def _on_arrival(self, m: Message) -> None:
        uniqueid, channel = str(m.get("Uniqueid", "")), str(m.get("Channel", ""))
        if not uniqueid or not channel:
            # Which part is missing, never the message itself (it carries the caller id).
            log.warning("routing.malformed_arrival", uniqueid=uniqueid or None, has_channel=bool(channel))
            return
        arrival = self.arrivals.arrive(
            uniqueid=uniqueid,
            channel=channel,
            linkedid=str(m.get("Linkedid", "")) or None,
            caller_id=str(m.get("CallerIDNum", "")),
            arrived=str(m.get("Arrived", "")),
            dialed=str(m.get("Dialed", "")),
            routed_by="app",
            source="ami",
        )
        routing = arrival.routing
        self.stats.arrivals += 1
        if len(self._open) >= MAX_OPEN:
            self._open.pop(next(iter(self._open)))
        self._open[uniqueid] = _Open(routing, channel)
        caller_ref = ref(arrival.caller.e164 or arrival.caller.raw) or "withheld"
        with structlog.contextvars.bound_contextvars(call_id=arrival.call_id, uniqueid=uniqueid, caller_ref=caller_ref):
            self.arrivals.background.spawn(self._apply(uniqueid, channel, routing, arrival.call_id), name="route-call")
            log.info(
                "call.routed",
                priority=routing.priority,
                language=routing.language,
                abuse_count=routing.abuse_count,
                reminder=routing.reminder,
            )

    async def _apply(self, uniqueid: str, channel: str, routing: Routing, call_id: str) -> None:
        value = route_value(routing, self.node)
        try:
            await self.ami.action({"Action": "Setvar", "Channel": channel, "Variable": ROUTE_VARIABLE, "Value": value})
        except Exception as exc:  # the dialplan queues with its defaults; nothing else to do
            self.stats.apply_failed += 1
            log.warning("routing.apply_failed", call_id=call_id, uniqueid=uniqueid, error=str(exc))
            return
        self.stats.applied += 1

    def _on_queue(self, m: Message) -> None:
        """The dialplan is about to queue the caller, with our route or (``Fallback: 1``) its defaults."""
        uniqueid = str(m.get("Uniqueid", ""))
        if str(m.get("Fallback", "")).strip() != "1":
            self.stats.queued_routed += 1
            routed_by = str(m.get("RoutedBy", ""))
            if routed_by and routed_by == self.node:
                self.stats.queued_ours += 1
            log.info("routing.queued", uniqueid=uniqueid, routed_by=routed_by or None, ours=routed_by == self.node)
            return
        entry = self._open.get(uniqueid)
        try:
            applied = int(str(m.get("Priority", "")))
        except ValueError:
            applied = None
        if entry is not None:
            self.stats.late += 1
            if applied != entry.routing.priority:
                entry.fix = entry.routing.priority
        log.warning("routing.fallback", uniqueid=uniqueid, decided=entry is not None, priority=applied)

    def _on_join(self, m: Message) -> None:
        uniqueid = str(m.get("Uniqueid", ""))
        entry = self._open.pop(uniqueid, None)
        if entry is None or entry.fix is None:
            return
        self.arrivals.background.spawn(
            self._reprioritize(uniqueid, str(m.get("Queue", "")), str(m.get("Channel", entry.channel)), entry.fix),
            name="reprioritize-call",
        )

    async def _reprioritize(self, uniqueid: str, queue: str, channel: str, priority: int) -> None:
        try:
            await self.ami.action(
                {"Action": "QueueChangePriorityCaller", "Queue": queue, "Caller": channel, "Priority": str(priority)}
            )
        except Exception as exc:  # the caller left the queue meanwhile, or the link dropped: they stay queued
            log.warning("routing.reprioritize_failed", uniqueid=uniqueid, error=str(exc))
            return
        self.stats.reprioritized += 1
        log.info("call.reprioritized", uniqueid=uniqueid, priority=priority)
