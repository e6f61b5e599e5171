"""Calling one duty line once: an attempt of a dispatch, from its row to how it ended.

Each attempt is one row in ``dispatch_attempts`` written before the call starts and closed with how it
ended, so that "Damkar was not reached" can always be answered with which line rang, when, and why it
failed. A SIP line is called with an asynchronous AMI ``Originate`` (``AmiClient.originate``): Asterisk
answers the request at once and reports the outcome later as an ``OriginateResponse`` carrying our
ActionID; the channel itself carries ``ChannelId = dispatch-<attempt id>`` as its Uniqueid, so its
``Hangup`` event is matched the same way, and a new leader finds it in ``CoreShowChannels``. An
answered call runs the ``briefing`` AGI route (on whichever node Asterisk reaches), which records the
officer's key in the attempt's row; E.164 lines go through the Twilio line, which reports the same way.
The dispatch leader (``dispatch/leader.py``) decides which line to try next.

Only the leader places and closes attempts, and each of those writes checks its term
(``store/leadership.py``, ``check_term``): a deposed leader's attempt is neither started nor closed.
While it waits, the leader re-reads the row every ``poll`` seconds (or at once on :meth:`LineCalls.wake`):
an outcome recorded on another node, or a dispatch accepted there in the browser, ends the wait. When
the leader loses its term it *relinquishes* its attempts: no hang-up, no closing, the line keeps
ringing for the next leader to adopt (:meth:`LineCalls.adopt`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import structlog
from panoramisk.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.config import DispatchConfig
from callcenter.dispatch.agencies import Agency, line_kind
from callcenter.dispatch.prompts import briefing_text
from callcenter.queue.ami import AmiClient, AmiError, channel_up, match_reference, originate_outcome
from callcenter.store import Store, utcnow
from callcenter.store.leadership import Deposed, check_term
from callcenter.store.models import Dispatch, DispatchAttempt, Incident

log = structlog.get_logger("callcenter.dispatch")

#: Attempt outcomes (``dispatch_attempts.outcome``).
OUTCOMES = ("accepted", "no_answer", "busy", "failed", "no_key", "declined", "error")
#: Q.850 causes of a channel that ended before it was answered.
CAUSE_OUTCOME = {17: "busy", 18: "no_answer", 19: "no_answer", 21: "declined"}
#: Beyond ring time and the accept window: the briefing itself, plus slack for a slow AMI.
ATTEMPT_SLACK = 90.0
#: Seconds between re-reads of a running attempt's row (an outcome recorded on another node).
POLL = 1.0
#: The reason of an attempt on an E.164 line when no Twilio line is configured: that line is skipped.
NO_TWILIO = "no twilio line"


@runtime_checkable
class RemoteLine(Protocol):
    """The Twilio line (``callcenter/dispatch/twilio_line.py``'s ``TwilioLine``): ``call`` rings an E.164
    number with the briefing and returns the call SID; the outcome arrives later through
    ``Dispatcher.remote_result`` (on any node). ``sms`` texts the summary alongside."""

    async def call(self, attempt_id: int, to: str, briefing: str, *, timeout: int, gather_timeout: int = 0) -> str: ...

    async def sms(self, to: str, body: str) -> str: ...


@dataclass(frozen=True)
class Result:
    outcome: str
    reason: str | None = None
    hangup_cause: int | None = None


@dataclass
class Attempt:
    """One call to one duty line, while it runs: what AMI events and the briefing route update."""

    id: int
    dispatch_id: int
    agency: str
    line: str
    future: asyncio.Future[Result]
    #: The leader term following it: every write about it checks that term still leads.
    term: int | None = None
    answered: bool = False
    channel: str | None = None
    hangup_cause: int | None = None
    #: Set to re-read the row now (``LineCalls.wake``).
    poke: asyncio.Event = field(default_factory=asyncio.Event)
    #: Given up by a leader that stops leading: cancelled, it is left ringing and open for the next one.
    relinquished: bool = False


def _int(value: Any) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def reference(attempt_id: int) -> str:
    """The ActionID and ChannelId (so the Uniqueid) of an attempt's Originate: how every node finds it."""
    return f"dispatch-{attempt_id}"


def attempt_limit(agency: Agency, config: DispatchConfig) -> float:
    """How long one attempt may take before it is closed as ``error``: ring, accept window, slack."""
    return agency.answer_timeout + config.accept_timeout + ATTEMPT_SLACK


class LineCalls:
    """The attempts running now, by id: places each call and matches every report to its attempt."""

    def __init__(
        self,
        store: Store,
        ami: AmiClient,
        config: DispatchConfig,
        twilio: RemoteLine | None,
        on_change: Callable[[int], Awaitable[None]],
        *,
        poll: float = POLL,
    ) -> None:
        """``on_change(dispatch_id)`` runs whenever an attempt of that dispatch starts or ends."""
        self.store = store
        self.ami = ami
        self.config = config
        self.twilio = twilio
        self.poll = poll
        self._on_change = on_change
        self._attempts: dict[int, Attempt] = {}

    def running(self, attempt_id: int) -> Attempt | None:
        return self._attempts.get(attempt_id)

    def resolve(self, attempt_id: int, result: Result) -> bool:
        attempt = self._attempts.get(attempt_id)
        if attempt is None or attempt.future.done():
            return False
        attempt.future.set_result(result)
        return True

    def relinquish(self) -> None:
        """The leader stops (lost its term, or shuts down): the attempts it cancels next are left as they
        are, ringing and open, for the next leader to adopt."""
        for attempt in self._attempts.values():
            attempt.relinquished = True

    def wake(self) -> None:
        """Re-read every running attempt's row now (another node recorded something)."""
        for attempt in self._attempts.values():
            attempt.poke.set()

    async def on_ami_event(self, message: Message) -> None:
        """OriginateResponse (by ActionID) and Hangup (by Uniqueid) of our ``dispatch-<id>`` channels."""
        name = str(message.get("Event", ""))
        if name == "OriginateResponse":
            attempt = self._match(message.get("ActionID"))
            if attempt is None:
                return
            attempt.channel = str(message.get("Channel") or "") or attempt.channel
            if message.get("Response") == "Success":
                attempt.answered = True
                log.info("dispatch.answered", attempt_id=attempt.id, line=attempt.line)
                return
            reason = str(message.get("Reason", ""))
            outcome = originate_outcome(reason)
            self.resolve(
                attempt.id, Result(outcome, reason=f"originate reason {reason}", hangup_cause=attempt.hangup_cause)
            )
        elif name == "Hangup":
            attempt = self._match(message.get("Uniqueid"))
            if attempt is None:
                return
            attempt.hangup_cause = _int(message.get("Cause"))
            if attempt.answered:
                # Hung up after answering without a key reported: the officer put the phone down, or
                # the briefing route was unreachable and the dialplan played its fallback.
                self.resolve(attempt.id, Result("no_key", reason="hangup", hangup_cause=attempt.hangup_cause))
            # Before answer the OriginateResponse follows with the authoritative reason.

    def _match(self, ref: Any) -> Attempt | None:
        attempt_id = match_reference(ref, "dispatch")
        return self._attempts.get(attempt_id) if attempt_id is not None else None

    def _register(self, attempt_id: int, dispatch_id: int, agency: Agency, line: str, term: int | None) -> Attempt:
        future = asyncio.get_running_loop().create_future()
        attempt = Attempt(attempt_id, dispatch_id, agency.code, line, future, term=term)
        self._attempts[attempt_id] = attempt
        return attempt

    async def place(self, dispatch_id: int, agency: Agency, line: str, term: int | None) -> Result:
        """Call ``line`` of ``agency`` once for the dispatch and wait for how it ended (bounded).

        Raises ``Deposed`` (before anything is called) when ``term`` no longer leads.
        """
        via = line_kind(line)

        async def op(session: AsyncSession) -> int:
            await check_term(session, term)
            a = DispatchAttempt(dispatch_id=dispatch_id, line=line, via=via, started_at=utcnow(), detail={})
            session.add(a)
            await session.flush()
            a.reference = reference(a.id)
            return a.id

        attempt_id = await self.store.transaction("dispatch_attempt", op)
        attempt = self._register(attempt_id, dispatch_id, agency, line, term)
        await self._on_change(dispatch_id)
        log.info("dispatch.attempt", dispatch_id=dispatch_id, attempt_id=attempt_id, agency=agency.code, line=line)

        async def start() -> None:
            if via == "pbx":
                await self._originate(attempt, agency)
            else:
                await self._remote(attempt, agency)

        return await self._run(attempt, start, attempt_limit(agency, self.config))

    async def adopt(
        self, row: DispatchAttempt, agency: Agency, term: int | None, channel: Mapping[str, Any] | None
    ) -> Result:
        """Follow an attempt a previous leader started and left open (``row.outcome`` is None).

        ``channel``: its ``CoreShowChannel`` entry when Asterisk still has the line (ringing or
        answered: followed, not placed again); None for a Twilio attempt (its report still comes).
        """
        attempt = self._register(row.id, row.dispatch_id, agency, row.line, term)
        if channel is not None:
            attempt.channel = str(channel.get("Channel") or "") or None
            attempt.answered = channel_up(channel)
        elapsed = (utcnow() - row.started_at).total_seconds()
        limit = max(attempt_limit(agency, self.config) - elapsed, self.poll)
        log.info("dispatch.adopted", dispatch_id=row.dispatch_id, attempt_id=row.id, answered=attempt.answered)
        return await self._run(attempt, None, limit)

    async def close_lost(self, row: DispatchAttempt, agency: Agency, term: int | None, result: Result) -> Result:
        """Close an attempt a previous leader left open whose line is gone (conditional: an outcome
        recorded meanwhile, e.g. the officer's key, is kept and returned)."""
        future = asyncio.get_running_loop().create_future()
        attempt = Attempt(row.id, row.dispatch_id, agency.code, row.line, future, term=term)
        return await self._close_attempt(attempt, result)

    async def _run(self, attempt: Attempt, start: Callable[[], Awaitable[None]] | None, limit: float) -> Result:
        result = Result("error", reason="not started")
        keep = False
        try:
            if start is not None:
                await start()
            result = await self._follow(attempt, limit)
        except AmiError as exc:
            result = Result("error", reason=str(exc)[:64])
        except asyncio.CancelledError:
            if attempt.relinquished:
                keep = True  # the line rings on; the next leader adopts it
            else:
                result = Result("error", reason="cancelled")
                await self._hang_up(attempt)
            raise
        finally:
            self._attempts.pop(attempt.id, None)
            if not keep:
                result = await asyncio.shield(self._close_attempt(attempt, result))
        log.info("dispatch.attempt_ended", attempt_id=attempt.id, outcome=result.outcome, reason=result.reason)
        return result

    async def _follow(self, attempt: Attempt, limit: float) -> Result:
        """Wait for the attempt's outcome: an AMI event or a key here, or a row written elsewhere."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                await self._hang_up(attempt)
                return Result("error", reason=f"no outcome within {limit:.0f}s")
            poke = asyncio.ensure_future(attempt.poke.wait())
            try:
                await asyncio.wait(
                    (attempt.future, poke), timeout=min(self.poll, remaining), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                poke.cancel()
            if attempt.future.done():
                return attempt.future.result()
            attempt.poke.clear()
            stored = await self._stored(attempt)
            if stored is not None:
                return stored

    async def _stored(self, attempt: Attempt) -> Result | None:
        """What another node recorded: the attempt's outcome, or a dispatch no longer ``calling``."""

        async def op(session: AsyncSession) -> tuple[DispatchAttempt | None, str | None]:
            row = await session.get(DispatchAttempt, attempt.id)
            dispatch = await session.get(Dispatch, attempt.dispatch_id)
            return row, dispatch.status if dispatch is not None else None

        try:
            row, status = await self.store.transaction("dispatch_attempt_poll", op)
        except Exception as exc:  # the database hiccuped: AMI events still resolve it; look again later
            log.warning("dispatch.poll_failed", attempt_id=attempt.id, error=repr(exc)[:200])
            return None
        if row is not None and row.outcome is not None:
            return Result(row.outcome, reason=row.reason, hangup_cause=row.hangup_cause)
        if status != "calling":
            # Accepted in the browser (or cancelled) through another node: stop ringing this line.
            await self._hang_up(attempt)
            return Result("error", reason="cancelled")
        return None

    async def _originate(self, attempt: Attempt, agency: Agency) -> None:
        await self.ami.originate(
            reference(attempt.id),
            attempt.line,
            self.config.originate_context,
            ring_seconds=agency.answer_timeout,
            variables={"CC_DISPATCH_ID": str(attempt.dispatch_id), "CC_ATTEMPT_ID": str(attempt.id)},
        )

    async def _remote(self, attempt: Attempt, agency: Agency) -> None:
        if self.twilio is None:
            self.resolve(attempt.id, Result("error", reason=NO_TWILIO))
            return
        text = await self._incident_text(attempt.dispatch_id)
        try:
            reference = await self.twilio.call(
                attempt.id, attempt.line, text, timeout=agency.answer_timeout, gather_timeout=self.config.accept_timeout
            )
        except Exception as exc:  # not configured, refused number, API down: this line is unusable now
            log.warning("dispatch.remote_failed", attempt_id=attempt.id, error=str(exc))
            self.resolve(attempt.id, Result("error", reason=str(exc)[:64] or type(exc).__name__))
            return
        try:
            # The text stays on the officer's phone: the reference and address survive a noisy line.
            await self.twilio.sms(attempt.line, text)
        except Exception as exc:
            log.info("dispatch.sms_failed", attempt_id=attempt.id, error=str(exc))

        async def op(session: AsyncSession) -> None:
            row = await session.get(DispatchAttempt, attempt.id)
            if row is not None:
                row.reference = reference[:64]

        await self.store.transaction("dispatch_attempt_ref", op)

    async def _incident_text(self, dispatch_id: int) -> str:
        async def op(session: AsyncSession) -> Incident | None:
            d = await session.get(Dispatch, dispatch_id)
            return await session.get(Incident, d.incident_id) if d is not None else None

        incident = await self.store.transaction("dispatch_incident", op)
        return briefing_text(incident) if incident is not None else ""

    async def _hang_up(self, attempt: Attempt) -> None:
        """Hang the line up: by channel name once known, else by its Uniqueid (Asterisk takes either)."""
        if line_kind(attempt.line) == "pbx":
            with contextlib.suppress(AmiError):
                await self.ami.action({"Action": "Hangup", "Channel": attempt.channel or reference(attempt.id)})

    async def _close_attempt(self, attempt: Attempt, result: Result) -> Result:
        """Record how the attempt ended, unless something was recorded first (the briefing on another
        node): then that stored outcome is the attempt's. Raises ``Deposed`` when the term is over."""

        async def op(session: AsyncSession) -> Result:
            await check_term(session, attempt.term)
            row = await session.get(DispatchAttempt, attempt.id, with_for_update=True)
            if row is None:
                return result
            row.detail = {**(row.detail or {}), "answered": attempt.answered, "channel": attempt.channel}
            if row.outcome is not None:
                return Result(row.outcome, reason=row.reason, hangup_cause=row.hangup_cause)
            row.ended_at = utcnow()
            row.outcome = result.outcome
            row.reason = (result.reason or "")[:64] or None
            row.hangup_cause = result.hangup_cause if result.hangup_cause is not None else attempt.hangup_cause
            return result

        try:
            stored = await self.store.transaction("dispatch_attempt_end", op)
        except Deposed:
            log.warning("dispatch.attempt_deposed", attempt_id=attempt.id, term=attempt.term)
            raise
        except Exception:
            log.exception("dispatch.attempt_write_failed", attempt_id=attempt.id, outcome=result.outcome)
            stored = result
        await self._on_change(attempt.dispatch_id)
        return stored
