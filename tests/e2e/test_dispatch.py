"""End-to-end dispatch: real Asterisk 22, SIPp agency phones, the real app as a child process.

A call-taker logs in over HTTP and dispatches an incident; the app originates calls to the agencies'
duty lines, the SIPp phone answers, hears the briefing and presses 1 (RFC 4733), and the database
must then say who accepted on which line, with every attempt on the way.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.pbx.harness import TestPbx
from callcenter.store import Store
from callcenter.store.incidents import Incidents
from callcenter.store.models import Dispatch, DispatchAttempt, Incident
from callcenter.testing import sipp
from callcenter.testing.app import AppProcess, dispatch_env
from callcenter.testing.wait import until
from callcenter.testing.web import SAMPLE_INTAKE

pytestmark = pytest.mark.pbx

#: Short ring time so the escalation case takes seconds, not the production 20 s.
ANSWER_TIMEOUT = 4
AGENCIES = f"""
[sla]
fire = 300
medical = 300
default = 900

[agencies.damkar]
name = "Damkar Jembrana"
categories = ["fire"]
answer_timeout = {ANSWER_TIMEOUT}
lines = ["PJSIP/damkar", "PJSIP/damkar-backup"]

[agencies.ambulans]
name = "Ambulans RSU Negara"
categories = ["medical"]
answer_timeout = {ANSWER_TIMEOUT}
lines = ["PJSIP/ambulans"]

[[rules]]
when_flag = "needs_water"
add = ["ambulans"]
"""


def port(pbx: TestPbx, name: str) -> int:
    return dict(pbx.spec.agencies)[name]


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


async def dispatch(app: AppProcess, taker: aiohttp.ClientSession, incident_id: int, codes: list[str]) -> Any:
    async with taker.post(f"{app.base_url}/api/incidents/{incident_id}/dispatch", json={"agencies": codes}) as resp:
        body = await resp.json()
        assert resp.status == 202, body
        return body


async def new_incident(store: Store) -> Incident:
    return await Incidents(store).create(SAMPLE_INTAKE, call_id=None, user_id=None)


async def settled(store: Store, incident_id: int, count: int, timeout: float = 60.0) -> list[Dispatch]:
    """The incident's dispatches once ``count`` of them left ``calling``."""
    found: list[Dispatch] = []

    async def done() -> bool:
        async def op(session: AsyncSession) -> list[Dispatch]:
            rows = await session.scalars(select(Dispatch).where(Dispatch.incident_id == incident_id))
            return list(rows)

        found[:] = await store.transaction("t", op)
        return len(found) == count and all(d.status != "calling" for d in found)

    try:
        await until(done, timeout=timeout, interval=0.2, what="dispatches settled")
    except TimeoutError:
        raise AssertionError([(d.agency, d.status) for d in found]) from None
    return sorted(found, key=lambda d: d.agency)


async def attempts(store: Store, dispatch_id: int) -> list[DispatchAttempt]:
    async def op(session: AsyncSession) -> list[DispatchAttempt]:
        rows = await session.scalars(
            select(DispatchAttempt).where(DispatchAttempt.dispatch_id == dispatch_id).order_by(DispatchAttempt.id)
        )
        return list(rows)

    return await store.transaction("t", op)


async def test_officer_accepts_with_key_1(app: AppProcess, store: Store, pbx: TestPbx, taker: Any) -> None:
    phone = await sipp.answerer(port(pbx, "damkar"), answer_after=0.5, dtmf="1", dtmf_delay=3.0, timeout=90)
    try:
        incident = await new_incident(store)
        body = await dispatch(app, taker, incident.id, ["damkar"])
        assert [d["agency"] for d in body["dispatches"]] == ["damkar"]
        (d,) = await settled(store, incident.id, 1)
        tries = await attempts(store, d.id)
        assert d.status == "accepted", (d.status, [(a.line, a.outcome, a.reason) for a in tries], app.log_tail())
        assert d.accepted_line == "PJSIP/damkar" and d.accepted_via == "pbx"
        assert [(a.line, a.outcome, a.reason) for a in tries] == [("PJSIP/damkar", "accepted", "briefing")]
        assert list((pbx.host_dir / "prompts").glob("brief-*.wav")), "briefing prompt not generated"
        assert tries[0].reference == f"dispatch-{tries[0].id}" and tries[0].ended_at is not None
        refreshed = await Incidents(store).get(incident.id)
        assert refreshed is not None and refreshed.sla_met_at is not None and refreshed.sla_due_at is not None
        await pbx.await_idle()
    finally:
        res = await phone.stop()
    assert res.incoming == 1, res.errors


