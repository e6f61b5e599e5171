"""The startup contexts of the composition root: each long-lived service built, put on the app, stopped.

``callcenter/app.py`` registers :data:`CONTEXTS` in this order, and aiohttp runs them in it at startup
and in reverse at shutdown. Order matters both ways: the store comes first because the AGI routes and
the tracker write to it; the AGI server starts before the AMI client so that calls are routed even
while AMI is still connecting; the live hub needs the tracker; dispatch needs AMI and the hub;
supervision needs dispatch's Twilio line; the service-level timer announces through the hub. On
shutdown the AMI client stops first and the store closes last, after the pending background writes
have drained.

A new service's wiring goes here: a context that builds the plain class from what the earlier contexts
put on the app, sets its key (declared in ``web/keys.py``), and undoes it after ``yield``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
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
from callcenter.dispatch import sla
from callcenter.dispatch.agencies import AgencyConfigError, Directory, load_agencies
from callcenter.dispatch.dispatcher import Dispatcher
from callcenter.dispatch.twilio_line import TwilioLine
from callcenter.forms.intake import load_districts
from callcenter.queue.ami import AmiClient
from callcenter.queue.fanout import AmiFanout
from callcenter.queue.live import member_json
from callcenter.queue.presence import Presence
from callcenter.queue.reports import POLL as REPORT_POLL
from callcenter.queue.reports import SIGNAL as REPORT_SIGNAL
from callcenter.queue.reports import ReportQueue
from callcenter.queue.resync import resync_from_ami
from callcenter.queue.routing import CallRouter
from callcenter.queue.tracker import QueueTracker
from callcenter.store import Calls, Store
from callcenter.store.accounts import Accounts
from callcenter.store.address_limits import AddressBuckets
from callcenter.store.app_numbers import AppNumbers
from callcenter.store.arrivals import Arrivals
from callcenter.store.calllog import CallLog
from callcenter.store.calls import FLAGS_TOPIC
from callcenter.store.dispatches import Dispatches
from callcenter.store.incidents import Incidents
from callcenter.store.leader_alerts import LeaderAlertStore
from callcenter.store.leadership import LeaderOnly, Leadership, TermLoop
from callcenter.store.locations import Locations
from callcenter.store.login_throttle import LoginRows
from callcenter.store.pending import PendingWrites
from callcenter.store.presence import QueueLogins
from callcenter.store.quality import QualityStore
from callcenter.store.reports import ReportLimits, Reports
from callcenter.store.roles import CENTRE_ROLES, SUPERVISOR_ROLES
from callcenter.store.rollup import Rollup
from callcenter.store.stats import Stats
from callcenter.supervision import listen
from callcenter.supervision.callbacks import Callbacks
from callcenter.supervision.leaders import LeaderAlerts, LeadersConfigError, load_leaders
from callcenter.supervision.presence_control import AutoPause, PresenceBoard
from callcenter.supervision.quality import Quality
from callcenter.supervision.ratings import RATING_POLL, Ratings, rate_resolved
from callcenter.tasks import Background
from callcenter.web import live, metrics
from callcenter.web.access import centre_offset
from callcenter.web.clients import ClientResolver
from callcenter.web.dispatch_api import agency_names
from callcenter.web.hub import LiveHub
from callcenter.web.keys import (
    ACCOUNTS,
    AGI,
    AMI,
    AMI_FANOUT,
    APP_NUMBERS,
    AUTO_PAUSE,
    BACKGROUND,
    CALL_LOG,
    CALLBACKS,
    CALLS,
    CLIENTS,
    CODE_LIMITER,
    CONFIG,
    DIRECTORY,
    DISPATCHER,
    DISPATCHES,
    DISTRICTS,
    HUB,
    INCIDENTS,
    LEADER_ALERTS,
    LEADERSHIP,
    LIMITER,
    LOCATIONS,
    LOGIN_GUARD,
    METRICS,
    NEWS,
    PENDING,
    PRESENCE,
    PRESENCE_BOARD,
    QUALITY,
    RATINGS,
    REPORT_QUEUE,
    REPORTS,
    ROUTER,
    SLA_INTERVAL,
    STATS,
    STORE,
    TRACKER,
    TWILIO,
)
from callcenter.web.news import LOGIN_ATTACK_TOPIC, LiveNews
from callcenter.web.ratelimit import AddressLimiter
from callcenter.web.throttle import AttackReport, SharedThrottle
from callcenter.web.trail import trace_reads

log = structlog.get_logger("callcenter.app")

#: Seconds between background refreshes of the statistics roll-up (``store/rollup.py``).
STATS_REFRESH = 60.0


async def _cancel(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    store = Store.from_url(cfg.store.url, retry_for=cfg.store.retry_for, node=cfg.store.node)
    store.on_latency = metrics.db_latency(app[METRICS]).observe
    await store.upgrade()
    calls = Calls(store)
    window = timedelta(days=cfg.queue.prank_window_days)
    flags = await calls.load_flags(window)
    log.info("store.ready", flags_indexed=flags, node=store.signals.node)
    # A number classified on another node changes routing here at once (re-read that number's flags);
    # ``refresh_flags`` below reloads everything each period as the safety net.
    unflag = store.signals.subscribe(FLAGS_TOPIC, lambda key: calls.reload_flags(key, window))
    await store.signals.start()
    app[STORE] = store
    app[CALLS] = calls
    # Several nodes on one PostgreSQL: the loops that must run once follow this (SQLite: always leads).
    leadership = Leadership(store.engine.url)
    await leadership.start()
    app[LEADERSHIP] = leadership
    background = Background()
    app[BACKGROUND] = background
    app[PENDING] = PendingWrites()

    async def refresh_flags() -> None:
        """Flags written by another process (a second instance, a script) reach routing within a period."""
        while True:
            await asyncio.sleep(cfg.queue.flags_refresh)
            try:
                before = len(store.flags)
                after = await calls.load_flags(window)
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

    # Every node keeps its own flag index; the roll-up is shared rows, refreshed by the leader.
    flags_task = asyncio.create_task(refresh_flags(), name="flags-refresh")
    stats_loop = LeaderOnly(leadership, refresh_stats, "stats-refresh")
    yield
    unflag()
    await _cancel(flags_task)
    await stats_loop.close()
    await leadership.stop()
    await background.drain()
    await store.close()


async def services_ctx(app: web.Application) -> AsyncIterator[None]:
    """The repositories the web API serves from, built once per app as soon as the store exists:
    startup is the last moment keys may be set (aiohttp freezes the app after it), and a bad setting
    (districts file, time zone) stops the start instead of failing the first request."""
    cfg, store = app[CONFIG], app[STORE]
    app[ACCOUNTS] = Accounts(
        store,
        session_lifetime=timedelta(hours=cfg.web.session_hours),
        session_max=timedelta(hours=cfg.web.session_max_hours),
    )
    app[CLIENTS] = ClientResolver(cfg.web.trusted_proxies, force_secure=cfg.web.secure_cookie)

    def on_attack(report: AttackReport) -> None:
        """Failed logins piling up across the centre (on any node): this node, which stored the report, logs it."""
        log.warning("auth.login_attack", **report.as_json())

    def announce_attack(alert_id: int) -> None:
        """Every node's supervisors (wallboard banner) read the stored report (``web/news.py``)."""
        news = app.get(NEWS)
        if news is not None:
            news.announce(LOGIN_ATTACK_TOPIC, alert_id)

    # In the database, so that every node sharing the store slows the same guesser.
    app[LOGIN_GUARD] = SharedThrottle(
        LoginRows(store),
        free_failures=cfg.web.login_free_failures,
        delay_max=cfg.web.login_delay_max,
        shared_delay_max=cfg.web.login_shared_delay_max,
        window=cfg.web.login_window_seconds,
        alert_failures=cfg.web.login_alert_failures,
        on_attack=on_attack,
        announce=announce_attack,
    )
    app[INCIDENTS] = Incidents(store, calls=app[CALLS], flags_window=timedelta(days=cfg.queue.prank_window_days))
    app[DISTRICTS] = load_districts(cfg.intake.districts_file or None)
    app[DISPATCHES] = Dispatches(store)
    app[STATS] = Stats(store, offset=centre_offset(app))
    app[CALL_LOG] = CallLog(store)
    app[QUALITY] = Quality(QualityStore(store), offset=centre_offset(app))
    app[LOCATIONS] = Locations(store, recent=timedelta(minutes=cfg.location.match_minutes))
    # Per-address limits in the database: every node counts the same requests (store/address_limits.py).
    buckets = AddressBuckets(store)
    app[LIMITER] = AddressLimiter(cfg.location.public_per_minute, name="public", buckets=buckets)
    rep = cfg.report
    block_for = timedelta(days=rep.block_days) if rep.block_days > 0 else None
    app[APP_NUMBERS] = AppNumbers(
        store,
        code_ttl=timedelta(minutes=rep.code_minutes),
        code_attempts=rep.code_attempts,
        codes_per_hour=rep.codes_per_number_hour,
        device_ttl=timedelta(days=rep.device_days),
        block_for=block_for,
    )
    app[REPORTS] = Reports(
        app[CALLS],
        limits=ReportLimits(per_number=rep.reports_per_number_hour, per_client=rep.reports_per_address_hour),
        block_after=rep.block_after_false,
        block_for=block_for,
    )
    app[CODE_LIMITER] = AddressLimiter(rep.codes_per_address_hour, window=3600.0, name="codes", buckets=buckets)
    yield


