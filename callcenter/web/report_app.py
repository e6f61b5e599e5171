"""The citizen report app ``/lapor`` (``docs/report-app.md``): verify a phone number once, then report in one hold.

Public, installable (web app manifest, a service worker that caches the app shell and never an API
answer). The phone number is verified once by an SMS code through the Twilio line; the browser then
holds a long-lived random device token in an httpOnly, SameSite=Strict cookie scoped to ``/lapor``
(the database keeps its SHA-256, ``store/app_numbers.py``). A report is a category held 3 s on the
page, the browser's fix when it has one, and an optional photo; it is stored (``store/reports.py``),
which queues it for the call-takers, and the citizen is told a call-taker will call back.

Abuse: every request counts against the public per-address limit (``[location] public_per_minute``),
codes against ``[report] codes_per_address_hour`` and the number's own codes per hour; reports against
the per-number and per-address limits, checked when storing. A number blocked after false reports gets
a clear message (and 403) — it can always call 112. Plain logs carry ``ref(number)``, never the number.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import structlog
from aiohttp import BodyPartReader, web

from callcenter.forms.categories import CATEGORIES, CATEGORY_CODES
from callcenter.forms.location import LocationError, accuracy, coordinates
from callcenter.forms.phone import in_country, normalize
from callcenter.logs import ref
from callcenter.store.app_numbers import CODE_DIGITS, Device
from callcenter.store.quota import QuotaExceeded
from callcenter.store.reports import AppBlocked, NewReport
from callcenter.supervision.ratings import textable
from callcenter.web.access import Reply, error, json_object
from callcenter.web.clients import client_group
from callcenter.web.keys import APP_NUMBERS, CLIENTS, CODE_LIMITER, CONFIG, LIMITER, REPORTS, TWILIO
from callcenter.web.uploads import read_text, save_photo

log = structlog.get_logger("callcenter.web.lapor")
routes = web.RouteTableDef()

APP_PATH = "/lapor/"
API_PREFIX = "/lapor/api/"
COOKIE = "lapor_device"
STATIC = Path(__file__).parent / "static" / "lapor"
#: The app shell: name → content type. Only these are served (no path from the URL reaches the disk).
ASSETS = {
    "app.js": "text/javascript",
    "app.css": "text/css",
    "sw.js": "text/javascript",
    "manifest.webmanifest": "application/manifest+json",
    "icon-192.png": "image/png",
    "icon-512.png": "image/png",
}
#: How long a category is held before the report goes (the page's timer; said here for the state).
HOLD_MS = 3000
CODE_TEXT = "Kode Lapor 112 Anda: {code}. Berlaku {minutes} menit. Jangan berikan kode ini kepada siapa pun."
BLOCKED = (
    "Nomor ini diblokir dari aplikasi Lapor 112 karena beberapa laporan palsu. "
    "Anda tetap dapat menelepon 112 kapan saja."
)
TEXT_FIELDS = ("category", "latitude", "longitude", "accuracy")
_MAX_TEXT_PART = 64
#: What the citizen reads when the shared upload helpers (``web/uploads.py``) refuse a part.
_UPLOAD_PESAN = {
    413: "Foto atau isian terlalu besar.",
    415: "Foto harus berformat JPEG atau PNG.",
    422: "Isian laporan tidak valid.",
}
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self' blob:; "
        "manifest-src 'self'; worker-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "geolocation=(self), camera=(self)",
}


def refuse(status: int, message: str, pesan: str, **extra: object) -> web.Response:
    """An error for the citizen: ``error`` in English for logs and scripts, ``pesan`` in Indonesian for the page."""
    return error(status, message, pesan=pesan, **extra)


def _client(request: web.Request) -> str:
    return client_group(request.app[CLIENTS].address(request))


async def _check_limit(request: web.Request) -> None:
    if not await request.app[LIMITER].allow(_client(request)):
        raise Reply(refuse(429, "too many requests", "Terlalu banyak permintaan. Coba lagi sebentar lagi."))


def _enabled(request: web.Request) -> None:
    if not request.app[CONFIG].report.enabled:
        raise Reply(refuse(404, "the report app is switched off", "Aplikasi Lapor 112 tidak aktif."))


async def _device(request: web.Request) -> Device | None:
    token = request.cookies.get(COOKIE, "")
    if not token or len(token) > 128:
        return None
    return await request.app[APP_NUMBERS].device(token)


def upload_dir(configured: str) -> Path:
    """Where report photos go (``[report] upload_dir``), absolute."""
    return Path(configured).resolve()


def _masked(number: str) -> str:
    """``+628••••••7890``: enough for the citizen to recognise their number, not enough to read it off a screen."""
    return number[:4] + "•" * max(0, len(number) - 8) + number[-4:]


# -- the app shell ---------------------------------------------------------------------------------------


@routes.get("/lapor")
async def app_redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect(APP_PATH)


@routes.get(APP_PATH)
async def app_page(request: web.Request) -> web.StreamResponse:
    """Public: the app's one page (it holds no data; it asks ``/lapor/api/state``)."""
    _enabled(request)
    return web.FileResponse(
        STATIC / "index.html", headers={**PAGE_HEADERS, "Content-Type": "text/html", "Cache-Control": "no-cache"}
    )


