"""AgiServer over real sockets against the fake Asterisk client: the failure modes a 112 call meets.

Timeouts here are small so the suite is quick; every wait is bounded so a regression fails
instead of hanging. No assertion is about speed: bounds only prove "it did end".
"""

from __future__ import annotations

import _thread
import asyncio
import dataclasses
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from callcenter.agi.protocol import AgiClosed, AgiCommandError, AgiHangup, AgiProtocolError, AgiTimeout
from callcenter.agi.server import AgiServer, AgiSession
from callcenter.config import AgiConfig
from callcenter.testing.fake_asterisk import Action, FakeAsterisk, build_header, send_raw

FAST = AgiConfig(
    host="127.0.0.1",
    port=0,
    header_timeout=0.5,
    header_max_bytes=4096,
    command_timeout=0.5,
    session_budget=3.0,
    prompt_timeout=0.5,
)
MARKER = 'SET VARIABLE "CC_ROUTED" "1"'
ServerFactory = Callable[..., Awaitable[AgiServer]]
#: Wall-clock bound per test, enforced from a thread (see ``watchdog``).
TEST_BOUND = 30.0


@pytest.fixture(autouse=True)
def watchdog() -> Iterator[None]:
    """Interrupt a test that outlives TEST_BOUND instead of hanging the suite.

    A reader that spins on a closed socket without awaiting (panoramisk's bug) blocks the event
    loop, so no asyncio timeout can ever fire; only another thread can notice.
    """
    done = threading.Event()

    def watch() -> None:
        if done.wait(TEST_BOUND):
            return
        print(f"\ntest exceeded {TEST_BOUND}s: event loop blocked?", file=sys.__stderr__)
        # asyncio.Runner turns the first SIGINT into a cancel of the main task (useless against a
        # loop that never yields); repeat until a KeyboardInterrupt actually breaks out.
        while not done.wait(1.0):
            _thread.interrupt_main()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    yield
    done.set()
    thread.join()


@pytest.fixture
async def make_server() -> AsyncIterator[ServerFactory]:
    servers: list[AgiServer] = []

    async def factory(**overrides: Any) -> AgiServer:
        server = AgiServer(dataclasses.replace(FAST, **overrides))
        await server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        await server.stop()


@pytest.fixture
async def server(make_server: ServerFactory) -> AgiServer:
    return await make_server()


def fake(server: AgiServer, **kwargs: Any) -> FakeAsterisk:
    return FakeAsterisk("127.0.0.1", server.port, timeout=5.0, **kwargs)


async def wait_idle(server: AgiServer, bound: float = 3.0) -> None:
    """Wait until no session is running; a spinning or leaked session makes this time out."""
    async with asyncio.timeout(bound):
        while server.active_sessions:
            await asyncio.sleep(0.01)


async def routed(session: AgiSession) -> None:
    """Minimal well-behaved route: one lookup, then the marker as the very last step."""
    await session.get_variable("CALLERID(num)")
    await session.set_variable("CC_ROUTED", "1")


