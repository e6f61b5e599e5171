"""Presence control for supervisors: how long each call-taker has been in their state, and auto-pause.

The tracker (``queue/tracker.py``) keeps what Asterisk reports about queue members; this module adds,
without changing it, two things the wallboard needs:

* **Time in state.** :class:`PresenceBoard` listens to the tracker's ``member`` publications and
  notes when each call-taker's shown state (ready, ringing, busy, paused with its reason, offline)
  last changed. A pause carries Asterisk's own ``LastPause`` (epoch seconds) on QueueMemberStatus /
  QueueMemberPause events, which is taken when present. A member first seen after the app (re)started
  or reconnected gets the time it was first seen, marked ``since_known = False`` (the page shows "≥").
* **Auto-pause.** :class:`AutoPause` counts, per interface, the offered calls that rang out
  (``AgentRingNoAnswer``: the member's ring timeout, or the queue's, ended the ring); an answer
  (``AgentConnect``) or any pause resets it. At ``after`` consecutive ring-outs the member is paused
  through AMI with the reason ``tidak menjawab`` and the supervisors are alerted; Asterisk then
  reports the pause like any other, so the wallboard shows it from the same source as the rest.

Both are plain classes fed by the composition root: no web types here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from callcenter.queue.presence import AUTO_PAUSE_REASON, Presence
from callcenter.store import utcnow
from callcenter.tasks import Background

log = structlog.get_logger("callcenter.supervision.presence")

#: Device states in which the member is on a call.
_BUSY = frozenset({"in_use", "busy", "ring_in_use", "on_hold"})
#: Alerts kept in memory for pages opened after the alert (the newest first, this many).
ALERT_HISTORY = 50


def state_key(member: Mapping[str, Any]) -> str:
    """The state a wallboard shows for a member (the same order as the page: a pause wins)."""
    if member.get("paused"):
        return "paused"
    if member.get("in_call") or member.get("state") in _BUSY:
        return "busy"
    if member.get("state") == "ringing":
        return "ringing"
    if member.get("state") == "not_in_use":
        return "ready"
    return "offline"


@dataclass(frozen=True)
class Since:
    key: str
    reason: str
    at: datetime
    known: bool


class PresenceBoard:
    """Since when each member (by interface) is in the state the wallboard shows."""

    def __init__(self) -> None:
        self._since: dict[str, Since] = {}
        #: Interfaces seen in a live event (not a resync) at least once: their changes have real times.
        self._live: set[str] = set()

    def on_member(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Tracker listener: ``member`` / ``member_removed`` publications."""
        interface = str(payload.get("interface", ""))
        if not interface:
            return
        if kind == "member_removed":
            self._since[interface] = Since("offline", "", utcnow(), True)
            return
        if kind != "member":
            return
        key, reason = state_key(payload), str(payload.get("reason") or "") if payload.get("paused") else ""
        old = self._since.get(interface)
        if old is None:
            self._since[interface] = Since(key, reason, utcnow(), False)
        elif (old.key, old.reason) != (key, reason):
            self._since[interface] = Since(key, reason, utcnow(), True)

    def on_ami(self, event: Mapping[str, Any]) -> None:
        """Asterisk's own pause time, when a member event carries it (tracker has already applied the event)."""
        name = str(event.get("Event", ""))
        interface = str(event.get("Interface") or event.get("Location") or "")
        current = self._since.get(interface)
        if name == "QueueMemberAdded" and current is not None and not current.known:
            self._since[interface] = Since(current.key, current.reason, current.at, True)  # joined just now
            return
        if name not in ("QueueMemberPause", "QueueMemberStatus"):
            return
        raw = str(event.get("LastPause", "") or "0")
        if current is None or current.key != "paused" or not raw.isdigit() or int(raw) <= 0:
            return
        at = datetime.fromtimestamp(int(raw), UTC)
        if abs((at - current.at).total_seconds()) < 24 * 3600:  # a sane clock; otherwise keep ours
            self._since[interface] = Since(current.key, current.reason, min(at, utcnow()), True)

    def since(self, interface: str) -> Since | None:
        return self._since.get(interface)

    def annotate(self, member: dict[str, Any], now: datetime) -> dict[str, Any]:
        """Add ``state_since``, ``seconds_in_state`` and ``since_known`` to a wallboard member row."""
        found = self._since.get(str(member.get("interface", "")))
        if found is None or found.key != state_key(member):
            return {**member, "state_since": None, "seconds_in_state": None, "since_known": False}
        return {
            **member,
            "state_since": found.at.isoformat(),
            "seconds_in_state": round(max(0.0, (now - found.at).total_seconds()), 1),
            "since_known": found.known,
        }


Alert = Callable[[dict[str, Any]], None]


class AutoPause:
    """Pause a call-taker who let ``after`` offered calls in a row ring out (0: never)."""

    def __init__(self, presence: Presence, after: int, alert: Alert) -> None:
        self.presence = presence
        self.after = after
        self.alert = alert
        self.missed: dict[str, int] = {}
        self.alerts: deque[dict[str, Any]] = deque(maxlen=ALERT_HISTORY)
        #: Pauses in flight (each AMI action in a task of its own; cancelled by ``close``).
        self._tasks = Background()

    async def on_ami(self, event: Mapping[str, Any]) -> None:
        """AMI fan-out subscriber (inside the ordered consumer: the AMI action runs in its own task)."""
        name = str(event.get("Event", ""))
        interface = str(event.get("Interface") or event.get("Location") or "")
        if not interface:
            return
        if name == "AgentConnect" or (name in ("QueueMemberPause", "QueueMemberStatus") and _true(event.get("Paused"))):
            self.missed.pop(interface, None)
        elif name == "AgentRingNoAnswer" and self.after > 0:
            count = self.missed.get(interface, 0) + 1
            self.missed[interface] = count
            log.info("presence.ring_no_answer", interface=interface, consecutive=count, limit=self.after)
            if count >= self.after:
                self.missed.pop(interface, None)
                member = str(event.get("MemberName") or interface)
                self._tasks.spawn(self._pause(interface, member, count), name="auto-pause")

    async def _pause(self, interface: str, member: str, count: int) -> None:
        alert: dict[str, Any] = {
            "kind": "auto_pause",
            "interface": interface,
            "member": member,
            "reason": AUTO_PAUSE_REASON,
            "missed": count,
            "at": utcnow().isoformat(),
        }
        try:
            await self.presence.pause(interface, AUTO_PAUSE_REASON)
            alert["paused"] = True
        except Exception as exc:  # AMI down or refused: the supervisors must still hear of it
            alert["paused"] = False
            alert["error"] = str(exc)
        log.warning("presence.auto_paused", interface=interface, missed=count, paused=alert["paused"])
        self.alerts.appendleft(alert)
        self.alert(alert)

    async def close(self) -> None:
        await self._tasks.cancel()


def _true(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes")
