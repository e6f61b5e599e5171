"""``callcenter demo`` / ``callcenter call``: the whole system on one machine, with no phones needed.

The demo starts the test PBX (Asterisk 22 in its chroot), two SIPp softphones standing in for
call-takers ``taker1`` and ``taker2``, and the app itself; it then logs both call-takers into the
queue through the app's own presence actions, as the console will. ``callcenter call 112`` is a
citizen dialling in.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import wave
from pathlib import Path

import structlog
from aiohttp import web

from callcenter.app import serve
from callcenter.config import Config, replace
from callcenter.pbx.chroot import default_cache_dir, ensure_chroot
from callcenter.pbx.harness import TestPbx
from callcenter.pbx.render import PbxSpec
from callcenter.testing import sipp
from callcenter.web.keys import AMI, PRESENCE

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_TAKERS = (("taker1", 5071), ("taker2", 5072))
log = structlog.get_logger("callcenter.demo")


def demo_spec(sip_port: int = 5060, ami_port: int = 5038, ami_secret: str = "", agi_port: int = 4573) -> PbxSpec:
    """The demo wiring: call-takers' softphones on 5071/5072, supervisor (overflow) on 5079."""
    return PbxSpec(
        instance="demo",
        sip_port=sip_port,
        ami_port=ami_port,
        ami_username="callcenter",
        ami_secret=ami_secret,
        agi_url=f"agi://127.0.0.1:{agi_port}",
        takers=DEMO_TAKERS,
        agencies=(("police", 5081), ("ambulance", 5082), ("fire", 5083)),
        supervisor_port=5079,
    )


def greeting_seconds() -> float:
    with wave.open(str(REPO_ROOT / "sounds" / "cc-greeting.wav")) as w:
        frames: int = w.getnframes()
        rate: int = w.getframerate()
    return frames / rate


async def run_demo(config: Config, *, takers: bool = True) -> int:
    chroot = await asyncio.to_thread(ensure_chroot, default_cache_dir())
    # A throwaway AMI secret unless one is configured: PBX and app are started together here.
    secret = config.ami.secret or secrets.token_urlsafe(16)
    config = replace(config, ami={"secret": secret})
    spec = demo_spec(config.pbx.sip_port, config.ami.port, secret, config.agi.port)
    pbx = TestPbx(spec, chroot, REPO_ROOT)
    await pbx.astart()
    phones: list[sipp.SippProcess] = []
    try:
        if takers:
            for _name, port in DEMO_TAKERS:
                # Answer after 2 s of ringing, talk 20 s, hang up: a call-taker's softphone on autopilot.
                phones.append(
                    await sipp.answerer(
                        port, answer_after=2, hold_seconds=20, hangup_by="local", max_calls=None, timeout=86400
                    )
                )

        async def started(app: web.Application) -> None:
            await app[AMI].wait_ready(30)
            for name, _port in DEMO_TAKERS if takers else ():
                await app[PRESENCE].log_in(f"PJSIP/{name}", name)
            web_url = f"http://{config.web.host}:{config.web.port}"
            print(
                f"\n  demo running: SIP 127.0.0.1:{spec.sip_port}, web {web_url}\n"
                "  place a call:  .venv/bin/callcenter call 112 --from 081234567890\n"
                f"  see it:        curl -s {web_url}/api/calls\n"
                "  Ctrl-C stops everything.\n",
                flush=True,
            )

        await serve(config, on_started=started)
    finally:
        for phone in phones:
            with contextlib.suppress(Exception):
                await phone.stop()
        await pbx.astop()
    return 0


async def place_call(config: Config, number: str, caller_id: str, hold: float) -> int:
    """A citizen calls ``number`` on the demo PBX and stays ``hold`` seconds after the greeting."""
    on_line = greeting_seconds() + hold
    proc = await sipp.caller(
        f"127.0.0.1:{config.pbx.sip_port}", number, caller_id=caller_id, hold_seconds=on_line, timeout=on_line + 300
    )
    print(f"calling {number} from {caller_id}; staying on the line {on_line:.0f} s …", flush=True)
    result = await proc.wait()
    print(f"call ended: {result.successful} completed, {result.failed} failed (SIPp exit {result.returncode})")
    print(f"the call's record: curl -s http://{config.web.host}:{config.web.port}/api/calls")
    return 0 if result.ok else 1
