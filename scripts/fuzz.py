"""Long fuzz run of what outsiders feed us: ``.venv/bin/python scripts/fuzz.py [--inputs 1000000]``.

Four targets, each fed mutated copies of realistic seeds (bit flips, inserted/deleted/duplicated ranges,
splices of protocol tokens: line ends, ``520-``, ``HANGUP``, NUL, invalid UTF-8, long runs):

* ``agi-header``  — FastAGI header lines into ``HeaderParser`` (what a connecting peer sends first);
* ``agi-response`` — response lines into ``ResponseAssembler`` (what Asterisk answers to a command);
* ``ami``         — byte chunks into the AMI protocol (framing), every parsed event into ``QueueTracker``;
* ``intake``      — JSON-like forms into ``validate_intake``.

Pass criteria, checked while running: only the documented exception escapes (``AgiProtocolError``,
``IntakeError``; the AMI side swallows and logs), no input takes longer than ``--hang`` seconds (a
real hang ends the run with every thread's stack, see ``run_target``), and memory stays bounded: the
resident set is sampled every 20 000 inputs and may not grow more than ``--max-growth-mb`` after the
warm-up. Prints one line
per target and a JSON summary; exit status 1 on any finding. The same properties run briefly in CI
(``tests/unit/test_properties.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import logging
import random
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog
from panoramisk.message import Message

from callcenter.agi.protocol import AgiProtocolError, HeaderParser, ResponseAssembler
from callcenter.forms.intake import FIELDS, IntakeError, load_districts, validate_intake
from callcenter.queue.ami import _Protocol
from callcenter.queue.tracker import QueueTracker
from callcenter.testing.fake_asterisk import build_header
from callcenter.testing.memory_store import AMI_EVENTS, MemoryStore

TOKENS = [
    b"\n",
    b"\r\n",
    b"\r\n\r\n",
    b": ",
    b"agi_",
    b"agi_arg_",
    b"520-",
    b"520 ",
    b"200 result=",
    b"511 ",
    b"HANGUP",
    b"(",
    b")",
    b"\x00",
    b"\xff\xfe",
    b"\xe2\x80\xa8",
    b"Event: ",
    b"Uniqueid: ",
    b"Response: Follows",
    b"9" * 40,
    b"A" * 5000,
]
SAMPLE_EVERY = 20_000
#: Seconds after which 1000 inputs are a real hang: stacks printed, run ended (exit status 1).
WATCHDOG = 120.0


@dataclass
class Result:
    target: str
    inputs: int = 0
    rejected: int = 0
    seconds: float = 0.0
    slowest_ms: float = 0.0
    crashes: list[str] = field(default_factory=list)
    hangs: int = 0


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(6)
        pos = rng.randint(0, len(out))
        if op == 0 and out:
            out[min(pos, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 2:
            del out[pos : pos + rng.randint(1, 64)]
        elif op == 3 and out:
            start = rng.randrange(len(out))
            out[pos:pos] = out[start : start + rng.randint(1, 256)]
        else:
            out[pos:pos] = rng.choice(TOKENS)
    return bytes(out)


def lines(data: bytes) -> Iterator[bytes]:
    start = 0
    while True:
        end = data.find(b"\n", start)
        if end < 0:
            if start < len(data):
                yield data[start:] + b"\n"
            return
        yield data[start : end + 1]
        start = end + 1


# -- targets: one input each, raising only what is documented ---------------------------------------------

AGI_HEADER_SEED = build_header("s3cret-0123456789abcdef/incoming", args=["1764000000", "112"])
AGI_RESPONSE_SEEDS = [
    b"200 result=1 (+6281234567890)\n",
    b"200 result=0 endpos=12345\n",
    b"510 Invalid or unknown command\n",
    b"511 Command Not Permitted on a dead channel or intercept routine\n",
    b"HANGUP\n200 result=1\n",
    b"520-Invalid command syntax.  Proper usage follows:\n Usage: GET VARIABLE <name>\n520 End of proper usage.\n",
]


def agi_header(rng: random.Random) -> bool:
    parser = HeaderParser()
    try:
        for line in lines(mutate(rng, AGI_HEADER_SEED)):
            if parser.feed(line) is not None:
                return True
    except AgiProtocolError:
        return False
    return True


def agi_response(rng: random.Random) -> bool:
    assembler = ResponseAssembler()
    data = b"".join(rng.choice(AGI_RESPONSE_SEEDS) for _ in range(rng.randint(1, 4)))
    if rng.random() < 0.01:  # now and then an endless usage block, as a hostile peer would send
        data = b"520-x\n" + b"520-" + b"u" * 1000 + b"\n" * 400
    try:
        for line in lines(mutate(rng, data)):
            assembler.feed(line)
    except AgiProtocolError:
        return False
    return True


def ami_seed(rng: random.Random) -> bytes:
    uid = f"17640000{rng.randrange(40)}.{rng.randrange(40)}"
    fields = {
        "Event": rng.choice(AMI_EVENTS),
        "Uniqueid": uid,
        "Linkedid": uid,
        "Channel": f"PJSIP/anonymous-{rng.randrange(1 << 16):08x}",
        "CallerIDNum": "081234567890",
        "Queue": "calltakers",
        "Position": str(rng.randint(0, 5)),
        "Interface": f"PJSIP/taker{rng.randint(1, 3)}",
        "MemberName": "taker",
        "HoldTime": str(rng.randint(0, 90)),
        "Paused": rng.choice(["0", "1"]),
        "Cause": "16",
        "UserEvent": "CallcenterOverflow",
    }
    return "".join(f"{k}: {v}\r\n" for k, v in fields.items()).encode() + b"\r\n"


class AmiTarget:
    """One protocol for the whole run, one tracker per "AMI session" of ``SESSION`` inputs: state carried
    across inputs is part of the test. (A tracker's live picture holds every caller that joined and
    never left — mutated ids make those endless — until the resync after a reconnect prunes it, as
    here the next session's fresh tracker does.)"""

    SESSION = 5000

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.tracker = QueueTracker(MemoryStore())  # type: ignore[arg-type]
        self.proto = _Protocol()
        self.proto.connection_made(None)
        self.proto.factory = self
        self.inbox: list[Message] = []
        self.handled = 0

    def reconnect(self) -> None:
        self.loop.run_until_complete(self.tracker.close(timeout=5))
        self.tracker = QueueTracker(MemoryStore())  # type: ignore[arg-type]

    def dispatch(self, message: Message) -> None:
        self.inbox.append(message)

    def __call__(self, rng: random.Random) -> bool:
        data = mutate(rng, b"".join(ami_seed(rng) for _ in range(rng.randint(1, 3))))
        cut = rng.randint(0, len(data))
        self.proto.data_received(data[:cut])
        self.proto.data_received(data[cut:])
        inbox, self.inbox = self.inbox, []
        for message in inbox:
            self.loop.run_until_complete(self.tracker.handle(message))
        if rng.random() < 0.001:
            self.loop.run_until_complete(self.tracker.flush(timeout=5))
        self.handled += 1
        if self.handled % self.SESSION == 0:
            self.reconnect()
        return bool(inbox)


DISTRICTS = load_districts(None)
INTAKE_SEED: dict[str, Any] = {
    "reporter_name": "Ni Made Sari",
    "callback_number": "0812-3456-7890",
    "address": "Jl. Ngurah Rai No. 10",
    "district": "Negara",
    "subdistrict": "Lelateng",
    "latitude": -8.36,
    "longitude": 114.62,
    "category": "fire",
    "victims_count": 2,
    "priority": "high",
    "flags": ["needs_water"],
}


def json_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 2 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 10_001, 2**63, -(2**70)])
    if kind == 3:
        return rng.choice([float("nan"), float("inf"), -91.0, 1e308, -8.3])
    if kind in (4, 5):
        return mutate(rng, rng.choice([b"Negara", b"0812345678", b"fire", b" ", b"x" * 200])).decode("utf-8", "replace")
    if kind == 6:
        return "x" * rng.choice([129, 501, 5000, 100_000])
    if kind == 7:
        return [json_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return {str(rng.randrange(10)): json_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def intake(rng: random.Random) -> bool:
    form: dict[str, Any] = dict(INTAKE_SEED)
    for _ in range(rng.randint(1, 5)):
        name = rng.choice([*FIELDS, "unknown"])
        if rng.random() < 0.2:
            form.pop(name, None)
        else:
            form[name] = json_value(rng)
    try:
        validate_intake(form, districts=DISTRICTS, region="ID", partial=rng.random() < 0.3)
    except IntakeError:
        return False
    return True


# -- the run ----------------------------------------------------------------------------------------------


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_target(name: str, fn: Callable[[random.Random], bool], n: int, seed: int, hang: float) -> Result:
    """``n`` inputs; an input slower than ``hang`` counts as a hang. A real one (an endless loop) never
    returns: the watchdog (``faulthandler``, re-armed every 1000 inputs for ``WATCHDOG`` seconds) then
    prints every thread's stack and ends the run with an error. Nothing is interrupted from a signal
    handler: an exception thrown into the event loop's machinery would break the loop, not the input."""
    rng = random.Random(f"{seed}-{name}")
    result = Result(name)
    started = time.perf_counter()
    for i in range(n):
        if i % 1000 == 0:
            faulthandler.dump_traceback_later(WATCHDOG, exit=True)
        t0 = time.perf_counter()
        try:
            if not fn(rng):
                result.rejected += 1
        except Exception as exc:
            if len(result.crashes) < 10:
                result.crashes.append(f"{name} input {i} of seed {seed}: {exc!r}")
        took = time.perf_counter() - t0
        if took > hang:
            result.hangs += 1
        result.slowest_ms = max(result.slowest_ms, took * 1000)
        result.inputs += 1
    faulthandler.cancel_dump_traceback_later()
    result.seconds = round(time.perf_counter() - started, 2)
    result.slowest_ms = round(result.slowest_ms, 2)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=1_000_000, help="total inputs over the four targets")
    parser.add_argument("--seed", type=int, default=112)
    parser.add_argument("--hang", type=float, default=1.0, help="seconds one input may take")
    parser.add_argument("--max-growth-mb", type=float, default=64.0, help="resident set growth allowed after warm-up")
    args = parser.parse_args(argv)

    # The AMI side logs what it skips; a million junk inputs would only flood the terminal.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    logging.disable(logging.CRITICAL)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    shares = {"agi-header": 0.3, "agi-response": 0.3, "ami": 0.2, "intake": 0.2}
    targets: dict[str, Callable[[random.Random], bool]] = {
        "agi-header": agi_header,
        "agi-response": agi_response,
        "ami": AmiTarget(loop),
        "intake": intake,
    }
    results: list[Result] = []
    samples: list[float] = []
    for name, fn in targets.items():
        n = int(args.inputs * shares[name])
        # Warm-up (imports, caches, the tracker's first state) before memory is measured.
        run_target(name, fn, min(2000, n), args.seed + 1, args.hang)
        baseline = rss_mb()
        done = 0
        total = Result(name)
        while done < n:
            step = min(SAMPLE_EVERY, n - done)
            part = run_target(name, fn, step, args.seed + done, args.hang)
            for attr in ("inputs", "rejected", "hangs"):
                setattr(total, attr, getattr(total, attr) + getattr(part, attr))
            total.seconds = round(total.seconds + part.seconds, 2)
            total.slowest_ms = max(total.slowest_ms, part.slowest_ms)
            total.crashes.extend(part.crashes[: 10 - len(total.crashes)])
            done += step
            samples.append(rss_mb() - baseline)
        growth = max(samples[-(n // SAMPLE_EVERY + 1) :], default=0.0)
        results.append(total)
        print(
            f"{name:13s} {total.inputs:>9,d} inputs in {total.seconds:7.1f} s "
            f"({total.inputs / max(total.seconds, 1e-9):>9,.0f}/s), rejected {total.rejected:>9,d}, "
            f"slowest {total.slowest_ms:7.2f} ms, crashes {len(total.crashes)}, hangs {total.hangs}, "
            f"rss growth {growth:5.1f} MB",
            flush=True,
        )
    loop.run_until_complete(targets["ami"].tracker.close(timeout=5))  # type: ignore[attr-defined]
    loop.close()
    growth = max(samples, default=0.0)
    failed = any(r.crashes or r.hangs for r in results) or growth > args.max_growth_mb
    summary = {
        "inputs": sum(r.inputs for r in results),
        "seconds": round(sum(r.seconds for r in results), 1),
        "max_rss_mb": round(rss_mb(), 1),
        "max_rss_growth_mb": round(growth, 1),
        "ok": not failed,
        "targets": [asdict(r) for r in results],
    }
    print(json.dumps(summary, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
