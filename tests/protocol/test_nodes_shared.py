"""Two app nodes on one PostgreSQL share what only one of them knows (issue 11 item 3): console news,
prank flags and the arrival of a 112 call, all through the store. Each node has its own WebSockets and
its own AMI link (both to one scripted AMI, as both nodes follow the one Asterisk)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.forms.location import Fix
from callcenter.store import Calls, Store, utcnow
from callcenter.store.accounts import UserInfo
from callcenter.store.dispatches import allowed_next
from callcenter.store.models import Call, CallEvent
from callcenter.testing.fake_ami import FakeAmi, agent_connect
from callcenter.testing.postgres import ThrowawayPostgres
from callcenter.testing.wait import until
from callcenter.testing.web import SAMPLE_INTAKE, AppClient, UserSession, make_user, seed_dispatch, seed_incident
from callcenter.web.hub import SESSION_ENDED
from callcenter.web.keys import DISPATCHER, DISPATCHES, LEADERSHIP, LOCATIONS, NEWS, ROUTER, STORE
from callcenter.web.news import LOCATION_TOPIC

pytestmark = pytest.mark.postgres

PRANKSTER = "+6281299990000"


@dataclass
class Nodes:
    a: AppClient
    b: AppClient
    fake: FakeAmi
    sessions: list[UserSession]

    @property
    def store(self) -> Store:
        return self.a.app[STORE]

    async def as_user(self, node: AppClient, user: UserInfo) -> UserSession:
        session = UserSession(node)
        self.sessions.append(session)
        return await session.login(user)


@pytest.fixture
async def nodes(
    ami_app: Callable[..., Awaitable[AppClient]], postgres: ThrowawayPostgres, fake_ami: FakeAmi
) -> AsyncIterator[Nodes]:
    url = postgres.create_database(f"n_{uuid.uuid4().hex[:16]}")
    a = await ami_app(store={"url": url, "retry_for": 5.0, "node": "node_a"})
    b = await ami_app(store={"url": url, "retry_for": 5.0, "node": "node_b"})
    for node in (a, b):
        await asyncio.wait_for(node.app[STORE].signals.listening.wait(), 10)
    env = Nodes(a, b, fake_ami, [])
    try:
        yield env
    finally:
        for session in env.sessions:
            await session.close()


async def messages(ws: aiohttp.ClientWebSocketResponse, kind: str, quiet: float = 0.5) -> list[dict[str, Any]]:
    """Every ``kind`` message until the socket has been quiet for ``quiet`` seconds."""
    found: list[dict[str, Any]] = []
    while True:
        try:
            message = await ws.receive_json(timeout=quiet)
        except TimeoutError:
            return found
        if message.get("type") == kind:
            found.append(message)


async def test_officer_update_on_node_a_reaches_consoles_on_both_nodes_once(nodes: Nodes) -> None:
    store = nodes.store
    taker = await make_user(store, "ayu", "calltaker", interface="PJSIP/taker1")
    supervisor = await make_user(store, "sri", "supervisor")
    officer = await make_user(store, "damkar1", "agency", agency="damkar")
    incident = await seed_incident(store, SAMPLE_INTAKE, taker.id)
    dispatch_id = await seed_dispatch(store, incident.id, "damkar", status="accepted")

    on_b = await (await nodes.as_user(nodes.b, supervisor)).ws()
    on_a = await (await nodes.as_user(nodes.a, taker)).ws()
    field = await nodes.as_user(nodes.a, officer)
    status, _body = await field.report(dispatch_id, "dispatched", note="berangkat")
    assert status == 201

    for ws in (on_b, on_a):
        (message,) = await messages(ws, "dispatch")
        body = message["dispatch"]
        assert (body["id"], body["status"]) == (dispatch_id, "dispatched")
        assert [u["note"] for u in body["updates"]] == ["berangkat"]
        assert body["next"] == sorted(allowed_next("dispatched"))


async def test_location_stored_on_node_a_shows_on_the_console_of_node_b(nodes: Nodes) -> None:
    """The caller's position arrives at one node (its public page, AML); the call-taker's console is on the other."""
    store = nodes.store
    taker = await make_user(store, "ayu", "calltaker", interface="PJSIP/taker1")
    console = await (await nodes.as_user(nodes.b, taker)).ws()
    await Calls(store).open_call(
        uniqueid="loc.1",
        arrived_at=utcnow(),
        routed_by="app",
        caller_raw="081234567890",
        caller_number="+6281234567890",
    )
    await nodes.fake.send(agent_connect("loc.1", "PJSIP/taker1"))
    assert (await messages(console, "pop"))[0]["call"]["uniqueid"] == "loc.1"
    # The link a call-taker texted, opened by the caller: served by node A.
    fix = Fix(number="081234567890", latitude=-8.35, longitude=114.61, accuracy_m=20.0, via="aml_https", source="gps")
    matched = await nodes.a.app[LOCATIONS].receive(fix, "+6281234567890")
    assert matched.call is not None
    nodes.a.app[NEWS].announce(LOCATION_TOPIC, matched.fix.id)
    (message,) = await messages(console, "location")
    assert (message["fix"]["id"], message["fix"]["accuracy_m"]) == (matched.fix.id, 20.0)


async def test_prank_classification_on_node_a_changes_routing_on_node_b(nodes: Nodes) -> None:
    """A call-taker on node A classifies three of a number's calls as pranks; node B routes its next call
    as a repeat prankster's at once (its flag index re-read the number on the signal)."""
    taker = await make_user(nodes.store, "ayu", "calltaker", interface="PJSIP/taker1")
    on_a = await nodes.as_user(nodes.a, taker)
    calls = Calls(nodes.store)
    b_flags = nodes.b.app[STORE].flags
    since = utcnow().replace(year=utcnow().year - 1)
    for n in range(3):
        call_id = await calls.open_call(
            uniqueid=f"prank.{n}",
            arrived_at=utcnow(),
            routed_by="app",
            caller_raw="081299990000",
            caller_number=PRANKSTER,
        )
        status, body = await on_a.post(f"/api/calls/{call_id}/classification", {"classification": "prank"})
        assert status == 200, body
    await until(lambda: b_flags.count(PRANKSTER, since) == 3, timeout=5, what="node B's flag index")
    nodes.fake.actions.clear()
    await nodes.fake.send(arrival("prank.next", "081299990000"))
    await until(lambda: len(setvars("prank.next", nodes.fake)) == 2, timeout=5, what="both nodes' routes")
    assert sorted(a["Value"] for a in setvars("prank.next", nodes.fake)) == ["1/id/1/node_a", "1/id/1/node_b"]


