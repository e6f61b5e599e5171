"""Calling one duty line once: an attempt of a dispatch, from its row to how it ended.

Each attempt is one row in ``dispatch_attempts`` written before the call starts and closed with how it
ended, so that "Damkar was not reached" can always be answered with which line rang, when, and why it
failed. A SIP line is called with an asynchronous AMI ``Originate`` (``AmiClient.originate``): Asterisk
answers the request at once and reports the outcome later as an ``OriginateResponse`` carrying our
ActionID; the channel itself carries ``ChannelId = dispatch-<attempt id>`` as its Uniqueid, so its
``Hangup`` event is matched the same way. An answered call runs the ``briefing`` AGI route, which
reports the officer's key through the dispatcher; E.164 lines go through the Twilio line, which reports
the same way. The dispatcher (``dispatch/dispatcher.py``) decides which line to try next.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import structlog
from panoramisk.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.config import DispatchConfig
from callcenter.dispatch.agencies import Agency, line_kind
from callcenter.dispatch.prompts import briefing_text
from callcenter.queue.ami import AmiClient, AmiError, match_reference, originate_outcome
from callcenter.store import Store, utcnow
from callcenter.store.models import Dispatch, DispatchAttempt, Incident

log = structlog.get_logger("callcenter.dispatch")

#: Attempt outcomes (``dispatch_attempts.outcome``).
OUTCOMES = ("accepted", "no_answer", "busy", "failed", "no_key", "declined", "error")
#: Q.850 causes of a channel that ended before it was answered.
CAUSE_OUTCOME = {17: "busy", 18: "no_answer", 19: "no_answer", 21: "declined"}
#: Beyond ring time and the accept window: the briefing itself, plus slack for a slow AMI.
ATTEMPT_SLACK = 90.0


@runtime_checkable
class RemoteLine(Protocol):
    """The Twilio line (``callcenter/dispatch/twilio_line.py``'s ``TwilioLine``): ``call`` rings an E.164
    number with the briefing and returns the call SID; the outcome arrives later through
    ``Dispatcher.on_remote_result``. ``sms`` texts the summary alongside."""

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
    answered: bool = False
    channel: str | None = None
    hangup_cause: int | None = None


def _int(value: Any) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


class LineCalls:
    """The attempts running now, by id: places each call and matches every report to its attempt."""

    def __init__(
        self,
        store: Store,
        ami: AmiClient,
        config: DispatchConfig,
        twilio: RemoteLine | None,
        on_change: Callable[[int], Awaitable[None]],
    ) -> None:
        """``on_change(dispatch_id)`` runs whenever an attempt of that dispatch starts or ends."""
        self.store = store
        self.ami = ami
        self.config = config
        self.twilio = twilio
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

    def _match(self, reference: Any) -> Attempt | None:
        attempt_id = match_reference(reference, "dispatch")
        return self._attempts.get(attempt_id) if attempt_id is not None else None

    async def place(self, dispatch_id: int, agency: Agency, line: str) -> Result:
        """Call ``line`` of ``agency`` once for the dispatch and wait for how it ended (bounded)."""
        via = line_kind(line)

        async def op(session: AsyncSession) -> int:
            a = DispatchAttempt(dispatch_id=dispatch_id, line=line, via=via, started_at=utcnow(), detail={})
            session.add(a)
            await session.flush()
            a.reference = f"dispatch-{a.id}"
            return a.id

        attempt_id = await self.store.transaction("dispatch_attempt", op)
        loop = asyncio.get_running_loop()
        attempt = Attempt(attempt_id, dispatch_id, agency.code, line, loop.create_future())
        self._attempts[attempt_id] = attempt
        await self._on_change(dispatch_id)
        log.info("dispatch.attempt", dispatch_id=dispatch_id, attempt_id=attempt_id, agency=agency.code, line=line)
        result = Result("error", reason="not started")
        try:
            if via == "pbx":
                await self._originate(attempt, agency)
            else:
                await self._remote(attempt, agency)
            limit = agency.answer_timeout + self.config.accept_timeout + ATTEMPT_SLACK
            try:
                async with asyncio.timeout(limit):
                    result = await asyncio.shield(attempt.future)
            except TimeoutError:
                result = Result("error", reason=f"no outcome within {limit:.0f}s")
                await self._hang_up(attempt)
        except AmiError as exc:
            result = Result("error", reason=str(exc)[:64])
        except asyncio.CancelledError:
            result = Result("error", reason="cancelled")
            await self._hang_up(attempt)
            raise
        finally:
            self._attempts.pop(attempt_id, None)
            await asyncio.shield(self._close_attempt(attempt, result))
        log.info("dispatch.attempt_ended", attempt_id=attempt_id, outcome=result.outcome, reason=result.reason)
        return result

    async def _originate(self, attempt: Attempt, agency: Agency) -> None:
        await self.ami.originate(
            f"dispatch-{attempt.id}",
            attempt.line,
            self.config.originate_context,
            ring_seconds=agency.answer_timeout,
            variables={"CC_DISPATCH_ID": str(attempt.dispatch_id), "CC_ATTEMPT_ID": str(attempt.id)},
        )

    async def _remote(self, attempt: Attempt, agency: Agency) -> None:
        if self.twilio is None:
            self.resolve(attempt.id, Result("error", reason="no twilio line"))
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
        if attempt.channel:
            with contextlib.suppress(AmiError):
                await self.ami.action({"Action": "Hangup", "Channel": attempt.channel})

    async def _close_attempt(self, attempt: Attempt, result: Result) -> None:
        async def op(session: AsyncSession) -> None:
            row = await session.get(DispatchAttempt, attempt.id)
            if row is None:
                return
            row.ended_at = utcnow()
            row.outcome = result.outcome
            row.reason = (result.reason or "")[:64] or None
            row.hangup_cause = result.hangup_cause if result.hangup_cause is not None else attempt.hangup_cause
            row.detail = {**(row.detail or {}), "answered": attempt.answered, "channel": attempt.channel}

        try:
            await self.store.transaction("dispatch_attempt_end", op)
        except Exception:
            log.exception("dispatch.attempt_write_failed", attempt_id=attempt.id, outcome=result.outcome)
        await self._on_change(attempt.dispatch_id)
