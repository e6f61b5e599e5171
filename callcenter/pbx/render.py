"""Render a complete, self-contained Asterisk configuration for one test/demo PBX instance.

Every directory Asterisk writes to (``astvarlibdir``, ``astspooldir``, ``astlogdir``,
``astrundir``, ``astdbdir``) points into the instance directory ``/srv/cc-<name>`` inside the
chroot, and the SIP, AMI and RTP ports all derive from the spec, so several instances can run
side by side in the same chroot (parallel test sessions, a benchmark next to the demo).

The production dialplan (``dialplans/callcenter.conf``) reads only ``CC_*`` globals; this module
renders those globals from the spec into ``callcenter-globals.conf``. Only the *test* wiring
(the ``bare`` benchmark extension, the SIPp endpoints) lives here, never routing logic.
"""

from __future__ import annotations

import math
import re
import struct
import wave
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

#: Where Debian puts the modules inside the chroot.
MODULE_DIR = "/usr/lib/x86_64-linux-gnu/asterisk/modules"
#: The file name the production dialplan has in ``dialplans/`` and in the etc dir.
DIALPLAN_FILE = "callcenter.conf"
GLOBALS_FILE = "callcenter-globals.conf"
#: Context the anonymous (citizen) endpoint lands in: the production context plus ``bare``.
TEST_IN_CONTEXT = "callcenter-test-in"
#: Call-takers and the supervisor line: nothing to dial yet, but an endpoint needs a context.
INTERNAL_CONTEXT = "callcenter-internal"
AGENCY_CONTEXT = "callcenter-agency"

#: Default RTP port range of every instance (see ``PbxSpec.rtp_range``).
RTP_RANGE = (10000, 31999)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
_DIGITS_RE = re.compile(r"^[0-9]{1,15}$")

#: Loaded in this order; Asterisk resolves inter-module dependencies among the listed set, but
#: res_speech must precede res_agi (res_agi declares it optional, so the loader does not pull it).
MODULES: tuple[str, ...] = (
    # sorcery backends and the pjsip stack
    "res_sorcery_config.so",
    "res_sorcery_memory.so",
    "res_sorcery_astdb.so",
    "res_pjproject.so",
    "res_pjsip.so",
    "res_pjsip_session.so",
    "res_pjsip_pubsub.so",
    "res_pjsip_endpoint_identifier_anonymous.so",
    "res_pjsip_endpoint_identifier_ip.so",
    "res_pjsip_endpoint_identifier_user.so",
    "res_pjsip_sdp_rtp.so",
    "res_pjsip_caller_id.so",
    "res_pjsip_dtmf_info.so",
    "res_pjsip_rfc3326.so",
    "res_pjsip_header_funcs.so",
    "res_pjsip_logger.so",
    "res_pjsip_nat.so",
    "res_pjsip_authenticator_digest.so",
    "res_pjsip_outbound_authenticator_digest.so",
    "chan_pjsip.so",
    # media
    "res_rtp_asterisk.so",
    "res_timing_timerfd.so",
    "codec_ulaw.so",
    "codec_alaw.so",
    "codec_gsm.so",
    "format_wav.so",
    "format_pcm.so",
    "format_gsm.so",
    "format_sln.so",
    # dialplan and applications
    "pbx_config.so",
    "app_dial.so",
    "app_queue.so",
    "app_playback.so",
    "app_mixmonitor.so",
    "app_stack.so",
    "app_exec.so",
    "app_verbose.so",
    "app_userevent.so",
    "app_originate.so",
    "app_read.so",
    "app_senddtmf.so",
    "app_echo.so",
    "app_confbridge.so",
    "app_chanspy.so",
    "bridge_simple.so",
    "bridge_native_rtp.so",
    "bridge_softmix.so",
    "bridge_holding.so",
    "bridge_builtin_features.so",
    "res_speech.so",
    "res_agi.so",
    "res_musiconhold.so",
    "func_strings.so",
    "func_logic.so",
    "func_channel.so",
    "func_callerid.so",
    "func_hangupcause.so",
    "func_global.so",
    "func_cut.so",
    "func_math.so",
    "func_uri.so",
    "func_devstate.so",
    "res_manager_devicestate.so",
    "res_clioriginate.so",
    "chan_bridge_media.so",
)


