"""AGI route ``rating``: the citizen answered our rating call; ask for 1-5 and store the key.

Called as ``AGI(${CC_AGI_URL}/rating)`` from ``[callcenter-rating]`` on the channel the ratings
service originated, which carries ``CC_RATING_ID``. Plays ``cc-rating`` ("mohon nilai layanan kami:
tekan 1 sampai 5"); a key pressed during the prompt counts, otherwise we wait a few seconds, and ask
once more. A key 1-5 is stored and thanked (``cc-rating-thanks``); no key is stored as ``declined``,
also when the citizen hangs up mid-prompt. The route sets ``CC_RATED=1`` when it handled the call;
without it the dialplan only thanks and hangs up (nothing is stored: the app is not there to store it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import structlog

from callcenter.agi.protocol import AgiError, format_command
from callcenter.agi.server import AgiSession
from callcenter.config import AgiConfig

log = structlog.get_logger("callcenter.agi.rating")

ROUTE = "rating"
MARKER = "CC_RATED"
PROMPT = "callcenter/cc-rating"
THANKS = "callcenter/cc-rating-thanks"
KEYS = "12345"
ROUNDS = 2
#: Seconds to wait for a key after the question.
KEY_WAIT = 6.0
#: Session limit to register the route with: two rounds of a ~6 s prompt plus the waits and the thanks.
BUDGET = 60.0


class IvrRatings(Protocol):
    """The ratings service (``supervision/ratings.py``), as this route sees it."""

    async def ivr_open(self, rating_id: int) -> bool: ...

    async def record_ivr(self, rating_id: int, score: int | None) -> bool: ...


class RatingRoute:
    """Looks the ratings service up per call: the AGI server starts before it exists."""

    def __init__(self, ratings: Callable[[], IvrRatings | None], agi: AgiConfig) -> None:
        self._ratings = ratings
        self.agi = agi

    async def __call__(self, session: AgiSession) -> None:
        ratings = self._ratings()
        raw = await session.get_variable("CC_RATING_ID") or ""
        rating_id = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 12 else None
        structlog.contextvars.bind_contextvars(rating_id=rating_id)
        if ratings is None or rating_id is None or not await ratings.ivr_open(rating_id):
            log.warning("rating.unknown_call", ready=ratings is not None)
            return
        score: int | None = None
        try:
            for _round in range(ROUNDS):
                response = await session.stream_file(PROMPT, KEYS)
                if response.result_int == -1:
                    raise AgiError(f"STREAM FILE {PROMPT} failed")
                key = response.digit or await session.wait_for_digit(KEY_WAIT)
                log.info("rating.key", key=key or None)
                if key and key in KEYS:
                    score = int(key)
                    break
        finally:
            # Stored even when the citizen hangs up mid-prompt (AgiHangup): "declined" is an answer too.
            await ratings.record_ivr(rating_id, score)
        if score is not None:
            try:
                await session.command(format_command("STREAM FILE", THANKS, ""), timeout=self.agi.prompt_timeout)
            except AgiError as exc:
                log.info("rating.thanks_failed", error=str(exc))
        await session.set_variable(MARKER, "1")


__all__ = ["BUDGET", "ROUTE", "RatingRoute"]