#: Seconds between draws of the quality-review sample (idempotent top-ups; ``supervision/quality.py``).
QUALITY_DRAW_PERIOD = 3600.0


async def quality_ctx(app: web.Application) -> AsyncIterator[None]:
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

    loop = LeaderOnly(app[LEADERSHIP], draw, "quality-draw")  # one sample, drawn by one node
    yield
    await loop.close()


async def agi_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    server = AgiServer(cfg.agi)
    calls, background, pending = app[CALLS], app[BACKGROUND], app[PENDING]
    server.add_route(INCOMING_ROUTE, IncomingRoute(Arrivals(calls, background, pending, cfg.numbers, cfg.queue)))
    server.add_route(HANGUP_ROUTE, HangupRoute(calls, background, pending, cfg.queue.record_dir))
    # The dispatcher is built later (dispatch_ctx needs AMI and the live hub): looked up per call;
    # until it exists the route declines and the dialplan plays its fallback prompt.
    # The briefing waits for the officer's key (accept_timeout) after prompts of up to a minute.
    briefing_budget = cfg.dispatch.accept_timeout + 90.0
    briefing = BriefingRoute(lambda: app.get(DISPATCHER), cfg.agi, briefing_budget)
    server.add_route(BRIEFING_ROUTE, briefing, budget=briefing_budget)
    # Ratings are built by supervision_ctx (after AMI): looked up per call like the dispatcher.
    server.add_route(RATING_ROUTE, RatingRoute(lambda: app.get(RATINGS), cfg.agi), budget=RATING_BUDGET)
    await server.start()
    app[AGI] = server  # the server logs agi.listening itself
    yield
    await server.stop()


