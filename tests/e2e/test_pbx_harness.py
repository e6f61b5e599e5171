"""End-to-end: the production dialplan on a real Asterisk 22, driven by SIPp.

These prove the promise the dialplan makes: a 112 caller reaches a human even when the app is
down or its FastAGI server dies mid-session, and reaches the overflow line when no call-taker answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from callcenter.pbx.harness import TestPbx
from callcenter.testing import sipp

pytestmark = pytest.mark.pbx

#: The dialplan's warning when it queues with its defaults: no route from the app by the end of the greeting.
FALLBACK_WARNING = "callcenter: no route from the app"
#: Greeting (~6.5 s) + queue + answer: a 112 caller needs this long before anyone can talk.
CALL_SECONDS = 14.0


def target(pbx: TestPbx) -> str:
    return f"127.0.0.1:{pbx.spec.sip_port}"


def taker_port(pbx: TestPbx, name: str) -> int:
    return dict(pbx.spec.takers)[name]


@pytest.fixture(autouse=True)
async def _idle_pbx(pbx: TestPbx) -> None:
    """Every test starts with no channel up, so one test's calls never bleed into another's."""
    await pbx.await_idle(timeout=30)


def log_since(pbx: TestPbx, offset: int) -> str:
    return pbx.log_text()[offset:]


async def test_bare_call_completes(pbx: TestPbx) -> None:
    call = await sipp.caller(target(pbx), "bare", hold_seconds=5, timeout=20)
    res = await call.wait()
    # bench-bare answers, waits 1 s and hangs up: the BYE from Asterisk ends the call normally.
    assert res.ok, (res, res.errors, pbx.log_tail())
    assert res.successful == 1


async def test_112_without_agi_server_reaches_call_taker(pbx: TestPbx) -> None:
    mark = len(pbx.log_text())
    taker = await sipp.answerer(taker_port(pbx, "taker1"), answer_after=0.3, hangup_by="remote", max_calls=None)
    try:
        call = await sipp.caller(target(pbx), "112", caller_id="081234567890", hold_seconds=CALL_SECONDS)
        res = await call.wait()
        assert res.ok, (res.errors, pbx.log_tail())
        await pbx.await_idle()
    finally:
        taker_res = await taker.stop()
    assert taker_res.incoming == 1, taker_res
    assert taker_res.successful == 1 and taker_res.failed == 0, taker_res.errors
    log = log_since(pbx, mark)
    # Queued with defaults; the hangup handler's report found no server either, and did not hold the hangup.
    assert FALLBACK_WARNING in log and "hangup report" in log and "AGISTATUS=FAILURE" in log, log


async def test_agi_server_dying_mid_session_still_reaches_call_taker(pbx: TestPbx) -> None:
    """A FastAGI server that reads the agi_* header and then closes (our app crashing).

    The 112 caller's way to the queue has no AGI in it; the one AGI session of the call is the hangup
    handler's report, which meets the dying server after the call, and must not hold the hangup."""
    sessions: list[bytes] = []

    async def die_after_header(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        header = b""
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            header = await asyncio.wait_for(reader.readuntil(b"\n\n"), 5)
        sessions.append(header)
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    agi_port = int(pbx.spec.agi_url.rsplit(":", 1)[1])
    server = await asyncio.start_server(die_after_header, "127.0.0.1", agi_port)
    mark = len(pbx.log_text())
    taker = await sipp.answerer(taker_port(pbx, "taker1"), answer_after=0.3, hangup_by="remote", max_calls=None)
    try:
        call = await sipp.caller(target(pbx), "112", caller_id="+6281234567", hold_seconds=CALL_SECONDS)
        res = await call.wait()
        assert res.ok, (res.errors, pbx.log_tail())
        await pbx.await_idle()
    finally:
        taker_res = await taker.stop()
        server.close()
        await server.wait_closed()
    # The dialplan asks for <secret>/hangup (CC_AGI_URL carries the app's shared secret).
    script = f"agi_network_script: {pbx.spec.agi_secret}/hangup\n".encode()
    scripts = [h for h in sessions if script in h]
    assert len(scripts) == 1 and len(sessions) == 1, sessions
    assert b"agi_callerid: +6281234567" in scripts[0], scripts[0]
    assert taker_res.incoming == 1 and taker_res.successful == 1, (taker_res, taker_res.errors)
    assert FALLBACK_WARNING in log_since(pbx, mark)


async def test_no_taker_answers_overflow_to_supervisor(pbx: TestPbx) -> None:
    """taker1 (the only member) is not reachable: after the 3 s queue timeout the call goes to
    the supervisor line, which must receive exactly this call."""
    supervisor = await sipp.answerer(
        pbx.spec.supervisor_port or 0, answer_after=0.3, hangup_by="remote", max_calls=None
    )
    try:
        started = time.monotonic()
        call = await sipp.caller(target(pbx), "112", caller_id="081111111111", hold_seconds=CALL_SECONDS + 4)
        res = await call.wait()
        elapsed = time.monotonic() - started
        assert res.ok, (res.errors, pbx.log_tail())
        await pbx.await_idle()
    finally:
        sup_res = await supervisor.stop()
    assert sup_res.incoming == 1 and sup_res.successful == 1, (sup_res, sup_res.errors, pbx.log_tail())
    # Greeting + queue timeout happened before the overflow; the call was not cut short.
    assert elapsed >= CALL_SECONDS, elapsed
