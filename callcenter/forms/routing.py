"""How a 112 caller is placed in the queue: the one routing policy, whoever applies it.

Pure rules, no I/O: the AMI router (``queue/routing.py``) applies them while the greeting plays, and
the transition FastAGI route (``agi/incoming.py``) for dialplans from before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from callcenter.config import QueueConfig


@dataclass(frozen=True)
class Routing:
    priority: int
    language: str
    reminder: bool
    abuse_count: int

    def as_data(self) -> dict[str, object]:
        """The decision as the call's ``routed`` timeline entry stores it."""
        return {
            "priority": self.priority,
            "language": self.language,
            "abuse_count": self.abuse_count,
            "reminder": self.reminder,
        }


def decide(abuse_count: int, queue: QueueConfig) -> Routing:
    """Repeat pranksters wait behind other callers and hear a reminder; they are never refused."""
    flagged = abuse_count >= queue.prank_threshold
    return Routing(
        priority=queue.prank_priority if flagged else queue.default_priority,
        language=queue.language,
        reminder=flagged and queue.prank_reminder,
        abuse_count=abuse_count,
    )


def arrival_time(arg: str | None, fallback: datetime) -> datetime:
    """``${EPOCH}`` from the dialplan, taken before the greeting; our own clock if it is missing or odd."""
    try:
        value = datetime.fromtimestamp(int(arg or ""), UTC)
    except (ValueError, OverflowError, OSError):
        return fallback
    return value if abs((fallback - value).total_seconds()) < 3600 else fallback


def digits(value: str) -> str:
    """Only the digits of a dialled number (the dialplan filtered it already; this is defence in depth)."""
    return "".join(ch for ch in value if ch.isdigit())
