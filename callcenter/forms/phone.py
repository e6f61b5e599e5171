"""Caller numbers as the network hands them over, turned into one E.164 key per citizen.

The same person calls as ``0812…``, ``62812…`` or ``+62812…`` depending on the network and the
handset; history and prank flags only work if all three land on the same key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers

#: What networks and PBXes put in the caller id when the number is withheld.
WITHHELD = frozenset({"", "anonymous", "unknown", "restricted", "private", "unavailable", "withheld"})
_DIALABLE = re.compile(r"[^0-9+]")


@dataclass(frozen=True)
class CallerNumber:
    raw: str
    #: E.164 (``+6281234567890``) when the number is plausible, else None.
    e164: str | None
    withheld: bool

    @property
    def key(self) -> str | None:
        """The history key: E.164 for real numbers, nothing for withheld ones (they share no history)."""
        return self.e164


def normalize(raw: str | None, region: str = "ID") -> CallerNumber:
    """Normalise a caller id; never raises, because a 112 call is routed whatever its caller id says."""
    text = (raw or "").strip()
    if text.lower() in WITHHELD:
        return CallerNumber(raw=text, e164=None, withheld=True)
    digits = _DIALABLE.sub("", text)
    if not digits.strip("+"):
        return CallerNumber(raw=text, e164=None, withheld=False)
    candidates = [digits]
    if not digits.startswith("+"):
        # ``62812…`` from some trunks: the country code without its plus sign.
        candidates.append("+" + digits)
    for candidate in candidates:
        try:
            parsed = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(parsed):
            return CallerNumber(
                raw=text,
                e164=phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164),
                withheld=False,
            )
    return CallerNumber(raw=text, e164=None, withheld=False)


def parse_callback(value: str, region: str = "ID") -> str:
    """Validate a callback number typed by a call-taker; raises ValueError with a message for the form."""
    result = normalize(value, region)
    if result.e164 is None:
        raise ValueError("not a valid phone number")
    return result.e164


def in_country(e164: str, region: str = "ID") -> bool:
    """Whether an E.164 number has ``region``'s country calling code (``+62…`` for ``ID``)."""
    code = phonenumbers.country_code_for_region(region)
    return bool(code) and e164.startswith(f"+{code}")
