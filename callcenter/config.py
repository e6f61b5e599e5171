"""Typed configuration: defaults in code, then a TOML file, then environment variables.

Secrets (the AMI secret, Twilio credentials) are meant to arrive through the environment
(``CALLCENTER_<SECTION>_<KEY>``) so that no file in the repository ever holds one.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import structlog

ENV_PREFIX = "CALLCENTER_"

log = structlog.get_logger("callcenter.config")
_AGI_SECRET = re.compile(r"[A-Za-z0-9_-]{16,256}")
_OFFSET = re.compile(r"(?P<sign>[+-])?(?P<hours>[0-9]{1,2})(?::?(?P<minutes>[0-9]{2}))?")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type; the message names it."""


@dataclass(frozen=True)
class AgiConfig:
    host: str = "127.0.0.1"
    port: int = 4573
    #: Asterisk sends the whole ``agi_*`` block at once; anything slower is not Asterisk.
    header_timeout: float = 2.0
    header_max_bytes: int = 16384
    #: Bound on every single AGI command round trip.
    command_timeout: float = 2.0
    #: Bound on a whole routing session; past it we close and the dialplan falls back. It must cover
    #: the reminder prompt (``prompt_timeout``) plus a few commands; database waits have their own bound.
    session_budget: float = 25.0
    #: Longest prompt an AGI route may stream (the anti-hoax reminder), on top of command_timeout.
    prompt_timeout: float = 15.0
    #: Addresses or networks (``10.0.0.5``, ``10.0.0.0/24``, ``::1``) whose connections are served; any
    #: other peer is closed before a byte is read. Only our Asterisk may talk FastAGI.
    allowed_peers: tuple[str, ...] = ("127.0.0.1", "::1")
    #: Shared secret the dialplan puts first in the AGI URL: ``CC_AGI_URL=agi://host:port/<secret>``, so
    #: that Asterisk asks for ``<secret>/incoming``; a session without it gets no command. Only from the
    #: environment (``CALLCENTER_AGI_SECRET``); ``callcenter run`` refuses to start without one. Letters,
    #: digits, ``-`` and ``_`` only (it travels in a URL and a dialplan argument), at least 16.
    secret: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        self.peer_networks()  # a malformed entry fails at load, not at the first connection
        if self.secret and not _AGI_SECRET.fullmatch(self.secret):
            raise ConfigError("[agi].secret: use at least 16 letters, digits, '-' or '_'")

    def peer_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """``allowed_peers`` parsed; a bare address is a one-host network."""
        try:
            return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in self.allowed_peers)
        except ValueError as exc:
            raise ConfigError(f"[agi].allowed_peers: {exc}") from None


@dataclass(frozen=True)
class AmiConfig:
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "callcenter"
    secret: str = ""
    reconnect_min: float = 0.5
    reconnect_max: float = 15.0
    #: Ping period; a ping unanswered for ``ping_timeout`` counts as a dead link.
    ping_interval: float = 5.0
    ping_timeout: float = 5.0
    action_timeout: float = 5.0
    #: After a login, how long to wait for Asterisk's FullyBooted before resynchronising anyway (an AMI
    #: user without ``read = system`` never gets it).
    boot_timeout: float = 30.0


@dataclass(frozen=True)
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    #: A login ends after this long without a request (idle; the consoles' own polling keeps an open
    #: page active) and at the latest ``session_max_hours`` after it began (a 12-hour shift).
    session_hours: float = 12.0
    session_max_hours: float = 12.0
    #: Seconds between checks that every open WebSocket's session is still valid (logout elsewhere,
    #: expiry, a deactivated account): a socket of an ended session is closed within about this long.
    session_check_seconds: float = 2.0
    #: Give the session cookie ``Secure`` always (for a deployment behind any TLS terminator); without
    #: it, only on HTTPS requests: direct TLS, or ``X-Forwarded-Proto: https`` from a trusted proxy.
    secure_cookie: bool = False
    #: Reverse proxies (addresses or networks, e.g. ``127.0.0.1``, ``10.0.0.0/24``) whose
    #: ``X-Forwarded-For``/``Forwarded``/``X-Forwarded-Proto`` headers are believed. Empty: none, the
    #: peer's address is the client's.
    trusted_proxies: tuple[str, ...] = ()
    #: Failed logins: each (username, client) pair gets ``login_free_failures`` tries without delay,
    #: then waits 1, 2, 4… seconds up to ``login_delay_max`` before the next (never a lockout). A
    #: client across usernames, and a username across clients, are slowed by at most
    #: ``login_shared_delay_max``: a whole floor may share one address. Failures are forgotten after
    #: ``login_window_seconds`` without one. ``login_free_failures = 0`` turns throttling off.
    login_free_failures: int = 3
    login_delay_max: float = 60.0
    login_shared_delay_max: float = 1.0
    login_window_seconds: float = 900.0
    #: This many failed logins across the centre within ``login_window_seconds`` alert the supervisors
    #: (wallboard banner and an ``auth.login_attack`` log event); 0: never.
    login_alert_failures: int = 20
    #: Bearer token for ``/metrics`` from anywhere but loopback (env ``CALLCENTER_WEB_METRICS_TOKEN``);
    #: empty: loopback only.
    metrics_token: str = ""
    #: The maps' tile URL template (Leaflet's ``{z}/{x}/{y}``, optional ``{s}``), fetched by the
    #: browsers, never by the app; its origin is allowed in the pages' CSP ``img-src``. Empty: no
    #: tiles (markers on a blank background, for a closed network without a tile server).
    map_tiles: str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    #: Attribution shown in the maps' corner (the tile provider's licence asks for one).
    map_attribution: str = "© OpenStreetMap contributors"

    def __post_init__(self) -> None:
        if self.map_tiles and not re.fullmatch(r"https?://[^/\s\"';]+/\S*", self.map_tiles):
            raise ConfigError(f"[web].map_tiles: not an http(s) URL template: {self.map_tiles!r}")
        # A malformed proxy entry fails at load, naming it, not at the first login.
        for entry in self.trusted_proxies:
            try:
                ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ConfigError(f"[web].trusted_proxies: not an address or network: {entry!r}") from None


