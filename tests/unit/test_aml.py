"""AML messages (HTTPS form and SMS) and browser positions: what is stored, what is refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from callcenter.forms.aml import AmlError, is_aml_sms, parse_https, parse_sms
from callcenter.forms.location import LocationError, browser_fix, one_gsm7_sms
from callcenter.web.location_api import LINK_TEXT

NOW = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
HTTPS = {
    "v": "3",
    "emergency_number": "112",
    "source": "sms",
    "time": "1796551190000",
    "location_latitude": "-8.3581234",
    "location_longitude": "114.6170123",
    "location_accuracy": "14.5",
    "location_time": "1796551185000",
    "location_source": "GPS",
    "location_certainty": "68",
    "device_number": "+6281234567890",
    "device_imei": "490154203237518",
}


def sms(body_without_length: str) -> str:
    """An AML SMS with its trailing ``ml`` counted the way handsets count it (the whole text)."""
    for width in range(1, 4):
        text = f"{body_without_length};ml={'0' * width}"
        length = len(text)
        if len(str(length)) == width:
            return f"{body_without_length};ml={length}"
    raise AssertionError


def test_https_form_gives_position_radius_source_confidence_and_time() -> None:
    fix = parse_https(HTTPS, now=NOW)
    assert (fix.latitude, fix.longitude, fix.accuracy_m) == (-8.3581234, 114.6170123, 14.5)
    assert (fix.source, fix.via, fix.confidence, fix.number) == ("gps", "aml_https", 68, "+6281234567890")
    assert fix.fixed_at == datetime.fromtimestamp(1796551185, UTC)
    # Evidence kept, personal identifiers dropped.
    assert fix.details == {"v": "3", "emergency_number": "112", "source": "sms"}
    assert "490154203237518" not in repr(fix)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"location_latitude": None}, "no location"),
        ({"location_latitude": "91"}, "latitude out of range"),
        ({"location_longitude": "-181"}, "longitude out of range"),
        ({"location_latitude": "0", "location_longitude": "0"}, "both 0"),
        ({"location_latitude": "nan"}, "finite"),
        ({"location_latitude": "abc"}, "must be a number"),
        ({"location_accuracy": "-3"}, "accuracy out of range"),
        ({"device_number": None}, "no device_number"),
        ({"emergency_number": "1" * 100}, "too long"),
    ],
)
def test_malformed_https_forms_are_refused(change: dict[str, str | None], why: str) -> None:
    form = {k: v for k, v in {**HTTPS, **change}.items() if v is not None}
    with pytest.raises(AmlError if why.startswith(("no ", "too")) else LocationError, match=why):
        parse_https(form, now=NOW)


def test_https_times_from_a_wrong_clock_are_dropped_not_trusted() -> None:
    future = str(int(NOW.timestamp() * 1000) + 3_600_000)
    fix = parse_https({**HTTPS, "location_time": future, "time": future}, now=NOW)
    assert fix.fixed_at is None
    assert parse_https({**HTTPS, "location_source": "martian"}, now=NOW).source == "unknown"


def test_sms_format_as_the_domain_notes_give_it() -> None:
    body = sms(
        'A"ML=1;lt=+51.53321;lg=-0.12601;rd=14;top=20220131171748;lc=68;pm=W;si=234302543446355;ei=356708041746734;mcc=234;mnc=30'
    )
    assert is_aml_sms(body)
    fix = parse_sms(body, "+447700900123", now=NOW)
    assert (fix.latitude, fix.longitude, fix.accuracy_m, fix.confidence) == (51.53321, -0.12601, 14.0, 68)
    assert (fix.source, fix.via, fix.number) == ("wifi", "aml_sms", "+447700900123")
    assert fix.fixed_at == datetime(2022, 1, 31, 17, 17, 48, tzinfo=UTC)
    assert fix.details == {"length_ok": True, "mcc": "234", "mnc": "30"}
    assert "234302543446355" not in repr(fix) and "356708041746734" not in repr(fix)


def test_sms_with_a_wrong_length_is_kept_but_marked() -> None:
    fix = parse_sms('A"ML=1;lt=-8.35;lg=114.61;rd=30;pm=G;ml=999', "+6281234567890", now=NOW)
    assert fix.source == "gps" and fix.details["length_ok"] is False


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("Tolong ada kebakaran", "not an AML SMS"),
        ('A"ML=1;lt=-8.35;rd=14;pm=G', "no lt/lg"),
        ('A"ML=1;lt=-8.35;lg=114.6;pm=N', "method N"),
        ('A"ML=1;lt=-98.35;lg=114.6;pm=G', "latitude out of range"),
        ('A"ML=1;lt=-8.35;lg=114.6;rd=huge;pm=G', "accuracy must be a number"),
        ('A"ML=1;lt;lg=114.6', "without '='"),
        ('A"ML=1;lt=-8.35;lg=114.6;pm=G;' + "x=1;" * 100, "too long"),
    ],
)
def test_malformed_sms_is_refused(body: str, why: str) -> None:
    with pytest.raises(LocationError, match=why):
        parse_sms(body, "+6281234567890", now=NOW)


def test_browser_position_says_its_confidence() -> None:
    fix = browser_fix({"latitude": -8.35, "longitude": 114.61, "accuracy": 21.3}, number="+6281234567890")
    assert (fix.source, fix.via, fix.confidence, fix.accuracy_m) == ("browser", "link", 95, 21.3)
    bads: list[object] = [
        [],
        {"latitude": True, "longitude": 1},
        {"latitude": 1},
        {"latitude": 1, "longitude": 2, "accuracy": "x"},
    ]
    for bad in bads:
        with pytest.raises(LocationError):
            browser_fix(bad)


def test_link_text_is_one_gsm7_sms_with_a_realistic_link() -> None:
    link = "https://112.jembranakab.go.id/l/" + "A-_z" * 4
    text = LINK_TEXT.format(link=link)
    assert one_gsm7_sms(text), (len(text), text)
    assert not one_gsm7_sms("Lokasi Anda? ✓")  # outside GSM-7: would go as UCS-2
    assert not one_gsm7_sms("x" * 161)
