"""What Asterisk itself wrote about each call: its queue_log and the dialplan steps in messages.log.

The end-to-end tests and the never-wait measurement judge "the caller reached the queue, and when"
from Asterisk's own records, not from the app under test (which may be frozen at the time).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from callcenter.pbx.harness import TestPbx

#: ``[2026-12-06 10:30:01.123] VERBOSE[123][C-00000001] pbx.c: Executing [s@ctx:9] Playback("PJSIP/x-1", "a")``
_EXEC = re.compile(
    r"^\[(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})\].*Executing \[[^\]]*\] "
    r"(?P<app>\w+)\(\"(?P<channel>[^\"]+)\", \"(?P<args>[^\"]*)\""
)


@dataclass(frozen=True)
class QueueLogEntry:
    at: int  # epoch seconds, as app_queue writes them
    uniqueid: str
    queue: str
    event: str
    data: tuple[str, ...]


def queue_log(pbx: TestPbx) -> list[QueueLogEntry]:
    path: Path = pbx.host_dir / "log" / "queue_log"
    entries = []
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) >= 5 and parts[0].isdigit():
            entries.append(QueueLogEntry(int(parts[0]), parts[1], parts[2], parts[4], tuple(parts[5:])))
    return entries


def entered_queue(pbx: TestPbx) -> dict[str, int]:
    """Caller number → when (epoch s) that caller entered the queue (ENTERQUEUE's second field)."""
    return {e.data[1]: e.at for e in queue_log(pbx) if e.event == "ENTERQUEUE" and len(e.data) > 1}


def greeting_to_queue(log_text: str, greeting: str, greeting_seconds: float) -> dict[str, float]:
    """Channel → seconds from the end of the greeting to the start of ``Queue()``: the caller's wait on
    anything after the greeting (the reminder, when one is played, counts too)."""
    started: dict[str, datetime] = {}
    waits: dict[str, float] = {}
    for line in log_text.splitlines():
        found = _EXEC.match(line)
        if found is None:
            continue
        at = datetime.strptime(found["ts"], "%Y-%m-%d %H:%M:%S.%f")
        channel, app = found["channel"], found["app"]
        if app == "Playback" and found["args"] == greeting:
            started[channel] = at
        elif app == "Queue" and channel in started and channel not in waits:
            waits[channel] = (at - started[channel]).total_seconds() - greeting_seconds
    return waits


#: The dialplan's warning when it queues a caller with its defaults (no route from the app in time).
FALLBACK_WARNING = "callcenter: no route from the app"
_FALLBACK = re.compile(re.escape(FALLBACK_WARNING) + r" for (?P<uniqueid>[0-9.]+)")


def fell_back(pbx: TestPbx) -> set[str]:
    """Uniqueids of the callers the dialplan queued with its defaults: no route from the app in time."""
    return {m["uniqueid"] for m in _FALLBACK.finditer(pbx.log_text())}


def routed_marks(pbx: TestPbx) -> dict[str, str]:
    """Channel → the app node whose route the dialplan read (its ``Set(CC_ROUTED_BY=<node>)`` step; empty on
    the fallback): which node routed each caller, by Asterisk's own record."""
    marks: dict[str, str] = {}
    for line in pbx.log_text().splitlines():
        found = _EXEC.match(line)
        if found is not None and found["app"] == "Set" and found["args"].startswith("CC_ROUTED_BY="):
            marks[found["channel"]] = found["args"].removeprefix("CC_ROUTED_BY=")
    return marks
