"""Calling agencies: one task per dispatched agency, walking its duty lines until an officer accepts.

Each line is tried by an attempt (``dispatch/attempts.py``: its row, the call, how it ended); the
officer's key arrives through :meth:`Dispatcher.on_briefing_result` (the ``briefing`` AGI route) or
:meth:`Dispatcher.on_remote_result` (the Twilio line).

Every state change is published to the live hub: the call-taker sees "calling Damkar (backup line)"
without polling.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from panoramisk.message import Message
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.config import DispatchConfig
from callcenter.dispatch.agencies import Agency, Directory, line_kind
from callcenter.dispatch.attempts import OUTCOMES, LineCalls, RemoteLine, Result
from callcenter.dispatch.prompts import GENERIC, INTRO, MENU, THANKS, PromptCache, PromptFile, briefing_text
from callcenter.queue.ami import AmiClient
from callcenter.store import Store, utcnow
from callcenter.store.dispatches import ACTIVE, WEB_ACCEPTABLE, dispatch_json
from callcenter.store.models import Call, Dispatch, DispatchAttempt, Incident
from callcenter.store.roles import CENTRE_ROLES, Publish

log = structlog.get_logger("callcenter.dispatch")

#: Pause between attempts: a line that just failed (congestion, a phone rebooting) gets a breath.
RETRY_PAUSE = 1.0


class UnknownAgency(ValueError):
    """A dispatch named an agency that is not in the directory (the API answers 422)."""


@dataclass(frozen=True)
class Briefing:
    """What the briefing route plays: the incident, the menu, the thanks; and how long to wait for a key."""

    dispatch_id: int
    attempt_id: int
    message: PromptFile
    menu: PromptFile
    thanks: PromptFile
    accept_timeout: int


@dataclass
class _Dispatching:
    task: asyncio.Task[None] | None = None
    briefing: asyncio.Future[PromptFile] | None = None


def _log_prompt_failure(future: asyncio.Future[PromptFile]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("dispatch.prompt_failed", error=repr(future.exception()))


class Dispatcher:
    """Runs dispatches; one instance per app (its in-memory attempt table is the AMI event matcher)."""

    def __init__(
        self,
        store: Store,
        ami: AmiClient,
        directory: Directory,
        config: DispatchConfig,
        hub_publish: Publish,
        twilio: RemoteLine | None = None,
        *,
        prompts: PromptCache | None = None,
    ) -> None:
        self.store = store
        self.ami = ami
        self.directory = directory
        self.config = config
        self.publish = hub_publish
        self.twilio = twilio
        self.prompts = prompts or PromptCache(Path(config.prompt_dir), config.prompt_dir_asterisk)
        #: The attempts running now (``dispatch/attempts.py``): places the calls, matches the reports.
        self.lines = LineCalls(store, ami, config, twilio, self._publish)
        self._running: dict[int, _Dispatching] = {}
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Close dispatches a previous run left in ``calling`` (their tasks died with it), and warm the
        fixed prompts so the first officer does not wait for them."""

        async def op(session: AsyncSession) -> list[int]:
            stale = list(await session.scalars(select(Dispatch).where(Dispatch.status == "calling")))
            now = utcnow()
            for d in stale:
                d.status, d.updated_at = "failed", now
                await session.execute(
                    update(DispatchAttempt)
                    .where(DispatchAttempt.dispatch_id == d.id, DispatchAttempt.outcome.is_(None))
                    .values(outcome="error", reason="app restarted", ended_at=now)
                )
            return [d.id for d in stale]

        stale = await self.store.transaction("dispatch_recover", op)
        if stale:
            log.warning("dispatch.recovered_stale", dispatch_ids=stale)
        for text in (MENU, THANKS, f"{INTRO} {GENERIC}"):
            self._spawn_prompt(text)

    async def close(self) -> None:
        self._closing = True
        tasks = [r.task for r in self._running.values() if r.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _spawn_prompt(self, text: str) -> asyncio.Future[PromptFile]:
        """Generate ``text`` in the background now; the briefing route awaits the future later."""
        future = asyncio.ensure_future(self.prompts.ensure(text))
        future.add_done_callback(_log_prompt_failure)
        return future

    # -- the API used by the web endpoints -------------------------------------------------------

    async def dispatch(self, incident_id: int, agencies: Sequence[str], *, user_id: int | None) -> list[Dispatch]:
        """Call ``agencies`` for the incident, all in parallel; returns one Dispatch per agency at once.

        An agency already being called (or that accepted) for this incident is not called again: its
        existing row is returned (a double click must not ring the duty officer twice). Raises
        UnknownAgency before touching anything, LookupError for an unknown incident.
        """
        codes = list(dict.fromkeys(agencies))
        for code in codes:
            if code not in self.directory:
                raise UnknownAgency(code)
        if not codes:
            return []
        now = utcnow()

        async def op(session: AsyncSession) -> tuple[Incident, list[tuple[Dispatch, bool]]]:
            incident = await session.get(Incident, incident_id, with_for_update=True)
            if incident is None:
                raise LookupError(f"no incident {incident_id}")
            if incident.sla_due_at is None:
                arrived = incident.created_at
                if incident.call_id is not None:
                    call = await session.get(Call, incident.call_id)
                    arrived = call.arrived_at if call is not None else arrived
                incident.sla_due_at = arrived + timedelta(seconds=self.directory.sla_seconds(incident.category))
            existing = {
                d.agency: d
                for d in await session.scalars(
                    select(Dispatch).where(Dispatch.incident_id == incident_id, Dispatch.status.in_(ACTIVE))
                )
            }
            rows: list[tuple[Dispatch, bool]] = []
            for code in codes:
                if code in existing:
                    rows.append((existing[code], False))
                    continue
                d = Dispatch(
                    incident_id=incident_id,
                    agency=code,
                    status="calling",
                    created_by=user_id,
                    created_at=now,
                    updated_at=now,
                )
                session.add(d)
                rows.append((d, True))
            await session.flush()
            return incident, rows

        incident, rows = await self.store.transaction("dispatch_create", op)
        # One briefing per incident: every agency hears the same text, generated once.
        briefing = self._spawn_prompt(briefing_text(incident))
        for d, new in rows:
            if not new:
                continue
            state = _Dispatching(briefing=briefing)
            self._running[d.id] = state
            state.task = asyncio.create_task(self._run(d.id, self.directory.get(d.agency)), name=f"dispatch-{d.id}")
            self._publish_row(d, [])
            log.info("dispatch.started", dispatch_id=d.id, incident_id=incident_id, agency=d.agency, user_id=user_id)
        return [d for d, _ in rows]

    async def accept_from_web(self, dispatch_id: int, *, user_id: int | None) -> Dispatch | None:
        """The officer accepts on the agency console (the phone was missed): stops the calling.

        Returns the dispatch, or None when it is unknown or no longer waiting for acceptance.
        """
        accepted = await self._accept(dispatch_id, line="web", via="web", user_id=user_id)
        state = self._running.get(dispatch_id)
        if accepted is not None and state is not None and state.task is not None:
            state.task.cancel()
        return accepted

    async def get(self, dispatch_id: int) -> dict[str, Any] | None:
        """The dispatch with its attempts as JSON (what the live hub sends)."""

        async def op(session: AsyncSession) -> tuple[Dispatch, list[DispatchAttempt]] | None:
            d = await session.get(Dispatch, dispatch_id)
            if d is None:
                return None
            attempts = await session.scalars(
                select(DispatchAttempt).where(DispatchAttempt.dispatch_id == dispatch_id).order_by(DispatchAttempt.id)
            )
            return d, list(attempts)

        found = await self.store.transaction("dispatch_get", op)
        if found is None:
            return None
        d, attempts = found
        return self._json(d, attempts)

    # -- reports from the briefing route, the Twilio line and AMI --------------------------------

    async def briefing(self, attempt_id: int, dispatch_id: int) -> Briefing | None:
        """What the briefing route plays for this attempt; None when the attempt is not ours or over
        (a stale or forged call into the agency context gets the dialplan's fallback)."""
        attempt = self.lines.running(attempt_id)
        if attempt is None or attempt.dispatch_id != dispatch_id or attempt.future.done():
            return None
        attempt.answered = True
        state = self._running.get(dispatch_id)
        message: PromptFile | None = None
        if state is not None and state.briefing is not None:
            try:
                message = await asyncio.wait_for(asyncio.shield(state.briefing), timeout=10)
            except Exception as exc:
                log.warning("dispatch.briefing_unavailable", dispatch_id=dispatch_id, error=repr(exc))
        if message is None:
            message = await self.prompts.ensure(f"{INTRO} {GENERIC}")
        menu = await self.prompts.ensure(MENU)
        thanks = await self.prompts.ensure(THANKS)
        return Briefing(dispatch_id, attempt_id, message, menu, thanks, self.config.accept_timeout)

    def on_briefing_result(self, attempt_id: int, outcome: str) -> bool:
        """The officer pressed 1 (``accepted``) or nothing (``no_key``); False if the attempt is over."""
        return self.lines.resolve(attempt_id, Result(outcome, reason="briefing"))

    def on_remote_result(self, attempt_id: int, outcome: str, reason: str | None = None) -> bool:
        """The Twilio line's verdict on an E.164 attempt (``accepted`` after Gather digit 1, or
        ``no_answer``/``busy``/``failed``/``no_key`` from the status callback); False if already over."""
        if outcome not in OUTCOMES:
            outcome = "error"
        return self.lines.resolve(attempt_id, Result(outcome, reason=reason))

    async def remote_result(self, attempt_id: int, outcome: str, reason: str | None = None) -> bool:
        """The Twilio line's answer: ``on_remote_result``, and for a key 1 pressed after the attempt was
        over (its ring/accept window ran out, the dispatcher already tries the next line, or every line
        failed) the acceptance is still stored, as the officer's accepting on the web would be: the
        calling stops and the incident's service level is met. False when nothing was recorded (another
        officer accepted first, or the attempt is unknown): the officer then hears that, not "accepted"."""
        if self.on_remote_result(attempt_id, outcome, reason):
            return True
        if outcome != "accepted":
            return False

        async def op(session: AsyncSession) -> DispatchAttempt | None:
            return await session.get(DispatchAttempt, attempt_id)

        row = await self.store.transaction("dispatch_attempt_get", op)
        if row is None:
            return False
        accepted = await self._accept(row.dispatch_id, line=row.line, via=row.via, user_id=None, late=True)
        if accepted is None:
            return False
        state = self._running.get(row.dispatch_id)
        if state is not None and state.task is not None:
            state.task.cancel()
        log.info("dispatch.accepted_late", dispatch_id=row.dispatch_id, attempt_id=attempt_id)
        return True

    async def on_ami_event(self, message: Message) -> None:
        """OriginateResponse and Hangup of our ``dispatch-<id>`` channels (``LineCalls.on_ami_event``)."""
        await self.lines.on_ami_event(message)

    # -- the per-agency task ---------------------------------------------------------------------

    async def _run(self, dispatch_id: int, agency: Agency) -> None:
        try:
            for line in agency.lines:
                for n in range(self.config.attempts_per_line):
                    if n or line != agency.lines[0]:
                        await asyncio.sleep(RETRY_PAUSE)
                    result = await self.lines.place(dispatch_id, agency, line)
                    if result.outcome == "accepted":
                        await self._accept(dispatch_id, line=line, via=line_kind(line), user_id=None)
                        return
                    if result.outcome == "error" and result.reason == "no twilio line":
                        break  # no point retrying a number we cannot call at all
            await self._fail(dispatch_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("dispatch.task_failed", dispatch_id=dispatch_id)
            await self._fail(dispatch_id)
        finally:
            self._running.pop(dispatch_id, None)

    async def _accept(
        self, dispatch_id: int, *, line: str, via: str, user_id: int | None, late: bool = False
    ) -> Dispatch | None:
        """First acceptance wins (conditional update on ``calling``; ``late``: also ``failed``, like a
        web acceptance after every line failed); marks the incident's SLA met."""
        now = utcnow()
        acceptable = sorted(WEB_ACCEPTABLE) if late else ["calling"]

        async def op(session: AsyncSession) -> Dispatch | None:
            result = await session.execute(
                update(Dispatch)
                .where(Dispatch.id == dispatch_id, Dispatch.status.in_(acceptable))
                .values(status="accepted", accepted_at=now, accepted_line=line, accepted_via=via, updated_at=now)
            )
            if not getattr(result, "rowcount", 0):
                return None
            d = await session.get(Dispatch, dispatch_id)
            if d is None:
                return None
            await session.refresh(d)
            await session.execute(
                update(Incident)
                .where(Incident.id == d.incident_id, Incident.sla_met_at.is_(None))
                .values(sla_met_at=now)
            )
            return d

        d = await self.store.transaction("dispatch_accept", op)
        if d is not None:
            log.info("dispatch.accepted", dispatch_id=dispatch_id, agency=d.agency, line=line, via=via, user_id=user_id)
            await self._publish(dispatch_id)
        return d

    async def _fail(self, dispatch_id: int) -> None:
        now = utcnow()

        async def op(session: AsyncSession) -> bool:
            result = await session.execute(
                update(Dispatch)
                .where(Dispatch.id == dispatch_id, Dispatch.status == "calling")
                .values(status="failed", updated_at=now)
            )
            return bool(getattr(result, "rowcount", 0))

        if await self.store.transaction("dispatch_fail", op):
            log.warning("dispatch.failed", dispatch_id=dispatch_id)
            await self._publish(dispatch_id)

    # -- live hub --------------------------------------------------------------------------------

    def _agency_name(self, code: str) -> str | None:
        agency = self.directory.agencies.get(code)
        return agency.name if agency is not None else None

    def _json(self, d: Dispatch, attempts: Sequence[DispatchAttempt]) -> dict[str, Any]:
        """The store's dispatch serialiser, plus the agency's display name (from the directory)."""
        return {**dispatch_json(d, attempts), "agency_name": self._agency_name(d.agency)}

    def _publish_row(self, d: Dispatch, attempts: Sequence[DispatchAttempt]) -> None:
        self._send(self._json(d, attempts))

    def _send(self, payload: Mapping[str, Any]) -> None:
        try:
            message = {"type": "dispatch", "dispatch": dict(payload)}
            self.publish(message, roles=CENTRE_ROLES, agency=str(payload["agency"]))
        except Exception:
            log.exception("dispatch.publish_failed")

    async def _publish(self, dispatch_id: int) -> None:
        try:
            payload = await self.get(dispatch_id)
        except Exception as exc:  # the live view misses one update; the record is intact
            log.warning("dispatch.publish_read_failed", dispatch_id=dispatch_id, error=str(exc))
            return
        if payload is not None:
            self._send(payload)

    @property
    def active(self) -> int:
        """Dispatches whose task still runs (health output, tests)."""
        return len(self._running)


__all__ = [
    "OUTCOMES",
    "Briefing",
    "Dispatcher",
    "RemoteLine",
    "Result",
    "UnknownAgency",
]
