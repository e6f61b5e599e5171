"""A position of a caller (or an officer) as one value, whichever way it reached us.

Three ways in today: Android's Advanced Mobile Location over HTTPS or SMS (``forms/aml.py``) and the
browser's Geolocation API behind the SMS link a call-taker sends (``/l/{token}``). Each says how sure
it is differently, so a :class:`Fix` keeps the accuracy radius *and* the confidence it is quoted at:
AML's ``lc`` (often 68 %), the browser's ``coords.accuracy`` (95 % by the W3C specification).

Validation lives here, with no web imports: what is invalid is never stored (``LocationError`` names
why), and a caller whose position we cannot trust is better shown no position than a wrong one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: How the fix reached us.
VIAS = ("aml_https", "aml_sms", "link", "officer")
#: What produced it, as far as the sender says.
SOURCES = ("gps", "wifi", "cell", "fused", "browser", "unknown")
#: Confidence of the browser's ``coords.accuracy`` (W3C Geolocation: a 95 % confidence radius).
BROWSER_CONFIDENCE = 95
#: A radius beyond this says nothing useful about where to send an ambulance (and hides garbage).
MAX_ACCURACY_M = 100_000.0


class LocationError(ValueError):
    """A position that must not be stored; the message says which field is wrong."""


@dataclass(frozen=True)
class Fix:
    """One position: WGS 84 degrees, an accuracy radius in metres, where it came from and when."""

    latitude: float
    longitude: float
    accuracy_m: float | None
    source: str
    via: str
    #: When the device took the fix (None when it did not say): the age shown on the pop.
    fixed_at: datetime | None = None
    #: Percent confidence of ``accuracy_m`` (AML ``lc``; 95 for a browser), None when unknown.
    confidence: int | None = None
    #: The number the fix is about, as the sender gave it (matched to a call by its E.164 form).
    number: str | None = None
    #: Non-personal extras worth keeping as evidence (AML version, emergency number dialled…).
    details: dict[str, Any] = field(default_factory=dict)


def coordinates(latitude: Any, longitude: Any) -> tuple[float, float]:
    """Validated latitude and longitude in degrees, rounded to 7 places (~1 cm)."""
    lat = _number("latitude", latitude)
    lon = _number("longitude", longitude)
    if not -90.0 <= lat <= 90.0:
        raise LocationError(f"latitude out of range: {lat}")
    if not -180.0 <= lon <= 180.0:
        raise LocationError(f"longitude out of range: {lon}")
    if lat == 0.0 and lon == 0.0:
        # "Null island": what a device reports when it has no fix at all.
        raise LocationError("latitude and longitude are both 0 (no fix)")
    return round(lat, 7), round(lon, 7)


def accuracy(value: Any) -> float | None:
    """An accuracy radius in metres (None when absent); negative or absurd radii are refused."""
    if value is None or value == "":
        return None
    radius = _number("accuracy", value)
    if radius < 0 or radius > MAX_ACCURACY_M:
        raise LocationError(f"accuracy out of range: {radius}")
    return round(radius, 1)


def browser_fix(body: Any, *, number: str | None = None) -> Fix:
    """The JSON a location-link page posts: ``{"latitude", "longitude", "accuracy"}`` (metres)."""
    if not isinstance(body, dict):
        raise LocationError("body must be a JSON object")
    lat, lon = coordinates(body.get("latitude"), body.get("longitude"))
    return Fix(
        latitude=lat,
        longitude=lon,
        accuracy_m=accuracy(body.get("accuracy")),
        source="browser",
        via="link",
        confidence=BROWSER_CONFIDENCE,
        number=number,
    )


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise LocationError(f"{name} must be a number")
    if isinstance(value, str):
        value = value.strip()
        if not value or len(value) > 32:
            raise LocationError(f"{name} must be a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LocationError(f"{name} must be a number") from None
    if not math.isfinite(number):
        raise LocationError(f"{name} must be a finite number")
    return number


# -- SMS text --------------------------------------------------------------------------------------

#: GSM 03.38 basic character set (one septet each); the extension table's characters cost two and
#: are left out on purpose: the link text must stay one plain 160-character SMS.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
SMS_SINGLE = 160


def one_gsm7_sms(text: str) -> bool:
    """Whether ``text`` goes out as a single GSM-7 SMS (no UCS-2 fallback, no concatenation)."""
    return len(text) <= SMS_SINGLE and all(ch in GSM7_BASIC for ch in text)


__all__ = [
    "BROWSER_CONFIDENCE",
    "SOURCES",
    "VIAS",
    "Fix",
    "LocationError",
    "accuracy",
    "browser_fix",
    "coordinates",
    "one_gsm7_sms",
]
