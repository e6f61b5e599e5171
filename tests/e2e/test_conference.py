"""End-to-end conference: real Asterisk 22, SIPp citizen / call-taker / agency phone, the real app.

A citizen calls 112 and taker1 answers; the incident of that call is dispatched to Damkar, whose duty
phone accepts with key 1. The call-taker then asks for a conference: the caller and the call-taker are
moved out of the queue's bridge into ConfBridge ``conf-<incident id>`` and the officer's line is called
into it, so the room must hold all three within seconds, and the call's timeline says so.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.pbx.harness import TestPbx
from callcenter.store import Calls, Store
from callcenter.store.incidents import Incidents
from callcenter.store.models import Call, Dispatch
from callcenter.testing import sipp
from callcenter.testing.app import AppProcess, dispatch_env
from callcenter.testing.wait import until
from callcenter.testing.web import SAMPLE_INTAKE

pytestmark = pytest.mark.pbx

AGENCIES = """
[sla]
fire = 300
default = 900

[agencies.damkar]
name = "Damkar Jembrana"
categories = ["fire"]
answer_timeout = 10
lines = ["PJSIP/damkar"]

[agencies.ambulans]
name = "Ambulans RSU Negara"
categories = ["medical"]
answer_timeout = 10
lines = ["+6236541113"]
"""

#: The citizen stays on the line this long after Asterisk's answer (greeting, queue, dispatch, conference);
#: the test ends the room itself well before.
CALLER_HOLD = 150.0


@pytest.fixture
async def app(pbx: TestPbx, pbx_ports: dict[str, int], db_url: str, tmp_path: Path) -> AsyncIterator[AppProcess]:
    await pbx.await_idle(timeout=30)
    agencies = tmp_path / "agencies.toml"
    agencies.write_text(AGENCIES)
    env = dispatch_env(pbx, pbx_ports["agi"], db_url, agencies)
    proc = AppProcess(env, tmp_path / "app.log", sipp.free_port("tcp"))
    await proc.start()
    await proc.wait_event("dispatch.ready")
    yield proc
    await proc.stop()


async def post(app: AppProcess, taker: aiohttp.ClientSession, path: str, body: Any = None) -> Any:
    async with taker.post(f"{app.base_url}{path}", json=body) as resp:
        return resp.status, await resp.json()


async def answered(store: Store) -> Call:
    calls = Calls(store)
    found: list[Call] = []

    async def ready() -> bool:
        found[:] = [c for c in await calls.recent_calls() if c.status == "answered"]
        return len(found) == 1

    await until(ready, timeout=60, interval=0.2, what="call answered by taker1")
    return found[0]


async def accepted(store: Store, incident_id: int) -> Dispatch:
    found: list[Dispatch] = []

    async def done() -> bool:
        async def op(session: AsyncSession) -> list[Dispatch]:
            return list(await session.scalars(select(Dispatch).where(Dispatch.incident_id == incident_id)))

        found[:] = await store.transaction("t", op)
        return len(found) == 1 and found[0].status != "calling"

    await until(done, timeout=60, interval=0.2, what="dispatch settled")
    assert found[0].status == "accepted", found[0].status
    return found[0]


def participants(pbx: TestPbx, room: str) -> list[str]:
    """Channel names ``confbridge list <room>`` shows (none when the room does not exist)."""
    out = pbx.cli(f"confbridge list {room}")
    return re.findall(r"^(PJSIP/\S+)", out, re.MULTILINE)


async def test_call_taker_conferences_caller_with_officer(
    app: AppProcess, store: Store, pbx: TestPbx, pbx_ports: dict[str, int], taker: Any
) -> None:
    calls = Calls(store)
    desk = await sipp.answerer(pbx_ports["taker1"], answer_after=0.5, hangup_by="remote", max_calls=None, timeout=240)
    # Answers the briefing (key 1) and then the conference call (the key is harmless there).
    officer = await sipp.answerer(
        pbx_ports["damkar"], answer_after=0.5, dtmf="1", dtmf_delay=3.0, max_calls=None, timeout=240
    )
    citizen: sipp.SippProcess | None = None
    room = ""
    try:
        citizen = await sipp.caller(
            f"127.0.0.1:{pbx.spec.sip_port}", "112", caller_id="081234567890", hold_seconds=CALLER_HOLD, timeout=240
        )
        call = await answered(store)
        incident = await Incidents(store).create(SAMPLE_INTAKE, call_id=call.id, user_id=None)
        room = f"conf-{incident.id}"

        # Not accepted yet: nobody to bring in.
        status, body = await post(app, taker, f"/api/incidents/{incident.id}/dispatch", {"agencies": ["damkar"]})
        assert status == 202, body
        dispatch_id = body["dispatches"][0]["id"]
        early, early_body = await post(app, taker, f"/api/dispatches/{dispatch_id}/conference")
        assert early == 409, early_body
        d = await accepted(store, incident.id)
        assert d.accepted_line == "PJSIP/damkar"
        # The briefing call is over before the conference call rings the same phone.
        await until(lambda: officer_calls(pbx) == 0, timeout=20, what="briefing call hung up")

        # The same login without its CSRF token: refused like every state-changing request.
        async with (
            aiohttp.ClientSession(cookie_jar=taker.cookie_jar) as no_token,
            no_token.post(f"{app.base_url}/api/dispatches/{dispatch_id}/conference") as resp,
        ):
            assert resp.status == 403

        status, body = await post(app, taker, f"/api/dispatches/{dispatch_id}/conference")
        assert status == 202, (body, app.log_tail())
        assert body["conference"]["room"] == room
        assert body["conference"]["officer_line"] == "PJSIP/damkar"

        seen: list[str] = []

        async def three() -> bool:
            seen[:] = participants(pbx, room)
            return len(seen) == 3

        try:
            await until(three, timeout=15, interval=0.3, what=f"3 participants in {room}")
        except TimeoutError:
            raise AssertionError((seen, pbx.log_tail(), app.log_tail())) from None
        assert sum(n.startswith("PJSIP/taker1-") for n in seen) == 1, seen
        assert sum(n.startswith("PJSIP/damkar-") for n in seen) == 1, seen

        # A second request finds the call out of the queue's bridge: 409, nothing redirected twice.
        again, again_body = await post(app, taker, f"/api/dispatches/{dispatch_id}/conference")
        assert again == 409, again_body

        events = [(e.kind, e.data) for e in await calls.timeline(call.id)]
        conf = [data for kind, data in events if kind == "conference"]
        assert len(conf) == 1, events
        assert conf[0]["room"] == room and conf[0]["dispatch_id"] == dispatch_id and conf[0]["by"] == "taker"
    finally:
        # Ending the room hangs up all three legs (the dialplan hangs up after ConfBridge); a test
        # that failed before the room existed hangs up whatever it left on this PBX.
        with contextlib.suppress(Exception):
            pbx.cli(f"confbridge kick {room} all" if room else "channel request hangup all")
        results = [await citizen.wait(timeout=20)] if citizen is not None else []
        with contextlib.suppress(Exception):
            await pbx.await_idle(timeout=20)
        desk_res = await desk.stop()
        officer_res = await officer.stop()
    assert all(r.ok for r in results), [r.errors for r in results]
    assert desk_res.incoming == 1, desk_res.errors
    assert officer_res.incoming == 2, officer_res.errors  # the briefing, then the conference


def officer_calls(pbx: TestPbx) -> int:
    return len(re.findall(r"^PJSIP/damkar-", pbx.cli("core show channels concise"), re.MULTILINE))
