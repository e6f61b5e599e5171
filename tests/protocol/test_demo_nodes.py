"""``callcenter demo --nodes N``: its database (SQLite for one node, a throwaway PostgreSQL for more) and
the bounds of N. The whole two-node demo on the real PBX is what tests/e2e/test_nodes_chaos.py runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from callcenter.cli import main
from callcenter.config import replace
from callcenter.demo import demo_database, ensure_demo_users
from callcenter.store import Store, StoreUnavailable
from callcenter.store.accounts import Accounts
from callcenter.testing.web import test_config


async def test_one_node_keeps_the_configured_store(tmp_path: Path) -> None:
    config = test_config(tmp_path)
    async with demo_database(config, 1) as url:
        assert url == config.store.url


@pytest.mark.postgres
async def test_two_nodes_get_a_throwaway_postgresql_removed_afterwards(tmp_path: Path) -> None:
    async with demo_database(test_config(tmp_path), 2) as url:
        assert make_url(url).get_backend_name() == "postgresql"
        made = await ensure_demo_users(replace(test_config(tmp_path), store={"url": url}), "demo-password-1")
        assert sorted(made) == ["ayu", "budi", "sari"]
        store = Store.from_url(url, retry_for=5)
        try:
            assert {u.username for u in await Accounts(store).list_users()} == {"ayu", "budi", "sari"}
        finally:
            await store.close()
    store = Store.from_url(url, retry_for=0.5)
    try:
        with pytest.raises(StoreUnavailable):
            await Accounts(store).list_users()
    finally:
        await store.close()


@pytest.mark.parametrize("nodes", ["0", "4"])
def test_nodes_out_of_range_is_refused(nodes: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--nodes", nodes]) == 2
    assert "--nodes takes 1 to 3" in capsys.readouterr().err
