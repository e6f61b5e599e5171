"""Advanced Mobile Location (AML, Android's Emergency Location Service) messages, parsed and checked.

A handset that dials 112 sends its position on its own, in one of two shapes (ETSI TS 103 625):

* **HTTPS**: a POST of ``name=value`` pairs — ``v``, ``emergency_number``, ``source``, ``time`` (ms since
  the epoch), ``location_latitude``, ``location_longitude``, ``location_accuracy`` (m),
  ``location_time`` (ms), ``location_source``, ``location_certainty`` (%), ``device_number`` …; every
  field is optional on the wire (:func:`parse_https`);
* **SMS**: ``A"ML=1;lt=+51.53321;lg=-0.12601;rd=14;top=20220131171748;lc=68;pm=W;si=…;ei=…;mcc=…;
  mnc=…;ml=126`` — degrees, radius in m, UTC ``yyyyMMddHHmmss``, confidence %, positioning method
  W/G/C/N (wifi/GPS/cell/none), then IMSI, IMEI, network codes and the message length
  (:func:`parse_sms`; the sender's number is the SMS's From).

A message without a usable position or number raises :class:`AmlError` (nothing is stored). IMSI and
IMEI are personal data and not needed to find anyone: they are dropped here, never kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from callcenter.forms.location import Fix, LocationError, accuracy, coordinates

#: ``location_source`` (HTTPS) words → our source names.
_HTTPS_SOURCES = {"gps": "gps", "wifi": "wifi", "cell": "cell", "fused": "fused", "network": "cell"}
#: ``pm`` (SMS) letters → our source names; ``N`` (none) means the message carries no position.
_SMS_METHODS = {"W": "wifi", "G": "gps", "C": "cell"}
SMS_PREFIXES = ('A"ML=1;', "AML=1;")
#: Fix times further in the future than this are a wrong clock: the age is then counted from receipt.
_CLOCK_SKEW = timedelta(minutes=10)
_MAX_FIELD = 64
#: HTTPS fields kept as (non-personal) evidence, beside the position itself.
_KEPT = ("v", "emergency_number", "source", "location_altitude", "location_floor")


class AmlError(LocationError):
    """An AML message that carries no position we may store; the message says why."""


def is_aml_sms(body: str) -> bool:
    return body.lstrip().startswith(SMS_PREFIXES)


def parse_https(form: Mapping[str, str], *, now: datetime | None = None) -> Fix:
    """The fix in an AML HTTPS message (the form fields as received)."""
    now = now or datetime.now(UTC)
    for key, value in form.items():
        if len(value) > _MAX_FIELD:
            raise AmlError(f"{key} is too long")
    if "location_latitude" not in form or "location_longitude" not in form:
        raise AmlError("no location_latitude/location_longitude")
    lat, lon = coordinates(form["location_latitude"], form["location_longitude"])
    number = form.get("device_number", "").strip()
    if not number:
        raise AmlError("no device_number: the fix cannot be matched to a call")
    source = _HTTPS_SOURCES.get(form.get("location_source", "").strip().lower(), "unknown")
    fixed_at = _epoch_ms(form.get("location_time")) or _epoch_ms(form.get("time"))
    details = {k: form[k][:_MAX_FIELD] for k in _KEPT if form.get(k)}
    return Fix(
        latitude=lat,
        longitude=lon,
        accuracy_m=accuracy(form.get("location_accuracy")),
        source=source,
        via="aml_https",
        fixed_at=_plausible(fixed_at, now),
        confidence=_percent(form.get("location_certainty")),
        number=number,
        details=details,
    )


def parse_sms(body: str, sender: str, *, now: datetime | None = None) -> Fix:
    """The fix in an AML SMS ``body`` received from ``sender``."""
    now = now or datetime.now(UTC)
    text = body.strip()
    if not text.startswith(SMS_PREFIXES):
        raise AmlError('not an AML SMS (no A"ML=1 header)')
    if len(text) > 320:
        raise AmlError("too long for an AML SMS")
    fields: dict[str, str] = {}
    for part in text.split(";")[1:]:
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise AmlError(f"field without '=': {part[:16]!r}")
        fields[key.strip().lower()] = value.strip()
    method = fields.get("pm", "").upper()
    if method == "N":
        raise AmlError("positioning method N: the handset had no position")
    if "lt" not in fields or "lg" not in fields:
        raise AmlError("no lt/lg")
    lat, lon = coordinates(fields["lt"], fields["lg"])
    if not sender.strip():
        raise AmlError("no sender number: the fix cannot be matched to a call")
    details: dict[str, object] = {}
    if "ml" in fields:
        # The length the handset counted: a mismatch means a mangled message. The position is still
        # worth showing (it passed the range checks); the flag says how far to trust it.
        details["length_ok"] = fields["ml"].isdigit() and int(fields["ml"]) == len(text)
    for key in ("mcc", "mnc"):
        if fields.get(key, "").isdigit() and len(fields[key]) <= 3:
            details[key] = fields[key]
    return Fix(
        latitude=lat,
        longitude=lon,
        accuracy_m=accuracy(fields.get("rd")),
        source=_SMS_METHODS.get(method, "unknown"),
        via="aml_sms",
        fixed_at=_plausible(_sms_time(fields.get("top")), now),
        confidence=_percent(fields.get("lc")),
        number=sender.strip(),
        details=details,
    )


def _epoch_ms(value: str | None) -> datetime | None:
    if not value or not value.strip().isdigit() or len(value.strip()) > 15:
        return None
    try:
        return datetime.fromtimestamp(int(value.strip()) / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _sms_time(value: str | None) -> datetime | None:
    if not value or len(value) != 14 or not value.isdigit():
        return None
    try:
        return datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def _plausible(at: datetime | None, now: datetime) -> datetime | None:
    if at is None or at > now + _CLOCK_SKEW or at.year < 2000:
        return None
    return at


def _percent(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    number = int(value.strip())
    return number if 0 < number <= 100 else None


__all__ = ["AmlError", "is_aml_sms", "parse_https", "parse_sms"]
