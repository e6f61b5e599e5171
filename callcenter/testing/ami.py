"""Asterisk's own view of the queue, over an AMI link of the test's own, for end-to-end tests and benchmarks.

What the app shows is checked against what Asterisk says (``QueueStatus``), not against the app itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any

from callcenter.config import AmiConfig
from callcenter.queue.ami import AmiClient


@dataclass(frozen=True)
class QueueSnapshot:
    #: Uniqueids of the callers waiting in the queue.
    waiting: frozenset[str]
    #: Member interface → (paused, pause reason).
    members: dict[str, tuple[bool, str]]


async def _ignore(_message: Any) -> None:
    return None


async def _nothing(_client: AmiClient) -> None:
    return None


class QueueProbe:
    """A logged-in AMI link (reconnecting by itself, e.g. across an Asterisk restart) that asks QueueStatus."""

    def __init__(self, port: int, secret: str, queue: str, *, username: str = "callcenter") -> None:
        config = AmiConfig(port=port, username=username, secret=secret, action_timeout=30, reconnect_max=0.5)
        self.client = AmiClient(config, on_event=_ignore, on_ready=_nothing)
        self.queue = queue

    async def __aenter__(self) -> QueueProbe:
        await self.client.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.client.stop()

    async def snapshot(self, timeout: float = 20.0) -> QueueSnapshot:
        await self.client.wait_ready(timeout)
        found = await self.client.action({"Action": "QueueStatus", "Queue": self.queue}, as_list=True, timeout=30)
        items = found if isinstance(found, list) else [found]
        waiting = frozenset(str(m.get("Uniqueid")) for m in items if str(m.get("Event")) == "QueueEntry")
        members = {
            str(m.get("Location")): (str(m.get("Paused")) == "1", str(m.get("PausedReason") or ""))
            for m in items
            if str(m.get("Event")) == "QueueMember"
        }
        return QueueSnapshot(waiting, members)