@dataclass(frozen=True)
class IntakeConfig:
    #: TOML list of districts and sub-districts for the intake form; empty: the packaged sample.
    districts_file: str = ""


@dataclass(frozen=True)
class StoreConfig:
    #: Embedded default; ``postgresql+asyncpg://user@host/db`` works too.
    url: str = "sqlite+aiosqlite:///var/callcenter.db"
    #: How long a write keeps retrying through a database hiccup before it is logged as lost.
    retry_for: float = 30.0
    #: This app node's name among the nodes sharing the store (letters, digits, ``.``, ``_``): the
    #: routing marker on a 112 channel and in ``UserEvent(CallcenterQueue)``'s ``RoutedBy``, and the
    #: sender of change signals (docs/nodes.md). Empty: ``<host>.<pid>``.
    node: str = ""


@dataclass(frozen=True)
class NumbersConfig:
    default_region: str = "ID"
    #: Dialled numbers that enter the same 112 flow (110 police, 113 fire, 118/119 ambulance).
    emergency: tuple[str, ...] = ("112", "110", "113", "118", "119")


@dataclass(frozen=True)
class QueueConfig:
    name: str = "calltakers"
    #: Asterisk serves higher QUEUE_PRIO first.
    default_priority: int = 10
    #: Priority for numbers with ``prank_threshold`` prank/hoax/silent flags within ``prank_window_days``.
    #: Never a block: the call still queues, it only yields to other callers.
    prank_priority: int = 1
    prank_threshold: int = 3
    prank_window_days: int = 30
    #: Play the "jangan iseng" reminder to flagged numbers before queueing them.
    prank_reminder: bool = True
    #: Seconds between reloads of the in-memory flag index from the database (flags added by this
    #: process count at once; this picks up those written elsewhere).
    flags_refresh: float = 60.0
    language: str = "id"
    #: Seconds a caller waits in the queue before overflowing.
    timeout: int = 120
    #: Dial string for overflow when no call-taker answers in time (a neighbouring centre, a supervisor).
    overflow_dial: str = "PJSIP/supervisor"
    overflow_timeout: int = 30
    record_dir: str = "/var/spool/asterisk/monitor/callcenter"
    #: Pause a call-taker (reason "tidak menjawab") after this many offered calls in a row rang out; 0: never.
    autopause_after: int = 3


@dataclass(frozen=True)
class DispatchConfig:
    #: Agency directory and routing (TOML); empty: the sample ``config/agencies.toml`` shipped with the app.
    agencies_file: str = ""
    #: Where generated briefing prompts are written, and the same directory as Asterisk sees it
    #: (differs when Asterisk runs in a chroot or another host; empty: the same path).
    prompt_dir: str = "var/prompts"
    prompt_dir_asterisk: str = ""
    #: Dialplan context the AMI Originate of a duty line runs in (``dialplans/callcenter.conf``).
    originate_context: str = "callcenter-agency"
    #: Calls to the same line before escalating to the next one.
    attempts_per_line: int = 2
    #: Seconds the officer has to press 1 after the briefing starts.
    accept_timeout: int = 30
    #: Photos attached to agency updates.
    upload_dir: str = "var/uploads"
    upload_max_bytes: int = 5_000_000


