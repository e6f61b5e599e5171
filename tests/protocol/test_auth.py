"""Login, sessions, CSRF and role checks through the real app (aiohttp test client, SQLite in tmp_path)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, cast

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from structlog.testing import capture_logs

from callcenter.app import create_app
from callcenter.config import Config, replace
from callcenter.logs import ref
from callcenter.store import Store, StoreUnavailable, utcnow
from callcenter.store.accounts import AccountError, Accounts
from callcenter.store.models import User, WebSession
from callcenter.testing.web import app_client, login, make_user, test_config, ws_message
from callcenter.web.auth import COOKIE
from callcenter.web.hub import SESSION_ENDED
from callcenter.web.keys import ACCOUNTS, STORE

Client = TestClient[web.Request, web.Application]
PASSWORD = "correct-horse-battery"
CSRF_ERROR = {"error": "csrf token missing or wrong"}
#: Routes anyone may call; every other route must carry ``roles`` from ``@require``.
#: The Twilio webhooks are authenticated by Twilio's request signature instead (tests/protocol/test_twilio.py).
PUBLIC = {
    "/api/login",
    "/healthz",
    "/metrics",  # loopback or a bearer token (tests/protocol/test_metrics.py)
    "/api/openapi.json",
    "/",
    "/supervisor",  # the page itself; every API it calls is protected
    "/api/twilio/status",  # authenticated by X-Twilio-Signature
    "/api/twilio/gather",
    "/api/twilio/message-status",
    "/rate/{token}",  # the citizen's rating link: the random token is the credential
    "/aml",  # AML receiver: shared secret and/or address allowlist (tests/protocol/test_location.py)
    "/api/twilio/sms",  # inbound SMS (AML by SMS): authenticated by X-Twilio-Signature
    "/l/{token}",  # the caller's location link: random token, 1 h, per-address limit
    # The citizen report app: the page and its shell, and its API (SMS code, then a device cookie;
    # tests/protocol/test_report_app.py)
    "/lapor",
    "/lapor/",
    "/lapor/{name}",
    "/lapor/api/state",
    "/lapor/api/code",
    "/lapor/api/verify",
    "/lapor/api/forget",
    "/lapor/api/reports",
}
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture
async def make_client(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """Start the real app (optionally with ``web`` settings changed) behind a test client."""
    async with contextlib.AsyncExitStack() as clients:

        async def start(**web_cfg: Any) -> Client:
            cfg: Config = test_config(tmp_path)
            if web_cfg:
                cfg = replace(cfg, web=web_cfg)
            return await clients.enter_async_context(app_client(cfg))

        yield start


@pytest.fixture
async def client(make_client: Callable[..., Awaitable[Client]]) -> Client:
    return await make_client()


def store_of(client: Client) -> Store:
    return client.app[STORE]


def session_token(client: Client) -> str | None:
    morsel = client.session.cookie_jar.filter_cookies(client.make_url("/")).get(COOKIE)
    return None if morsel is None else morsel.value


async def status_with_token(client: Client, method: str, path: str, token: str, **kwargs: Any) -> int:
    """A request carrying exactly this session cookie (outside the client's own cookie jar)."""
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        http.request(method, client.make_url(path), headers={"Cookie": f"{COOKIE}={token}"}, **kwargs) as resp,
    ):
        return resp.status


async def post_login(client: Client, username: str, password: str) -> aiohttp.ClientResponse:
    return await client.post("/api/login", json={"username": username, "password": password})


def concrete(path: str) -> str:
    """A request path for a route template: every ``{param}`` becomes ``1``."""
    return re.sub(r"\{[^}]+\}", "1", path)


def is_public(path: str) -> bool:
    return path in PUBLIC or path == "/static" or path.startswith("/static/")


def protected_routes(app: web.Application) -> list[tuple[str, str, Any]]:
    found = []
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if not is_public(path):
            found.append((route.method, path, route.handler))
    return found


# -- login ---------------------------------------------------------------------------------------------


