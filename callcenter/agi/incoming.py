"""AGI route ``incoming``: the first thing our server does for a 112 call, called as
``AGI(agi://…/incoming,${CC_ARRIVED},${CC_DIALED})`` after the greeting.

It decides the queue priority and language from the caller's history and records the call, then
sets ``CC_ROUTED=1`` as its very last command. The dialplan queues the caller whatever happens
here; the marker only tells it that our values are complete. Every database step is bounded, so a
slow database costs the caller at most ``db_wait`` seconds and never the call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from callcenter.agi.protocol import AgiError
from callcenter.agi.server import AgiSession
from callcenter.config import NumbersConfig, QueueConfig
from callcenter.forms.phone import CallerNumber, normalize
from callcenter.store import CallerHistory, Store, utcnow
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


def decide(history: CallerHistory | None, queue: QueueConfig, now: datetime) -> Routing:
    """Repeat pranksters wait behind other callers and hear a reminder; they are never refused."""
    abuse = 0 if history is None else history.abuse_count(now - timedelta(days=queue.prank_window_days))
    flagged = abuse >= queue.prank_threshold
    return Routing(
        priority=queue.prank_priority if flagged else queue.default_priority,
        language=queue.language,
        reminder=flagged and queue.prank_reminder,
        abuse_count=abuse,
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
        numbers: NumbersConfig,
        queue: QueueConfig,
        *,
        db_wait: float = 1.0,
    ) -> None:
        self.store = store
        self.background = background
        self.numbers = numbers
        self.queue = queue
        self.db_wait = db_wait

    async def __call__(self, session: AgiSession) -> None:
        now = utcnow()
        env = session.env
        args = session.args
        caller = normalize(env.get("agi_callerid"), self.numbers.default_region)
        arrived = arrival_time(args[0] if args else None, now)
        dialed = "".join(ch for ch in (args[1] if len(args) > 1 else env.get("agi_extension", "")) if ch.isdigit())
        structlog.contextvars.bind_contextvars(caller=caller.e164 or caller.raw or "withheld")

        history: CallerHistory | None = None
        if caller.key is not None:
            history = await self.background.bounded(
                self.store.caller_history(caller.key), "caller-history", self.db_wait
            )
        routing = decide(history, self.queue, now)
        call_id = await self.background.bounded(
            self._record(session, caller, arrived, dialed, routing, history), "open-call", self.db_wait
        )
        if call_id is not None:
            structlog.contextvars.bind_contextvars(call_id=call_id)
            await session.set_variable("CC_CALL_ID", call_id)
        await session.set_variable("CC_PRIO", str(routing.priority))
        await session.set_variable("CC_LANG", routing.language)
        if routing.reminder:
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
            previous_calls=history.previous_calls if history else None,
        )

    async def _record(
        self,
        session: AgiSession,
        caller: CallerNumber,
        arrived: datetime,
        dialed: str,
        routing: Routing,
        history: CallerHistory | None,
    ) -> str:
        uniqueid = session.uniqueid
        call_id = await self.store.open_call(
            uniqueid=uniqueid,
            arrived_at=arrived,
            routed_by="agi",
            linkedid=session.env.get("agi_linkedid") or None,
            channel=session.env.get("agi_channel") or None,
            caller_raw=caller.raw or None,
            caller_number=caller.e164,
            dialed=dialed or None,
            queue_priority=routing.priority,
            language=routing.language,
        )
        await self.store.record_event(
            uniqueid, "arrived", source="agi", at=arrived, data={"dialed": dialed, "withheld": caller.withheld}
        )
        await self.store.record_event(
            uniqueid,
            "routed",
            source="agi",
            data={
                "priority": routing.priority,
                "language": routing.language,
                "abuse_count": routing.abuse_count,
                "previous_calls": history.previous_calls if history else 0,
                "reminder": routing.reminder,
            },
        )
        return call_id