@dataclass(frozen=True)
class TwilioConfig:
    """Agencies without a SIP line; credentials only from the environment (CALLCENTER_TWILIO_*)."""

    account_sid: str = ""
    auth_token: str = ""
    from_number: str = ""
    #: Base URL Twilio uses to reach our webhooks (the centre's public HTTPS address).
    public_url: str = ""
    #: Override of Twilio's API host, for tests against a local recorder; empty in production.
    api_base: str = ""
    #: The centre's WhatsApp sender (E.164, approved for WhatsApp at Twilio); empty: alerts go by SMS only.
    whatsapp_from: str = ""


@dataclass(frozen=True)
class LocationConfig:
    """Where the caller is: the AML receiver (``POST /aml``) and SMS location links (``docs/location.md``)."""

    #: Shared secret an AML sender presents (``X-AML-Key`` header or ``?key=``); only from the
    #: environment (``CALLCENTER_LOCATION_AML_SECRET``). At least this or ``aml_allow`` must be set,
    #: else ``/aml`` is switched off (answers 503).
    aml_secret: str = ""
    #: Addresses or networks (CIDR) allowed to post AML; both checks apply when both are set.
    aml_allow: tuple[str, ...] = ()
    #: A fix still goes to a call that ended this many minutes ago (an AML SMS can trail the hangup).
    match_minutes: int = 30
    #: How long an SMS location link works.
    link_minutes: int = 60
    #: Links per call, and per number per hour (the caller is in an emergency: no SMS flood).
    links_per_call: int = 3
    links_per_number_hour: int = 5
    #: Positions one link accepts (the page streams while open: one every few seconds).
    link_max_fixes: int = 300
    #: Requests per minute one address may make to the public ``/l/`` pages.
    public_per_minute: int = 60

    def __post_init__(self) -> None:
        for entry in self.aml_allow:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ConfigError(f"[location].aml_allow: not an address or network: {entry!r}") from None

    def allowed(self, address: str | None) -> bool:
        """Whether ``address`` may post AML under ``aml_allow`` (any address when the list is empty)."""
        if not self.aml_allow:
            return True
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(entry, strict=False) for entry in self.aml_allow)


@dataclass(frozen=True)
class ReportConfig:
    """The citizen report app ``/lapor`` (``docs/report-app.md``): verification codes, limits, the block."""

    #: Serve ``/lapor`` at all (it also needs Twilio credentials, a sender number and ``public_url``).
    enabled: bool = True
    #: A verification code works this long, for this many wrong tries; a number gets this many an hour.
    code_minutes: int = 10
    code_attempts: int = 5
    codes_per_number_hour: int = 3
    #: Codes one client address group (IPv4 address, IPv6 /64) may ask for per hour.
    codes_per_address_hour: int = 10
    #: How long a verified device's token lasts.
    device_days: int = 365
    #: Reports per number and per client address group per hour.
    reports_per_number_hour: int = 5
    reports_per_address_hour: int = 20
    #: Reports classified prank/hoax that block the number from the app (never from calling 112).
    block_after_false: int = 3
    #: How long such a block lasts; 0: until a supervisor lifts it.
    block_days: int = 0
    #: Where report photos are stored, and their largest size (JPEG/PNG, checked by their first bytes).
    upload_dir: str = "var/reports"
    photo_max_bytes: int = 5_000_000

    def __post_init__(self) -> None:
        for name in (
            "code_minutes",
            "code_attempts",
            "codes_per_number_hour",
            "codes_per_address_hour",
            "device_days",
            "reports_per_number_hour",
            "reports_per_address_hour",
            "block_after_false",
            "photo_max_bytes",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"[report].{name}: must be at least 1, got {getattr(self, name)}")
        if self.block_days < 0:
            raise ConfigError(f"[report].block_days: must be 0 (until lifted) or more, got {self.block_days}")


@dataclass(frozen=True)
class SupervisionConfig:
    #: Prefix that turns a recording path as Asterisk wrote it into a path this host can read
    #: (the chroot's root for the test PBX; empty when Asterisk runs on this host's file system).
    recordings_root: str = ""
    #: Ask the citizen for a rating when an incident is resolved.
    ratings: bool = True
    #: The centre's UTC offset, ``+07:00`` (WIB), ``+08:00`` (WITA) or ``+09:00`` (WIT): what "today", a
    #: day and an hour of day mean in statistics and lists. Empty: the server's own offset. Whole hours
    #: only (statistics group on UTC hours; Indonesia has no daylight saving).
    utc_offset: str = ""
    #: Agency leaders and the regional head to alert (TOML, ``config/leaders.toml``); empty: no alerts.
    leaders_file: str = ""
    #: Local hour (0-23) from which the regional head's summary of the day before is sent.
    daily_summary_hour: int = 7

    def __post_init__(self) -> None:
        self.offset()  # a malformed value fails at load, not at the first statistics request

    def offset(self) -> timedelta | None:
        """``utc_offset`` as a timedelta, None when unset."""
        if not self.utc_offset:
            return None
        found = _OFFSET.fullmatch(self.utc_offset.strip())
        if found is None or int(found["minutes"] or 0) or int(found["hours"]) > 14:
            raise ConfigError(f"[supervision].utc_offset: expected whole hours like +08:00, got {self.utc_offset!r}")
        hours = int(found["hours"])
        return timedelta(hours=-hours if found["sign"] == "-" else hours)


