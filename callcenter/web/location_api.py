"""Where the caller is: the AML receiver, AML by SMS, and the SMS location link (``docs/location.md``).

Public endpoints, each with its own protection instead of a session (all in the route-table audit's
public list and in ``auth.PUBLIC_POST_PATHS``/``PUBLIC_POST_PREFIXES``):

* ``POST /aml`` — Android's AML over HTTPS, from the handset through Google's ELS or an operator.
  Guarded by a shared secret (``X-AML-Key`` header or ``?key=``) and/or an address allowlist
  (``[location]``); neither configured → 503 (the receiver is off). A message that passes the guard
  is always answered 200, as the specification asks, but only a valid position is stored.
* ``POST /api/twilio/sms`` — inbound SMS through Twilio Messaging, signature checked like the other
  Twilio webhooks; an AML SMS (``A"ML=1;…``) is stored like the HTTPS form. Answered with empty TwiML.
* ``GET``/``POST /l/{token}`` — the page behind the link a call-taker texts to the caller. The random
  token is the credential; it works for one call, ``link_minutes`` long, for ``link_max_fixes``
  positions; every address is limited to ``public_per_minute`` requests.

Every stored fix goes at once to the console the call is connected to (``LiveHub.send_to_call``),
as ``{"type": "location", "call_id", "fix"}``; the pop (``build_pop``) carries the call's fixes too.
"""

from __future__ import annotations

import hmac
import re
import secrets
from datetime import timedelta

import structlog
from aiohttp import web

from callcenter.forms.aml import AmlError, is_aml_sms, parse_https, parse_sms
from callcenter.forms.location import Fix, LocationError, browser_fix, one_gsm7_sms
from callcenter.forms.phone import normalize
from callcenter.store import utcnow
from callcenter.store.locations import Matched, fix_json
from callcenter.store.roles import CENTRE_ROLES
from callcenter.supervision.ratings import textable
from callcenter.web.access import error, require, user_of
from callcenter.web.citizen_page import citizen_page
from callcenter.web.keys import CALLS, CONFIG, LIMITER, LOCATIONS, NEWS, TWILIO
from callcenter.web.news import LOCATION_TOPIC
from callcenter.web.twilio_hooks import verify

log = structlog.get_logger("callcenter.web.location")
routes = web.RouteTableDef()

AML_PATH = "/aml"
SMS_PATH = "/api/twilio/sms"
LINK_PATH = "/l/"
AML_KEY_HEADER = "X-AML-Key"
#: One GSM-7 SMS in Indonesian; ``{link}`` is ``{public_url}/l/{token}``.
LINK_TEXT = "112: Petugas meminta lokasi Anda. Buka {link} lalu izinkan akses lokasi. Gratis, tanpa aplikasi."
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_CALL_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    # The page asks for the position of its own origin only.
    "Permissions-Policy": "geolocation=(self)",
}


def _publish(request: web.Request, matched: Matched) -> None:
    """Announce the stored fix: every node re-reads it and shows it on the console its call is connected
    to there (``web/news.py``; ``location.shown`` says how many consoles got it)."""
    news = request.app.get(NEWS)
    if matched.call is not None and news is not None:
        news.announce(LOCATION_TOPIC, matched.fix.id)


async def _store_fix(request: web.Request, fix: Fix) -> Matched | None:
    """Store an AML fix against its number's live or recent call; None when the number is unusable."""
    cfg = request.app[CONFIG]
    number = normalize(fix.number, cfg.numbers.default_region).e164
    if number is None:
        log.warning("location.aml_malformed", via=fix.via, reason="device number is not a phone number")
        return None
    matched = await request.app[LOCATIONS].receive(fix, number)
    _publish(request, matched)
    if matched.call is None:
        log.info("location.unmatched", fix_id=matched.fix.id, via=fix.via)
    return matched


# -- AML over HTTPS ------------------------------------------------------------------------------------


