"""Supervision services on the app: call-backs of abandoned calls and citizen ratings.

``supervision_ctx`` runs after ``dispatch_ctx`` (it needs the AMI fan-out, the live hub and the
Twilio line that dispatch puts on the app). It builds :class:`Callbacks` and :class:`Ratings`,
subscribes both to AMI events, and runs the rating trigger.

Why the trigger polls the store (every ``RATING_POLL`` seconds) instead of listening to the hub's
``dispatch`` broadcasts: a dispatch becomes ``resolved`` through the agency API, possibly in another
app instance or while this one was restarting; a broadcast seen by nobody would lose the rating for
good, whereas "resolved, nothing active, no rating yet" in the database is found by the next poll
whoever wrote it. The query is one indexed lookup every few seconds; the rating row written before
the call (or SMS) is the "asked once" guarantee.

Ratings see the Twilio line only while it can text (``sms_line``): without credentials or a sender
number every SMS would fail at Twilio, so a rating is not offered by SMS at all — in particular, a
missed rating call is then not followed by an SMS row that could only say "failed".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from callcenter.dispatch.dispatcher import RemoteLine
from callcenter.dispatch.service import AMI_FANOUT
from callcenter.supervision.callbacks import Callbacks
from callcenter.supervision.ratings import RatingRefused, Ratings
from callcenter.web.keys import AMI, CONFIG, STORE
from callcenter.web.live import HUB
from callcenter.web.twilio_hooks import TWILIO

log = structlog.get_logger("callcenter.supervision")

CALLBACKS = web.AppKey("callbacks", Callbacks)
RATINGS = web.AppKey("ratings", Ratings)
#: Seconds between looks for incidents to rate.
RATING_POLL = 3.0


def sms_line(app: web.Application) -> RemoteLine | None:
    """The app's Twilio line when it can send an SMS (account, token and sender number set), else None."""
    cfg = app[CONFIG].twilio
    if not (cfg.account_sid.strip() and cfg.auth_token.strip() and cfg.from_number.strip()):
        return None
    return app.get(TWILIO)


async def rate_resolved(ratings: Ratings) -> list[int]:
    """Ask for a rating on every incident that became due; returns the incident ids asked."""
    asked: list[int] = []
    for incident_id in await ratings.due():
        try:
            await ratings.request(incident_id)
        except (RatingRefused, LookupError) as exc:
            # No number: write nothing, but do not look at it again — a failed rating row says "tried".
            log.info("rating.not_asked", incident_id=incident_id, reason=str(exc))
            await ratings.mark_unaskable(incident_id)
        asked.append(incident_id)
    return asked


async def supervision_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    hub = app[HUB]
    callbacks = Callbacks(app[STORE], app[AMI], hub.broadcast, overflow_dial=cfg.queue.overflow_dial)
    ratings = Ratings(
        app[STORE],
        app[AMI],
        hub.broadcast,
        lambda: sms_line(app),
        public_url=cfg.twilio.public_url,
        region=cfg.numbers.default_region,
    )
    await callbacks.start()
    unsubscribe = [app[AMI_FANOUT].subscribe(callbacks.on_ami_event), app[AMI_FANOUT].subscribe(ratings.on_ami_event)]
    app[CALLBACKS] = callbacks
    app[RATINGS] = ratings

    async def trigger() -> None:
        while True:
            await asyncio.sleep(RATING_POLL)
            try:
                await rate_resolved(ratings)
            except Exception:  # the store hiccuped: the next poll finds the same incidents
                log.exception("rating.trigger_failed")

    task = asyncio.create_task(trigger(), name="rating-trigger") if cfg.supervision.ratings else None
    log.info("supervision.ready", ratings=cfg.supervision.ratings)
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for undo in unsubscribe:
        undo()
    await ratings.close()
    await callbacks.close()


__all__ = ["CALLBACKS", "RATINGS", "RATING_POLL", "rate_resolved", "sms_line", "supervision_ctx"]
