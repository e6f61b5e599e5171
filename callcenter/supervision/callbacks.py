"""Calling back citizens who hung up before a call-taker answered (``docs/supervision.md``).

A 112 caller who gives up in the queue may still be in danger: the call-taker calls them back with
one click. The call is an asynchronous AMI ``Originate`` exactly like a dispatch attempt
(``callcenter/dispatch/dispatcher.py``): first the call-taker's own softphone rings (their queue
interface, or the overflow line for a supervisor without a phone); once they pick up, the channel
runs ``[callcenter-callback]``, which dials the citizen through the citizen trunk. The originated
channel carries ``ChannelId = callback-<id>``, so every AMI event about it is matched by id:

* ``OriginateResponse`` (our ActionID): ``Failure`` → the call-taker's phone was not answered (failed);
* ``DialEnd`` on that channel: the citizen answered (``ANSWER``), was busy, did not answer, ...;
* ``Hangup`` of that channel before any ``DialEnd``: the dialplan could not dial (no trunk) → failed.

The first verdict wins (a conditional update on ``outcome = 'calling'``) and is pushed to the
centre as ``{"type": "callback", "callback": {...}}``.

**One node places it.** The web API on any node writes the ``calling`` row (with the phone to ring
first); the leader claims it under its fencing token (``store/leadership.py``, ``TermLoop``) and
originates it, at once when the request came to the leader itself, else within ``poll`` seconds (or
when a change signal wakes it). A new leader takes over a previous leader's ``calling`` call-backs: one
whose channel ``callback-<id>`` Asterisk still has (``CoreShowChannels``) is adopted and followed; one
that is gone ended while nobody listened and is closed ``failed`` ("lost with the previous leader"),
never placed again (a citizen is not rung twice for one click). The leader's verdicts are fenced: a
deposed leader's late write is refused.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from panoramisk.message import Message
from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.queue.ami import AmiClient, AmiError, channel_up, match_reference, originate_outcome
from callcenter.store import Store, utcnow
from callcenter.store.leadership import Deposed, Leadership, TermLoop, check_term
from callcenter.store.models import Call, Callback
from callcenter.store.quota import QuotaExceeded
from callcenter.store.roles import CENTRE_ROLES, Publish

log = structlog.get_logger("callcenter.supervision.callbacks")

CONTEXT = "callcenter-callback"
#: DialEnd ``DialStatus`` → callback outcome.
DIAL_OUTCOME = {"ANSWER": "answered", "BUSY": "busy", "NOANSWER": "no_answer"}
#: Ring time for the call-taker's own phone, and for the citizen (passed to the dialplan).
TAKER_RING = 20
CITIZEN_RING = 30
#: A callback with no verdict after this long is closed as failed (a lost AMI event must not leave
#: "calling…" on every console for ever).
WATCHDOG = TAKER_RING + CITIZEN_RING + 30.0
_DIALABLE = re.compile(r"^\+?[0-9]{3,20}$")


#: Call-backs per abandoned call (each one rings the citizen's phone).
MAX_PER_CALL = 3
#: The change signal's topic of a call-back row (``store/signals.py``; key: its id): consoles re-read it,
#: and the leader looks for call-backs requested on another node.
SIGNAL_TOPIC = "callback"
#: Seconds between the leader's looks for call-backs requested on other nodes (the change signal's fallback).
CLAIM_POLL = 1.0
#: The reason of a call-back a previous leader placed whose channel is gone when this one takes over.
LOST = "lost with the previous leader"


class CallbackRefused(Exception):
    """The callback cannot be placed (no number to call, no phone to call from): a conflict with the
    call's state, not bad input."""


def callback_json(c: Callback) -> dict[str, Any]:
    return {
        "id": c.id,
        "call_id": c.call_id,
        "requested_by": c.requested_by,
        "requested_at": c.requested_at.isoformat(),
        "outcome": c.outcome,
        "ended_at": c.ended_at.isoformat() if c.ended_at else None,
        "reason": c.reason,
    }