@dataclass(frozen=True)
class PbxSpec:
    """Everything that differs between PBX instances; the rest of the config is fixed.

    ``takers``/``agencies`` are ``(endpoint name, SIP port)`` pairs: each gets a PJSIP endpoint
    with a static contact ``sip:<name>@127.0.0.1:<port>`` where a SIPp answerer listens.
    """

    instance: str = "demo"
    sip_port: int = 5060
    ami_port: int = 5038
    ami_username: str = "callcenter"
    ami_secret: str = ""
    agi_url: str = "agi://127.0.0.1:4573"
    #: The app's ``[agi] secret``: ``CC_AGI_URL`` becomes ``<agi_url>/<secret>`` (see ``cc_agi_url``).
    agi_secret: str = field(default="", repr=False)
    #: Further app nodes' FastAGI URLs (``agi://host:port``, same secret), tried in this order after
    #: ``agi_url`` by ``[callcenter-agi]`` (``CC_AGI_URLS``; docs/nodes.md, "FastAGI failover").
    agi_fallbacks: tuple[str, ...] = ()
    queue: str = "calltakers"
    #: Absolute time (s) a caller waits in the queue before the overflow line is tried.
    queue_timeout: int = 60
    #: How long (s) the queue rings one call-taker before trying the next.
    member_timeout: int = 15
    default_priority: int = 5
    language: str = "id"
    emergency_numbers: tuple[str, ...] = ("112", "110", "113", "118", "119")
    overflow_dial: str = "PJSIP/supervisor"
    overflow_timeout: int = 20
    #: Inside the chroot; ``None`` means ``<instance dir>/recordings``.
    record_dir: str | None = None
    takers: tuple[tuple[str, int], ...] = ()
    agencies: tuple[tuple[str, int], ...] = ()
    #: "Citizen lines" (``(endpoint name, SIP port)``): a SIPp UAS standing in for the public network.
    #: Call-backs and rating calls dial ``PJSIP/<number>@<citizen_trunk>``, which reaches the UAS at that
    #: port whatever the number; ``citizen_trunk`` ("" = citizens unreachable) is ``CC_CITIZEN_TRUNK``.
    citizens: tuple[tuple[str, int], ...] = ()
    citizen_trunk: str = ""
    #: SIP port of the ``supervisor`` overflow line; ``None`` leaves the endpoint out.
    supervisor_port: int | None = None
    #: Endpoint names that are static queue members (the app normally adds members over AMI).
    static_members: tuple[str, ...] = ()
    greeting: str = "callcenter/cc-greeting"
    not_emergency: str = "callcenter/cc-not-emergency"
    agency_fallback: str = "callcenter/cc-agency-fallback"
    prank_reminder: str = "callcenter/cc-prank-reminder"
    #: Heard by the call-taker who answers a citizen's report from the app (``[callcenter-report-announce]``).
    report_announce: str = "callcenter/cc-app-report"
    #: Played to waiting callers every ``periodic_announce_frequency`` seconds.
    periodic_announce: str = "callcenter/cc-greeting"
    periodic_announce_frequency: int = 30
    #: Explicit RTP range; ``None`` uses ``RTP_RANGE`` (see ``rtp_range``).
    rtp_start: int | None = None
    rtp_end: int | None = None
    extra_globals: tuple[tuple[str, str], ...] = field(default=())
    #: queues.conf ``ringinuse``: ``False`` (production) rings a call-taker for one call at a time;
    #: ``True`` lets one SIPp answerer take many concurrent calls (the P1 load benchmark).
    ringinuse: bool = False
    #: asterisk.conf ``maxcalls`` (channels). A 112 surge of 1,000 waiting callers is 1,000 channels plus
    #: the call-takers' legs (bench/p5_surge.py); still a cap, so a runaway test fails instead of
    #: exhausting the host. The P1 load benchmark raises it so that CPU, not this cap, ends its ladder.
    maxcalls: int = 2500
    #: asterisk.conf ``maxfiles``: Asterisk raises its own open-file limit to this at start (it runs as
    #: root). A waiting caller holds ~6 descriptors (SIP, RTP + RTCP, timer, alert pipe, the MixMonitor
    #: file), so the usual 1024 ends a surge near 150 callers.
    maxfiles: int = 65536

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.instance):
            raise ValueError(f"instance name {self.instance!r} must match {_NAME_RE.pattern}")
        names = [n for n, _ in self.takers] + [n for n, _ in self.agencies] + list(self.static_members)
        names += [n for n, _ in self.citizens]
        if self.citizen_trunk and self.citizen_trunk not in {n for n, _ in self.citizens}:
            raise ValueError(f"citizen trunk {self.citizen_trunk!r} is not one of the citizen lines")
        names.append(self.queue)
        for name in names:
            if not _NAME_RE.match(name) or name in ("anonymous", "supervisor", "transport-udp"):
                raise ValueError(f"endpoint/queue name {name!r} is invalid or reserved")
        known = {n for n, _ in self.takers}
        for m in self.static_members:
            if m not in known:
                raise ValueError(f"static member {m!r} is not one of the takers")
        for num in self.emergency_numbers:
            if not _DIGITS_RE.match(num):
                raise ValueError(f"emergency number {num!r} must be digits only")
        if not self.emergency_numbers:
            raise ValueError("at least one emergency number is required")
        if not re.match(r"^[a-z]{2}(_[A-Za-z]{2})?$", self.language):
            raise ValueError(f"language {self.language!r} is not like 'id' or 'en_US'")
        for url in (self.agi_url, *self.agi_fallbacks):
            if not url.startswith(("agi://", "hagi://")) or any(c in url for c in ",|; \n\r"):
                raise ValueError(f"agi_url {url!r} must be agi://host:port")
        if len(self.agi_fallbacks) > 2:
            raise ValueError("at most 3 app nodes are tried ([callcenter-agi]): give at most 2 agi_fallbacks")
        if self.agi_secret and not re.fullmatch(r"[A-Za-z0-9_-]{16,256}", self.agi_secret):
            raise ValueError("agi_secret must be 16+ letters, digits, '-' or '_'")
        ports = (*(p for _, p in self.takers), *(p for _, p in self.agencies), *(p for _, p in self.citizens))
        for port in (self.sip_port, self.ami_port, *ports):
            if not 0 < port < 65536:
                raise ValueError(f"port {port} out of range")
        if self.maxcalls < 1:
            raise ValueError(f"maxcalls {self.maxcalls} must be at least 1")
        if self.maxfiles < 1024:
            raise ValueError(f"maxfiles {self.maxfiles} must be at least 1024")
        start, end = self.rtp_range
        if not 1024 <= start < end < 65536:
            raise ValueError(f"RTP range {start}-{end} is invalid")
        for value in (self.ami_username, self.ami_secret, self.overflow_dial, self.greeting):
            if any(c in value for c in "\n\r;[]"):
                raise ValueError(f"{value!r} contains a character that would break the config")

    def _with_secret(self, url: str) -> str:
        return f"{url.rstrip('/')}/{self.agi_secret}" if self.agi_secret else url

    @property
    def cc_agi_url(self) -> str:
        """``CC_AGI_URL``: the dialplan appends ``/incoming``, ``/hangup``…, so Asterisk asks the app for
        ``<secret>/<route>`` and the app serves only sessions that carry its secret."""
        return self._with_secret(self.agi_url)

    @property
    def cc_agi_urls(self) -> str:
        """``CC_AGI_URLS``: every node's URL with the secret, ``|``-separated in the order tried ("" for one
        node: the dialplan then uses ``CC_AGI_URL``)."""
        if not self.agi_fallbacks:
            return ""
        return "|".join(self._with_secret(url) for url in (self.agi_url, *self.agi_fallbacks))

    @property
    def instance_dir(self) -> PurePosixPath:
        """The instance's directory as Asterisk (inside the chroot) sees it."""
        return PurePosixPath("/srv") / f"cc-{self.instance}"

    @property
    def record_path(self) -> PurePosixPath:
        return PurePosixPath(self.record_dir) if self.record_dir else self.instance_dir / "recordings"

    @property
    def moh_dir(self) -> PurePosixPath:
        return self.instance_dir / "moh"

    @property
    def rtp_range(self) -> tuple[int, int]:
        """The RTP ports (two per call: RTP and RTCP); ``RTP_RANGE`` unless set explicitly.

        Every instance may share the one wide range: res_rtp_asterisk starts at a random even port and
        moves on to the next one when a bind fails, so instances side by side (parallel test sessions, a
        benchmark next to the demo) only skip each other's ports. The range stays below Linux's ephemeral
        range (32768+), where the ports tests pick for SIPp come from. 22,000 ports hold 11,000 calls: a
        surge is never turned away for RTP ports (a 200-port window turned away all but ~98 callers).
        """
        if self.rtp_start is not None and self.rtp_end is not None:
            return self.rtp_start, self.rtp_end
        return RTP_RANGE


