"""Citizen reports from the ``/lapor`` app: stored, queued like calls, taken, called back, classified.

A report is a verified number's request for a call-back: category, the browser's fix (if any), an
optional photo. Once stored it is *accepted*: every :class:`ReportSink` registered with
:meth:`Reports.add_sink` is told (the queue side puts it into the same Asterisk queue as 112 calls),
and it waits until a call-taker takes it (:meth:`Reports.take`) and calls back (:meth:`Reports.link_callback`).

States, in order: ``waiting`` → ``taken`` → ``called_back`` → ``closed`` (:data:`REPORT_STATES`).
A classification from the call classifications (``forms.categories.CLASSIFICATIONS``) may be set at
any time; prank and hoax flag the number exactly as a classified call does (``Calls.flag_number``:
the routing's flag index and the number's history) and count as false reports of the app number:
``block_after`` of them block the number from the app (``store/app_numbers.py``), never from 112.

Limits (per number and per client address group, in a window) are checked in the transaction that
stores the report, so a burst cannot slip past them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.forms.categories import FLAGGING_CLASSIFICATIONS
from callcenter.store.app_numbers import is_blocked
from callcenter.store.calls import Calls
from callcenter.store.engine import utcnow
from callcenter.store.models import AppNumber, Report
from callcenter.store.quota import QuotaExceeded

log = structlog.get_logger("callcenter.reports")

WAITING = "waiting"
TAKEN = "taken"
CALLED_BACK = "called_back"
CLOSED = "closed"
#: A report's states, in the order it goes through them.
REPORT_STATES = (WAITING, TAKEN, CALLED_BACK, CLOSED)
#: Reports classified as one of these count against the app number (and flag it like a call).
FALSE_REPORT_KINDS = frozenset({"prank", "hoax"})
#: Longest a sink may take to accept a report before the app answers the citizen anyway.
SINK_TIMEOUT = 5.0


class AppBlocked(Exception):
    """The number is blocked from the app after false reports (it can still call 112)."""


class ReportSink(Protocol):
    """Told of every accepted report, after it is stored (``status`` ``waiting``).

    Should return promptly (start the queue entry, don't wait for a call-taker); it is awaited for at
    most :data:`SINK_TIMEOUT`. A sink that fails or times out is logged; the report stays ``waiting``
    and is found again by :meth:`Reports.waiting` (e.g. to re-queue at start).
    """

    async def report_accepted(self, report: Report) -> None: ...


@dataclass(frozen=True)
class ReportLimits:
    """At most ``per_number`` reports of one number and ``per_client`` of one address group per ``window``."""

    per_number: int = 5
    per_client: int = 20
    window: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class NewReport:
    number: str
    category: str
    client_group: str
    latitude: float | None = None
    longitude: float | None = None
    accuracy_m: float | None = None
    photo: str | None = None
    device_id: int | None = None


@dataclass(frozen=True)
class Classified:
    """A classification's effect: the report, the number's false-report count, and whether it is now blocked."""

    report: Report
    false_reports: int
    blocked: bool


def report_json(row: Report) -> dict[str, Any]:
    """The report as the console shows it (the number included: the console is the centre's)."""

    def iso(at: datetime | None) -> str | None:
        return at.isoformat() if at else None

    return {
        "id": row.id,
        "number": row.number,
        "category": row.category,
        "latitude": row.latitude,
        "longitude": row.longitude,
        "accuracy_m": row.accuracy_m,
        "photo": row.photo,
        "created_at": row.created_at.isoformat(),
        "status": row.status,
        "taken_by": row.taken_by,
        "taken_at": iso(row.taken_at),
        "callback_uniqueid": row.callback_uniqueid,
        "called_back_at": iso(row.called_back_at),
        "closed_at": iso(row.closed_at),
        "classification": row.classification,
    }


class Reports:
    """The reports repository; one per app, built by the composition root, sinks added by the queue side."""

    def __init__(
        self,
        calls: Calls,
        *,
        limits: ReportLimits | None = None,
        block_after: int = 3,
        block_for: timedelta | None = None,
    ) -> None:
        self.calls = calls
        self.store = calls.store
        self.limits = limits or ReportLimits()
        self.block_after = block_after
        self.block_for = block_for
        self._sinks: list[ReportSink] = []

    def add_sink(self, sink: ReportSink) -> Callable[[], None]:
        """Tell ``sink`` of every accepted report from now on; returns the function that stops it."""
        self._sinks.append(sink)
        return lambda: self._sinks.remove(sink) if sink in self._sinks else None

    async def create(self, new: NewReport) -> Report:
        """Store a report and tell the sinks. Raises :class:`AppBlocked` for a blocked number and
        :class:`~callcenter.store.quota.QuotaExceeded` past a limit (nothing stored either way)."""
        now = utcnow()
        since = now - self.limits.window

        async def op(session: AsyncSession) -> Report:
            if is_blocked(await session.get(AppNumber, new.number), now, self.block_for):
                raise AppBlocked(new.number)
            per_number = await session.scalar(
                select(func.count()).where(Report.number == new.number, Report.created_at >= since)
            )
            if (per_number or 0) >= self.limits.per_number:
                raise QuotaExceeded(f"at most {self.limits.per_number} reports per number per {self.limits.window}")
            per_client = await session.scalar(
                select(func.count()).where(Report.client_group == new.client_group, Report.created_at >= since)
            )
            if (per_client or 0) >= self.limits.per_client:
                raise QuotaExceeded(f"at most {self.limits.per_client} reports per address per {self.limits.window}")
            row = Report(
                number=new.number,
                device_id=new.device_id,
                category=new.category,
                latitude=new.latitude,
                longitude=new.longitude,
                accuracy_m=new.accuracy_m,
                photo=new.photo,
                client_group=new.client_group,
                created_at=now,
                status=WAITING,
            )
            session.add(row)
            await session.flush()
            return row

        report = await self.store.transaction("report_create", op)
        log.info("report.accepted", report_id=report.id, category=report.category, located=report.latitude is not None)
        await self._tell_sinks(report)
        return report

    async def _tell_sinks(self, report: Report) -> None:
        for sink in list(self._sinks):
            try:
                await asyncio.wait_for(sink.report_accepted(report), SINK_TIMEOUT)
            except Exception as exc:  # the report is stored and waiting; the queue side can find it again
                log.warning("report.sink_failed", report_id=report.id, error=str(exc) or type(exc).__name__)

    async def get(self, report_id: int) -> Report | None:
        async def op(session: AsyncSession) -> Report | None:
            return await session.get(Report, report_id)

        return await self.store.transaction("report_get", op)

    async def by_callback_uniqueid(self, uniqueid: str) -> Report | None:
        async def op(session: AsyncSession) -> Report | None:
            found: Report | None = await session.scalar(select(Report).where(Report.callback_uniqueid == uniqueid))
            return found

        return await self.store.transaction("report_by_uniqueid", op)

    async def waiting(self, limit: int = 200) -> list[Report]:
        """Reports nobody has taken yet, oldest first."""

        async def op(session: AsyncSession) -> list[Report]:
            rows = await session.scalars(
                select(Report).where(Report.status == WAITING).order_by(Report.created_at, Report.id).limit(limit)
            )
            return list(rows)

        return await self.store.transaction("reports_waiting", op)

    async def _set(self, what: str, report_id: int, allowed_from: tuple[str, ...], **values: Any) -> Report | None:
        """Move a report on, only from one of ``allowed_from`` (in one statement); None when it was not there."""

        async def op(session: AsyncSession) -> Report | None:
            done = await session.execute(
                update(Report).where(Report.id == report_id, Report.status.in_(allowed_from)).values(**values)
            )
            if not getattr(done, "rowcount", 0):
                return None
            return await session.get(Report, report_id, populate_existing=True)

        return await self.store.transaction(what, op)

    async def take(self, report_id: int, user_id: int) -> Report | None:
        """The call-taker ``user_id`` takes a waiting report; None when it is not waiting (someone else took it)."""
        taken = await self._set("report_take", report_id, (WAITING,), status=TAKEN, taken_by=user_id, taken_at=utcnow())
        if taken is not None:
            log.info("report.taken", report_id=report_id, user_id=user_id)
        return taken

    async def link_callback(self, report_id: int, uniqueid: str) -> Report | None:
        """The call-back call (its Asterisk uniqueid) of a taken report; again for a second call-back."""
        linked = await self._set(
            "report_callback",
            report_id,
            (TAKEN, CALLED_BACK),
            status=CALLED_BACK,
            callback_uniqueid=uniqueid,
            called_back_at=utcnow(),
        )
        if linked is not None:
            log.info("report.called_back", report_id=report_id, uniqueid=uniqueid)
        return linked

    async def close(self, report_id: int) -> Report | None:
        return await self._set(
            "report_close", report_id, (WAITING, TAKEN, CALLED_BACK), status=CLOSED, closed_at=utcnow()
        )

    async def classify(
        self, report_id: int, classification: str, *, user_id: int | None, username: str, flag: bool = True
    ) -> Classified | None:
        """Set the report's classification (a ``CLASSIFICATIONS`` code, checked by the caller). Into
        prank/hoax: the number is flagged like a call and its false reports counted (blocked at
        ``block_after``); out of them again: the count is taken back (and the block, below the threshold).
        ``flag=False`` when the report's queue call was classified and that already flagged the number."""
        now = utcnow()

        async def op(session: AsyncSession) -> tuple[Classified, bool] | None:
            report = await session.get(Report, report_id, with_for_update=True)
            if report is None:
                return None
            was_false = report.classification in FALSE_REPORT_KINDS
            is_false = classification in FALSE_REPORT_KINDS
            report.classification, report.classified_by, report.classified_at = classification, user_id, now
            number = await session.get(AppNumber, report.number, with_for_update=True)
            if number is None:  # a report always comes from a verified number; tolerate a deleted row
                number = AppNumber(number=report.number, created_at=now, code_attempts=0, codes_sent=0, false_reports=0)
                session.add(number)
            if is_false and not was_false:
                number.false_reports += 1
                if number.false_reports >= self.block_after and number.blocked_at is None:
                    number.blocked_at = now
            elif was_false and not is_false:
                number.false_reports = max(0, number.false_reports - 1)
                if number.false_reports < self.block_after:
                    number.blocked_at = None
            blocked = is_blocked(number, now, self.block_for)
            return Classified(report, number.false_reports, blocked), is_false and not was_false

        result = await self.store.transaction("report_classify", op)
        if result is None:
            return None
        classified, newly_false = result
        if flag and newly_false and classification in FLAGGING_CLASSIFICATIONS:
            await self.calls.flag_number(
                classified.report.number, classification, note=f"laporan aplikasi #{report_id}", created_by=username
            )
        log.info(
            "report.classified",
            report_id=report_id,
            classification=classification,
            false_reports=classified.false_reports,
            blocked=classified.blocked,
        )
        return classified


__all__ = [
    "CALLED_BACK",
    "CLOSED",
    "FALSE_REPORT_KINDS",
    "REPORT_STATES",
    "TAKEN",
    "WAITING",
    "AppBlocked",
    "Classified",
    "NewReport",
    "ReportLimits",
    "ReportSink",
    "Reports",
    "report_json",
]