def arrival(uniqueid: str, caller: str) -> dict[str, str]:
    return {
        "Event": "UserEvent",
        "UserEvent": "CallcenterArrival",
        "Uniqueid": uniqueid,
        "Linkedid": uniqueid,
        "Channel": f"PJSIP/citizen-{uniqueid}",
        "CallerIDNum": caller,
        "Arrived": str(int(utcnow().timestamp())),
        "Dialed": "112",
    }


def setvars(uniqueid: str, fake: FakeAmi) -> list[dict[str, str]]:
    channel = f"PJSIP/citizen-{uniqueid}"
    return [a for a in fake.actions if a.get("Action") == "Setvar" and a.get("Channel") == channel]


async def test_both_nodes_hear_one_arrival_and_record_one_call(nodes: Nodes) -> None:
    """Both route (the same decision, each with its own marker) and the call and its first entries exist once."""
    for n in range(5):
        uniqueid = f"both.{n}"
        await nodes.fake.send(arrival(uniqueid, "081234567890"))
        await until(lambda u=uniqueid: len(setvars(u, nodes.fake)) == 2, timeout=5, what="both nodes' routes")  # type: ignore[misc]
        assert sorted(a["Value"] for a in setvars(uniqueid, nodes.fake)) == ["10/id/0/node_a", "10/id/0/node_b"]

    async def counts(session: AsyncSession) -> tuple[int, dict[str, int]]:
        calls = await session.scalar(select(func.count(Call.id)).where(Call.uniqueid.like("both.%")))
        rows = await session.execute(
            select(CallEvent.kind, func.count(CallEvent.id))
            .join(Call, Call.id == CallEvent.call_id)
            .where(Call.uniqueid.like("both.%"))
            .group_by(CallEvent.kind)
        )
        return int(calls or 0), {kind: int(count) for kind, count in rows}

    async def settled() -> bool:
        return (await nodes.store.transaction("t", counts))[1].get("routed", 0) >= 5

    for _ in range(50):
        if await settled():
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)  # the slower node's write, which must add nothing
    calls, events = await nodes.store.transaction("t", counts)
    assert calls == 5
    assert events == {"arrived": 5, "routed": 5}

    # The dialplan reports which node's route it read: each node counts the ones it wrote.
    await nodes.fake.send(
        {
            "Event": "UserEvent",
            "UserEvent": "CallcenterQueue",
            "Uniqueid": "both.0",
            "Priority": "10",
            "Fallback": "0",
            "RoutedBy": "node_b",
        }
    )
    await until(lambda: nodes.b.app[ROUTER].stats.queued_ours == 1, what="node B counts its route")
    assert nodes.a.app[ROUTER].stats.queued_ours == 0 and nodes.a.app[ROUTER].stats.queued_routed == 1


