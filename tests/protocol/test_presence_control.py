"""Presence control through the real app against a scripted AMI: time in state on the wallboard,
supervisor pause/unpause/log out (AMI actions and access log), and auto-pause after missed offers with
the supervisors alerted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from callcenter.app import create_app
from callcenter.config import replace
from callcenter.store import Store
from callcenter.store.access import access_entries
from callcenter.testing.fake_ami import FakeAmi
from callcenter.testing.wait import until
from callcenter.testing.web import login, make_user, test_config
from callcenter.web.keys import AMI, STORE, TRACKER

TAKER = "PJSIP/taker1"


@dataclass
class Env:
    client: TestClient[Any, Any]
    server: TestServer
    fake: FakeAmi
    store: Store
    csrf: str

    async def control(self, body: dict[str, Any]) -> tuple[int, Any]:
        resp = await self.client.post("/api/supervisor/presence", json=body, headers={"X-CSRF-Token": self.csrf})
        return resp.status, await resp.json()

    async def control_spy(self, body: dict[str, Any]) -> tuple[int, Any]:
        resp = await self.client.post("/api/supervisor/spy", json=body, headers={"X-CSRF-Token": self.csrf})
        return resp.status, await resp.json()

    async def member(self) -> dict[str, Any]:
        board = await (await self.client.get("/api/wallboard")).json()
        (found,) = [m for m in board["members"] if m["interface"] == TAKER]
        return dict(found)

    def actions(self, name: str) -> list[dict[str, str]]:
        return [a for a in self.fake.actions if a.get("Action") == name]


def member_event(event: str, *, paused: bool = False, reason: str = "", **extra: str) -> dict[str, str]:
    return {
        "Event": event,
        "Queue": "calltakers",
        "Interface": TAKER,
        "MemberName": "Ayu",
        "Status": "1",
        "Paused": "1" if paused else "0",
        "PausedReason": reason,
        "InCall": "0",
        **extra,
    }


def ring_no_answer() -> dict[str, str]:
    return {
        "Event": "AgentRingNoAnswer",
        "Queue": "calltakers",
        "Uniqueid": "1.1",
        "Interface": TAKER,
        "MemberName": "Ayu",
        "RingTime": "15000",
    }


@pytest.fixture
async def env(tmp_path: Path, fake_ami: FakeAmi) -> AsyncIterator[Env]:
    cfg = replace(
        test_config(tmp_path),
        ami=fake_ami.client_config(),
        queue={"autopause_after": 2},
    )
    app = create_app(cfg)
    server = TestServer(app)
    client = TestClient(server)
    await client.start_server()
    try:
        await app[AMI].wait_ready(5)
        await make_user(app[STORE], "sari", "supervisor")
        await make_user(app[STORE], "ayu", "calltaker", interface=TAKER)
        csrf = await login(client, "sari")
        yield Env(client, server, fake_ami, app[STORE], csrf)
    finally:
        await client.close()


async def test_supervisor_pauses_unpauses_and_logs_out_through_asterisk(env: Env) -> None:
    await env.fake.send(member_event("QueueMemberAdded"))
    await until(lambda: _has_member(env), what="member on the wallboard")
    ready = await env.member()
    assert ready["paused"] is False and ready["since_known"] is True and ready["seconds_in_state"] < 5

    status, body = await env.control({"interface": TAKER, "action": "pause", "reason": "training"})
    assert status == 202, body
    await until(lambda: bool(env.actions("QueuePause")), what="QueuePause sent")
    (pause,) = env.actions("QueuePause")
    assert pause["Interface"] == TAKER and pause["Paused"] == "true" and pause["Reason"] == "training"
    # What the wallboard shows is Asterisk's report, with Asterisk's own pause time.
    assert (await env.member())["paused"] is False
    await env.fake.send(
        member_event("QueueMemberPause", paused=True, reason="training", LastPause=str(int(time.time()) - 90))
    )
    await until(lambda: _paused(env), what="pause reported")
    paused = await env.member()
    assert paused["reason"] == "training" and paused["since_known"] is True
    assert 89 <= paused["seconds_in_state"] < 100, paused

    status, _ = await env.control({"interface": TAKER, "action": "unpause"})
    assert status == 202
    status, _ = await env.control({"interface": TAKER, "action": "logout"})
    assert status == 202
    await until(lambda: bool(env.actions("QueueRemove")), what="QueueRemove sent")
    assert env.actions("QueuePause")[-1]["Paused"] == "false"
    assert env.actions("QueueRemove")[0]["Interface"] == TAKER
    traces = await access_entries(env.store, subject_type="member", subject_id=TAKER)
    assert [t.action for t in reversed(traces)] == ["presence_pause", "presence_unpause", "presence_logout"]
    assert traces[-1].detail["reason"] == "training" and traces[-1].detail["username"] == "sari"

    for bad, field in (
        ({"interface": TAKER, "action": "pause"}, "reason"),
        ({"interface": TAKER, "action": "pause", "reason": "tidak menjawab"}, "reason"),
        ({"interface": "PJSIP/nobody", "action": "unpause"}, "interface"),
        ({"interface": TAKER, "action": "kick"}, "action"),
    ):
        status, err = await env.control(bad)
        assert status == 422 and field in err["fields"], (bad, err)
    ayu = TestClient(env.server)
    try:
        csrf = await login(ayu, "ayu")
        resp = await ayu.post(
            "/api/supervisor/presence", json={"interface": TAKER, "action": "unpause"}, headers={"X-CSRF-Token": csrf}
        )
        assert resp.status == 403
    finally:
        await ayu.session.close()


async def test_auto_pause_after_missed_offers_alerts_supervisors(env: Env) -> None:
    ws = await env.client.ws_connect("/api/ws")
    await env.fake.send(member_event("QueueMemberAdded"))
    await until(lambda: _has_member(env), what="member on the wallboard")
    # One ring-out, then an answer: the count starts again.
    await env.fake.send(ring_no_answer())
    await env.fake.send(
        {
            "Event": "AgentConnect",
            "Queue": "calltakers",
            "Uniqueid": "1.2",
            "Interface": TAKER,
            "MemberName": "Ayu",
            "HoldTime": "3",
            "RingTime": "2",
            "CallerIDNum": "0812",
        }
    )
    await env.fake.send(ring_no_answer())
    await asyncio.sleep(0.3)
    assert env.actions("QueuePause") == []

    await env.fake.send(ring_no_answer())
    await until(lambda: bool(env.actions("QueuePause")), what="auto-pause sent")
    (pause,) = env.actions("QueuePause")
    assert pause["Interface"] == TAKER and pause["Paused"] == "true" and pause["Reason"] == "tidak menjawab"
    async with asyncio.timeout(3):
        while True:
            message = await ws.receive_json()
            if message.get("type") == "presence_alert":
                break
    alert = message["alert"]
    assert alert["interface"] == TAKER and alert["missed"] == 2 and alert["paused"] is True
    board = await (await env.client.get("/api/wallboard")).json()
    assert [a["interface"] for a in board["alerts"]] == [TAKER]
    await ws.close()


async def _has_member(env: Env) -> bool:
    board = await (await env.client.get("/api/wallboard")).json()
    return any(m["interface"] == TAKER for m in board["members"])


async def _paused(env: Env) -> bool:
    return bool((await env.member())["paused"])


def test_openapi_fragment_describes_the_route() -> None:
    import json

    from aiohttp import web

    from callcenter.web import presence_api
    from callcenter.web.openapi import FRAGMENTS

    fragment = json.loads((FRAGMENTS / "presence.json").read_text(encoding="utf-8"))
    served = {(r.path, r.method.lower()) for r in presence_api.routes if isinstance(r, web.RouteDef)}
    assert served == {(path, method) for path, ops in fragment["paths"].items() for method in ops}


async def test_spy_rings_the_supervisors_phone_into_chanspy(env: Env) -> None:
    # sari has no phone: listening rings one's own phone, so it is refused.
    status, body = await env.control_spy({"interface": TAKER, "mode": "listen"})
    assert status == 409, body
    await make_user(env.store, "tari", "supervisor", interface="PJSIP/supervisor")
    other = TestClient(env.server)
    try:
        csrf = await login(other, "tari")

        async def spy(body: dict[str, Any]) -> tuple[int, Any]:
            resp = await other.post("/api/supervisor/spy", json=body, headers={"X-CSRF-Token": csrf})
            return resp.status, await resp.json()

        status, err = await spy({"interface": TAKER, "mode": "listen"})
        assert status == 422 and "interface" in err["fields"]  # not on a call
        await env.fake.send(
            {
                "Event": "AgentConnect",
                "Queue": "calltakers",
                "Uniqueid": "9.1",
                "Interface": TAKER,
                "MemberName": "Ayu",
                "HoldTime": "3",
                "RingTime": "2",
                "CallerIDNum": "0812",
            }
        )
        await until(lambda: _connected(env), what="call connected")
        status, err = await spy({"interface": TAKER, "mode": "eavesdrop"})
        assert status == 422 and "mode" in err["fields"]
        status, body = await spy({"interface": TAKER, "mode": "whisper"})
        assert status == 202, body
        await until(lambda: bool(env.actions("Originate")), what="Originate sent")
        (originate,) = env.actions("Originate")
        assert originate["Channel"] == "PJSIP/supervisor" and originate["Context"] == "callcenter-spy"
        assert originate["Variable"] == f"CC_SPY_TARGET={TAKER},CC_SPY_MODE=whisper"
        assert originate["ActionID"] == originate["ChannelId"] == body["reference"]
        (trace,) = await access_entries(env.store, subject_type="member", subject_id=TAKER)
        assert trace.action == "spy_whisper" and trace.detail["uniqueid"] == "9.1"
    finally:
        await other.session.close()


def _connected(env: Env) -> bool:
    return TAKER in env.client.app[TRACKER].live.connected.values()
