"""The composition root: config → store → AGI server → AMI client → web, each a ``cleanup_ctx``.

``create_app`` is the one place that knows every part: it sets the config, registers the startup
contexts (``callcenter/wiring.py``, which builds each service and puts it on the app under its key from
``web/keys.py``) and the web routes. ``serve`` runs it until a signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from callcenter.config import Config
from callcenter.notify import Notifier, keep_alive
from callcenter.web import (
    api,
    auth,
    callbacks_api,
    console_api,
    dispatch_api,
    live,
    location_api,
    map_api,
    metrics,
    openapi,
    pages,
    presence_api,
    quality_api,
    report_app,
    report_desk,
    reports_api,
    supervisor_api,
    twilio_hooks,
)
from callcenter.web.errors import errors_middleware
from callcenter.web.keys import CONFIG, METRICS, TZ_OFFSET
from callcenter.wiring import CONTEXTS

log = structlog.get_logger("callcenter.app")


def create_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[errors_middleware, *auth.middlewares()], client_max_size=2 * 1024 * 1024)
    app[CONFIG] = config
    app[METRICS] = metrics.new_registry(app)
    offset = config.supervision.offset()
    if offset is not None:
        app[TZ_OFFSET] = offset
    # Order matters: each context finds what the ones before it set; cleanup runs in reverse.
    app.cleanup_ctx.extend(CONTEXTS)
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
        location_api,
        map_api,
        report_app,
        report_desk,
        reports_api,
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
