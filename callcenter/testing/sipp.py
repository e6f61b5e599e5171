"""Async helpers that run SIPp as subprocesses: citizens calling in, call-takers answering.

Every SIPp started here binds 127.0.0.1 only (signalling ``-i``, media ``-mi``) and always runs
with ``-timeout`` plus ``-timeout_error`` and ``-nostdin``: a test can fail but never hang on
SIPp. Media is real both ways: callers play SIPp's A-law speech pcap, answerers echo RTP
(``-rtp_echo``). Never both echo: DTMF from a call-taker would bounce between two echoes forever.

Scenarios live in ``tests/sipp/`` and take their parameters from ``-s`` (dialled number),
``-key`` (text such as the caller id) and ``-set`` (global variables such as pause lengths), so
the XML files stay usable by hand. The one thing SIPp cannot parametrise, which DTMF pcaps to
play, is spliced into a temporary copy of ``uas_answer.xml`` between its DTMF markers.

Each helper returns a started ``SippProcess``; ``await proc.wait()`` gives a ``SippResult``
with the exit code and the call counters read from SIPp's ``-trace_stat`` CSV.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import shutil
import signal
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

LOOPBACK = "127.0.0.1"
SCENARIO_DIR = Path(__file__).resolve().parents[2] / "tests" / "sipp"
DTMF_PCAP_DIR = Path("/usr/share/sip-tester")
#: Each RFC 2833 pcap shipped with SIPp lasts 140 ms; the gap lets the events end cleanly.
DTMF_GAP_MS = 300
_DTMF_NAMES = {**{str(d): str(d) for d in range(10)}, "*": "star", "#": "pound"}


class SippError(RuntimeError):
    """SIPp could not be started (binary or scenario missing, bad arguments)."""


def sipp_binary() -> str:
    found = shutil.which("sipp")
    if not found:
        raise SippError("sipp is not installed (apt-get install sip-tester)")
    return found


def free_port(kind: Literal["udp", "tcp"] = "udp") -> int:
    """A port the kernel says is free on 127.0.0.1 right now (from the ephemeral range)."""
    sock_type = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, sock_type) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def free_media_port() -> int:
    """An even UDP port ``p`` with ``p`` .. ``p+3`` free: SIPp's RTP echo binds p and p+2."""
    for _ in range(200):
        base = free_port("udp") & ~1
        socks: list[socket.socket] = []
        try:
            for off in range(4):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((LOOPBACK, base + off))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise SippError("no free media port range found on 127.0.0.1")


@dataclass(frozen=True)
class SippResult:
    """Outcome of one SIPp run.

    ``returncode``: 0 all calls succeeded, 1 at least one failed, 97 stopped by command,
    99 normal exit without calls, 255 (-1) fatal or global timeout with ``-timeout_error``,
    negative when we killed it. The counters come from the last ``-trace_stat`` row.
    """

    returncode: int
    successful: int
    failed: int
    incoming: int
    outgoing: int
    stats: dict[str, str] = field(default_factory=dict)
    errors: str = ""
    output: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0