def events(logs: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def with_context() -> Any:
    return capture_logs(processors=[structlog.contextvars.merge_contextvars])


# --- normal sessions ------------------------------------------------------------------------


async def test_route_gets_args_env_and_ids(server: AgiServer) -> None:
    seen: dict[str, Any] = {}

    async def route(session: AgiSession) -> None:
        seen.update(args=session.args, route=session.request.route, uniqueid=session.uniqueid, env=dict(session.env))
        await session.set_variable("CC_ROUTED", "1")

    server.add_route("incoming", route)
    call = await fake(server).call(
        "incoming", args=["2024-01-01T00:00:00Z", "1 1 2"], env={"agi_uniqueid": "1700000000.42"}
    )
    assert call.closed_by_server and not call.timed_out
    assert seen["args"] == ("2024-01-01T00:00:00Z", "1 1 2")
    assert seen["route"] == "incoming"
    assert seen["uniqueid"] == "1700000000.42"
    assert seen["env"]["agi_extension"] == "112"
    assert call.commands == [MARKER]
    assert server.stats.sessions_completed == 1
    assert server.active_sessions == 0


async def test_crlf_header_accepted(server: AgiServer) -> None:
    server.add_route("incoming", routed)
    call = await fake(server).call("incoming", line_end="\r\n")
    assert call.commands[-1] == MARKER


async def test_log_lines_carry_call_ids(server: AgiServer) -> None:
    server.add_route("incoming", routed)
    with with_context() as logs:
        await fake(server).call("incoming", env={"agi_uniqueid": "1700000000.7", "agi_channel": "PJSIP/a-1"})
    (end,) = events(logs, "agi.session_end")
    assert end["outcome"] == "completed"
    assert end["commands"] == 2
    assert end["uniqueid"] == "1700000000.7"
    assert end["channel"] == "PJSIP/a-1"
    assert end["agi_route"] == "incoming"


async def test_set_variable_is_quoted_and_cannot_inject(server: AgiServer) -> None:
    hostile = 'Budi "x"\nEXEC System reboot\r\nHANGUP\\'

    async def route(session: AgiSession) -> None:
        await session.set_variable("CC_NAME", hostile)

    server.add_route("incoming", route)
    call = await fake(server).call("incoming")
    assert call.commands == ['SET VARIABLE "CC_NAME" "Budi \\"x\\" EXEC System reboot  HANGUP\\\\"']
    assert call.variables["CC_NAME"] == 'Budi "x" EXEC System reboot  HANGUP\\'


async def test_raw_command_with_newline_refused(server: AgiServer) -> None:
    errors: list[BaseException] = []

    async def route(session: AgiSession) -> None:
        try:
            await session.command("NOOP\nEXEC System reboot")
        except ValueError as exc:
            errors.append(exc)

    server.add_route("incoming", route)
    call = await fake(server).call("incoming")
    assert len(errors) == 1
    assert call.commands == []


async def test_variable_helpers(server: AgiServer) -> None:
    got: dict[str, Any] = {}

    async def route(session: AgiSession) -> None:
        got["num"] = await session.get_variable("CALLERID(num)")
        got["unset"] = await session.get_variable("NOPE")
        got["full"] = await session.get_full_variable("${CALLERID(num)}-${CC_X}")
        got["answer"] = (await session.answer()).result
        got["stream"] = (await session.stream_file("jangan-iseng", "#")).extra
        await session.verbose("hello 112", 3)
        await session.exec("Set", "CC_X=1")

    server.add_route("incoming", route)
    call = await fake(server, variables={"CALLERID(num)": "0812 (home)", "CC_X": "y"}).call("incoming")
    assert got == {"num": "0812 (home)", "unset": None, "full": "0812 (home)-y", "answer": "0", "stream": "endpos=0"}
    assert call.commands[4:] == ['STREAM FILE "jangan-iseng" "#"', 'VERBOSE "hello 112" "3"', 'EXEC Set "CC_X=1"']


# --- bad peers ------------------------------------------------------------------------------


async def test_unknown_route_closes_without_sending(server: AgiServer) -> None:
    server.add_route("incoming", routed)
    with with_context() as logs:
        call = await fake(server).call("nonexistent")
    assert call.closed_by_server and not call.timed_out
    assert call.commands == []
    (event,) = events(logs, "agi.unknown_route")
    assert event["agi_route"] == "nonexistent"
    assert event["routes"] == ["incoming"]


@pytest.mark.parametrize("half_close", [True, False], ids=["half-close", "full-close"])
async def test_closed_before_header_end_is_dropped_and_server_keeps_serving(
    server: AgiServer, half_close: bool
) -> None:
    server.add_route("incoming", routed)
    partial = build_header("incoming")[:-30]
    with capture_logs() as logs:
        raw = await send_raw(
            "127.0.0.1", server.port, partial, half_close=half_close, close=not half_close, timeout=5.0
        )
        await wait_idle(server)  # a spinning session would never finish
    if half_close:
        assert raw.closed_by_server
    assert raw.received == b""
    assert events(logs, "agi.closed_before_header")
    assert server.stats.sessions_dropped == 1
    # Loop still responsive and the next session is served normally.
    async with asyncio.timeout(2.0):
        await asyncio.sleep(0.05)
    call = await fake(server).call("incoming")
    assert call.commands[-1] == MARKER


@pytest.mark.parametrize(
    ("data", "event"),
    [
        (b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n", "agi.header_rejected"),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\n\x00\xff\xfe", "agi.header_rejected"),
        (b"\n", "agi.header_rejected"),  # empty header
        (b"agi_request: agi://h/incoming\n" + b"agi_x: " + b"y" * 10000 + b"\n\n", "agi.header_rejected"),
        (b"".join(b"agi_arg_%d: %s\n" % (i, b"z" * 60) for i in range(1, 500)) + b"\n", "agi.header_rejected"),
        (b"x" * 200_000, "agi.header_rejected"),  # one giant line, no newline
        (b"\x00\x01\x02\x03\x04", "agi.header_timeout"),  # junk without newline, then silence
    ],
    ids=["http", "tls", "empty", "huge-line", "huge-header", "giant-no-newline", "binary-silent"],
)
async def test_garbage_is_dropped(server: AgiServer, data: bytes, event: str) -> None:
    server.add_route("incoming", routed)
    with capture_logs() as logs:
        raw = await send_raw("127.0.0.1", server.port, data, timeout=5.0)
    assert raw.closed_by_server
    assert raw.received == b""
    assert events(logs, event), [entry["event"] for entry in logs]
    assert server.stats.sessions_dropped == 1
    call = await fake(server).call("incoming")
    assert call.commands[-1] == MARKER


async def test_stalled_half_header_dropped_while_others_complete(server: AgiServer) -> None:
    server.add_route("incoming", routed)
    stalled = asyncio.create_task(send_raw("127.0.0.1", server.port, build_header("incoming")[:-40], timeout=5.0))
    with capture_logs() as logs:
        calls = await asyncio.gather(*(fake(server).call("incoming") for _ in range(20)))
        raw = await stalled
    assert all(call.commands[-1] == MARKER for call in calls)
    assert raw.closed_by_server
    # It was the header deadline that closed it, not an early error.
    assert raw.elapsed >= FAST.header_timeout * 0.9
    assert len(events(logs, "agi.header_timeout")) == 1


# --- command-level failures -----------------------------------------------------------------


async def test_command_timeout_breaks_session_and_marker_never_sent(server: AgiServer) -> None:
    outcome: dict[str, Any] = {}

    async def route(session: AgiSession) -> None:
        try:
            await session.set_variable("CC_PRIO", "10")
        except AgiTimeout:
            outcome["timeout"] = True
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await session.set_variable("CC_ROUTED", "1")
        except AgiClosed as exc:
            outcome["later"] = exc
            outcome["later_wait"] = loop.time() - started
        assert session.broken is not None

    def responder(command: str) -> Action | None:
        return Action.STALL if command.startswith('SET VARIABLE "CC_PRIO"') else None

    server.add_route("incoming", route)
    with capture_logs() as logs:
        call = await fake(server, responder=responder).call("incoming")
    assert outcome["timeout"] is True
    assert isinstance(outcome["later"], AgiClosed)
    # Failing fast means not waiting another command_timeout.
    assert outcome["later_wait"] < FAST.command_timeout
    assert call.closed_by_server and not call.timed_out
    assert MARKER not in call.commands
    assert call.commands == ['SET VARIABLE "CC_PRIO" "10"']
    assert events(logs, "agi.command_timeout")


async def test_uncaught_command_timeout_ends_session(server: AgiServer) -> None:
    async def route(session: AgiSession) -> None:
        await session.get_variable("CALLERID(num)")
        await session.set_variable("CC_ROUTED", "1")

    server.add_route("incoming", route)
    with capture_logs() as logs:
        call = await fake(server, responder=lambda c: Action.STALL).call("incoming")
    assert call.closed_by_server
    assert MARKER not in call.commands
    (end,) = events(logs, "agi.session_end")
    assert end["outcome"] == "command_timeout"
    assert server.stats.sessions_failed == 1


async def slow_route(session: AgiSession) -> None:
    await session.get_variable("X")
    await asyncio.sleep(30)
    await session.set_variable("CC_ROUTED", "1")


async def busy_route(session: AgiSession) -> None:
    while True:  # answered promptly each time; only the budget stops it
        await session.verbose("still thinking")


@pytest.mark.parametrize("route", [slow_route, busy_route], ids=["sleeping", "busy"])
async def test_session_budget_closes_connection(
    make_server: ServerFactory, route: Callable[[AgiSession], Awaitable[None]]
) -> None:
    server = await make_server(session_budget=0.3)
    server.add_route("incoming", route)
    with capture_logs() as logs:
        call = await fake(server).call("incoming")
    assert call.closed_by_server and not call.timed_out
    assert MARKER not in call.commands
    assert events(logs, "agi.session_budget_exceeded")
    (end,) = events(logs, "agi.session_end")
    assert end["outcome"] == "budget_exceeded"


async def test_hangup_notification_skipped_and_recorded(server: AgiServer) -> None:
    got: dict[str, Any] = {}

    async def route(session: AgiSession) -> None:
        await session.answer()
        got["before"] = session.hangup_received
        # Fake pushes "HANGUP" ahead of this response; it must not be taken as the answer.
        got["value"] = await session.get_variable("CALLERID(num)")
        got["after"] = session.hangup_received
        try:
            await session.stream_file("jangan-iseng")
        except AgiHangup as exc:
            got["hangup"] = exc

    server.add_route("incoming", route)
    with capture_logs() as logs:
        call = await fake(server, variables={"CALLERID(num)": "0812"}).call("incoming", hangup_after=1)
    assert call.hung_up
    assert got["before"] is False
    assert got["value"] == "0812"
    assert got["after"] is True
    assert type(got["hangup"]) is AgiHangup
    assert events(logs, "agi.hangup_notified")


async def test_dead_channel_511_raises_hangup_but_dead_agi_reads_still_work(server: AgiServer) -> None:
    got: dict[str, Any] = {}

    async def route(session: AgiSession) -> None:
        try:
            await session.answer()
        except AgiHangup as exc:
            got["hangup"] = str(exc)
        got["broken"] = session.broken
        got["value"] = await session.get_variable("CALLERID(num)")

    server.add_route("hangup", route)
    call = await fake(server, variables={"CALLERID(num)": "0812"}).call("hangup", hangup_after=0)
    assert "dead channel" in got["hangup"]
    assert got["broken"] is None
    assert got["value"] == "0812"
    assert call.commands == ["ANSWER", 'GET VARIABLE "CALLERID(num)"']


async def test_uncaught_hangup_is_logged_as_hangup(server: AgiServer) -> None:
    async def route(session: AgiSession) -> None:
        await session.stream_file("x")

    server.add_route("incoming", route)
    with capture_logs() as logs:
        await fake(server).call("incoming", hangup_after=0)
    (end,) = events(logs, "agi.session_end")
    assert end["outcome"] == "hangup"


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        ("510 Invalid or unknown command", 510),
        (
            [
                "520-Invalid command syntax.  Proper usage follows:",
                " Usage: GET VARIABLE <variablename>",
                "520 End of proper usage.",
            ],
            520,
        ),
    ],
)
async def test_rejected_command_raises_command_error(server: AgiServer, reply: Any, code: int) -> None:
    got: dict[str, Any] = {}

    async def route(session: AgiSession) -> None:
        try:
            await session.command("GET VARIABLE")
        except AgiCommandError as exc:
            got["code"] = exc.response.code
            got["data"] = exc.response.data
        # The stream stays in step: the next command gets its own response.
        got["next"] = await session.get_variable("X")

    server.add_route("incoming", route)
    await fake(server, variables={"X": "ok"}, responder=lambda c: reply if c == "GET VARIABLE" else None).call(
        "incoming"
    )
    assert got["code"] == code
    assert got["next"] == "ok"
    if code == 520:
        assert "Usage: GET VARIABLE" in got["data"]


