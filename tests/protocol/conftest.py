"""Protocol-tier fixtures: stores on the embedded SQLite file and on a real PostgreSQL, and a scripted AMI."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from callcenter.config import replace
from callcenter.store import Store
from callcenter.testing.fake_ami import FakeAmi
from callcenter.testing.postgres import ThrowawayPostgres
from callcenter.testing.wait import until
from callcenter.testing.web import AppClient, app_client, test_config
from callcenter.web.keys import AMI, TRACKER


@pytest.fixture
def own_postgres() -> Iterator[ThrowawayPostgres]:
    """A server of the test's own, for tests that stop and restart it."""
    with ThrowawayPostgres() as pg:
        yield pg


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """URL of a fresh, empty database on ``backend``."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'callcenter.db'}"
    pg: ThrowawayPostgres = request.getfixturevalue("postgres")
    return pg.create_database(f"t_{uuid.uuid4().hex[:16]}")


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    """An upgraded store on a fresh database (short retry window, so a broken test fails fast)."""
    store = Store.from_url(db_url, retry_for=5.0)
    await store.upgrade()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def fake_ami() -> AsyncIterator[FakeAmi]:
    """A scripted Asterisk Manager on a free loopback port."""
    fake = FakeAmi()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def ami_app(tmp_path: Path, fake_ami: FakeAmi) -> AsyncIterator[Callable[..., Awaitable[AppClient]]]:
    """Start the real app wired to ``fake_ami`` (``web={...}`` etc. change config sections); it returns once
    the AMI link is up and the first resync is done."""
    async with contextlib.AsyncExitStack() as clients:

        async def start(**sections: Any) -> AppClient:
            ami = {"port": fake_ami.port, "username": fake_ami.username, "secret": fake_ami.secret}
            ami["reconnect_min"] = 0.05
            cfg = replace(test_config(tmp_path), ami=ami, **sections)
            client = await clients.enter_async_context(app_client(cfg))
            await client.app[AMI].wait_ready(5)
            await until(lambda: client.app[TRACKER].link_up, what="first resync")
            return client

        yield start
