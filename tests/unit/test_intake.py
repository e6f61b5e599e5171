"""Intake validation: every rule, and hostile input that must end as a field message, never an exception."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from callcenter.dispatch.agencies import AgencyConfigError, load_agencies, parse_agencies
from callcenter.forms.categories import (
    CATEGORIES,
    CATEGORY_CODES,
    CLASSIFICATION_CODES,
    FLAG_CODES,
    FLAGGING_CLASSIFICATIONS,
    FLAGS,
    PRIORITY_CODES,
)
from callcenter.forms.intake import (
    FIELDS,
    MAX_FLAG_ENTRIES,
    Districts,
    IntakeError,
    load_districts,
    validate_intake,
)
from callcenter.store.flags import ABUSE_KINDS

DISTRICTS = load_districts(None)


def valid(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "reporter_name": "Ni Made Sari",
        "callback_number": "0812-3456-7890",
        "address": "Jl. Ngurah Rai No. 10",
        "category": "fire",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not _DROP}


_DROP = object()


def check(data: Any, *, partial: bool = False, current: dict[str, Any] | None = None) -> dict[str, Any]:
    return validate_intake(data, districts=DISTRICTS, region="ID", partial=partial, current=current)


def errors(data: Any, **kwargs: Any) -> dict[str, str]:
    with pytest.raises(IntakeError) as caught:
        check(data, **kwargs)
    assert set(caught.value.fields) == set(caught.value.fields_en)
    assert all(caught.value.fields.values()), "every bad field has a message"
    return caught.value.fields


# -- code lists ----------------------------------------------------------------------------------


def test_code_lists_match_the_contract() -> None:
    assert {
        "medical", "fire", "disaster", "traffic_accident", "crime", "violence_women_children", "wild_animal",
        "mental_abandoned", "missing_person", "public_order", "environment", "infectious_disease", "other",
    } == CATEGORY_CODES  # fmt: skip
    assert {"critical", "high", "normal", "low"} == PRIORITY_CODES
    assert {"genuine", "non_emergency", "prank", "hoax", "silent", "misdial", "abandoned"} == CLASSIFICATION_CODES
    assert {c.code: c.label_id for c in CATEGORIES}["violence_women_children"] == (
        "Kekerasan terhadap perempuan dan anak"
    )


def test_flagging_classifications_are_what_routing_counts() -> None:
    """A flag routing does not count would be written for nothing (and vice versa)."""
    assert FLAGGING_CLASSIFICATIONS == ABUSE_KINDS


def test_flag_codes_match_the_contract() -> None:
    assert {
        "needs_water", "hazardous_material", "trapped_people", "child_involved", "violence", "road_blocked",
    } <= FLAG_CODES  # fmt: skip
    labels = {c.code: (c.label_id, c.label_en) for c in FLAGS}
    assert labels["needs_water"][0] == "Butuh air (PDAM)"
    assert labels["road_blocked"][0] == "Akses jalan tertutup"
    assert all(label_id and label_en for label_id, label_en in labels.values())
    assert len(FLAGS) == len(FLAG_CODES), "a flag code is listed twice"


def test_dispatch_rules_only_name_flags_the_intake_can_set(repo_root: Path) -> None:
    """A rule on a flag no call-taker can tick would never fire: the directory refuses it at start."""
    districts = [d.name for d in DISTRICTS.districts]
    for directory in (load_agencies(None, districts), load_agencies(repo_root / "config" / "agencies.toml", districts)):
        assert directory.rules and {r.when_flag for r in directory.rules} <= FLAG_CODES
    agencies = {
        "damkar": {"name": "Damkar", "categories": ["fire"], "lines": ["PJSIP/damkar"]},
        "pdam": {"name": "PDAM", "categories": [], "lines": ["PJSIP/pdam"]},
    }
    rules: list[dict[str, Any]] = [{"when_flag": "needs_water", "add": ["pdam"]}]
    typo = {"agencies": agencies, "rules": [*rules, {"when_flag": "need_water", "add": ["pdam"]}]}
    with pytest.raises(AgencyConfigError, match=r"\[\[rules\]\] #2\.when_flag: unknown flag 'need_water'"):
        parse_agencies(typo, "agencies.toml", districts)
    data = {"agencies": agencies, "rules": rules}
    assert parse_agencies(data, "agencies.toml", districts).propose("fire", None, ["needs_water"]) == ["damkar", "pdam"]


# -- the happy path ------------------------------------------------------------------------------


def test_minimal_intake_is_cleaned_and_defaulted() -> None:
    out = check(valid(reporter_name="  Ni Made Sari  "))
    assert out == {
        "reporter_name": "Ni Made Sari",
        "callback_number": "+6281234567890",
        "address": "Jl. Ngurah Rai No. 10",
        "district": None,
        "subdistrict": None,
        "landmark": "",
        "latitude": None,
        "longitude": None,
        "category": "fire",
        "victims_count": 0,
        "victims_condition": "",
        "access_route": "",
        "notes": "",
        "priority": "normal",
        "flags": [],
    }
    assert set(out) == set(FIELDS)


def test_full_intake() -> None:
    out = check(
        valid(
            district=" negara ",
            subdistrict="LELATENG",
            landmark="Dekat pasar",
            latitude="-8,3582",
            longitude=114.6186,
            victims_count="3",
            victims_condition="2 luka ringan, 1 kritis",
            access_route="Dari Jl. Ngurah Rai belok kiri",
            notes="Api di dapur",
            priority="critical",
        )
    )
    assert out["district"] == "Negara" and out["subdistrict"] == "Lelateng"  # canonical spelling
    assert out["latitude"] == pytest.approx(-8.3582) and out["longitude"] == pytest.approx(114.6186)
    assert out["victims_count"] == 3
    assert out["priority"] == "critical"


# -- flags ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, []),
        ([], []),
        (["needs_water"], ["needs_water"]),
        # Each once, in the order of FLAGS: ticking boxes in another order is the same intake.
        (["road_blocked", "needs_water", "road_blocked"], ["needs_water", "road_blocked"]),
        (["needs_water"] * MAX_FLAG_ENTRIES, ["needs_water"]),
        ([c.code for c in reversed(FLAGS)], [c.code for c in FLAGS]),
    ],
)
def test_good_flags(value: object, expected: list[str]) -> None:
    assert check(valid(flags=value))["flags"] == expected


def test_flags_are_optional() -> None:
    assert check(valid())["flags"] == []


@pytest.mark.parametrize(
    "value",
    [
        ["needs_water", "unknown_flag"],
        ["NEEDS_WATER"],
        ["needs_water "],
        [""],
        ["needs_water", 1],
        [None],
        [["needs_water"]],
        ["x" * 100_000],
        "needs_water",
        {"needs_water": True},
        1,
        True,
        ["needs_water"] * (MAX_FLAG_ENTRIES + 1),
    ],
)
def test_bad_flags_are_field_errors(value: object) -> None:
    assert set(errors(valid(flags=value))) == {"flags"}


def test_unknown_flag_is_named_but_bounded() -> None:
    with pytest.raises(IntakeError) as caught:
        check(valid(flags=["needs_water", "pln_" + "x" * 1000]))
    assert "pln_" in caught.value.fields["flags"] and "pln_" in caught.value.fields_en["flags"]
    assert len(caught.value.fields["flags"]) < 100


def test_partial_flags() -> None:
    stored = {**STORED, "flags": ["needs_water"]}
    assert check({"flags": ["trapped_people", "needs_water"]}, partial=True, current=stored) == {
        "flags": ["needs_water", "trapped_people"]
    }
    assert check({"flags": []}, partial=True, current=stored) == {"flags": []}
    assert check({"notes": "x"}, partial=True, current=stored) == {"notes": "x"}  # untouched: left alone
    assert set(errors({"flags": ["nope"]}, partial=True, current=stored)) == {"flags"}


@pytest.mark.parametrize("number", ["081234567890", "+62 812-3456-7890", "6281234567890", "(0365) 41234"])
def test_callback_numbers_are_normalised(number: str) -> None:
    assert check(valid(callback_number=number))["callback_number"].startswith("+62")


# -- required fields and types -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["reporter_name", "callback_number", "address", "category"])
@pytest.mark.parametrize("value", [_DROP, None, "", "   "])
def test_required_fields(name: str, value: object) -> None:
    assert name in errors(valid(**{name: value}))


@pytest.mark.parametrize(
    "value", [["Sari"], {"name": "Sari"}, 42, 4.2, True], ids=["list", "dict", "int", "float", "bool"]
)
@pytest.mark.parametrize("name", ["reporter_name", "address", "landmark", "notes", "district", "callback_number"])
def test_wrong_types_are_field_errors(name: str, value: object) -> None:
    assert name in errors(valid(**{name: value}))


@pytest.mark.parametrize("value", [["fire"], {"x": 1}, 1, "FIRE", "kebakaran", "fire "])
def test_category_must_be_a_code(value: object) -> None:
    assert errors(valid(category=value)) == {"category": "Pilihan tidak dikenal."}


def test_priority_must_be_a_code() -> None:
    assert "priority" in errors(valid(priority="urgent"))
    assert check(valid(priority=None))["priority"] == "normal"


def test_all_problems_are_reported_at_once() -> None:
    found = errors({"reporter_name": None, "callback_number": "123", "latitude": 91, "longitude": 0})
    assert set(found) == {"reporter_name", "callback_number", "address", "category", "latitude"}


def test_not_a_mapping() -> None:
    for data in (None, ["reporter_name"], "text", 12):
        assert errors(data) == {"_": "Data formulir harus berupa objek JSON."}


def test_unknown_fields_are_refused() -> None:
    found = errors(valid(status="closed", created_by=1))
    assert set(found) == {"status", "created_by"}
    assert found["status"] == "Kolom tidak dikenal."


def test_many_unknown_fields_give_a_bounded_reply() -> None:
    data = valid(**{f"x{i}" + "y" * 1000: 1 for i in range(500)})
    found = errors(data)
    assert len(found) <= 10 and all(len(k) <= 64 for k in found)


# -- lengths and hostile text --------------------------------------------------------------------


def test_length_limits() -> None:
    assert check(valid(reporter_name="A" * 128))["reporter_name"] == "A" * 128
    assert "reporter_name" in errors(valid(reporter_name="A" * 129))
    assert "address" in errors(valid(address="x" * 501))
    assert "notes" in errors(valid(notes="x" * 4001))
    assert check(valid(notes="x" * 4000))["notes"] == "x" * 4000


def test_huge_strings_are_refused_quickly() -> None:
    big = "x" * 5_000_000
    found = errors(valid(reporter_name=big, address=big, notes=big, callback_number=big, latitude=big))
    assert set(found) == {"reporter_name", "address", "notes", "callback_number", "latitude"}


@pytest.mark.parametrize(
    "text",
    [
        "<script>alert(1)</script>",
        "Robert'); DROP TABLE incidents;--",
        "{{7*7}} ${7*7} %s %n",
        "' OR '1'='1",
        "Ketut 🙏 Ñandú",
    ],
)
def test_injection_looking_text_is_kept_verbatim(text: str) -> None:
    out = check(valid(reporter_name=text, address=text, notes=text))
    assert out["reporter_name"] == out["address"] == out["notes"] == text


def test_control_characters() -> None:
    assert "reporter_name" in errors(valid(reporter_name="Sa\x00ri"))
    assert "notes" in errors(valid(notes="a\x00b"))
    assert "reporter_name" in errors(valid(reporter_name="Sari\nKetut"))
    # Multi-line free text keeps its line breaks.
    assert check(valid(notes="baris 1\nbaris 2\tx"))["notes"] == "baris 1\nbaris 2\tx"


# -- numbers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lat", "lon"),
    [
        (float("nan"), 114.0),
        (-8.3, float("inf")),
        ("nan", "114"),
        ("-inf", "114"),
        ("Infinity", "114"),
        (90.0001, 114.0),
        (-8.0, 180.5),
        ("-8.3abc", "114"),
        ([-8.3], 114.0),
        (True, 114.0),
        ({"v": 1}, 114.0),
        ("1e999", "114"),
    ],
)
def test_bad_coordinates(lat: object, lon: object) -> None:
    assert set(errors(valid(latitude=lat, longitude=lon))) & {"latitude", "longitude"}


@pytest.mark.parametrize(
    ("lat", "lon"), [(90, -180), (-90, 180), ("  -8.35 ", "114.6"), (0, 0), ("\u22128,35", "114,6")]
)
def test_good_coordinates(lat: object, lon: object) -> None:
    out = check(valid(latitude=lat, longitude=lon))
    assert isinstance(out["latitude"], float) and isinstance(out["longitude"], float)


def test_coordinates_come_in_pairs() -> None:
    assert set(errors(valid(latitude=-8.3))) == {"longitude"}
    assert set(errors(valid(longitude=114.6, latitude=""))) == {"latitude"}
    assert check(valid(latitude=None, longitude=None))["latitude"] is None


@pytest.mark.parametrize("value", ["12abc", "1.5", 1.5, -1, "-1", 10_001, "10001", True, [3], "1e3", "٣", "0x10"])
def test_bad_victim_counts(value: object) -> None:
    assert "victims_count" in errors(valid(victims_count=value))


@pytest.mark.parametrize(("value", "expected"), [(0, 0), ("12", 12), (" 7 ", 7), (3.0, 3), (10_000, 10_000), (None, 0)])
def test_good_victim_counts(value: object, expected: int) -> None:
    assert check(valid(victims_count=value))["victims_count"] == expected


def test_bad_phone_numbers() -> None:
    for number in ("123", "abc", "+999 123", "0812", "anonymous"):
        assert "callback_number" in errors(valid(callback_number=number)), number


# -- districts -----------------------------------------------------------------------------------


def test_packaged_districts_are_jembrana() -> None:
    names = [d.name for d in DISTRICTS.districts]
    assert names == ["Negara", "Jembrana", "Mendoyo", "Pekutatan", "Melaya"]
    assert all(len(d.subdistricts) >= 3 for d in DISTRICTS.districts)


def test_sample_config_copy_matches_the_packaged_list(repo_root: Path) -> None:
    assert load_districts(repo_root / "config" / "districts.toml") == DISTRICTS


def test_district_rules() -> None:
    assert errors(valid(district="Denpasar")) == {"district": "Kecamatan tidak ada dalam daftar."}
    assert "subdistrict" in errors(valid(district="Negara", subdistrict="Gilimanuk"))  # belongs to Melaya
    assert "subdistrict" in errors(valid(subdistrict="Gilimanuk"))  # no district given
    assert check(valid(district="Melaya", subdistrict="Gilimanuk"))["subdistrict"] == "Gilimanuk"
    assert check(valid(district="Melaya"))["subdistrict"] is None


def test_custom_district_file(tmp_path: Path) -> None:
    path = tmp_path / "d.toml"
    path.write_text('[[district]]\nname = "Kota Baru"\nsubdistricts = ["Satu", "Dua"]\n', encoding="utf-8")
    custom = load_districts(path)
    assert isinstance(custom, Districts)
    out = validate_intake(valid(district="kota  baru", subdistrict="dua"), districts=custom, region="ID")
    assert (out["district"], out["subdistrict"]) == ("Kota Baru", "Dua")


@pytest.mark.parametrize(
    "text",
    [
        "district = 3",
        "[[district]]\nsubdistricts = []",
        '[[district]]\nname = "A"\n[[district]]\nname = " a "',
        '[[district]]\nname = "A"\nsubdistricts = [1]',
        "not toml [",
    ],
)
def test_broken_district_files_fail_loudly(tmp_path: Path, text: str) -> None:
    path = tmp_path / "d.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=r"d\.toml"):
        load_districts(path)


def test_missing_district_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nope"):
        load_districts(tmp_path / "nope.toml")


# -- partial (PATCH) -----------------------------------------------------------------------------

STORED = {
    "reporter_name": "Sari",
    "callback_number": "+6281234567890",
    "address": "Jl. A",
    "district": "Melaya",
    "subdistrict": "Gilimanuk",
    "latitude": -8.2,
    "longitude": 114.4,
    "category": "fire",
}


def test_partial_returns_only_given_fields() -> None:
    assert check({"notes": " baru "}, partial=True, current=STORED) == {"notes": "baru"}
    assert check({}, partial=True, current=STORED) == {}


def test_partial_cannot_empty_required_fields() -> None:
    assert set(errors({"reporter_name": "", "category": None}, partial=True, current=STORED)) == {
        "reporter_name",
        "category",
    }


def test_partial_checks_pairs_against_the_stored_incident() -> None:
    # Latitude alone is fine when the incident has a longitude; clearing one alone is not.
    assert check({"latitude": -8.3}, partial=True, current=STORED) == {"latitude": -8.3}
    assert set(errors({"latitude": None}, partial=True, current=STORED)) == {"latitude"}
    # Moving the district leaves the stored desa behind: it has to come along.
    assert "subdistrict" in errors({"district": "Negara"}, partial=True, current=STORED)
    out = check({"district": "Negara", "subdistrict": "Baluk"}, partial=True, current=STORED)
    assert out == {"district": "Negara", "subdistrict": "Baluk"}
    assert "subdistrict" in errors({"subdistrict": "Baluk"}, partial=True, current=STORED)


def test_partial_leaves_untouched_stale_place_names_alone() -> None:
    """A district renamed in the list since must not block editing the notes."""
    stale = {**STORED, "district": "Old Name", "subdistrict": None}
    assert check({"notes": "x"}, partial=True, current=stale) == {"notes": "x"}