async def test_garbage_response_breaks_session(server: AgiServer) -> None:
    got: list[BaseException] = []

    async def route(session: AgiSession) -> None:
        for _ in range(2):
            try:
                await session.answer()
            except (AgiProtocolError, AgiClosed) as exc:
                got.append(exc)

    server.add_route("incoming", route)
    call = await fake(server, responder=lambda c: "HTTP/1.0 400 Bad Request").call("incoming")
    assert [type(exc) for exc in got] == [AgiProtocolError, AgiClosed]
    assert call.commands == ["ANSWER"]


async def test_peer_closing_mid_command_raises_closed(server: AgiServer) -> None:
    got: list[BaseException] = []

    async def route(session: AgiSession) -> None:
        try:
            await session.answer()
        except AgiClosed as exc:
            got.append(exc)

    server.add_route("incoming", route)
    await fake(server, responder=lambda c: Action.CLOSE).call("incoming")
    await wait_idle(server)
    assert len(got) == 1


async def test_route_crash_is_logged_and_server_survives(server: AgiServer) -> None:
    async def broken(session: AgiSession) -> None:
        raise RuntimeError("bug in route")

    server.add_route("broken", broken)
    server.add_route("incoming", routed)
    with capture_logs() as logs:
        call = await fake(server).call("broken")
    assert call.closed_by_server
    (failure,) = events(logs, "agi.route_failed")
    assert failure["log_level"] == "error"
    assert failure["exc_info"] is True
    assert (await fake(server).call("incoming")).commands[-1] == MARKER