def _section(name: str, body: list[str], template: str = "") -> str:
    return f"[{name}]{template}\n" + "\n".join(body) + "\n\n"


def render_asterisk_conf(spec: PbxSpec) -> str:
    d = spec.instance_dir
    return (
        "; Rendered by callcenter.pbx.render: every writable dir is per instance.\n"
        + _section(
            "directories",
            [
                f"astcachedir => {d}/cache",
                f"astetcdir => {d}/etc",
                f"astmoddir => {MODULE_DIR}",
                f"astvarlibdir => {d}/lib",
                f"astdbdir => {d}/lib",
                f"astkeydir => {d}/lib",
                f"astdatadir => {d}/data",
                "astagidir => /usr/share/asterisk/agi-bin",
                f"astspooldir => {d}/spool",
                f"astrundir => {d}/run",
                f"astlogdir => {d}/log",
                "astsbindir => /usr/sbin",
            ],
        )
        + _section(
            "options",
            [
                "verbose = 0",
                "debug = 0",
                "hideconnect = yes",
                "; Keep RTP flowing to waiting callers: some phones and carriers drop silent calls.",
                "transmit_silence = yes",
                "; No dial tone/dialplan surprises from a half-configured instance.",
                "autosystemname = no",
                f"systemname = cc-{spec.instance}",
                "maxload = 0",
                f"maxcalls = {spec.maxcalls}",
                f"maxfiles = {spec.maxfiles}",
            ],
        )
    )


