"""Rebuilding the tracker's live picture from Asterisk after every (re)connect.

A restart of Asterisk or of this app loses no call: Asterisk is the authority on what exists now (its
``QueueStatus`` and ``CoreShowChannels``), the database on what happened. Calls the database still has
open but Asterisk no longer knows ended while nobody listened: they are closed as ``ended``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import structlog
from panoramisk.message import Message

from callcenter.queue.live import WaitingCaller, report_id_of
from callcenter.queue.tracker import FINAL, QueueTracker, int_field
from callcenter.store import utcnow
from callcenter.store.calls import EventWrite
from callcenter.store.models import Call

log = structlog.get_logger("callcenter.tracker")


async def resync(
    tracker: QueueTracker,
    entries: list[Message],
    members: list[Message],
    channels: list[Message],
    asked_at: datetime | None = None,
    asked_mono: float | None = None,
) -> None:
    """Rebuild the live picture from Asterisk and close calls that ended while we were not listening.

    ``asked_at`` is when the channel list was requested: calls that arrived after it are not in
    the list yet are certainly not over, so they are left alone.
    """
    live = tracker.live
    now = utcnow()
    asked_at = asked_at or now
    asked_mono = asyncio.get_running_loop().time() if asked_mono is None else asked_mono
    alive = {str(c.get("Uniqueid", "")) for c in channels}
    snapshot = {str(e.get("Uniqueid", "")) for e in entries}
    live.prune("waiting", snapshot, asked_mono)
    for e in entries:
        uniqueid = str(e.get("Uniqueid", ""))
        if not uniqueid or not live.stale("waiting", uniqueid, asked_mono):
            continue
        wait = int_field(e.get("Wait"))
        live.waiting[uniqueid] = WaitingCaller(
            uniqueid,
            str(e.get("Queue", "")),
            int_field(e.get("Position")),
            str(e.get("CallerIDNum", "")),
            now - timedelta(seconds=wait),
            report_id_of(uniqueid),
        )
        queue = str(e.get("Queue", ""))
        joined = now - timedelta(seconds=wait)

        def update(call: Call, queue: str = queue, joined: datetime = joined) -> None:
            if call.status not in FINAL:
                call.status = "queued"
            call.queue = call.queue or queue
            call.queued_at = call.queued_at or joined

        tracker.record(e, "resync_waiting", {"queue": queue, "position": int_field(e.get("Position"))}, update)
    present = {(str(mm.get("Queue", "")), str(mm.get("Location") or mm.get("Interface", ""))) for mm in members}
    live.prune("member", present, asked_mono)
    for mm in members:
        mm_dict = dict(mm)
        mm_dict.setdefault("Interface", mm.get("Location", ""))
        mm_dict.setdefault("MemberName", mm.get("Name", ""))
        key = (str(mm.get("Queue", "")), str(mm_dict["Interface"]))
        if live.stale("member", key, asked_mono):
            with contextlib.suppress(KeyError, ValueError):
                tracker.member_event(Message(mm_dict))
    live.prune("connected", alive, asked_mono)
    for gone in [u for u in live.channels if u not in live.connected]:
        del live.channels[gone]
    # Open calls are read once everything handled so far is written: a call whose end is still
    # in a batch must not pass for one that ended unobserved. An outage fails the read below.
    await tracker.flush(timeout=tracker.calls.store.retry_for)
    for call in await tracker.calls.open_calls():
        if call.uniqueid in alive or call.arrived_at >= asked_at - timedelta(seconds=1):
            continue
        tracker.enqueue(
            EventWrite(
                call.uniqueid,
                "ended_unobserved",
                now,
                source="resync",
                data={"last_status": call.status},
                update=lambda c: _ended_unobserved(c, now),
            )
        )
    live.forget_tombstones(asked_mono)
    log.info(
        "tracker.resynced",
        waiting=len(live.waiting),
        members=len(live.members),
        channels=len(alive),
    )
    tracker.link_up = True
    tracker.publish("resync", {"waiting": len(live.waiting), "members": len(live.members)})


def _ended_unobserved(call: Call, now: datetime) -> None:
    """Gone from Asterisk while we were not listening: ended, outcome unknown (not "abandoned")."""
    call.ended_at = call.ended_at or now
    if call.status not in FINAL:
        call.status = "ended"


async def resync_from_ami(
    tracker: QueueTracker, ami: Any, *, restore: Callable[[list[Message]], Awaitable[Any]] | None = None
) -> None:
    """After every (re)connect: ask Asterisk for queue entries, members and live channels.

    ``restore`` gets the members Asterisk reports before anything else happens (the presence puts the
    call-takers back that a restarted Asterisk forgot); the member events its actions cause reach the
    live picture after the snapshot, so the snapshot does not undo them.
    """
    asked_at = utcnow()
    asked_mono = asyncio.get_running_loop().time()
    status = await ami.action({"Action": "QueueStatus"}, as_list=True, timeout=10)
    status_list = status if isinstance(status, list) else [status]
    entries = [m for m in status_list if str(m.get("Event", "")).lower() == "queueentry"]
    members = [m for m in status_list if str(m.get("Event", "")).lower() == "queuemember"]
    if restore is not None:
        await restore(members)
    await resync(tracker, entries, members, await ami.channels(), asked_at, asked_mono)


__all__ = ["resync", "resync_from_ami"]
