#!/usr/bin/env python
"""The ``incoming`` route written the classic way: a process AGI script using pyst2.

Asterisk runs it as ``AGI(pyst2_incoming.py,${CC_ARRIVED},${CC_DIALED})``: fork/exec per call, the
``agi_*`` environment on stdin, commands on stdout, answers on stdin. It does the same work as
``callcenter.agi.incoming.IncomingRoute`` with the same helpers and tables, only synchronously:

1. read the environment (pyst2),
2. normalise the caller id (phonenumbers, via ``callcenter.forms.phone.normalize``),
3. count the caller's abuse flags in the prank window (a process has no memory between calls, so it
   reads them from the database; the FastAGI server keeps them indexed in memory),
4. create the call row and its ``arrived`` and ``routed`` timeline events in one transaction, as
   ``Calls.open_call`` does (the FastAGI route does this in the background; a process AGI has no
   background, so it writes before it answers),
5. set CC_CALL_ID, CC_PRIO, CC_LANG and finally CC_ROUTED=1.

The SQLite file comes from ``$CC_BENCH_DB`` (a process AGI inherits Asterisk's environment), with
the same pragmas as ``callcenter.store.engine.make_engine``. Used only by ``bench/p2_agi.py``, which
checks that every session routed and wrote its call (a crashing script would look fast).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from asterisk.agi import AGI
from sqlalchemy import create_engine, event, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from callcenter.agi.incoming import ROUTED_MARKER
from callcenter.config import NumbersConfig, QueueConfig
from callcenter.forms.phone import CallerNumber, normalize
from callcenter.store.arrivals import Routing, arrival_time, decide
from callcenter.store.engine import new_call_id, sqlite_pragmas, utcnow
from callcenter.store.flags import ABUSE_KINDS
from callcenter.store.models import Call, CallEvent, NumberFlag

T = TypeVar("T")
#: Same bound as ``Store.retry_for``'s purpose: ride out a locked SQLite file, not forever.
RETRY_FOR = 30.0


def _retry(sessions: sessionmaker[Session], op: Callable[[Session], T]) -> T:
    """One transaction per step, retried while SQLite says it is locked (what ``Store.transaction`` does)."""
    deadline = time.monotonic() + RETRY_FOR
    delay = 0.05
    while True:
        try:
            with sessions() as session, session.begin():
                return op(session)
        except OperationalError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def abuse_count(sessions: sessionmaker[Session], number: str, since: datetime) -> int:
    def op(session: Session) -> int:
        return int(
            session.scalar(
                select(func.count(NumberFlag.id)).where(
                    NumberFlag.number == number,
                    NumberFlag.created_at >= since,
                    NumberFlag.kind.in_(sorted(ABUSE_KINDS)),
                )
            )
            or 0
        )

    return _retry(sessions, op)


def record(
    sessions: sessionmaker[Session],
    env: dict[str, str],
    call_id: str,
    caller: CallerNumber,
    arrived: datetime,
    dialed: str,
    routing: Routing,
) -> str:
    uniqueid = env.get("agi_uniqueid", "")
    routed = {
        "priority": routing.priority,
        "language": routing.language,
        "abuse_count": routing.abuse_count,
        "reminder": routing.reminder,
    }
    events = [
        ("arrived", arrived, {"dialed": dialed, "withheld": caller.withheld}),
        ("routed", utcnow(), routed),
    ]

    def open_call(session: Session) -> str:
        call = session.scalar(select(Call).where(Call.uniqueid == uniqueid))
        if call is None:
            call = Call(
                id=call_id,
                uniqueid=uniqueid,
                status="arrived",
                channel=env.get("agi_channel") or None,
                caller_raw=caller.raw or None,
                caller_number=caller.e164,
                dialed=dialed or None,
                routed_by="agi",
                queue_priority=routing.priority,
                language=routing.language,
                arrived_at=arrived,
            )
            session.add(call)
            session.flush()
        for kind, at, data in events:
            session.add(CallEvent(call_id=call.id, kind=kind, at=at, source="agi", data=data))
        return call.id

    return _retry(sessions, open_call)


def main() -> None:
    agi = AGI()
    env: dict[str, str] = agi.env
    numbers, queue = NumbersConfig(), QueueConfig()
    now = utcnow()
    args = sys.argv[1:]
    caller = normalize(env.get("agi_callerid"), numbers.default_region)
    arrived = arrival_time(args[0] if args else None, now)
    dialed = "".join(ch for ch in (args[1] if len(args) > 1 else env.get("agi_extension", "")) if ch.isdigit())

    engine = create_engine(f"sqlite:///{os.environ['CC_BENCH_DB']}")
    event.listen(engine, "connect", sqlite_pragmas)
    sessions = sessionmaker(engine, expire_on_commit=False)
    since = now - timedelta(days=queue.prank_window_days)
    abuse = abuse_count(sessions, caller.key, since) if caller.key is not None else 0
    routing = decide(abuse, queue)
    call_id = record(sessions, env, new_call_id(), caller, arrived, dialed, routing)
    agi.set_variable("CC_CALL_ID", call_id)
    agi.set_variable("CC_PRIO", str(routing.priority))
    agi.set_variable("CC_LANG", routing.language)
    if routing.reminder:
        agi.stream_file("callcenter/cc-prank-reminder")
    agi.set_variable(ROUTED_MARKER, "1")
    engine.dispose()


if __name__ == "__main__":
    main()