# --- load and lifecycle ---------------------------------------------------------------------


async def test_200_concurrent_sessions_complete_with_their_own_ids(server: AgiServer) -> None:
    log = structlog.get_logger("test")

    async def route(session: AgiSession) -> None:
        await session.get_variable("CALLERID(num)")
        await asyncio.sleep(0.01)  # interleave sessions
        log.info("route.step", session_uniqueid=session.uniqueid)
        await session.set_variable("CC_ROUTED", "1")

    server.add_route("incoming", route)
    client = fake(server, variables={"CALLERID(num)": "0812"})
    with with_context() as logs:
        calls = await asyncio.gather(*(client.call("incoming") for _ in range(200)))
    assert all(call.closed_by_server and call.commands[-1] == MARKER for call in calls)
    assert len({call.uniqueid for call in calls}) == 200
    steps = events(logs, "route.step")
    assert len(steps) == 200
    assert all(step["uniqueid"] == step["session_uniqueid"] for step in steps)
    assert server.stats.sessions_completed == 200
    assert server.stats.commands_sent == 400
    await wait_idle(server)


async def test_stop_cancels_running_sessions(make_server: ServerFactory) -> None:
    server = await make_server(session_budget=30.0)
    cancelled = asyncio.Event()
    running = asyncio.Event()

    async def route(session: AgiSession) -> None:
        running.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    server.add_route("incoming", route)
    call_task = asyncio.create_task(fake(server).call("incoming"))
    async with asyncio.timeout(3.0):
        await running.wait()
    assert server.active_sessions == 1
    port = server.port
    await server.stop()
    call = await call_task
    assert cancelled.is_set()
    assert call.closed_by_server and not call.timed_out
    assert server.active_sessions == 0
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


def test_duplicate_route_rejected() -> None:
    server = AgiServer(FAST)
    server.add_route("incoming", routed)
    with pytest.raises(ValueError, match="already registered"):
        server.add_route("incoming", routed)


async def test_port_is_real_bound_port(server: AgiServer) -> None:
    assert server.port > 0
    unstarted = AgiServer(FAST)
    with pytest.raises(RuntimeError):
        _ = unstarted.port
