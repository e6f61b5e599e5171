"""Writes that are still on their way, per call, so later reports about the call wait for them.

The AGI route records a new call in the background so that the caller never waits on the
database; the first AMI event about that call can arrive a few milliseconds later and must land
on the same row, after it. The AMI tracker in turn writes its events in batches, so the hangup
handler's report and the console's pop wait for the batch that holds the call's latest event.
All of them run in this process, so a map of in-flight futures is enough.
"""

from __future__ import annotations

import asyncio
from typing import Any


class PendingWrites:
    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Future[Any]] = {}

    def track(self, uniqueid: str, task: asyncio.Future[Any]) -> None:
        """Make ``task`` (a Task, or a Future a batch writer resolves) the call's latest write."""
        self._tasks[uniqueid] = task

        def forget(done: asyncio.Future[Any]) -> None:
            if self._tasks.get(uniqueid) is done:
                del self._tasks[uniqueid]

        task.add_done_callback(forget)

    def latest(self, uniqueid: str) -> asyncio.Future[Any] | None:
        """The call's write still on its way, if any: a batch writer queues behind it instead of waiting here."""
        task = self._tasks.get(uniqueid)
        return task if task is not None and not task.done() else None

    async def settle(self, uniqueid: str, timeout: float = 5.0) -> None:
        """Wait (bounded) for the call's latest write; its failure is the writer's to log, not ours."""
        task = self._tasks.get(uniqueid)
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=timeout)

    def __len__(self) -> int:
        return len(self._tasks)
