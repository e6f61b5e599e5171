"""Duty lines without SIP (an E.164 number) are called and texted through Twilio.

The call carries its own TwiML (no fetch from us before the officer hears anything): the briefing
spoken in Indonesian inside a ``<Gather numDigits="1">`` whose action posts the key pressed to
``/api/twilio/gather?attempt=<id>``; Twilio reports the call's progress to
``/api/twilio/status?attempt=<id>``. Both webhooks arrive through ``callcenter/web/twilio_hooks.py``,
which checks Twilio's signature and then calls :meth:`TwilioLine.handle_gather` /
:meth:`TwilioLine.handle_status`; those map what happened to an attempt outcome and report it once
through ``on_result(attempt_id, outcome, reason)``:

* key 1 → ``accepted`` (reason ``digit-1``); key 2 (or any other key) → the briefing again;
* call status ``no-answer`` → ``no_answer``, ``busy`` → ``busy``, ``failed``/``canceled`` → ``failed``;
* ``completed`` without a prior acceptance → ``no_key`` (the officer heard it, pressed nothing).

The reason is the Twilio call status (or ``digit-1``). The twilio client blocks (``requests``), so every
API request runs in a worker thread. Credentials come only from the configuration — in practice the
environment, ``CALLCENTER_TWILIO_*`` — never from the ``TWILIO_*`` variables the twilio library would
read on its own; a missing one is reported at first use, naming the variable.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from callcenter.config import ConfigError, TwilioConfig
from callcenter.logs import ref

log = structlog.get_logger("callcenter.twilio")

#: ``(attempt_id, outcome, reason)``; may return False when the attempt was already over (the
#: dispatcher moved on): an officer pressing 1 then hears that the assignment went elsewhere.
OnResult = Callable[[int, str, str], Awaitable[bool | None]]

STATUS_PATH = "/api/twilio/status"
GATHER_PATH = "/api/twilio/gather"
LANGUAGE = "id-ID"
PROMPT = "Tekan 1 untuk menerima, 2 untuk mengulang."
THANKS = "Terima kasih. Penugasan diterima. Segera menuju lokasi."
NO_KEY = "Tidak ada tombol yang ditekan. Kami akan menghubungi petugas berikutnya."
UNKNOWN_BRIEFING = "Ada penugasan darurat dari pusat panggilan 112."
TOO_LATE = "Maaf, penugasan ini sudah dialihkan ke petugas lain."
TROUBLE = "Maaf, terjadi gangguan pada sistem. Silakan tekan 1 sekali lagi."
#: What Twilio accepts in the ``Twiml`` parameter and an SMS body (longer bodies are split or refused).
TWIML_MAX = 4000
SMS_MAX = 1600
#: Events Twilio should report; ``answered`` arrives as CallStatus ``in-progress``.
STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")
#: Terminal call statuses → attempt outcomes (``completed`` depends on whether 1 was pressed).
TERMINAL = {"no-answer": "no_answer", "busy": "busy", "failed": "failed", "canceled": "failed"}
#: Calls whose final status never arrived (a misrouted webhook) are forgotten after this long.
FORGET_AFTER = 3600.0
#: Bound on one API round trip; Twilio answers in well under a second.
HTTP_TIMEOUT = 10.0
TWILIO_API = "https://api.twilio.com"

_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_ENV = "CALLCENTER_TWILIO_"


class TwilioLineError(RuntimeError):
    """An API request failed (refused by Twilio, or Twilio unreachable); the message says which."""


class TwilioNotConfigured(ConfigError):
    """A credential or URL needed to use Twilio is missing; the message names the variables."""


class _RebasedHttpClient(TwilioHttpClient):  # type: ignore[misc]  # twilio is untyped
    """Sends what the client addresses to ``https://api.twilio.com`` to ``api_base`` instead (tests).

    Anything else is refused rather than sent, so a test can never reach the real Twilio; environment
    proxies are ignored for the same reason (the recorder listens on loopback).
    """

    def __init__(self, api_base: str, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self.api_base = api_base.rstrip("/")
        if self.session is not None:
            self.session.trust_env = False

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if url != TWILIO_API and not url.startswith(TWILIO_API + "/"):
            raise TwilioException(f"refusing to send {method} {url}: only {TWILIO_API} is rebased to {self.api_base}")
        return super().request(method, self.api_base + url[len(TWILIO_API) :], *args, **kwargs)


@dataclass
class _Call:
    briefing: str
    gather_timeout: int
    started: float
    sid: str | None = None
    accepted: bool = False


class TwilioLine:
    """Calls and texts duty lines through Twilio and turns its webhooks into attempt outcomes."""

    def __init__(self, config: TwilioConfig, on_result: OnResult) -> None:
        self.config = config
        self.on_result = on_result
        self._client: Any = None
        self._calls: dict[int, _Call] = {}
        #: Attempts whose outcome is settled: when, and whether it was an acceptance.
        self._finished: dict[int, tuple[float, bool]] = {}

    # -- configuration ---------------------------------------------------------------------------------

    @property
    def public_url(self) -> str:
        return self.config.public_url.rstrip("/")

    @property
    def can_text(self) -> bool:
        """Whether an SMS can be sent at all: account, token and sender number are set."""
        cfg = self.config
        return bool(cfg.account_sid.strip() and cfg.auth_token.strip() and cfg.from_number.strip())

    def _require(self, *names: str) -> None:
        missing = [n for n in names if not getattr(self.config, n).strip()]
        if missing:
            env = ", ".join(_ENV + n.upper() for n in missing)
            raise TwilioNotConfigured(f"Twilio is not configured: set {env}")

    def _client_or_fail(self, *needed: str) -> Any:
        """The twilio client, built at first use (so a centre without Twilio starts fine)."""
        self._require("account_sid", "auth_token", *needed)
        if self._client is None:
            cfg = self.config
            if cfg.api_base:
                http: TwilioHttpClient = _RebasedHttpClient(cfg.api_base, HTTP_TIMEOUT)
            else:
                http = TwilioHttpClient(timeout=HTTP_TIMEOUT)
            # A non-empty ``environment`` keeps the library from reading TWILIO_* (credentials, edge,
            # region) from os.environ: everything comes from our configuration.
            self._client = Client(
                cfg.account_sid, cfg.auth_token, account_sid=cfg.account_sid, http_client=http, environment={"-": "-"}
            )
        return self._client

    def callback_url(self, path: str, attempt_id: int) -> str:
        return f"{self.public_url}{path}?attempt={attempt_id}"

    # -- TwiML -----------------------------------------------------------------------------------------

    def twiml(self, attempt_id: int, briefing: str, gather_timeout: int, notice: str = "") -> str:
        """The call's script: the briefing and the key prompt in a Gather, then a goodbye if no key."""

        def build(text: str) -> str:
            response = VoiceResponse()
            if notice:
                response.say(notice, language=LANGUAGE)
            gather = response.gather(
                num_digits=1,
                timeout=gather_timeout,
                action=self.callback_url(GATHER_PATH, attempt_id),
                method="POST",
            )
            gather.say(text, language=LANGUAGE)
            gather.say(PROMPT, language=LANGUAGE)
            response.say(NO_KEY, language=LANGUAGE)
            response.hangup()
            return str(response.to_xml())

        xml = build(briefing)
        if len(xml) <= TWIML_MAX:
            return xml
        # Too long for the API: keep the longest start of the briefing that fits (escaping makes the
        # XML longer than the text, so search on the built document).
        low, high = 0, len(briefing)
        while low < high:
            mid = (low + high + 1) // 2
            if len(build(briefing[:mid].rstrip() + "…")) <= TWIML_MAX:
                low = mid
            else:
                high = mid - 1
        log.warning("twilio.briefing_truncated", attempt_id=attempt_id, length=len(briefing), kept=low)
        xml = build(briefing[:low].rstrip() + "…")
        return xml

    # -- API -------------------------------------------------------------------------------------------

    async def call(self, attempt_id: int, to: str, briefing: str, *, timeout: int, gather_timeout: int = 0) -> str:
        """Ring ``to`` for at most ``timeout`` seconds with the briefing; the call SID.

        ``gather_timeout`` is how long Twilio waits for a key after the prompt (default: ``timeout``).
        Raises :class:`TwilioNotConfigured`, :class:`TwilioLineError` or ``ValueError`` (a bad number).
        """
        if not _E164.match(to):
            raise ValueError(f"not an E.164 number: {to!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        client = self._client_or_fail("from_number", "public_url")
        gather = gather_timeout if gather_timeout > 0 else timeout
        self._forget_stale()
        state = _Call(briefing=briefing, gather_timeout=gather, started=time.monotonic())
        # Registered before the request: Twilio may call back before the API call has returned.
        self._calls[attempt_id] = state
        self._finished.pop(attempt_id, None)
        twiml = self.twiml(attempt_id, briefing, gather)
        try:
            created = await self._api(
                "calls.create",
                client.calls.create,
                to=to,
                from_=self.config.from_number,
                twiml=twiml,
                timeout=timeout,
                status_callback=self.callback_url(STATUS_PATH, attempt_id),
                status_callback_event=list(STATUS_EVENTS),
                status_callback_method="POST",
            )
        except BaseException:
            if self._calls.get(attempt_id) is state:
                del self._calls[attempt_id]
            raise
        sid = str(created.sid)
        state.sid = sid
        log.info("twilio.call_created", attempt_id=attempt_id, sid=sid, to=ref(to), status=created.status)
        return sid

    async def sms(self, to: str, body: str) -> str:
        """Text ``body`` (cut to what one SMS request carries) to ``to``; the message SID."""
        if not _E164.match(to):
            raise ValueError(f"not an E.164 number: {to!r}")
        client = self._client_or_fail("from_number")
        if len(body) > SMS_MAX:
            body = body[: SMS_MAX - 1] + "…"
        message = await self._api(
            "messages.create", client.messages.create, to=to, from_=self.config.from_number, body=body
        )
        sid = str(message.sid)
        # Rating links go to citizens: their number stays out of the log.
        log.info("twilio.sms_created", sid=sid, to=ref(to), status=message.status)
        return sid

    async def message(self, to: str, body: str, *, whatsapp: bool, status_callback: str | None = None) -> str:
        """Send ``body`` to ``to`` (E.164) by WhatsApp (``whatsapp:`` addresses on both sides, from
        ``whatsapp_from``) or by SMS (from ``from_number``), asking Twilio to report its progress to
        ``status_callback``; the message SID. Raises TwilioLineError when Twilio refuses it."""
        if not _E164.match(to):
            raise ValueError(f"not an E.164 number: {to!r}")
        sender = "whatsapp_from" if whatsapp else "from_number"
        client = self._client_or_fail(sender)
        prefix = "whatsapp:" if whatsapp else ""
        if len(body) > SMS_MAX:
            body = body[: SMS_MAX - 1] + "…"
        extra = {"status_callback": status_callback} if status_callback else {}
        message = await self._api(
            "messages.create",
            client.messages.create,
            to=prefix + to,
            from_=prefix + getattr(self.config, sender).strip(),
            body=body,
            **extra,
        )
        sid = str(message.sid)
        log.info("twilio.message_created", sid=sid, channel="whatsapp" if whatsapp else "sms", status=message.status)
        return sid

    async def _api(self, what: str, method: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(method, **kwargs)
        except TwilioRestException as exc:
            log.warning("twilio.api_refused", request=what, status=exc.status, code=exc.code, error=exc.msg)
            raise TwilioLineError(f"Twilio refused {what}: HTTP {exc.status}, code {exc.code}: {exc.msg}") from exc
        except (TwilioException, OSError) as exc:
            # requests' ConnectionError/Timeout are OSErrors.
            log.warning("twilio.api_failed", request=what, error=str(exc))
            raise TwilioLineError(f"Twilio {what} failed: {exc}") from exc

    async def close(self) -> None:
        client, self._client = self._client, None
        session = getattr(getattr(client, "http_client", None), "session", None)
        if session is not None:
            session.close()

    # -- webhooks (already authenticated by the caller) -----------------------------------------------

    def _forget_stale(self) -> None:
        now = time.monotonic()
        for attempt_id in [a for a, c in self._calls.items() if now - c.started > FORGET_AFTER]:
            del self._calls[attempt_id]
        for attempt_id in [a for a, (at, _acc) in self._finished.items() if now - at > FORGET_AFTER]:
            del self._finished[attempt_id]

    def _known(self, attempt_id: int, params: Mapping[str, str]) -> _Call | None:
        """The attempt's state, unless the webhook names another call than the one we placed."""
        state = self._calls.get(attempt_id)
        sid = params.get("CallSid", "")
        if state is not None and state.sid is not None and sid and sid != state.sid:
            log.warning("twilio.call_sid_mismatch", attempt_id=attempt_id, expected=state.sid, got=sid)
            return None
        return state

    async def _report(self, attempt_id: int, outcome: str, reason: str) -> bool:
        """Hand the outcome over; False only when the receiver says the attempt was already over."""
        log.info("twilio.outcome", attempt_id=attempt_id, outcome=outcome, reason=reason)
        return await self.on_result(attempt_id, outcome, reason) is not False

    async def handle_gather(self, attempt_id: int, params: Mapping[str, str]) -> str:
        """A key was pressed during the briefing: the TwiML to answer Twilio with."""
        digits = params.get("Digits", "")
        state = self._known(attempt_id, params)
        ended = self._finished.get(attempt_id)
        if state is None and attempt_id in self._calls:
            return _say_and_hang_up(TOO_LATE)  # another call's key press: not this attempt's
        if digits == "1":
            if ended is not None:
                # A retried webhook after the call ended, or a key after the outcome was settled.
                return _say_and_hang_up(THANKS if ended[1] else TOO_LATE)
            if state is not None and state.accepted:
                return _say_and_hang_up(THANKS)  # Twilio retried the webhook: reported already
            if state is None:  # unknown to this process (restarted since the call): still one report
                state = _Call(briefing="", gather_timeout=10, started=time.monotonic())
                self._calls[attempt_id] = state
            state.accepted = True
            try:
                recorded = await self._report(attempt_id, "accepted", "digit-1")
            except Exception:
                # Never tell the officer "accepted" unless it was recorded: let them press 1 again.
                state.accepted = False
                log.exception("twilio.accept_not_recorded", attempt_id=attempt_id)
                return self.twiml(attempt_id, state.briefing or UNKNOWN_BRIEFING, state.gather_timeout, TROUBLE)
            if not recorded:
                log.info("twilio.accept_too_late", attempt_id=attempt_id)
                self._end(attempt_id, accepted=False)
                return _say_and_hang_up(TOO_LATE)
            return _say_and_hang_up(THANKS)
        # 2 repeats; any other key is treated the same (the officer is still listening).
        briefing = state.briefing if state is not None and state.briefing else UNKNOWN_BRIEFING
        gather = state.gather_timeout if state is not None else 10
        log.info("twilio.briefing_repeated", attempt_id=attempt_id, digits=digits[:8])
        return self.twiml(attempt_id, briefing, gather)

    async def handle_status(self, attempt_id: int, params: Mapping[str, str]) -> None:
        """Call progress: report the attempt's outcome once, when the call has ended."""
        status = params.get("CallStatus", "")
        if attempt_id in self._finished:
            return  # a retried or late callback: the outcome is settled
        state = self._known(attempt_id, params)
        if state is None and attempt_id in self._calls:
            return  # another call's SID: not this attempt's news
        if state is not None and state.sid is None and params.get("CallSid"):
            state.sid = params["CallSid"]
        accepted = state is not None and state.accepted
        if status in TERMINAL and not accepted:
            outcome = TERMINAL[status]
        elif status in TERMINAL or status == "completed":
            if accepted:  # reported at the key press; the call has simply ended
                self._end(attempt_id, accepted=True)
                return
            outcome = "no_key"
        else:
            log.debug("twilio.progress", attempt_id=attempt_id, status=status)
            return
        # Settled before the await, so a concurrent duplicate callback cannot report twice.
        self._end(attempt_id, accepted=False)
        try:
            await self._report(attempt_id, outcome, status)
        except BaseException:
            self._finished.pop(attempt_id, None)
            if state is not None:
                self._calls[attempt_id] = state
            raise

    def _end(self, attempt_id: int, *, accepted: bool) -> None:
        self._calls.pop(attempt_id, None)
        self._finished[attempt_id] = (time.monotonic(), accepted)


def _say_and_hang_up(text: str) -> str:
    response = VoiceResponse()
    response.say(text, language=LANGUAGE)
    response.hangup()
    return str(response.to_xml())


__all__ = ["GATHER_PATH", "STATUS_PATH", "TwilioLine", "TwilioLineError", "TwilioNotConfigured"]
