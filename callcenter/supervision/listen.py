"""Listen, whisper, barge: a supervisor joins a call-taker's live call from the wallboard.

The supervisor's own phone is called (an asynchronous AMI ``Originate`` into ``[callcenter-spy]``, the
project's one Originate helper); when they answer, ``ChanSpy`` joins the call-taker's channel in the
chosen mode — **listen** (hear both sides), **whisper** (speak to the call-taker only) or **barge**
(speak to both). ChanSpy works on any channel technology (PJSIP included), unlike SIP-header tricks.
Every use is written to the access log by the web layer before the call is placed; Asterisk's
``ChanSpyStart`` / ``ChanSpyStop`` events are logged here, so the log shows when listening began and
ended.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Mapping
from typing import Any

import structlog

from callcenter.queue.ami import AmiClient

log = structlog.get_logger("callcenter.supervision.listen")

CONTEXT = "callcenter-spy"
MODES = ("listen", "whisper", "barge")
#: Seconds the supervisor's phone rings before the attempt is given up.
RING_SECONDS = 20
_counter = itertools.count(1)
_RUN = secrets.token_hex(3)


def reference() -> str:
    """``spy-<run>-<n>``: the Originate's ActionID and ChannelId (unique across app restarts)."""
    return f"spy-{_RUN}{next(_counter)}"


async def start(ami: AmiClient, phone: str, target: str, mode: str) -> str:
    """Ring ``phone`` (the supervisor's interface) and, once answered, spy on ``target`` in ``mode``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    ref = reference()
    await ami.originate(
        ref,
        phone,
        CONTEXT,
        ring_seconds=RING_SECONDS,
        variables={"CC_SPY_TARGET": target, "CC_SPY_MODE": mode},
        caller_id=f'"112 {mode}" <112>',
    )
    log.info("spy.requested", reference=ref, target=target, mode=mode)
    return ref


def on_ami(event: Mapping[str, Any]) -> None:
    """``ChanSpyStart`` / ``ChanSpyStop``: when a supervisor's listening really began and ended."""
    name = str(event.get("Event", ""))
    if name in ("ChanSpyStart", "ChanSpyStop"):
        log.info(
            "spy.started" if name == "ChanSpyStart" else "spy.stopped",
            spyer=str(event.get("SpyerChannel", ""))[:80],
            spyee=str(event.get("SpyeeChannel", ""))[:80],
        )