class SippProcess:
    """One running SIPp; create it with the helpers below, then ``await wait()`` or ``stop()``."""

    def __init__(self, name: str, args: list[str], workdir: Path, local_port: int, media_port: int) -> None:
        self.name = name
        self.args = args
        self.workdir = workdir
        self.local_port = local_port
        self.media_port = media_port
        self.stat_file = workdir / "stat.csv"
        self.error_file = workdir / "errors.log"
        self.output_file = workdir / "output.log"
        self._proc: asyncio.subprocess.Process | None = None
        self._result: SippResult | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self) -> SippProcess:
        cmd = [
            *self.args,
            "-trace_stat",
            "-stf",
            str(self.stat_file),
            "-fd",
            "1",
            "-trace_err",
            "-error_file",
            str(self.error_file),
        ]
        with self.output_file.open("wb") as out:
            self._proc = await asyncio.create_subprocess_exec(
                *cmd,
                cwd=self.workdir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    async def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for SIPp to exit (it always does: ``-timeout``); ``timeout`` bounds it further."""
        if self._result is not None:
            return self._result
        assert self._proc is not None, "start() first"
        try:
            await asyncio.wait_for(self._proc.wait(), timeout)
        except TimeoutError:
            await self.stop()
        return self._collect()

    async def stop(self, grace: float = 3.0) -> SippResult:
        """Ask SIPp to quit (SIGUSR1: soft exit that still writes the stats), then kill it."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGUSR1)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        return self._collect()

    def kill(self) -> None:
        """Synchronous last resort for finalizers: SIGKILL the process group."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    def _collect(self) -> SippResult:
        if self._result is not None:
            return self._result
        assert self._proc is not None and self._proc.returncode is not None
        stats = _last_stat_row(self.stat_file)

        def num(key: str) -> int:
            try:
                return int(stats.get(key, "0") or 0)
            except ValueError:
                return 0

        def read(path: Path) -> str:
            try:
                return path.read_text(errors="replace")[-4000:]
            except FileNotFoundError:
                return ""

        self._result = SippResult(
            returncode=self._proc.returncode,
            successful=num("SuccessfulCall(C)"),
            failed=num("FailedCall(C)"),
            incoming=num("IncomingCall(C)"),
            outgoing=num("OutgoingCall(C)"),
            stats=stats,
            errors=read(self.error_file),
            output=read(self.output_file),
        )
        return self._result

    async def __aenter__(self) -> SippProcess:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _last_stat_row(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return {}
    rows = list(csv.reader(io.StringIO(text), delimiter=";"))
    if len(rows) < 2:
        return {}
    header, last = rows[0], rows[-1]
    return {k: v for k, v in zip(header, last, strict=False) if k}


def _base_args(scenario: Path, local_port: int, media_port: int, timeout: float, rtp_echo: bool) -> list[str]:
    if not scenario.is_file():
        raise SippError(f"scenario not found: {scenario}")
    return [
        sipp_binary(),
        "-sf",
        str(scenario),
        "-i",
        LOOPBACK,
        "-p",
        str(local_port),
        "-mi",
        LOOPBACK,
        "-mp",
        str(media_port),
        *(["-rtp_echo"] if rtp_echo else []),
        "-timeout",
        f"{max(1, round(timeout))}s",
        "-timeout_error",
        "-nostdin",
        "-max_recv_loops",
        "1000",
    ]


async def _launch(
    name: str, scenario: Path, extra: list[str], timeout: float, local_port: int | None, rtp_echo: bool
) -> SippProcess:
    port = local_port or free_port("udp")
    media = free_media_port()
    workdir = Path(tempfile.mkdtemp(prefix=f"sipp-{name}-"))
    args = _base_args(scenario, port, media, timeout, rtp_echo) + extra
    return await SippProcess(name, args, workdir, port, media).start()


def _ms(seconds: float) -> str:
    return str(max(0, round(seconds * 1000)))


async def caller(
    target_host_port: str,
    number: str,
    caller_id: str = "081234567890",
    hold_seconds: float = 5.0,
    timeout: float = 60.0,
    local_port: int | None = None,
    scenario: Path | None = None,
    calls: int = 1,
    every: float = 1.0,
    limit: int | None = None,
) -> SippProcess:
    """A citizen: calls ``number`` at ``target_host_port``, talks ``hold_seconds`` after the
    answer, then hangs up. A BYE from Asterisk first (call-taker hung up) is a normal end.
    With ``calls`` > 1, as many citizens call, one every ``every`` seconds; ``limit`` raises SIPp's cap
    on calls open at once (its default, from the rate, holds new calls back while the cap is reached)."""
    pace = ["-r", "1", "-rp", _ms(every)] if calls > 1 else []
    pace += ["-l", str(limit)] if limit is not None else []
    return await _launch(
        "caller",
        scenario or SCENARIO_DIR / "uac_112.xml",
        [
            *(target_host_port, "-m", str(calls), *pace, "-s", number),
            *("-key", "caller_id", caller_id, "-set", "hold_ms", _ms(hold_seconds)),
        ],
        timeout,
        local_port,
        rtp_echo=False,
    )


async def early_hangup_caller(
    target_host_port: str,
    number: str,
    caller_id: str = "081234567890",
    hangup_after: float = 3.0,
    timeout: float = 30.0,
    local_port: int | None = None,
) -> SippProcess:
    """A citizen who gives up while queued: BYE ``hangup_after`` seconds after Asterisk's 200."""
    return await _launch(
        "early-hangup",
        SCENARIO_DIR / "uac_hangup.xml",
        [
            target_host_port,
            "-m",
            "1",
            "-s",
            number,
            "-key",
            "caller_id",
            caller_id,
            "-set",
            "hangup_ms",
            _ms(hangup_after),
        ],
        timeout,
        local_port,
        rtp_echo=False,
    )


def dtmf_scenario(digits: str, workdir: Path, template: Path | None = None) -> Path:
    """Write a copy of ``uas_answer_dtmf.xml`` that plays ``digits`` as RFC 4733 events."""
    for d in digits:
        if d not in _DTMF_NAMES:
            raise SippError(f"DTMF digit {d!r} not supported (0-9 * #)")
    src = (template or SCENARIO_DIR / "uas_answer_dtmf.xml").read_text()
    begin, end = src.index("<!--DTMF-BEGIN"), src.index("<!--DTMF-END-->")
    head = src[begin : src.index("-->", begin) + 3]
    block = [head]
    for d in digits:
        pcap = DTMF_PCAP_DIR / f"dtmf_2833_{_DTMF_NAMES[d]}.pcap"
        block.append(f'  <nop><action><exec play_pcap_audio="{pcap}" /></action></nop>')
        block.append(f'  <pause milliseconds="{DTMF_GAP_MS}" />')
    out = workdir / "uas_answer_dtmf.xml"
    out.write_text(src[:begin] + "\n".join(block) + "\n  " + src[end:])
    return out


async def answerer(
    port: int,
    answer_after: float = 0.5,
    hold_seconds: float = 5.0,
    hangup_by: Literal["remote", "local"] = "remote",
    dtmf: str | None = None,
    max_calls: int | None = 1,
    timeout: float = 60.0,
    dtmf_delay: float = 0.5,
) -> SippProcess:
    """A call-taker softphone or agency phone listening on ``127.0.0.1:port``.

    Rings, answers after ``answer_after`` s, optionally sends ``dtmf`` (RFC 4733) after
    ``dtmf_delay`` s, then hangs up after ``hold_seconds`` (``hangup_by="local"``) or waits for
    Asterisk's BYE (``"remote"``). With ``max_calls=None`` it keeps answering until ``stop()``
    or ``timeout``; compare ``incoming`` in the result to count every INVITE it received.
    """
    extra = [
        "-set",
        "answer_ms",
        _ms(answer_after),
        "-set",
        "hold_ms",
        _ms(hold_seconds),
        "-set",
        "hangup_by",
        hangup_by,
    ]
    if max_calls is not None:
        extra += ["-m", str(max_calls)]
    scenario = SCENARIO_DIR / "uas_answer.xml"
    if dtmf:
        # A private dir for the generated scenario; SIPp's own files go to its workdir too.
        gen_dir = Path(tempfile.mkdtemp(prefix="sipp-dtmf-"))
        scenario = dtmf_scenario(dtmf, gen_dir)
        extra += ["-set", "dtmf_delay_ms", _ms(dtmf_delay)]
    return await _launch("answerer", scenario, extra, timeout, port, rtp_echo=True)
