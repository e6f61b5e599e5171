"""Citizen ratings of how their emergency was handled (``docs/supervision.md``, "Citizen rating").

When every dispatch of an incident is over and at least one was ``resolved``, the citizen is asked
once for a score from 1 to 5:

* by **IVR** when their number is reachable through the PBX: an asynchronous AMI ``Originate`` of
  ``PJSIP/<number>@<citizen trunk>`` into ``[callcenter-rating]`` (ChannelId ``rating-<id>``, the
  dispatcher's pattern), where the AGI route ``rating`` plays the question and reports the key. The
  citizen trunk is the dialplan global ``CC_CITIZEN_TRUNK``, read over AMI (``Getvar``) at each
  request: the PBX configuration is the one place that says whether citizens can be called;
* else by **SMS** through the Twilio line: a link to ``/rate/<token>``, a random single-use token.

Statuses: ``requested`` (row written) → ``calling`` (the call is placed / the SMS is sent) →
``rated`` | ``no_answer`` | ``failed`` | ``declined`` (answered, no key). Every change to a rating is a
conditional update on the status it expects, so one token (or one call) stores one score only.

**SMS fallback.** A citizen who missed the rating call (or answered and pressed nothing) is still
asked: the IVR rating that settles as ``no_answer``, ``failed`` or ``declined`` is followed by the SMS
link, as a second rating row of the incident (``via = 'sms'``) — the IVR row keeps how the call went,
and the supervisor's detail view (the newest row) shows the SMS. Only when Twilio can text, the number
is a mobile one (a landline cannot receive it), and the incident has no SMS rating yet: the IVR row
settles once (conditional update), and the SMS row is written before the text is sent, so the link is
sent at most once and never after a score. The text is sent in a background task: the settling
happens inside the AMI event consumer and the AGI session, which must not wait on Twilio.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import phonenumbers
import structlog
from panoramisk.message import Message
from sqlalchemy import and_

from callcenter.forms.phone import normalize
from callcenter.queue.ami import AmiClient, AmiError, match_reference, originate_outcome
from callcenter.store import Store, utcnow
from callcenter.store.models import Rating
from callcenter.store.ratings import ANSWERABLE, RatingRows
from callcenter.store.roles import SUPERVISOR_ROLES, Publish
from callcenter.tasks import Background

log = structlog.get_logger("callcenter.supervision.ratings")

CONTEXT = "callcenter-rating"
TRUNK_VARIABLE = "CC_CITIZEN_TRUNK"
VIAS = ("ivr", "sms")
RATE_PATH = "/rate/"
RING_SECONDS = 30
#: An SMS link stays usable this long; a rating weeks later says little about the handling.
TOKEN_DAYS = 7
#: Incidents resolved longer ago than this are not asked any more (first start after an upgrade must
#: not ring every citizen of the past year).
SWEEP_HORIZON = timedelta(days=1)
SMS_TEXT = "Terima kasih telah menghubungi 112. Mohon nilai layanan kami (1 sampai 5): {link}"
#: Seconds between looks for incidents to rate (docs/supervision.md, "How ratings are triggered").
RATING_POLL = 3.0
_TRUNK = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
#: How an IVR rating ends without a score; each is followed by the SMS link (``_sms_fallback``).
UNREACHED = ("no_answer", "failed", "declined")
#: Number types that can receive an SMS; "fixed line or mobile" is where the numbering plan cannot
#: tell (North America) and the text may well arrive.
_TEXTABLE = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)


#: Rating texts per incident (the automatic one or the IVR's fallback, and one asked again by hand).
MAX_SMS_PER_INCIDENT = 2


class RatingRefused(Exception):
    """The rating cannot be asked (no number, no channel to ask through): a conflict with the incident's
    state, not bad input."""


@dataclass(frozen=True)
class TokenView:
    """What the public page needs: whether the token can still be answered, and the incident reference."""

    reference: str
    open: bool
    score: int | None


def textable(number: str) -> bool:
    """Whether an E.164 number can receive an SMS: a mobile number, as far as the numbering plan tells."""
    try:
        parsed = phonenumbers.parse(number)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.number_type(parsed) in _TEXTABLE


def rating_json(r: Rating) -> dict[str, Any]:
    return {
        "id": r.id,
        "incident_id": r.incident_id,
        "via": r.via,
        "status": r.status,
        "score": r.score,
        "requested_at": r.requested_at.isoformat(),
        "rated_at": r.rated_at.isoformat() if r.rated_at else None,
    }


class SmsLine(Protocol):
    """What ratings need of the Twilio line (``dispatch/twilio_line.py``): text ``body`` to ``to`` and return
    the message id. The wiring hands it over only while the line can text (``sms_line``)."""

    async def sms(self, to: str, body: str) -> str: ...


class Ratings:
    """Asks for, and records, citizen ratings; one instance per app (it matches AMI events)."""

    def __init__(
        self,
        store: Store,
        ami: AmiClient,
        publish: Publish,
        twilio: Callable[[], SmsLine | None],
        *,
        public_url: str,
        region: str = "ID",
    ) -> None:
        self.store = store
        self.rows = RatingRows(store)
        self.ami = ami
        self.publish = publish
        self._twilio = twilio
        self.public_url = public_url.rstrip("/")
        self.region = region
        #: Rating ids whose call was answered (OriginateResponse Success), until their outcome is known.
        self._answered: set[int] = set()
        #: SMS fallbacks in flight (a failure is logged there; cancelled by ``close``).
        self._fallbacks = Background()

    async def close(self) -> None:
        """Cancel the SMS fallbacks still running: the app is stopping."""
        await self._fallbacks.cancel()

    async def settled(self) -> None:
        """Wait until the SMS fallbacks started so far are done (for tests, which check what was sent)."""
        await self._fallbacks.settle()

    # -- asking ----------------------------------------------------------------------------------

    async def due(self) -> list[int]:
        """Incidents to ask now: no rating yet, no dispatch still active, at least one ``resolved``
        recently. Polled by ``supervision_ctx`` (docs/supervision.md says why polling)."""
        return await self.rows.due(utcnow() - SWEEP_HORIZON)

    async def request(self, incident_id: int, via: str | None = None, *, term: int | None = None) -> Rating:
        """Ask the incident's citizen now; ``via`` None picks IVR when the PBX can reach them, else SMS.

        Raises LookupError for an unknown incident, RatingRefused when there is no way to ask, and
        ``Deposed`` when ``term`` (the leader's trigger) no longer leads: the row is then not written and
        nobody is called.
        """
        if via is not None and via not in VIAS:
            raise ValueError(f"via must be one of {VIAS}")

        incident = await self.rows.incident(incident_id)
        if incident is None:
            raise LookupError(incident_id)
        number = normalize(incident.callback_number, self.region).e164
        if not number:
            raise RatingRefused("the incident has no usable callback number")
        trunk = await self._trunk() if via != "sms" else None
        if via is None:
            via = "ivr" if trunk else "sms"
        if via == "ivr" and not trunk:
            raise RatingRefused(f"citizens are not reachable through the PBX ({TRUNK_VARIABLE} is empty)")
        token = secrets.token_urlsafe(24) if via == "sms" else None

        rating = await self.rows.create(incident_id, via, token, max_texts=MAX_SMS_PER_INCIDENT, term=term)
        log.info("rating.requested", rating_id=rating.id, incident_id=incident_id, via=via)
        if via == "ivr":
            assert trunk is not None
            await self._call(rating, number, trunk)
        else:
            await self._sms(rating, number)
        return await self.get(rating.id) or rating

    async def _trunk(self) -> str | None:
        """The dialplan's citizen trunk, or None (unset, or AMI cannot tell us)."""
        try:
            answer = await self.ami.action({"Action": "Getvar", "Variable": TRUNK_VARIABLE})
        except AmiError as exc:
            log.warning("rating.trunk_unknown", error=str(exc))
            return None
        value = str(answer.get("Value", "") or "") if isinstance(answer, Message) else ""
        return value if _TRUNK.match(value) else None

    async def _call(self, rating: Rating, number: str, trunk: str) -> None:
        await self._set(rating.id, "calling", expect=("requested",))
        try:
            await self.ami.originate(
                f"rating-{rating.id}",
                f"PJSIP/{number}@{trunk}",
                CONTEXT,
                ring_seconds=RING_SECONDS,
                variables={"CC_RATING_ID": str(rating.id)},
            )
        except AmiError as exc:
            log.warning("rating.originate_failed", rating_id=rating.id, error=str(exc))
            await self._ivr_unreached(rating.id, "failed", expect=ANSWERABLE)

    async def _sms(self, rating: Rating, number: str) -> None:
        line = self._twilio()
        if line is None or not self.public_url or rating.token is None:
            log.warning("rating.sms_unavailable", rating_id=rating.id, public_url=bool(self.public_url))
            await self._set(rating.id, "failed", expect=ANSWERABLE)
            return
        link = f"{self.public_url}{RATE_PATH}{rating.token}"
        try:
            sid = await line.sms(number, SMS_TEXT.format(link=link))
        except Exception as exc:  # Twilio refused or is down: the rating is not asked, say so
            log.warning("rating.sms_failed", rating_id=rating.id, error=str(exc))
            await self._set(rating.id, "failed", expect=ANSWERABLE)
            return
        log.info("rating.sms_sent", rating_id=rating.id, sid=sid)
        await self._set(rating.id, "calling", expect=("requested",))

    async def _ivr_unreached(self, rating_id: int, status: str, *, expect: tuple[str, ...]) -> bool:
        """Settle an IVR rating without a score and, if this settled it, text the link instead."""
        if not await self._set(rating_id, status, expect=expect):
            return False
        self._fallbacks.spawn(self._sms_fallback(rating_id), name=f"rating-sms-{rating_id}")
        return True

    async def _sms_fallback(self, ivr_id: int) -> Rating | None:
        """Text the SMS link after IVR rating ``ivr_id`` ended unrated; the SMS rating, or None when
        it is not sent (rated after all, no mobile number, Twilio cannot text, already texted)."""

        found = await self.rows.with_incident(ivr_id)
        if found is None:
            return None
        ivr, incident = found
        number = normalize(incident.callback_number, self.region).e164
        if ivr.via != "ivr" or ivr.status not in UNREACHED:
            reason = f"rating is {ivr.via}/{ivr.status}"
        elif number is None or not textable(number):
            reason = "no mobile number"
        elif self._twilio() is None or not self.public_url:
            reason = "Twilio cannot text (credentials, sender number or public URL unset)"
        else:
            return await self._text_instead(ivr, number)
        log.info("rating.sms_fallback_skipped", rating_id=ivr_id, incident_id=ivr.incident_id, reason=reason)
        return None

    async def _text_instead(self, ivr: Rating, number: str) -> Rating | None:
        """Write the incident's SMS rating (unless it has one: at most one text per incident), then send it."""
        token = secrets.token_urlsafe(24)

        sms = await self.rows.claim_text(ivr.incident_id, token)
        if sms is None:
            log.info("rating.sms_fallback_skipped", rating_id=ivr.id, incident_id=ivr.incident_id, reason="texted")
            return None
        log.info("rating.sms_fallback", rating_id=ivr.id, sms_rating_id=sms.id, ivr_status=ivr.status)
        await self._sms(sms, number)
        return await self.get(sms.id)

    async def mark_unaskable(self, incident_id: int) -> None:
        """Record that the incident cannot be asked (``via = 'none'``, ``failed``), so the trigger
        does not pick it up again on every poll."""

        await self.rows.unaskable(incident_id)

    # -- answers ---------------------------------------------------------------------------------

    async def ivr_open(self, rating_id: int) -> bool:
        """Whether the AGI route may ask on this call (our IVR rating, still waiting for a key)."""
        r = await self.get(rating_id)
        return r is not None and r.via == "ivr" and r.status == "calling"

    async def record_ivr(self, rating_id: int, score: int | None) -> bool:
        """The key the citizen pressed (None: no key → ``declined``); False if already settled."""
        if score is None:
            return await self._ivr_unreached(rating_id, "declined", expect=("calling",))
        return await self._score(Rating.id == rating_id, score)

    async def by_token(self, token: str) -> TokenView | None:
        found = await self.rows.by_token(token)
        if found is None:
            return None
        r, reference = found
        fresh = r.requested_at >= utcnow() - timedelta(days=TOKEN_DAYS)
        return TokenView(reference, r.status in ANSWERABLE and fresh, r.score)

    async def record_token(self, token: str, score: int) -> bool:
        """One answer per token: True only for the first valid score within the token's lifetime."""
        fresh = Rating.requested_at >= utcnow() - timedelta(days=TOKEN_DAYS)
        return await self._score(and_(Rating.token == token, Rating.via == "sms", fresh), score)

    async def _score(self, where: Any, score: int) -> bool:
        if not 1 <= score <= 5:
            raise ValueError("score must be 1-5")
        rating = await self.rows.score(where, score)
        if rating is None:
            return False
        self._answered.discard(rating.id)
        log.info("rating.rated", rating_id=rating.id, incident_id=rating.incident_id, via=rating.via, score=score)
        self._send(rating)
        return True

    async def get(self, rating_id: int) -> Rating | None:
        return await self.rows.get(rating_id)

    async def _set(self, rating_id: int, status: str, *, expect: tuple[str, ...]) -> bool:
        rating = await self.rows.set_status(rating_id, status, expect=expect)
        if rating is None:
            return False
        log.info("rating.status", rating_id=rating_id, status=status)
        self._send(rating)
        return True

    # -- AMI -------------------------------------------------------------------------------------

    async def on_ami_event(self, message: Message) -> None:
        """OriginateResponse (not reached) and Hangup (answered, hung up without a key)."""
        name = str(message.get("Event", ""))
        if name == "OriginateResponse":
            rating_id = match_reference(message.get("ActionID"), "rating")
            if rating_id is None:
                return
            if message.get("Response") == "Success":
                self._answered.add(rating_id)
                return
            reason = str(message.get("Reason", ""))
            status = "no_answer" if originate_outcome(reason) in ("no_answer", "busy") else "failed"
            await self._ivr_unreached(rating_id, status, expect=("calling",))
        elif name == "Hangup":
            rating_id = match_reference(message.get("Uniqueid"), "rating")
            if rating_id is not None and rating_id in self._answered:
                self._answered.discard(rating_id)
                await self._ivr_unreached(rating_id, "declined", expect=("calling",))

    def _send(self, rating: Rating) -> None:
        try:
            self.publish({"type": "rating", "rating": rating_json(rating)}, roles=SUPERVISOR_ROLES)
        except Exception:
            log.exception("rating.publish_failed")


async def rate_resolved(ratings: Ratings, *, term: int | None = None) -> list[int]:
    """Ask for a rating on every incident that became due; returns the incident ids asked. ``term``: the
    leader's, checked as each rating row is written (a deposed leader's trigger writes and rings nothing)."""
    asked: list[int] = []
    for incident_id in await ratings.due():
        try:
            await ratings.request(incident_id, term=term)
        except (RatingRefused, LookupError) as exc:
            # No number: write nothing, but do not look at it again — a failed rating row says "tried".
            log.info("rating.not_asked", incident_id=incident_id, reason=str(exc))
            await ratings.mark_unaskable(incident_id)
        asked.append(incident_id)
    return asked


__all__ = [
    "CONTEXT",
    "RATE_PATH",
    "RATING_POLL",
    "UNREACHED",
    "VIAS",
    "RatingRefused",
    "Ratings",
    "TokenView",
    "rate_resolved",
    "rating_json",
    "textable",
]
