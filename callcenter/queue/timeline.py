"""The call timeline's write-behind: events queued by the tracker, written in batches, in order.

The live picture changes as each AMI event is handled; the timeline is written behind it. Events that
arrive while a batch is being written are gathered into the next one (one transaction each, at most
``batch_size`` events, in arrival order), so the AMI consumer never waits on the database and a burst
of events costs a few transactions instead of one each. Every batch is registered in ``PendingWrites``
for the calls it holds: the hangup handler's report and the console's pop wait for it, as they wait
for the AGI route's first write. A database outage is waited out, round after round; only a backlog
past ``backlog_limit`` (or a shutdown) loses events, and then the log keeps each of them whole.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from callcenter.store import Calls, StoreUnavailable
from callcenter.store.calls import EventWrite
from callcenter.store.pending import PendingWrites

log = structlog.get_logger("callcenter.tracker")

#: Runs once the event it belongs to is in the database (a publication that must not run ahead of it).
AfterWrite = Callable[[], None]


@dataclass
class _Batch:
    """Events written in one transaction; ``done`` resolves when they are written or given up."""

    done: asyncio.Future[None]
    writes: list[tuple[EventWrite, AfterWrite | None]] = field(default_factory=list)
    #: Other writes of these calls still on their way (the AGI route's first write): this batch lands after them.
    waits_for: set[asyncio.Future[Any]] = field(default_factory=set)


class TimelineWriter:
    """The one writer of the tracker's timeline events (``QueueTracker`` owns one)."""

    def __init__(
        self,
        calls: Calls,
        pending: PendingWrites,
        *,
        batch_size: int = 200,
        backlog_limit: int = 50_000,
        outage_pause: float = 1.0,
    ) -> None:
        self.calls = calls
        self.pending = pending
        #: At most this many events per transaction: a long backlog is written in bounded steps.
        self.batch_size = batch_size
        #: Events kept while the database is down; past this the oldest are logged whole and dropped.
        self.backlog_limit = backlog_limit
        #: Pause between write rounds during an outage (the store itself retries within each round).
        self.outage_pause = outage_pause
        #: Batches written so far (one transaction each, unless a bad event forced one per event).
        self.batches_written = 0
        #: Batches not started yet, oldest first; the writer takes them one at a time.
        self._open: deque[_Batch] = deque()
        self._queued = 0
        self._writing: _Batch | None = None
        self._writer: asyncio.Task[None] | None = None
        self._last: asyncio.Future[None] | None = None

    @property
    def backlog(self) -> int:
        """Events handled (in the live picture) but not yet written to the timeline."""
        return self._queued + (len(self._writing.writes) if self._writing is not None else 0)

    def enqueue(self, write: EventWrite, after: AfterWrite | None = None) -> None:
        """Add to the newest batch not being written yet; start the writer if it is idle."""
        batch = self._open[-1] if self._open and len(self._open[-1].writes) < self.batch_size else None
        if batch is None:
            batch = _Batch(asyncio.get_running_loop().create_future())
            self._open.append(batch)
            self._last = batch.done
        prior = self.pending.latest(write.uniqueid)
        if prior is not None and prior is not batch.done:
            batch.waits_for.add(prior)
        self.pending.track(write.uniqueid, batch.done)
        batch.writes.append((write, after))
        self._queued += 1
        if self._queued > self.backlog_limit:
            self._drop_oldest()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_batches(), name="tracker-writes")

    def _drop_oldest(self) -> None:
        """The database has been gone for long: keep memory bounded, and the dropped event in the log."""
        oldest = self._open[0]
        write, _ = oldest.writes.pop(0)
        self._queued -= 1
        _log_lost(write, "backlog full")
        if not oldest.writes:
            self._open.popleft()
            oldest.done.set_result(None)

    async def _write_batches(self) -> None:
        """The one writer: batches in order, each after the other writes its calls wait for."""
        while self._open:
            batch = self._writing = self._open.popleft()
            self._queued -= len(batch.writes)
            try:
                if batch.waits_for:
                    await asyncio.wait(batch.waits_for, timeout=5.0)
                await self._write(batch)
            except Exception:
                # A bug here must not stop the timeline for good; the events are in the log.
                log.exception("tracker.batch_failed")
                for write, _ in batch.writes:
                    _log_lost(write, "batch failed")
            finally:
                self._writing = None
                if not batch.done.done():
                    batch.done.set_result(None)

    async def _write(self, batch: _Batch) -> None:
        writes = [w for w, _ in batch.writes]
        try:
            ids = await self._commit(writes)
        except Exception:
            # Not an outage (that is waited out): bad data or a bug in an update. One such event must
            # not take the others of its batch with it, so each is tried on its own.
            if len(writes) > 1:
                log.warning("tracker.batch_split", events=len(writes))
            ids = [await self._commit_alone(write) for write in writes]
        for (write, after), call_id in zip(batch.writes, ids, strict=True):
            if call_id is None:
                continue  # known_only and not a call of ours
            log.info("call." + write.kind, call_id=call_id, uniqueid=write.uniqueid, **write.data)
            if after is not None:
                after()

    async def _commit(self, writes: list[EventWrite]) -> list[str | None]:
        """One transaction; a database outage is waited out, round after round, never dropped."""
        while True:
            try:
                ids = await self.calls.record_events(writes)
            except StoreUnavailable as exc:
                log.error("tracker.writes_delayed", error=str(exc), events=len(writes), queued=self._queued)
                await asyncio.sleep(self.outage_pause)
                continue
            self.batches_written += 1
            return ids

    async def _commit_alone(self, write: EventWrite) -> str | None:
        try:
            return (await self._commit([write]))[0]
        except Exception:
            log.exception("tracker.event_failed", uniqueid=write.uniqueid, kind=write.kind)
            _log_lost(write, "write failed")
            return None

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event handled so far is written; False if ``timeout`` came first."""
        last = self._last
        if last is None or last.done():
            return True
        done, _ = await asyncio.wait({last}, timeout=timeout)
        return bool(done)

    async def close(self, timeout: float = 10.0) -> None:
        """Write what is buffered (bounded: the database may be down), then stop the writer.

        The composition root calls it when the AMI client stops, before the store closes. What could not
        be written is logged whole.
        """
        if await self.flush(timeout):
            return
        writer = self._writer
        left = [w for b in ([self._writing] if self._writing else []) + list(self._open) for w, _ in b.writes]
        self._open.clear()
        self._queued = 0
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        for write in left:
            _log_lost(write, "shutdown")


def _log_lost(write: EventWrite, reason: str) -> None:
    """An event the timeline will not get: the log keeps all of it, for a person to replay."""
    log.error(
        "tracker.event_lost",
        reason=reason,
        uniqueid=write.uniqueid,
        kind=write.kind,
        at=write.at.isoformat(),
        source=write.source,
        data=dict(write.data),
    )


__all__ = ["AfterWrite", "TimelineWriter"]