async def test_the_briefing_fails_over_to_the_next_app_node(
    app: AppProcess, store: Store, pbx: TestPbx, taker: Any
) -> None:
    """``CC_AGI_URLS`` (``[callcenter-agi]``): a node that dies mid-session (takes the connection and drops
    it) and one that is down (refused) come first; the third, the live app, briefs the officer."""
    dying = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    down = sipp.free_port("tcp")
    secret = pbx.spec.agi_secret
    nodes = [f"agi://127.0.0.1:{dying.sockets[0].getsockname()[1]}/{secret}", f"agi://127.0.0.1:{down}/{secret}"]
    await pbx.acli(f"dialplan set global CC_AGI_URLS {'|'.join([*nodes, pbx.spec.cc_agi_url])}")
    phone = await sipp.answerer(port(pbx, "damkar"), answer_after=0.5, dtmf="1", dtmf_delay=3.0, timeout=90)
    try:
        incident = await new_incident(store)
        await dispatch(app, taker, incident.id, ["damkar"])
        (d,) = await settled(store, incident.id, 1)
        tries = await attempts(store, d.id)
        assert [(a.outcome, a.reason) for a in tries] == [("accepted", "briefing")], app.log_tail()
        log = pbx.log_text()
        assert "AGI briefing not served by node 1 of 3" in log and "AGI briefing not served by node 2 of 3" in log
        assert "AGI briefing not served by node 3 of 3" not in log
        await pbx.await_idle()
    finally:
        # Back to what the session's PBX was rendered with (both nodes of the two-node tests).
        await pbx.acli(f"dialplan set global CC_AGI_URLS {pbx.spec.cc_agi_urls or pbx.spec.cc_agi_url}")
        dying.close()
        await phone.stop()


async def test_unanswered_line_escalates_to_backup(app: AppProcess, store: Store, pbx: TestPbx, taker: Any) -> None:
    # Rings for ever (Asterisk CANCELs it after answer_timeout): no INVITE retransmissions left behind.
    ringing = await sipp.answerer(port(pbx, "damkar"), answer_after=120, max_calls=None, timeout=120)
    backup = await sipp.answerer(port(pbx, "damkar-backup"), answer_after=0.5, dtmf="1", dtmf_delay=3.0, timeout=90)
    try:
        incident = await new_incident(store)
        await dispatch(app, taker, incident.id, ["damkar"])
        (d,) = await settled(store, incident.id, 1)
        tries = await attempts(store, d.id)
        summary = [(a.line, a.outcome, a.reason) for a in tries]
        assert d.status == "accepted" and d.accepted_line == "PJSIP/damkar-backup", (summary, app.log_tail())
        assert [(a.line, a.outcome) for a in tries] == [
            ("PJSIP/damkar", "no_answer"),
            ("PJSIP/damkar-backup", "accepted"),
        ]
        assert tries[0].reason == "originate reason 3"
        ended, started = tries[0].ended_at, tries[0].started_at
        assert ended is not None and (ended - started).total_seconds() >= ANSWER_TIMEOUT - 0.5
        await pbx.await_idle()
    finally:
        ring_res = await ringing.stop()
        await backup.stop()
    assert ring_res.incoming == 1, ring_res.errors


async def test_two_agencies_in_parallel(app: AppProcess, store: Store, pbx: TestPbx, taker: Any) -> None:
    damkar = await sipp.answerer(port(pbx, "damkar"), answer_after=0.5, dtmf="1", dtmf_delay=3.0, timeout=90)
    ambulans = await sipp.answerer(port(pbx, "ambulans"), answer_after=0.5, dtmf="1", dtmf_delay=3.0, timeout=90)
    try:
        incident = await new_incident(store)
        await dispatch(app, taker, incident.id, ["damkar", "ambulans"])
        found = await settled(store, incident.id, 2)
        assert [(d.agency, d.status, d.accepted_line) for d in found] == [
            ("ambulans", "accepted", "PJSIP/ambulans"),
            ("damkar", "accepted", "PJSIP/damkar"),
        ], app.log_tail()
        # Parallel, not one after the other: both lines were called before either accepted.
        first = [(await attempts(store, d.id))[0] for d in found]
        accepted_at = [d.accepted_at for d in found]
        assert all(a is not None for a in accepted_at)
        assert max(a.started_at for a in first) < min(t for t in accepted_at if t is not None)
        await pbx.await_idle()
    finally:
        await damkar.stop()
        await ambulans.stop()


async def test_bad_agencies_file_stops_the_start(pbx: TestPbx, pbx_ports: dict[str, int], tmp_path: Path) -> None:
    bad = tmp_path / "agencies.toml"
    bad.write_text(AGENCIES.replace('lines = ["PJSIP/ambulans"]', 'lines = ["PJSIP/ambulans", "0365 41118"]'))
    env = dispatch_env(pbx, pbx_ports["agi"], f"sqlite+aiosqlite:///{tmp_path}/{uuid.uuid4().hex}.db", bad)
    proc = AppProcess(env, tmp_path / "app.log", sipp.free_port("tcp"))
    try:
        with pytest.raises((RuntimeError, TimeoutError)):
            await proc.start(timeout=20)
        assert proc.proc is not None
        code = await proc.proc.wait()
        assert code != 0
        assert "[agencies.ambulans].lines[1]: '0365 41118'" in proc.log_path.read_text(), proc.log_tail()
    finally:
        await proc.stop()
