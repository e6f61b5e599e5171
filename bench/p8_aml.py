"""P8 — caller location: AML POST → the position on the call-taker's pop (WebSocket message).

The real app runs as a child process (store, tracker, live hub, web), 20 logged-in consoles hold
real WebSockets, and each has a caller on the line (a call record plus the AgentConnect a scripted
AMI server plays as Asterisk). The bench POSTs AML HTTPS messages (the Android ELS form, with the
shared secret) for those callers' numbers; the clock starts before the POST and stops when that
call-taker's socket delivers the ``location`` message. Every POST parses, normalises the number,
matches the live call in the database, stores the fix, and pushes it. One clock: this process's
``perf_counter``.

    .venv/bin/python bench/p8_aml.py [--consoles 20] [--posts 300] [--rate 10]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp

from callcenter.store import Calls, Store, utcnow
from callcenter.testing.consoles import Console, app_on_fake_ami, latency_table
from callcenter.testing.fake_ami import agent_connect
from callcenter.testing.web import make_user

PASSWORD = "bench-password-123"


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-p8-"))
    url = f"sqlite+aiosqlite:///{tmp}/bench.db"
    store = Store.from_url(url)
    await store.upgrade()
    calls = Calls(store)
    secret = secrets.token_urlsafe(24)
    consoles_spec = []
    for i in range(1, args.consoles + 1):
        name, interface = f"taker{i:02d}", f"PJSIP/taker{i:02d}"
        number = f"+62812{random.randrange(10**7, 10**8)}"
        await make_user(store, name, "calltaker", password=PASSWORD, interface=interface)
        consoles_spec.append((name, interface, number))

    fake, app = await app_on_fake_ami(tmp, url, {"CALLCENTER_LOCATION_AML_SECRET": secret})
    # After the tracker's first resync (which ends every open call Asterisk does not report): the calls
    # on the line now, and earlier calls of the same numbers that matching must pass over.
    await app.wait_event("tracker.resynced")
    for i, (_name, _interface, number) in enumerate(consoles_spec, start=1):
        for back in range(3):
            await calls.open_call(
                uniqueid=f"old.{i}.{back}",
                arrived_at=utcnow() - timedelta(days=back + 1),
                routed_by="agi",
                caller_number=number,
            )
        await calls.open_call(uniqueid=f"live.{i}", arrived_at=utcnow(), routed_by="agi", caller_number=number)
    waiting: dict[str, asyncio.Future[float]] = {}
    popped: dict[str, asyncio.Event] = {name: asyncio.Event() for name, _i, _n in consoles_spec}

    def listener(name: str) -> Callable[[dict[str, Any], float], None]:
        def on_message(data: dict[str, Any], at: float) -> None:
            if data.get("type") == "pop":
                popped[name].set()
            elif data.get("type") == "location":
                future = waiting.pop(name, None)
                if future is not None and not future.done():
                    future.set_result(at)

        return on_message

    consoles = [
        (Console(app.base_url, name, PASSWORD, listener(name)), interface, number)
        for name, interface, number in consoles_spec
    ]
    latencies: list[float] = []
    lost = 0
    try:
        for c, _interface, _number in consoles:
            await c.open()
        for i, (_c, interface, number) in enumerate(consoles, start=1):
            await fake.send(agent_connect(f"live.{i}", interface, caller=number))
        async with asyncio.timeout(30):
            await asyncio.gather(*(event.wait() for event in popped.values()))
        async with aiohttp.ClientSession(headers={"X-AML-Key": secret}) as http:
            for i in range(args.posts):
                console, _interface, number = consoles[i % len(consoles)]
                form = {
                    "v": "3",
                    "emergency_number": "112",
                    "source": "sms",
                    "time": str(int(time.time() * 1000)),
                    "location_latitude": f"{-8.36 + random.uniform(-0.05, 0.05):.7f}",
                    "location_longitude": f"{114.62 + random.uniform(-0.05, 0.05):.7f}",
                    "location_accuracy": str(random.randint(5, 60)),
                    "location_time": str(int(time.time() * 1000)),
                    "location_source": random.choice(["gps", "wifi", "cell"]),
                    "location_certainty": "68",
                    "device_number": "0" + number[3:],  # as handsets send it: national format
                }
                future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
                waiting[console.username] = future
                sent = time.perf_counter()
                async with http.post(f"{app.base_url}/aml", data=form) as resp:
                    assert resp.status == 200, await resp.text()
                try:
                    async with asyncio.timeout(5):
                        latencies.append(1000 * (await future - sent))
                except TimeoutError:
                    lost += 1
                await asyncio.sleep(1 / args.rate)
    finally:
        for c, _interface, _number in consoles:
            await c.close()
        await app.stop()
        await fake.stop()
        await store.close()

    header = f"{args.consoles} consoles with a caller on the line, {args.posts} AML POSTs at {args.rate}/s"
    latency_table(header, args.consoles, "AML posts", latencies, lost)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--consoles", type=int, default=20)
    parser.add_argument("--posts", type=int, default=300)
    parser.add_argument("--rate", type=float, default=10.0, help="AML POSTs per second")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
