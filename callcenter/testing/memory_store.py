"""What the AMI tracker needs of the store, in memory, for property tests and the fuzz run.

Each write's summary update runs on a plain ``Call`` row, as the real store runs it inside its
transaction, so an update that breaks on odd event data breaks here too; nothing touches a database.
"""

from __future__ import annotations

from collections.abc import Sequence

from callcenter.store.calls import EventWrite
from callcenter.store.models import Call

#: Events the tracker handles (and one it ignores), in Asterisk's spelling: what fuzzing feeds it.
AMI_EVENTS = (
    "QueueCallerJoin",
    "QueueCallerLeave",
    "QueueCallerAbandon",
    "AgentCalled",
    "AgentRingNoAnswer",
    "AgentConnect",
    "AgentComplete",
    "AgentDump",
    "QueueMemberStatus",
    "QueueMemberAdded",
    "QueueMemberPause",
    "QueueMemberRemoved",
    "Hangup",
    "BlindTransfer",
    "UserEvent",
    "Newchannel",
)


class MemoryStore:
    retry_for = 1.0

    def __init__(self) -> None:
        self.calls: dict[str, Call] = {}
        self.events = 0

    async def record_events(self, writes: Sequence[EventWrite]) -> list[str | None]:
        ids: list[str | None] = []
        for write in writes:
            call = self.calls.get(write.uniqueid)
            if call is None:
                if write.create is None:
                    ids.append(None)
                    continue
                call = Call(id=write.uniqueid, uniqueid=write.uniqueid, status="arrived", **write.create())
                self.calls[write.uniqueid] = call
            if write.update is not None:
                write.update(call)
            self.events += 1
            ids.append(call.id)
        return ids

    async def open_calls(self) -> list[Call]:
        return []


__all__ = ["AMI_EVENTS", "MemoryStore"]
