"""The AMI client and queue tracker against a scripted AMI server on a real socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from callcenter.config import AmiConfig
from callcenter.queue.ami import AmiClient, AmiNotConnected
from callcenter.queue.presence import Presence
from callcenter.queue.resync import resync_from_ami
from callcenter.queue.tracker import QueueTracker
from callcenter.store import Calls, Store, utcnow
from callcenter.testing.fake_ami import FakeAmi
from callcenter.testing.wait import until


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store.from_url(f"sqlite+aiosqlite:///{tmp_path}/ami.db", retry_for=2)
    await s.upgrade()
    yield s
    await s.close()


def make_client(fake_ami: FakeAmi, tracker: QueueTracker, **overrides: float | str) -> AmiClient:
    cfg = AmiConfig(
        port=fake_ami.port,
        username="callcenter",
        secret=str(overrides.pop("secret", "s3cret")),
        reconnect_min=0.05,
        reconnect_max=0.2,
        ping_interval=float(overrides.pop("ping_interval", 5.0)),
        ping_timeout=float(overrides.pop("ping_timeout", 1.0)),
        action_timeout=2.0,
    )

    async def on_ready(client: AmiClient) -> None:
        await resync_from_ami(tracker, client)

    return AmiClient(cfg, on_event=tracker.handle, on_ready=on_ready)


def join(uniqueid: str, position: int = 1) -> dict[str, str]:
    return {
        "Event": "QueueCallerJoin",
        "Channel": f"PJSIP/anonymous-{uniqueid}",
        "Uniqueid": uniqueid,
        "Linkedid": uniqueid,
        "CallerIDNum": "081234567890",
        "Queue": "calltakers",
        "Position": str(position),
        "Count": str(position),
    }


async def test_follows_a_call_from_join_to_complete(fake_ami: FakeAmi, store: Store) -> None:
    calls = Calls(store)
    tracker = QueueTracker(calls)
    client = make_client(fake_ami, tracker)
    await client.start()
    try:
        await client.wait_ready(5)
        await fake_ami.send(join("1700000000.1"))
        await fake_ami.send(
            {
                "Event": "AgentCalled",
                "Uniqueid": "1700000000.1",
                "Queue": "calltakers",
                "Interface": "PJSIP/taker1",
                "MemberName": "taker1",
            }
        )
        await fake_ami.send(
            {
                "Event": "AgentConnect",
                "Uniqueid": "1700000000.1",
                "Queue": "calltakers",
                "Interface": "PJSIP/taker1",
                "MemberName": "taker1",
                "HoldTime": "7",
                "RingTime": "2",
            }
        )
        await fake_ami.send(
            {
                "Event": "AgentComplete",
                "Uniqueid": "1700000000.1",
                "Queue": "calltakers",
                "Interface": "PJSIP/taker1",
                "MemberName": "taker1",
                "HoldTime": "7",
                "TalkTime": "42",
                "Reason": "caller",
            }
        )
        await until(lambda: len(fake_ami.actions) >= 3)
        call = None

        async def completed() -> bool:
            nonlocal call
            call = await calls.call_by_uniqueid("1700000000.1")
            return call is not None and call.status == "completed"

        await until(completed, what="call completed")
        assert call is not None
        assert call.routed_by == "fallback"  # never seen by our AGI route: created from AMI
        assert call.caller_number == "+6281234567890"
        assert call.answered_by == "taker1"
        assert call.wait_seconds == 7
        assert call.talk_seconds == 42
        assert call.hangup_by == "caller"
        kinds = [e.kind for e in await calls.timeline(call.id)]
        assert kinds == ["queued", "ringing", "answered", "completed"]
    finally:
        await client.stop()


async def test_login_asks_only_for_the_event_classes_the_app_reads(fake_ami: FakeAmi, store: Store) -> None:
    """Queue/member events (agent), Hangup and OriginateResponse (call), the overflow UserEvent (user),
    FullyBooted (system); not the dialplan's VarSet/Newexten flood, three quarters of a queued call's events."""
    client = make_client(fake_ami, QueueTracker(Calls(store)))
    await client.start()
    try:
        await client.wait_ready(5)
    finally:
        await client.stop()
    login = next(a for a in fake_ami.actions if a.get("Action") == "Login")
    assert set(login["Events"].split(",")) == {"agent", "call", "user", "system"}


async def test_refused_login_is_retried_with_backoff(fake_ami: FakeAmi, store: Store) -> None:
    client = make_client(fake_ami, QueueTracker(Calls(store)), secret="wrong")
    with capture_logs() as logs:
        await client.start()
        try:
            await until(lambda: sum(1 for a in fake_ami.actions if a.get("Action") == "Login") >= 2)
            assert not client.ready.is_set()
            with pytest.raises(AmiNotConnected):
                await client.action({"Action": "QueueStatus"})
            fake_ami.secret = "wrong"  # the operator fixes the secret on the Asterisk side
            await client.wait_ready(5)
        finally:
            await client.stop()
    assert any(entry["event"] == "ami.login_failed" for entry in logs)


async def test_garbage_on_the_link_is_skipped(fake_ami: FakeAmi, store: Store) -> None:
    tracker = QueueTracker(Calls(store))
    client = make_client(fake_ami, tracker)
    await client.start()
    try:
        await client.wait_ready(5)
        garbage = b"\x00\xff\xfenot ami at all\r\n\r\nEvent: QueueCallerJoin\r\nQueue: calltakers\r\n\r\n"
        await fake_ami.send_raw(garbage)
        await fake_ami.send_raw(b"Event: AgentConnect\r\nHoldTime: soon\r\n\r\n")  # no Uniqueid: malformed
        await fake_ami.send(join("1700000000.7"))
        await until(lambda: "1700000000.7" in tracker.live.waiting)
        assert fake_ami.logins == 1  # the connection survived
    finally:
        await client.stop()


async def test_reconnect_resyncs_state(fake_ami: FakeAmi, store: Store) -> None:
    calls = Calls(store)
    tracker = QueueTracker(calls)
    # A call our database thinks is still open, which Asterisk no longer has: it ended while we were away.
    await calls.open_call(uniqueid="1699999999.5", arrived_at=utcnow() - timedelta(minutes=5), routed_by="agi")
    # A call Asterisk has waiting that we never heard of (we were down when it arrived).
    fake_ami.queue_entries = [
        {
            "Queue": "calltakers",
            "Position": "1",
            "Channel": "PJSIP/anonymous-00000009",
            "Uniqueid": "1700000001.9",
            "CallerIDNum": "0361123456",
            "Wait": "12",
        }
    ]
    fake_ami.channels = [{"Channel": "PJSIP/anonymous-00000009", "Uniqueid": "1700000001.9"}]
    fake_ami.queue_members = [
        {
            "Queue": "calltakers",
            "Name": "taker1",
            "Location": "PJSIP/taker1",
            "StateInterface": "PJSIP/taker1",
            "Status": "1",
            "Paused": "1",
            "PausedReason": "break",
            "InCall": "0",
        }
    ]
    client = make_client(fake_ami, tracker)
    await client.start()
    try:
        await client.wait_ready(5)
        await until(lambda: "1700000001.9" in tracker.live.waiting)
        member = tracker.live.members[("calltakers", "PJSIP/taker1")]
        assert member.paused and member.reason == "break" and member.state == "not_in_use"

        async def closed() -> bool:
            gone = await calls.call_by_uniqueid("1699999999.5")
            assert gone is not None
            return gone.status == "ended" and gone.ended_at is not None

        await until(closed, what="call that ended while we were away is closed")
        waiting = await calls.call_by_uniqueid("1700000001.9")
        assert waiting is not None and waiting.status == "queued" and waiting.caller_number == "+62361123456"

        # Asterisk restarts: the caller is gone, a member logged out; the client must notice on its own.
        fake_ami.queue_entries, fake_ami.channels, fake_ami.queue_members = [], [], []
        fake_ami.drop_clients()
        await until(lambda: fake_ami.logins == 2)
        await until(lambda: not tracker.live.waiting and not tracker.live.members)
        # One resync per (re)connect; a loaded machine may need an extra reconnect, never a missing resync.
        assert client.connects >= 2
        await until(lambda: sum(1 for a in fake_ami.actions if a.get("Action") == "QueueStatus") == client.connects)
        await fake_ami.send(join("1700000002.1"))
        await until(lambda: "1700000002.1" in tracker.live.waiting)
    finally:
        await client.stop()


async def test_unanswered_ping_forces_a_reconnect(fake_ami: FakeAmi, store: Store) -> None:
    client = make_client(fake_ami, QueueTracker(Calls(store)), ping_interval=0.1, ping_timeout=0.2)
    await client.start()
    try:
        await client.wait_ready(5)
        fake_ami.answer_pings = False
        await until(lambda: fake_ami.logins >= 2)
    finally:
        await client.stop()


async def test_presence_actions_reach_asterisk(fake_ami: FakeAmi, store: Store) -> None:
    client = make_client(fake_ami, QueueTracker(Calls(store)))
    await client.start()
    try:
        await client.wait_ready(5)
        presence = Presence(client, "calltakers")
        await presence.log_in("PJSIP/taker1", "Ayu")
        await presence.pause("PJSIP/taker1", "break")
        await presence.unpause("PJSIP/taker1")
        await presence.log_out("PJSIP/taker1")
        with pytest.raises(ValueError, match="pause reason"):
            await presence.pause("PJSIP/taker1", "nap")
        sent = [a for a in fake_ami.actions if a["Action"].startswith("Queue") and a["Action"] != "QueueStatus"]
        assert [a["Action"] for a in sent] == ["QueueAdd", "QueuePause", "QueuePause", "QueueRemove"]
        assert sent[0]["Interface"] == "PJSIP/taker1" and sent[0]["MemberName"] == "Ayu"
        assert sent[1]["Paused"] == "true" and sent[1]["Reason"] == "break"
        assert sent[2]["Paused"] == "false"
    finally:
        await client.stop()


async def test_agent_complete_without_caller_snapshot(fake_ami: FakeAmi, store: Store) -> None:
    """Under load Asterisk sends AgentComplete without the (already gone) caller's Uniqueid."""
    calls = Calls(store)
    tracker = QueueTracker(calls)
    client = make_client(fake_ami, tracker)
    await client.start()
    try:
        await client.wait_ready(5)
        await fake_ami.send(join("1700000003.1"))
        await fake_ami.send(
            {
                "Event": "AgentConnect",
                "Uniqueid": "1700000003.1",
                "Queue": "calltakers",
                "Interface": "PJSIP/taker9",
                "MemberName": "taker9",
                "HoldTime": "1",
            }
        )
        await fake_ami.send(
            {
                "Event": "AgentComplete",
                "Queue": "calltakers",
                "Interface": "PJSIP/taker9",
                "MemberName": "taker9",
                "HoldTime": "1",
                "TalkTime": "12",
                "Reason": "caller",
            }
        )

        async def completed() -> bool:
            call = await calls.call_by_uniqueid("1700000003.1")
            return call is not None and call.status == "completed" and call.talk_seconds == 12

        await until(completed, what="completed from the interface")
        assert "1700000003.1" not in tracker.live.connected
    finally:
        await client.stop()


