"""FastAGI wire format as pure functions: header parsing, response parsing, argument quoting.

Kept free of I/O so every rule that protects a 112 call (size limits, rejecting non-Asterisk
peers, never letting caller-controlled data inject a second command) is unit-testable on its own.
The server (``callcenter.agi.server``) only moves bytes and applies timeouts.

Wire summary: Asterisk connects, sends ``agi_key: value`` lines ended by an empty line, then
waits; we send one command per line and read one response (``200 result=...``, ``510 ...``,
``511 ...`` or a multi-line ``520-`` usage block). Some Asterisk versions also push an
unsolicited ``HANGUP`` line when the channel hangs up; it is a notification, not a response.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

#: Asterisk's own header is ~1 KiB; the default leaves room for long caller names and many args.
DEFAULT_HEADER_MAX_BYTES = 16384
#: One response, every line of it (a ``520-`` usage block, skipped notifications): bytes and lines.
#: Room for one maximal line of the server's stream (64 KiB) plus a usage block.
DEFAULT_RESPONSE_MAX_BYTES = 131072
DEFAULT_RESPONSE_MAX_LINES = 256

_KEY_RE = re.compile(r"agi_[A-Za-z0-9_]+\Z")
_ARG_RE = re.compile(r"agi_arg_([0-9]+)\Z")
_RESPONSE_RE = re.compile(r"([0-9]{3})(?: (.*))?\Z", re.DOTALL)
_RESULT_RE = re.compile(r"result=(\S*)(?: +(.*))?\Z", re.DOTALL)
_VERB_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?: [A-Za-z0-9_]+)*\Z")
#: Characters that would end or split a command line on the wire; a NUL truncates it inside Asterisk.
_LINE_BREAKERS = str.maketrans({"\r": " ", "\n": " ", "\x00": ""})

HANGUP_NOTIFICATION = "HANGUP"


class AgiError(Exception):
    """Base of every AGI failure a route may see; catching it keeps a route's fallback path simple."""


class AgiProtocolError(AgiError, ValueError):
    """The peer sent something that is not FastAGI (or not within our limits); the message says what."""


class AgiTimeout(AgiError):
    """A command got no complete response in time; the session is unusable afterwards (stream desync)."""


class AgiHangup(AgiError):
    """The channel is gone (``511`` on a dead channel); variable reads may still work in dead AGI."""


class AgiClosed(AgiHangup):
    """The connection is closed or the session is broken; no further command can be sent."""


class AgiCommandError(AgiError):
    """Asterisk rejected the command itself (``510`` unknown, ``520`` bad syntax): a bug on our side."""

    def __init__(self, message: str, response: AgiResponse) -> None:
        super().__init__(message)
        self.response = response


@dataclass(frozen=True, slots=True)
class AgiRequest:
    """One FastAGI connection's header: the full ``agi_*`` environment, its args and the route name."""

    env: dict[str, str]
    args: tuple[str, ...]
    route: str


@dataclass(frozen=True, slots=True)
class AgiResponse:
    """A parsed command response.

    ``result`` is the raw ``result=`` token (``"1"``, ``"-1"``; empty for non-200 codes), ``data``
    the parenthesised value (``GET VARIABLE``'s value, ``timeout``) or, for error codes, the message
    text; ``extra`` whatever follows, e.g. ``endpos=1234`` after ``STREAM FILE``.
    """

    code: int
    result: str
    data: str
    extra: str = ""

    @property
    def ok(self) -> bool:
        """True for ``200``; the command ran (its ``result`` may still say it failed, e.g. ``-1``)."""
        return self.code == 200

    @property
    def result_int(self) -> int | None:
        """``result`` as an int, or None when absent or not numeric."""
        try:
            return int(self.result)
        except ValueError:
            return None

    @property
    def digit(self) -> str:
        """The key of a ``STREAM FILE`` / ``WAIT FOR DIGIT`` result (its ASCII code; 0 = none, -1 = failure),
        or "" when no key was pressed."""
        result = self.result_int
        return chr(result) if result is not None and result > 0 else ""


def _decode(raw: bytes | str) -> str:
    # Caller names can arrive in any charset from a SIP trunk; never fail a 112 call on decoding.
    return raw if isinstance(raw, str) else raw.decode("utf-8", errors="replace")


def _strip_eol(line: str) -> str:
    if line.endswith("\n"):
        line = line[:-1]
    if line.endswith("\r"):
        line = line[:-1]
    return line


def is_header_end(line: bytes | str) -> bool:
    """True for the empty line (``\\n`` or ``\\r\\n``) that ends the header block."""
    return _strip_eol(_decode(line)) == ""