async def test_login_returns_user_and_csrf_and_sets_a_hardened_cookie(client: Client) -> None:
    user = await make_user(store_of(client), "ayu", "calltaker", interface="PJSIP/taker1")
    resp = await post_login(client, "ayu", PASSWORD)
    assert resp.status == 200
    body = await resp.json()
    assert body["user"] == user.as_json()
    assert body["user"]["interface"] == "PJSIP/taker1"
    assert len(body["csrf_token"]) >= 32
    cookies = [c for c in resp.headers.getall("Set-Cookie") if c.startswith(f"{COOKIE}=")]
    assert len(cookies) == 1
    attrs = [a.strip().lower() for a in cookies[0].split(";")]
    assert "httponly" in attrs
    assert "samesite=strict" in attrs
    assert "path=/" in attrs
    assert "max-age=43200" in attrs
    assert "secure" not in attrs  # plain http in the test; Secure only when the request is https
    # The cookie is a random token; the table holds its hash, never the token itself.
    token = session_token(client)
    assert token and len(token) >= 40

    async def rows(session: AsyncSession) -> list[str]:
        return list((await session.scalars(select(WebSession.token_hash))).all())

    hashes = await store_of(client).transaction("t", rows)
    assert token not in hashes and len(hashes) == 1
    me = await client.get("/api/me")
    assert me.status == 200
    assert await me.json() == {"user": user.as_json(), "csrf_token": body["csrf_token"]}


async def test_username_is_case_insensitive(client: Client) -> None:
    await make_user(store_of(client), "ayu", "calltaker")
    assert (await post_login(client, "  Ayu ", PASSWORD)).status == 200


async def test_wrong_password_and_unknown_user_get_the_same_401_and_passwords_are_not_logged(client: Client) -> None:
    await make_user(store_of(client), "ayu", "calltaker")
    with capture_logs() as logs:
        wrong = await post_login(client, "ayu", "not-the-password-123")
        unknown = await post_login(client, "nobody", "not-the-password-123")
    assert wrong.status == unknown.status == 401
    assert await wrong.json() == await unknown.json() == {"error": "wrong username or password"}
    assert session_token(client) is None
    failed = [e for e in logs if e["event"] == "auth.login_failed"]
    # Typed usernames are logged as keyed references only (a password may have been typed there).
    assert [e["username_ref"] for e in failed] == [ref("ayu"), ref("nobody")]
    assert "nobody" not in repr(logs)
    assert "not-the-password-123" not in repr(logs)