@dataclass(frozen=True)
class RetentionConfig:
    #: Recordings are deleted after this many days.
    recordings_days: int = 90
    #: Personal fields of calls and incidents are anonymised after this many days.
    personal_days: int = 365
    #: Generated briefing prompts (they speak the address and the callback number) are deleted once
    #: unused for this many hours; a later briefing generates its prompt again.
    prompts_hours: float = 24.0


@dataclass(frozen=True)
class PbxConfig:
    """The bundled test PBX (Asterisk 22 in a Debian sid chroot); production uses its own Asterisk."""

    cache_dir: str = "~/.cache/callcenter"
    mirror: str = ""
    sip_port: int = 5060
    instance: str = "demo"


@dataclass(frozen=True)
class LogConfig:
    level: str = "INFO"
    json: bool = True
    #: Key of the references (``logs.ref``) that stand for callers' numbers in the log; from the
    #: environment (``CALLCENTER_LOG_PSEUDONYM_KEY``). Empty: a new random key per process.
    pseudonym_key: str = field(default="", repr=False)


@dataclass(frozen=True)
class Config:
    agi: AgiConfig = field(default_factory=AgiConfig)
    ami: AmiConfig = field(default_factory=AmiConfig)
    web: WebConfig = field(default_factory=WebConfig)
    intake: IntakeConfig = field(default_factory=IntakeConfig)
    dispatch: DispatchConfig = field(default_factory=DispatchConfig)
    twilio: TwilioConfig = field(default_factory=TwilioConfig)
    location: LocationConfig = field(default_factory=LocationConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    supervision: SupervisionConfig = field(default_factory=SupervisionConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    numbers: NumbersConfig = field(default_factory=NumbersConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    pbx: PbxConfig = field(default_factory=PbxConfig)
    log: LogConfig = field(default_factory=LogConfig)


def _coerce(where: str, typ: Any, value: Any) -> Any:
    """Convert a TOML or environment value to the field's declared type, or say which key is wrong."""
    origin = typing.get_origin(typ)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_type, _ellipsis) = typing.get_args(typ)
        return tuple(_coerce(where, item_type, v) for v in value)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            return value.lower() in {"1", "true", "yes", "on"}
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if typ is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {typ!r}")  # pragma: no cover


#: Keys an earlier release read and this one does not: a config file that still sets them starts with a
#: warning instead of refusing (an upgrade must not keep a 112 centre's app down over a renamed knob).
RETIRED_KEYS: dict[tuple[str, str], str] = {
    ("web", "login_max_failures"): "logins are slowed, never locked: see login_free_failures",
    ("web", "login_lockout_seconds"): "logins are slowed, never locked: see login_delay_max",
}


def _section(cls: type[Any], name: str, data: Mapping[str, Any], env: Mapping[str, str]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in sorted(set(data) - known):
        if (name, key) in RETIRED_KEYS:
            log.warning("config.retired_key", key=f"[{name}].{key}", instead=RETIRED_KEYS[(name, key)])
            known.add(key)
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"[{name}]: unknown key(s) {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        env_key = f"{ENV_PREFIX}{name.upper()}_{f.name.upper()}"
        if env_key in env:
            values[f.name] = _coerce(env_key, hints[f.name], env[env_key])
        elif f.name in data:
            values[f.name] = _coerce(f"[{name}].{f.name}", hints[f.name], data[f.name])
    return cls(**values)


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Build the configuration; ``path`` defaults to ``$CALLCENTER_CONFIG`` when that is set."""
    env = os.environ if env is None else env
    if path is None:
        path = env.get(f"{ENV_PREFIX}CONFIG") or None
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    hints = typing.get_type_hints(Config)
    sections = {f.name for f in dataclasses.fields(Config)}
    unknown = set(data) - sections
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(sorted(unknown))}")
    built: dict[str, Any] = {}
    for name in sections:
        raw = data.get(name, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"[{name}] must be a table")
        built[name] = _section(hints[name], name, raw, env)
    return Config(**built)


def replace(cfg: Config, **sections: Mapping[str, Any]) -> Config:
    """Copy of ``cfg`` with some fields changed, e.g. ``replace(cfg, agi={"port": 0})``; for tests and tools."""
    changed = {name: dataclasses.replace(getattr(cfg, name), **values) for name, values in sections.items()}
    return dataclasses.replace(cfg, **changed)


__all__ = ["Config", "ConfigError", "load_config", "replace"]