@dataclass
class _Live:
    answered: bool = False
    timer: asyncio.TimerHandle | None = None
    #: The leader term following it: its verdicts are fenced by that term.
    term: int | None = None


class Callbacks:
    """Abandoned calls and their callbacks; one instance per app (its table matches AMI events)."""

    def __init__(
        self,
        store: Store,
        ami: AmiClient,
        publish: Publish,
        *,
        overflow_dial: str,
        leadership: Leadership,
        poll: float = CLAIM_POLL,
    ) -> None:
        self.store = store
        self.ami = ami
        self.publish = publish
        self.overflow_dial = overflow_dial
        self.leadership = leadership
        self.poll = poll
        self._live: dict[int, _Live] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: TermLoop | None = None
        self._unsignal: Callable[[], None] = lambda: None

    async def start(self) -> None:
        """Follow leadership: while this node leads it places the call-backs and takes over what a
        previous leader left ``calling`` (nothing is closed at a start: the rows may be a live node's)."""
        self._loop = TermLoop(self.leadership, self._claim, "callback-leader", poll=self.poll, on_end=self._release)
        # A call-back requested (or settled) on another node: look now, not at the next poll.
        self._unsignal = self.store.signals.subscribe(SIGNAL_TOPIC, lambda _key: self.wake())

    async def close(self) -> None:
        self._unsignal()
        if self._loop is not None:
            await self._loop.close()
            self._loop = None
        await self._release()
        for task in list(self._tasks):
            task.cancel()

    def wake(self) -> None:
        """A call-back was requested (here or, through the change signal, on another node): claim now."""
        if self._loop is not None:
            self._loop.wake()

    @property
    def term(self) -> int | None:
        return self._loop.term if self._loop is not None else None

    async def _release(self) -> None:
        """No longer leading: stop following (no verdict written); the next leader adopts the calls."""
        for live in self._live.values():
            if live.timer is not None:
                live.timer.cancel()
        self._live.clear()

    # -- queries ---------------------------------------------------------------------------------

    async def abandoned(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Callers who hung up before an answer in ``[start, end)``, newest first, with their callbacks."""

        async def op(session: AsyncSession) -> list[dict[str, Any]]:
            calls = list(
                await session.scalars(
                    select(Call)
                    .where(Call.status == "abandoned", Call.arrived_at >= start, Call.arrived_at < end)
                    .order_by(Call.arrived_at.desc())
                    .limit(500)
                )
            )
            by_call: dict[str, list[dict[str, Any]]] = {c.id: [] for c in calls}
            if calls:
                rows = await session.scalars(
                    select(Callback).where(Callback.call_id.in_(list(by_call))).order_by(Callback.id)
                )
                for cb in rows:
                    by_call[cb.call_id].append(callback_json(cb))
            return [
                {
                    "call_id": c.id,
                    "number": c.caller_number,
                    "arrived_at": c.arrived_at.isoformat(),
                    "wait_seconds": c.wait_seconds,
                    "callbacks": by_call[c.id],
                }
                for c in calls
            ]

        return await self.store.transaction("abandoned_list", op)

    # -- placing a callback ----------------------------------------------------------------------

    async def request(
        self, call_id: str, *, user_id: int | None, interface: str | None, number: str | None = None
    ) -> Callback:
        """Ring ``interface`` (the requester's phone; None → the overflow line), then the citizen.

        ``number``: a citizen's report from the app (``queue/reports.py``): ``call_id`` is the report's turn
        in the queue, answered by the call-taker, and the citizen is the report's verified number.
        Raises LookupError for an unknown call and CallbackRefused when it cannot be placed.
        """
        phone = interface or self.overflow_dial
        if not phone:
            raise CallbackRefused("no phone to call from: no interface and no overflow line")

        async def op(session: AsyncSession) -> tuple[Callback, str]:
            call = await session.get(Call, call_id)
            if call is None:
                raise LookupError(call_id)
            dial = number or call.caller_number or ""
            if not _DIALABLE.match(dial):
                raise CallbackRefused("the caller's number is withheld or not dialable")
            # Call-backs are for callers who gave up waiting (and for app reports, which ask for one);
            # the PBX must not become a dialler of any number that once called, nor ring one citizen
            # again and again.
            if number is None and call.status != "abandoned":
                raise CallbackRefused("only abandoned calls are called back")
            earlier = list(await session.scalars(select(Callback.outcome).where(Callback.call_id == call_id)))
            if "calling" in earlier:
                raise CallbackRefused("a call-back to this caller is already running")
            if len(earlier) >= MAX_PER_CALL:
                raise QuotaExceeded(f"this caller was already called back {MAX_PER_CALL} times")
            cb = Callback(
                call_id=call_id,
                requested_by=user_id,
                requested_at=utcnow(),
                outcome="calling",
                phone=phone[:128],
                number=dial,
            )
            session.add(cb)
            await session.flush()
            return cb, dial

        cb, _dial = await self.store.transaction("callback_create", op)
        self._send(cb)
        log.info("callback.requested", callback_id=cb.id, call_id=call_id, phone=phone, user_id=user_id)
        # The leader places it: at once when it is this node, else at its next look.
        self.wake()
        return cb

    # -- the leader's side -----------------------------------------------------------------------

    async def _claim(self, term: int | None) -> None:
        """Take every ``calling`` call-back no running term follows: place the new ones, take over the rest
        (a previous leader's, or one of this term whose verdict could not be written).

        Those are claimed only once Asterisk has said which channels exist (an AMI failure leaves them
        for the next look)."""
        orphans = await self._orphans(term)
        channels = await self._channels() if orphans else {}

        async def op(session: AsyncSession) -> list[tuple[Callback, str, bool]]:
            await check_term(session, term)
            owner: ColumnElement[bool] = Callback.leader_epoch.is_(None)
            if orphans:
                owner = or_(owner, Callback.id.in_(orphans))
            rows = await session.scalars(
                select(Callback).where(Callback.outcome == "calling", owner).order_by(Callback.id).with_for_update()
            )
            claimed: list[tuple[Callback, str, bool]] = []
            for cb in rows:
                claimed.append((cb, cb.number or "", cb.leader_epoch is not None))
                cb.leader_epoch = term
            return claimed

        for cb, number, taken_over in await self.store.transaction("callback_claim", op):
            if not taken_over:
                await self._place(cb, number, term)
                continue
            channel = channels.get(f"callback-{cb.id}")
            if channel is None:
                log.warning("callback.lost", callback_id=cb.id, term=term)
                await self.finish(cb.id, "failed", LOST, term=term)
            elif str(channel.get("BridgeId") or ""):
                # In a bridge: the citizen answered while no leader listened (its DialEnd was missed).
                await self.finish(cb.id, "answered", "bridged at takeover", term=term)
            else:
                log.info("callback.adopted", callback_id=cb.id, term=term)
                self._follow(cb.id, term, answered=channel_up(channel))

    async def _orphans(self, term: int | None) -> list[int]:
        """``calling`` call-backs placed by a term (a previous one, or this one) that nobody follows here."""

        async def op(session: AsyncSession) -> list[int]:
            rows = await session.scalars(
                select(Callback.id).where(Callback.outcome == "calling", Callback.leader_epoch <= (term or 0))
            )
            return list(rows)

        return [i for i in await self.store.transaction("callback_orphans", op) if i not in self._live]

    async def _channels(self) -> dict[str, Message]:
        """Asterisk's channels by Uniqueid (AmiError: this look ends, the next one asks again)."""
        return {str(c.get("Uniqueid", "")): c for c in await self.ami.channels()}

    def _follow(self, callback_id: int, term: int | None, *, answered: bool = False) -> None:
        self._live[callback_id] = live = _Live(answered=answered, term=term)
        live.timer = asyncio.get_running_loop().call_later(
            WATCHDOG, lambda: self._spawn(self.finish(callback_id, "failed", "no outcome from the PBX", term=term))
        )

    async def _place(self, cb: Callback, number: str, term: int | None) -> None:
        phone = cb.phone or self.overflow_dial
        self._follow(cb.id, term)
        log.info("callback.started", callback_id=cb.id, call_id=cb.call_id, phone=phone, term=term)
        try:
            await self.ami.originate(
                f"callback-{cb.id}",
                phone,
                CONTEXT,
                ring_seconds=TAKER_RING,
                variables={
                    "CC_CALLBACK_ID": str(cb.id),
                    "CC_CALLBACK_NUMBER": number,
                    "CC_CALLBACK_RING": str(CITIZEN_RING),
                },
                # The call-taker's display shows whom they are about to call back.
                caller_id=f'"Panggil balik" <{number}>',
            )
        except AmiError as exc:
            await self.finish(cb.id, "failed", str(exc)[:64] or "AMI unavailable", term=term)

    async def finish(self, callback_id: int, outcome: str, reason: str | None, *, term: int | None = None) -> bool:
        """Record the first verdict; later ones (a Hangup after DialEnd) change nothing. ``term``: the
        leader's verdict, refused once a newer leader took over (then False)."""
        live = self._live.pop(callback_id, None)
        if live is not None and live.timer is not None:
            live.timer.cancel()
        if term is None and live is not None:
            term = live.term

        async def op(session: AsyncSession) -> Callback | None:
            if term is not None:
                await check_term(session, term)
            result = await session.execute(
                update(Callback)
                .where(Callback.id == callback_id, Callback.outcome == "calling")
                .values(outcome=outcome, reason=(reason or "")[:64] or None, ended_at=utcnow())
            )
            if not getattr(result, "rowcount", 0):
                return None
            return await session.get(Callback, callback_id)

        try:
            cb = await self.store.transaction("callback_finish", op)
        except Deposed:
            log.warning("callback.deposed", callback_id=callback_id, term=term, outcome=outcome)
            return False
        if cb is None:
            return False
        log.info("callback.ended", callback_id=callback_id, outcome=outcome, reason=reason)
        self._send(cb)
        return True

    # -- AMI -------------------------------------------------------------------------------------

    async def on_ami_event(self, message: Message) -> None:
        name = str(message.get("Event", ""))
        if name == "OriginateResponse":
            callback_id = match_reference(message.get("ActionID"), "callback")
            live = self._live.get(callback_id) if callback_id is not None else None
            if callback_id is None or live is None:
                return
            if message.get("Response") == "Success":
                live.answered = True
                return
            reason = str(message.get("Reason", ""))
            verdict = originate_outcome(reason)
            await self.finish(callback_id, "failed", f"call-taker phone {verdict} (reason {reason})")
        elif name == "DialEnd":
            callback_id = match_reference(message.get("Uniqueid"), "callback")
            if callback_id is None or callback_id not in self._live:
                return
            status = str(message.get("DialStatus", "")).upper()
            await self.finish(callback_id, DIAL_OUTCOME.get(status, "failed"), status.lower() or None)
        elif name == "Hangup":
            callback_id = match_reference(message.get("Uniqueid"), "callback")
            live = self._live.get(callback_id) if callback_id is not None else None
            # Before the call-taker answered, the OriginateResponse follows with the real reason.
            if callback_id is not None and live is not None and live.answered:
                await self.finish(callback_id, "failed", f"hangup before dialling (cause {message.get('Cause', '?')})")

    # -- live hub --------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send(self, cb: Callback) -> None:
        try:
            self.publish({"type": "callback", "callback": callback_json(cb)}, roles=CENTRE_ROLES)
        except Exception:
            log.exception("callback.publish_failed")


def abandoned_window(
    start: datetime | None = None, end: datetime | None = None, *, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """The instants an abandoned list covers: a missing end is now, a missing start 24 hours before
    the end — a call-taker opening the list wants the last day, and "up to 10 January" alone means
    the day before it, not everything since the beginning."""
    if end is None:
        end = (now or utcnow()) + timedelta(seconds=1)
    return (start if start is not None else end - timedelta(days=1)), end


__all__ = [
    "CONTEXT",
    "CallbackRefused",
    "Callbacks",
    "abandoned_window",
    "callback_json",
]