async def test_a_node_whose_listener_was_cut_tells_its_consoles_to_reread(
    nodes: Nodes, postgres: ThrowawayPostgres
) -> None:
    """Notifications sent while a node's LISTEN session is gone are lost: once it is back, its consoles
    re-read everything, and news flows to it again."""
    store = nodes.store
    supervisor = await make_user(store, "sri", "supervisor")
    taker = await make_user(store, "ayu", "calltaker", interface="PJSIP/taker1")
    incident = await seed_incident(store, SAMPLE_INTAKE, taker.id)
    dispatch_id = await seed_dispatch(store, incident.id, "damkar", status="accepted")
    on_b = await (await nodes.as_user(nodes.b, supervisor)).ws()
    signals = nodes.b.app[STORE].signals
    postgres.sql(f"SELECT pg_terminate_backend({signals.backend_pid})")
    await until(lambda: signals.connects == 2 and signals.listening.is_set(), timeout=10, what="listening again")
    assert len(await messages(on_b, "resync")) == 1
    nodes.a.app[NEWS].announce("dispatch", dispatch_id)
    (message,) = await messages(on_b, "dispatch")
    assert message["dispatch"]["id"] == dispatch_id


async def test_ami_driven_pops_and_member_states_reach_each_node_once(nodes: Nodes) -> None:
    """What Asterisk says reaches every node through its own AMI link: each node's console gets it once,
    not once more through the signal."""
    taker = await make_user(nodes.store, "ayu", "calltaker", interface="PJSIP/taker1")
    consoles = [await (await nodes.as_user(node, taker)).ws() for node in (nodes.a, nodes.b)]
    await nodes.fake.send(agent_connect("pop.1", "PJSIP/taker1"))
    for ws in consoles:
        (pop,) = await messages(ws, "pop")
        assert pop["call"]["uniqueid"] == "pop.1"
    pause = {
        "Event": "QueueMemberPause",
        "Queue": "calltakers",
        "Interface": "PJSIP/taker1",
        "MemberName": "taker1",
        "Paused": "1",
        "PausedReason": "istirahat",
        "Status": "1",
    }
    await nodes.fake.send(pause)
    for ws in consoles:
        (member,) = await messages(ws, "member")
        assert member["member"]["paused"] and member["member"]["reason"] == "istirahat"


async def test_a_burst_of_changes_ends_with_the_latest_state_on_every_console(nodes: Nodes) -> None:
    store = nodes.store
    taker = await make_user(store, "ayu", "calltaker", interface="PJSIP/taker1")
    incident = await seed_incident(store, SAMPLE_INTAKE, taker.id)
    dispatch_id = await seed_dispatch(store, incident.id, "damkar", status="accepted")
    consoles = [await (await nodes.as_user(node, taker)).ws() for node in (nodes.a, nodes.b)]
    for status in ("dispatched", "en_route", "on_scene"):
        await nodes.a.app[DISPATCHES].add_update(dispatch_id, None, status, note=status)
        nodes.a.app[NEWS].announce("dispatch", dispatch_id)
    for ws in consoles:
        seen = await messages(ws, "dispatch")
        assert 1 <= len(seen) <= 3
        assert seen[-1]["dispatch"]["status"] == "on_scene"


