"""Our own FastAGI server: every read bounded, every bad peer dropped alone, every session on a budget.

Why not panoramisk's ``fast_agi``: it spins forever on a connection that closes before the
header ends and breaks on 3.11 for plain-function handlers. A 112 call must never be dropped
because of us, and the dialplan falls back to the queue whenever we close the socket without
having set the route's "routed" marker, so the safe reaction to *anything* unexpected here is:
log it with the call's ids, close this one connection, keep serving the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import re
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from callcenter.agi.protocol import (
    AgiClosed,
    AgiCommandError,
    AgiError,
    AgiHangup,
    AgiProtocolError,
    AgiRequest,
    AgiResponse,
    AgiTimeout,
    HeaderParser,
    ResponseAssembler,
    format_command,
)
from callcenter.config import AgiConfig

Route = Callable[["AgiSession"], Awaitable[None]]

#: Bound on flushing and closing a socket; a peer that stops reading must not pin a task.
CLOSE_TIMEOUT = 1.0
#: Per-line buffer limit of the stream; responses (variable values, 520 usage) stay far below.
MIN_STREAM_LIMIT = 65536
#: Listen backlog: a mass-casualty incident is exactly when many 112 calls arrive at once.
BACKLOG = 1024
#: What stands in for the shared secret in the request a route sees.
REDACTED = "[secret]"
_APP_RE = re.compile(r"[A-Za-z0-9_]+\Z")
_DIGITS_RE = re.compile(r"[0-9*#]*\Z")


@dataclass
class AgiStats:
    """Server-wide counters for benchmarks and health output; plain fields, no locking needed (one loop)."""

    sessions_accepted: int = 0
    sessions_completed: int = 0
    sessions_dropped: int = 0
    sessions_failed: int = 0
    #: Connections closed unread because the peer is not in ``allowed_peers``.
    peers_refused: int = 0
    #: Sessions closed without a command because the AGI URL lacked the shared secret.
    secrets_refused: int = 0
    commands_sent: int = 0
    command_latency_total: float = 0.0
    command_latency_max: float = 0.0
    #: Most recent command latencies in seconds, for percentiles.
    recent_latencies: deque[float] = field(default_factory=lambda: deque(maxlen=10000))
    #: Sessions by (route, outcome) for /metrics: a registered route's name, or ``unknown`` (a name a peer
    #: made up must not become a label) and ``none`` (no usable request); outcome as ``agi.session_end`` logs it.
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)

    def record_command(self, latency: float) -> None:
        self.commands_sent += 1
        self.command_latency_total += latency
        self.command_latency_max = max(self.command_latency_max, latency)
        self.recent_latencies.append(latency)


class RefusalLog:
    """Warns about refused peers without letting a flood of them flood the log: the first refusal of a
    key (an address), then at most one line per key and ``period`` with the count since the last."""

    MAX_KEYS = 1024

    def __init__(self, logger: Any, period: float = 60.0) -> None:
        self._log = logger
        self._period = period
        self._seen: dict[str, tuple[float, int]] = {}

    def note(self, key: str, *, event: str = "agi.peer_refused") -> None:
        now = time.monotonic()
        last, count = self._seen.get(key, (-self._period, 0))
        if now - last < self._period:
            self._seen[key] = (last, count + 1)
            return
        if len(self._seen) >= self.MAX_KEYS:
            self._seen.clear()
        self._seen[key] = (now, 0)
        if event == "agi.peer_refused":
            self._log.warning(event, peer=key, refused_since_last=count)
        else:
            self._log.warning(event, refused_since_last=count)


class AgiSession:
    """One Asterisk channel talking to one route; commands are strictly sequential.

    After a timeout, a protocol error or a closed connection the session is *broken*: the
    stream may be out of step (a late answer would be read as the next command's), so every
    later command raises ``AgiClosed`` at once instead of waiting again.
    """

    def __init__(
        self,
        request: AgiRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        config: AgiConfig,
        *,
        stats: AgiStats | None = None,
        logger: Any = None,
    ) -> None:
        self.request = request
        self._reader = reader
        self._writer = writer
        self._config = config
        self._stats = stats
        self._log: Any = logger if logger is not None else structlog.get_logger("callcenter.agi")
        self._assembler = ResponseAssembler()
        self._busy = False
        self.broken: str | None = None
        self.commands_sent = 0
        self.command_latencies: list[float] = []

    @property
    def env(self) -> dict[str, str]:
        return self.request.env

    @property
    def args(self) -> tuple[str, ...]:
        return self.request.args

    @property
    def uniqueid(self) -> str:
        return self.request.env.get("agi_uniqueid", "")

    @property
    def channel(self) -> str:
        return self.request.env.get("agi_channel", "")

    @property
    def hangup_received(self) -> bool:
        """True once Asterisk pushed an unsolicited ``HANGUP`` line (caller gone)."""
        return self._assembler.hangups > 0

    def _break(self, reason: str) -> None:
        if self.broken is None:
            self.broken = reason

    async def command(self, line: str, timeout: float | None = None) -> AgiResponse:
        """Send one raw command line and return its response, within ``timeout`` (default command_timeout).

        Raises ``AgiTimeout`` (session broken), ``AgiClosed`` (connection gone or session broken),
        ``AgiHangup`` (511: dead channel; the session stays usable for dead-AGI commands),
        ``AgiCommandError`` (510/520) or ``AgiProtocolError`` (garbage; session broken).
        """
        if any(c in line for c in "\r\n\x00"):
            raise ValueError("AGI command line must not contain CR, LF or NUL")
        if self.broken is not None:
            raise AgiClosed(f"AGI session unusable: {self.broken}")
        if self._busy:
            raise RuntimeError("AGI commands must not run concurrently on one session")
        limit = self._config.command_timeout if timeout is None else timeout
        verb = line.split('"', 1)[0].strip()
        self._busy = True
        started = time.perf_counter()
        try:
            async with asyncio.timeout(limit):
                self._writer.write(line.encode("utf-8") + b"\n")
                await self._writer.drain()
                response = await self._read_response()
        except TimeoutError:
            self._break(f"timeout after {limit}s on {verb}")
            self._log.warning("agi.command_timeout", command=verb, timeout=limit)
            raise AgiTimeout(f"no response to {verb} within {limit}s") from None
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self._break(f"connection closed during {verb}")
            raise AgiClosed(f"connection closed during {verb}: {type(exc).__name__}") from None
        except asyncio.LimitOverrunError:
            self._break(f"oversize response to {verb}")
            raise AgiProtocolError(f"response line to {verb} exceeds the stream limit") from None
        except AgiProtocolError:
            self._break(f"garbage response to {verb}")
            raise
        except BaseException:
            # Cancellation (session budget, server stop) mid-command leaves the stream out of step.
            self._break(f"cancelled during {verb}")
            raise
        finally:
            self._busy = False
        latency = time.perf_counter() - started
        self.commands_sent += 1
        self.command_latencies.append(latency)
        if self._stats is not None:
            self._stats.record_command(latency)
        if response.code == 511:
            raise AgiHangup(f"{verb}: {response.data or 'dead channel'}")
        if response.code != 200:
            raise AgiCommandError(f"{verb} rejected with {response.code}: {response.data}", response)
        return response

    async def _read_response(self) -> AgiResponse:
        hangups = self._assembler.hangups
        while True:
            line = await self._reader.readuntil(b"\n")
            response = self._assembler.feed(line)
            if self._assembler.hangups != hangups:
                hangups = self._assembler.hangups
                self._log.info("agi.hangup_notified")
            if response is not None:
                return response

    async def get_variable(self, name: str) -> str | None:
        """Channel variable or function value; None when unset (``result=0``)."""
        response = await self.command(format_command("GET VARIABLE", name))
        return response.data if response.result == "1" else None

    async def get_full_variable(self, expression: str) -> str | None:
        """Evaluate an expression such as ``${CALLERID(num)}``; None when Asterisk says ``result=0``."""
        response = await self.command(format_command("GET FULL VARIABLE", expression))
        return response.data if response.result == "1" else None

    async def set_variable(self, name: str, value: str) -> None:
        """Set a channel variable; both name and value are quoted so caller data cannot inject."""
        if not name:
            raise ValueError("variable name must not be empty")
        await self.command(format_command("SET VARIABLE", name, value))

    async def stream_file(self, name: str, escape_digits: str = "", timeout: float | None = None) -> AgiResponse:
        """Play a prompt; bounded by ``command_timeout + prompt_timeout`` unless ``timeout`` is given."""
        if not _DIGITS_RE.match(escape_digits):
            raise ValueError(f"invalid escape digits: {escape_digits!r}")
        limit = self._config.command_timeout + self._config.prompt_timeout if timeout is None else timeout
        return await self.command(format_command("STREAM FILE", name, escape_digits), timeout=limit)

    async def wait_for_digit(self, seconds: float) -> str:
        """Wait up to ``seconds`` for a key (``WAIT FOR DIGIT``): the key, or "" when none came (or the wait
        failed: the caller treats both as "no answer"). Bounded by ``command_timeout`` beyond the wait."""
        response = await self.command(
            f"WAIT FOR DIGIT {int(seconds * 1000)}", timeout=self._config.command_timeout + seconds
        )
        return response.digit

    async def verbose(self, message: str, level: int = 1) -> None:
        """Write to the Asterisk console/log, handy to correlate a call in both logs."""
        await self.command(format_command("VERBOSE", message, str(level)))

    async def answer(self) -> AgiResponse:
        return await self.command("ANSWER")

    async def exec(self, app: str, args: str = "") -> AgiResponse:
        """Run a dialplan application; ``args`` is passed as one quoted, comma-separated string."""
        if not _APP_RE.match(app):
            raise ValueError(f"invalid application name: {app!r}")
        return await self.command(format_command(f"EXEC {app}", args))


class AgiServer:
    """FastAGI listener dispatching each connection to an explicitly registered route by name."""

    def __init__(self, config: AgiConfig, *, logger: Any = None) -> None:
        self.config = config
        self._log: Any = logger if logger is not None else structlog.get_logger("callcenter.agi")
        self._routes: dict[str, Route] = {}
        self._budgets: dict[str, float] = {}
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.stats = AgiStats()
        self._networks = config.peer_networks()
        self._refusals = RefusalLog(self._log)

    def add_route(self, name: str, handler: Route, *, budget: float | None = None) -> None:
        """Register ``handler`` for ``agi://host:port/<name>``; registering a name twice is a bug.

        ``budget`` overrides ``session_budget`` for this route: a briefing that waits for a duty
        officer's key press lives longer than routing a 112 caller may.
        """
        if name in self._routes:
            raise ValueError(f"AGI route already registered: {name!r}")
        self._routes[name] = handler
        if budget is not None:
            self._budgets[name] = budget

    @property
    def routes(self) -> tuple[str, ...]:
        return tuple(self._routes)

    @property
    def port(self) -> int:
        """The bound port (the real one when configured with port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("AGI server is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def active_sessions(self) -> int:
        return len(self._sessions)

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("AGI server already started")
        self._stopping = False
        self._server = await asyncio.start_server(
            self._on_connect,
            self.config.host,
            self.config.port,
            limit=max(MIN_STREAM_LIMIT, self.config.header_max_bytes + 1),
            backlog=BACKLOG,
        )
        self._log.info("agi.listening", host=self.config.host, port=self.port, routes=sorted(self._routes))

    async def stop(self, *, grace: float = 0.0) -> None:
        """Stop listening, give running sessions ``grace`` seconds, cancel the rest and wait for them.

        A cancelled session closes its socket without the "routed" marker: the call falls back.
        """
        if self._server is None:
            return
        self._stopping = True
        self._server.close()
        pending = set(self._sessions)
        if pending and grace > 0:
            _done, pending = await asyncio.wait(pending, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=CLOSE_TIMEOUT * 2)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), CLOSE_TIMEOUT)
        self._server = None
        self._log.info("agi.stopped", cancelled=len(pending))

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Called from connection_made, before the transport delivers a byte: a peer that is not our
        # Asterisk is cut off here, with nothing read and nothing sent (abort: no lingering close).
        peer = writer.get_extra_info("peername")
        if not self._peer_allowed(peer):
            self.stats.peers_refused += 1
            self._refusals.note(str(peer[0]) if peer else "?")
            writer.transport.abort()
            return
        # A plain callback and our own task: tracked synchronously (stop() sees every session)
        # and no asyncio "Unhandled exception in client_connected_cb" noise on cancellation.
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._sessions.add(task)
        task.add_done_callback(self._sessions.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Each session runs in its own task, hence its own contextvars copy: ids bound here
        # appear on every log line of this call and never leak into another one.
        structlog.contextvars.clear_contextvars()
        peer = writer.get_extra_info("peername")
        structlog.contextvars.bind_contextvars(agi_peer=f"{peer[0]}:{peer[1]}" if peer else "?")
        self.stats.sessions_accepted += 1
        try:
            if self._stopping:
                self.stats.sessions_dropped += 1
                self.stats.outcomes[("none", "stopping")] += 1
                return
            request = await self._read_request(reader)
            if request is None:
                self.stats.sessions_dropped += 1
                self.stats.outcomes[("none", "bad_request")] += 1
                return
            request = self._authenticate(request)
            if request is None:
                self.stats.sessions_dropped += 1
                self.stats.secrets_refused += 1
                return
            structlog.contextvars.bind_contextvars(
                agi_route=request.route,
                uniqueid=request.env.get("agi_uniqueid", ""),
                channel=request.env.get("agi_channel", ""),
            )
            handler = self._routes.get(request.route)
            if handler is None:
                self.stats.sessions_dropped += 1
                self.stats.outcomes[("unknown", "unknown_route")] += 1
                self._log.warning("agi.unknown_route", routes=sorted(self._routes))
                return
            await self._run_route(
                handler, AgiSession(request, reader, writer, self.config, stats=self.stats, logger=self._log)
            )
        finally:
            await self._close(writer)

    def _peer_allowed(self, peer: Any) -> bool:
        """True when the connecting address is in ``allowed_peers`` (an IPv4-mapped IPv6 address, as a
        dual-stack listener reports IPv4 peers, counts as its IPv4 address)."""
        if not peer:
            return False
        try:
            address = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)

    def _authenticate(self, request: AgiRequest) -> AgiRequest | None:
        """The request without the shared secret, or None (logged) when it does not carry ours.

        The dialplan asks for ``agi://host:port/<secret>/<route>``; Asterisk passes ``<secret>/<route>``
        as the script. Compared in constant time; the secret never reaches a route or a log line."""
        secret = self.config.secret
        if not secret:
            return request
        given, _slash, route = request.route.partition("/")
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), secret.encode("utf-8")) or not route:
            self._refusals.note("secret", event="agi.secret_refused")
            return None
        env = dict(request.env)
        for key in ("agi_network_script", "agi_request"):
            if key in env:
                env[key] = env[key].replace(secret, REDACTED)
        return AgiRequest(env=env, args=request.args, route=route)

    async def _read_request(self, reader: asyncio.StreamReader) -> AgiRequest | None:
        """Read the header line by line under one total deadline; None (logged) if it is not usable."""
        parser = HeaderParser(max_bytes=self.config.header_max_bytes)
        try:
            async with asyncio.timeout(self.config.header_timeout):
                while True:
                    # readuntil raises at EOF instead of returning b"": no spinning on closed peers.
                    request = parser.feed(await reader.readuntil(b"\n"))
                    if request is not None:
                        return request
        except AgiProtocolError as exc:
            self._log.warning("agi.header_rejected", reason=str(exc), received=parser.size)
        except TimeoutError:
            self._log.warning("agi.header_timeout", timeout=self.config.header_timeout, received=parser.size)
        except asyncio.IncompleteReadError as exc:
            self._log.warning("agi.closed_before_header", received=parser.size + len(exc.partial))
        except asyncio.LimitOverrunError:
            self._log.warning("agi.header_rejected", reason="header line exceeds the stream limit")
        except ConnectionError as exc:
            self._log.warning("agi.closed_before_header", error=type(exc).__name__, received=parser.size)
        return None

    async def _run_route(self, handler: Route, session: AgiSession) -> None:
        started = time.perf_counter()
        outcome = "completed"
        limit = self._budgets.get(session.request.route, self.config.session_budget)
        try:
            async with asyncio.timeout(limit) as budget:
                await handler(session)
        except TimeoutError:
            if not budget.expired():
                # A route's own TimeoutError is a route bug, not the budget.
                outcome = "route_error"
                self._log.exception("agi.route_failed")
            else:
                outcome = "budget_exceeded"
                self._log.warning("agi.session_budget_exceeded", budget=limit)
        except AgiTimeout:
            outcome = "command_timeout"
        except AgiClosed as exc:
            outcome = "closed"
            self._log.info("agi.connection_lost", reason=str(exc))
        except AgiHangup as exc:
            outcome = "hangup"
            self._log.info("agi.channel_hung_up", reason=str(exc))
        except AgiError as exc:
            outcome = "agi_error"
            self._log.warning("agi.command_failed", error=type(exc).__name__, reason=str(exc))
        except asyncio.CancelledError:
            outcome = "cancelled"
            self._log.info("agi.session_cancelled")
            raise
        except Exception:
            outcome = "route_error"
            self._log.exception("agi.route_failed")
        finally:
            if outcome == "completed":
                self.stats.sessions_completed += 1
            else:
                self.stats.sessions_failed += 1
            self.stats.outcomes[(session.request.route, outcome)] += 1
            self._log.info(
                "agi.session_end",
                outcome=outcome,
                commands=session.commands_sent,
                duration=round(time.perf_counter() - started, 6),
            )

    @staticmethod
    async def _close(writer: asyncio.StreamWriter) -> None:
        """Close the socket; Asterisk then continues the dialplan (fallback unless the route marked it)."""
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)
        except (TimeoutError, ConnectionError, OSError):
            writer.transport.abort()
        except asyncio.CancelledError:
            writer.transport.abort()
            raise


__all__ = [
    "AgiClosed",
    "AgiCommandError",
    "AgiError",
    "AgiHangup",
    "AgiProtocolError",
    "AgiServer",
    "AgiSession",
    "AgiStats",
    "AgiTimeout",
    "Route",
]