async def test_agent_complete_without_caller_snapshot_on_a_shared_interface(fake_ami: FakeAmi, store: Store) -> None:
    """With ``ringinuse=yes`` one interface holds several calls: the taker leg's Linkedid (or its
    channel name) says which one ended, where the interface alone cannot."""
    tracker = QueueTracker(Calls(store))
    client = make_client(fake_ami, tracker)
    await client.start()
    try:
        await client.wait_ready(5)
        for n, uniqueid in enumerate(("1700000004.1", "1700000004.2")):
            await fake_ami.send(join(uniqueid))
            await fake_ami.send(
                {
                    "Event": "AgentConnect",
                    "Uniqueid": uniqueid,
                    "Channel": f"PJSIP/citizen-{n}",
                    "DestChannel": f"PJSIP/taker9-{n}",
                    "Queue": "calltakers",
                    "Interface": "PJSIP/taker9",
                    "MemberName": "taker9",
                    "HoldTime": "1",
                }
            )
        ends = (
            {"DestLinkedid": "1700000004.2", "DestChannel": "PJSIP/taker9-1", "TalkTime": "7"},
            {"DestChannel": "PJSIP/taker9-0", "TalkTime": "9"},  # no Linkedid: the channel name
        )
        for end in ends:
            await fake_ami.send(
                {
                    "Event": "AgentComplete",
                    "Queue": "calltakers",
                    "Interface": "PJSIP/taker9",
                    "MemberName": "taker9",
                    "HoldTime": "1",
                    "Reason": "caller",
                    **end,
                }
            )

        async def completed() -> bool:
            first = await tracker.calls.call_by_uniqueid("1700000004.1")
            second = await tracker.calls.call_by_uniqueid("1700000004.2")
            return (
                first is not None
                and second is not None
                and (first.status, first.talk_seconds, second.status, second.talk_seconds)
                == ("completed", 9, "completed", 7)
            )

        await until(completed, what="both calls completed from the taker legs")
        assert not tracker.live.connected
    finally:
        await client.stop()
