"""AGI route ``incoming``, kept for one release for dialplans from before the AMI routing.

The packaged dialplan no longer calls it: a 112 caller must not wait on us at all, and res_agi has
no read timeout, so a frozen app held a caller in ``AGI(agi://…/incoming,…)`` for as long as it was
frozen (``docs/never-wait.md``). The app now routes from AMI while the greeting plays
(``queue/routing.py``). A centre that upgrades the app before its copy of the dialplan keeps
routing through this route meanwhile, with the same policy (``store/arrivals.py``) and the same call
record; ``bench/p2_agi.py`` measures the FastAGI server with it.

It decides the queue priority and language from the caller's history and records the call, then
sets ``CC_ROUTED=1`` as its very last command; the old dialplan queues with defaults without it.
"""

from __future__ import annotations

import asyncio

import structlog

from callcenter.agi.protocol import AgiError
from callcenter.agi.server import AgiSession
from callcenter.logs import ref
from callcenter.store.arrivals import Arrivals

log = structlog.get_logger("callcenter.agi.incoming")

ROUTE = "incoming"
ROUTED_MARKER = "CC_ROUTED"
PRANK_REMINDER = "callcenter/cc-prank-reminder"


class IncomingRoute:
    def __init__(self, arrivals: Arrivals) -> None:
        self.arrivals = arrivals

    async def __call__(self, session: AgiSession) -> None:
        env, args = session.env, session.args
        # The decision reads nothing from the database; the write runs beside the remaining AGI
        # commands and after the session: the caller never waits for it.
        arrival = self.arrivals.arrive(
            uniqueid=session.uniqueid,
            channel=env.get("agi_channel") or None,
            caller_id=env.get("agi_callerid"),
            arrived=args[0] if args else None,
            dialed=args[1] if len(args) > 1 else env.get("agi_extension", ""),
            routed_by="agi",
            source="agi",
        )
        call_id, routing, write = arrival.call_id, arrival.routing, arrival.write
        # A keyed reference, not the number: the log may correlate a caller's calls, never name them.
        caller = arrival.caller
        structlog.contextvars.bind_contextvars(call_id=call_id, caller_ref=ref(caller.e164 or caller.raw) or "withheld")

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
