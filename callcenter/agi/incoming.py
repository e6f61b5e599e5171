"""AGI route ``incoming``: the first thing our server does for a 112 call, called as
``AGI(agi://…/incoming,${CC_ARRIVED},${CC_DIALED})`` after the greeting.

It decides the queue priority and language from the caller's history and records the call, then
sets ``CC_ROUTED=1`` as its very last command. The dialplan queues the caller whatever happens
here; the marker only tells it that our values are complete. The caller never waits on the
database: the abuse flags are indexed in memory and the call's record is written in the background.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from callcenter.agi.protocol import AgiError
from callcenter.agi.server import AgiSession
from callcenter.config import NumbersConfig, QueueConfig
from callcenter.forms.phone import CallerNumber, normalize
from callcenter.logs import ref
from callcenter.store import Store, new_call_id, utcnow
from callcenter.store.pending import PendingWrites
from callcenter.tasks import Background

log = structlog.get_logger("callcenter.agi.incoming")

ROUTE = "incoming"
ROUTED_MARKER = "CC_ROUTED"
PRANK_REMINDER = "callcenter/cc-prank-reminder"


@dataclass(frozen=True)
class Routing:
    priority: int
    language: str
    reminder: bool
    abuse_count: int


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


class IncomingRoute:
    def __init__(
        self,
        store: Store,
        background: Background,
        pending: PendingWrites,
        numbers: NumbersConfig,
        queue: QueueConfig,
    ) -> None:
        self.store = store
        self.background = background
        self.pending = pending
        self.numbers = numbers
        self.queue = queue

    async def __call__(self, session: AgiSession) -> None:
        now = utcnow()
        env = session.env
        args = session.args
        caller = normalize(env.get("agi_callerid"), self.numbers.default_region)
        arrived = arrival_time(args[0] if args else None, now)
        dialed = "".join(ch for ch in (args[1] if len(args) > 1 else env.get("agi_extension", "")) if ch.isdigit())
        call_id = new_call_id()
        # A keyed reference, not the number: the log may correlate a caller's calls, never name them.
        structlog.contextvars.bind_contextvars(call_id=call_id, caller_ref=ref(caller.e164 or caller.raw) or "withheld")

        # Routing reads nothing from the database: the abuse flags are indexed in memory.
        abuse = 0
        if caller.key is not None:
            abuse = self.store.flags.count(caller.key, now - timedelta(days=self.queue.prank_window_days))
        routing = decide(abuse, self.queue)
        # The write runs beside the remaining AGI commands and after the session: the caller never
        # waits for it, and the tracker's first event about this call waits for it instead.
        write = self.background.spawn(
            self._record(session, call_id, caller, arrived, dialed, routing), name="open-call"
        )
        self.pending.track(session.uniqueid, write)

        await session.set_variable("CC_CALL_ID", call_id)
        await session.set_variable("CC_PRIO", str(routing.priority))
        await session.set_variable("CC_LANG", routing.language)
        if routing.reminder:
            # The reminder holds the session for seconds: let the call's record land first (bounded),
            # so a crash during the prompt cannot take the record with it.
            await asyncio.wait({write}, timeout=1.0)
            log.info("call.reminder", abuse_count=routing.abuse_count)
            try:
                await session.stream_file(PRANK_REMINDER)
            except AgiError as exc:
                # A missing prompt must not keep the caller from the queue.
                log.warning("agi.reminder_failed", error=str(exc))
        await session.set_variable(ROUTED_MARKER, "1")
        log.info(
            "call.routed",
            priority=routing.priority,
            language=routing.language,
            abuse_count=routing.abuse_count,
        )

    async def _record(
        self,
        session: AgiSession,
        call_id: str,
        caller: CallerNumber,
        arrived: datetime,
        dialed: str,
        routing: Routing,
    ) -> str:
        routed = {
            "priority": routing.priority,
            "language": routing.language,
            "abuse_count": routing.abuse_count,
            "reminder": routing.reminder,
        }
        return await self.store.open_call(
            uniqueid=session.uniqueid,
            call_id=call_id,
            arrived_at=arrived,
            routed_by="agi",
            channel=session.env.get("agi_channel") or None,
            caller_raw=caller.raw or None,
            caller_number=caller.e164,
            dialed=dialed or None,
            queue_priority=routing.priority,
            language=routing.language,
            events=[
                ("arrived", arrived, {"dialed": dialed, "withheld": caller.withheld}),
                ("routed", utcnow(), routed),
            ],
        )
