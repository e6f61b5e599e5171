"""Citizen reports from the ``/lapor`` app wait in THE SAME Asterisk queue as 112 callers.

A report is not a call, but the centre must take it like one: in queue order, by the next free
call-taker, on the wallboard while it waits. So the leader node places each waiting report in the queue
with one AMI ``Originate`` of a ``Local/`` channel (``dialplans/callcenter.conf``):

* ``Local/<report id>@callcenter-report/n`` (Uniqueid ``report-<id>-<n>-q``, ``OtherChannelId``) waits in
  ``Queue()`` with ``__CC_REPORT_ID`` set; the tracker recognises it by that Uniqueid
  (:func:`~callcenter.queue.live.report_id_of`): a waiting item marked as an app report, and on
  ``AgentConnect`` the call-taker's console pops the report instead of a caller;
* the other half (``report-<id>-<n>``, the Originate's ``ChannelId`` and ``ActionID``) runs
  ``[callcenter-report-announce]`` once a call-taker answers: "laporan dari aplikasi, lihat layar", then
  it releases the line, and the call-taker calls the citizen back from the pop.

Placing is a side effect that must happen once: only the leader's loop (``LeaderOnly``) places, and
before it does, Asterisk's own channel list (``CoreShowChannels``) says which reports are already there
(placed by this node before a restart, or by the previous leader). A report stays ``waiting`` in the
database until a call-taker takes it, so nothing is lost when a placement fails: an Originate refused or
failed (``OriginateResponse`` Failure), a channel that died, an Asterisk restart: the next pass places it
again, with a growing pause (:data:`RETRY_MAX`). Meanwhile the wallboard shows it as waiting, "not in the
queue" (:meth:`ReportQueue.outside_queue`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog
from panoramisk.message import Message
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.queue.ami import AmiClient, AmiError
from callcenter.queue.live import report_id_of
from callcenter.queue.tracker import QueueTracker
from callcenter.store import Store, utcnow
from callcenter.store.leadership import check_term
from callcenter.store.models import Call, Report, User
from callcenter.store.reports import TAKEN, report_json
from callcenter.tasks import Background

log = structlog.get_logger("callcenter.reports")

#: The dialplan contexts (``dialplans/callcenter.conf``).
QUEUE_CONTEXT = "callcenter-report"
ANNOUNCE_CONTEXT = "callcenter-report-announce"
#: Longest a placed report waits in the queue before its Originate times out (then it is placed again,
#: at the back of the queue): bounds every channel the app leaves in Asterisk.
MAX_WAIT = 3600
#: Seconds between passes of the leader's loop (a new report on this node wakes it at once).
POLL = 2.0
#: An Originate sent this recently is in Asterisk's hands even if its channel is not seen yet.
IN_FLIGHT = 10.0
#: Pause before placing a report again after a failure: 1, 2, 4, ... up to this many seconds.
RETRY_MAX = 30.0
#: The store's change signal (``store/signals.py``) of a report accepted on any node.
SIGNAL = "report_waiting"
#: A console opened this long after its call-taker took a report still shows it (``open_turn``).
RESTORE_WITHIN = timedelta(minutes=30)


class WaitingReport(Protocol):
    """What the queue needs of a stored report (``store.models.Report``)."""

    @property
    def id(self) -> int: ...

    @property
    def number(self) -> str: ...

    @property
    def category(self) -> str: ...

    @property
    def created_at(self) -> datetime: ...


class ReportBook(Protocol):
    """The reports repository as the queue uses it (``store.reports.Reports``)."""

    async def waiting(self, limit: int = 200) -> Sequence[WaitingReport]: ...

    async def take(self, report_id: int, user_id: int) -> Any: ...


def report_pop(report: Report) -> dict[str, Any]:
    """The report part of a call-taker's pop: the stored report, where its photo is, and its position in
    the form of a location fix (``store/locations.fix_json``), so the console's map and "copy into the
    intake" show it like an AML or link position."""
    fix = None
    if report.latitude is not None and report.longitude is not None:
        fix = {
            "id": None,
            "call_id": None,
            "latitude": report.latitude,
            "longitude": report.longitude,
            "accuracy_m": report.accuracy_m,
            "confidence": None,
            "source": "browser",
            "via": "app",
            "fixed_at": report.created_at.isoformat(),
            "received_at": report.created_at.isoformat(),
        }
    photo = f"/api/reports/{report.id}/photo" if report.photo else None
    return {**report_json(report), "photo_url": photo, "fix": fix}


def channel_ids(report_id: int, stamp: int) -> tuple[str, str]:
    """``(announcing half, queued half)`` Uniqueids of one placement of a report."""
    return f"report-{report_id}-{stamp}", f"report-{report_id}-{stamp}-q"


@dataclass
class _Placement:
    """This node's knowledge of a report it placed: when, and how its placements failed."""

    reference: str = ""
    sent_at: float = float("-inf")
    failures: int = 0
    retry_at: float = float("-inf")
    error: str = ""


