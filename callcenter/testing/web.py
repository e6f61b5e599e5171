"""Helpers for tests of the web console: an app config that runs without a PBX, users, and logging in.

``app_client(test_config(tmp_path))`` starts everything for real (store, AGI server, AMI client):
the AGI server listens on a free port, and the AMI client points at a closed port and keeps
retrying quietly, exactly as it would while Asterisk is down. ``login`` logs in an aiohttp test
client; ``login_session`` does the same against an app at a URL (a child process in end-to-end tests
and benchmarks), as a browser would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import ClientWebSocketResponse, web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.app import create_app
from callcenter.config import Config, replace
from callcenter.store import Store, utcnow
from callcenter.store.accounts import Accounts, UserInfo
from callcenter.store.incidents import Incidents
from callcenter.store.models import Dispatch, Incident
from callcenter.testing.sipp import free_port
from callcenter.web.auth import CSRF_HEADER, LOGIN_PATH

DEFAULT_PASSWORD = "correct-horse-battery"
#: A complete, valid fire intake in Jembrana, for tests that need an incident to dispatch.
SAMPLE_INTAKE: dict[str, object] = {
    "reporter_name": "Made Wirawan",
    "callback_number": "+6281234567890",
    "address": "Jl. Udayana 12",
    "district": "Negara",
    "subdistrict": "Lelateng",
    "category": "fire",
    "priority": "critical",
    "victims_count": 1,
    "victims_condition": "luka ringan",
    "access_route": "lewat Jl. Gatot Subroto",
}


def test_config(tmp_path: Path) -> Config:
    """A config for one test: SQLite in ``tmp_path``, AGI and web on port 0, AMI on a dead port."""
    return replace(
        Config(),
        store={"url": f"sqlite+aiosqlite:///{tmp_path / 'callcenter.db'}", "retry_for": 5.0},
        agi={"host": "127.0.0.1", "port": 0},
        # Bound and released at once: nothing listens there, so every connect is refused at once.
        ami={"host": "127.0.0.1", "port": free_port("tcp"), "reconnect_min": 0.2, "reconnect_max": 1.0},
        web={"host": "127.0.0.1", "port": 0},
        log={"json": True},
    )


# Tests import this by name; without the flag pytest would collect it as a test in their module.
test_config.__dict__["__test__"] = False

AppClient = TestClient[web.Request, web.Application]


@contextlib.asynccontextmanager
async def app_client(
    config: Config, prepare: Callable[[web.Application], None] | None = None
) -> AsyncIterator[AppClient]:
    """The whole app (``create_app(config)``) behind a started aiohttp test client, closed afterwards.

    ``prepare`` runs before startup, the last moment keys may be set (``TZ_OFFSET``, ``SLA_INTERVAL``,
    a ``TWILIO`` line aimed at the fake Twilio). The app is ``client.app``, its store ``client.app[STORE]``.
    """
    app = create_app(config)
    if prepare is not None:
        prepare(app)
    async with TestClient(TestServer(app)) as client:
        yield client


async def make_user(
    store: Store,
    username: str,
    role: str,
    *,
    password: str = DEFAULT_PASSWORD,
    interface: str | None = None,
    language: str = "id",
    agency: str | None = None,
) -> UserInfo:
    """Create a user directly in the store (display name: the username capitalised)."""
    return await Accounts(store).create_user(
        username,
        username.capitalize(),
        password,
        role,
        language=language,
        interface=interface,
        agency=agency,
    )


async def login(
    client: TestClient[web.Request, web.Application], username: str, password: str = DEFAULT_PASSWORD
) -> str:
    """Log ``client`` in (its cookie jar keeps the session) and return the CSRF token to send."""
    resp = await client.post("/api/login", json={"username": username, "password": password})
    body = await resp.text()
    assert resp.status == 200, f"login as {username!r} failed: {resp.status} {body}"
    csrf: str = (await resp.json())["csrf_token"]
    return csrf


async def login_session(base_url: str, username: str, password: str = DEFAULT_PASSWORD) -> aiohttp.ClientSession:
    """A new HTTP session logged in to the app at ``base_url``; the caller closes it (``async with``).

    It keeps the session cookie (for an IP address too, as ``127.0.0.1`` is) and sends the session's
    CSRF token with every request, so state changes work like the console's; a failed login raises
    AssertionError with the app's answer.
    """
    jar = aiohttp.CookieJar(unsafe=True)
    async with (
        aiohttp.ClientSession(cookie_jar=jar) as anonymous,
        anonymous.post(f"{base_url}{LOGIN_PATH}", json={"username": username, "password": password}) as resp,
    ):
        body = await resp.text()
        assert resp.status == 200, f"login as {username!r} failed: {resp.status} {body}"
        csrf: str = (await resp.json())["csrf_token"]
    return aiohttp.ClientSession(cookie_jar=jar, headers={CSRF_HEADER: csrf})


async def ws_message(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 3.0) -> dict[str, Any]:
    """The next JSON message of ``type`` ``kind`` on a console WebSocket (others are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            message: dict[str, Any] = await ws.receive_json()
            if message.get("type") == kind:
                return message


class UserSession:
    """One browser: its own cookie jar and CSRF token, against the shared test server."""

    def __init__(self, client: TestClient[Any, Any]) -> None:
        self.client = client
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""

    def url(self, path: str) -> str:
        return str(self.client.make_url(path))

    async def login(self, user: UserInfo) -> UserSession:
        async with self.http.post(
            self.url("/api/login"), json={"username": user.username, "password": DEFAULT_PASSWORD}
        ) as resp:
            assert resp.status == 200, await resp.text()
            self.csrf = (await resp.json())["csrf_token"]
        return self

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.http.get(self.url(path)) as resp:
            return resp.status, await resp.json()

    async def get_raw(self, path: str) -> tuple[int, bytes, str]:
        async with self.http.get(self.url(path)) as resp:
            return resp.status, await resp.read(), resp.content_type

    async def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.post(self.url(path), json=body, headers={"X-CSRF-Token": self.csrf}) as resp:
            return resp.status, await resp.json()

    async def report(
        self,
        dispatch_id: int,
        status: str,
        note: str = "",
        photo: bytes | None = None,
        filename: str = "p.png",
        position: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """An agency status update as the agency view posts it; ``position``: ``latitude``,
        ``longitude``, ``accuracy`` of the officer's browser."""
        form = aiohttp.FormData()
        form.add_field("status", status)
        form.add_field("note", note)
        for name, value in (position or {}).items():
            form.add_field(name, value)
        if photo is not None:
            form.add_field("photo", photo, filename=filename, content_type="image/png")
        async with self.http.post(
            self.url(f"/api/dispatches/{dispatch_id}/updates"), data=form, headers={"X-CSRF-Token": self.csrf}
        ) as resp:
            return resp.status, await resp.json()

    async def ws(self) -> ClientWebSocketResponse:
        ws = await self.http.ws_connect(self.url("/api/ws"))
        hello = await ws.receive_json(timeout=3)
        assert hello["type"] == "hello"
        return ws

    async def close(self) -> None:
        await self.http.close()


async def seed_incident(store: Store, fields: Mapping[str, Any], user_id: int | None, **extra: Any) -> Incident:
    """An incident created as the console does (``Incidents.create``), then ``extra`` columns set
    directly (coordinates, status, deadlines: what a test needs it to have)."""
    incident = await Incidents(store).create(fields, call_id=None, user_id=user_id)
    if not extra:
        return incident

    async def op(session: AsyncSession) -> Incident:
        row = await session.get(Incident, incident.id)
        assert row is not None
        for name, value in extra.items():
            setattr(row, name, value)
        return row

    return await store.transaction("test_incident", op)


#: ``dispatches.leader_epoch`` of a seeded row: a term no node will hold, so no app's dispatch leader
#: claims it and calls the agency (the test owns the row's state).
SEEDED_TERM = 2**62


async def seed_dispatch(store: Store, incident_id: int, agency: str, status: str = "calling") -> int:
    """A dispatch row written straight into the store: creating them is the dispatch core's job, and a
    seeded ``calling`` row is left alone by it (:data:`SEEDED_TERM`)."""

    async def op(session: AsyncSession) -> int:
        now = utcnow()
        row = Dispatch(
            incident_id=incident_id,
            agency=agency,
            status=status,
            created_at=now,
            updated_at=now,
            leader_epoch=SEEDED_TERM,
        )
        session.add(row)
        await session.flush()
        return row.id

    return await store.transaction("test_dispatch", op)