def render_modules_conf(spec: PbxSpec) -> str:
    lines = [
        "; autoload=no: loading everything stalls on DNS lookups and drags in unused channel drivers.",
        "autoload = no",
    ]
    lines += [f"load = {m}" for m in MODULES]
    return _section("modules", lines)


def render_logger_conf(spec: PbxSpec) -> str:
    return _section("general", ["dateformat = %F %T.%3q"]) + _section(
        "logfiles",
        [
            "; No verbose here (a flood would hide the warnings tests look for); dtmf proves digits arrived.",
            "console => notice,warning,error",
            "messages.log => notice,warning,error,dtmf,verbose(3)",
        ],
    )


def render_rtp_conf(spec: PbxSpec) -> str:
    start, end = spec.rtp_range
    return _section("general", [f"rtpstart = {start}", f"rtpend = {end}", "strictrtp = no"])


def _phone(name: str, port: int, context: str) -> str:
    aor = _section(name, ["type = aor", f"contact = sip:{name}@127.0.0.1:{port}", "max_contacts = 1"])
    endpoint = _section(
        name,
        [
            "type = endpoint",
            "transport = transport-udp",
            f"aors = {name}",
            f"context = {context}",
            "disallow = all",
            "allow = ulaw,alaw",
            "direct_media = no",
            "dtmf_mode = rfc4733",
            f'callerid = "{name}" <{name}>',
        ],
    )
    return aor + endpoint


def render_pjsip_conf(spec: PbxSpec) -> str:
    out = [
        _section(
            "global",
            [
                "type = global",
                "; ip first would make every loopback SIPp look alike; no identify sections exist anyway.",
                "endpoint_identifier_order = username,ip,anonymous",
                f"user_agent = callcenter-testpbx-{spec.instance}",
            ],
        ),
        _section(
            "transport-udp",
            ["type = transport", "protocol = udp", f"bind = 127.0.0.1:{spec.sip_port}"],
        ),
        _section(
            "anonymous",
            [
                "; Citizens: unauthenticated, identified by nothing but arriving at all.",
                "type = endpoint",
                "transport = transport-udp",
                f"context = {TEST_IN_CONTEXT}",
                "disallow = all",
                "allow = ulaw,alaw",
                "direct_media = no",
                "dtmf_mode = rfc4733",
                "rtp_symmetric = yes",
            ],
        ),
    ]
    for name, port in spec.takers:
        out.append(_phone(name, port, INTERNAL_CONTEXT))
    for name, port in spec.agencies:
        out.append(_phone(name, port, AGENCY_CONTEXT))
    for name, port in spec.citizens:
        # Outbound only (call-backs, rating calls); anything they send lands where nothing is dialable.
        out.append(_phone(name, port, INTERNAL_CONTEXT))
    if spec.supervisor_port is not None:
        out.append(_phone("supervisor", spec.supervisor_port, INTERNAL_CONTEXT))
    return "".join(out)


