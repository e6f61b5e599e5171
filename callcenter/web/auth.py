"""Login, sessions and CSRF for the console (the Auth section of ``docs/console-api.md``).

Two middlewares run before every handler:

* the session middleware turns the ``cc_session`` cookie into ``request[USER]``/``request[CSRF]``;
  it decides *who* is asking, never whether they may (that is ``@require`` on each handler);
* the CSRF middleware refuses state-changing requests (POST/PUT/PATCH/DELETE) that do not echo the
  session's CSRF token in ``X-CSRF-Token``, or that come from another origin. SameSite=Strict
  cookies already stop most cross-site requests; the token also covers older browsers and
  same-site-but-other-origin pages. A state-changing request with no session at all gets 401 here,
  so no route can be driven anonymously by accident.

Failed logins are slowed, never locked out (``web/throttle.py``), per username and client as
``web/clients.py`` reads it (forwarded headers only from trusted proxies). Sessions end everywhere:
logging out closes that session's WebSockets at once, deactivating an account closes all of its user's,
and the live hub re-checks every open socket's session every few seconds (``web/hub.py``).
"""

from __future__ import annotations

import asyncio
import hmac
import math

import structlog
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from yarl import URL

from callcenter.logs import ref
from callcenter.store.accounts import AccountError, normalise_username, token_hash
from callcenter.store.roles import ADMIN, LANGUAGES, ROLES
from callcenter.web.access import CSRF, SESSION, USER, error, invalid, json_object, require, user_of
from callcenter.web.clients import client_group
from callcenter.web.keys import ACCOUNTS, CLIENTS, CONFIG, HUB, LOGIN_GUARD

log = structlog.get_logger("callcenter.auth")
routes = web.RouteTableDef()

COOKIE = "cc_session"
CSRF_HEADER = "X-CSRF-Token"
LOGIN_PATH = "/api/login"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: The only state-changing paths the CSRF middleware lets through without a session and token: the
#: login itself, Twilio's webhooks (called by Twilio, not a browser; ``web/twilio_hooks.py``
#: authenticates each request by its ``X-Twilio-Signature`` instead, the inbound SMS one too) and the
#: AML receiver (a shared secret and/or an address allowlist, ``web/location_api.py``). Adding a path
#: here makes it anonymous: its handler must authenticate the request itself.
PUBLIC_POST_PATHS = frozenset(
    {LOGIN_PATH, "/api/twilio/status", "/api/twilio/gather", "/api/twilio/message-status", "/api/twilio/sms", "/aml"}
)
#: Path prefixes of the same kind: the citizen's rating page and location link, where the random
#: token in the path is the only credential (``web/callbacks_api.py``, ``web/location_api.py``), and the
#: report app's API, authenticated by its own device cookie (SameSite=Strict) or an SMS code
#: (``web/report_app.py``); the cross-origin check above still applies to all of them.
PUBLIC_POST_PREFIXES = ("/rate/", "/l/", "/lapor/api/")
#: Paths whose requests never need a session lookup (assets, the monitor's liveness probe, the metrics
#: scrape, which checks its own loopback-or-token rule: ``web/metrics.py``).
_NO_SESSION_PREFIXES = ("/static/", "/healthz", "/metrics")
# -- middlewares -------------------------------------------------------------------------------------


def _same_origin(request: web.Request, origin: str) -> bool:
    """Whether an ``Origin`` header names the host this request was sent to.

    Host and explicit port are compared (a TLS-terminating proxy makes our own scheme unreliable);
    an ``http`` origin is still refused on an https request.
    """
    try:
        url = URL(origin)
        ours = URL(f"http://{request.host}")
    except ValueError:
        return False
    if url.scheme not in ("http", "https") or not url.host or url.path not in ("", "/"):
        return False
    if request.secure and url.scheme != "https":
        return False
    return url.host.lower() == (ours.host or "").lower() and url.explicit_port == ours.explicit_port


def _session_max_age(request: web.Request) -> int:
    """The cookie lives as long as a session can (its absolute lifetime); the server ends it sooner
    when it goes idle."""
    return int(request.app[CONFIG].web.session_max_hours * 3600)