def _aml_refusal(request: web.Request) -> web.Response | None:
    cfg = request.app[CONFIG].location
    if not cfg.aml_secret and not cfg.aml_allow:
        log.error("location.aml_unconfigured")
        return error(503, "the AML receiver is not configured")
    if not cfg.allowed(request.remote):
        log.warning("location.aml_rejected", reason="address", remote=request.remote)
        return error(403, "address not allowed")
    if cfg.aml_secret:
        given = request.headers.get(AML_KEY_HEADER) or request.query.get("key", "")
        if not hmac.compare_digest(given.encode(), cfg.aml_secret.encode()):
            log.warning("location.aml_rejected", reason="secret", remote=request.remote)
            return error(403, "wrong or missing AML key")
    return None


@routes.post(AML_PATH)
async def aml(request: web.Request) -> web.StreamResponse:
    """Public (secret/allowlist): an AML HTTPS message. 200 to anything past the guard."""
    refused = _aml_refusal(request)
    if refused is not None:
        return refused
    try:
        form = await request.post()
    except ValueError as exc:  # a body that is not a form at all
        log.warning("location.aml_malformed", via="aml_https", reason=str(exc)[:120])
        return web.Response(text="OK")
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    try:
        fix = parse_https(fields)
    except (AmlError, LocationError) as exc:
        log.warning("location.aml_malformed", via="aml_https", reason=str(exc))
        return web.Response(text="OK")
    await _store_fix(request, fix)
    return web.Response(text="OK")


# -- AML by SMS (Twilio Messaging inbound webhook) -----------------------------------------------------


@routes.post(SMS_PATH)
async def inbound_sms(request: web.Request) -> web.StreamResponse:
    """Twilio (signature checked): an SMS to our number; an AML one is stored as location evidence."""
    signed = await verify(request)
    if isinstance(signed, web.Response):
        return signed
    _line, params = signed
    body, sender = params.get("Body", ""), params.get("From", "")
    if not is_aml_sms(body):
        # Nothing else arrives by SMS yet; the content is personal data and stays out of the log.
        log.info("location.sms_ignored", message_sid=params.get("MessageSid", "")[:64], length=len(body))
    else:
        try:
            await _store_fix(request, parse_sms(body, sender))
        except (AmlError, LocationError) as exc:
            log.warning("location.aml_malformed", via="aml_sms", reason=str(exc))
    return web.Response(text=EMPTY_TWIML, content_type="text/xml", charset="utf-8")


# -- the location link ---------------------------------------------------------------------------------


@routes.post("/api/calls/{call_id}/location-link")
@require(*CENTRE_ROLES)
async def send_link(request: web.Request) -> web.StreamResponse:
    """Text the caller a link that reports their browser's position to this call's pop."""
    app = request.app
    cfg = app[CONFIG]
    call_id = request.match_info["call_id"]
    call = await app[CALLS].get_call(call_id) if _CALL_ID.match(call_id) else None
    if call is None:
        return error(404, "no such call")
    number = call.caller_number
    if not number or not textable(number):
        return error(409, "the caller's number cannot receive an SMS")
    now = utcnow()
    if call.ended_at is not None and call.ended_at < now - timedelta(minutes=cfg.location.match_minutes):
        return error(409, "the call ended too long ago")
    line = app.get(TWILIO)
    if line is None or not line.can_text or not cfg.twilio.public_url:
        return error(503, "SMS is not configured (Twilio credentials, sender number and public URL)")
    locations = app[LOCATIONS]
    per_call, per_number = await locations.links_sent(call_id=call.id, number=number, since=now - timedelta(hours=1))
    if per_call >= cfg.location.links_per_call or per_number >= cfg.location.links_per_number_hour:
        return error(429, "too many location links for this caller; ask by voice")
    token = secrets.token_urlsafe(12)
    link = await locations.create_link(
        call, number, token, user_id=user_of(request).id, ttl=timedelta(minutes=cfg.location.link_minutes)
    )
    text = LINK_TEXT.format(link=f"{cfg.twilio.public_url.rstrip('/')}{LINK_PATH}{token}")
    if not one_gsm7_sms(text):
        # A public URL too long (or with characters outside GSM-7) would split the text: shorter still reaches.
        text = f"112: buka {cfg.twilio.public_url.rstrip('/')}{LINK_PATH}{token} untuk mengirim lokasi Anda."
    try:
        sid = await line.sms(number, text)
    except Exception as exc:  # Twilio refused or is unreachable: say so, the call-taker asks by voice
        log.warning("location.link_failed", call_id=call.id, link_id=link.id, error=str(exc))
        await locations.set_link_status(link.id, "failed")
        return error(502, "the SMS could not be sent")
    await locations.set_link_status(link.id, "sent", sid)
    log.info("location.link_sent", call_id=call.id, link_id=link.id, sid=sid)
    body = {"id": link.id, "call_id": call.id, "status": "sent", "expires_at": link.expires_at.isoformat()}
    return web.json_response({"link": body}, status=202)


