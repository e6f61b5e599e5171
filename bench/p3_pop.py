"""P3 — screen-pop latency: AMI AgentConnect → the WebSocket message at the call-taker's console.

The real app runs as a child process (FastAGI, AMI client, tracker, store, web), logged-in consoles
hold real WebSockets, and a scripted AMI server in this process plays Asterisk: it writes an
AgentConnect for a call to one call-taker's interface and the clock runs until that call-taker's
socket delivers the ``pop``. Both clocks are this process's ``perf_counter``.

    .venv/bin/python bench/p3_pop.py [--consoles 20] [--pops 300] [--rate 10]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from callcenter.store import Calls, Store, utcnow
from callcenter.testing.consoles import Console, app_on_fake_ami, latency_table
from callcenter.testing.web import make_user

PASSWORD = "bench-password-123"


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-p3-"))
    url = f"sqlite+aiosqlite:///{tmp}/bench.db"
    store = Store.from_url(url)
    await store.upgrade()
    calls = Calls(store)
    takers = [(f"taker{i:02d}", f"PJSIP/taker{i:02d}") for i in range(1, args.consoles + 1)]
    for name, interface in takers:
        await make_user(store, name, "calltaker", password=PASSWORD, interface=interface)
    # Calls with some history, as on a real floor: every pop reads the caller's record.
    numbers = [f"+62812{random.randrange(10**7, 10**8)}" for _ in range(50)]
    for i in range(args.pops):
        await calls.open_call(
            uniqueid=f"bench.{i}",
            arrived_at=utcnow(),
            routed_by="agi",
            caller_number=numbers[i % len(numbers)],
            caller_raw=numbers[i % len(numbers)],
        )
    for n in numbers[:10]:
        await calls.flag_number(n, "prank", note="bench")

    fake, app = await app_on_fake_ami(tmp, url)
    waiting: dict[str, asyncio.Future[float]] = {}

    def on_message(data: dict[str, Any], at: float) -> None:
        if data.get("type") == "pop":
            future = waiting.pop(str(data["call"]["uniqueid"]), None)
            if future is not None and not future.done():
                future.set_result(at)

    consoles = [(Console(app.base_url, name, PASSWORD, on_message), interface) for name, interface in takers]
    latencies: list[float] = []
    lost = 0
    try:
        for c, _interface in consoles:
            await c.open()
        for i in range(args.pops):
            console, interface = consoles[i % len(consoles)]
            uniqueid = f"bench.{i}"
            future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            waiting[uniqueid] = future
            event = {
                "Event": "AgentConnect",
                "Queue": "calltakers",
                "Uniqueid": uniqueid,
                "CallerIDNum": numbers[i % len(numbers)],
                "Interface": interface,
                "MemberName": console.username,
                "HoldTime": "4",
                "RingTime": "1",
            }
            sent = time.perf_counter()
            await fake.send(event)
            try:
                async with asyncio.timeout(5):
                    latencies.append(1000 * (await future - sent))
            except TimeoutError:
                lost += 1
            await fake.send(
                {
                    "Event": "AgentComplete",
                    "Queue": "calltakers",
                    "Uniqueid": uniqueid,
                    "Interface": interface,
                    "MemberName": console.username,
                    "TalkTime": "1",
                    "HoldTime": "4",
                    "Reason": "agent",
                }
            )
            await asyncio.sleep(1 / args.rate)
    finally:
        for c, _interface in consoles:
            await c.close()
        await app.stop()
        await fake.stop()
        await store.close()

    latency_table(
        f"{args.consoles} consoles connected, {args.pops} pops at {args.rate}/s", args.consoles, "pops", latencies, lost
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--consoles", type=int, default=20)
    parser.add_argument("--pops", type=int, default=300)
    parser.add_argument("--rate", type=float, default=10.0, help="AgentConnect events per second")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