async def ami_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    tracker = QueueTracker(app[CALLS], region=cfg.numbers.default_region, pending=app[PENDING])
    presence: Presence | None = None

    async def on_ready(client: AmiClient) -> None:
        # The call-takers first (a restarted Asterisk forgot them; the next caller must find them), then
        # the live picture.
        await resync_from_ami(tracker, client, restore=presence.restore if presence else None)

    # Tracker first, then subscribers (dispatch's OriginateResponse/Hangup matching), in event order.
    fanout = AmiFanout(tracker.handle)
    client = AmiClient(cfg.ami, on_event=fanout, on_ready=on_ready, on_down=tracker.link_down)
    # 112 callers are routed from AMI while the greeting plays; the dialplan never waits for it.
    arrivals = Arrivals(app[CALLS], app[BACKGROUND], app[PENDING], cfg.numbers, cfg.queue)
    router = CallRouter(arrivals, client, node=app[STORE].signals.node)
    fanout.subscribe(router.handle)
    app[ROUTER] = router
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


async def live_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the AMI context: the hub listens to the tracker."""
    store = app[STORE]
    hub = LiveHub(
        app[CALLS],
        app[PENDING],
        app[TRACKER],
        ping_seconds=live.PING_SECONDS,
        queue=app[CONFIG].queue.name,
        check_seconds=app[CONFIG].web.session_check_seconds,
        sessions_alive=app[ACCOUNTS].sessions.live,
        trace=lambda users, action, incidents: trace_reads(store, users, action, incidents),
        locations=app[LOCATIONS],
        reports=app[REPORTS],
    )
    unsubscribe = app[TRACKER].subscribe(hub.on_event)
    app[HUB] = hub
    # What the app changes (not AMI) reaches every node's consoles through the store's signal.
    guard = app[LOGIN_GUARD]
    news = LiveNews(
        store,
        hub,
        app[DISPATCHES],
        agency_names=lambda: agency_names(app.get(DIRECTORY)),
        login_attack=guard.attack if isinstance(guard, SharedThrottle) else None,
    )
    app[NEWS] = news
    pinger = asyncio.create_task(hub.keepalive(), name="live-keepalive")
    yield
    await _cancel(pinger)
    unsubscribe()
    await news.close()
    await hub.close()


def load_directory(app: web.Application) -> Directory:
    cfg = app[CONFIG]
    districts = load_districts(cfg.intake.districts_file or None)
    return load_agencies(cfg.dispatch.agencies_file or None, [d.name for d in districts.districts])


async def dispatch_ctx(app: web.Application) -> AsyncIterator[None]:
    """The agency directory and the dispatcher; AMI events to it.

    The directory is loaded first and a bad file stops the start with its AgencyConfigError message:
    a centre must never run believing it can dispatch while its duty lines are misconfigured.
    """
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
    dispatcher = Dispatcher(
        app[STORE], app[AMI], directory, cfg.dispatch, app[NEWS].publish, twilio=twilio, leadership=app[LEADERSHIP]
    )
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


def sms_line(app: web.Application) -> TwilioLine | None:
    """The app's Twilio line when it can send an SMS (account, token and sender number set), else None.

    Ratings see the Twilio line only while it can text: without credentials or a sender number every
    SMS would fail at Twilio, so a rating is not offered by SMS at all (docs/supervision.md).
    """
    line = app.get(TWILIO)
    return line if line is not None and line.can_text else None


async def supervision_ctx(app: web.Application) -> AsyncIterator[None]:
    """Call-backs of abandoned calls and citizen ratings, subscribed to AMI; the rating trigger.

    After ``dispatch_ctx``: it needs the AMI fan-out, the live hub and the Twilio line. Why the trigger
    polls the store: docs/supervision.md, "Ratings".
    """
    cfg = app[CONFIG]
    news = app[NEWS]
    callbacks = Callbacks(
        app[STORE], app[AMI], news.publish, overflow_dial=cfg.queue.overflow_dial, leadership=app[LEADERSHIP]
    )
    ratings = Ratings(
        app[STORE],
        app[AMI],
        news.publish,
        lambda: sms_line(app),
        public_url=cfg.twilio.public_url,
        region=cfg.numbers.default_region,
    )
    await callbacks.start()
    unsubscribe = [
        app[AMI_FANOUT].subscribe(callbacks.on_ami_event),
        app[AMI_FANOUT].subscribe(ratings.on_ami_event),
    ]
    app[CALLBACKS] = callbacks
    app[RATINGS] = ratings

    async def trigger(term: int | None) -> None:
        await rate_resolved(ratings, term=term)

    # Rating calls are placed once, by the leader; each rating row is written under its term (fenced).
    loop = TermLoop(app[LEADERSHIP], trigger, "rating-trigger", poll=RATING_POLL) if cfg.supervision.ratings else None
    log.info("supervision.ready", ratings=cfg.supervision.ratings)
    yield
    if loop is not None:
        await loop.close()
    for undo in unsubscribe:
        undo()
    await ratings.close()
    await callbacks.close()


async def reports_ctx(app: web.Application) -> AsyncIterator[None]:
    """Citizen reports into the call-takers' queue (``queue/reports.py``): told of each new report, the
    leader places it (and every report still waiting after a restart or a takeover); AMI's Originate
    answers and the tracker's AgentConnect follow it. After the live hub, so a report's pop finds it."""
    cfg, tracker, leadership = app[CONFIG], app[TRACKER], app[LEADERSHIP]
    queue = ReportQueue(
        app[REPORTS],
        app[AMI],
        tracker,
        app[STORE],
        priority=cfg.queue.default_priority,
    )
    hub = app[HUB]
    # Each report placed once, by the leader, fenced by its term.
    loop = TermLoop(leadership, queue.step, "report-queue", poll=REPORT_POLL)

    def accepted(_key: str) -> None:
        """A report was accepted on some node: the leader places it, every wallboard reads it again."""
        loop.wake()
        hub.broadcast({"type": "queue", "event": "report"}, roles=SUPERVISOR_ROLES)

    undo = [
        app[REPORTS].add_sink(queue),
        app[STORE].signals.subscribe(REPORT_SIGNAL, accepted),
        app[AMI_FANOUT].subscribe(queue.on_ami_event),
        tracker.subscribe(queue.on_tracker),
    ]
    app[REPORT_QUEUE] = queue
    yield
    await loop.close()
    for unsubscribe in undo:
        unsubscribe()
    await queue.close()


async def sla_ctx(app: web.Application) -> AsyncIterator[None]:
    """The service-level timer (``dispatch/sla.py``); after the live context (it announces through the hub)."""
    interval = app.get(SLA_INTERVAL, sla.INTERVAL)
    store = app[STORE]

    async def run() -> None:
        while True:
            try:
                for breach in await sla.sweep(store, sla.targets(app.get(DIRECTORY))):
                    log.warning("sla.breached", incident_id=breach.incident_id, category=breach.category)
                    news = app.get(NEWS)
                    if news is not None:
                        news.publish(breach.message(), roles=CENTRE_ROLES)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a database outage must not end the timer; next pass retries
                log.warning("sla.sweep_failed", error=str(exc))
            await asyncio.sleep(interval)

    loop = LeaderOnly(app[LEADERSHIP], run, "sla-timer")  # breaches announced once, by the leader
    yield
    await loop.close()


async def presence_ctx(app: web.Application) -> AsyncIterator[None]:
    """Time in state for the wallboard and auto-pause after missed offers (after live and dispatch
    contexts: it needs the tracker, the AMI fan-out and the live hub to alert supervisors)."""
    tracker, hub = app[TRACKER], app[HUB]
    board = PresenceBoard()
    for member in tracker.live.members.values():  # what the first resync already reported
        board.on_member("member", member_json(member))

    def alert(message: dict[str, Any]) -> None:
        hub.broadcast({"type": "presence_alert", "alert": message}, roles=SUPERVISOR_ROLES)

    auto_pause = AutoPause(app[PRESENCE], app[CONFIG].queue.autopause_after, alert)

    async def on_ami(message: Message) -> None:
        board.on_ami(message)
        listen.on_ami(message)
        await auto_pause.on_ami(message)

    undo = [tracker.subscribe(board.on_member), app[AMI_FANOUT].subscribe(on_ami)]
    app[PRESENCE_BOARD] = board
    app[AUTO_PAUSE] = auto_pause
    yield
    for unsubscribe in undo:
        unsubscribe()
    await auto_pause.close()


#: Seconds between looks for alerts to send to agency leaders.
LEADER_POLL = 5.0


async def leaders_ctx(app: web.Application) -> AsyncIterator[None]:
    """Alerts to agency leaders (after dispatch: it needs the agency directory and the Twilio line).
    A bad leaders file stops the start with the entry's name; without one nothing runs."""
    cfg = app[CONFIG]
    directory = app.get(DIRECTORY)
    if directory is None:
        # No dispatch core, so nothing is ever dispatched: there is nothing to tell a leader about.
        yield
        return
    try:
        leaders = load_leaders(cfg.supervision.leaders_file, list(directory.agencies))
    except LeadersConfigError as exc:
        log.error("leaders.config_error", error=str(exc))
        raise
    if not leaders:
        yield
        return
    twilio = cfg.twilio

    def sender() -> TwilioLine | None:
        return app.get(TWILIO) if twilio.account_sid.strip() and twilio.auth_token.strip() else None

    def agency_name(code: str) -> str:
        return directory.agencies[code].name if code in directory.agencies else code.upper()

    alerts = LeaderAlerts(
        LeaderAlertStore(app[STORE]),
        leaders,
        sender,
        whatsapp=bool(twilio.whatsapp_from.strip()),
        public_url=twilio.public_url,
        offset=centre_offset(app),
        agency_name=agency_name,
        daily_hour=cfg.supervision.daily_summary_hour,
    )
    app[LEADER_ALERTS] = alerts

    async def poll() -> None:
        while True:
            await asyncio.sleep(LEADER_POLL)
            try:
                await alerts.tick()
            except Exception:  # the store or Twilio hiccuped: the next poll finds the same alerts
                log.exception("leaders.poll_failed")

    loop = LeaderOnly(app[LEADERSHIP], poll, "leader-alerts")  # each alert sent by one node
    log.info("leaders.ready", leaders=len(leaders), whatsapp=bool(twilio.whatsapp_from.strip()))
    yield
    await loop.close()


#: In startup order; cleanup runs in reverse.
CONTEXTS: tuple[Callable[[web.Application], AsyncIterator[None]], ...] = (
    store_ctx,
    services_ctx,
    agi_ctx,
    ami_ctx,
    live_ctx,
    dispatch_ctx,
    supervision_ctx,
    reports_ctx,
    sla_ctx,
    quality_ctx,
    presence_ctx,
    leaders_ctx,
)

__all__ = ["CONTEXTS", "STATS_REFRESH", "dispatch_ctx", "load_directory", "sms_line"]
