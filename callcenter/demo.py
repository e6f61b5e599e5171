"""``callcenter demo`` / ``callcenter call``: the whole system on one machine, with no phones needed.

The demo starts the test PBX (Asterisk 22 in its chroot), two SIPp softphones standing in for
call-takers ``taker1`` and ``taker2``, and the app itself, with demo accounts for them and for a
supervisor. A call-taker joins the queue from the console; ``callcenter call 112`` is a citizen
dialling in.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import structlog

from callcenter.config import Config, replace
from callcenter.pbx.chroot import default_cache_dir, ensure_chroot
from callcenter.pbx.demo import DEMO_CITIZEN, DEMO_TAKERS, demo_spec
from callcenter.pbx.harness import TestPbx
from callcenter.pbx.render import PbxSpec
from callcenter.store import Store
from callcenter.store.accounts import Accounts
from callcenter.store.roles import CALLTAKER, SUPERVISOR
from callcenter.testing import sipp
from callcenter.testing.fake_twilio import FakeTwilio, Recorded
from callcenter.testing.nodes import node_name
from callcenter.testing.postgres import ThrowawayPostgres
from callcenter.watchdog import Supervisor

REPO_ROOT = Path(__file__).resolve().parents[1]
log = structlog.get_logger("callcenter.demo")


#: ``--nodes`` upper bound: each node takes the next web and FastAGI port; the dialplan tries at most 3
#: FastAGI URLs ([callcenter-agi]).
MAX_NODES = 3

#: Duty desks whose (SIPp) phone answers in the demo and presses 1 after the briefing. Damkar's main
#: desk is left unanswered on purpose: a fire dispatch shows the escalation to its backup line.
DEMO_ANSWERING_DESKS = ("damkar-backup", "ambulans", "polres", "pdam", "bpbd")


def greeting_seconds() -> float:
    with wave.open(str(REPO_ROOT / "sounds" / "cc-greeting.wav")) as w:
        frames: int = w.getnframes()
        rate: int = w.getframerate()
    return frames / rate


DEMO_USERS = (
    ("ayu", "Ni Made Ayu", CALLTAKER, "PJSIP/taker1"),
    ("budi", "Budi Santoso", CALLTAKER, "PJSIP/taker2"),
    # Her phone is the supervisor line (SIPp answers it below): listen/whisper/barge ring it.
    ("sari", "Sari Dewi", SUPERVISOR, "PJSIP/supervisor"),
)


async def ensure_demo_users(config: Config, password: str) -> list[str]:
    """Demo accounts (created once, in the demo's own database); returns the ones made now."""
    store = Store.from_url(config.store.url, retry_for=config.store.retry_for)
    made: list[str] = []
    try:
        await store.upgrade()
        accounts = Accounts(store)
        existing = {u.username for u in await accounts.list_users()}
        for username, name, role, interface in DEMO_USERS:
            if username not in existing:
                await accounts.create_user(username, name, password, role, interface=interface)
                made.append(username)
    finally:
        await store.close()
    return made


@contextlib.asynccontextmanager
async def demo_database(config: Config, nodes: int) -> AsyncIterator[str]:
    """The store URL of the demo: the configured one (SQLite by default) for one node; for several, a
    throwaway PostgreSQL cluster, the engine they share in production (docs/nodes.md), removed afterwards."""
    if nodes == 1:
        yield config.store.url
        return
    pg = ThrowawayPostgres(dbname="callcenter")
    await asyncio.to_thread(pg.start)
    try:
        print(f"  demo database: throwaway PostgreSQL on 127.0.0.1:{pg.port} (removed on Ctrl-C)", flush=True)
        yield pg.url
    finally:
        await asyncio.to_thread(pg.stop)


async def run_demo(config: Config, *, takers: bool = True, config_path: str | None = None, nodes: int = 1) -> int:
    """The demo; ``nodes`` > 1 runs that many app nodes on a throwaway PostgreSQL, consoles on the web
    port and the ports after it (8080, 8081), FastAGI likewise (4573, 4574)."""
    if not 1 <= nodes <= MAX_NODES:
        print(f"callcenter: --nodes takes 1 to {MAX_NODES}", file=sys.stderr)
        return 2
    async with demo_database(config, nodes) as store_url:
        return await _run_demo(replace(config, store={"url": store_url}), takers, config_path, nodes)


async def _run_demo(config: Config, takers: bool, config_path: str | None, nodes: int) -> int:
    # Passwords are never in the repository: the demo makes one per run unless one is given.
    password = os.environ.get("CALLCENTER_DEMO_PASSWORD") or secrets.token_urlsafe(9)
    made = await ensure_demo_users(config, password)
    chroot = await asyncio.to_thread(ensure_chroot, default_cache_dir())
    # A throwaway AMI secret unless one is configured: PBX and app are started together here.
    secret = config.ami.secret or secrets.token_urlsafe(16)
    # Likewise the FastAGI secret the demo PBX puts into CC_AGI_URL.
    agi_secret = config.agi.secret or secrets.token_urlsafe(24)
    spec = demo_spec(
        config.pbx.sip_port, config.ami.port, secret, config.agi.port, agi_secret, nodes, config.pbx.instance
    )
    pbx = TestPbx(spec, chroot, REPO_ROOT)
    # Asterisk lives in its chroot: what it writes (recordings) and reads (briefing prompts) sits under
    # other paths on this host.
    config = replace(
        config,
        ami={"secret": secret},
        agi={"secret": agi_secret},
        queue={"record_dir": str(spec.record_path)},
        supervision={"recordings_root": str(chroot)},
        dispatch={
            "prompt_dir": str(pbx.host_dir / "prompts"),
            "prompt_dir_asterisk": str(spec.instance_dir / "prompts"),
        },
    )
    web_urls = [f"http://{config.web.host}:{config.web.port + i}" for i in range(nodes)]
    web_url = web_urls[0]
    # No Twilio account in a demo: the local recorder stands in and the texts it "sends" (location
    # links, rating links) are printed here, to be opened in a browser. AML gets a throwaway secret.
    twilio: FakeTwilio | None = None
    if not config.twilio.account_sid:
        twilio = FakeTwilio(on_request=_print_sms)
        await twilio.start()
    aml_secret = config.location.aml_secret or secrets.token_urlsafe(12)
    await pbx.astart()
    phones: list[sipp.SippProcess] = []
    try:
        ports = dict(spec.agencies)
        for desk in DEMO_ANSWERING_DESKS:
            # The duty officer answers after 3 s of ringing and presses 1 once the briefing is playing.
            phones.append(
                await sipp.answerer(
                    ports[desk],
                    answer_after=3,
                    dtmf="1",
                    dtmf_delay=8,
                    hangup_by="remote",
                    max_calls=None,
                    timeout=86400,
                )
            )
        # The citizen called back (an abandoned call, an app report): answers after 3 s, talks 10 s.
        phones.append(
            await sipp.answerer(
                DEMO_CITIZEN[1], answer_after=3, hold_seconds=10, hangup_by="local", max_calls=None, timeout=86400
            )
        )
        if takers:
            for _name, port in DEMO_TAKERS:
                # Answer after 2 s of ringing, talk 20 s, hang up: a call-taker's softphone on autopilot.
                phones.append(
                    await sipp.answerer(
                        port, answer_after=2, hold_seconds=20, hangup_by="local", max_calls=None, timeout=86400
                    )
                )

            # The supervisor's phone (the overflow line too): answers after 2 s and stays until hung up,
            # so "Dengar" on the wallboard is heard through to a ChanSpy session.
            phones.append(
                await sipp.answerer(
                    spec.supervisor_port or 5079, answer_after=2, hangup_by="remote", max_calls=None, timeout=86400
                )
            )

        def started(node: int) -> Callable[[int, int], None]:
            def ready(pid: int, restarts: int) -> None:
                name = f"node {node + 1} " if nodes > 1 else ""
                if restarts:
                    # The stand-in for systemd replaced a frozen or crashed app: say so where the operator looks.
                    print(f"\n  {name}app restarted by the watchdog (pid {pid}, restart {restarts})\n", flush=True)
                elif node:
                    print(f"\n  {name}running: console {web_urls[node]}/ (app pid {pid})\n", flush=True)
                else:
                    print(_banner(spec, web_urls, pid, password if made else None, aml_secret), flush=True)

            return ready

        # The app runs as its own process under the watchdog, the way production runs it under systemd
        # (deploy/systemd/callcenter.service): the demo is where a frozen app can be tried out.
        env = {
            **os.environ,
            "CALLCENTER_AMI_SECRET": secret,
            "CALLCENTER_AGI_SECRET": agi_secret,
            "CALLCENTER_STORE_URL": config.store.url,
            "CALLCENTER_QUEUE_RECORD_DIR": config.queue.record_dir,
            "CALLCENTER_SUPERVISION_RECORDINGS_ROOT": config.supervision.recordings_root,
            "CALLCENTER_DISPATCH_PROMPT_DIR": config.dispatch.prompt_dir,
            "CALLCENTER_DISPATCH_PROMPT_DIR_ASTERISK": config.dispatch.prompt_dir_asterisk,
            "CALLCENTER_LOCATION_AML_SECRET": aml_secret,
            **(twilio.app_env(web_url, from_number="+62365100112") if twilio is not None else {}),
        }
        if config_path:
            env["CALLCENTER_CONFIG"] = config_path
        # Every node the same app on the same database; only its own ports differ.
        supervisors = [
            Supervisor(
                [sys.executable, "-m", "callcenter.cli", "run"],
                env={
                    **env,
                    "CALLCENTER_WEB_PORT": str(config.web.port + i),
                    "CALLCENTER_AGI_PORT": str(config.agi.port + i),
                    **({"CALLCENTER_STORE_NODE": node_name(i)} if nodes > 1 else {}),
                },
                on_ready=started(i),
            )
            for i in range(nodes)
        ]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        codes = await asyncio.gather(*(s.run(stop) for s in supervisors))
        code = next((c for c in codes if c), 0)
    finally:
        for phone in phones:
            with contextlib.suppress(Exception):
                await phone.stop()
        await pbx.astop()
        if twilio is not None:
            await twilio.stop()
    return code


def _banner(spec: PbxSpec, web_urls: list[str], pid: int, password: str | None, aml_secret: str) -> str:
    web_url = web_urls[0]
    accounts = (
        f"  log in as ayu (call-taker, softphone taker1), budi (taker2) or sari (supervisor)\n"
        f"  with the password {password}\n"
        if password
        else "  log in with the demo accounts made on the first run (ayu, budi, sari);\n"
        "  set CALLCENTER_DEMO_PASSWORD on the first run to choose their password\n"
    )
    nodes = ""
    if len(web_urls) > 1:
        consoles = ", ".join(f"{u}/" for u in web_urls)
        nodes = (
            f"  {len(web_urls)} app nodes on one PostgreSQL, consoles on {consoles}\n"
            f'  (log in on either); `curl -s {web_url}/healthz` says whether a node leads ("leader");\n'
            "  `kill -9` the leader's app pid: the other node takes over and callers keep being routed\n"
        )
    return (
        f"\n  demo running: SIP 127.0.0.1:{spec.sip_port}, console {web_url}/ (app pid {pid})\n"
        f"{nodes}"
        f"{accounts}"
        "  in the console: 'Masuk antrean' puts you in the queue (SIPp answers for your softphone)\n"
        "  place a call:  .venv/bin/callcenter call 112 --from 081234567890\n"
        "  after submitting an intake, 'Teruskan ke instansi' calls the agencies' demo phones\n"
        "  (Damkar's main desk does not answer: watch the escalation to its backup line)\n"
        "  on a call's pop, 'Kirim tautan lokasi (SMS)' texts the caller a link: the SMS is printed\n"
        "  here (no Twilio account in the demo); open its link, allow location, watch the pop\n"
        "  AML from the caller's phone, while 081234567890 is on the line:\n"
        f"    curl -d device_number=081234567890 -d location_latitude=-8.3581 -d location_longitude=114.617"
        f" -d location_accuracy=14 -d location_source=gps -H 'X-AML-Key: {aml_secret}' {web_url}/aml\n"
        f"  a citizen's report: open {web_url}/lapor/ (allow location), verify any number with the code\n"
        "  printed here, hold a category 3 s: it waits in the queue and pops on the answering console,\n"
        "  where 'Telepon balik pelapor' rings your softphone, then the citizen's demo phone\n"
        "  the app runs under a watchdog as in production: `kill -STOP <app pid>` and callers still\n"
        "  queue at once; the frozen app is replaced within seconds\n"
        "  Ctrl-C stops everything.\n"
    )


def _print_sms(request: Recorded) -> None:
    if request.path.endswith("/Messages.json"):
        print(f"\n  [demo SMS to {request.param('To')}] {request.param('Body')}\n", flush=True)


async def place_call(config: Config, number: str, caller_id: str, hold: float) -> int:
    """A citizen calls ``number`` on the demo PBX and stays ``hold`` seconds after the greeting."""
    on_line = greeting_seconds() + hold
    proc = await sipp.caller(
        f"127.0.0.1:{config.pbx.sip_port}", number, caller_id=caller_id, hold_seconds=on_line, timeout=on_line + 300
    )
    print(f"calling {number} from {caller_id}; staying on the line {on_line:.0f} s …", flush=True)
    result = await proc.wait()
    print(f"call ended: {result.successful} completed, {result.failed} failed (SIPp exit {result.returncode})")
    print(f"see the call in the console: http://{config.web.host}:{config.web.port}/")
    return 0 if result.ok else 1