async def test_login_logs_success_without_the_password(client: Client) -> None:
    await make_user(store_of(client), "ayu", "calltaker")
    with capture_logs() as logs:
        await login(client, "ayu")
    assert [e["username"] for e in logs if e["event"] == "auth.login"] == ["ayu"]
    assert PASSWORD not in repr(logs)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"[1, 2]", 400),
        (b'{"username": "ayu"}', 422),
        (b'{"username": 5, "password": "x"}', 422),
        (b'{"username": "ayu", "password": ""}', 422),
        (b'{"username": "ayu", "password": null}', 422),
    ],
)
async def test_malformed_login_bodies_get_400_or_422_json(client: Client, body: bytes, status: int) -> None:
    resp = await client.post("/api/login", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == status
    assert "error" in await resp.json()


async def test_absurdly_long_password_is_refused_like_any_wrong_one(client: Client) -> None:
    await make_user(store_of(client), "ayu", "calltaker")
    resp = await post_login(client, "ayu", PASSWORD + "x" * 5000)
    assert resp.status == 401


# -- throttling ----------------------------------------------------------------------------------------


async def test_wrong_passwords_slow_the_guesser_but_the_right_password_still_gets_in(
    make_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await make_client(login_free_failures=3)
    await make_user(store_of(client), "ayu", "calltaker")
    for _ in range(3):
        assert (await post_login(client, "ayu", "wrong-password-1")).status == 401
    started = time.monotonic()
    assert (await post_login(client, "ayu", PASSWORD)).status == 200  # a second's delay, not a lock
    assert time.monotonic() - started >= 0.5  # 1 s after the third attempt began
    await client.post(
        "/api/logout", headers={"X-CSRF-Token": (await (await client.get("/api/me")).json())["csrf_token"]}
    )
    # The guesser who keeps going is held for longer and longer, and told when to come back.
    for _ in range(5):  # three at once, then after 1 s and 2 s
        assert (await post_login(client, "ayu", "wrong-password-1")).status == 401
    with capture_logs() as logs:
        refused = await post_login(client, "ayu", "wrong-password-1")
    assert refused.status == 429
    body = await refused.json()
    assert body["error"] and 3 <= body["retry_after"] <= 4
    assert refused.headers["Retry-After"] == str(body["retry_after"])
    assert [e["event"] for e in logs] == ["auth.login_throttled"]
    assert session_token(client) is None


async def test_concurrent_guesses_cannot_outrun_the_schedule(
    make_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await make_client(login_free_failures=3)
    await make_user(store_of(client), "ayu", "calltaker")
    resps = await asyncio.gather(*(post_login(client, "ayu", f"guess-number-{i}") for i in range(10)))
    # Three at once, a fourth after a second's wait; the rest are told to come back later.
    assert sorted(r.status for r in resps) == [401] * 4 + [429] * 6


async def test_strangers_cannot_lock_calltakers_out_and_supervisors_are_alerted(
    make_client: Callable[..., Awaitable[Client]],
) -> None:
    """Issue 12's measure: after 30 bad logins for random names and 10 for budi, ayu logs in within 2 s,
    all through the same (trusted) HTTPS proxy; the supervisors' consoles hear about the attack."""
    client = await make_client(trusted_proxies=("127.0.0.1",), login_alert_failures=20)
    store = store_of(client)
    for name, role in (("ayu", "calltaker"), ("budi", "calltaker"), ("sari", "supervisor")):
        await make_user(store, name, role)
    supervisor: Client = TestClient(cast(TestServer, client.server))
    await login(supervisor, "sari")
    ws = await supervisor.ws_connect("/api/ws")
    attacker = {"X-Forwarded-For": "198.51.100.7"}
    bad = [
        client.post(
            "/api/login", json={"username": f"user{secrets.token_hex(4)}", "password": "x" * 12}, headers=attacker
        )
        for _ in range(30)
    ] + [
        client.post("/api/login", json={"username": "budi", "password": f"guess-{i}-xyz"}, headers=attacker)
        for i in range(10)
    ]
    with capture_logs() as logs:
        statuses = [r.status for r in await asyncio.gather(*bad)]
    assert set(statuses) <= {401, 429} and statuses.count(401) >= 12
    for desk, who in (("203.0.113.5", "ayu"), ("198.51.100.7", "sari"), ("203.0.113.6", "budi")):
        # ayu at her desk; sari behind the attacker's very address (a shared NAT); budi, whose name
        # was attacked, from his own desk.
        started = time.monotonic()
        resp = await client.post(
            "/api/login", json={"username": who, "password": PASSWORD}, headers={"X-Forwarded-For": desk}
        )
        assert resp.status == 200, (who, resp.status, await resp.text())
        assert time.monotonic() - started < 2.0, who
    alert = await ws_message(ws, "login_attack")
    assert alert["failures"] >= 20 and alert["top_client"] == "198.51.100.7"
    assert any(e["event"] == "auth.login_attack" for e in logs)
    await ws.close()
    await supervisor.close()


async def test_forwarded_headers_count_only_from_a_trusted_proxy(
    make_client: Callable[..., Awaitable[Client]],
) -> None:
    forged = {"X-Forwarded-For": "203.0.113.5", "X-Forwarded-Proto": "https"}
    cases = (("ayu", (), "127.0.0.1", False), ("budi", ("127.0.0.0/8",), "203.0.113.5", True))
    for name, trusted, remote, secure in cases:
        client = await make_client(trusted_proxies=trusted)
        user = await make_user(store_of(client), name, "calltaker")
        resp = await client.post("/api/login", json={"username": name, "password": PASSWORD}, headers=forged)
        assert resp.status == 200
        cookie = next(c for c in resp.headers.getall("Set-Cookie") if c.startswith(f"{COOKIE}="))
        assert ("secure" in [a.strip().lower() for a in cookie.split(";")]) is secure

        async def remotes(session: AsyncSession, user_id: int = user.id) -> list[str | None]:
            return list(await session.scalars(select(WebSession.remote).where(WebSession.user_id == user_id)))

        assert await store_of(client).transaction("t", remotes) == [remote]


async def test_secure_cookie_switch_marks_every_session_cookie_secure(
    make_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await make_client(secure_cookie=True)
    await make_user(store_of(client), "ayu", "calltaker")
    resp = await post_login(client, "ayu", PASSWORD)
    cookie = next(c for c in resp.headers.getall("Set-Cookie") if c.startswith(f"{COOKIE}="))
    assert "secure" in [a.strip().lower() for a in cookie.split(";")]


# -- sessions ------------------------------------------------------------------------------------------


async def test_every_login_gets_a_new_session_and_the_old_one_dies(client: Client) -> None:
    await make_user(store_of(client), "ayu", "calltaker")
    planted = "p" * 43  # session fixation: a token the attacker chose
    client.session.cookie_jar.update_cookies({COOKIE: planted}, client.make_url("/"))
    csrf1 = await login(client, "ayu")
    first = session_token(client)
    assert first and first != planted
    csrf2 = await login(client, "ayu")
    second = session_token(client)
    assert second and second != first
    assert csrf2 != csrf1
    assert await status_with_token(client, "GET", "/api/me", first) == 401
    assert await status_with_token(client, "GET", "/api/me", planted) == 401
    assert await status_with_token(client, "GET", "/api/me", second) == 200


async def test_logout_invalidates_the_session_and_clears_the_cookie(client: Client) -> None:
    await make_user(store_of(client), "ayu", "calltaker")
    csrf = await login(client, "ayu")
    token = session_token(client)
    assert token
    assert (await client.post("/api/logout")).status == 403  # CSRF applies to logout too
    resp = await client.post("/api/logout", headers={"X-CSRF-Token": csrf})
    assert resp.status == 204
    assert session_token(client) is None
    assert (await client.get("/api/me")).status == 401
    assert await status_with_token(client, "GET", "/api/me", token) == 401


async def test_expired_session_is_refused_and_deleted(client: Client) -> None:
    await make_user(store_of(client), "ayu", "calltaker")
    await login(client, "ayu")

    async def expire(session: AsyncSession) -> None:
        await session.execute(update(WebSession).values(expires_at=utcnow() - timedelta(seconds=1)))

    await store_of(client).transaction("expire", expire)
    resp = await client.get("/api/me")
    assert resp.status == 401
    assert await resp.json() == {"error": "login required"}

    async def count(session: AsyncSession) -> int:
        return len((await session.scalars(select(WebSession))).all())

    assert await store_of(client).transaction("count", count) == 0


async def test_session_expiry_slides_with_use_but_at_most_once_a_minute(client: Client) -> None:
    await make_user(store_of(client), "ayu", "calltaker")
    await login(client, "ayu")
    store = store_of(client)

    async def read(session: AsyncSession) -> WebSession:
        row: WebSession | None = await session.scalar(select(WebSession))
        assert row is not None
        return row

    fresh = await store.transaction("read", read)
    assert (await client.get("/api/me")).status == 200
    assert (await store.transaction("read", read)).last_seen_at == fresh.last_seen_at  # no write yet

    old = utcnow() - timedelta(minutes=5)

    async def age(session: AsyncSession) -> None:
        await session.execute(update(WebSession).values(last_seen_at=old, expires_at=utcnow() + timedelta(minutes=1)))

    await store.transaction("age", age)
    assert (await client.get("/api/me")).status == 200
    slid = await store.transaction("read", read)
    assert slid.last_seen_at > old
    assert slid.expires_at > utcnow() + timedelta(hours=11)


async def test_garbage_cookie_is_not_a_session(client: Client) -> None:
    assert await status_with_token(client, "GET", "/api/me", "nonsense") == 401
    assert await status_with_token(client, "GET", "/api/me", "x" * 43) == 401


async def test_deactivated_user_loses_sessions_and_cannot_log_in(client: Client) -> None:
    await make_user(store_of(client), "ayu", "calltaker")
    await login(client, "ayu")

    async def deactivate(session: AsyncSession) -> None:
        await session.execute(update(User).values(active=False))

    await store_of(client).transaction("deactivate", deactivate)
    assert (await client.get("/api/me")).status == 401
    assert (await post_login(client, "ayu", PASSWORD)).status == 401


async def test_logout_closes_that_sessions_websockets_at_once_and_no_others(client: Client) -> None:
    await make_user(store_of(client), "ayu", "calltaker", interface="PJSIP/taker1")
    csrf = await login(client, "ayu")
    mine = await client.ws_connect("/api/ws")
    await ws_message(mine, "hello")
    other_browser: Client = TestClient(cast(TestServer, client.server))
    await login(other_browser, "ayu")
    theirs = await other_browser.ws_connect("/api/ws")
    await ws_message(theirs, "hello")
    started = time.monotonic()
    assert (await client.post("/api/logout", headers={"X-CSRF-Token": csrf})).status == 204
    closed = await mine.receive(timeout=5)
    assert (closed.type, closed.data) == (aiohttp.WSMsgType.CLOSE, SESSION_ENDED)
    assert time.monotonic() - started < 5
    # ayu's other browser keeps its session and its socket.
    assert not theirs.closed
    await theirs.send_str("hi")
    assert (await ws_message(theirs, "ping"))["type"] == "ping"
    await theirs.close()
    await other_browser.close()


async def test_expired_sessions_lose_their_websocket_within_seconds(client: Client) -> None:
    """Idle expiry and the absolute (shift) lifetime end the socket too, found by the hub's session check."""
    await make_user(store_of(client), "ayu", "calltaker")
    for expiry in ("idle", "absolute"):
        await login(client, "ayu")
        ws = await client.ws_connect("/api/ws")
        await ws_message(ws, "hello")

        async def expire(session: AsyncSession, expiry: str = expiry) -> None:
            if expiry == "idle":
                values = {"expires_at": utcnow() - timedelta(seconds=1)}
            else:  # busy all along (the idle expiry slid forward), but the shift is over
                values = {"created_at": utcnow() - timedelta(hours=12, minutes=1)}
            await session.execute(update(WebSession).values(**values))

        started = time.monotonic()
        await store_of(client).transaction("expire", expire)
        closed = await ws.receive(timeout=5)
        assert (closed.type, closed.data) == (aiohttp.WSMsgType.CLOSE, SESSION_ENDED), expiry
        assert time.monotonic() - started < 5
        assert (await client.get("/api/me")).status == 401, expiry


async def test_a_session_ends_at_its_absolute_lifetime_however_busy(client: Client) -> None:
    await make_user(store_of(client), "ayu", "calltaker")
    await login(client, "ayu")
    store = store_of(client)

    async def shift_began(session: AsyncSession) -> None:
        await session.execute(
            update(WebSession).values(
                created_at=utcnow() - timedelta(hours=11, minutes=59, seconds=30),
                last_seen_at=utcnow() - timedelta(minutes=5),
            )
        )

    await store.transaction("age", shift_began)
    assert (await client.get("/api/me")).status == 200  # slides, but not past the 12 h since login

    async def read(session: AsyncSession) -> WebSession:
        found: WebSession | None = await session.scalar(select(WebSession))
        assert found is not None
        return found

    row = await store.transaction("read", read)
    assert row.expires_at <= row.created_at + timedelta(hours=12)


# -- CSRF and origin -----------------------------------------------------------------------------------


async def test_every_state_changing_route_needs_the_csrf_token(client: Client) -> None:
    await make_user(store_of(client), "root", "admin")
    csrf = await login(client, "root")
    unsafe = [(m, p) for m, p, _h in protected_routes(client.app) if m in UNSAFE]
    assert ("POST", "/api/logout") in unsafe
    assert ("PATCH", "/api/me") in unsafe
    assert ("POST", "/api/users") in unsafe
    for method, path in unsafe:
        for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": csrf[:-1]}, {"X-CSRF-Token": ""}):
            resp = await client.request(method, concrete(path), json={}, headers=headers)
            assert resp.status == 403, (method, path, headers)
            assert await resp.json() == CSRF_ERROR
    # The session survived all that, and the right token works.
    resp = await client.patch("/api/me", json={"language": "en"}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 200


async def test_cross_origin_state_changes_are_refused(client: Client) -> None:
    await make_user(store_of(client), "ayu", "calltaker")
    csrf = await login(client, "ayu")
    own = f"http://{client.make_url('/').authority}"
    headers = {"X-CSRF-Token": csrf}
    for origin in ("http://evil.example", "null", own + ".evil.example", "http://127.0.0.1:1"):
        resp = await client.patch("/api/me", json={"language": "en"}, headers={**headers, "Origin": origin})
        assert resp.status == 403, origin
    resp = await client.patch("/api/me", json={"language": "en"}, headers={**headers, "Origin": own})
    assert resp.status == 200
    foreign_login = await client.post(
        "/api/login", json={"username": "ayu", "password": PASSWORD}, headers={"Origin": "http://evil.example"}
    )
    assert foreign_login.status == 403


async def test_login_needs_no_csrf_token(client: Client) -> None:
    await make_user(store_of(client), "ayu", "calltaker")
    resp = await client.post("/api/login", json={"username": "ayu", "password": PASSWORD})
    assert resp.status == 200


# -- roles ---------------------------------------------------------------------------------------------


async def test_route_audit_every_non_public_route_requires_a_role_and_login(client: Client) -> None:
    routes = protected_routes(client.app)
    paths = {p for _m, p, _h in routes}
    assert {"/api/me", "/api/users", "/api/logout", "/api/calls", "/api/queue"} <= paths
    for method, path, handler in routes:
        roles = getattr(handler, "roles", None)
        assert roles, f"{method} {path} has no @require(...)"
        resp = await client.request(method, concrete(path), json={} if method in UNSAFE else None)
        assert resp.status == 401, f"{method} {path} answered {resp.status} without login"


async def test_wrong_role_gets_403(client: Client) -> None:
    await make_user(store_of(client), "ayu", "calltaker")
    csrf = await login(client, "ayu")
    assert (await client.get("/api/users")).status == 403
    resp = await client.post(
        "/api/users",
        json={"username": "evil", "display_name": "E", "password": PASSWORD, "role": "admin"},
        headers={"X-CSRF-Token": csrf},
    )
    assert resp.status == 403
    assert await resp.json() == {"error": "not allowed for your role"}


async def test_read_endpoints_serve_calltakers_and_supervisors_only(client: Client) -> None:
    await make_user(store_of(client), "ayu", "calltaker")
    await make_user(store_of(client), "polisi", "agency", agency="polri")
    await login(client, "ayu")
    assert (await client.get("/api/calls")).status == 200
    assert (await client.get("/api/queue")).status == 200
    assert (await client.get("/api/calls/nope")).status == 404
    await login(client, "polisi")
    assert (await client.get("/api/calls")).status == 403
    assert (await client.get("/healthz")).status in (200, 503)  # public, AMI is down in tests


async def test_admin_creates_and_lists_users(client: Client) -> None:
    await make_user(store_of(client), "root", "admin")
    csrf = await login(client, "root")
    headers = {"X-CSRF-Token": csrf}
    new = {
        "username": "sari",
        "display_name": "Sari",
        "password": "another-long-password",
        "role": "supervisor",
        "language": "en",
        "interface": "PJSIP/sup1",
    }
    resp = await client.post("/api/users", json=new, headers=headers)
    assert resp.status == 201
    created = (await resp.json())["user"]
    assert created["username"] == "sari" and created["role"] == "supervisor" and created["language"] == "en"
    assert "password" not in created and "password_hash" not in created

    dup = await client.post("/api/users", json={**new, "interface": None}, headers=headers)
    assert dup.status == 409
    assert set((await dup.json())["fields"]) == {"username"}
    same_phone = await client.post("/api/users", json={**new, "username": "sari2"}, headers=headers)
    assert same_phone.status == 409
    assert set((await same_phone.json())["fields"]) == {"interface"}

    bad = await client.post(
        "/api/users",
        json={"username": "Bad User!", "display_name": "", "password": "short", "role": "god", "language": "fr"},
        headers=headers,
    )
    assert bad.status == 422
    body = await bad.json()
    assert body["error"] == "invalid input"
    assert set(body["fields"]) == {"username", "display_name", "password", "role", "language"}
    for junk in (b"{", b'"x"', b'{"username": 1}', b'{"username": "a", "is_admin": true}'):
        resp = await client.post("/api/users", data=junk, headers={**headers, "Content-Type": "application/json"})
        assert resp.status in (400, 422), junk

    listed = await (await client.get("/api/users")).json()
    assert [u["username"] for u in listed["users"]] == ["root", "sari"]
    assert "sari" in [u.username for u in await Accounts(store_of(client)).list_users()]
    await login(client, "sari", "another-long-password")


async def test_patch_me_changes_only_the_language(client: Client) -> None:
    await make_user(store_of(client), "ayu", "calltaker")
    csrf = await login(client, "ayu")
    headers = {"X-CSRF-Token": csrf}
    resp = await client.patch("/api/me", json={"language": "en"}, headers=headers)
    assert resp.status == 200
    assert (await resp.json())["user"]["language"] == "en"
    assert (await (await client.get("/api/me")).json())["user"]["language"] == "en"
    for body in ({"language": "fr"}, {}, {"language": "id", "role": "admin"}, {"language": None}):
        resp = await client.patch("/api/me", json=body, headers=headers)
        assert resp.status == 422, body
        assert "fields" in await resp.json()
    resp = await client.patch("/api/me", data=b"{oops", headers={**headers, "Content-Type": "application/json"})
    assert resp.status == 400
    me = await (await client.get("/api/me")).json()
    assert me["user"]["role"] == "calltaker" and me["user"]["language"] == "en"


async def test_a_database_outage_while_resolving_the_session_is_a_json_503(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session middleware leaves the outage to the error middleware: same answer as any handler's."""
    await make_user(store_of(client), "ayu", "calltaker")
    await login(client, "ayu")

    async def unreachable(_token: str) -> None:
        raise StoreUnavailable("resolve_session: database unreachable")

    monkeypatch.setattr(client.app[ACCOUNTS].sessions, "resolve", unreachable)
    for method, path in (("GET", "/api/me"), ("POST", "/api/logout")):
        resp = await client.request(method, path)
        assert resp.status == 503, path
        assert await resp.json() == {"error": "database unavailable, try again shortly"}


# -- accounts store ------------------------------------------------------------------------------------


async def test_accounts_validate_and_hash(store: Store) -> None:
    accounts = Accounts(store)
    with pytest.raises(AccountError) as err:
        await accounts.create_user("a", "A", "short", "nobody", language="xx", interface="bad interface")
    assert set(err.value.fields) == {"username", "password", "role", "language", "interface"}
    user = await accounts.create_user("Ayu", "Ayu\x00 ", PASSWORD, "calltaker")
    assert user.username == "ayu" and user.display_name == "Ayu"

    async def stored(session: AsyncSession) -> str:
        row = await session.scalar(select(User.password_hash).where(User.id == user.id))
        assert row is not None
        return row

    encoded = await store.transaction("hash", stored)
    assert encoded.startswith("$argon2id$") and PASSWORD not in encoded
    with pytest.raises(ValueError, match="already taken"):
        await accounts.create_user("ayu", "Other", PASSWORD, "admin")


async def test_old_hash_parameters_are_upgraded_at_login(store: Store) -> None:
    weak = Accounts(store, hasher=PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1))
    user = await weak.create_user("ayu", "Ayu", PASSWORD, "calltaker")
    strong = Accounts(store)

    async def stored(session: AsyncSession) -> str:
        row = await session.scalar(select(User.password_hash).where(User.id == user.id))
        assert row is not None
        return row

    before = await store.transaction("hash", stored)
    assert strong.hasher.check_needs_rehash(before)
    assert await strong.authenticate("ayu", PASSWORD) == user
    after = await store.transaction("hash", stored)
    assert after != before and not strong.hasher.check_needs_rehash(after)
    assert await strong.authenticate("ayu", PASSWORD) == user
    assert await strong.authenticate("ayu", "wrong-password-1") is None


async def test_unknown_users_cost_a_verify_too(store: Store) -> None:
    calls: list[str] = []

    class Counting(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
            calls.append(str(hash))
            return super().verify(hash, password)

    accounts = Accounts(store, hasher=Counting())
    assert await accounts.authenticate("ghost", "whatever-password") is None
    assert await accounts.authenticate("Not A Valid Name", "whatever-password") is None
    assert len(calls) == 2


async def test_sessions_resolve_and_purge(store: Store) -> None:
    accounts = Accounts(store, session_lifetime=timedelta(hours=1))
    user = await accounts.create_user("ayu", "Ayu", PASSWORD, "calltaker")
    token, csrf = await accounts.sessions.create(user.id, "10.0.0.1")
    assert await accounts.sessions.resolve(token) == (user, csrf)
    other, _ = await accounts.sessions.create(user.id, None)

    async def expire(session: AsyncSession) -> None:
        await session.execute(update(WebSession).values(expires_at=utcnow() - timedelta(seconds=1)))

    await store.transaction("expire", expire)
    assert await accounts.sessions.purge_expired() == 2
    assert await accounts.sessions.resolve(token) is None
    assert await accounts.sessions.resolve(other) is None


# -- command line --------------------------------------------------------------------------------------


def test_cli_user_add_creates_a_user_who_can_log_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from callcenter import cli

    cfg = test_config(tmp_path)
    config_file = tmp_path / "callcenter.toml"
    config_file.write_text(f'[store]\nurl = "{cfg.store.url}"\n', encoding="utf-8")
    monkeypatch.setattr(cli, "configure_logging", lambda *a, **k: None)  # keep pytest's log capture
    monkeypatch.setattr("getpass.getpass", lambda *a, **k: pytest.fail("must not prompt"))
    monkeypatch.setenv("CALLCENTER_NEW_PASSWORD", "typed-by-a-script-123")
    argv = ["-c", str(config_file), "user", "add", "ayu", "--role", "calltaker", "--name", "Ayu Lestari"]
    assert cli.main([*argv, "--interface", "PJSIP/taker1", "--language", "en"]) == 0
    assert "ayu" in capsys.readouterr().out
    assert cli.main(argv) == 1  # taken
    assert "already taken" in capsys.readouterr().err
    monkeypatch.setenv("CALLCENTER_NEW_PASSWORD", "short")
    assert cli.main(["-c", str(config_file), "user", "add", "budi", "--role", "admin", "--name", "Budi"]) == 1
    assert cli.main(["-c", str(config_file), "user", "list"]) == 0
    listed = capsys.readouterr().out
    assert "ayu" in listed and "PJSIP/taker1" in listed and "budi" not in listed
    with pytest.raises(SystemExit):
        cli.main([*argv, "--password", "on-the-command-line"])

    async def check() -> None:
        async with TestClient(TestServer(create_app(cfg))) as client:
            await login(client, "ayu", "typed-by-a-script-123")
            me = await (await client.get("/api/me")).json()
            assert me["user"]["display_name"] == "Ayu Lestari"
            assert me["user"]["interface"] == "PJSIP/taker1"
            assert me["user"]["language"] == "en"

    asyncio.run(check())


def test_openapi_describes_the_auth_routes() -> None:
    from callcenter.web.openapi import build_spec

    spec = build_spec()
    assert {"post"} <= set(spec["paths"]["/api/login"])
    assert {"get", "patch"} <= set(spec["paths"]["/api/me"])
    assert {"get", "post"} <= set(spec["paths"]["/api/users"])
    assert "post" in spec["paths"]["/api/logout"]
    assert set(spec["components"]["schemas"]["UserInfo"]["required"]) == {
        "id",
        "username",
        "display_name",
        "role",
        "language",
        "interface",
        "agency",
    }


async def test_cross_origin_websocket_upgrades_are_refused(client: Client) -> None:
    """Cross-site WebSocket hijacking: a GET, so no CSRF token, but the browser always sends Origin."""
    await make_user(store_of(client), "ayu", "calltaker")
    await login(client, "ayu")
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Origin": "http://evil.example"}
    resp = await client.get("/api/me", headers=upgrade)
    assert resp.status == 403
    assert (await client.get("/api/me", headers={"Origin": "http://evil.example"})).status == 200  # plain reads
