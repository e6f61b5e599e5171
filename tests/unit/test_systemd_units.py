"""The production units say what docs/deploy.md and docs/never-wait.md promise (and systemd parses them)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"


def settings(name: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit (systemd allows a key more than once, so: lists)."""
    found: dict[str, list[str]] = {}
    for raw in (UNITS / name).read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_service_is_watched_and_always_restarted() -> None:
    unit = settings("callcenter.service")
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert unit["Restart"] == ["always"] and unit["StartLimitIntervalSec"] == ["0"]
    watchdog = float(unit["WatchdogSec"][0].removesuffix("s"))
    abort = float(unit["TimeoutAbortSec"][0].removesuffix("s"))
    # A frozen app is gone within WatchdogSec + TimeoutAbortSec: the bound docs/never-wait.md gives.
    assert watchdog + abort <= 5
    assert unit["RestartPreventExitStatus"] == ["2"]  # the CLI's configuration-error status
    assert any("check-config" in cmd for cmd in unit["ExecStartPre"])


def test_service_runs_confined_as_its_own_user() -> None:
    unit = settings("callcenter.service")
    assert unit["User"] == ["callcenter"] and unit["Group"] == ["callcenter"]
    assert unit["ProtectSystem"] == ["strict"] and unit["NoNewPrivileges"] == ["yes"]
    assert unit["CapabilityBoundingSet"] == [""]
    assert unit["ReadWritePaths"]
    # Secrets come from a root-owned environment file, not from the unit or the TOML file.
    assert unit["EnvironmentFile"] == ["/etc/callcenter/secrets.env"]
    assert not any("SECRET=" in v or "TOKEN=" in v for v in unit.get("Environment", []))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_parses_the_units() -> None:
    names = ["callcenter.service", "callcenter-retention.service", "callcenter-retention.timer"]
    res = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(UNITS / n) for n in names)],
        capture_output=True,
        text=True,
        check=False,
    )
    # The executable lives in /opt/callcenter on a centre's node, not here; everything else must be clean.
    problems = [line for line in res.stderr.splitlines() if line and "is not executable" not in line]
    assert problems == [], res.stderr
