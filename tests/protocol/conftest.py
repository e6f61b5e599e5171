"""Protocol-tier fixtures: stores on the embedded SQLite file and on a real PostgreSQL, and a scripted AMI."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from callcenter.store import Store
from callcenter.testing.fake_ami import FakeAmi
from callcenter.testing.postgres import ThrowawayPostgres


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
