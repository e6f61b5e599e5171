"""The live picture of the call-taker queue: who waits, which call-taker is where, which call is connected.

The tracker changes it as each AMI event is handled and rebuilds it from Asterisk after every
(re)connect (``queue/resync.py``). Every change leaves a tombstone (when the entry was last reported),
so a resync snapshot asked for *before* a change cannot bring back what the change removed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

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


#: Uniqueids of an app report's Local channel (``queue/reports.py``): ``report-<id>-<n>`` is the half that
#: announces it to the call-taker, ``report-<id>-<n>-q`` the half waiting in the queue.
_REPORT_UNIQUEID = re.compile(r"^report-([0-9]{1,12})-[0-9]{1,20}(-q)?$")


def report_id_of(uniqueid: str) -> int | None:
    """The app report a channel belongs to, from its Uniqueid (None: a 112 caller or anything else)."""
    found = _REPORT_UNIQUEID.match(uniqueid)
    return int(found.group(1)) if found else None


def is_true(value: Any) -> bool:
    """An AMI yes/no header (``1``, ``true``, ``yes``)."""
    return str(value).strip().lower() in {"1", "true", "yes"}


@dataclass(frozen=True)
class WaitingCaller:
    uniqueid: str
    queue: str
    position: int
    caller: str
    joined_at: datetime
    #: The citizen's report from the app this entry stands for (``report_id_of``); None for a 112 caller.
    report_id: int | None = None


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
    #: Monotonic time each entry (kind, key) was last reported; a resync only drops entries older than its query.
    touched: dict[tuple[str, object], float] = field(default_factory=dict)

    def apply_member(self, m: Mapping[str, Any]) -> Member:
        """A member event (QueueMemberStatus/Added/Pause, or QueueStatus's QueueMember) applied to the
        member's entry: what the event says, the rest as it was. Returns the entry as it is now."""
        queue = str(m["Queue"])
        interface = str(m.get("Interface") or m.get("Location") or "")
        if not interface:
            raise ValueError("member event without Interface")
        key = (queue, interface)
        old = self.members.get(key) or Member(interface, str(m.get("MemberName", interface)), queue)
        member = replace(
            old,
            name=str(m.get("MemberName") or m.get("Name") or old.name),
            state=DEVICE_STATES.get(str(m.get("Status", "")), old.state),
            paused=is_true(m["Paused"]) if "Paused" in m else old.paused,
            reason=str(m.get("PausedReason") or m.get("Reason") or "") if "Paused" in m else old.reason,
            in_call=is_true(m["InCall"]) if "InCall" in m else old.in_call,
        )
        self.members[key] = member
        self.touch("member", key)
        return member

    def connected_call(self, linkedid: str, taker_channel: str, interface: str) -> str:
        """The caller's uniqueid of a connected call, found from the call-taker's leg.

        Asterisk leaves out the caller's channel snapshot of an AgentComplete when that channel is already
        gone. The call-taker's leg still says which call it was: its Linkedid is the caller's Uniqueid (the
        caller's channel started the call), its channel name is the one AgentConnect reported, and failing
        both, an interface that has exactly one connected call (ringinuse=no). ValueError when none fits.
        """
        found = [linkedid] if linkedid in self.connected else []
        found = found or [u for u, (_, taker) in self.channels.items() if taker_channel and taker == taker_channel]
        found = found or [u for u, i in self.connected.items() if i == interface]
        if len(found) != 1:
            raise ValueError("AgentComplete without Uniqueid for an interface with no single call")
        return found[0]

    def _entries(self, kind: str) -> dict[Any, Any]:
        maps: dict[str, dict[Any, Any]] = {"waiting": self.waiting, "member": self.members, "connected": self.connected}
        return maps[kind]

    def touch(self, kind: str, key: object) -> None:
        self.touched[(kind, key)] = asyncio.get_running_loop().time()

    def drop(self, kind: str, key: object) -> Any:
        """Remove an entry, remembering when, so a resync snapshot taken earlier cannot bring it back."""
        self.touch(kind, key)
        return self._entries(kind).pop(key, None)

    def stale(self, kind: str, key: object, asked_mono: float) -> bool:
        """Reported before the resync query went out, so the snapshot is newer and wins."""
        return self.touched.get((kind, key), float("-inf")) < asked_mono

    def prune(self, kind: str, keep: set[Any], asked_mono: float) -> None:
        """Drop the entries the snapshot no longer has, unless reported since it was asked for."""
        entries = self._entries(kind)
        for key in [k for k in entries if k not in keep and self.stale(kind, k, asked_mono)]:
            entries.pop(key)
            self.touched.pop((kind, key), None)

    def forget_tombstones(self, asked_mono: float) -> None:
        """Forget tombstones a snapshot has superseded, so the map does not grow for ever."""
        for touched in [k for k, t in self.touched.items() if t < asked_mono]:
            if touched[1] not in self._entries(touched[0]):
                del self.touched[touched]


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


__all__ = ["DEVICE_STATES", "LiveState", "Member", "WaitingCaller", "is_true", "member_json", "report_id_of"]
