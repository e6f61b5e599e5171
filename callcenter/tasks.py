"""Work that must finish but must not hold a caller: database writes that outlive an AGI session."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog

T = TypeVar("T")
log = structlog.get_logger("callcenter.tasks")


class Background:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background.failed", task=task.get_name(), error=repr(task.exception()))

    async def bounded(self, coro: Coroutine[Any, Any, T], name: str, within: float) -> T | None:
        """Wait up to ``within`` seconds for ``coro``; past that it goes on in the background and we get None."""
        task = self.spawn(coro, name)
        done, _ = await asyncio.wait({task}, timeout=within)
        if task in done and not task.cancelled() and task.exception() is None:
            return task.result()
        if task not in done:
            log.warning("background.slow", task=name, waited=within)
        return None

    def __len__(self) -> int:
        return len(self._tasks)

    async def settle(self) -> None:
        """Wait for every task, including those spawned meanwhile (a test checking what they did)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def cancel(self) -> None:
        """Stop every task now and wait until they have stopped."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def drain(self, timeout: float = 10.0) -> None:
        """On shutdown: let pending writes finish, then cancel what is left."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
