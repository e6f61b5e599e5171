"""Screen pop, reload restore and presence through the real app, with a scripted AMI server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from callcenter.app import create_app
from callcenter.config import replace
from callcenter.store import Calls, Store, utcnow
from callcenter.store.access import access_entries
from callcenter.store.incidents import Incidents
from callcenter.testing.fake_ami import FakeAmi, agent_connect
from callcenter.testing.wait import until
from callcenter.testing.web import app_client, login, make_user, test_config
from callcenter.testing.web import ws_message as receive
from callcenter.web import live
from callcenter.web.keys import AMI, STORE

NUMBER = "+6281234567890"


@dataclass
class Env:
    client: TestClient[web.Request, web.Application]
    server: TestServer
    fake: FakeAmi
    store: Store


@pytest.fixture
async def env(tmp_path: Path, fake_ami: FakeAmi) -> AsyncIterator[Env]:
    fake = fake_ami
    cfg = test_config(tmp_path)
    cfg = replace(cfg, ami=fake.client_config())
    app = create_app(cfg)
    server = TestServer(app)
    client = TestClient(server)
    await client.start_server()
    try:
        await app[AMI].wait_ready(5)
        yield Env(client, server, fake, app[STORE])
    finally:
        await client.close()


async def test_pop_reaches_only_the_answering_call_taker(env: Env) -> None:
    calls = Calls(env.store)
    await make_user(env.store, "ayu", "calltaker", interface="PJSIP/taker1")
    await make_user(env.store, "budi", "calltaker", interface="PJSIP/taker2")
    earlier = await calls.open_call(
        uniqueid="old.1", arrived_at=utcnow() - timedelta(days=3), routed_by="agi", caller_number=NUMBER
    )
    await calls.flag_number(NUMBER, "prank", call_id=earlier, note="laughing", at=utcnow() - timedelta(days=2))
    call_id = await calls.open_call(
        uniqueid="now.1", arrived_at=utcnow(), routed_by="agi", caller_raw="081234567890", caller_number=NUMBER
    )

    await login(env.client, "ayu")
    ayu = await env.client.ws_connect("/api/ws")
    assert (await receive(ayu, "hello"))["user"]["username"] == "ayu"
    # A second browser (own cookie jar) on the same server, for budi.
    other = TestClient(env.server)
    try:
        await login(other, "budi")
        budi = await other.ws_connect("/api/ws")
        await receive(budi, "hello")

        await env.fake.send(agent_connect("now.1", "PJSIP/taker1"))
        pop = (await receive(ayu, "pop"))["call"]
        assert pop["call_id"] == call_id
        assert pop["caller"]["e164"] == NUMBER
        assert pop["wait_seconds"] == 6
        assert pop["history"]["previous_calls"] == 1
        assert [f["kind"] for f in pop["history"]["flags"]] == ["prank"]
        with pytest.raises(TimeoutError):
            await receive(budi, "pop", timeout=0.5)

        # A reload: the page asks what is on this call-taker's line now.
        current = await (await env.client.get("/api/console/current")).json()
        assert current["call"]["call_id"] == call_id
        assert (await (await other.get("/api/console/current")).json())["call"] is None

        await env.fake.send(
            {
                "Event": "AgentComplete",
                "Queue": "calltakers",
                "Uniqueid": "now.1",
                "Interface": "PJSIP/taker1",
                "MemberName": "taker1",
                "TalkTime": "30",
                "HoldTime": "6",
                "Reason": "caller",
            }
        )
        assert (await receive(ayu, "call_ended"))["call_id"] == call_id
        await budi.close()
    finally:
        await other.session.close()  # not other.close(): that would stop the shared server
    await ayu.close()


async def test_a_pop_and_its_restore_showing_a_case_are_traced(env: Env) -> None:
    """Issue 12: a caller's earlier women-and-children case, shown in the pop and after a reload, is in
    the access log for the call-taker who saw it, before the pop is sent."""
    calls = Calls(env.store)
    ayu_user = await make_user(env.store, "ayu", "calltaker", interface="PJSIP/taker1")
    earlier = await calls.open_call(
        uniqueid="old.2", arrived_at=utcnow() - timedelta(days=3), routed_by="agi", caller_number=NUMBER
    )
    case = await Incidents(env.store).create(
        {
            "reporter_name": "Ibu",
            "callback_number": NUMBER,
            "address": "x",
            "category": "violence_women_children",
            "priority": "high",
        },
        call_id=earlier,
        user_id=None,
    )
    await calls.open_call(uniqueid="now.2", arrived_at=utcnow(), routed_by="agi", caller_number=NUMBER)
    await login(env.client, "ayu")
    ayu = await env.client.ws_connect("/api/ws")
    await receive(ayu, "hello")
    await env.fake.send(agent_connect("now.2", "PJSIP/taker1"))
    pop = (await receive(ayu, "pop"))["call"]
    assert [i["id"] for i in pop["history"]["incidents"]] == [case.id]
    assert (await (await env.client.get("/api/console/current")).json())["call"]["history"]["incidents"]
    entries = await access_entries(env.store, subject_type="incident", subject_id=str(case.id))
    assert [(e.action, e.user_id) for e in entries] == [("pop", ayu_user.id)] * 2
    await ayu.close()


async def test_presence_goes_through_asterisk(env: Env) -> None:
    await make_user(env.store, "ayu", "calltaker", interface="PJSIP/taker1")
    csrf = await login(env.client, "ayu")
    ws = await env.client.ws_connect("/api/ws")
    await receive(ws, "hello")

    resp = await env.client.post(
        "/api/presence", json={"action": "pause", "reason": "nap"}, headers={"X-CSRF-Token": csrf}
    )
    assert resp.status == 422 and "reason" in (await resp.json())["fields"]

    resp = await env.client.post("/api/presence", json={"action": "login"}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 202
    await until(lambda: any(a.get("Action") == "QueueAdd" for a in env.fake.actions), what="QueueAdd sent")
    add = next(a for a in env.fake.actions if a.get("Action") == "QueueAdd")
    assert add["Interface"] == "PJSIP/taker1" and add["Queue"] == "calltakers"
    # The state shown is what Asterisk reports back, not what was asked for.
    assert (await (await env.client.get("/api/presence")).json())["member"] is None
    await env.fake.send(
        {
            "Event": "QueueMemberAdded",
            "Queue": "calltakers",
            "Interface": "PJSIP/taker1",
            "MemberName": "Ayu",
            "Status": "1",
            "Paused": "0",
            "InCall": "0",
        }
    )
    member = (await receive(ws, "member"))["member"]
    assert member["state"] == "not_in_use" and member["paused"] is False
    assert (await (await env.client.get("/api/presence")).json())["member"]["interface"] == "PJSIP/taker1"

    await env.fake.stop()  # Asterisk unreachable
    await until(lambda: not env.client.app[AMI].ready.is_set(), what="AMI link noticed down")
    resp = await env.client.post("/api/presence", json={"action": "unpause"}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 503
    await ws.close()


async def test_live_routes_need_login_and_a_phone(env: Env) -> None:
    assert (await env.client.get("/api/console/current")).status == 401
    assert (await env.client.get("/api/ws")).status == 401
    await make_user(env.store, "sari", "supervisor")
    csrf = await login(env.client, "sari")
    resp = await env.client.post("/api/presence", json={"action": "login"}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 403  # presence is for call-takers
    await make_user(env.store, "dewi", "calltaker")  # no softphone linked
    csrf = await login(env.client, "dewi")
    resp = await env.client.post("/api/presence", json={"action": "login"}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 409


async def test_quiet_console_gets_json_pings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_ami: FakeAmi
) -> None:
    """Page code cannot see protocol pings: with nothing happening, the server still sends JSON pings."""
    monkeypatch.setattr(live, "PING_SECONDS", 0.2)
    fake = fake_ami
    cfg = test_config(tmp_path)
    cfg = replace(cfg, ami={"port": fake.port, "username": fake.username, "secret": fake.secret})
    async with app_client(cfg) as client:
        await make_user(client.app[STORE], "ayu", "calltaker", interface="PJSIP/taker1")
        await login(client, "ayu")
        ws = await client.ws_connect("/api/ws")
        await receive(ws, "hello")
        for _ in range(2):  # without sending anything
            await receive(ws, "ping", timeout=3)
        await ws.close()
