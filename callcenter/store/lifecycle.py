"""How a call's summary status ends, in one place: the AMI tracker and the hangup handler both
report the end of a call, in either order, and must agree on what it was."""

from __future__ import annotations

from datetime import datetime

from callcenter.store.models import Call

#: Statuses of a caller nobody has talked to yet.
WAITING = frozenset({"arrived", "queued", "ringing"})


def close_call(call: Call, at: datetime) -> None:
    """Mark the call ended; a caller who hung up before any answer abandoned it."""
    call.ended_at = call.ended_at or at
    if call.status in WAITING:
        call.status = "abandoned"
    elif call.status == "answered":
        # AgentComplete normally says so first; a lost event must not leave the call "answered".
        call.status = "completed"
