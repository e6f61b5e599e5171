"""Caller location through the real app: AML over HTTPS and SMS, and the SMS location link.

The app runs whole (store, a scripted AMI for the screen pop, Twilio's local recorder for the SMS);
the WebSocket is the console's. What is checked: the position reaches the pop of the call-taker the
caller is connected to, is stored against the right call, and nothing malformed, forged or
unauthenticated changes anything.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse, web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.app import create_app
from callcenter.config import Config, replace
from callcenter.forms.location import one_gsm7_sms
from callcenter.store import Calls, Store, utcnow
from callcenter.store.models import Call, LocationFix, LocationLink
from callcenter.testing.fake_ami import FakeAmi, agent_connect
from callcenter.testing.fake_twilio import FakeTwilio, sign
from callcenter.testing.web import login, make_user, test_config
from callcenter.testing.web import ws_message as receive
from callcenter.web.keys import AMI, LIMITER, STORE

Client = TestClient[web.Request, web.Application]
NUMBER = "+6281234567890"
SECRET = "aml-shared-secret-for-tests"
PUBLIC_URL = "https://112.example.go.id"
AML = {
    "v": "3",
    "emergency_number": "112",
    "source": "sms",
    "location_latitude": "-8.3581234",
    "location_longitude": "114.6170123",
    "location_accuracy": "14",
    "location_source": "gps",
    "location_certainty": "68",
    "device_number": "081234567890",
}
SMS_AML = 'A"ML=1;lt=-8.35801;lg=114.61702;rd=25;top=20251206095900;lc=68;pm=W;mcc=510;mnc=10;ml=88'


@dataclass
class Env:
    client: Client
    server: TestServer
    fake: FakeAmi
    twilio: FakeTwilio
    store: Store


def config(tmp_path: Path, fake: FakeAmi, twilio: FakeTwilio, **location: Any) -> Config:
    return replace(
        test_config(tmp_path),
        ami={"port": fake.port, "username": fake.username, "secret": fake.secret, "reconnect_min": 0.05},
        twilio={
            "account_sid": twilio.account_sid,
            "auth_token": twilio.auth_token,
            "from_number": "+62365100112",
            "public_url": PUBLIC_URL,
            "api_base": twilio.base_url,
        },
        location={"aml_secret": SECRET, **location},
    )


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio() as server:
        yield server


@pytest.fixture
async def env(tmp_path: Path, fake_ami: FakeAmi, twilio: FakeTwilio) -> AsyncIterator[Env]:
    app = create_app(config(tmp_path, fake_ami, twilio))
    server = TestServer(app)
    client = TestClient(server)
    await client.start_server()
    try:
        await app[AMI].wait_ready(5)
        yield Env(client, server, fake_ami, twilio, app[STORE])
    finally:
        await client.close()


async def fixes(store: Store) -> list[LocationFix]:
    async def op(session: AsyncSession) -> list[LocationFix]:
        return list(await session.scalars(select(LocationFix).order_by(LocationFix.id)))

    return await store.transaction("t", op)


async def live_call(env: Env, uniqueid: str = "now.1", *, connect: bool = True) -> tuple[str, ClientWebSocketResponse]:
    """Ayu logged in with her console open; a call of NUMBER connected to her softphone."""
    calls = Calls(env.store)
    await make_user(env.store, "ayu", "calltaker", interface="PJSIP/taker1")
    await login(env.client, "ayu")
    ws = await env.client.ws_connect("/api/ws")
    await receive(ws, "hello")
    call_id = await calls.open_call(
        uniqueid=uniqueid, arrived_at=utcnow(), routed_by="agi", caller_raw="081234567890", caller_number=NUMBER
    )
    if connect:
        await env.fake.send(agent_connect(uniqueid, "PJSIP/taker1"))
        assert (await receive(ws, "pop"))["call"]["fixes"] == []
    return call_id, ws


async def post_aml(client: Client, form: dict[str, str], **headers: str) -> Any:
    return await client.post("/aml", data=form, headers={"X-AML-Key": SECRET, **headers})


# -- AML over HTTPS ------------------------------------------------------------------------------------


async def test_aml_post_shows_on_the_pop_of_the_live_call_and_is_stored(env: Env) -> None:
    call_id, ws = await live_call(env)
    resp = await post_aml(env.client, AML)
    assert resp.status == 200
    message = await receive(ws, "location", timeout=1.0)
    assert message["call_id"] == call_id
    fix = message["fix"]
    assert (fix["latitude"], fix["longitude"], fix["accuracy_m"]) == (-8.3581234, 114.6170123, 14.0)
    assert (fix["source"], fix["via"], fix["confidence"]) == ("gps", "aml_https", 68)
    (row,) = await fixes(env.store)
    assert (row.call_id, row.number) == (call_id, NUMBER)
    # A reload of the console shows it with the call.
    current = await (await env.client.get("/api/console/current")).json()
    assert [f["id"] for f in current["call"]["fixes"]] == [row.id]
    await ws.close()


async def test_aml_key_may_come_in_the_query(env: Env) -> None:
    call_id, ws = await live_call(env)
    resp = await env.client.post(f"/aml?key={SECRET}", data=AML)
    assert resp.status == 200
    assert (await receive(ws, "location", timeout=1.0))["call_id"] == call_id
    await ws.close()


@pytest.mark.parametrize("headers", [{}, {"X-AML-Key": "wrong"}, {"X-AML-Key": SECRET[:-1]}])
async def test_aml_without_the_secret_is_refused_and_stores_nothing(env: Env, headers: dict[str, str]) -> None:
    await live_call(env, connect=False)
    resp = await env.client.post("/aml", data=AML, headers=headers)
    assert resp.status == 403
    assert await fixes(env.store) == []


@pytest.mark.parametrize(
    "form",
    [
        {**AML, "location_latitude": "95"},
        {**AML, "location_longitude": "east"},
        {k: v for k, v in AML.items() if k != "device_number"},
        {**AML, "device_number": "12"},
        {**AML, "location_latitude": "0", "location_longitude": "0"},
        {**AML, "location_accuracy": "-1"},
        {"v": "3"},
        {},
    ],
)
async def test_malformed_aml_is_answered_2xx_and_stores_nothing(env: Env, form: dict[str, str]) -> None:
    await live_call(env, connect=False)
    resp = await post_aml(env.client, form)
    assert resp.status == 200
    assert await fixes(env.store) == []


async def test_aml_that_is_not_a_form_is_answered_2xx_and_stores_nothing(env: Env) -> None:
    resp = await env.client.post("/aml", data=b"\xff\xfe garbage", headers={"X-AML-Key": SECRET})
    assert resp.status == 200
    resp = await env.client.post("/aml", json={"location_latitude": 1}, headers={"X-AML-Key": SECRET})
    assert resp.status == 200
    assert await fixes(env.store) == []


async def test_aml_before_the_call_record_is_claimed_by_its_pop(env: Env) -> None:
    resp = await post_aml(env.client, AML)
    assert resp.status == 200
    (early,) = await fixes(env.store)
    assert early.call_id is None
    call_id, ws = await live_call(env, connect=False)
    await env.fake.send(agent_connect("now.1", "PJSIP/taker1"))
    pop = (await receive(ws, "pop"))["call"]
    assert [f["id"] for f in pop["fixes"]] == [early.id]
    (claimed,) = await fixes(env.store)
    assert claimed.call_id == call_id
    await ws.close()


async def test_aml_goes_to_a_recent_call_but_not_an_old_one(env: Env) -> None:
    calls = Calls(env.store)
    old = await calls.open_call(
        uniqueid="old.1", arrived_at=utcnow() - timedelta(hours=3), routed_by="agi", caller_number=NUMBER
    )
    recent = await calls.open_call(
        uniqueid="recent.1", arrived_at=utcnow() - timedelta(minutes=10), routed_by="agi", caller_number=NUMBER
    )

    async def end(call_id: str, ago: timedelta) -> None:
        async def op(session: AsyncSession) -> None:
            await session.execute(update(Call).where(Call.id == call_id).values(ended_at=utcnow() - ago))

        await env.store.transaction("t", op)

    await end(old, timedelta(hours=2, minutes=50))
    await end(recent, timedelta(minutes=5))
    assert (await post_aml(env.client, AML)).status == 200
    await end(recent, timedelta(hours=1))
    assert (await post_aml(env.client, AML)).status == 200
    assert [f.call_id for f in await fixes(env.store)] == [recent, None]


async def test_aml_guard_by_address_and_unconfigured_receiver(
    tmp_path: Path, fake_ami: FakeAmi, twilio: FakeTwilio
) -> None:
    for location, status in (
        ({"aml_allow": ("10.0.0.0/8",)}, 403),  # the secret is right, the address is not
        ({"aml_allow": ("127.0.0.0/8",)}, 200),
        ({"aml_secret": "", "aml_allow": ("127.0.0.1",)}, 200),  # an allowlist alone will do
        ({"aml_secret": ""}, 503),  # neither: the receiver is off
    ):
        client = TestClient(
            TestServer(create_app(config(tmp_path / str(len(location)) / str(status), fake_ami, twilio, **location)))
        )
        await client.start_server()
        try:
            resp = await post_aml(client, AML)
            assert resp.status == status, (location, await resp.text())
        finally:
            await client.close()


# -- AML by SMS ----------------------------------------------------------------------------------------


def sms_params(twilio: FakeTwilio, body: str, sender: str = NUMBER) -> dict[str, str]:
    return {
        "AccountSid": twilio.account_sid,
        "MessageSid": "SM" + "1" * 32,
        "From": sender,
        "To": "+62365100112",
        "Body": body,
        "NumMedia": "0",
    }


async def post_sms(env: Env, params: dict[str, str], signature: str | None = None) -> Any:
    if signature is None:
        signature = sign(PUBLIC_URL + "/api/twilio/sms", params, env.twilio.auth_token)
    return await env.client.post("/api/twilio/sms", data=params, headers={"X-Twilio-Signature": signature})


async def test_aml_sms_through_twilio_shows_on_the_pop(env: Env) -> None:
    assert len(SMS_AML) == 88
    call_id, ws = await live_call(env)
    resp = await post_sms(env, sms_params(env.twilio, SMS_AML))
    assert resp.status == 200 and "<Response" in await resp.text()
    fix = (await receive(ws, "location", timeout=1.0))["fix"]
    assert (fix["latitude"], fix["longitude"], fix["accuracy_m"], fix["via"], fix["source"]) == (
        -8.35801,
        114.61702,
        25.0,
        "aml_sms",
        "wifi",
    )
    assert fix["fixed_at"] == "2025-12-06T09:59:00+00:00"
    (row,) = await fixes(env.store)
    assert row.call_id == call_id and row.details["length_ok"] is True
    await ws.close()


async def test_forged_or_unsigned_sms_webhooks_change_nothing(env: Env) -> None:
    await live_call(env, connect=False)
    params = sms_params(env.twilio, SMS_AML)
    forged = sign(PUBLIC_URL + "/api/twilio/sms", params, "not-the-auth-token")
    assert (await post_sms(env, params, forged)).status == 403
    tampered = dict(params, Body=SMS_AML.replace("-8.35801", "-6.20000"))
    assert (
        await post_sms(env, tampered, sign(PUBLIC_URL + "/api/twilio/sms", params, env.twilio.auth_token))
    ).status == 403
    assert (await env.client.post("/api/twilio/sms", data=params)).status == 403
    assert await fixes(env.store) == []


@pytest.mark.parametrize(
    "body",
    [
        "Tolong, ada kebakaran di pasar",
        'A"ML=1;lt=-8.35;lg=114.61;pm=N',
        'A"ML=1;lt=-98.35;lg=114.61;rd=10;pm=G',
        'A"ML=1;lg=114.61;rd=10;pm=G',
    ],
)
async def test_signed_sms_that_is_not_a_valid_aml_stores_nothing(env: Env, body: str) -> None:
    await live_call(env, connect=False)
    resp = await post_sms(env, sms_params(env.twilio, body))
    assert resp.status == 200
    assert await fixes(env.store) == []


# -- the SMS location link -----------------------------------------------------------------------------


async def send_link(env: Env, call_id: str) -> Any:
    csrf = (await (await env.client.get("/api/me")).json())["csrf_token"]
    return await env.client.post(f"/api/calls/{call_id}/location-link", headers={"X-CSRF-Token": csrf})


async def test_location_link_sms_page_and_position_on_the_pop(env: Env) -> None:
    call_id, ws = await live_call(env)
    resp = await send_link(env, call_id)
    body = await resp.json()
    assert resp.status == 202, body
    (sms,) = env.twilio.messages()
    assert sms.param("To") == NUMBER
    text = sms.param("Body")
    assert one_gsm7_sms(text), text
    match = re.search(re.escape(PUBLIC_URL) + r"(/l/[A-Za-z0-9_-]{16})\b", text)
    assert match, text
    path = match.group(1)

    async with env.client.session.get(env.client.make_url(path), cookies=None) as page:
        html = await page.text()
        assert page.status == 200, html
        assert "/static/locate.js" in html and "script-src 'self'" in page.headers["Content-Security-Policy"]
    resp = await env.client.post(path, json={"latitude": -8.36, "longitude": 114.62, "accuracy": 18.5})
    assert resp.status == 200, await resp.text()
    fix = (await receive(ws, "location", timeout=1.0))["fix"]
    assert (fix["latitude"], fix["longitude"], fix["accuracy_m"], fix["via"], fix["confidence"]) == (
        -8.36,
        114.62,
        18.5,
        "link",
        95,
    )
    (row,) = await fixes(env.store)
    assert row.call_id == call_id and row.link_id is not None

    # Bad positions are refused and not stored.
    for bad in ({"latitude": 200, "longitude": 1}, {"latitude": "x"}, [1, 2]):
        assert (await env.client.post(path, json=bad)).status == 422
    assert (await env.client.post(path, data=b"not json")).status == 422
    assert len(await fixes(env.store)) == 1
    await ws.close()


async def test_location_link_expires_and_unknown_tokens_are_404(env: Env) -> None:
    call_id, ws = await live_call(env, connect=False)
    assert (await send_link(env, call_id)).status == 202
    path = re.search(r"(/l/[A-Za-z0-9_-]+)", env.twilio.messages()[0].param("Body"))
    assert path
    assert (await env.client.get("/l/" + "A" * 16)).status == 404
    assert (await env.client.post("/l/" + "A" * 16, json={"latitude": 1, "longitude": 1})).status == 404
    assert (await env.client.get("/l/../../etc")).status == 404

    async def expire(session: AsyncSession) -> None:
        await session.execute(update(LocationLink).values(expires_at=utcnow() - timedelta(seconds=1)))

    await env.store.transaction("t", expire)
    assert (await env.client.get(path.group(1))).status == 410
    assert (await env.client.post(path.group(1), json={"latitude": -8.3, "longitude": 114.6})).status == 410
    assert await fixes(env.store) == []
    await ws.close()


async def test_location_links_are_rate_limited_per_call(env: Env) -> None:
    call_id, ws = await live_call(env, connect=False)
    for _ in range(3):
        assert (await send_link(env, call_id)).status == 202
    resp = await send_link(env, call_id)
    assert resp.status == 429
    assert len(env.twilio.messages()) == 3
    assert (await send_link(env, "nosuchcall")).status == 404
    await ws.close()


async def test_public_link_pages_are_rate_limited_per_address(env: Env) -> None:
    env.client.app[LIMITER].limit = 3
    statuses = [(await env.client.get("/l/" + "B" * 16)).status for _ in range(5)]
    assert statuses == [404, 404, 404, 429, 429]


async def test_location_link_needs_a_textable_caller(env: Env) -> None:
    calls = Calls(env.store)
    await make_user(env.store, "ayu", "calltaker", interface="PJSIP/taker1")
    await login(env.client, "ayu")
    landline = await calls.open_call(
        uniqueid="fixed.1", arrived_at=utcnow(), routed_by="agi", caller_number="+62365123456"
    )
    withheld = await calls.open_call(uniqueid="anon.1", arrived_at=utcnow(), routed_by="agi")
    assert (await send_link(env, landline)).status == 409
    assert (await send_link(env, withheld)).status == 409
    assert env.twilio.messages() == []


def test_openapi_fragment_describes_every_location_route() -> None:
    from callcenter.web import location_api
    from callcenter.web.openapi import FRAGMENTS

    fragment = json.loads((FRAGMENTS / "location.json").read_text(encoding="utf-8"))
    served = {(r.path, r.method.lower()) for r in location_api.routes if isinstance(r, web.RouteDef)}
    assert served == {(path, method) for path, ops in fragment["paths"].items() for method in ops}


async def test_a_position_after_the_hangup_still_reaches_the_console_that_had_the_call(env: Env) -> None:
    call_id, ws = await live_call(env)
    complete = {"Event": "AgentComplete", "Queue": "calltakers", "Uniqueid": "now.1", "Interface": "PJSIP/taker1"}
    await env.fake.send({**complete, "MemberName": "taker1", "TalkTime": "30", "HoldTime": "4", "Reason": "caller"})
    assert (await receive(ws, "call_ended"))["call_id"] == call_id
    assert (await post_aml(env.client, AML)).status == 200
    assert (await receive(ws, "location", timeout=1.0))["call_id"] == call_id
    await ws.close()


async def test_retention_deletes_old_positions_and_links(env: Env) -> None:
    from callcenter.config import RetentionConfig
    from callcenter.supervision.retention import run_retention

    call_id, ws = await live_call(env)
    assert (await post_aml(env.client, AML)).status == 200
    assert (await send_link(env, call_id)).status == 202
    await ws.close()
    later = utcnow() + timedelta(days=400)
    dry = await run_retention(env.store, RetentionConfig(personal_days=365), dry_run=True, now=later)
    assert dry.locations_deleted == 2 and len(await fixes(env.store)) == 1
    kept = await run_retention(env.store, RetentionConfig(personal_days=365), now=utcnow())
    assert kept.locations_deleted == 0
    done = await run_retention(env.store, RetentionConfig(personal_days=365), now=later)
    assert done.locations_deleted == 2
    assert await fixes(env.store) == []

    async def links(session: AsyncSession) -> list[LocationLink]:
        return list(await session.scalars(select(LocationLink)))

    assert await env.store.transaction("t", links) == []
