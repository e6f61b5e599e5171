"""A citizen's report from the app through the real app and a scripted AMI server: placed in the queue with
one Originate, placed again when the Originate fails (never lost, waiting on the wallboard meanwhile), not
placed twice when Asterisk already has it nor by a deposed leader, popped with the report on AgentConnect
and called back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from callcenter.app import create_app
from callcenter.config import replace
from callcenter.queue.reports import ReportQueue
from callcenter.store import Store
from callcenter.store.leadership import Deposed
from callcenter.store.models import Callback
from callcenter.store.reports import CALLED_BACK, TAKEN, WAITING, NewReport
from callcenter.testing.browser import rows
from callcenter.testing.fake_ami import FakeAmi, agent_connect
from callcenter.testing.wait import until
from callcenter.testing.web import login, make_user, test_config
from callcenter.testing.web import ws_message as receive
from callcenter.web.keys import AMI, LEADERSHIP, REPORT_QUEUE, REPORTS, STORE, TRACKER

NUMBER = "+6281234567890"


@dataclass
class Env:
    client: TestClient[web.Request, web.Application]
    server: TestServer
    fake: FakeAmi
    store: Store
    app: web.Application


@pytest.fixture
async def env(tmp_path: Path, fake_ami: FakeAmi) -> AsyncIterator[Env]:
    app = create_app(replace(test_config(tmp_path), ami=fake_ami.client_config()))
    server = TestServer(app)
    client = TestClient(server)
    await client.start_server()
    try:
        await app[AMI].wait_ready(5)
        await until(lambda: app[TRACKER].link_up, what="first resync")
        yield Env(client, server, fake_ami, app[STORE], app)
    finally:
        await client.close()


def originates(fake: FakeAmi) -> list[dict[str, str]]:
    return [a for a in fake.actions if a.get("Action") == "Originate"]


async def new_report(env: Env) -> int:
    report = await env.app[REPORTS].create(
        NewReport(
            number=NUMBER, category="fire", client_group="127.0.0.1", latitude=-8.35, longitude=114.62, accuracy_m=12.0
        )
    )
    return report.id


async def test_a_report_is_placed_once_and_again_after_a_failed_originate(env: Env) -> None:
    report_id = await new_report(env)
    # 1. The sink wakes the leader (SQLite: this node): one Originate of the report's Local channel.
    await until(lambda: len(originates(env.fake)) == 1, what="first placement")
    (first,) = originates(env.fake)
    assert first["Channel"] == f"Local/{report_id}@callcenter-report/n"
    assert (first["Context"], first["Exten"]) == ("callcenter-report-announce", "s")
    assert first["OtherChannelId"] == first["ChannelId"] + "-q" and first["ActionID"] == first["ChannelId"]
    assert first["ChannelId"].startswith(f"report-{report_id}-")
    assert f"CC_REPORT_ID={report_id}" in first["Variable"].split(",")
    assert first["CallerID"] == f'"Laporan aplikasi" <{NUMBER}>'

    # 2. Asterisk cannot place it: the report stays waiting, shows on the wallboard, and is placed again.
    await env.fake.send(
        {
            "Event": "OriginateResponse",
            "ActionID": first["ActionID"],
            "Response": "Failure",
            "Reason": "0",
            "Uniqueid": "<null>",
        }
    )
    sup = await make_user(env.store, "sari", "supervisor")
    await login(env.client, sup.username)

    async def shown_failed() -> bool:
        board = await (await env.client.get("/api/wallboard")).json()
        items = [w for w in board["waiting"] if w["report_id"] == report_id]
        return bool(items) and items[0]["position"] is None and items[0]["report"]["failures"] == 1

    await until(shown_failed, what="failed report on the wallboard")
    await until(lambda: len(originates(env.fake)) == 2, timeout=5, what="second placement")
    metrics = await (await env.client.get("/metrics")).text()
    assert "callcenter_report_placements_failed_total 1.0" in metrics, metrics
    assert "callcenter_reports_placed_total 2.0" in metrics
    second = originates(env.fake)[1]
    assert second["Channel"] == first["Channel"] and second["ChannelId"] != first["ChannelId"]
    assert (await env.app[REPORTS].get(report_id)).status == WAITING  # type: ignore[union-attr]

    # 3. In the queue now (QueueCallerJoin of the queued half): on the wallboard as a waiting app report.
    queued = second["OtherChannelId"]
    await env.fake.send(
        {
            "Event": "QueueCallerJoin",
            "Queue": "calltakers",
            "Uniqueid": queued,
            "CallerIDNum": NUMBER,
            "Position": "1",
            "Count": "1",
            "Channel": f"Local/{report_id}@callcenter-report-00000001;2",
        }
    )

    async def shown_queued() -> bool:
        board = await (await env.client.get("/api/wallboard")).json()
        return [(w["uniqueid"], w["report_id"], w["position"]) for w in board["waiting"]] == [(queued, report_id, 1)]

    await until(shown_queued, what="queued report on the wallboard")

    # 4. A node that starts (or takes over) while Asterisk already has the report does not place it again.
    env.fake.channels = [{"Channel": "Local/x;2", "Uniqueid": queued}]
    env.app[TRACKER].live.waiting.clear()  # as if this node had not seen the join
    other = ReportQueue(env.app[REPORTS], env.app[AMI], env.app[TRACKER], env.store)
    term = env.app[LEADERSHIP].epoch
    assert term is not None and await other.place_waiting(term) == 0
    assert len(originates(env.fake)) == 2
    # A deposed leader (an older term, e.g. a process frozen past its grace) places nothing.
    env.fake.channels = []
    with pytest.raises(Deposed):
        await other.place_waiting(term - 1)
    assert len(originates(env.fake)) == 2


async def test_an_answered_report_pops_and_is_called_back(env: Env) -> None:
    ayu = await make_user(env.store, "ayu", "calltaker", interface="PJSIP/taker1")
    report_id = await new_report(env)
    await until(lambda: len(originates(env.fake)) == 1, what="placement")
    queued = originates(env.fake)[0]["OtherChannelId"]
    csrf = {"X-CSRF-Token": await login(env.client, "ayu")}
    ws = await env.client.ws_connect("/api/ws")
    await receive(ws, "hello")

    await env.fake.send(
        {
            "Event": "QueueCallerJoin",
            "Queue": "calltakers",
            "Uniqueid": queued,
            "CallerIDNum": NUMBER,
            "Position": "1",
            "Count": "1",
        }
    )
    await env.fake.send(agent_connect(queued, "PJSIP/taker1", caller=NUMBER))
    pop = (await receive(ws, "pop"))["call"]
    report = pop["report"]
    assert (report["id"], report["number"], report["category"]) == (report_id, NUMBER, "fire")
    assert (report["latitude"], report["longitude"], report["accuracy_m"]) == (-8.35, 114.62, 12.0)
    assert pop["fixes"][0]["via"] == "app" and pop["fixes"][0]["accuracy_m"] == 12.0
    assert pop["dialed"] == "lapor"

    async def taken() -> bool:
        found = await env.app[REPORTS].get(report_id)
        return found is not None and found.status == TAKEN and found.taken_by == ayu.id

    await until(taken, what="report taken by the answering call-taker")
    # Taken: the leader's loop leaves it alone from now on.
    assert await env.app[REPORT_QUEUE].place_waiting(env.app[LEADERSHIP].epoch) == 0

    # The line is released after the announcement; a reload still brings the report back until it is
    # called back.
    await env.fake.send({"Event": "Hangup", "Uniqueid": queued, "Cause": "16"})
    await until(lambda: queued not in env.app[TRACKER].live.connected, what="line released")
    current = await (await env.client.get("/api/console/current")).json()
    assert (current["call"]["report"]["id"], current["call"]["call_id"], current["ended"]) == (
        report_id,
        pop["call_id"],
        True,
    )

    # One click: Ayu's phone, then the report's verified number; the report is linked to that call.
    answer = await env.client.post(f"/api/reports/{report_id}/callback", json={}, headers=csrf)
    assert answer.status == 202, await answer.text()
    body = await answer.json()
    callback_id = body["callback"]["id"]

    def placed_callback() -> list[dict[str, str]]:
        return [a for a in originates(env.fake) if a["ChannelId"] == f"callback-{callback_id}"]

    await until(lambda: len(placed_callback()) == 1, what="the call-back's Originate")  # placed by the leader
    (placed,) = placed_callback()
    assert (placed["Channel"], placed["Context"]) == ("PJSIP/taker1", "callcenter-callback")
    assert f"CC_CALLBACK_NUMBER={NUMBER}" in placed["Variable"].split(",")
    assert (body["report"]["status"], body["report"]["callback_uniqueid"]) == (CALLED_BACK, f"callback-{callback_id}")
    assert (await (await env.client.get("/api/console/current")).json())["call"] is None
    (cb,) = await rows(env.store, Callback, Callback.id == callback_id)
    assert cb.call_id == pop["call_id"] and cb.requested_by == ayu.id
    # A report nobody took cannot be called back from a pop.
    waiting = await new_report(env)
    assert (await env.client.post(f"/api/reports/{waiting}/callback", json={}, headers=csrf)).status == 409
    await ws.close()
