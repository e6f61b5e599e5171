"""AGI route ``hangup``: the dialplan's hangup handler reports how a 112 call ended.

Called as ``AGI(agi://…/hangup,QUEUESTATUS,HANGUPCAUSE,hangupsource,recording,DIALSTATUS)`` in dead-AGI
mode. It covers what AMI alone cannot say: callers who hung up before reaching the queue (during
the greeting or routing), and who hung up first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import structlog

from callcenter.agi.protocol import AgiError
from callcenter.agi.server import AgiSession
from callcenter.store import Calls, utcnow
from callcenter.store.lifecycle import close_call
from callcenter.store.models import Call
from callcenter.store.pending import PendingWrites
from callcenter.store.recordings import recording_in_dir
from callcenter.tasks import Background

log = structlog.get_logger("callcenter.agi.hangup")

ROUTE = "hangup"
#: Set on the (dead) channel once the report is taken: ``[callcenter-agi]`` then asks no other node.
MARKER = "CC_HUP_REPORTED"


def hangup_by(caller_channel: str, source: str) -> str:
    """Asterisk names the channel that started the hangup; empty means Asterisk itself ended it."""
    if not source:
        return "system"
    if source == caller_channel:
        return "caller"
    return "calltaker"


class HangupRoute:
    """``record_dir``: ``[queue] record_dir``, the directory MixMonitor writes into as Asterisk sees it.
    A recording path outside it (or not a ``.wav``) is not stored: retention would delete that file
    later, and the supervisor's player would serve it."""

    def __init__(self, calls: Calls, background: Background, pending: PendingWrites, record_dir: str) -> None:
        self.calls = calls
        self.background = background
        self.pending = pending
        self.record_dir = record_dir

    async def __call__(self, session: AgiSession) -> None:
        args = [*session.args, "", "", "", "", ""]
        queue_status, cause_text, source, reported, dial_status = args[:5]
        inside = recording_in_dir(reported, self.record_dir)
        recording = str(inside) if inside is not None else ""
        if reported and inside is None:
            log.warning("call.recording_refused", reason="outside the record directory or not a .wav")
        channel = session.env.get("agi_channel", "")
        by = hangup_by(channel, source)
        try:
            cause = int(cause_text)
        except ValueError:
            cause = -1
        now = utcnow()

        def update(call: Call) -> None:
            close_call(call, now)
            call.hangup_by = call.hangup_by or by
            if call.hangup_cause is None:
                call.hangup_cause = cause
            if recording:
                call.recording = recording

        data = {
            "queue_status": queue_status,
            "cause": cause,
            "hangup_source": source,
            "by": by,
            "recording": recording,
            "recording_refused": bool(reported) and inside is None,
            "dial_status": dial_status,
        }
        # Asterisk waits for this session before it finishes the hangup; the write need not hold it.
        self.background.spawn(self._write(session.uniqueid, data, update), name="hangup-report")
        log.info("call.hangup_reported", **data)
        # Last: the dialplan tries the next app node unless it sees this (docs/nodes.md, "FastAGI failover").
        with contextlib.suppress(AgiError):
            await session.set_variable(MARKER, "1")

    async def _write(self, uniqueid: str, data: dict[str, object], update: Callable[[Call], None]) -> None:
        # A caller hanging up during routing: the call's first write may still be on its way.
        await self.pending.settle(uniqueid)
        await self.calls.record_event(uniqueid, "hangup_reported", source="hangup", data=data, update=update)