def parse_header_line(line: bytes | str) -> tuple[str, str]:
    """Split one ``agi_key: value`` line; the value may be empty (``agi_key: `` or ``agi_key:``).

    Keys must look like Asterisk's (``agi_`` prefix): this is what turns an HTTP probe, a TLS
    hello or random junk into an immediate, clearly logged rejection instead of a wait.
    """
    text = _strip_eol(_decode(line))
    if ": " in text:
        key, value = text.split(": ", 1)
    elif text.endswith(":"):
        key, value = text[:-1], ""
    else:
        raise AgiProtocolError(f"header line without ': ' separator: {text[:80]!r}")
    if not _KEY_RE.match(key):
        raise AgiProtocolError(f"header key is not an agi_* key: {key[:80]!r}")
    return key, value


def route_from_env(env: dict[str, str]) -> str:
    """Route name from ``agi_network_script`` (``incoming?x=1`` -> ``incoming``), else ``agi_request``.

    Asterisk omits ``agi_network_script`` when the URL has no path; then the route is ``""``.
    """
    script = env.get("agi_network_script")
    if script is None:
        request = env.get("agi_request", "")
        try:
            script = urlsplit(request).path if "://" in request else ""
        except ValueError:  # "agi://[::1" and the like; found by scripts/fuzz.py
            raise AgiProtocolError(f"agi_request is not a URL: {request[:80]!r}") from None
    script = script.split("?", 1)[0].split("#", 1)[0]
    return script.strip().strip("/")


def args_from_env(env: dict[str, str]) -> tuple[str, ...]:
    """``agi_arg_1..N`` in numeric order (``agi_arg_10`` after ``agi_arg_9``); a gap is not Asterisk."""
    numbered: dict[int, str] = {}
    for key, value in env.items():
        match = _ARG_RE.match(key)
        if match:
            numbered[int(match.group(1))] = value
    indexes = sorted(numbered)
    if indexes != list(range(1, len(indexes) + 1)):
        raise AgiProtocolError(f"agi_arg_N numbering has gaps: {indexes[:20]}")
    return tuple(numbered[i] for i in indexes)


def request_from_env(env: dict[str, str]) -> AgiRequest:
    """Build the request once the whole header is in; rejects an empty header."""
    if not env:
        raise AgiProtocolError("empty AGI header")
    return AgiRequest(env=dict(env), args=args_from_env(env), route=route_from_env(env))


@dataclass
class HeaderParser:
    """Incremental header parser: the server feeds it line by line so junk is rejected at once.

    ``feed`` returns the request when the terminating empty line arrives, else None; it raises
    ``AgiProtocolError`` on a bad line or once the block exceeds ``max_bytes`` (counted in raw
    bytes including line ends, so a slow-drip or giant header is bounded in memory).
    """

    max_bytes: int = DEFAULT_HEADER_MAX_BYTES
    size: int = 0
    env: dict[str, str] = field(default_factory=dict)
    done: bool = False

    def feed(self, line: bytes | str) -> AgiRequest | None:
        if self.done:
            raise AgiProtocolError("data after the end of the AGI header")
        self.size += len(line) if isinstance(line, bytes) else len(line.encode("utf-8"))
        if self.size > self.max_bytes:
            raise AgiProtocolError(f"AGI header exceeds {self.max_bytes} bytes")
        if is_header_end(line):
            self.done = True
            return request_from_env(self.env)
        key, value = parse_header_line(line)
        self.env[key] = value
        return None


def _split_lines(block: str) -> list[str]:
    # Split on "\n" only: str.splitlines would also split on \x0b, \x1c, \u2028 inside values.
    parts = block.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def parse_header(block: bytes | str, *, max_bytes: int = DEFAULT_HEADER_MAX_BYTES) -> AgiRequest:
    """Parse a complete header block, terminating empty line included; nothing may follow it."""
    raw_size = len(block) if isinstance(block, bytes) else len(block.encode("utf-8"))
    if raw_size > max_bytes:
        raise AgiProtocolError(f"AGI header exceeds {max_bytes} bytes")
    parser = HeaderParser(max_bytes=max_bytes)
    request: AgiRequest | None = None
    for line in _split_lines(_decode(block)):
        if request is not None:
            raise AgiProtocolError("data after the end of the AGI header")
        request = parser.feed(line)
    if request is None:
        raise AgiProtocolError("AGI header not terminated by an empty line")
    return request


def parse_response_line(line: bytes | str) -> AgiResponse:
    """Parse one single-line response (``200 result=1 (value) endpos=3``, ``510 ...``, ``511 ...``)."""
    text = _strip_eol(_decode(line))
    match = _RESPONSE_RE.match(text)
    if not match:
        raise AgiProtocolError(f"not an AGI response line: {text[:80]!r}")
    code = int(match.group(1))
    rest = match.group(2) or ""
    if code != 200:
        return AgiResponse(code=code, result="", data=rest)
    result = _RESULT_RE.match(rest)
    if not result:
        raise AgiProtocolError(f"200 response without result=: {text[:80]!r}")
    value, tail = result.group(1), (result.group(2) or "").strip()
    data, extra = "", tail
    if tail.startswith("("):
        # The value itself may contain parentheses and spaces; Asterisk wraps it as "(%s)".
        close = tail.rfind(")")
        if close > 0:
            data, extra = tail[1:close], tail[close + 1 :].strip()
    return AgiResponse(code=code, result=value, data=data, extra=extra)


