"""Calling agencies: a dispatch per agency, its duty lines walked by the leader until an officer accepts.

Any node takes a dispatch request (:meth:`Dispatcher.dispatch` writes ``calling`` rows); the leader
places the calls (``dispatch/leader.py``: claim, walk, take over a dead leader's lines). Each line is
tried by an attempt (``dispatch/attempts.py``: its row, the call, how it ended); the officer's key is
recorded by whichever node hears it — :meth:`Dispatcher.briefing_result` (the ``briefing`` AGI route)
or :meth:`Dispatcher.remote_result` (the Twilio line) — with a conditional update, so it counts once.

Every state change is published to the live hub: the call-taker sees "calling Damkar (backup line)"
without polling.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from panoramisk.message import Message
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.config import DispatchConfig
from callcenter.dispatch.agencies import Directory
from callcenter.dispatch.attempts import OUTCOMES, LineCalls, RemoteLine, Result
from callcenter.dispatch.leader import CLAIM_POLL, DispatchLeader
from callcenter.dispatch.prompts import GENERIC, INTRO, MENU, THANKS, PromptCache, PromptFile, briefing_text
from callcenter.queue.ami import AmiClient
from callcenter.store import Store, utcnow
from callcenter.store.dispatches import ACTIVE, SIGNAL_TOPIC, WEB_ACCEPTABLE, dispatch_json
from callcenter.store.leadership import Leadership, check_term
from callcenter.store.models import Call, Dispatch, DispatchAttempt, Incident
from callcenter.store.roles import CENTRE_ROLES, Publish

log = structlog.get_logger("callcenter.dispatch")

#: Briefing prompts kept per incident on this node (the newest ones; each is a file in the prompt cache).
BRIEFINGS_KEPT = 64


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


def _log_prompt_failure(future: asyncio.Future[PromptFile]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("dispatch.prompt_failed", error=repr(future.exception()))


class Dispatcher:
    """Dispatch requests, briefings and acceptances on every node; the calls on the leader."""

    def __init__(
        self,
        store: Store,
        ami: AmiClient,
        directory: Directory,
        config: DispatchConfig,
        hub_publish: Publish,
        twilio: RemoteLine | None = None,
        *,
        leadership: Leadership,
        prompts: PromptCache | None = None,
        poll: float = CLAIM_POLL,
    ) -> None:
        self.store = store
        self.ami = ami
        self.directory = directory
        self.config = config
        self.publish = hub_publish
        self.twilio = twilio
        self.prompts = prompts or PromptCache(Path(config.prompt_dir), config.prompt_dir_asterisk)
        #: The attempts running now (``dispatch/attempts.py``): places the calls, matches the reports.
        self.lines = LineCalls(store, ami, config, twilio, self._publish, poll=poll)
        #: The leader's half: claims ``calling`` rows, walks the lines, takes over (``dispatch/leader.py``).
        self.leader = DispatchLeader(
            store, ami, self.lines, directory, config, leadership, accept=self._accept, fail=self._fail, poll=poll
        )
        self._briefings: OrderedDict[int, asyncio.Future[PromptFile]] = OrderedDict()
        self._unsignal: Callable[[], None] = lambda: None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Warm the fixed prompts so the first officer does not wait for them, and follow leadership:
        while this node leads it places the calls, and takes over what a previous leader left ringing
        (nothing is marked failed at a start: the rows may be another live node's)."""
        for text in (MENU, THANKS, f"{INTRO} {GENERIC}"):
            self._spawn_prompt(text)
        self.leader.start()
        # A dispatch requested, or a verdict recorded, on another node: look now, not at the next poll.
        self._unsignal = self.store.signals.subscribe(SIGNAL_TOPIC, lambda _key: self.wake())

    async def close(self) -> None:
        """Stop; the lines this node was calling keep ringing for the next leader to adopt."""
        self._unsignal()
        await self.leader.close()

    def wake(self) -> None:
        """Something changed on another node (a dispatch requested, a key recorded): look now rather than
        at the next poll. The change signal calls this; without it the poll finds the same."""
        self.leader.wake()

    def _spawn_prompt(self, text: str) -> asyncio.Future[PromptFile]:
        """Generate ``text`` in the background now; the briefing route awaits the future later."""
        future = asyncio.ensure_future(self.prompts.ensure(text))
        future.add_done_callback(_log_prompt_failure)
        return future

    def _briefing_prompt(self, incident: Incident) -> asyncio.Future[PromptFile]:
        """The incident's briefing, generated once per incident on this node (every agency hears it)."""
        future = self._briefings.get(incident.id)
        if future is None:
            future = self._briefings[incident.id] = self._spawn_prompt(briefing_text(incident))
            while len(self._briefings) > BRIEFINGS_KEPT:
                self._briefings.popitem(last=False)
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
        # One briefing per incident: every agency hears the same text, generated once (per node).
        self._briefing_prompt(incident)
        for d, new in rows:
            if not new:
                continue
            self._publish_row(d, [])
            log.info("dispatch.started", dispatch_id=d.id, incident_id=incident_id, agency=d.agency, user_id=user_id)
        # The leader claims the new rows: at once when it is this node, else at its next look (or
        # sooner, when the change signal wakes it).
        self.wake()
        return [d for d, _ in rows]

    async def accept_from_web(self, dispatch_id: int, *, user_id: int | None) -> Dispatch | None:
        """The officer accepts on the agency console (the phone was missed): stops the calling (here at
        once; on the leader, when it next reads the row).

        Returns the dispatch, or None when it is unknown or no longer waiting for acceptance.
        """
        accepted = await self._accept(dispatch_id, line="web", via="web", user_id=user_id)
        if accepted is not None:
            self.leader.stop_walk(dispatch_id)
            self.wake()
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

    # -- reports from the briefing route, the Twilio line and AMI (on any node) ------------------

    async def briefing(self, attempt_id: int, dispatch_id: int) -> Briefing | None:
        """What the briefing route plays for this attempt; None when the attempt is unknown, over, or
        its dispatch no longer calling (a stale or forged call into the agency context gets the
        dialplan's fallback). Served by any node: the attempt is read from the store."""

        async def op(session: AsyncSession) -> Incident | None:
            row = await session.get(DispatchAttempt, attempt_id)
            if row is None or row.dispatch_id != dispatch_id or row.outcome is not None:
                return None
            d = await session.get(Dispatch, dispatch_id)
            if d is None or d.status != "calling":
                return None
            return await session.get(Incident, d.incident_id)

        incident = await self.store.transaction("dispatch_briefing", op)
        if incident is None:
            return None
        attempt = self.lines.running(attempt_id)
        if attempt is not None:
            attempt.answered = True
        message: PromptFile | None = None
        try:
            message = await asyncio.wait_for(asyncio.shield(self._briefing_prompt(incident)), timeout=10)
        except Exception as exc:
            log.warning("dispatch.briefing_unavailable", dispatch_id=dispatch_id, error=repr(exc))
        if message is None:
            message = await self.prompts.ensure(f"{INTRO} {GENERIC}")
        menu = await self.prompts.ensure(MENU)
        thanks = await self.prompts.ensure(THANKS)
        return Briefing(dispatch_id, attempt_id, message, menu, thanks, self.config.accept_timeout)

    async def briefing_result(self, attempt_id: int, outcome: str) -> bool:
        """The officer pressed 1 (``accepted``) or nothing (``no_key``). Recorded once, whichever node
        serves the briefing: False when the attempt was already over (or, for a 1, when the dispatch
        was accepted otherwise first)."""
        return await self._record(attempt_id, outcome, "briefing", late=False)

    async def remote_result(self, attempt_id: int, outcome: str, reason: str | None = None) -> bool:
        """The Twilio line's verdict on an E.164 attempt (``accepted`` after Gather digit 1, or
        ``no_answer``/``busy``/``failed``/``no_key`` from the status callback), on any node.

        A key 1 pressed after the attempt was over (its ring/accept window ran out, the leader already
        tries the next line, or every line failed) is still stored as the acceptance, as the officer's
        accepting on the web would be: the calling stops and the incident's service level is met. False
        when nothing was recorded (another officer accepted first, or the attempt is unknown): the
        officer then hears that, not "accepted"."""
        if outcome not in OUTCOMES:
            outcome = "error"
        return await self._record(attempt_id, outcome, reason, late=outcome == "accepted")

    async def _record(self, attempt_id: int, outcome: str, reason: str | None, *, late: bool) -> bool:
        """First verdict wins: the attempt's outcome if still open, and for ``accepted`` the dispatch's
        acceptance in the same transaction; then the leader (here, or woken) learns of it."""
        now = utcnow()
        acceptable = sorted(WEB_ACCEPTABLE) if late else ["calling"]

        async def op(session: AsyncSession) -> tuple[bool, int | None]:
            row = await session.get(DispatchAttempt, attempt_id, with_for_update=True)
            if row is None:
                return False, None
            recorded = row.outcome is None
            if recorded:
                row.outcome, row.reason, row.ended_at = outcome, (reason or "")[:64] or None, now
            if outcome != "accepted" or not (recorded or late):
                return recorded, row.dispatch_id
            return await self._accept_in(session, row.dispatch_id, row.line, row.via, acceptable, now), row.dispatch_id

        recorded, dispatch_id = await self.store.transaction("dispatch_attempt_result", op)
        self.lines.resolve(attempt_id, Result(outcome, reason=reason))
        self.wake()
        if recorded and dispatch_id is not None:
            if outcome == "accepted":
                log.info("dispatch.accepted", dispatch_id=dispatch_id, attempt_id=attempt_id, via=reason or "phone")
                if late:  # the walk may be ringing another line by now (Twilio lines only are late)
                    self.leader.stop_walk(dispatch_id)
            await self._publish(dispatch_id)
        return recorded

    async def on_ami_event(self, message: Message) -> None:
        """OriginateResponse and Hangup of our ``dispatch-<id>`` channels (``LineCalls.on_ami_event``)."""
        await self.lines.on_ami_event(message)

    # -- acceptance and failure ------------------------------------------------------------------

    @staticmethod
    async def _accept_in(
        session: AsyncSession, dispatch_id: int, line: str, via: str, acceptable: list[str], now: datetime
    ) -> bool:
        """Accept in ``session`` if the dispatch is in an ``acceptable`` status; meets the incident's SLA."""
        result = await session.execute(
            update(Dispatch)
            .where(Dispatch.id == dispatch_id, Dispatch.status.in_(acceptable))
            .values(status="accepted", accepted_at=now, accepted_line=line, accepted_via=via, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if not getattr(result, "rowcount", 0):
            return False
        incident_id = await session.scalar(select(Dispatch.incident_id).where(Dispatch.id == dispatch_id))
        await session.execute(
            update(Incident)
            .where(Incident.id == incident_id, Incident.sla_met_at.is_(None))
            .values(sla_met_at=now)
            .execution_options(synchronize_session=False)
        )
        return True

    async def _accept(
        self, dispatch_id: int, *, line: str, via: str, user_id: int | None = None, term: int | None = None
    ) -> Dispatch | None:
        """First acceptance wins (conditional update on ``calling``); marks the incident's SLA met.
        ``term``: the leader's walk accepting, refused (``Deposed``) once a newer leader took over."""
        now = utcnow()

        async def op(session: AsyncSession) -> Dispatch | None:
            if term is not None:
                await check_term(session, term)
            if not await self._accept_in(session, dispatch_id, line, via, ["calling"], now):
                return None
            return await session.get(Dispatch, dispatch_id, populate_existing=True)

        d = await self.store.transaction("dispatch_accept", op)
        if d is not None:
            log.info("dispatch.accepted", dispatch_id=dispatch_id, agency=d.agency, line=line, via=via, user_id=user_id)
            await self._publish(dispatch_id)
        return d

    async def _fail(self, dispatch_id: int, term: int | None = None) -> None:
        """Every line tried, none accepted: ``failed`` (conditional on ``calling``; fenced by ``term``)."""
        now = utcnow()

        async def op(session: AsyncSession) -> bool:
            if term is not None:
                await check_term(session, term)
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
        """Dispatches whose lines this node walks now (health output, tests)."""
        return self.leader.walking


__all__ = [
    "OUTCOMES",
    "Briefing",
    "Dispatcher",
    "RemoteLine",
    "Result",
    "UnknownAgency",
]
