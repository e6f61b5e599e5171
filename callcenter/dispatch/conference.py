"""Conference the caller with the agency officer: the call-taker stays on the line (ConfBridge).

The caller and the call-taker are bridged by the queue. One AMI ``Redirect`` moves both legs at once
(``Channel`` + ``ExtraChannel``: Asterisk keeps the bridge from hanging up the other side while the two
leave it) into ``[callcenter-conference]``, extension = the incident id, where each joins the room
``conf-<incident id>``; they keep talking there. Then the dispatch's accepted duty line is called with
an asynchronous ``Originate`` into the same context and room: the officer joins when they answer.

Only an Asterisk line (``PJSIP/...``) can join: an officer reached through Twilio (an E.164 number) or
who accepted in the browser has no channel on this PBX (:class:`NeedsSipLine`).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from callcenter.dispatch.agencies import line_kind
from callcenter.queue.ami import AmiClient
from callcenter.store.models import Call, Dispatch

log = structlog.get_logger("callcenter.dispatch.conference")

CONTEXT = "callcenter-conference"
#: Dispatch statuses in which the agency has accepted and is still working the incident.
JOINABLE = frozenset({"accepted", "dispatched", "en_route", "on_scene"})
#: Seconds the officer's line may ring for the conference.
RING_SECONDS = 30


class ConferenceError(Exception):
    """The conference cannot be started now (the API answers 409 with the message)."""


class NotConnected(ConferenceError):
    """The call is not (or no longer) in conversation with a call-taker."""


class NotAccepted(ConferenceError):
    """The dispatch has not been accepted (or is closed): there is no officer to bring in."""


class NeedsSipLine(ConferenceError):
    """The officer accepted on a line this PBX cannot call (E.164/Twilio, or the web)."""


class Recorder(Protocol):
    async def record_event(
        self, uniqueid: str, kind: str, *, source: str, data: Mapping[str, Any] | None = None
    ) -> str: ...


@dataclass(frozen=True)
class Started:
    room: str
    caller_channel: str
    taker_channel: str
    officer_line: str
    #: Uniqueid of the officer's originated channel.
    officer_channel_id: str


def room_of(incident_id: int) -> str:
    return f"conf-{int(incident_id)}"


class Conference:
    """Starts conferences; ``channels`` is the tracker's ``live.channels`` (caller uniqueid → (caller's
    channel, call-taker's channel)) for the calls connected now."""

    def __init__(
        self,
        ami: AmiClient,
        store: Recorder,
        channels: dict[str, tuple[str, str]],
        *,
        ring_seconds: int = RING_SECONDS,
        context: str = CONTEXT,
    ) -> None:
        self.ami = ami
        self.store = store
        self.channels = channels
        self.ring_seconds = ring_seconds
        self.context = context

    def check(self, call: Call | None, dispatch: Dispatch) -> tuple[str, str, str]:
        """(caller channel, call-taker channel, officer line), or a ConferenceError saying why not."""
        if dispatch.status not in JOINABLE or not dispatch.accepted_line:
            raise NotAccepted(f"dispatch is {dispatch.status}, not accepted")
        line = dispatch.accepted_line
        if line == "web" or line_kind(line) != "pbx" or not re.fullmatch(r"PJSIP/[A-Za-z0-9_.@:+-]{1,120}", line):
            raise NeedsSipLine("conference needs a SIP line")
        if call is None:
            raise NotConnected("the incident has no call")
        legs = self.channels.get(call.uniqueid)
        if legs is None:
            raise NotConnected("call is not connected to a call-taker")
        return legs[0], legs[1], line

    async def start(self, call: Call | None, dispatch: Dispatch, *, user: str | None = None) -> Started:
        """Move the caller and the call-taker into the room, then call the officer into it.

        AmiNotConnected / AmiError propagate (the API answers 503 / 409); a refused Redirect leaves the
        call as it was, a refused Originate leaves caller and call-taker talking in the room.
        """
        caller_channel, taker_channel, line = self.check(call, dispatch)
        assert call is not None  # checked above
        exten = str(int(dispatch.incident_id))
        room = room_of(dispatch.incident_id)
        await self.ami.action(
            {
                "Action": "Redirect",
                "Channel": caller_channel,
                "ExtraChannel": taker_channel,
                "Context": self.context,
                "Exten": exten,
                "Priority": "1",
                "ExtraContext": self.context,
                "ExtraExten": exten,
                "ExtraPriority": "1",
            }
        )
        # Not in conversation with the queue any more: a second request must not redirect again.
        self.channels.pop(call.uniqueid, None)
        channel_id = f"conference-{dispatch.id}-{secrets.token_hex(4)}"
        data: dict[str, Any] = {
            "room": room,
            "dispatch_id": dispatch.id,
            "agency": dispatch.agency,
            "officer_line": line,
            "caller_channel": caller_channel,
            "taker_channel": taker_channel,
            "by": user,
        }
        try:
            await self.ami.originate(
                channel_id,
                line,
                self.context,
                exten=exten,
                ring_seconds=self.ring_seconds,
                variables={"CC_DISPATCH_ID": str(int(dispatch.id))},
            )
        except Exception as exc:
            await self._record(call.uniqueid, {**data, "officer": "not called", "error": str(exc)[:200]})
            raise
        await self._record(call.uniqueid, {**data, "officer_channel_id": channel_id})
        log.info("conference.started", uniqueid=call.uniqueid, **data)
        return Started(room, caller_channel, taker_channel, line, channel_id)

    async def _record(self, uniqueid: str, data: dict[str, Any]) -> None:
        try:
            await self.store.record_event(uniqueid, "conference", source="app", data=data)
        except Exception:  # the conference runs; the timeline misses one line, the log has it
            log.exception("conference.record_failed", uniqueid=uniqueid, **data)


__all__ = [
    "CONTEXT",
    "JOINABLE",
    "Conference",
    "ConferenceError",
    "NeedsSipLine",
    "NotAccepted",
    "NotConnected",
    "Started",
    "room_of",
]
