"""Bounded polling for tests: a broken component fails the test with a timeout instead of hanging CI."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


async def until(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0, interval: float = 0.02, what: str = ""
) -> None:
    """Wait until ``predicate()`` (sync or async) is true; TimeoutError naming ``what`` otherwise."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = predicate()
                if inspect.isawaitable(result):
                    result = await result
                if result:
                    return
                await asyncio.sleep(interval)
    except TimeoutError:
        raise TimeoutError(f"not true within {timeout}s: {what or predicate}") from None