def _secure(request: web.Request) -> bool | None:
    """``Secure`` on HTTPS (ours, or a trusted proxy's) and whenever ``[web] secure_cookie`` says so."""
    return True if request.app[CLIENTS].is_https(request) else None


def _clear_cookie(request: web.Request, response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/", httponly=True, samesite="Strict", secure=_secure(request))


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Resolve the session cookie; an unknown or expired one is cleared from the browser. A database
    outage while resolving it is answered 503 by the error middleware, which runs outside this one."""
    token = request.cookies.get(COOKIE)
    if not token or request.path.startswith(_NO_SESSION_PREFIXES):
        return await handler(request)
    resolved = await request.app[ACCOUNTS].sessions.resolve(token)
    if resolved is not None:
        request[USER], request[CSRF] = resolved
        request[SESSION] = token_hash(token)
    response = await handler(request)
    if resolved is None and not response.prepared and COOKIE not in response.cookies:
        _clear_cookie(request, response)
    return response


@web.middleware
async def csrf_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse cross-origin and token-less state changes (and cross-origin WebSocket upgrades)."""
    unsafe = request.method in UNSAFE_METHODS
    upgrade = request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
    if not (unsafe or upgrade):
        return await handler(request)
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is not None and not _same_origin(request, origin):
        log.warning("auth.cross_origin_refused", path=request.path, method=request.method, origin=origin[:200])
        return error(403, "cross-origin request refused")
    public = request.path in PUBLIC_POST_PATHS or request.path.startswith(PUBLIC_POST_PREFIXES)
    if not unsafe or public or request.match_info.http_exception is not None:
        return await handler(request)  # unknown paths and wrong methods get their 404/405 as usual
    expected = request.get(CSRF)
    if expected is None:
        return error(401, "login required")
    sent = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(sent.encode("utf-8", "surrogateescape"), expected.encode("utf-8")):
        log.warning("auth.csrf_refused", path=request.path, method=request.method, user=request[USER].username)
        return error(403, "csrf token missing or wrong")
    return await handler(request)


def middlewares() -> list[Middleware]:
    """Session first (it sets the user), then CSRF (it needs the session's token)."""
    return [session_middleware, csrf_middleware]


# -- helpers -----------------------------------------------------------------------------------------


def _remote(request: web.Request) -> str:
    """The client's address: the peer's, or what a trusted proxy forwarded (``web/clients.py``)."""
    return request.app[CLIENTS].address(request)


def _set_session_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=_session_max_age(request),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
    )


# -- endpoints ---------------------------------------------------------------------------------------


@routes.post(LOGIN_PATH)
async def login(request: web.Request) -> web.Response:
    """Public: check the password, then start a *new* session (never reuse the one the browser sent)."""
    body = await json_object(request)
    fields = {
        name: "required" for name in ("username", "password") if not isinstance(body.get(name), str) or not body[name]
    }
    if fields:
        return invalid(fields)
    username = normalise_username(body["username"])[:64]
    password: str = body["password"]
    remote = _remote(request)
    client = client_group(remote)
    accounts, guard = request.app[ACCOUNTS], request.app[LOGIN_GUARD]
    admission = await guard.admit(username, client)
    if admission.refused > 0:
        retry_after = math.ceil(admission.refused)
        # No username: what was typed there may be a password typed into the wrong field.
        log.warning("auth.login_throttled", client=client, retry_after=retry_after)
        return web.json_response(
            {"error": "too many failed logins, try again later", "retry_after": retry_after},
            status=429,
            headers={hdrs.RETRY_AFTER: str(retry_after)},
        )
    if admission.wait > 0:
        await asyncio.sleep(admission.wait)  # the progressive delay: a slower answer, not a lockout
    user = await accounts.authenticate(username, password)
    if user is None:
        await guard.failed(username, client)
        log.warning("auth.login_failed", username_ref=ref(username), remote=remote)
        return error(401, "wrong username or password")
    await guard.succeeded(username, client)
    old = request.cookies.get(COOKIE)
    if old:
        await accounts.sessions.delete(old)
    await accounts.sessions.purge_expired()
    token, csrf = await accounts.sessions.create(user.id, remote)
    log.info("auth.login", user_id=user.id, username=user.username, role=user.role, remote=remote)
    response = web.json_response({"user": user.as_json(), "csrf_token": csrf})
    _set_session_cookie(request, response, token)
    return response


