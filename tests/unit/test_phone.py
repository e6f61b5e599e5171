import pytest

from callcenter.forms.phone import normalize, parse_callback


@pytest.mark.parametrize("raw", ["081234567890", "6281234567890", "+62 812-3456-7890", "+6281234567890"])
def test_one_key_per_citizen(raw: str) -> None:
    assert normalize(raw).e164 == "+6281234567890"


@pytest.mark.parametrize("raw", [None, "", "anonymous", "Anonymous", "restricted", " unknown "])
def test_withheld_numbers_have_no_history_key(raw: str | None) -> None:
    result = normalize(raw)
    assert result.withheld and result.key is None


@pytest.mark.parametrize("raw", ["sipp", "112", "12", "+", "abc"])
def test_unparseable_numbers_are_kept_raw_but_unkeyed(raw: str) -> None:
    result = normalize(raw)
    assert not result.withheld and result.e164 is None and result.raw == raw


def test_landline_and_foreign_numbers() -> None:
    assert normalize("0361 123456").e164 == "+62361123456"
    assert normalize("+14155552671").e164 == "+14155552671"


def test_callback_validation() -> None:
    assert parse_callback("0812 3456 7890") == "+6281234567890"
    with pytest.raises(ValueError, match="not a valid phone number"):
        parse_callback("12345")
