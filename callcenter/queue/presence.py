"""Call-taker presence: joining and leaving the queue, pausing with a reason, through AMI.

The console never assumes the result: it shows what QueueMemberStatus/Pause events report back,
which the tracker keeps in its live picture.
"""

from __future__ import annotations

from typing import Any, Protocol

#: Pause reasons a call-taker can pick; free text is refused so statistics stay comparable.
PAUSE_REASONS = ("break", "wrap-up", "training", "meeting", "technical")
#: The reason the app pauses a call-taker with after offered calls rang out (``supervision/presence_control.py``);
#: not one a call-taker can pick.
AUTO_PAUSE_REASON = "tidak menjawab"


class ActionSender(Protocol):
    async def action(self, action: dict[str, str], *, as_list: bool = False, timeout: float | None = None) -> Any: ...


class Presence:
    def __init__(self, ami: ActionSender, queue: str) -> None:
        self.ami = ami
        self.queue = queue

    async def log_in(self, interface: str, name: str) -> None:
        await self.ami.action(
            {
                "Action": "QueueAdd",
                "Queue": self.queue,
                "Interface": interface,
                "MemberName": name,
                "StateInterface": interface,
                "Paused": "false",
            }
        )

    async def log_out(self, interface: str) -> None:
        await self.ami.action({"Action": "QueueRemove", "Queue": self.queue, "Interface": interface})

    async def pause(self, interface: str, reason: str) -> None:
        if reason not in PAUSE_REASONS and reason != AUTO_PAUSE_REASON:
            raise ValueError(f"pause reason must be one of {', '.join(PAUSE_REASONS)}")
        await self.ami.action(
            {"Action": "QueuePause", "Queue": self.queue, "Interface": interface, "Paused": "true", "Reason": reason}
        )

    async def unpause(self, interface: str) -> None:
        await self.ami.action({"Action": "QueuePause", "Queue": self.queue, "Interface": interface, "Paused": "false"})