@routes.post("/api/logout")
@require(*ROLES)
async def logout(request: web.Request) -> web.Response:
    token = request.cookies.get(COOKIE)
    if token:
        await request.app[ACCOUNTS].sessions.delete(token)
    hub = request.app.get(HUB)
    if hub is not None:
        await hub.end_sessions(lambda socket: socket.session == request[SESSION], "logged out")
    log.info("auth.logout", user_id=user_of(request).id, username=user_of(request).username)
    response = web.Response(status=204)
    _clear_cookie(request, response)
    return response


@routes.get("/api/me")
@require(*ROLES)
async def me(request: web.Request) -> web.Response:
    return web.json_response({"user": user_of(request).as_json(), "csrf_token": request[CSRF]})


@routes.patch("/api/me")
@require(*ROLES)
async def update_me(request: web.Request) -> web.Response:
    """Only the UI language is the user's own to change; anything else is refused, not ignored."""
    body = await json_object(request)
    fields = {name: "cannot be changed here" for name in body if name != "language"}
    language = body.get("language")
    if language not in LANGUAGES:
        fields["language"] = f"one of {', '.join(LANGUAGES)}"
    if fields:
        return invalid(fields)
    try:
        user = await request.app[ACCOUNTS].set_language(user_of(request).id, str(language))
    except LookupError:
        return error(401, "login required")
    return web.json_response({"user": user.as_json()})


@routes.get("/api/users")
@require(ADMIN)
async def list_users(request: web.Request) -> web.Response:
    users = await request.app[ACCOUNTS].list_users()
    return web.json_response({"users": [u.as_json() for u in users]})


@routes.post("/api/users")
@require(ADMIN)
async def create_user(request: web.Request) -> web.Response:
    body = await json_object(request)
    fields: dict[str, str] = {}
    for name in ("username", "display_name", "password", "role"):
        if not isinstance(body.get(name), str):
            fields[name] = "required"
    for name in ("language", "interface", "agency"):
        if body.get(name) is not None and not isinstance(body[name], str):
            fields[name] = "must be a string"
    unknown = set(body) - {"username", "display_name", "password", "role", "language", "interface", "agency"}
    fields.update({name: "unknown field" for name in sorted(unknown)})
    if fields:
        return invalid(fields)
    try:
        user = await request.app[ACCOUNTS].create_user(
            body["username"],
            body["display_name"],
            body["password"],
            body["role"],
            language=body.get("language") or "id",
            interface=body.get("interface"),
            agency=body.get("agency"),
        )
    except AccountError as exc:
        if exc.conflict:
            return error(409, "already in use", fields=exc.fields)
        return invalid(exc.fields)
    log.info("auth.user_created", user_id=user.id, username=user.username, role=user.role, by=user_of(request).username)
    return web.json_response({"user": user.as_json()}, status=201)


@routes.patch("/api/users/{id}")
@require(ADMIN)
async def update_user(request: web.Request) -> web.Response:
    """Deactivate (or reactivate) an account: ``{"active": false}``. A deactivated user's sessions are
    deleted and every WebSocket they hold is closed at once, so an officer who left stops receiving
    incidents that moment."""
    raw = request.match_info["id"]
    if not raw.isdigit() or not 1 <= int(raw) <= 2**31 - 1:
        return error(404, "no such user")
    body = await json_object(request)
    fields = {str(name)[:64]: "cannot be changed here" for name in body if name != "active"}
    if not isinstance(body.get("active"), bool):
        fields["active"] = "true or false"
    if fields:
        return invalid(fields)
    try:
        user = await request.app[ACCOUNTS].set_active(int(raw), body["active"])
    except LookupError:
        return error(404, "no such user")
    if not body["active"]:
        hub = request.app.get(HUB)
        if hub is not None:
            await hub.end_sessions(lambda socket: socket.user.id == user.id, "account deactivated")
    log.info("auth.user_active", user_id=user.id, active=body["active"], by=user_of(request).username)
    return web.json_response({"user": user.as_json()})
