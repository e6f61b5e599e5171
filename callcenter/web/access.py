"""Who is asking, and may they: the contract between the session middleware and every handler.

The middleware (``web/auth.py``) puts the logged-in user on the request; handlers declare the
roles they serve with ``@require(...)``. Checks happen on the server for every route, whatever the
page shows or hides.

Also the few request rules every API module shares, so that one input means the same everywhere:
``Reply`` for answering a 4xx from deep inside a handler, the 422 body naming bad fields, and the
``from``/``to`` date filters read as the centre's local days.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any

import structlog
from aiohttp import web

from callcenter.store.accounts import UserInfo
from callcenter.store.roles import ROLES
from callcenter.web.keys import TZ_OFFSET

log = structlog.get_logger("callcenter.web.access")

#: Set by the session middleware on requests that carry a valid session.
USER = web.RequestKey("user", UserInfo)
#: The session's CSRF token (also set by the middleware), for pages that need to echo it.
CSRF = web.RequestKey("csrf", str)
#: Which session the request belongs to (the stored hash of its token), so that a WebSocket can be
#: closed when exactly that session ends.
SESSION = web.RequestKey("session", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Reply(Exception):
    """Raised anywhere in a handler to answer with ``response`` (a 4xx with its JSON body) at once.

    The app's error middleware turns it into the response, so handlers stay flat without each
    module wrapping its routes in a decorator of its own.
    """

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.text)
        self.response = response


def error(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def invalid(fields: dict[str, str]) -> web.Response:
    """422 naming each bad field, so a form can mark it instead of showing one vague message."""
    return error(422, "invalid input", fields=fields)


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object; anything else is answered 400 (raised as ``Reply``)."""
    try:
        body = await request.json()
    except ValueError:
        raise Reply(error(400, "malformed JSON")) from None
    if not isinstance(body, dict):
        raise Reply(error(400, "expected a JSON object"))
    return body


def require(*roles: str) -> Callable[[Handler], Handler]:
    """Allow the handler only to logged-in users with one of ``roles`` (401 / 403 JSON otherwise)."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}")

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def checked(request: web.Request) -> web.StreamResponse:
            user = request.get(USER)
            if user is None:
                return error(401, "login required")
            if user.role not in roles:
                return error(403, "not allowed for your role")
            return await handler(request)

        checked.__dict__["roles"] = roles
        return checked

    return wrap


def user_of(request: web.Request) -> UserInfo:
    """The logged-in user of a request that passed ``require`` (a bug if there is none)."""
    return request[USER]


# -- dates in query filters --------------------------------------------------------------------------

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def server_offset() -> timedelta:
    """The server's current UTC offset, floored to whole hours (what ``Stats`` can group on)."""
    offset = datetime.now().astimezone().utcoffset() or timedelta(0)
    whole = timedelta(hours=offset // timedelta(hours=1))
    if whole != offset:
        log.warning("stats.offset_rounded", offset=str(offset), used=str(whole))
    return whole


def centre_offset(app: web.Application) -> timedelta:
    """The offset that turns the centre's wall-clock days into instants: ``app[TZ_OFFSET]`` when set,
    else the server's. Every date filter uses this one, so a day on the abandoned list is the same day
    as in the statistics."""
    offset = app.get(TZ_OFFSET)
    return offset if offset is not None else server_offset()


def _instant(name: str, raw: str, offset: timedelta, *, end: bool) -> datetime:
    """``YYYY-MM-DD`` is a local day (as the end of a range: the whole day is included); a datetime
    with an offset is taken as is, a naive one as local time."""
    try:
        if _DATE.fullmatch(raw):
            day = datetime.combine(datetime.strptime(raw, "%Y-%m-%d").date(), time(), tzinfo=UTC)
            return day + (timedelta(days=1) if end else timedelta(0)) - offset
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise Reply(invalid({name: "not an ISO 8601 date (YYYY-MM-DD) or date-time"})) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC) - offset
    return value.astimezone(UTC)


def date_range(request: web.Request, offset: timedelta) -> tuple[datetime | None, datetime | None]:
    """The ``from``/``to`` query parameters as UTC instants (None when absent), read in the centre's
    local time ``offset``; a reversed range is a 422 on ``to`` (raised as :class:`Reply`)."""
    q = request.query
    start = _instant("from", q["from"], offset, end=False) if q.get("from") else None
    end = _instant("to", q["to"], offset, end=True) if q.get("to") else None
    if start is not None and end is not None and end <= start:
        raise Reply(invalid({"to": "must be after from"}))
    return start, end