def render_queues_conf(spec: PbxSpec) -> str:
    body = [
        "strategy = rrmemory",
        "; One call per call-taker: a taker on a call is never rung for the next one.",
        f"ringinuse = {'yes' if spec.ringinuse else 'no'}",
        f"timeout = {spec.member_timeout}",
        "retry = 1",
        "wrapuptime = 0",
        "; The app's timeout (Queue() argument) wins, so overflow happens when the dialplan says.",
        "timeoutpriority = app",
        "announce-frequency = 30",
        "announce-position = yes",
        "announce-holdtime = yes",
        f"periodic-announce = {spec.periodic_announce}",
        f"periodic-announce-frequency = {spec.periodic_announce_frequency}",
        "; Join when takers exist but are paused or busy (they come back); do NOT join when there",
        "; are no members at all (or all are invalid/unavailable): the dialplan overflows at once.",
        "joinempty = invalid,unavailable",
        "leavewhenempty = no",
        "musicclass = default",
        "; eventwhencalled/eventmemberstatus no longer exist in Asterisk 12+: the events are always sent.",
        "setinterfacevar = yes",
        "setqueueentryvar = yes",
    ]
    body += [f"member => PJSIP/{m},0,{m},PJSIP/{m}" for m in spec.static_members]
    return _section(
        "general",
        [
            "; Members come from the app over AMI; restoring them from astdb would resurrect stale takers.",
            "persistentmembers = no",
            "autofill = yes",
            "shared_lastcall = yes",
            "log_membername_as_agent = yes",
        ],
    ) + _section(spec.queue, body)


#: The AMI user's rights, in manager.conf's words; why: ``render_manager_conf`` and README (Security).
AMI_READ = "call,agent,user,system"
AMI_WRITE = "call,agent,originate,reporting"


def render_manager_conf(spec: PbxSpec) -> str:
    return _section(
        "general",
        [
            "enabled = yes",
            f"port = {spec.ami_port}",
            "bindaddr = 127.0.0.1",
            "displayconnects = no",
            "; The dialplan's mark of a call queued without the app's routing, on every channel event:",
            "; the app counts them (dialplan fallbacks in /metrics).",
            "channelvars = CC_FALLBACK",
        ],
    ) + _section(
        spec.ami_username,
        [
            f"secret = {spec.ami_secret}",
            "deny = 0.0.0.0/0.0.0.0",
            "permit = 127.0.0.1/255.255.255.255",
            # Only what the app uses (README, Security): events of calls (Hangup, OriginateResponse,
            # DialEnd, transfers), queues and members (agent), the dialplan's UserEvent (user) and
            # FullyBooted/Shutdown (system); actions Originate (originate), Redirect/Hangup (call),
            # QueueAdd/Remove/Pause/ChangePriorityCaller (agent), Setvar of a 112 caller's route (call),
            # CoreShowChannels/Getvar (reporting). QueueStatus and Ping
            # need none. No command, config or system write: a leaked AMI secret cannot run CLI
            # commands, rewrite the dialplan or restart Asterisk.
            f"read = {AMI_READ}",
            f"write = {AMI_WRITE}",
            "writetimeout = 5000",
        ],
    )


def render_musiconhold_conf(spec: PbxSpec) -> str:
    return _section("general", []) + _section(
        "default",
        [
            "; A generated comfort tone (write_hold_tone) so the queue never depends on MoH packages.",
            "mode = files",
            f"directory = {spec.moh_dir}",
            "sort = alpha",
        ],
    )


def render_globals_conf(spec: PbxSpec) -> str:
    values: list[tuple[str, str]] = [
        ("CC_AGI_URL", spec.cc_agi_url),
        ("CC_AGI_URLS", spec.cc_agi_urls),
        ("CC_QUEUE", spec.queue),
        ("CC_QUEUE_TIMEOUT", str(spec.queue_timeout)),
        ("CC_DEFAULT_PRIO", str(spec.default_priority)),
        ("CC_DEFAULT_LANG", spec.language),
        ("CC_EMERGENCY_NUMBERS", "|".join(spec.emergency_numbers)),
        ("CC_OVERFLOW_DIAL", spec.overflow_dial),
        ("CC_OVERFLOW_TIMEOUT", str(spec.overflow_timeout)),
        ("CC_RECORD_DIR", str(spec.record_path)),
        ("CC_GREETING", spec.greeting),
        ("CC_NOT_EMERGENCY", spec.not_emergency),
        ("CC_AGENCY_FALLBACK", spec.agency_fallback),
        ("CC_PRANK_REMINDER", spec.prank_reminder),
        ("CC_REPORT_ANNOUNCE", spec.report_announce),
        ("CC_CITIZEN_TRUNK", spec.citizen_trunk),
        *spec.extra_globals,
    ]
    return "; Rendered by callcenter.pbx.render from the PbxSpec; read by dialplans/callcenter.conf.\n" + (
        _section("globals", [f"{k}={v}" for k, v in values])
    )


