"""P4 — dispatch latency: the call-taker's HTTP POST of a dispatch → the INVITE at the agency's phone.

Real Asterisk 22 (the test PBX chroot, needs root), the real app as a child process, a logged-in
call-taker over HTTP. The agency's "phone" is a raw UDP socket in this process: it timestamps each
INVITE and answers ``486 Busy Here`` at once, so Asterisk ACKs and retransmits nothing, the attempt
ends as ``busy`` and the dispatch fails fast (one line, one attempt). Both clocks are this process's
``perf_counter``. Dispatches run one after the other, each for its own incident.

    .venv/bin/python bench/p4_dispatch.py [--dispatches 100]

Targets: p50 ≤ 300 ms, p99 ≤ 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from callcenter.pbx.chroot import default_cache_dir, ensure_chroot
from callcenter.pbx.harness import TestPbx
from callcenter.store import Store
from callcenter.store.incidents import Incidents
from callcenter.testing.app import AppProcess
from callcenter.testing.bench import bench_spec
from callcenter.testing.sipp import free_port
from callcenter.testing.web import login_session, make_user

PASSWORD = "bench-password-123"
REPO = Path(__file__).resolve().parents[1]
AGENCIES = """
[agencies.damkar]
name = "Damkar Jembrana"
categories = ["fire"]
answer_timeout = 5
lines = ["PJSIP/damkar"]
"""
INCIDENT = {
    "reporter_name": "Bench",
    "callback_number": "+6281234567890",
    "address": "Jl. Udayana 12",
    "district": "Negara",
    "category": "fire",
    "priority": "high",
}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class BusyPhone(asyncio.DatagramProtocol):
    """Timestamps INVITEs and answers each with 486, so nothing is left retransmitting."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.invites: asyncio.Queue[float] = asyncio.Queue()
        self.seen: set[str] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.DatagramTransport):
            self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.perf_counter()
        text = data.decode(errors="replace")
        if not text.startswith("INVITE "):
            return  # ACK of our 486, OPTIONS qualify: nothing to time
        headers = [line for line in text.split("\r\n\r\n", 1)[0].split("\r\n")[1:] if line]
        keep = [h for h in headers if h.split(":", 1)[0].strip().lower() in ("via", "from", "call-id", "cseq")]
        to = next((h for h in headers if h.lower().startswith("to:")), "To: <sip:x@127.0.0.1>")
        call_id = next((h for h in headers if h.lower().startswith("call-id:")), "")
        if call_id not in self.seen:  # a retransmission is not a new dispatch
            self.seen.add(call_id)
            self.invites.put_nowait(now)
        reply = "\r\n".join(["SIP/2.0 486 Busy Here", *keep, f"{to};tag=bench", "Content-Length: 0", "", ""])
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply.encode(), addr)


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-p4-"))
    ports = {name: free_port("udp") for name in ("sip", "damkar")}
    ports.update(ami=free_port("tcp"), agi=free_port("tcp"))
    spec = bench_spec(
        sip_port=ports["sip"],
        ami_port=ports["ami"],
        agi_port=ports["agi"],
        agencies=(("damkar", ports["damkar"]),),
    )
    pbx = TestPbx(spec, ensure_chroot(default_cache_dir(), progress=print), REPO)
    loop = asyncio.get_running_loop()
    phone = BusyPhone()
    transport, _ = await loop.create_datagram_endpoint(lambda: phone, local_addr=("127.0.0.1", ports["damkar"]))
    pbx.start()
    url = f"sqlite+aiosqlite:///{tmp}/bench.db"
    store = Store.from_url(url)
    await store.upgrade()
    await make_user(store, "taker", "calltaker", password=PASSWORD)
    incidents = [
        (await Incidents(store).create(INCIDENT, call_id=None, user_id=None)).id for _ in range(args.dispatches)
    ]
    (tmp / "agencies.toml").write_text(AGENCIES)
    env = {
        "CALLCENTER_AGI_PORT": str(ports["agi"]),
        "CALLCENTER_AGI_SECRET": spec.agi_secret,
        "CALLCENTER_AMI_PORT": str(ports["ami"]),
        "CALLCENTER_AMI_SECRET": spec.ami_secret,
        "CALLCENTER_STORE_URL": url,
        "CALLCENTER_LOG_LEVEL": "WARNING",
        "CALLCENTER_DISPATCH_AGENCIES_FILE": str(tmp / "agencies.toml"),
        "CALLCENTER_DISPATCH_PROMPT_DIR": str(pbx.host_dir / "prompts"),
        "CALLCENTER_DISPATCH_PROMPT_DIR_ASTERISK": str(spec.instance_dir / "prompts"),
        "CALLCENTER_DISPATCH_ATTEMPTS_PER_LINE": "1",
    }
    app = AppProcess(env, tmp / "app.log", free_port("tcp"))
    latencies: list[float] = []
    lost = 0
    try:
        await app.start()
        async with await login_session(app.base_url, "taker", PASSWORD) as http:
            for incident_id in incidents:
                started = time.perf_counter()
                async with http.post(
                    f"{app.base_url}/api/incidents/{incident_id}/dispatch", json={"agencies": ["damkar"]}
                ) as resp:
                    if resp.status != 202:
                        raise RuntimeError(f"dispatch refused: {resp.status} {await resp.text()}")
                try:
                    arrived = await asyncio.wait_for(phone.invites.get(), timeout=5)
                    latencies.append(arrived - started)
                except TimeoutError:
                    lost += 1
    finally:
        await app.stop()
        await store.close()
        pbx.stop()
        transport.close()
        shutil.rmtree(pbx.host_dir, ignore_errors=True)

    ms = [v * 1000 for v in latencies]
    print(f"machine: nproc={os.cpu_count()}, {platform.python_implementation()} {platform.python_version()}")
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"{args.dispatches} dispatches, one at a time, {lost} without an INVITE within 5 s\n")
    print("| dispatches | p50 | p99 | max | mean | lost | target p50 / p99 |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    if ms:
        print(
            f"| {len(ms)} | {pct(ms, 0.5):.1f} ms | {pct(ms, 0.99):.1f} ms | {max(ms):.1f} ms "
            f"| {statistics.fmean(ms):.1f} ms | {lost} | ≤ 300 ms / ≤ 1000 ms |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dispatches", type=int, default=100)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
