"""Wiring of dispatch into the app: the directory and the dispatcher on the application, AMI events to it.

``dispatch_ctx`` runs after the live hub's context (it publishes through the hub). The directory is
loaded first and a bad file stops the start with its AgencyConfigError message: a centre must never
run believing it can dispatch while its duty lines are misconfigured.

The web endpoints find the two objects as ``request.app[DIRECTORY]`` (``propose``, ``get``) and
``request.app[DISPATCHER]`` (``dispatch``, ``accept_from_web``, ``get``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from aiohttp import web
from panoramisk.message import Message

from callcenter.dispatch.agencies import AgencyConfigError, Directory, load_agencies
from callcenter.dispatch.dispatcher import Dispatcher
from callcenter.dispatch.twilio_line import TwilioLine
from callcenter.forms.intake import load_districts
from callcenter.web.keys import AMI, CONFIG, STORE
from callcenter.web.live import HUB
from callcenter.web.twilio_hooks import TWILIO

log = structlog.get_logger("callcenter.dispatch.service")

EventHandler = Callable[[Message], Awaitable[None]]


class AmiFanout:
    """The AMI client's one ``on_event``: the tracker first, then each subscriber, in arrival order.

    The AMI client runs one consumer so that events stay in Asterisk's order; calling the handlers
    one after the other inside it keeps that order for every subscriber. A failing subscriber is
    logged and skipped: the call timeline must not stop because dispatch had a bug, and vice versa.
    """

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


AMI_FANOUT = web.AppKey("ami_fanout", AmiFanout)
DIRECTORY = web.AppKey("agency_directory", Directory)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)


def load_directory(app: web.Application) -> Directory:
    cfg = app[CONFIG]
    districts = load_districts(cfg.intake.districts_file or None)
    return load_agencies(cfg.dispatch.agencies_file or None, [d.name for d in districts.districts])


async def dispatch_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    try:
        directory = load_directory(app)
    except AgencyConfigError as exc:
        log.error("dispatch.config_error", error=str(exc))
        raise
    holder: list[Dispatcher] = []

    async def on_remote_result(attempt_id: int, outcome: str, reason: str) -> bool:
        # The line tells the officer "accepted" only on True: the answer must say what was stored.
        return bool(holder) and await holder[0].remote_result(attempt_id, outcome, reason)

    # Built here, not in the Twilio module, because its results must reach this dispatcher; missing
    # credentials are reported when an E.164 line is first tried (that attempt ends as ``error``).
    twilio = app.get(TWILIO)
    created_twilio = twilio is None
    if twilio is None:
        twilio = TwilioLine(cfg.twilio, on_remote_result)
        app[TWILIO] = twilio
    dispatcher = Dispatcher(app[STORE], app[AMI], directory, cfg.dispatch, app[HUB].broadcast, twilio=twilio)
    holder.append(dispatcher)
    await dispatcher.start()
    unsubscribe = app[AMI_FANOUT].subscribe(dispatcher.on_ami_event)
    app[DIRECTORY] = directory
    app[DISPATCHER] = dispatcher
    log.info("dispatch.ready", agencies=len(directory.agencies), rules=len(directory.rules))
    yield
    unsubscribe()
    await dispatcher.close()
    if created_twilio:
        await twilio.close()


__all__ = ["AMI_FANOUT", "DIRECTORY", "DISPATCHER", "AmiFanout", "dispatch_ctx", "load_directory"]
