"""A fake FastAGI *client*: does what Asterisk does when the dialplan runs ``AGI(agi://.../route)``.

It connects, sends an Asterisk-like ``agi_*`` header, then answers every command line until
the server closes the socket. Replies come from, in order: a scripted ``responder``, the
dead-channel rule (after ``hangup_after`` commands it pushes ``HANGUP`` and answers ``511`` to
commands Asterisk refuses on a dead channel), a small channel-variable store (GET/SET VARIABLE,
GET FULL VARIABLE), sensible defaults for ANSWER/STREAM FILE, and finally ``default_reply``.
Used by the protocol tests and by benchmarks, so it records commands and their arrival times.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from callcenter.agi.protocol import split_command


class Action(enum.Enum):
    """Replies that are not lines: stay silent forever, or drop the connection."""

    STALL = "stall"
    CLOSE = "close"


Reply = str | Sequence[str] | Action
#: Given the received command line, return a reply, or None to fall through to the defaults.
Responder = Callable[[str], Reply | None]

DEAD_CHANNEL_REPLY = "511 Command Not Permitted on a dead channel or intercept routine"
#: Commands Asterisk still runs in a hangup handler ("dead AGI").
DEAD_CHANNEL_ALLOWED = ("GET VARIABLE", "GET FULL VARIABLE", "SET VARIABLE", "VERBOSE", "NOOP", "DATABASE")
_VAR_REF = re.compile(r"\$\{([^{}]+)\}")
_uniqueids = itertools.count(1)


@dataclass
class FakeCall:
    """What happened on one fake call; ``command_times`` are seconds since connect, per command."""

    route: str
    uniqueid: str
    commands: list[str] = field(default_factory=list)
    command_times: list[float] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    closed_by_server: bool = False
    timed_out: bool = False
    stalled: bool = False
    hung_up: bool = False
    duration: float = 0.0

    def words(self) -> list[list[str]]:
        """Each command split into words exactly as Asterisk would (quotes removed)."""
        return [split_command(command) for command in self.commands]

    def sent(self, prefix: str) -> bool:
        """True if any command starts with ``prefix`` (case-insensitive)."""
        return any(command.upper().startswith(prefix.upper()) for command in self.commands)


@dataclass
class RawResult:
    """Outcome of :func:`send_raw`: what the server sent back and whether it closed on us."""

    received: bytes
    closed_by_server: bool
    elapsed: float


def new_uniqueid() -> str:
    return f"{int(time.time())}.{next(_uniqueids)}"


def build_header(
    route: str,
    *,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    uniqueid: str | None = None,
    host: str = "127.0.0.1",
    port: int = 4573,
    line_end: str = "\n",
) -> bytes:
    """The header Asterisk 22 sends for ``AGI(agi://host:port/route,args...)``; ``env`` overrides keys."""
    uid = uniqueid or new_uniqueid()
    values: dict[str, str] = {
        "agi_request": f"agi://{host}:{port}/{route}",
        "agi_channel": f"PJSIP/caller-{uid.replace('.', '')[-8:]}",
        "agi_language": "id",
        "agi_type": "PJSIP",
        "agi_uniqueid": uid,
        "agi_version": "22.0.0",
        "agi_callerid": "081234567890",
        "agi_calleridname": "unknown",
        "agi_callingpres": "0",
        "agi_callingani2": "0",
        "agi_callington": "0",
        "agi_callingtns": "0",
        "agi_dnid": "112",
        "agi_rdnis": "unknown",
        "agi_context": "emergency",
        "agi_extension": "112",
        "agi_priority": "2",
        "agi_enhanced": "0.0",
        "agi_accountcode": "",
        "agi_threadid": "140000000000001",
        "agi_network": "yes",
    }
    if route:  # Asterisk omits the key when the URL has no path
        values["agi_network_script"] = route
    values.update(env or {})
    for index, arg in enumerate(args, start=1):
        values[f"agi_arg_{index}"] = arg
    lines = [f"{key}: {value}{line_end}" for key, value in values.items()]
    return ("".join(lines) + line_end).encode("utf-8")


def _expand(expression: str, variables: Mapping[str, str]) -> str:
    return _VAR_REF.sub(lambda m: variables.get(m.group(1), ""), expression)


def default_reply(command: str, variables: dict[str, str], *, dead: bool, fallback: str = "200 result=1") -> str:
    """Asterisk-like answer to ``command``; updates ``variables`` on SET VARIABLE."""
    upper = command.upper()
    if dead and not upper.startswith(DEAD_CHANNEL_ALLOWED):
        return DEAD_CHANNEL_REPLY
    words = split_command(command)
    if upper.startswith("GET FULL VARIABLE") and len(words) >= 4:
        value = _expand(words[3], variables)
        return f"200 result=1 ({value})" if value else "200 result=0"
    if upper.startswith("GET VARIABLE") and len(words) >= 3:
        name = words[2]
        return f"200 result=1 ({variables[name]})" if name in variables else "200 result=0"
    if upper.startswith("SET VARIABLE") and len(words) >= 4:
        variables[words[2]] = words[3]
        return "200 result=1"
    if upper.startswith("ANSWER"):
        return "200 result=0"
    if upper.startswith("STREAM FILE"):
        return "200 result=0 endpos=0"
    return fallback


class FakeAsterisk:
    """Fake Asterisk bound to one FastAGI server address; each :meth:`call` is one channel."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        variables: Mapping[str, str] | None = None,
        responder: Responder | None = None,
        default: str = "200 result=1",
        timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.variables = dict(variables or {})
        self.responder = responder
        self.default = default
        self.timeout = timeout

    async def call(
        self,
        route: str = "incoming",
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        variables: Mapping[str, str] | None = None,
        responder: Responder | None = None,
        hangup_after: int | None = None,
        header: bytes | None = None,
        line_end: str = "\n",
        timeout: float | None = None,
    ) -> FakeCall:
        """Run one call until the server closes (or ``timeout``, default the instance's, expires).

        ``hangup_after=n``: the caller hangs up after n answered commands; the next command gets
        a ``HANGUP`` line first and dead-channel treatment from then on.
        """
        uid = (env or {}).get("agi_uniqueid") or new_uniqueid()
        call = FakeCall(route=route, uniqueid=uid, variables={**self.variables, **(variables or {})})
        data = (
            header
            if header is not None
            else build_header(
                route, args=args, env=env, uniqueid=uid, host=self.host, port=self.port, line_end=line_end
            )
        )
        scripted = responder or self.responder
        started = time.monotonic()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                writer.write(data)
                await writer.drain()
                while True:
                    line = await reader.readline()
                    if not line.endswith(b"\n"):  # EOF, possibly after a partial line
                        call.closed_by_server = True
                        break
                    command = line.decode("utf-8", errors="replace").rstrip("\r\n")
                    call.commands.append(command)
                    call.command_times.append(time.monotonic() - started)
                    if call.stalled:
                        continue
                    if hangup_after is not None and not call.hung_up and len(call.commands) > hangup_after:
                        call.hung_up = True
                        writer.write(b"HANGUP\n")
                    reply = scripted(command) if scripted is not None else None
                    if reply is None:
                        reply = default_reply(command, call.variables, dead=call.hung_up, fallback=self.default)
                    if reply is Action.STALL:
                        call.stalled = True
                        continue
                    if reply is Action.CLOSE:
                        break
                    lines = [reply] if isinstance(reply, str) else list(reply)
                    writer.write("".join(f"{item}\n" for item in lines).encode("utf-8"))
                    await writer.drain()
        except TimeoutError:
            call.timed_out = True
        except ConnectionError:
            call.closed_by_server = True
        finally:
            call.duration = time.monotonic() - started
            await _close(writer)
        return call


async def send_raw(
    host: str, port: int, data: bytes, *, half_close: bool = False, close: bool = False, timeout: float = 10.0
) -> RawResult:
    """Send arbitrary bytes (junk, a partial header) and wait until the server closes or ``timeout``.

    ``half_close`` shuts down our sending side after ``data`` and still waits for the server to
    close; ``close`` drops the whole connection right after ``data`` (``closed_by_server`` is then
    False: we cannot observe it). Both imitate a peer that goes away mid-header.
    """
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    received = b""
    closed = False
    try:
        async with asyncio.timeout(timeout):
            if data:
                writer.write(data)
                await writer.drain()
            if close:
                return RawResult(received=b"", closed_by_server=False, elapsed=time.monotonic() - started)
            if half_close and writer.can_write_eof():
                writer.write_eof()
            while chunk := await reader.read(65536):
                received += chunk
            closed = True
    except TimeoutError:
        closed = False
    except ConnectionError:
        closed = True
    finally:
        await _close(writer)
    return RawResult(received=received, closed_by_server=closed, elapsed=time.monotonic() - started)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 1.0)


__all__ = [
    "DEAD_CHANNEL_ALLOWED",
    "DEAD_CHANNEL_REPLY",
    "Action",
    "FakeAsterisk",
    "FakeCall",
    "RawResult",
    "Reply",
    "Responder",
    "build_header",
    "default_reply",
    "new_uniqueid",
    "send_raw",
]
