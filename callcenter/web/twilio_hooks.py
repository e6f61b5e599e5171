"""Twilio's webhooks: ``POST /api/twilio/status`` and ``POST /api/twilio/gather`` (``docs/dispatch.md``).

Twilio, not a browser, calls these: they carry no session and no CSRF token (``auth.PUBLIC_POST_PATHS``
lets them through the CSRF middleware) and are authenticated by ``X-Twilio-Signature`` instead, an
HMAC-SHA1 with the account's auth token over the URL Twilio requested plus the form parameters. That
URL is rebuilt from the configured ``public_url`` and the request's raw path and query — never from
the Host header, which differs behind the TLS proxy and which a forger controls. A missing or wrong
signature gets 403 (logged as ``twilio.signature_rejected``) before anything else is looked at.

The :class:`~callcenter.dispatch.twilio_line.TwilioLine` comes from the app under ``web.keys.TWILIO``, put
there by the composition root; without one (Twilio not in use) both webhooks answer 503.
"""

from __future__ import annotations

import structlog
from aiohttp import web
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from callcenter.dispatch.twilio_line import GATHER_PATH, STATUS_PATH, TwilioLine
from callcenter.supervision.leaders import MESSAGE_STATUS_PATH
from callcenter.web.access import error
from callcenter.web.auth import PUBLIC_POST_PATHS
from callcenter.web.keys import LEADER_ALERTS, TWILIO

log = structlog.get_logger("callcenter.twilio")
routes = web.RouteTableDef()

SIGNATURE_HEADER = "X-Twilio-Signature"
TWIML = "text/xml"

# The CSRF middleware must let Twilio through, and only on these paths.
_HOOKS = {STATUS_PATH, GATHER_PATH, MESSAGE_STATUS_PATH}
assert _HOOKS <= PUBLIC_POST_PATHS, "twilio webhooks missing from auth.PUBLIC_POST_PATHS"


async def _verified(
    request: web.Request, query: str = "attempt"
) -> tuple[TwilioLine, int, MultiDict[str]] | web.Response:
    """The line, the id in ``query`` (an attempt, an alert) and the form parameters of a genuine Twilio
    request, or the refusal."""
    signed = await verify(request)
    if isinstance(signed, web.Response):
        return signed
    line, params = signed
    raw = request.query.get(query, "")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        return error(400, f"{query} must be a positive integer")
    return line, int(raw), params


async def verify(request: web.Request) -> tuple[TwilioLine, MultiDict[str]] | web.Response:
    """The line and the form parameters of a request Twilio really signed, or the refusal (403/503)."""
    line = request.app.get(TWILIO)
    if line is None:
        return error(503, "twilio is not configured")
    token = line.config.auth_token
    if not token or not line.config.public_url:
        # An empty key would make every signature forgeable: refuse instead of "validating".
        log.error("twilio.webhook_unconfigured", path=request.path)
        return error(503, "twilio is not configured")
    form = await request.post()
    params: MultiDict[str] = MultiDict()
    for key, value in form.items():
        if not isinstance(value, str):
            return error(400, "unexpected file upload")
        params.add(key, value)
    signature = request.headers.get(SIGNATURE_HEADER)
    url = line.public_url + request.raw_path
    if not signature:
        return _rejected(request, url, "missing", params)
    # The legacy auth-token scheme (HMAC-SHA1), the one Twilio uses for these calls; the comparison
    # inside is constant-time.
    if RequestValidator(token).validate(url, params, signature) is not True:
        return _rejected(request, url, "invalid", params)
    return line, params


def _rejected(request: web.Request, url: str, why: str, params: MultiDict[str]) -> web.Response:
    log.warning(
        "twilio.signature_rejected",
        path=request.path,
        url=url,
        reason=why,
        remote=request.remote,
        call_sid=params.get("CallSid", "")[:64],
        message_sid=params.get("MessageSid", "")[:64],
    )
    return error(403, "invalid twilio signature")


@routes.post(STATUS_PATH)
async def status(request: web.Request) -> web.StreamResponse:
    """Call progress (initiated, ringing, answered, completed/busy/no-answer/failed/canceled)."""
    verified = await _verified(request)
    if isinstance(verified, web.Response):
        return verified
    line, attempt_id, params = verified
    await line.handle_status(attempt_id, params)
    return web.Response(status=204)


@routes.post(GATHER_PATH)
async def gather(request: web.Request) -> web.StreamResponse:
    """The key the officer pressed: thanks (1) or the briefing again (2), as TwiML."""
    verified = await _verified(request)
    if isinstance(verified, web.Response):
        return verified
    line, attempt_id, params = verified
    twiml = await line.handle_gather(attempt_id, params)
    return web.Response(text=twiml, content_type=TWIML, charset="utf-8")


@routes.post(MESSAGE_STATUS_PATH)
async def message_status(request: web.Request) -> web.StreamResponse:
    """Delivery progress of an alert to an agency leader (queued, sent, delivered, read, failed,
    undelivered); a WhatsApp message that failed is followed by an SMS (``supervision/leaders.py``)."""
    verified = await _verified(request, "alert")
    if isinstance(verified, web.Response):
        return verified
    _, alert_id, params = verified
    alerts = request.app.get(LEADER_ALERTS)
    if alerts is None or not await alerts.on_status(alert_id, params):
        return error(404, "no such alert")
    return web.Response(status=204)
