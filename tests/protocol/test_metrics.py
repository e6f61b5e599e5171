"""/metrics over real sockets: the real app, a scripted Asterisk, real FastAGI sessions and WebSockets."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from callcenter.app import create_app
from callcenter.config import replace
from callcenter.store import Calls, Store
from callcenter.testing.fake_ami import FakeAmi
from callcenter.testing.wait import until
from callcenter.testing.web import login, make_user, test_config
from callcenter.web.keys import AGI, AMI, STORE, TRACKER

Client = TestClient[web.Request, web.Application]
TOKEN = "scrape-token-for-tests-0123456789"


@pytest.fixture
async def client(ami_app: Callable[..., Awaitable[Client]]) -> Client:
    return await ami_app(web={"metrics_token": TOKEN})


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, keyed by name and sorted labels (the official parser reads it)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await client.get("/metrics")
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")  # Prometheus' text format
    return samples(await resp.text())


async def agi_session(port: int, route: str) -> None:
    """What Asterisk sends for AGI(agi://…/<route>), then hang up before answering any command."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"agi_network: yes\nagi_request: agi://127.0.0.1/{route}\nagi_channel: PJSIP/x-1\n"
        f"agi_uniqueid: 1700000000.{route}\nagi_callerid: 081234567890\nagi_extension: 112\n\n".encode()
    )
    await writer.drain()
    await reader.readline()  # the route's first command
    writer.close()
    await writer.wait_closed()


async def test_metrics_follow_agi_queue_ami_database_and_consoles(client: Client, fake_ami: FakeAmi) -> None:
    before = await scrape(client)
    assert before[("callcenter_ami_up", ())] == 1
    assert before[("callcenter_callers_waiting", (("queue", "calltakers"),))] == 0

    # AGI: a session that dies mid-route, and one for a route nobody registered (its name is no label).
    port = client.app[AGI].port
    await agi_session(port, "incoming")
    await agi_session(port, "evil-route-name")
    await until(lambda: client.app[AGI].active_sessions == 0, what="sessions over")

    # Two callers waiting, one of them queued by the dialplan's fallback (CC_FALLBACK=1 on the channel).
    for uid, fallback in (("1700000001.1", ""), ("1700000001.2", "1")):
        await fake_ami.send(
            {
                "Event": "QueueCallerJoin",
                "Queue": "calltakers",
                "Uniqueid": uid,
                "Channel": f"PJSIP/anonymous-{uid}",
                "CallerIDNum": "081234567890",
                "Position": "1",
                "Count": "1",
                "ChanVariable": f"CC_FALLBACK={fallback}",
            }
        )
    await until(lambda: len(client.app[TRACKER].live.waiting) == 2, what="callers in the live picture")

    await make_user(client.app[STORE], "ayu", "calltaker", interface="PJSIP/taker1")
    await login(client, "ayu")
    ws = await client.ws_connect("/api/ws")
    await ws.receive_json()
    await asyncio.sleep(1.1)  # a whole second of waiting

    got = await scrape(client)
    assert got[("callcenter_agi_sessions_total", (("outcome", "closed"), ("route", "incoming")))] == 1
    assert got[("callcenter_agi_sessions_total", (("outcome", "unknown_route"), ("route", "unknown")))] == 1
    assert not any("evil" in str(key) for key in got)
    assert got[("callcenter_dialplan_fallbacks_total", ())] == 1
    assert got[("callcenter_callers_waiting", (("queue", "calltakers"),))] == 2
    assert got[("callcenter_longest_wait_seconds", (("queue", "calltakers"),))] >= 1.0
    assert got[("callcenter_websocket_clients", (("role", "calltaker"),))] == 1
    # The login, the user and the session made database transactions, each one observed.
    count = ("callcenter_db_transaction_seconds_count", ())
    assert got[count] > before[count]

    await ws.close()
    await fake_ami.stop()  # Asterisk gone
    await until(lambda: not client.app[AMI].ready.is_set(), what="link down")
    assert (await scrape(client))[("callcenter_ami_up", ())] == 0


async def test_metrics_are_not_public(client: Client) -> None:
    assert (await client.get("/metrics")).status == 200  # the test client connects from loopback
    # Through a reverse proxy on the same host: not loopback any more.
    resp = await client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await client.get("/metrics", headers={"Forwarded": "for=203.0.113.9", "Authorization": "Bearer nope"})
    assert resp.status == 401
    resp = await client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9", "Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 200 and "callcenter_ami_up" in await resp.text()


async def test_without_a_token_only_loopback_is_served(tmp_path: Path) -> None:
    """No token configured: a request from anywhere else gets 403; here the app listens on all addresses
    and the request comes from this host's own non-loopback address."""
    cfg = replace(test_config(tmp_path), web={"host": "0.0.0.0", "port": 0})
    app = create_app(cfg)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "0.0.0.0", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        other = _own_address()
        if other is None:
            pytest.skip("this host has no non-loopback IPv4 address")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 200
            async with http.get(f"http://{other}:{port}/metrics") as resp:
                assert resp.status == 403
            async with http.get(f"http://{other}:{port}/metrics", headers={"Authorization": "Bearer x"}) as resp:
                assert resp.status == 403
    finally:
        await runner.cleanup()


def _own_address() -> str | None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: only picks the outgoing interface
        except OSError:
            return None
        address: str = s.getsockname()[0]
    return None if address.startswith("127.") else address


async def test_two_apps_have_their_own_registries(tmp_path: Path) -> None:
    """Several apps in one process (tests, benchmarks): no "Duplicated timeseries" clash, no shared counts."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    apps = [TestClient(TestServer(create_app(test_config(tmp_path / name)))) for name in ("a", "b")]
    for c in apps:
        await c.start_server()
    try:
        await agi_session(apps[0].app[AGI].port, "incoming")
        await until(lambda: apps[0].app[AGI].active_sessions == 0)
        first, second = await scrape(apps[0]), await scrape(apps[1])
        key = ("callcenter_agi_sessions_total", (("outcome", "closed"), ("route", "incoming")))
        assert first[key] == 1 and key not in second
    finally:
        for c in apps:
            await c.close()


async def test_store_reports_transaction_latency(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite+aiosqlite:///{tmp_path}/s.db", retry_for=1)
    calls = Calls(store)
    seen: list[float] = []
    store.on_latency = seen.append
    try:
        await store.upgrade()
        await calls.recent_calls()
    finally:
        await store.close()
    assert len(seen) == 1 and 0 <= seen[0] < 5