async def test_a_logout_on_node_a_closes_that_sessions_console_on_node_b_at_once(
    ami_app: Callable[..., Awaitable[AppClient]], postgres: ThrowawayPostgres
) -> None:
    """Behind a load balancer one session's requests reach both nodes. Its logout (or the account's
    deactivation) on one node closes its sockets on the other at once, not at the next periodic check."""
    url = postgres.create_database(f"n_{uuid.uuid4().hex[:16]}")
    slow_check = {"session_check_seconds": 60.0}
    a = await ami_app(store={"url": url, "retry_for": 5.0, "node": "node_a"}, web=slow_check)
    b = await ami_app(store={"url": url, "retry_for": 5.0, "node": "node_b"}, web=slow_check)
    for node in (a, b):
        await asyncio.wait_for(node.app[STORE].signals.listening.wait(), 10)
    taker = await make_user(a.app[STORE], "ayu", "calltaker", interface="PJSIP/taker1")
    browser = await UserSession(a).login(taker)
    try:
        on_b = await browser.http.ws_connect(str(b.make_url("/api/ws")))  # the same cookie, the other node
        assert (await on_b.receive_json(timeout=3))["type"] == "hello"
        started = time.monotonic()
        async with browser.http.post(browser.url("/api/logout"), headers={"X-CSRF-Token": browser.csrf}) as resp:
            assert resp.status == 204
        closed = await on_b.receive(timeout=5)
        assert (closed.type, closed.data) == (aiohttp.WSMsgType.CLOSE, SESSION_ENDED)
        assert time.monotonic() - started < 5  # far inside the 60 s check
    finally:
        await browser.close()


async def test_a_service_level_breach_announced_by_the_leader_reaches_the_other_nodes_consoles(nodes: Nodes) -> None:
    """The timer runs on the leader only; the breach is on every centre console, read from the incident."""
    taker = await make_user(nodes.store, "ayu", "calltaker", interface="PJSIP/taker1")
    due = utcnow().replace(microsecond=0)
    incident = await seed_incident(nodes.store, SAMPLE_INTAKE, taker.id, sla_due_at=due, sla_breached_at=utcnow())
    consoles = [await (await nodes.as_user(node, taker)).ws() for node in (nodes.a, nodes.b)]
    breach = {"type": "sla_breach", "incident_id": incident.id, "reference": "stale", "category": "x", "due_at": ""}
    nodes.a.app[NEWS].publish(breach, roles=("calltaker", "supervisor"))
    for ws in consoles:
        (message,) = await messages(ws, "sla_breach")
        assert (message["incident_id"], message["reference"]) == (incident.id, incident.reference)  # re-read
        assert message["category"] == "fire" and message["due_at"] == due.isoformat()


async def test_a_dispatch_requested_on_the_follower_wakes_the_leader_at_once(nodes: Nodes) -> None:
    """The leader places dispatch calls; a request taken by the other node reaches it through the change
    signal (its own poll is made far too slow here to be what placed the call)."""
    await until(lambda: any(n.app[LEADERSHIP].is_leader for n in (nodes.a, nodes.b)), timeout=10, what="a leader")
    leader, follower = (nodes.a, nodes.b) if nodes.a.app[LEADERSHIP].is_leader else (nodes.b, nodes.a)
    await until(lambda: leader.app[DISPATCHER].leader._loop is not None, what="the leader's loop")
    for node in (leader, follower):
        loop = node.app[DISPATCHER].leader._loop
        if loop is not None:
            loop.poll = 120.0
    await asyncio.sleep(1.5)  # the loop's current wait (the old poll) ends; from now on it waits 120 s
    incident = await seed_incident(nodes.store, SAMPLE_INTAKE, None)
    nodes.fake.actions.clear()
    await follower.app[DISPATCHER].dispatch(incident.id, ["damkar"], user_id=None)

    def originates() -> int:
        return sum(1 for action in nodes.fake.actions if action.get("Action") == "Originate")

    await until(lambda: originates() == 1, timeout=5, what="the leader placed the call")