@routes.get(APP_PATH + "{name}")
async def asset(request: web.Request) -> web.StreamResponse:
    """Public: one file of the app shell. ``no-cache``: the browser revalidates, so a fix reaches every phone."""
    name = request.match_info["name"]
    if name not in ASSETS:
        return error(404, "not found")
    headers = {**PAGE_HEADERS, "Content-Type": ASSETS[name], "Cache-Control": "no-cache"}
    if name == "sw.js":
        headers["Service-Worker-Allowed"] = APP_PATH
    return web.FileResponse(STATIC / name, headers=headers)


# -- verification ----------------------------------------------------------------------------------------


@routes.get(API_PREFIX + "state")
async def state(request: web.Request) -> web.Response:
    """Public: whether this browser is verified (and blocked), and what the report screen offers."""
    _enabled(request)
    await _check_limit(request)
    device = await _device(request)
    cfg = request.app[CONFIG].report
    body: dict[str, Any] = {
        "verified": device is not None,
        "blocked": bool(device and device.blocked),
        "number": _masked(device.number) if device else None,
        "categories": [{"code": c.code, "label": c.label_id} for c in CATEGORIES],
        "hold_ms": HOLD_MS,
        "photo_max_bytes": cfg.photo_max_bytes,
        "code_digits": CODE_DIGITS,
    }
    if body["blocked"]:
        body["pesan"] = BLOCKED
    return web.json_response(body, headers={"Cache-Control": "no-store"})


def _number(body: dict[str, Any], request: web.Request) -> str:
    """The citizen's E.164 mobile number of the centre's own country: a code is never texted abroad (an
    OTP form is a favourite of SMS-pumping fraud, which sends codes to premium numbers anywhere)."""
    raw = body.get("number")
    region = request.app[CONFIG].numbers.default_region
    number = normalize(raw if isinstance(raw, str) else "", region).e164
    if number is None or not textable(number) or not in_country(number, region):
        raise Reply(
            refuse(
                422,
                "invalid input",
                "Masukkan nomor ponsel yang valid, misalnya 0812 3456 7890.",
                fields={"number": "not a mobile number"},
            )
        )
    return number


