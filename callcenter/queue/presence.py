"""Call-taker presence: joining and leaving the queue, pausing with a reason, through AMI.

The console never assumes the result: it shows what QueueMemberStatus/Pause events report back,
which the tracker keeps in its live picture.

What the call-takers asked for is also recorded (``store/presence.py``): Asterisk forgets dynamic
queue members when it restarts, so after every AMI (re)connect ``restore`` puts each recorded call-taker
back, with their pause state and reason, before the resync and before the next caller can reach the
queue. The record changes only by the call-taker's own console actions, and follows pause changes that
Asterisk reports (a supervisor pausing someone from the CLI). A removal reported by Asterisk alone is not
taken as a logout: a shutting-down Asterisk removes members too, and a call-taker who is still at the
desk must not silently drop out of the queue for good.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import structlog

from callcenter.queue.ami import AmiNotConnected
from callcenter.queue.live import is_true
from callcenter.store.presence import LoginRecord, QueueLogins
from callcenter.tasks import Background

log = structlog.get_logger("callcenter.presence")

#: Pause reasons a call-taker can pick; free text is refused so statistics stay comparable.
PAUSE_REASONS = ("break", "wrap-up", "training", "meeting", "technical")
#: The reason the app pauses a call-taker with after offered calls rang out (``supervision/presence_control.py``);
#: not one a call-taker can pick.
AUTO_PAUSE_REASON = "tidak menjawab"


class ActionSender(Protocol):
    async def action(self, action: dict[str, str], *, as_list: bool = False, timeout: float | None = None) -> Any: ...


class Presence:
    def __init__(
        self,
        ami: ActionSender,
        queue: str,
        records: QueueLogins | None = None,
        background: Background | None = None,
    ) -> None:
        self.ami = ami
        self.queue = queue
        self.records = records
        self.background = background or Background()
        #: The recorded logins by interface, as last read or written (the pause mirror compares with it).
        self._logged_in: dict[str, LoginRecord] = {}

    # -- console actions -------------------------------------------------------------------------

    async def log_in(self, interface: str, name: str, *, user_id: int | None = None) -> None:
        try:
            await self._add(interface, name, paused=False, reason="")
        except Exception as exc:
            # "Already there" (e.g. put back by a restore): in the queue all the same, so recorded.
            if "already there" in str(exc).lower():
                await self._record(LoginRecord(self.queue, interface, name, user_id=user_id))
            raise
        await self._record(LoginRecord(self.queue, interface, name, user_id=user_id))

    async def log_out(self, interface: str) -> None:
        try:
            await self.ami.action({"Action": "QueueRemove", "Queue": self.queue, "Interface": interface})
        except Exception as exc:
            if "not there" in str(exc).lower():
                await self._forget(interface)
            raise
        await self._forget(interface)

    async def pause(self, interface: str, reason: str) -> None:
        if reason not in PAUSE_REASONS and reason != AUTO_PAUSE_REASON:
            raise ValueError(f"pause reason must be one of {', '.join(PAUSE_REASONS)}")
        await self.ami.action(
            {"Action": "QueuePause", "Queue": self.queue, "Interface": interface, "Paused": "true", "Reason": reason}
        )
        await self._record_pause(interface, True, reason)

    async def unpause(self, interface: str) -> None:
        await self.ami.action({"Action": "QueuePause", "Queue": self.queue, "Interface": interface, "Paused": "false"})
        await self._record_pause(interface, False, "")

    # -- after a (re)connect ---------------------------------------------------------------------

    async def restore(self, members: Iterable[Mapping[str, Any]]) -> int:
        """Put every recorded call-taker back that Asterisk's ``QueueStatus`` (``members``) lacks, and put
        back the recorded pause state where it differs; returns the number of actions sent.

        One member that Asterisk refuses (an interface that no longer exists) is logged and skipped; a
        lost link raises, and the next connect tries again.
        """
        if self.records is None:
            return 0
        wanted = await self.records.logged_in(self.queue)
        self._logged_in = {r.interface: r for r in wanted}
        present: dict[str, tuple[bool, str]] = {}
        for m in members:
            if str(m.get("Queue", self.queue)) != self.queue:
                continue
            interface = str(m.get("Location") or m.get("Interface") or "")
            present[interface] = (is_true(m.get("Paused")), str(m.get("PausedReason") or ""))
        sent = 0
        for record in wanted:
            state = present.get(record.interface)
            try:
                if state is None:
                    await self._add(record.interface, record.member_name, paused=record.paused, reason=record.reason)
                elif state[0] != record.paused or (record.paused and state[1] != record.reason):
                    action = {"Action": "QueuePause", "Queue": self.queue, "Interface": record.interface}
                    action["Paused"] = "true" if record.paused else "false"
                    if record.paused:
                        action["Reason"] = record.reason
                    await self.ami.action(action)
                else:
                    continue
            except AmiNotConnected:
                raise
            except Exception as exc:
                log.error("presence.restore_failed", interface=record.interface, error=str(exc))
                continue
            sent += 1
            log.info(
                "presence.restored",
                interface=record.interface,
                paused=record.paused,
                reason=record.reason,
                was_member=state is not None,
            )
        return sent

    def follow(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Tracker listener: a pause change Asterisk reports for a logged-in call-taker is recorded."""
        if kind != "member" or self.records is None or str(payload.get("queue", "")) != self.queue:
            return
        record = self._logged_in.get(str(payload.get("interface", "")))
        if record is None:
            return
        paused, reason = bool(payload.get("paused")), str(payload.get("reason") or "") if payload.get("paused") else ""
        if (record.paused, record.reason) != (paused, reason):
            self.background.spawn(self._record_pause(record.interface, paused, reason), "presence-pause-record")

    # -- helpers ---------------------------------------------------------------------------------

    async def _add(self, interface: str, name: str, *, paused: bool, reason: str) -> None:
        action = {
            "Action": "QueueAdd",
            "Queue": self.queue,
            "Interface": interface,
            "MemberName": name,
            "StateInterface": interface,
            "Paused": "true" if paused else "false",
        }
        if paused and reason:
            action["Reason"] = reason
        await self.ami.action(action)

    async def _record(self, record: LoginRecord) -> None:
        if self.records is None:
            return
        self._logged_in[record.interface] = record
        try:
            await self.records.log_in(record)
        except Exception as exc:  # in the queue all the same; only a restart would not bring them back
            log.error("presence.record_failed", interface=record.interface, action="login", error=str(exc))

    async def _forget(self, interface: str) -> None:
        if self.records is None:
            return
        self._logged_in.pop(interface, None)
        try:
            await self.records.log_out(self.queue, interface)
        except Exception as exc:
            log.error("presence.record_failed", interface=interface, action="logout", error=str(exc))

    async def _record_pause(self, interface: str, paused: bool, reason: str) -> None:
        if self.records is None:
            return
        record = self._logged_in.get(interface)
        if record is not None:
            self._logged_in[interface] = LoginRecord(
                record.queue, interface, record.member_name, paused, reason if paused else "", record.user_id
            )
        try:
            await self.records.set_paused(self.queue, interface, paused, reason)
        except Exception as exc:
            log.error("presence.record_failed", interface=interface, action="pause", error=str(exc))
