"""structlog set-up: JSON lines to stderr, each call's id bound through contextvars by the code handling it.

Plain logs hold no citizen's number or name (UU PDP): code logs call ids, and where two lines about the
same caller must be matched, a keyed hash, ``ref(number)`` — the same number gives the same ``r:…`` within
one key, and without the key it cannot be turned back into the number (numbers are few enough to try all
of them against a plain hash). The key is ``[log] pseudonym_key`` (``CALLCENTER_LOG_PSEUDONYM_KEY``); left
empty, each process makes its own, so references match within one run only. As a second line of defence
``redact_personal`` rewrites personal keys (``caller``, ``calleridnum``, ``reporter_name``…) and long digit
runs in channel names before anything is written, whatever a future log call passes.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

#: Caller ids as AMI and the dialplan name them (lower case); retention blanks them in call timelines.
CALLER_KEYS = frozenset(
    {
        "caller",
        "caller_id",
        "caller_name",
        "caller_number",
        "caller_raw",
        "callerid",
        "calleridname",
        "calleridnum",
        "connectedlinename",
        "connectedlinenum",
    }
)
#: Keys whose values are a citizen's number, name or whereabouts (compared in lower case).
PERSONAL_KEYS = CALLER_KEYS | frozenset(
    {
        "callback_number",
        "reporter_name",
        "address",
        "landmark",
        "number",
        "to",
        "from",
    }
)
#: Keys whose values may embed a number (``PJSIP/081234567890-00000001``).
_EMBEDDING_KEYS = frozenset({"channel", "destchannel", "hangup_source", "agi_peer_channel"})
#: Six digits or more, but not a channel's own sequence number (``-00000001`` after the dash).
_DIGIT_RUN = re.compile(r"(?<![-0-9A-Za-z])\+?[0-9]{6,}")
#: The process's key, set once at start (``configure_logging``); a holder, not a rebound global.
_KEY = [secrets.token_bytes(32)]


def set_pseudonym_key(key: str) -> None:
    """Use ``key`` for ``ref`` (configured, so references match across restarts); empty: a random one."""
    _KEY[0] = key.encode("utf-8") if key else secrets.token_bytes(32)


def ref(value: object) -> str:
    """A keyed, one-way reference to a personal value, for correlating log lines: ``r:`` + 12 hex digits."""
    text = str(value or "")
    if not text:
        return ""
    return "r:" + hmac.new(_KEY[0], text.encode("utf-8"), hashlib.sha256).hexdigest()[:12]


def _scrub(key: str, value: Any) -> Any:
    name = key.lower()
    if name in PERSONAL_KEYS:
        if isinstance(value, str) and (value.startswith("r:") or value in ("", "withheld")):
            return value
        return ref(value) if isinstance(value, str | int) else "[redacted]"
    if name in _EMBEDDING_KEYS and isinstance(value, str):
        return _DIGIT_RUN.sub(lambda m: ref(m.group()), value)
    if isinstance(value, dict):
        return {k: _scrub(str(k), v) for k, v in value.items()}
    return value


def redact_personal(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: personal values become references (see the module's docstring)."""
    for key in list(event):
        if key != "event":
            event[key] = _scrub(key, event[key])
    return event


def configure_logging(level: str = "INFO", json: bool = True, pseudonym_key: str = "") -> None:
    """Configure structlog and route stdlib loggers (aiohttp, panoramisk, alembic) through the same renderer."""
    set_pseudonym_key(pseudonym_key)
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        redact_personal,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