@routes.post(API_PREFIX + "code")
async def send_code(request: web.Request) -> web.Response:
    """Public: text a verification code to ``{"number"}`` (limited per number and per address)."""
    _enabled(request)
    await _check_limit(request)
    number = _number(await json_object(request), request)
    line = request.app.get(TWILIO)
    if line is None or not line.can_text:
        return refuse(503, "SMS is not configured", "Layanan SMS belum tersedia. Dalam keadaan darurat, telepon 112.")
    if not await request.app[CODE_LIMITER].allow(_client(request)):
        return refuse(429, "too many codes from this address", "Terlalu banyak permintaan kode. Coba lagi nanti.")
    issue = await request.app[APP_NUMBERS].request_code(number)
    if issue.outcome == "blocked":
        log.info("lapor.code_refused", number=ref(number), reason="blocked")
        return refuse(403, "this number is blocked from the app", BLOCKED, blocked=True)
    if issue.outcome == "limited":
        log.info("lapor.code_refused", number=ref(number), reason="limited")
        return refuse(429, "too many codes for this number", "Terlalu banyak kode untuk nomor ini. Coba lagi nanti.")
    minutes = request.app[CONFIG].report.code_minutes
    try:
        sid = await line.sms(number, CODE_TEXT.format(code=issue.code, minutes=minutes))
    except Exception as exc:  # Twilio refused or is unreachable: the citizen is told, 112 still works
        # Twilio's message may quote the number: only its kind and code go to the log.
        log.warning("lapor.code_failed", number=ref(number), error=type(exc).__name__, code=getattr(exc, "code", None))
        return refuse(502, "the SMS could not be sent", "SMS tidak dapat dikirim. Coba lagi atau telepon 112.")
    log.info("lapor.code_sent", number=ref(number), sid=sid)
    return web.json_response({"sent": True, "expires_in": minutes * 60}, status=202)


_VERIFY_REFUSALS = {
    "wrong": (400, "wrong code", "Kode salah. Periksa SMS Anda dan coba lagi."),
    "expired": (410, "the code has expired", "Kode sudah kedaluwarsa. Minta kode baru."),
    "no_code": (400, "no code was requested for this number", "Minta kode terlebih dahulu."),
    "too_many": (429, "too many wrong codes", "Terlalu banyak kode salah. Minta kode baru."),
    "blocked": (403, "this number is blocked from the app", BLOCKED),
}


@routes.post(API_PREFIX + "verify")
async def verify(request: web.Request) -> web.Response:
    """Public: ``{"number", "code"}``; a right code sets the device cookie (the token's only copy)."""
    _enabled(request)
    await _check_limit(request)
    body = await json_object(request)
    number = _number(body, request)
    code = body.get("code")
    if not isinstance(code, str) or len(code) != CODE_DIGITS or not code.isascii() or not code.isdigit():
        return refuse(422, "invalid input", f"Kode terdiri dari {CODE_DIGITS} angka.", fields={"code": "6 digits"})
    result = await request.app[APP_NUMBERS].verify(number, code)
    if result.outcome != "verified":
        log.info("lapor.verify_refused", number=ref(number), reason=result.outcome)
        status, message, pesan = _VERIFY_REFUSALS[result.outcome]
        return refuse(status, message, pesan, attempts_left=result.attempts_left)
    log.info("lapor.verified", number=ref(number))
    response = web.json_response({"verified": True, "number": _masked(number)})
    response.set_cookie(
        COOKIE,
        result.token,
        max_age=request.app[CONFIG].report.device_days * 86400,
        path="/lapor",
        httponly=True,
        samesite="Strict",
        secure=True if request.app[CLIENTS].is_https(request) else None,
    )
    return response


@routes.post(API_PREFIX + "forget")
async def forget(request: web.Request) -> web.Response:
    """Public: this browser forgets its verification (the token is revoked, the cookie cleared)."""
    await _check_limit(request)
    device = await _device(request)
    if device is not None:
        await request.app[APP_NUMBERS].revoke(device.id)
    response = web.json_response({"verified": False})
    response.del_cookie(COOKIE, path="/lapor")
    return response


# -- reports ---------------------------------------------------------------------------------------------


