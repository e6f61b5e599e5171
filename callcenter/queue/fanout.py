"""One AMI event stream, several listeners, in Asterisk's order.

The AMI client runs one consumer so that events stay in Asterisk's order; calling the handlers one
after the other inside it keeps that order for every subscriber. A failing subscriber is logged and
skipped: the call timeline must not stop because dispatch had a bug, and vice versa.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from panoramisk.message import Message

from callcenter.queue.ami import EventHandler

log = structlog.get_logger("callcenter.ami")


class AmiFanout:
    """The AMI client's one ``on_event``: the tracker first, then each subscriber, in arrival order."""

    def __init__(self, first: EventHandler) -> None:
        self._first = first
        self._subscribers: list[EventHandler] = []

    def subscribe(self, handler: EventHandler) -> Callable[[], None]:
        self._subscribers.append(handler)
        return lambda: self._subscribers.remove(handler) if handler in self._subscribers else None

    async def __call__(self, message: Message) -> None:
        try:
            await self._first(message)
        except Exception:
            log.exception("ami.handler_failed", ami_event=message.get("Event", ""))
        for handler in tuple(self._subscribers):
            try:
                await handler(message)
            except Exception:
                log.exception("ami.subscriber_failed", ami_event=message.get("Event", ""))


__all__ = ["AmiFanout"]
