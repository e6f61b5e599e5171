"""``callcenter check-config``: what would stop the start is an error, probable mistakes are warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

from callcenter.checks import check_config, print_report
from callcenter.cli import main
from callcenter.config import Config, replace

AGI_SECRET = "agi-secret-0123456789"


def test_packaged_defaults_are_fine() -> None:
    report = check_config(replace(Config(), ami={"secret": "s"}, agi={"secret": AGI_SECRET}))
    assert report.errors == [] and report.warnings == []
    assert print_report(report) == 0


def test_bad_agency_file_is_an_error_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "agencies.toml"
    bad.write_text('[[agency]]\ncode = "x"\n')
    report = check_config(replace(Config(), dispatch={"agencies_file": str(bad)}, agi={"secret": AGI_SECRET}))
    assert len(report.errors) == 1 and str(bad) in report.errors[0]
    assert print_report(report) == 1
    assert "1 configuration error" in capsys.readouterr().err


def test_missing_districts_file_is_an_error(tmp_path: Path) -> None:
    report = check_config(replace(Config(), intake={"districts_file": str(tmp_path / "none.toml")}))
    assert any("[intake].districts_file" in e for e in report.errors)


def test_prank_priority_above_default_is_an_error() -> None:
    report = check_config(replace(Config(), queue={"prank_priority": 20}))
    assert any("prank_priority" in e for e in report.errors)


def test_missing_agi_secret_is_an_error() -> None:
    report = check_config(replace(Config(), ami={"secret": "s"}))
    assert len(report.errors) == 1 and "CALLCENTER_AGI_SECRET" in report.errors[0]


def test_public_listener_and_empty_secret_are_warnings() -> None:
    report = check_config(replace(Config(), web={"host": "0.0.0.0"}, agi={"secret": AGI_SECRET}))
    assert report.errors == []
    assert any("[web].host" in w for w in report.warnings)
    assert any("[ami].secret" in w for w in report.warnings)


def test_command_exit_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLCENTER_AMI_SECRET", "s")
    monkeypatch.setenv("CALLCENTER_AGI_SECRET", AGI_SECRET)
    assert main(["check-config"]) == 0
    monkeypatch.setenv("CALLCENTER_DISPATCH_AGENCIES_FILE", str(tmp_path / "missing.toml"))
    assert main(["check-config"]) == 1
    broken = tmp_path / "cc.toml"
    broken.write_text("[queue]\nunknown = 1\n")
    assert main(["-c", str(broken), "check-config"]) == 2
