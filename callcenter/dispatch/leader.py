"""The leader's half of dispatching: claim what is ``calling``, walk each agency's duty lines, resume.

A dispatch is *requested* on any node (the web API writes a ``calling`` row with ``leader_epoch``
NULL) and *placed* by the leader only: while this node leads, :class:`DispatchLeader` claims every
``calling`` row that no running term owns (``leader_epoch`` NULL, or a previous leader's), under its
fencing token (``store/leadership.py``), and walks the agency's lines from where the row's attempts
left off. It looks every ``poll`` seconds, and at once when :meth:`DispatchLeader.wake` is called
(the web API on this node, or a change signal from another node).

Taking over a previous leader's dispatch (docs/nodes.md, "Exactly once"): an attempt it left open
(no outcome) is looked up in Asterisk by its channel's Uniqueid ``dispatch-<attempt id>``
(``CoreShowChannels``). A line still ringing or answered is *adopted* — followed to its end, not
placed again; one that is gone is closed as ``error`` ("lost with the previous leader") by a
conditional update, and the walk goes on to the next attempt, once. An outcome the briefing recorded
meanwhile (on any node) wins over both.

When this node stops leading (or shuts down) it *relinquishes*: its walks stop without hanging up or
closing anything, so the next leader adopts the ringing lines as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.config import DispatchConfig
from callcenter.dispatch.agencies import Agency, Directory, line_kind
from callcenter.dispatch.attempts import NO_TWILIO, LineCalls, Result, reference
from callcenter.queue.ami import AmiClient, AmiError
from callcenter.store import Store
from callcenter.store.leadership import Deposed, Leadership, TermLoop, check_term
from callcenter.store.models import Dispatch, DispatchAttempt

log = structlog.get_logger("callcenter.dispatch")

#: Pause between attempts: a line that just failed (congestion, a phone rebooting) gets a breath.
RETRY_PAUSE = 1.0
#: Seconds between looks for dispatches to claim when nobody wakes the leader (the fallback of the
#: change signal): a dispatch requested on another node rings within about this long.
CLAIM_POLL = 1.0
#: The reason of an attempt a previous leader left open whose line Asterisk no longer has.
LOST = "lost with the previous leader"

Accept = Callable[..., Awaitable[Any]]
Fail = Callable[[int, int | None], Awaitable[None]]


class DispatchLeader:
    """Claims and walks dispatches while this node leads; relinquishes them when it stops."""

    def __init__(
        self,
        store: Store,
        ami: AmiClient,
        lines: LineCalls,
        directory: Directory,
        config: DispatchConfig,
        leadership: Leadership,
        *,
        accept: Accept,
        fail: Fail,
        poll: float = CLAIM_POLL,
    ) -> None:
        """``accept(dispatch_id, line=, via=, user_id=None, term=)`` and ``fail(dispatch_id, term)`` are
        the dispatcher's fenced writes (they publish to the consoles)."""
        self.store = store
        self.ami = ami
        self.lines = lines
        self.directory = directory
        self.config = config
        self.leadership = leadership
        self.poll = poll
        self._accept = accept
        self._fail = fail
        self._walks: dict[int, asyncio.Task[None]] = {}
        self._loop: TermLoop | None = None

    @property
    def term(self) -> int | None:
        """The term this node leads in now (None while it follows)."""
        return self._loop.term if self._loop is not None else None

    def start(self) -> None:
        self._loop = TermLoop(self.leadership, self._claim, "dispatch-leader", poll=self.poll, on_end=self._relinquish)

    async def close(self) -> None:
        if self._loop is not None:
            await self._loop.close()
            self._loop = None
        await self._relinquish()

    def wake(self) -> None:
        """Look for dispatches to claim now, and re-read the running attempts' rows."""
        if self._loop is not None:
            self._loop.wake()
        self.lines.wake()

    @property
    def walking(self) -> int:
        return len(self._walks)

    def stop_walk(self, dispatch_id: int) -> None:
        """Stop calling for a dispatch accepted here in the browser: its ringing line is hung up."""
        task = self._walks.get(dispatch_id)
        if task is not None:
            task.cancel()

    # -- the leader's loop -----------------------------------------------------------------------

    async def _relinquish(self) -> None:
        """Stop every walk and leave its line ringing, its rows open: the next leader adopts them."""
        walks = list(self._walks.values())
        if not walks:
            return
        self.lines.relinquish()
        for task in walks:
            task.cancel()
        for task in walks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        log.info("dispatch.relinquished", dispatches=len(walks))

    async def _claim(self, term: int | None) -> None:
        """Take every ``calling`` dispatch no running term owns, and walk it; and walk again one of this
        term whose walk ended without settling it (its last write failed in a database outage)."""

        async def op(session: AsyncSession) -> list[tuple[int, str, bool]]:
            await check_term(session, term)
            rows = await session.scalars(
                select(Dispatch)
                .where(
                    Dispatch.status == "calling",
                    or_(Dispatch.leader_epoch.is_(None), Dispatch.leader_epoch <= (term or 0)),
                )
                .order_by(Dispatch.id)
                .with_for_update()
            )
            claimed: list[tuple[int, str, bool]] = []
            for d in rows:
                if d.id in self._walks:
                    continue
                claimed.append((d.id, d.agency, d.leader_epoch is not None))
                d.leader_epoch = term
            return claimed

        for dispatch_id, code, taken_over in await self.store.transaction("dispatch_claim", op):
            agency = self.directory.agencies.get(code)
            log.info("dispatch.claimed", dispatch_id=dispatch_id, agency=code, term=term, taken_over=taken_over)
            self._walks[dispatch_id] = asyncio.create_task(
                self._walk(dispatch_id, agency, term), name=f"dispatch-{dispatch_id}"
            )

    # -- one dispatch ----------------------------------------------------------------------------

    async def _rows(self, dispatch_id: int) -> list[DispatchAttempt]:
        async def op(session: AsyncSession) -> list[DispatchAttempt]:
            return list(
                await session.scalars(
                    select(DispatchAttempt)
                    .where(DispatchAttempt.dispatch_id == dispatch_id)
                    .order_by(DispatchAttempt.id)
                )
            )

        return await self.store.transaction("dispatch_attempts", op)

    async def _walk(self, dispatch_id: int, agency: Agency | None, term: int | None) -> None:
        try:
            if agency is None:  # the directory no longer has it (changed between restarts)
                log.warning("dispatch.unknown_agency", dispatch_id=dispatch_id)
                await self._fail(dispatch_id, term)
                return
            for row in [r for r in await self._rows(dispatch_id) if r.outcome is None]:
                result = await self._resume(row, agency, term)
                if result.outcome == "accepted":
                    await self._accept(dispatch_id, line=row.line, via=row.via, term=term)
                    return
            rows = await self._rows(dispatch_id)
            accepted = next((r for r in rows if r.outcome == "accepted"), None)
            if accepted is not None:
                await self._accept(dispatch_id, line=accepted.line, via=accepted.via, term=term)
                return
            tried = Counter(r.line for r in rows)
            unusable = {r.line for r in rows if r.reason == NO_TWILIO}
            first = not rows
            for line in agency.lines:
                if line in unusable:
                    continue
                for _ in range(tried[line], self.config.attempts_per_line):
                    if not first:
                        await asyncio.sleep(RETRY_PAUSE)
                    first = False
                    result = await self.lines.place(dispatch_id, agency, line, term)
                    if result.outcome == "accepted":
                        await self._accept(dispatch_id, line=line, via=line_kind(line), term=term)
                        return
                    if result.outcome == "error" and result.reason == NO_TWILIO:
                        break  # no point retrying a number we cannot call at all
            await self._fail(dispatch_id, term)
        except Deposed:
            # A newer leader took over (this node was paused or cut off): it walks this dispatch now.
            log.warning("dispatch.deposed", dispatch_id=dispatch_id, term=term)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("dispatch.task_failed", dispatch_id=dispatch_id)
            with contextlib.suppress(Exception):
                await self._fail(dispatch_id, term)
        finally:
            self._walks.pop(dispatch_id, None)

    async def _resume(self, row: DispatchAttempt, agency: Agency, term: int | None) -> Result:
        """An attempt a previous term left open: adopt its line if Asterisk still has it, else close it."""
        if row.via != "pbx":
            # A Twilio call reports through its status callback to any node: wait for that.
            return await self.lines.adopt(row, agency, term, None)
        channels = await self._channels(agency)
        channel = channels.get(reference(row.id)) if channels is not None else None
        if channel is not None:
            return await self.lines.adopt(row, agency, term, channel)
        log.warning("dispatch.attempt_lost", dispatch_id=row.dispatch_id, attempt_id=row.id, asked=channels is not None)
        return await self.lines.close_lost(row, agency, term, Result("error", reason=LOST))

    async def _channels(self, agency: Agency) -> dict[str, Any] | None:
        """Asterisk's channels by Uniqueid; retried while AMI cannot answer, for at most one attempt's
        time (then None: the line is taken as gone)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + agency.answer_timeout + self.config.accept_timeout
        while True:
            try:
                return {str(c.get("Uniqueid", "")): c for c in await self.ami.channels()}
            except AmiError as exc:
                if loop.time() >= deadline:
                    log.warning("dispatch.channels_unknown", error=str(exc))
                    return None
                await asyncio.sleep(self.poll)
