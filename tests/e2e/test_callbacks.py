"""End-to-end call-backs and citizen ratings: real Asterisk 22, SIPp phones, the real app as a child.

Citizens are SIPp processes: a UAC that calls 112 and gives up while queued, and a UAS on the test
PBX's "citizen" line (``PbxSpec.citizens``), which every call-back and rating call reaches whatever
the number dialled. Twilio is the local recorder (``FakeTwilio``).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.dispatch.speech import wav_seconds
from callcenter.pbx.harness import TestPbx
from callcenter.store import Store, utcnow
from callcenter.store.incidents import Incidents
from callcenter.store.models import Call, Callback, Dispatch, Rating
from callcenter.testing import sipp
from callcenter.testing.app import AppProcess, pbx_env
from callcenter.testing.browser import phone_port, rows
from callcenter.testing.fake_twilio import FakeTwilio
from callcenter.testing.wait import until
from callcenter.testing.web import DEFAULT_PASSWORD, make_user

pytestmark = pytest.mark.pbx

CALLER = "081234567890"
CALLER_E164 = "+6281234567890"
INCIDENT = {
    "reporter_name": "Made Wirawan",
    "callback_number": CALLER_E164,
    "address": "Jl. Udayana 12",
    "district": "Negara",
    "subdistrict": "Lelateng",
    "category": "fire",
    "priority": "critical",
    "victims_count": 0,
    "victims_condition": "",
    "access_route": "",
}

Session = tuple[aiohttp.ClientSession, str]


@pytest.fixture
async def app(
    pbx: TestPbx, pbx_ports: dict[str, int], db_url: str, tmp_path: Path, fake_twilio: FakeTwilio
) -> AsyncIterator[AppProcess]:
    await pbx.await_idle(timeout=30)
    web_port = sipp.free_port("tcp")
    env = {
        **pbx_env(pbx, pbx_ports["agi"], db_url),
        # The SMS link must open on this very app.
        **fake_twilio.app_env(f"http://127.0.0.1:{web_port}"),
    }
    proc = AppProcess(env, tmp_path / "app.log", web_port)
    await proc.start()
    await proc.wait_event("supervision.ready")
    yield proc
    await proc.stop()


async def login(app: AppProcess, store: Store, username: str, role: str, interface: str | None = None) -> Session:
    await make_user(store, username, role, interface=interface)
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with http.post(f"{app.base_url}/api/login", json={"username": username, "password": DEFAULT_PASSWORD}) as r:
        assert r.status == 200, await r.text()
        return http, (await r.json())["csrf_token"]


async def resolved_incident(store: Store) -> int:
    """An incident whose only dispatch the agency has just reported ``resolved``."""
    incident = await Incidents(store).create(INCIDENT, call_id=None, user_id=None)
    now = utcnow()

    async def op(session: AsyncSession) -> None:
        session.add(
            Dispatch(
                incident_id=incident.id,
                agency="damkar",
                status="resolved",
                created_at=now - timedelta(minutes=30),
                updated_at=now,
                accepted_at=now - timedelta(minutes=29),
            )
        )

    await store.transaction("t", op)
    return incident.id


async def test_abandoned_call_is_called_back(app: AppProcess, store: Store, pbx: TestPbx) -> None:
    # 1. A citizen gives up while taker1's phone rings unanswered.
    await app.wait_event("tracker.resynced")
    ringing = await sipp.answerer(phone_port(pbx, "taker1"), answer_after=60, max_calls=None, timeout=90)
    try:
        hangup_after = wav_seconds(pbx.repo_root / "sounds" / "cc-greeting.wav") + 1.5
        caller = await sipp.early_hangup_caller(
            f"127.0.0.1:{pbx.spec.sip_port}", "112", caller_id=CALLER, hangup_after=hangup_after
        )
        await caller.wait()
        await pbx.await_idle()
    finally:
        await ringing.stop()

    async def abandoned() -> list[Call]:
        return await rows(store, Call, Call.status == "abandoned")

    await until(lambda: _nonempty(abandoned), timeout=15, what="abandoned call stored")
    (call,) = await abandoned()

    # 2. It is on the call-taker's abandoned list.
    http, csrf = await login(app, store, "ayu", "calltaker", interface="PJSIP/taker1")
    try:
        async with http.get(f"{app.base_url}/api/abandoned") as resp:
            listed = await resp.json()
            assert resp.status == 200, listed
        assert [(r["call_id"], r["number"], r["callbacks"]) for r in listed] == [(call.id, CALLER_E164, [])]

        # 3. One click: taker1's softphone rings and answers, then the citizen's phone rings and answers.
        ws = await http.ws_connect(f"{app.base_url}/api/ws")
        taker = await sipp.answerer(phone_port(pbx, "taker1"), answer_after=0.3, hangup_by="remote", timeout=60)
        citizen = await sipp.answerer(phone_port(pbx, "citizen"), answer_after=0.5, hangup_by="local", hold_seconds=2)
        try:
            async with http.post(
                f"{app.base_url}/api/calls/{call.id}/callback", headers={"X-CSRF-Token": csrf}
            ) as resp:
                body = await resp.json()
                assert resp.status == 202, body
            assert body["callback"]["outcome"] == "calling"
            outcomes = await _callback_messages(ws, body["callback"]["id"], until_outcome="answered")
            assert outcomes[-1] == "answered", (outcomes, app.log_tail())
            citizen_result = await citizen.wait(timeout=30)
            await pbx.await_idle()
        finally:
            await ws.close()
            taker_result = await taker.stop()
            await citizen.stop()
        assert citizen_result.incoming == 1, citizen_result.errors
        assert taker_result.incoming == 1, taker_result.errors
        (cb,) = await rows(store, Callback, Callback.call_id == call.id)
        assert (cb.outcome, cb.reason) == ("answered", "answer") and cb.ended_at is not None
        async with http.get(f"{app.base_url}/api/abandoned") as resp:
            listed = await resp.json()
        assert [c["outcome"] for c in listed[0]["callbacks"]] == ["answered"]
    finally:
        await http.close()


async def test_resolved_incident_is_rated_by_ivr(app: AppProcess, store: Store, pbx: TestPbx) -> None:
    # Key 4 while the question plays: the route takes a key during the prompt.
    citizen = await sipp.answerer(phone_port(pbx, "citizen"), answer_after=0.5, dtmf="4", dtmf_delay=2.5, timeout=90)
    try:
        incident_id = await resolved_incident(store)

        async def rated() -> bool:
            found = await rows(store, Rating, Rating.incident_id == incident_id)
            return bool(found) and found[0].status not in ("requested", "calling")

        await until(rated, timeout=60, interval=0.3, what="rating settled")
        (rating,) = await rows(store, Rating, Rating.incident_id == incident_id)
        assert (rating.via, rating.status, rating.score) == ("ivr", "rated", 4), app.log_tail()
        await pbx.await_idle()
    finally:
        result = await citizen.stop()
    assert result.incoming == 1, result.errors
    # Asked once: the trigger does not call again.
    await asyncio.sleep(4)
    assert len(await rows(store, Rating, Rating.incident_id == incident_id)) == 1


async def test_rating_by_sms_link(app: AppProcess, store: Store, fake_twilio: FakeTwilio) -> None:
    incident = await Incidents(store).create(INCIDENT, call_id=None, user_id=None)
    http, csrf = await login(app, store, "sari", "supervisor")
    try:
        async with http.post(
            f"{app.base_url}/api/incidents/{incident.id}/rating", json={"via": "sms"}, headers={"X-CSRF-Token": csrf}
        ) as resp:
            body = await resp.json()
            assert resp.status == 202, body
        assert (body["rating"]["via"], body["rating"]["status"]) == ("sms", "calling")
    finally:
        await http.close()
    (sms,) = fake_twilio.messages()
    assert sms.param("To") == CALLER_E164
    match = re.search(r"(http://\S+/rate/([A-Za-z0-9_-]+))", sms.param("Body"))
    assert match, sms.param("Body")
    link, token = match.groups()

    # The citizen opens the link (no session, no cookies) and presses 5.
    async with aiohttp.ClientSession() as citizen:
        async with citizen.get(link) as resp:
            page = await resp.text()
            assert resp.status == 200, page
            assert 'data-testid="rate-5"' in page and "<script" not in page
            assert "form-action 'self'" in resp.headers["Content-Security-Policy"]
        async with citizen.post(link, data={"score": "5"}) as resp:
            assert resp.status == 200, await resp.text()
        async with citizen.post(link, data={"score": "1"}) as resp:
            assert resp.status == 409, await resp.text()
        async with citizen.get(f"{app.base_url}/rate/{uuid.uuid4().hex}") as resp:
            assert resp.status == 404
    (rating,) = await rows(store, Rating, Rating.incident_id == incident.id)
    assert (rating.via, rating.status, rating.score, rating.token) == ("sms", "rated", 5, token)


async def _nonempty(fetch: Any) -> bool:
    return bool(await fetch())


async def _callback_messages(ws: aiohttp.ClientWebSocketResponse, callback_id: int, until_outcome: str) -> list[str]:
    """Outcomes of ``callback`` messages for this callback, until ``until_outcome`` or a final one."""
    seen: list[str] = []
    async with asyncio.timeout(60):
        while True:
            message = await ws.receive_json()
            if message.get("type") != "callback" or message["callback"]["id"] != callback_id:
                continue
            seen.append(message["callback"]["outcome"])
            if seen[-1] != "calling":
                return seen
