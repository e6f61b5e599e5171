"""The arrival of a 112 call: the routing policy, its decision from the in-memory flag index, and the
call's first write.

One place for whoever learns of the call first: the AMI router (``queue/routing.py``, from the
dialplan's ``UserEvent(CallcenterArrival)``) and the transition FastAGI route (``agi/incoming.py``).
The decision reads nothing from the database (the abuse flags are indexed in memory); the write runs
in the background and is registered in ``PendingWrites``, so the first AMI event about the call
lands on the same row after it and nobody waits for it.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from callcenter.config import NumbersConfig, QueueConfig
from callcenter.forms.phone import CallerNumber, normalize
from callcenter.store.calls import Calls
from callcenter.store.engine import new_call_id, utcnow
from callcenter.store.pending import PendingWrites
from callcenter.tasks import Background


@dataclass(frozen=True)
class Routing:
    priority: int
    language: str
    reminder: bool
    abuse_count: int

    def as_data(self) -> dict[str, object]:
        """The decision as the call's ``routed`` timeline entry stores it."""
        return {
            "priority": self.priority,
            "language": self.language,
            "abuse_count": self.abuse_count,
            "reminder": self.reminder,
        }


def decide(abuse_count: int, queue: QueueConfig) -> Routing:
    """Repeat pranksters wait behind other callers and hear a reminder; they are never refused."""
    flagged = abuse_count >= queue.prank_threshold
    return Routing(
        priority=queue.prank_priority if flagged else queue.default_priority,
        language=queue.language,
        reminder=flagged and queue.prank_reminder,
        abuse_count=abuse_count,
    )


def arrival_time(arg: str | None, fallback: datetime) -> datetime:
    """``${EPOCH}`` from the dialplan, taken before the greeting; our own clock if it is missing or odd."""
    try:
        value = datetime.fromtimestamp(int(arg or ""), UTC)
    except (ValueError, OverflowError, OSError):
        return fallback
    return value if abs((fallback - value).total_seconds()) < 3600 else fallback


#: Namespace of the call ids derived from Asterisk's uniqueid (:func:`call_id_for`).
CALL_ID_NAMESPACE = uuid.UUID("6d1a3f0e-1120-4c11-9a12-000000000112")


def call_id_for(uniqueid: str) -> str:
    """The call's id, derived from its channel's uniqueid: every node that hears the arrival names the
    call alike, so their logs agree and whichever writes first makes the one row the others fill in."""
    return uuid.uuid5(CALL_ID_NAMESPACE, uniqueid).hex


def digits(value: str) -> str:
    """Only the digits of a dialled number (the dialplan filtered it already; this is defence in depth)."""
    return "".join(ch for ch in value if ch.isdigit())


@dataclass(frozen=True)
class Arrival:
    call_id: str
    caller: CallerNumber
    routing: Routing
    #: The call's first write (row + ``arrived`` + ``routed``), running in the background.
    write: asyncio.Task[str]


class Arrivals:
    def __init__(
        self,
        calls: Calls,
        background: Background,
        pending: PendingWrites,
        numbers: NumbersConfig,
        queue: QueueConfig,
    ) -> None:
        self.calls = calls
        self.background = background
        self.pending = pending
        self.numbers = numbers
        self.queue = queue

    def arrive(
        self,
        *,
        uniqueid: str,
        channel: str | None,
        caller_id: str | None,
        arrived: str | None,
        dialed: str,
        routed_by: str,
        source: str,
        linkedid: str | None = None,
    ) -> Arrival:
        """Decide at once; start the write. ``arrived`` is the dialplan's ``${EPOCH}``."""
        now = utcnow()
        caller = normalize(caller_id, self.numbers.default_region)
        abuse = 0
        if caller.key is not None:
            abuse = self.calls.store.flags.count(caller.key, now - timedelta(days=self.queue.prank_window_days))
        routing = decide(abuse, self.queue)
        call_id = call_id_for(uniqueid) if uniqueid else new_call_id()
        record = self._open(
            uniqueid=uniqueid,
            call_id=call_id,
            channel=channel,
            linkedid=linkedid,
            caller=caller,
            arrived=arrival_time(arrived, now),
            dialed=digits(dialed),
            routing=routing,
            routed_by=routed_by,
            source=source,
        )
        with structlog.contextvars.bound_contextvars(call_id=call_id):
            write = self.background.spawn(record, name="open-call")
        self.pending.track(uniqueid, write)
        return Arrival(call_id, caller, routing, write)

    async def _open(
        self,
        *,
        uniqueid: str,
        call_id: str,
        channel: str | None,
        linkedid: str | None,
        caller: CallerNumber,
        arrived: datetime,
        dialed: str,
        routing: Routing,
        routed_by: str,
        source: str,
    ) -> str:
        return await self.calls.open_call(
            uniqueid=uniqueid,
            call_id=call_id,
            arrived_at=arrived,
            routed_by=routed_by,
            channel=channel,
            linkedid=linkedid,
            caller_raw=caller.raw or None,
            caller_number=caller.e164,
            dialed=dialed or None,
            queue_priority=routing.priority,
            language=routing.language,
            events=[
                ("arrived", arrived, {"dialed": dialed, "withheld": caller.withheld}),
                ("routed", utcnow(), routing.as_data()),
            ],
            source=source,
        )
