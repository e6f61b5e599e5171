from pathlib import Path

import pytest

from callcenter.config import ConfigError, load_config


def test_defaults_bind_loopback() -> None:
    cfg = load_config(env={})
    assert cfg.agi.host == cfg.ami.host == cfg.web.host == "127.0.0.1"
    assert cfg.agi.port == 4573
    assert cfg.store.url.startswith("sqlite+aiosqlite:///")
    assert cfg.ami.secret == ""  # secrets never come from code


def test_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "cc.toml"
    path.write_text('[agi]\nport = 5000\n[numbers]\nemergency = ["112", "110"]\n[ami]\nsecret = "from-file"\n')
    cfg = load_config(path, env={"CALLCENTER_AMI_SECRET": "from-env", "CALLCENTER_QUEUE_PRANK_REMINDER": "no"})
    assert cfg.agi.port == 5000
    assert cfg.numbers.emergency == ("112", "110")
    assert cfg.ami.secret == "from-env"
    assert cfg.queue.prank_reminder is False


def test_environment_lists_and_config_path(tmp_path: Path) -> None:
    path = tmp_path / "cc.toml"
    path.write_text("[web]\nport = 9090\n")
    cfg = load_config(env={"CALLCENTER_CONFIG": str(path), "CALLCENTER_NUMBERS_EMERGENCY": "112, 113"})
    assert cfg.web.port == 9090
    assert cfg.numbers.emergency == ("112", "113")


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[agi]\nprot = 1\n", {}, r"\[agi\]: unknown key\(s\) prot"),
        ("[agi]\nport = 'x'\n", {}, r"\[agi\].port: expected an integer"),
        ("[nope]\n", {}, "unknown section"),
        ("agi = 3\n", {}, r"\[agi\] must be a table"),
        ("[agi\n", {}, "cc.toml"),
        ("", {"CALLCENTER_AGI_PORT": "many"}, "CALLCENTER_AGI_PORT: expected an integer"),
        ("", {"CALLCENTER_LOG_JSON": "maybe"}, "CALLCENTER_LOG_JSON: expected true/false"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, env: dict[str, str], message: str) -> None:
    path = tmp_path / "cc.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, env=env)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.toml", env={})


def test_sample_config_loads() -> None:
    sample = Path(__file__).parents[2] / "config" / "callcenter.toml"
    cfg = load_config(sample, env={})
    assert cfg.numbers.default_region == "ID"


@pytest.mark.parametrize(
    ("raw", "hours"),
    [("", None), ("+08:00", 8), ("7", 7), ("+0900", 9), ("-03:00", -3)],
)
def test_centre_utc_offset(raw: str, hours: int | None) -> None:
    from datetime import timedelta

    offset = load_config(env={"CALLCENTER_SUPERVISION_UTC_OFFSET": raw}).supervision.offset()
    assert offset == (None if hours is None else timedelta(hours=hours))


@pytest.mark.parametrize("raw", ["+05:30", "WITA", "+25:00", "8h"])
def test_centre_utc_offset_must_be_whole_hours(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"\[supervision\]\.utc_offset"):
        load_config(env={"CALLCENTER_SUPERVISION_UTC_OFFSET": raw})


def test_trusted_proxies_are_checked_at_load() -> None:
    cfg = load_config(env={"CALLCENTER_WEB_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/24, 2001:db8::/48"})
    assert cfg.web.trusted_proxies == ("127.0.0.1", "10.0.0.0/24", "2001:db8::/48")
    assert load_config(env={}).web.trusted_proxies == ()  # nobody's forwarded headers are believed by default
    with pytest.raises(ConfigError, match=r"trusted_proxies.*'proxy\.example'"):
        load_config(env={"CALLCENTER_WEB_TRUSTED_PROXIES": "proxy.example"})


def test_retired_keys_start_with_a_warning_not_a_refusal(tmp_path: Path) -> None:
    """An upgraded node whose file still sets the old lockout knobs starts; a real typo still stops it."""
    from structlog.testing import capture_logs

    cfg = tmp_path / "c.toml"
    cfg.write_text("[web]\nlogin_max_failures = 5\nlogin_lockout_seconds = 300\n")
    with capture_logs() as logs:
        config = load_config(cfg, env={})
    assert config.web.login_free_failures == 3
    assert sorted(e["key"] for e in logs if e["event"] == "config.retired_key") == [
        "[web].login_lockout_seconds",
        "[web].login_max_failures",
    ]
    cfg.write_text("[web]\nlogin_max_failure = 5\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(cfg, env={})


def test_map_tiles_default_empty_and_refused() -> None:
    """OpenStreetMap by default, empty turns tiles off, and anything but an http(s) template is refused
    at load (its origin goes into the pages' CSP)."""
    from callcenter.web.pages import tile_origin

    default = load_config(None, env={}).web.map_tiles
    assert tile_origin(default) == "https://tile.openstreetmap.org"
    assert load_config(None, env={"CALLCENTER_WEB_MAP_TILES": ""}).web.map_tiles == ""
    assert tile_origin("https://{s}.tiles.example/{z}/{x}/{y}.png") == "https://*.tiles.example"
    for bad in ("javascript:alert(1)", "tiles/{z}/{x}/{y}.png", "https://a.example'; script-src *"):
        with pytest.raises(ConfigError, match="map_tiles"):
            load_config(None, env={"CALLCENTER_WEB_MAP_TILES": bad})


def test_report_limits_must_be_positive() -> None:
    assert load_config(env={}).report.block_after_false == 3
    for key, value in (("CODE_ATTEMPTS", "0"), ("REPORTS_PER_NUMBER_HOUR", "-1"), ("BLOCK_DAYS", "-2")):
        with pytest.raises(ConfigError, match=r"\[report\]\." + key.lower()):
            load_config(env={f"CALLCENTER_REPORT_{key}": value})
