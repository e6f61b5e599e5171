"""Only our Asterisk may talk FastAGI: forged peers and sessions without the shared secret change nothing.

Over real sockets, against the real app's routes (``create_app``): a process that reaches the AGI port
must not mark a dispatch accepted (``briefing``), fake a citizen's rating (``rating``) or store a path of
its choosing as a call's recording (``hangup``) — which retention would later delete. A peer outside
``[agi] allowed_peers`` is closed before a byte is read; a session whose URL lacks the secret gets no
command. Then the reads themselves: an endless ``520-`` block ends the session after a bounded amount.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from callcenter.agi.protocol import AgiProtocolError
from callcenter.agi.server import REDACTED, AgiServer, AgiSession
from callcenter.app import create_app
from callcenter.config import AgiConfig, ConfigError, load_config, replace
from callcenter.testing.fake_asterisk import FakeAsterisk, build_header
from callcenter.testing.web import test_config
from callcenter.web.keys import AGI, CALLS

SECRET = "s3cr3t-for-the-agi-tests_0123456789"
RECORD_DIR = "/var/spool/asterisk/monitor/callcenter"
FAST = AgiConfig(host="127.0.0.1", port=0, header_timeout=0.5, command_timeout=0.5, session_budget=3.0)
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[web.Application]:
    cfg = replace(test_config(tmp_path), agi={"secret": SECRET}, queue={"record_dir": RECORD_DIR})
    application = create_app(cfg)
    client: Client = TestClient(TestServer(application))
    await client.start_server()
    yield application
    await client.close()


def asterisk(app: web.Application) -> FakeAsterisk:
    # The channel variables a forged briefing/rating would read: a live dispatch attempt, a rating.
    variables = {"CC_DISPATCH_ID": "1", "CC_ATTEMPT_ID": "1", "CC_RATING_ID": "1"}
    return FakeAsterisk("127.0.0.1", app[AGI].port, variables=variables, timeout=5.0)


def hangup_args(recording: str) -> list[str]:
    return ["", "16", "", recording, ""]


@pytest.mark.parametrize("route", ["briefing", "rating", "hangup", "incoming", "x" * 40 + "/briefing"])
async def test_sessions_without_the_secret_get_no_command(app: web.Application, route: str) -> None:
    uid = f"forged-{route[-8:]}"
    with capture_logs() as logs:
        call = await asterisk(app).call(
            route, args=hangup_args(f"{RECORD_DIR}/x.wav"), env={"agi_uniqueid": uid}, timeout=3
        )
    assert call.closed_by_server and not call.timed_out
    assert call.commands == []  # no GET VARIABLE: no route ran, no key could be "pressed"
    assert await app[CALLS].call_by_uniqueid(uid) is None  # the hangup report created nothing
    assert [e["event"] for e in logs].count("agi.secret_refused") == 1
    assert app[AGI].stats.secrets_refused == 1


async def test_the_secret_opens_the_route_and_never_reaches_it(app: web.Application) -> None:
    seen: dict[str, Any] = {}

    async def probe(session: AgiSession) -> None:
        seen.update(route=session.request.route, env=dict(session.env))
        await session.set_variable("CC_PROBED", "1")

    app[AGI].add_route("probe", probe)
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        call = await asterisk(app).call(f"{SECRET}/probe")
    assert call.commands == ['SET VARIABLE "CC_PROBED" "1"']
    assert seen["route"] == "probe"
    assert seen["env"]["agi_network_script"] == f"{REDACTED}/probe"
    assert SECRET not in repr(seen) and SECRET not in repr(logs)


async def test_a_recording_outside_the_record_directory_is_not_stored(app: web.Application) -> None:
    calls = app[CALLS]
    good = f"{RECORD_DIR}/1764000000.1.wav"
    call = await asterisk(app).call(f"{SECRET}/hangup", args=hangup_args(good), env={"agi_uniqueid": "good.1"})
    assert call.closed_by_server

    async def stored(uid: str) -> Any:
        async with asyncio.timeout(5):
            while (row := await calls.call_by_uniqueid(uid)) is None:
                await asyncio.sleep(0.02)
        return row

    assert (await stored("good.1")).recording == good
    for n, forged in enumerate(
        [
            "/etc/callcenter/callcenter.toml",
            f"{RECORD_DIR}/../../../../etc/shadow.wav",
            f"{RECORD_DIR}x/a.wav",
            f"{RECORD_DIR}/notes.txt",
            "relative/a.wav",
        ]
    ):
        with capture_logs() as logs:
            await asterisk(app).call(f"{SECRET}/hangup", args=hangup_args(forged), env={"agi_uniqueid": f"bad.{n}"})
            row = await stored(f"bad.{n}")
        assert row.recording is None, forged
        assert any(e["event"] == "call.recording_refused" for e in logs)


async def test_a_peer_outside_the_allowlist_is_closed_unread(tmp_path: Path) -> None:
    cfg = replace(
        test_config(tmp_path),
        agi={"secret": SECRET, "allowed_peers": ("192.0.2.10", "10.0.0.0/8")},
        queue={"record_dir": RECORD_DIR},
    )
    application = create_app(cfg)
    async with TestClient(TestServer(application)):
        server = application[AGI]
        with capture_logs() as logs:
            for _ in range(3):
                call = await asterisk(application).call(
                    f"{SECRET}/hangup", args=hangup_args(f"{RECORD_DIR}/a.wav"), env={"agi_uniqueid": "peer.1"}
                )
                assert call.closed_by_server and call.commands == []
        assert await application[CALLS].call_by_uniqueid("peer.1") is None
        assert server.stats.peers_refused == 3 and server.stats.sessions_accepted == 0
        refused = [e for e in logs if e["event"] == "agi.peer_refused"]
        assert len(refused) == 1 and refused[0]["peer"] == "127.0.0.1"  # once per address and minute


def test_allowlist_and_secret_are_validated_at_load() -> None:
    cfg = load_config(env={"CALLCENTER_AGI_ALLOWED_PEERS": "10.1.2.3, 192.168.0.0/16, ::1"})
    assert [str(n) for n in cfg.agi.peer_networks()] == ["10.1.2.3/32", "192.168.0.0/16", "::1/128"]
    assert [str(n) for n in AgiConfig().peer_networks()] == ["127.0.0.1/32", "::1/128"]
    with pytest.raises(ConfigError, match="allowed_peers"):
        load_config(env={"CALLCENTER_AGI_ALLOWED_PEERS": "10.0.0.300"})
    for bad in ("short", "has,comma-0123456789", "has/slash-0123456789", "has space 0123456789"):
        with pytest.raises(ConfigError, match="secret"):
            load_config(env={"CALLCENTER_AGI_SECRET": bad})
    assert SECRET not in repr(load_config(env={"CALLCENTER_AGI_SECRET": SECRET}))


# -- bounded reads -----------------------------------------------------------------------------------------


async def test_an_endless_usage_block_ends_the_session_after_a_bounded_read() -> None:
    """The peer answers the first command with ``520-`` and never sends the closing ``520 `` line. The
    command timeout is long on purpose: the cap, not the timeout, must end it."""
    outcome: list[BaseException] = []

    async def route(session: AgiSession) -> None:
        try:
            await session.command("GET VARIABLE FOO", timeout=30)
        except AgiProtocolError as exc:
            outcome.append(exc)

    server = AgiServer(dataclasses.replace(FAST, command_timeout=30.0, session_budget=60.0))
    server.add_route("incoming", route)
    await server.start()
    sent = 0
    limit = 64 * 1024 * 1024
    started = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(build_header("incoming"))
        await writer.drain()
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"GET VARIABLE")
        line = b"520-" + b"u" * 1000 + b"\n"
        chunk = b"520-Invalid command syntax.  Proper usage follows:\n" + line * 64
        try:
            async with asyncio.timeout(20):
                while sent < limit:
                    writer.write(chunk)
                    await writer.drain()
                    sent += len(chunk)
        except (ConnectionError, TimeoutError):
            pass
        writer.close()
    finally:
        await server.stop()
    elapsed = time.monotonic() - started
    assert outcome and "exceeds" in str(outcome[0]), outcome
    # Closed long before 64 MiB or the 30 s command timeout; what got through is socket buffers.
    assert sent < 16 * 1024 * 1024, sent
    assert elapsed < 15, elapsed


def test_run_refuses_to_start_without_a_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from callcenter.cli import main

    monkeypatch.delenv("CALLCENTER_CONFIG", raising=False)
    monkeypatch.delenv("CALLCENTER_AGI_SECRET", raising=False)
    assert main(["run"]) == 2
    assert "CALLCENTER_AGI_SECRET" in capsys.readouterr().err
