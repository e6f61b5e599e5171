"""The AMI router of 112 callers against a real store: what it writes on the channel, the call record,
and the correction of a caller the dialplan queued with its defaults."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from panoramisk.message import Message
from structlog.testing import capture_logs

from callcenter.config import NumbersConfig, QueueConfig
from callcenter.queue.ami import AmiError
from callcenter.queue.routing import ROUTE_VARIABLE, CallRouter
from callcenter.store import Calls, Store, utcnow
from callcenter.store.arrivals import Arrivals
from callcenter.store.pending import PendingWrites
from callcenter.tasks import Background

CHANNEL = "PJSIP/anonymous-00000001"
UNIQUEID = "1764990000.1"


class RecordingAmi:
    """Records actions; answers each with success, or raises what ``fail`` names."""

    def __init__(self) -> None:
        self.actions: list[dict[str, str]] = []
        self.fail: set[str] = set()

    async def action(self, action: dict[str, str], *, as_list: bool = False, timeout: float | None = None) -> Any:
        self.actions.append(action)
        if action["Action"] in self.fail:
            raise AmiError(f"{action['Action']}: Channel not found")
        return Message({"Response": "Success"})


def event(**fields: str) -> Message:
    return Message({"Uniqueid": UNIQUEID, "Channel": CHANNEL, "Linkedid": UNIQUEID, **fields})


def arrival(caller: str = "081234567890") -> Message:
    return event(
        Event="UserEvent", UserEvent="CallcenterArrival", Arrived="1764990000", Dialed="112", CallerIDNum=caller
    )


async def flag_prankster(store: Store) -> None:
    """Two abuse flags yesterday: past the threshold of the router below."""
    calls = Calls(store)
    for kind in ("prank", "hoax"):
        await calls.flag_number("+6281234567890", kind, note="t", at=utcnow() - timedelta(days=1))


@pytest.fixture
def parts(store: Store) -> tuple[CallRouter, RecordingAmi, Background]:
    ami = RecordingAmi()
    background = Background()
    queue = QueueConfig(default_priority=10, prank_priority=1, prank_threshold=2)
    return CallRouter(Arrivals(Calls(store), background, PendingWrites(), NumbersConfig(), queue), ami), ami, background


async def test_arrival_writes_the_route_and_records_the_call(
    parts: tuple[CallRouter, RecordingAmi, Background], store: Store
) -> None:
    calls = Calls(store)
    router, ami, background = parts
    await router.handle(arrival())
    await background.settle()
    assert ami.actions == [{"Action": "Setvar", "Channel": CHANNEL, "Variable": ROUTE_VARIABLE, "Value": "10/id/0/"}]
    [call] = await calls.recent_calls()
    assert call.uniqueid == UNIQUEID and call.routed_by == "app" and call.caller_number == "+6281234567890"
    assert call.dialed == "112" and call.queue_priority == 10 and call.linkedid == UNIQUEID
    assert [e.kind for e in await calls.timeline(call.id)] == ["arrived", "routed"]
    assert router.stats.arrivals == 1 and router.stats.applied == 1


async def test_repeat_prankster_gets_low_priority_and_the_reminder(
    parts: tuple[CallRouter, RecordingAmi, Background], store: Store
) -> None:
    router, ami, background = parts
    await flag_prankster(store)
    await router.handle(arrival())
    await background.settle()
    assert ami.actions[0]["Value"] == "1/id/1/"


async def test_route_in_time_needs_no_correction(parts: tuple[CallRouter, RecordingAmi, Background]) -> None:
    router, ami, background = parts
    await router.handle(arrival())
    await router.handle(event(Event="UserEvent", UserEvent="CallcenterQueue", Priority="10", Fallback="0"))
    await router.handle(event(Event="QueueCallerJoin", Queue="calltakers", Position="1"))
    await background.settle()
    assert [a["Action"] for a in ami.actions] == ["Setvar"]
    assert router.stats.queued_routed == 1 and router.stats.late == 0


async def test_late_route_is_corrected_in_the_queue(
    parts: tuple[CallRouter, RecordingAmi, Background], store: Store
) -> None:
    """The loop was blocked through the greeting: the dialplan queued with its default priority 5."""
    router, ami, background = parts
    await flag_prankster(store)
    await router.handle(arrival())
    await router.handle(event(Event="UserEvent", UserEvent="CallcenterQueue", Priority="5", Fallback="1"))
    await router.handle(event(Event="QueueCallerJoin", Queue="calltakers", Position="1"))
    await background.settle()
    assert ami.actions[-1] == {
        "Action": "QueueChangePriorityCaller",
        "Queue": "calltakers",
        "Caller": CHANNEL,
        "Priority": "1",
    }
    assert router.stats.late == 1 and router.stats.reprioritized == 1


async def test_fallback_without_a_decision_changes_nothing(parts: tuple[CallRouter, RecordingAmi, Background]) -> None:
    """The app never saw the arrival (it was down): the caller keeps the dialplan's defaults."""
    router, ami, background = parts
    await router.handle(event(Event="UserEvent", UserEvent="CallcenterQueue", Priority="5", Fallback="1"))
    await router.handle(event(Event="QueueCallerJoin", Queue="calltakers", Position="1"))
    await background.settle()
    assert ami.actions == [] and router.stats.late == 0


