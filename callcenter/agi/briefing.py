"""AGI route ``briefing``: the duty officer of an agency answered our call; brief them, get a key.

Called as ``AGI(${CC_AGI_URL}/briefing)`` from ``[callcenter-agency]`` on the channel the dispatcher
originated, which carries ``CC_DISPATCH_ID`` and ``CC_ATTEMPT_ID``. Plays the incident briefing and
"tekan 1 untuk menerima, 2 untuk mengulang"; a key pressed *during* any prompt counts (an officer
who has heard enough should not have to wait for the end). 1 reports acceptance and thanks, 2
repeats, nothing reports ``no_key`` and the dispatcher moves on to the next line. Any node serves it
(the dialplan tries the nodes in order): the attempt is read from the store and the key recorded
there, once.

The route sets ``CC_BRIEFED=1`` once it has handled the call; without it the dialplan plays its fixed
fallback prompt. The AGI server bounds the session by this route's own budget (longer than a 112
routing session's); the key wait is cut to end before it, so the officer's "no key" is reported by
us rather than lost to a cancelled session.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import structlog

from callcenter.agi.protocol import AgiError, format_command
from callcenter.agi.server import AgiSession
from callcenter.config import AgiConfig

log = structlog.get_logger("callcenter.agi.briefing")

ROUTE = "briefing"
MARKER = "CC_BRIEFED"
#: Repeats an officer may ask for with 2 before we stop and let the next line be tried.
MAX_ROUNDS = 3
#: Left of the session budget for the last commands (report, thanks, marker).
BUDGET_RESERVE = 4.0
#: Shortest wait for a key after the menu, even if the accept window is nearly used up by the prompts.
MIN_KEY_WAIT = 3.0


class Prompt(Protocol):
    @property
    def asterisk_name(self) -> str:
        """The prompt as ``STREAM FILE`` names it (no extension)."""
        ...


class Briefing(Protocol):
    """What to play for one attempt, and how long to wait for the officer's key."""

    @property
    def message(self) -> Prompt: ...
    @property
    def menu(self) -> Prompt: ...
    @property
    def thanks(self) -> Prompt: ...
    @property
    def accept_timeout(self) -> int: ...


class Briefer(Protocol):
    """The dispatcher (``dispatch/dispatcher.py``), as this route sees it."""

    async def briefing(self, attempt_id: int, dispatch_id: int) -> Briefing | None: ...

    async def briefing_result(self, attempt_id: int, outcome: str) -> bool: ...


class BriefingRoute:
    """Looks the dispatcher up on each call: the AGI server starts before the dispatcher exists."""

    def __init__(self, dispatcher: Callable[[], Briefer | None], agi: AgiConfig, budget: float) -> None:
        """``budget``: the session limit this route is registered with (``AgiServer.add_route``)."""
        self._dispatcher = dispatcher
        self.agi = agi
        self.budget = budget

    async def __call__(self, session: AgiSession) -> None:
        started = time.monotonic()
        dispatcher = self._dispatcher()
        dispatch_id = _int(await session.get_variable("CC_DISPATCH_ID"))
        attempt_id = _int(await session.get_variable("CC_ATTEMPT_ID"))
        structlog.contextvars.bind_contextvars(dispatch_id=dispatch_id, attempt_id=attempt_id)
        if dispatcher is None or dispatch_id is None or attempt_id is None:
            log.warning("briefing.unknown_call", ready=dispatcher is not None)
            return
        briefing = await dispatcher.briefing(attempt_id, dispatch_id)
        if briefing is None:
            log.warning("briefing.stale_attempt")
            return
        budget_end = started + self.budget - BUDGET_RESERVE
        deadline = min(time.monotonic() + briefing.accept_timeout, budget_end)
        outcome = "no_key"
        recorded = False
        try:
            for round_no in range(MAX_ROUNDS):
                key = await self._play(session, briefing.message.asterisk_name, budget_end)
                if not key:
                    key = await self._play(session, briefing.menu.asterisk_name, budget_end)
                if not key:
                    wait = max(deadline - time.monotonic(), MIN_KEY_WAIT)
                    wait = min(wait, budget_end - time.monotonic())
                    if wait > 0:
                        key = await session.wait_for_digit(wait)
                log.info("briefing.key", key=key or None, round=round_no + 1)
                if key == "1":
                    outcome = "accepted"
                    break
                if key != "2":
                    break
                # A repeat is a present officer: give them the whole window again.
                deadline = min(time.monotonic() + briefing.accept_timeout, budget_end)
        finally:
            # Recorded even when the officer hangs up mid-prompt (AgiHangup): the dispatch must learn it.
            # Whichever node serves the briefing, the first verdict is stored once (conditional update).
            recorded = await dispatcher.briefing_result(attempt_id, outcome)
        log.info("briefing.done", outcome=outcome, recorded=recorded)
        if outcome == "accepted" and recorded:
            try:
                await session.stream_file(briefing.thanks.asterisk_name)
            except AgiError as exc:
                log.info("briefing.thanks_failed", error=str(exc))
        await session.set_variable(MARKER, "1")

    async def _play(self, session: AgiSession, name: str, budget_end: float) -> str:
        limit = budget_end - time.monotonic()
        if limit <= 0:
            return ""
        response = await session.command(format_command("STREAM FILE", name, "12"), timeout=limit)
        if response.result_int == -1:
            raise AgiError(f"STREAM FILE {name} failed")
        return response.digit


def _int(value: str | None) -> int | None:
    try:
        return int(value or "")
    except ValueError:
        return None
