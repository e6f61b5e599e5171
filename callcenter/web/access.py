"""Who is asking, and may they: the contract between the session middleware and every handler.

The middleware (``web/auth.py``) puts the logged-in user on the request; handlers declare the
roles they serve with ``@require(...)``. Checks happen on the server for every route, whatever the
page shows or hides.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

ROLES = ("calltaker", "supervisor", "agency", "admin")
LANGUAGES = ("id", "en")


@dataclass(frozen=True)
class UserInfo:
    id: int
    username: str
    display_name: str
    role: str
    language: str
    interface: str | None
    agency: str | None

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "username": self.username,
            "display_name": self.display_name,
            "role": self.role,
            "language": self.language,
            "interface": self.interface,
            "agency": self.agency,
        }


#: Set by the session middleware on requests that carry a valid session.
USER = web.RequestKey("user", UserInfo)
#: The session's CSRF token (also set by the middleware), for pages that need to echo it.
CSRF = web.RequestKey("csrf", str)

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