async def test_refused_actions_are_counted_not_raised(parts: tuple[CallRouter, RecordingAmi, Background]) -> None:
    router, ami, background = parts
    ami.fail = {"Setvar", "QueueChangePriorityCaller"}
    await router.handle(arrival())  # the caller hung up during the greeting: Setvar finds no channel
    await router.handle(event(Event="UserEvent", UserEvent="CallcenterQueue", Priority="5", Fallback="1"))
    await router.handle(event(Event="QueueCallerJoin", Queue="calltakers", Position="1"))
    await background.settle()
    assert router.stats.apply_failed == 1 and router.stats.reprioritized == 0


async def test_malformed_arrival_is_skipped(parts: tuple[CallRouter, RecordingAmi, Background]) -> None:
    router, ami, background = parts
    with capture_logs() as logs:
        await router.handle(
            Message({"Event": "UserEvent", "UserEvent": "CallcenterArrival", "CallerIDNum": "081234567890"})
        )
    await background.settle()
    assert ami.actions == [] and router.stats.arrivals == 0
    warned = [e for e in logs if e["event"] == "routing.malformed_arrival"]
    assert warned and "081234567890" not in repr(warned) and "message" not in warned[0]


async def test_hangup_forgets_an_unqueued_call(parts: tuple[CallRouter, RecordingAmi, Background]) -> None:
    router, ami, background = parts
    await router.handle(arrival())
    await router.handle(event(Event="Hangup", Cause="16"))
    await router.handle(event(Event="UserEvent", UserEvent="CallcenterQueue", Priority="5", Fallback="1"))
    await router.handle(event(Event="QueueCallerJoin", Queue="calltakers", Position="1"))
    await background.settle()
    assert [a["Action"] for a in ami.actions] == ["Setvar"]


async def test_transition_agi_route_decides_and_records_the_same(store: Store) -> None:
    """A dialplan from before the AMI routing still calls AGI(…/incoming): same decision, same record."""
    from callcenter.agi.incoming import ROUTE, IncomingRoute
    from callcenter.agi.server import AgiServer
    from callcenter.config import AgiConfig
    from callcenter.testing.fake_asterisk import FakeAsterisk

    background = Background()
    arrivals = Arrivals(Calls(store), background, PendingWrites(), NumbersConfig(), QueueConfig(prank_reminder=False))
    server = AgiServer(AgiConfig(port=0))
    server.add_route(ROUTE, IncomingRoute(arrivals))
    await server.start()
    try:
        env = {"agi_uniqueid": UNIQUEID, "agi_channel": CHANNEL, "agi_callerid": "081234567890"}
        call = await FakeAsterisk("127.0.0.1", server.port, timeout=5.0).call(
            ROUTE, args=["1764990000", "112"], env=env
        )
    finally:
        await server.stop()
    await background.settle()
    assert call.variables["CC_PRIO"] == "10" and call.variables["CC_LANG"] == "id"
    assert call.commands[-1] == 'SET VARIABLE "CC_ROUTED" "1"'
    [row] = await arrivals.calls.recent_calls()
    assert row.routed_by == "agi" and row.caller_number == "+6281234567890" and row.dialed == "112"
    assert [e.kind for e in await arrivals.calls.timeline(row.id)] == ["arrived", "routed"]
