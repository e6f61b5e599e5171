"""The agency directory: a bad file is refused naming the bad entry; proposals follow the rules."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from callcenter.dispatch.agencies import AgencyConfigError, line_kind, load_agencies, parse_agencies
from callcenter.dispatch.prompts import briefing_text, spell_digits
from callcenter.forms.intake import load_districts
from callcenter.store.models import Incident

DISTRICTS = ["Negara", "Jembrana", "Mendoyo", "Pekutatan", "Melaya"]


def base() -> dict[str, Any]:
    return {
        "sla": {"fire": 300, "medical": 300, "default": 900},
        "agencies": {
            "damkar": {
                "name": "Damkar Jembrana",
                "categories": ["fire", "disaster"],
                "districts": ["*"],
                "answer_timeout": 20,
                "lines": ["PJSIP/damkar", "PJSIP/damkar-backup", "+6236541113"],
            },
            "pdam": {"name": "PDAM", "categories": [], "lines": ["PJSIP/pdam"]},
            "polsek_melaya": {
                "name": "Polsek Melaya",
                "categories": ["crime"],
                "districts": ["Melaya"],
                "lines": ["PJSIP/polsek-melaya"],
            },
            "polres": {"name": "Polres Jembrana", "categories": ["crime"], "lines": ["PJSIP/polres"]},
        },
        "rules": [{"when_flag": "needs_water", "add": ["pdam"]}],
    }


def broken(path: list[str], value: Any) -> dict[str, Any]:
    data = base()
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            ["agencies", "damkar", "categories"],
            ["fire", "arson"],
            "[agencies.damkar].categories[1]: unknown category 'arson'",
        ),
        (["agencies", "damkar", "lines"], [], "[agencies.damkar].lines: an agency needs at least one line"),
        (["agencies", "damkar", "lines"], ["PJSIP/damkar", "PJSIP/a,b"], "[agencies.damkar].lines[1]: 'PJSIP/a,b'"),
        (["agencies", "damkar", "lines"], ["0365-41113"], "[agencies.damkar].lines[0]: '0365-41113' is not a dial"),
        (
            ["agencies", "damkar", "lines"],
            ["+62 365 41113"],
            "[agencies.damkar].lines[0]: '+62 365 41113' is not an E.164",
        ),
        (["agencies", "damkar", "answer_timeout"], 0, "[agencies.damkar].answer_timeout"),
        (["agencies", "damkar", "answer_timeout"], "20", "[agencies.damkar].answer_timeout"),
        (["agencies", "damkar", "answer_timeout"], 600, "[agencies.damkar].answer_timeout"),
        (["agencies", "polres", "districts"], ["Atlantis"], "[agencies.polres].districts[0]: unknown district"),
        (["agencies", "polres", "phone"], "x", "[agencies.polres]: unknown key(s) phone"),
        (["rules"], [{"when_flag": "needs_water", "add": ["pdam", "pln"]}], "[[rules]] #1.add: unknown agency 'pln'"),
        (["sla", "arson"], 60, "[sla].arson: unknown category"),
    ],
)
def test_bad_entry_is_named(path: list[str], value: Any, message: str) -> None:
    with pytest.raises(AgencyConfigError) as err:
        parse_agencies(broken(path, value), "agencies.toml", DISTRICTS)
    assert message in str(err.value)
    assert str(err.value).startswith("agencies.toml: ")


def test_bad_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "agencies.toml"
    bad.write_text('[agencies.damkar]\nname = "Damkar"\ncategories = ["fire"]\nlines = []\n')
    with pytest.raises(AgencyConfigError, match=r"agencies\.toml: \[agencies\.damkar\]\.lines"):
        load_agencies(bad)
    bad.write_text("[agencies.damkar\n")
    with pytest.raises(AgencyConfigError, match=r"agencies\.toml"):
        load_agencies(bad)
    with pytest.raises(AgencyConfigError, match=r"missing\.toml"):
        load_agencies(tmp_path / "missing.toml")


def test_propose_by_category_district_and_flag() -> None:
    d = parse_agencies(base(), "t", DISTRICTS)
    assert d.propose("fire", "Negara", ()) == ["damkar"]
    assert d.propose("fire", "Negara", ["needs_water"]) == ["damkar", "pdam"]
    assert d.propose("fire", None, ["needs_water", "unrelated"]) == ["damkar", "pdam"]
    # A district-bound agency only where it serves; case and spacing of the district do not matter.
    assert d.propose("crime", "Melaya", ()) == ["polsek_melaya", "polres"]
    assert d.propose("crime", " melaya ", ()) == ["polsek_melaya", "polres"]
    assert d.propose("crime", "Negara", ()) == ["polres"]
    assert d.propose("medical", "Negara", ()) == []
    assert d.sla_seconds("fire") == 300 and d.sla_seconds("crime") == 900


def test_shipped_directories_are_valid_and_equal(repo_root: Path) -> None:
    districts = [x.name for x in load_districts().districts]
    sample = load_agencies(repo_root / "config" / "agencies.toml", districts)
    packaged = load_agencies(None, districts)
    assert sample == packaged
    assert (repo_root / "config" / "agencies.toml").read_text() == (
        repo_root / "callcenter" / "dispatch" / "agencies.toml"
    ).read_text()
    expected = {"bpbd", "damkar", "ambulans", "polres", "satpolpp", "dinsos", "dpppa", "bnn", "dishub", "dlh"}
    assert expected | {"pdam", "pertanian"} == set(sample.agencies)
    assert sample.propose("fire", "Negara", ["needs_water"]) == ["damkar", "pdam"]
    assert sample.propose("medical", "Melaya", ()) == ["ambulans"]
    assert sample.sla_seconds("fire") == 300 and sample.sla_seconds("medical") == 300
    assert line_kind(sample.get("bnn").lines[0]) == "twilio"
    assert line_kind(sample.get("damkar").lines[0]) == "pbx"
    assert tomllib.loads((repo_root / "config" / "agencies.toml").read_text())["rules"]


def test_briefing_text_reads_digits_one_by_one() -> None:
    assert spell_digits("+6281234") == "6 2 8 1 2 3 4"
    assert spell_digits("112-20250101-0007") == "1 1 2, 2 0 2 5 0 1 0 1, 0 0 0 7"
    incident = Incident(
        reference="112-20250101-0007",
        category="fire",
        priority="critical",
        callback_number="+6281234567890",
        address="Jl. Udayana 12",
        district="Negara",
        subdistrict="Lelateng",
        landmark="dekat pasar",
        victims_count=2,
        victims_condition="luka bakar",
        access_route="lewat Jl. Gatot Subroto",
    )
    text = briefing_text(incident)
    for part in ("Kebakaran", "Kritis", "Jl. Udayana 12", "kecamatan Negara", "2 orang, luka bakar", "0 0 0 7"):
        assert part in text