class ReportQueue:
    """Puts waiting reports into the call-takers' queue (leader only) and marks them taken on answer.

    A ``ReportSink`` of ``store.reports.Reports`` (:meth:`report_accepted`); :meth:`step` is one pass of the
    leader's ``TermLoop`` (built by the wiring); :meth:`on_ami_event` follows the Originates;
    :meth:`on_tracker` marks a report taken when a call-taker's phone answers it.
    """

    def __init__(
        self,
        reports: ReportBook,
        ami: AmiClient,
        tracker: QueueTracker,
        store: Store,
        *,
        priority: int = 5,
        max_wait: int = MAX_WAIT,
    ) -> None:
        self.reports = reports
        self.ami = ami
        self.tracker = tracker
        self.store = store
        self.priority = priority
        self.max_wait = max_wait
        self._placements: dict[int, _Placement] = {}
        #: The term whose first pass was logged (``report.queue_leading``).
        self._term_seen: int | None = None
        #: Takes in flight (a failure is logged there; cancelled by ``close``).
        self._tasks = Background()
        #: Reports placed (Originates sent) by this node, and placements that failed (``/metrics``).
        self.placed = 0
        self.failed = 0

    # -- the sink ----------------------------------------------------------------------------------

    async def report_accepted(self, report: WaitingReport) -> None:
        """A new report is stored as waiting: every node hears it (the store's change signal, topic
        :data:`SIGNAL`), the leader places it at once and the wallboards read it again."""
        await self.store.signals.changed(SIGNAL, report.id)

    # -- the leader's loop -------------------------------------------------------------------------

    async def step(self, term: int | None) -> None:
        """One pass of the leader's loop (``TermLoop``, term ``term``): place the waiting reports Asterisk
        does not have yet; the first pass of a term says what this node found when it started leading."""
        placed = await self.place_waiting(term)
        if term != self._term_seen and self.ami.ready.is_set() and self.tracker.link_up:
            # After a restart or a takeover: the reports already in Asterisk stay where they are.
            self._term_seen = term
            log.info("report.queue_leading", term=term, placed=placed, in_queue=len(self._in_pbx()))

    def _in_pbx(self) -> set[int]:
        """Reports the live picture shows waiting in the queue or connected to a call-taker."""
        live = self.tracker.live
        found = {w.report_id for w in live.waiting.values() if w.report_id is not None}
        found |= {r for r in map(report_id_of, live.connected) if r is not None}
        return found

    async def place_waiting(self, term: int | None) -> int:
        """One pass: place the waiting reports Asterisk does not have; returns how many were placed. Each
        Originate is preceded by the fencing check that ``term`` still leads (``check_term``): a deposed
        leader (frozen past its grace, woken up) places nothing (:class:`Deposed`)."""
        if not self.ami.ready.is_set() or not self.tracker.link_up:
            return 0  # the live picture is not Asterisk's yet: it cannot say what is already there
        loop = asyncio.get_running_loop()
        now = loop.time()
        waiting = list(await self.reports.waiting())
        ids = {r.id for r in waiting}
        for gone in [r for r in self._placements if r not in ids]:
            del self._placements[gone]  # taken, closed: nothing more to place
        in_pbx = self._in_pbx()
        due = [
            r
            for r in waiting
            if r.id not in in_pbx
            and now - self._placement(r.id).sent_at > IN_FLIGHT
            and now >= self._placement(r.id).retry_at
        ]
        if not due:
            return 0
        # Asterisk's own word on which reports have a channel (a requeue loop, a previous leader's).
        alive = await self._report_channels()
        placed = 0
        for report in due:
            if report.id in alive:
                continue
            await self.store.transaction("report_term", lambda session: check_term(session, term))
            if await self._place(report):
                placed += 1
        return placed

    def _placement(self, report_id: int) -> _Placement:
        return self._placements.setdefault(report_id, _Placement())

    async def _report_channels(self) -> set[int]:
        ids = (report_id_of(str(m.get("Uniqueid", ""))) for m in await self.ami.channels())
        return {r for r in ids if r is not None}

    async def _place(self, report: WaitingReport) -> bool:
        placement = self._placement(report.id)
        stamp = time.time_ns() // 1_000_000
        announce, queued = channel_ids(report.id, stamp)
        placement.reference, placement.sent_at = announce, asyncio.get_running_loop().time()
        try:
            await self.ami.originate(
                announce,
                f"Local/{report.id}@{QUEUE_CONTEXT}/n",
                ANNOUNCE_CONTEXT,
                ring_seconds=self.max_wait,
                variables={"CC_REPORT_ID": str(report.id), "CC_REPORT_PRIO": str(self.priority)},
                # The wallboard and the call-taker's phone show the citizen's verified number.
                caller_id=f'"Laporan aplikasi" <{report.number}>',
                other_channel_id=queued,
            )
        except AmiError as exc:
            self._failed(report.id, str(exc)[:64] or "AMI unavailable")
            return False
        self.placed += 1
        log.info("report.queue_placed", report_id=report.id, uniqueid=queued, attempt=placement.failures + 1)
        return True

    def _failed(self, report_id: int, error: str) -> None:
        placement = self._placement(report_id)
        placement.failures += 1
        self.failed += 1
        placement.sent_at = float("-inf")
        pause = min(RETRY_MAX, 2.0 ** (placement.failures - 1))
        placement.retry_at = asyncio.get_running_loop().time() + pause
        placement.error = error
        log.warning(
            "report.queue_failed", report_id=report_id, error=error, retry_in=pause, failures=placement.failures
        )

    # -- AMI and the tracker -----------------------------------------------------------------------

    async def on_ami_event(self, message: Message) -> None:
        """``OriginateResponse`` of a placement: Failure → placed again after a pause (Success means a
        call-taker answered; the tracker's AgentConnect already says so)."""
        if str(message.get("Event", "")) != "OriginateResponse":
            return
        reference = str(message.get("ActionID", ""))
        report_id = report_id_of(reference)
        placement = self._placements.get(report_id) if report_id is not None else None
        if report_id is None or placement is None or placement.reference != reference:
            return
        if message.get("Response") != "Success":
            self._failed(report_id, f"originate failed (reason {message.get('Reason', '?')})")

    def on_tracker(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Tracker listener: a call-taker's phone answered a report → it is theirs (``taken``)."""
        report_id = payload.get("report_id") if kind == "connected" else None
        if isinstance(report_id, int):
            self._tasks.spawn(self._take(report_id, str(payload.get("interface", ""))), name=f"report-take-{report_id}")

    async def _take(self, report_id: int, interface: str) -> None:
        user_id = await self._user_of(interface)
        if user_id is None:
            # A phone no console user owns: nobody can see the report, so it goes back to the queue.
            log.warning("report.answered_by_unknown_phone", report_id=report_id, interface=interface)
            return
        if await self.reports.take(report_id, user_id) is None:
            log.info("report.already_taken", report_id=report_id, user_id=user_id)

    async def _user_of(self, interface: str) -> int | None:
        async def op(session: AsyncSession) -> int | None:
            found: int | None = await session.scalar(select(User.id).where(User.interface == interface))
            return found

        return await self.store.transaction("report_taker", op) if interface else None

    async def turn(self, report_id: int) -> Call | None:
        """The report's latest turn in the queue that a call-taker answered (the call row the tracker made
        of it: the pop's ``call_id``, what the intake and a call-back belong to)."""

        async def op(session: AsyncSession) -> Call | None:
            found: Call | None = await session.scalar(
                select(Call)
                .where(Call.uniqueid.like(f"report-{report_id}-%-q"), Call.answered_at.is_not(None))
                .order_by(Call.answered_at.desc())
                .limit(1)
            )
            return found

        return await self.store.transaction("report_turn", op)

    async def open_turn(self, user_id: int, within: timedelta = RESTORE_WITHIN) -> str | None:
        """The queue turn (Uniqueid) of the report ``user_id`` took last, if they took it within ``within``
        and have not called the citizen back yet: a report's line is released seconds after the pop, so a
        console reloaded (or opened) after that restores the report from here, not from the live picture."""
        since = utcnow() - within

        async def op(session: AsyncSession) -> int | None:
            found: int | None = await session.scalar(
                select(Report.id)
                .where(Report.taken_by == user_id, Report.status == TAKEN, Report.taken_at >= since)
                .order_by(Report.taken_at.desc())
                .limit(1)
            )
            return found

        report_id = await self.store.transaction("report_taken_by", op)
        call = await self.turn(report_id) if report_id is not None else None
        return call.uniqueid if call is not None else None

    # -- what the wallboard shows ------------------------------------------------------------------

    async def outside_queue(self) -> list[dict[str, Any]]:
        """Waiting reports that are not in the queue now (being placed, failed, no call-taker in the queue):
        the wallboard shows them as waiting all the same."""
        in_pbx = self._in_pbx()
        now = asyncio.get_running_loop().time()
        rows = []
        for report in await self.reports.waiting():
            if report.id in in_pbx:
                continue
            placement = self._placements.get(report.id)
            state = "not_queued"
            if placement is not None and now - placement.sent_at <= IN_FLIGHT:
                state = "placing"
            elif placement is not None and placement.failures:
                state = "retrying"
            rows.append(
                {
                    "report_id": report.id,
                    "number": report.number,
                    "category": report.category,
                    "created_at": report.created_at.isoformat(),
                    "state": state,
                    "failures": placement.failures if placement else 0,
                    "error": placement.error if placement else "",
                }
            )
        return rows

    # -- housekeeping ------------------------------------------------------------------------------

    async def close(self) -> None:
        await self._tasks.cancel()


__all__ = [
    "ANNOUNCE_CONTEXT",
    "MAX_WAIT",
    "QUEUE_CONTEXT",
    "ReportBook",
    "ReportQueue",
    "WaitingReport",
    "channel_ids",
    "report_pop",
]