async def _read_form(
    request: web.Request, device: Device, directory: Path, limit: int
) -> tuple[dict[str, str], str | None]:
    """The report form's text fields and the stored photo's name: multipart/form-data (what the page's
    FormData sends), or a plain urlencoded form without a photo (scripts)."""
    fields: dict[str, str] = {}
    if request.content_type == "application/x-www-form-urlencoded":
        for key, value in (await request.post()).items():
            if key not in TEXT_FIELDS or not isinstance(value, str):
                raise Reply(refuse(422, "invalid input", "Isian tidak dikenal.", fields={key[:64]: "unknown field"}))
            if len(value) > _MAX_TEXT_PART:
                raise Reply(refuse(413, f"{key} too long", _UPLOAD_PESAN[413]))
            fields[key] = value.strip()
        return fields, None
    if not request.content_type.startswith("multipart/"):
        raise Reply(refuse(415, "send multipart/form-data", "Format laporan tidak dikenal."))
    photo: str | None = None
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise Reply(refuse(400, "nested multipart is not accepted", "Format laporan tidak dikenal."))
            if part.name in TEXT_FIELDS and part.name not in fields:
                fields[part.name] = (await read_text(part, _MAX_TEXT_PART)).strip()
            elif part.name == "photo" and photo is None:
                photo = await save_photo(part, directory, str(device.id), limit)
            else:
                raise Reply(
                    refuse(422, "invalid input", "Isian tidak dikenal.", fields={str(part.name)[:64]: "unknown field"})
                )
    except BaseException as exc:
        if photo is not None:
            with contextlib.suppress(FileNotFoundError):
                (directory / photo).unlink()
        if isinstance(exc, Reply) and exc.response.status in _UPLOAD_PESAN:
            # The shared upload helpers answer in English only: the citizen reads Indonesian.
            body = json.loads(exc.response.text or "{}")
            if "pesan" not in body:
                body["pesan"] = _UPLOAD_PESAN[exc.response.status]
                raise Reply(web.json_response(body, status=exc.response.status)) from None
        raise
    return fields, photo


def _validated(fields: dict[str, str], number: str, group: str, device: Device, photo: str | None) -> NewReport:
    category = fields.get("category", "")
    if category not in CATEGORY_CODES:
        raise Reply(refuse(422, "invalid input", "Pilih jenis kejadian.", fields={"category": "unknown category"}))
    lat = lon = acc = None
    if fields.get("latitude") or fields.get("longitude"):
        try:
            lat, lon = coordinates(fields.get("latitude"), fields.get("longitude"))
            acc = accuracy(fields.get("accuracy"))
        except LocationError as exc:
            raise Reply(refuse(422, "invalid input", "Lokasi tidak valid.", fields={"position": str(exc)})) from None
    return NewReport(number, category, group, lat, lon, acc, photo, device.id)


@routes.post(API_PREFIX + "reports")
async def create_report(request: web.Request) -> web.Response:
    """Public (device cookie): multipart ``category``, ``latitude``/``longitude``/``accuracy`` (optional),
    ``photo`` (optional JPEG/PNG ≤ ``[report] photo_max_bytes``). 201 once stored and queued."""
    _enabled(request)
    await _check_limit(request)
    device = await _device(request)
    if device is None:
        return refuse(401, "verify your number first", "Verifikasi nomor ponsel Anda terlebih dahulu.")
    if device.blocked:
        return refuse(403, "this number is blocked from the app", BLOCKED, blocked=True)
    cfg = request.app[CONFIG].report
    if request.content_length is not None and request.content_length > cfg.photo_max_bytes + 64 * 1024:
        return refuse(413, f"photo larger than {cfg.photo_max_bytes} bytes", "Foto terlalu besar.")
    directory = upload_dir(cfg.upload_dir)
    fields, photo = await _read_form(request, device, directory, cfg.photo_max_bytes)
    try:
        new = _validated(fields, device.number, _client(request), device, photo)
        report = await request.app[REPORTS].create(new)
    except BaseException as exc:
        if photo is not None:  # nothing refers to the photo of a refused report
            with contextlib.suppress(FileNotFoundError):
                (directory / photo).unlink()
        if isinstance(exc, AppBlocked):
            return refuse(403, "this number is blocked from the app", BLOCKED, blocked=True)
        if isinstance(exc, QuotaExceeded):
            log.info("lapor.report_refused", number=ref(device.number), reason=str(exc))
            return refuse(429, str(exc), "Terlalu banyak laporan. Jika darurat, telepon 112.")
        raise
    log.info("lapor.reported", report_id=report.id, number=ref(device.number), photo=photo is not None)
    return web.json_response(
        {"report": {"id": report.id, "status": report.status, "created_at": report.created_at.isoformat()}},
        status=201,
    )


__all__ = ["API_PREFIX", "APP_PATH", "COOKIE", "routes"]