async def _limited(request: web.Request) -> bool:
    limiter = request.app.get(LIMITER)
    return limiter is not None and not await limiter.allow(request.remote)


def _page(title: str, body: str, status: int = 200, *, script: bool = False) -> web.Response:
    head = '<link rel="stylesheet" href="/static/locate.css">'
    if script:
        head += '<script src="/static/locate.js" defer></script>'
    return citizen_page(title, body, testid="locate-page", headers=PAGE_HEADERS, status=status, head=head)


_ASK = (
    "<p>Pusat panggilan 112 meminta lokasi Anda agar bantuan dapat menemukan Anda.</p>"
    '<p><button type="button" id="send" data-testid="locate-send">Kirim lokasi saya</button> '
    '<button type="button" id="stop" data-testid="locate-stop" hidden>Berhenti</button></p>'
    '<p id="status" data-testid="locate-status" role="status">'
    "Tekan tombol, lalu izinkan akses lokasi pada browser Anda.</p>"
)


@routes.get(LINK_PATH + "{token}")
async def link_page(request: web.Request) -> web.StreamResponse:
    """Public (token): the page that asks the browser for its position."""
    if await _limited(request):
        return _page("Terlalu banyak permintaan", "<p>Coba lagi sebentar lagi.</p>", 429)
    token = request.match_info["token"]
    link = await request.app[LOCATIONS].link(token) if _TOKEN.match(token) else None
    if link is None:
        return _page("Tautan tidak dikenal", "<p>Tautan lokasi ini tidak dikenal.</p>", 404)
    if link.expires_at <= utcnow():
        return _page("Tautan kedaluwarsa", "<p>Tautan ini sudah tidak berlaku. Hubungi 112 bila perlu.</p>", 410)
    return _page("Kirim lokasi ke 112", _ASK, script=True)


@routes.post(LINK_PATH + "{token}")
async def link_fix(request: web.Request) -> web.StreamResponse:
    """Public (token): one browser position, JSON ``{latitude, longitude, accuracy}``."""
    if await _limited(request):
        return error(429, "too many requests")
    token = request.match_info["token"]
    locations = request.app[LOCATIONS]
    link = await locations.link(token) if _TOKEN.match(token) else None
    if link is None:
        return error(404, "unknown link")
    try:
        fix = browser_fix(await request.json(), number=link.number)
    except ValueError as exc:  # bad JSON, or a LocationError naming the field
        return error(422, str(exc) if isinstance(exc, LocationError) else "body must be JSON")
    matched = await locations.receive_from_link(link, fix, max_fixes=request.app[CONFIG].location.link_max_fixes)
    if matched is None:
        return error(410, "this link has expired")
    _publish(request, matched)
    return web.json_response({"received": fix_json(matched.fix)["received_at"]})


__all__ = ["AML_PATH", "LINK_PATH", "LINK_TEXT", "SMS_PATH", "routes"]
