"""Last line of defence for HTTP: no traceback ever reaches a browser, and a database outage says so.

Handlers validate their input and answer 4xx themselves (directly, or by raising ``Reply``); what
else reaches this middleware is either the
store giving up after its retry window (503: the call-taker should retry, the data is not lost on
their screen) or a bug (500, logged with its traceback).
"""

from __future__ import annotations

import structlog
from aiohttp import web

from callcenter.store import StoreUnavailable
from callcenter.web.access import Handler, Reply, error

log = structlog.get_logger("callcenter.web")


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Reply as reply:
        return reply.response
    except StoreUnavailable as exc:
        log.error("web.store_unavailable", path=request.path, error=str(exc))
        return error(503, "database unavailable, try again shortly")
    except Exception:
        log.exception("web.unhandled", path=request.path, method=request.method)
        return web.json_response({"error": "internal error"}, status=500)
