"""The composition root: config → store → AGI server → AMI client → web, each a ``cleanup_ctx``.

Order matters both ways. The store comes first because the AGI routes and the tracker write to
it; the AGI server starts before the AMI client so that calls are routed even while AMI is still
connecting; on shutdown the AMI client stops first and the store closes last, after the pending
background writes have drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import structlog
from aiohttp import web
from panoramisk.message import Message

from callcenter.agi.briefing import ROUTE as BRIEFING_ROUTE
from callcenter.agi.briefing import BriefingRoute
from callcenter.agi.hangup import ROUTE as HANGUP_ROUTE
from callcenter.agi.hangup import HangupRoute
from callcenter.agi.incoming import ROUTE as INCOMING_ROUTE
from callcenter.agi.incoming import IncomingRoute
from callcenter.agi.rating import BUDGET as RATING_BUDGET
from callcenter.agi.rating import ROUTE as RATING_ROUTE
from callcenter.agi.rating import RatingRoute
from callcenter.agi.server import AgiServer
from callcenter.config import Config
from callcenter.dispatch.service import AMI_FANOUT, DISPATCHER, AmiFanout, dispatch_ctx
from callcenter.dispatch.sla import sla_ctx
from callcenter.forms.intake import load_districts
from callcenter.notify import Notifier, keep_alive
from callcenter.queue.ami import AmiClient
from callcenter.queue.presence import Presence
from callcenter.queue.tracker import QueueTracker, member_json, resync_from_ami
from callcenter.store import Store
from callcenter.store.accounts import Accounts
from callcenter.store.dispatches import Dispatches
from callcenter.store.incidents import Incidents
from callcenter.store.pending import PendingWrites
from callcenter.store.presence import QueueLogins
from callcenter.store.quality import QualityStore
from callcenter.store.stats import Rollup, Stats
from callcenter.supervision import RATINGS, supervision_ctx
from callcenter.supervision.presence_control import AutoPause, PresenceBoard
from callcenter.supervision.quality import Quality
from callcenter.tasks import Background
from callcenter.web import (
    api,
    auth,
    callbacks_api,
    console_api,
    dispatch_api,
    live,
    metrics,
    openapi,
    pages,
    presence_api,
    quality_api,
    supervisor_api,
    twilio_hooks,
)
from callcenter.web.access import TZ_OFFSET, centre_offset
from callcenter.web.auth import THROTTLE, LoginThrottle
from callcenter.web.errors import errors_middleware
from callcenter.web.keys import (
    ACCOUNTS,
    AGI,
    AMI,
    AUTO_PAUSE,
    BACKGROUND,
    CONFIG,
    DISPATCHES,
    DISTRICTS,
    INCIDENTS,
    METRICS,
    PENDING,
    PRESENCE,
    PRESENCE_BOARD,
    QUALITY,
    STATS,
    STORE,
    TRACKER,
)

log = structlog.get_logger("callcenter.app")

#: Seconds between background refreshes of the statistics roll-up (``store/stats.py``).
STATS_REFRESH = 60.0


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    store = Store.from_url(cfg.store.url, retry_for=cfg.store.retry_for)
    store.on_latency = metrics.db_latency(app[METRICS]).observe
    await store.upgrade()
    window = timedelta(days=cfg.queue.prank_window_days)
    flags = await store.load_flags(window)
    log.info("store.ready", flags_indexed=flags)
    app[STORE] = store
    background = Background()
    app[BACKGROUND] = background
    app[PENDING] = PendingWrites()

    async def refresh_flags() -> None:
        """Flags written by another process (a second instance, a script) reach routing within a period."""
        while True:
            await asyncio.sleep(cfg.queue.flags_refresh)
            try:
                before = len(store.flags)
                after = await store.load_flags(window)
                if after != before:
                    log.info("store.flags_refreshed", flags_indexed=after, before=before)
            except Exception as exc:  # the old index keeps serving; routing never waits on this
                log.warning("store.flags_refresh_failed", error=str(exc))

    async def refresh_stats() -> None:
        """Statistics reads refresh the roll-up themselves; this keeps the dirty marks few when nobody
        looks for a while, and builds the roll-up in short steps after an upgrade, before anyone asks."""
        rollup = Rollup(store)
        while True:
            await asyncio.sleep(STATS_REFRESH)
            try:
                await rollup.refresh()
            except Exception as exc:  # the next read or period tries again; nothing waits on this
                log.warning("store.stats_refresh_failed", error=str(exc))

    tasks = [
        asyncio.create_task(refresh_flags(), name="flags-refresh"),
        asyncio.create_task(refresh_stats(), name="stats-refresh"),
    ]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await background.drain()
    await store.close()


async def _services_ctx(app: web.Application) -> AsyncIterator[None]:
    """The repositories the web API serves from, built once per app as soon as the store exists:
    startup is the last moment keys may be set (aiohttp freezes the app after it), and a bad setting
    (districts file, time zone) stops the start instead of failing the first request."""
    cfg, store = app[CONFIG], app[STORE]
    app[ACCOUNTS] = Accounts(store, session_lifetime=timedelta(hours=cfg.web.session_hours))
    app[THROTTLE] = LoginThrottle(cfg.web.login_max_failures, cfg.web.login_lockout_seconds)
    app[INCIDENTS] = Incidents(store, flags_window=timedelta(days=cfg.queue.prank_window_days))
    app[DISTRICTS] = load_districts(cfg.intake.districts_file or None)
    app[DISPATCHES] = Dispatches(store)
    app[STATS] = Stats(store, offset=centre_offset(app))
    app[QUALITY] = Quality(QualityStore(store), offset=centre_offset(app))
    yield


#: Seconds between draws of the quality-review sample (idempotent top-ups; ``supervision/quality.py``).
QUALITY_DRAW_PERIOD = 3600.0


async def _quality_ctx(app: web.Application) -> AsyncIterator[None]:
    """Every hour: the sample of the week that just ended (topped up until it meets the rules) and the
    critical calls of the current week, so those are due five days after the call, not after the week."""
    quality = app[QUALITY]

    async def draw() -> None:
        while True:
            try:
                await quality.draw(quality.previous_week())
                await quality.draw(quality.current_week(), critical_only=True)
            except Exception as exc:  # the next period tries again; nothing waits on this
                log.warning("quality.draw_failed", error=str(exc))
            await asyncio.sleep(QUALITY_DRAW_PERIOD)

    task = asyncio.create_task(draw(), name="quality-draw")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _agi_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    server = AgiServer(cfg.agi)
    store, background, pending = app[STORE], app[BACKGROUND], app[PENDING]
    server.add_route(INCOMING_ROUTE, IncomingRoute(store, background, pending, cfg.numbers, cfg.queue))
    server.add_route(HANGUP_ROUTE, HangupRoute(store, background, pending, cfg.queue.record_dir))
    # The dispatcher is built later (dispatch_ctx needs AMI and the live hub): looked up per call;
    # until it exists the route declines and the dialplan plays its fallback prompt.
    # The briefing waits for the officer's key (accept_timeout) after prompts of up to a minute.
    briefing_budget = cfg.dispatch.accept_timeout + 90.0
    briefing = BriefingRoute(lambda: app.get(DISPATCHER), cfg.agi, briefing_budget)
    server.add_route(BRIEFING_ROUTE, briefing, budget=briefing_budget)
    # Ratings are built by supervision_ctx (after AMI): looked up per call like the dispatcher.
    server.add_route(RATING_ROUTE, RatingRoute(lambda: app.get(RATINGS), cfg.agi), budget=RATING_BUDGET)
    await server.start()
    app[AGI] = server
    log.info("agi.listening", host=cfg.agi.host, port=server.port)
    yield
    await server.stop()


async def _ami_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    tracker = QueueTracker(app[STORE], region=cfg.numbers.default_region, pending=app[PENDING])
    presence: Presence | None = None

    async def on_ready(client: AmiClient) -> None:
        # The call-takers first (a restarted Asterisk forgot them; the next caller must find them), then
        # the live picture.
        await resync_from_ami(tracker, client, restore=presence.restore if presence else None)

    # Tracker first, then subscribers (dispatch's OriginateResponse/Hangup matching), in event order.
    fanout = AmiFanout(tracker.handle)
    client = AmiClient(cfg.ami, on_event=fanout, on_ready=on_ready, on_down=tracker.link_down)
    presence = Presence(client, cfg.queue.name, QueueLogins(app[STORE]), app[BACKGROUND])
    unfollow = tracker.subscribe(presence.follow)
    app[AMI_FANOUT] = fanout
    app[TRACKER] = tracker
    app[AMI] = client
    app[PRESENCE] = presence
    await client.start()
    yield
    await client.stop()
    unfollow()
    # Before the store closes (cleanup runs in reverse): what the tracker still buffers is written.
    await tracker.close()


async def _presence_ctx(app: web.Application) -> AsyncIterator[None]:
    """Time in state for the wallboard and auto-pause after missed offers (after live and dispatch
    contexts: it needs the tracker, the AMI fan-out and the live hub to alert supervisors)."""
    tracker, hub = app[TRACKER], app[live.HUB]
    board = PresenceBoard()
    for member in tracker.live.members.values():  # what the first resync already reported
        board.on_member("member", member_json(member))

    def alert(message: dict[str, Any]) -> None:
        hub.broadcast({"type": "presence_alert", "alert": message}, roles=("supervisor",))

    auto_pause = AutoPause(app[PRESENCE], app[CONFIG].queue.autopause_after, alert)

    async def on_ami(message: Message) -> None:
        board.on_ami(message)
        await auto_pause.on_ami(message)

    undo = [tracker.subscribe(board.on_member), app[AMI_FANOUT].subscribe(on_ami)]
    app[PRESENCE_BOARD] = board
    app[AUTO_PAUSE] = auto_pause
    yield
    for unsubscribe in undo:
        unsubscribe()
    await auto_pause.close()


def create_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[errors_middleware, *auth.middlewares()], client_max_size=2 * 1024 * 1024)
    app[CONFIG] = config
    app[METRICS] = metrics.new_registry(app)
    offset = config.supervision.offset()
    if offset is not None:
        app[TZ_OFFSET] = offset
    # Order matters: each context finds what the ones before it set; cleanup runs in reverse.
    contexts = [_store_ctx, _services_ctx, _agi_ctx, _ami_ctx, live.live_ctx, dispatch_ctx, supervision_ctx, sla_ctx]
    contexts += [_quality_ctx, _presence_ctx]
    app.cleanup_ctx.extend(contexts)
    for module in (
        api,
        auth,
        live,
        console_api,
        dispatch_api,
        supervisor_api,
        callbacks_api,
        metrics,
        openapi,
        pages,
        presence_api,
        quality_api,
        twilio_hooks,
    ):
        app.add_routes(module.routes)
    return app


async def serve(
    config: Config,
    *,
    stop: asyncio.Event | None = None,
    on_started: Callable[[web.Application], Awaitable[None]] | None = None,
) -> None:
    """Run until SIGINT/SIGTERM (or ``stop`` is set): what ``callcenter run`` does.

    Under a service manager (``$NOTIFY_SOCKET``: systemd's ``Type=notify``, or the demo's stand-in in
    ``callcenter/watchdog.py``) it reports ``READY=1`` once the AGI server, AMI client and web listener
    are up (AMI may still be connecting: Asterisk being down is no reason to restart us), pings the
    watchdog from a task on this event loop, and reports ``STOPPING=1`` when it shuts down.
    """
    notifier = Notifier()
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.web.host, config.web.port)
    await site.start()
    log.info("web.listening", host=config.web.host, port=config.web.port)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    pinger = asyncio.create_task(keep_alive(notifier), name="watchdog-pings")
    try:
        notifier.send(READY="1", STATUS="serving", MAINPID=str(os.getpid()))
        if on_started is not None:
            await on_started(app)
        await stop.wait()
    finally:
        log.info("app.stopping")
        notifier.send(STOPPING="1", STATUS="stopping")
        pinger.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pinger
        # No pings while shutting down: the manager's stop timeout (TimeoutStopSec) bounds it instead.
        await runner.cleanup()
        notifier.close()
