"""End-to-end fixtures shared by the tier: the database an app child process uses, a store on it, a
logged-in call-taker, Chromium for the browser tests, and two app nodes on PostgreSQL (``start_nodes``).

Each module defines its own ``app`` fixture (the child process with the environment its tests need);
``store`` and ``taker`` use whichever ``app`` the module has.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, async_playwright

from callcenter.pbx.harness import TestPbx
from callcenter.store import Store
from callcenter.testing.app import AppProcess
from callcenter.testing.fake_twilio import FakeTwilio
from callcenter.testing.nodes import AppNodes, StartNodes
from callcenter.testing.postgres import ThrowawayPostgres
from callcenter.testing.web import login_session, make_user

#: Debian's chromium (scripts/setup.sh installs it); Playwright drives it without a browser download.
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed (scripts/setup.sh installs it)")
    async with async_playwright() as p:
        b = await p.chromium.launch(
            executable_path=CHROMIUM,
            # No sandbox as root; no background networking: this machine has no network to reach.
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-gpu"],
        )
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def fake_twilio() -> AsyncIterator[FakeTwilio]:
    """Twilio's local recorder: point an app at it with ``fake_twilio.app_env(public_url)``."""
    async with FakeTwilio() as fake:
        yield fake


@pytest.fixture
def db_url(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The embedded SQLite file; ``indirect`` "postgresql" gives a fresh database on a real server."""
    if getattr(request, "param", "sqlite") == "postgresql":
        pg: ThrowawayPostgres = request.getfixturevalue("postgres")
        return pg.create_database(f"e2e_{uuid.uuid4().hex[:12]}")
    return f"sqlite+aiosqlite:///{tmp_path}/callcenter.db"


@pytest.fixture
async def start_nodes(
    pbx: TestPbx, pbx_ports: dict[str, int], postgres: ThrowawayPostgres, tmp_path: Path
) -> AsyncIterator[StartNodes]:
    """``await start_nodes(store_url=None, node_env=(), env=None)``: two app nodes (docs/nodes.md) as processes
    on a fresh database of the session's PostgreSQL (or on ``store_url``) and the session's PBX, whose
    FastAGI list names both (``pbx_ports`` agi, agi2); started, one of them leading; stopped after.
    ``env`` goes to both nodes, ``node_env[i]`` to node *i* (``callcenter.testing.nodes.AppNodes``)."""
    started: list[AppNodes] = []

    async def start(
        store_url: str | None = None, node_env: Sequence[dict[str, str]] = (), env: dict[str, str] | None = None
    ) -> AppNodes:
        await pbx.await_idle(timeout=30)
        url = store_url or postgres.create_database(f"nodes_{uuid.uuid4().hex[:12]}")
        agi = [pbx_ports["agi"], pbx_ports["agi2"]]
        nodes = AppNodes(pbx, url, tmp_path, agi, env=env, node_env=node_env)
        started.append(nodes)
        await nodes.start()
        return nodes

    yield start
    for nodes in started:
        await nodes.stop()


@pytest.fixture
async def store(app: AppProcess, db_url: str) -> AsyncIterator[Store]:
    """The app's database, opened once the app has started (and so migrated it)."""
    s = Store.from_url(db_url, retry_for=5)
    yield s
    await s.close()


@pytest.fixture
async def taker(app: AppProcess, store: Store) -> AsyncIterator[aiohttp.ClientSession]:
    """A call-taker logged in to the child app (the session sends its CSRF token)."""
    await make_user(store, "taker", "calltaker")
    async with await login_session(app.base_url, "taker") as http:
        yield http