def render_extensions_conf(spec: PbxSpec) -> str:
    return (
        _section(
            "general",
            [
                "static = yes",
                "writeprotect = yes",
                "; A reload must not keep CC_* globals that the new config dropped.",
                "clearglobalvars = yes",
            ],
        )
        + f'#include "{GLOBALS_FILE}"\n#include "{DIALPLAN_FILE}"\n\n'
        + _section(
            "bench-bare",
            [
                "; Benchmarks compare the real 112 path against this: answer, one second, hang up.",
                "exten => bare,1,Answer()",
                " same => n,Wait(1)",
                " same => n,Hangup()",
                "; bare<seconds> (e.g. bare12): the same, holding the call that long (P1 call-rate bench).",
                "exten => _bareX!,1,Answer()",
                " same => n,Wait(${FILTER(0-9,${EXTEN:4})})",
                " same => n,Hangup()",
            ],
        )
        + _section(
            TEST_IN_CONTEXT,
            [
                "; Test-only entry: bare first, then the untouched production context.",
                "include => bench-bare",
                "include => callcenter-incoming",
            ],
        )
        + _section(INTERNAL_CONTEXT, ["; Call-takers and the supervisor line: nothing to dial yet."])
        # AGENCY_CONTEXT ([callcenter-agency]) is the production one from callcenter.conf: the briefing.
    )


def render(spec: PbxSpec, etc_dir: Path, dialplan: Path | None = None) -> None:
    """Write the whole config set into ``etc_dir``.

    ``dialplan`` is the production ``callcenter.conf`` to copy next to the rendered files
    (defaults to ``dialplans/callcenter.conf`` of this repository).
    """
    etc_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "asterisk.conf": render_asterisk_conf(spec),
        "modules.conf": render_modules_conf(spec),
        "logger.conf": render_logger_conf(spec),
        "rtp.conf": render_rtp_conf(spec),
        "pjsip.conf": render_pjsip_conf(spec),
        "queues.conf": render_queues_conf(spec),
        "manager.conf": render_manager_conf(spec),
        "musiconhold.conf": render_musiconhold_conf(spec),
        "extensions.conf": render_extensions_conf(spec),
        GLOBALS_FILE: render_globals_conf(spec),
        # Quiet defaults for modules that otherwise warn about a missing file.
        "cdr.conf": _section("general", ["enable = no"]),
        "cel.conf": _section("general", ["enable = no"]),
        "features.conf": _section("general", []),
        "confbridge.conf": _section("general", []),
        "ccss.conf": _section("general", []),
        "acl.conf": "",
        "udptl.conf": _section("general", []),
        "pjproject.conf": "",
        "stasis.conf": "",
        "queuerules.conf": "",
        "indications.conf": _section("general", ["country = id"])
        + _section(
            "id",
            [
                "description = Indonesia",
                "ringcadence = 1000,4000",
                "dial = 425",
                "busy = 425/500,0/500",
                "ring = 425/1000,0/4000",
                "congestion = 425/250,0/250",
                "callwaiting = 425/200,0/200,425/200,0/4400",
                "dialrecall = 425/100,0/100,425/100,0/100,425/100,0/100",
                "record = 1400/500,0/15000",
                "info = 950/330,1400/330,1800/330,0/1000",
            ],
        ),
    }
    for name, text in files.items():
        (etc_dir / name).write_text(text)
    src = dialplan or Path(__file__).resolve().parents[2] / "dialplans" / DIALPLAN_FILE
    (etc_dir / DIALPLAN_FILE).write_text(src.read_text())


def write_hold_tone(path: Path, seconds: float = 10.0, rate: int = 8000) -> None:
    """A soft 425 Hz ring-like cadence (1 s on, 4 s off) as 8 kHz mono 16-bit WAV.

    Callers waiting in the queue hear something familiar that says "the line is alive",
    without shipping music files or depending on a MoH package in the chroot.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = bytearray()
    for i in range(int(seconds * rate)):
        t = i / rate
        on = (t % 5.0) < 1.0
        sample = int(6000 * math.sin(2 * math.pi * 425 * t)) if on else 0
        frames += struct.pack("<h", sample)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(frames))