@dataclass
class ResponseAssembler:
    """Turns response lines into responses: joins ``520-`` usage blocks, records ``HANGUP``.

    ``feed`` returns the response once complete, else None. ``hangups`` counts the unsolicited
    ``HANGUP`` notifications seen, which must never be taken for a command's response.

    Everything one response may take is capped: ``max_bytes`` (raw, line ends included) and
    ``max_lines`` over all lines fed since the last complete response — a usage block, blank lines and
    ``HANGUP`` notifications alike — so an endless ``520-`` block or a stream of notifications is an
    ``AgiProtocolError`` after a bounded amount of memory, not a buffer that grows until the command's
    timeout. Asterisk's longest usage text is ~3 KiB; a variable's value is one line.
    """

    hangups: int = 0
    max_bytes: int = DEFAULT_RESPONSE_MAX_BYTES
    max_lines: int = DEFAULT_RESPONSE_MAX_LINES
    _usage: list[str] | None = None
    _bytes: int = 0
    _lines: int = 0

    def feed(self, line: bytes | str) -> AgiResponse | None:
        self._bytes += len(line) if isinstance(line, bytes) else len(line.encode("utf-8"))
        self._lines += 1
        if self._bytes > self.max_bytes or self._lines > self.max_lines:
            self._usage = None
            raise AgiProtocolError(
                f"response exceeds {self.max_bytes} bytes or {self.max_lines} lines (after {self._lines} lines)"
            )
        response = self._feed(_strip_eol(_decode(line)))
        if response is not None:
            self._bytes = self._lines = 0
        return response

    def _feed(self, text: str) -> AgiResponse | None:
        if self._usage is not None:
            if text.startswith("520 "):
                usage, self._usage = self._usage, None
                return AgiResponse(code=520, result="", data="\n".join(usage))
            self._usage.append(text)
            return None
        if text.strip() == HANGUP_NOTIFICATION:
            self.hangups += 1
            return None
        if text == "":
            return None
        if text.startswith("520-"):
            self._usage = [text[4:]]
            return None
        return parse_response_line(text)


def sanitize(value: str) -> str:
    """Make ``value`` safe to put on one command line: CR/LF become spaces, NUL is dropped."""
    return value.translate(_LINE_BREAKERS)


def quote(value: str) -> str:
    """Quote one argument the way Asterisk's ``parse_args`` reads it back verbatim.

    Caller-controlled data (caller names, form input) goes through here, so it can neither add
    a second command (no CR/LF survives) nor split into extra arguments (``"`` and ``\\`` escaped).
    """
    escaped = sanitize(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def format_command(verb: str, *args: str) -> str:
    """``format_command("SET VARIABLE", name, value)`` -> ``SET VARIABLE "name" "value"``.

    The verb is ours, never caller data, so it is validated rather than quoted.
    """
    if not _VERB_RE.match(verb):
        raise ValueError(f"invalid AGI command verb: {verb!r}")
    return " ".join([verb, *(quote(arg) for arg in args)])


def split_command(line: str) -> list[str]:
    """Split a command line into words exactly as Asterisk's ``res_agi.c:parse_args`` does.

    Used by the fake Asterisk and the tests to prove that ``quote`` round-trips.
    """
    words: list[str] = []
    current: list[str] | None = None
    quoted = escaped = False
    for char in line:
        if char == '"' and not escaped:
            quoted = not quoted
            if quoted and current is None:
                current = []
                words.append("")
            continue
        if char in " \t" and not quoted and not escaped:
            if current is not None:
                words[-1] = "".join(current)
            current = None
            continue
        if char == "\\" and not escaped:
            escaped = True
            continue
        if current is None:
            current = []
            words.append("")
        current.append(char)
        escaped = False
    if current is not None:
        words[-1] = "".join(current)
    return words


__all__ = [
    "DEFAULT_HEADER_MAX_BYTES",
    "DEFAULT_RESPONSE_MAX_BYTES",
    "DEFAULT_RESPONSE_MAX_LINES",
    "HANGUP_NOTIFICATION",
    "AgiClosed",
    "AgiCommandError",
    "AgiError",
    "AgiHangup",
    "AgiProtocolError",
    "AgiRequest",
    "AgiResponse",
    "AgiTimeout",
    "HeaderParser",
    "ResponseAssembler",
    "args_from_env",
    "format_command",
    "is_header_end",
    "parse_header",
    "parse_header_line",
    "parse_response_line",
    "quote",
    "request_from_env",
    "route_from_env",
    "sanitize",
    "split_command",
]
