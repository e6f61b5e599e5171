"""One leader places dispatch and call-back calls, with a fencing token; a new leader resumes exactly once.

Two nodes (each its own store pool, ``Leadership``, AMI client, ``Dispatcher`` and ``Callbacks``, as
``callcenter/wiring.py`` builds them) on one throwaway PostgreSQL, both logged in to one scripted
Asterisk Manager (``FakeAmi``: every node hears every event, as with the real one; its
``CoreShowChannels`` answer is what the test says Asterisk still has). Calls are counted as the
``Originate`` actions the fake received.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.config import AmiConfig, DispatchConfig
from callcenter.dispatch.agencies import load_agencies
from callcenter.dispatch.dispatcher import Dispatcher
from callcenter.dispatch.leader import LOST
from callcenter.queue.ami import AmiClient
from callcenter.store import Store, utcnow
from callcenter.store.leadership import Deposed, Leadership, check_term
from callcenter.store.models import Call, Callback, Dispatch, DispatchAttempt, Rating
from callcenter.supervision.callbacks import Callbacks
from callcenter.supervision.ratings import Ratings
from callcenter.testing.fake_ami import FakeAmi
from callcenter.testing.postgres import ThrowawayPostgres
from callcenter.testing.wait import until
from callcenter.testing.web import SAMPLE_INTAKE, seed_dispatch, seed_incident

#: Quick leadership for tests: takeover in about 4 intervals.
INTERVAL = 0.3
POLL = 0.2
AGENCIES = """
[sla]
fire = 300
default = 900

[agencies.damkar]
name = "Damkar Jembrana"
categories = ["fire"]
answer_timeout = 10
lines = ["PJSIP/damkar", "PJSIP/damkar-backup"]
"""


class Node:
    """One app node's dispatch and call-back side, wired as the composition root wires it."""

    def __init__(self, name: str, url: str, fake: FakeAmi, tmp_path: Path, *, poll: float = POLL) -> None:
        self.name = name
        self.store = Store.from_url(url, retry_for=5.0)
        self.leadership = Leadership(url, interval=INTERVAL, node=name)
        self.published: list[dict[str, Any]] = []
        self._signals: set[asyncio.Future[None]] = set()
        ami = AmiConfig(port=fake.port, username=fake.username, secret=fake.secret, reconnect_min=0.05)
        self.ami = AmiClient(ami, on_event=self._event, on_ready=self._ready)
        tmp_path.mkdir(parents=True, exist_ok=True)
        agencies = tmp_path / "agencies.toml"
        agencies.write_text(AGENCIES)
        config = DispatchConfig(prompt_dir=str(tmp_path / "prompts"), attempts_per_line=1, accept_timeout=20)
        self.dispatcher = Dispatcher(
            self.store,
            self.ami,
            load_agencies(agencies),
            config,
            self._publish,
            leadership=self.leadership,
            poll=poll,
        )
        self.callbacks = Callbacks(
            self.store, self.ami, self._publish, overflow_dial="PJSIP/overflow", leadership=self.leadership, poll=poll
        )

    def _publish(self, message: dict[str, Any], **_: Any) -> None:
        """As ``LiveNews.publish``: a dispatch or call-back message becomes the store's change signal."""
        self.published.append(message)
        kind = str(message.get("type"))
        if kind in ("dispatch", "callback"):
            self._signals.add(asyncio.ensure_future(self.store.signals.changed(kind, message[kind]["id"])))

    async def _event(self, message: Any) -> None:
        await self.dispatcher.on_ami_event(message)
        await self.callbacks.on_ami_event(message)

    async def _ready(self, _client: AmiClient) -> None:
        return None

    async def start(self) -> None:
        await self.store.upgrade()
        await self.store.signals.start()
        await self.leadership.start()
        await self.ami.start()
        await self.ami.wait_ready(5)
        await self.dispatcher.start()
        await self.callbacks.start()

    async def stop(self) -> None:
        """Stop as a dying node does: no goodbye to the calls (they ring on), the lock's session ends."""
        await self.callbacks.close()
        await self.dispatcher.close()
        await self.ami.stop()
        await self.leadership.stop()
        await self.store.close()


@contextlib.asynccontextmanager
async def two_nodes(
    postgres: ThrowawayPostgres, fake_ami: FakeAmi, tmp_path: Path, poll: float = POLL
) -> AsyncIterator[tuple[Node, Node]]:
    """Node ``a`` leads (started first), node ``b`` follows."""
    url = postgres.create_database(f"f_{uuid.uuid4().hex[:16]}")
    a = Node("a", url, fake_ami, tmp_path / "a", poll=poll)
    b = Node("b", url, fake_ami, tmp_path / "b", poll=poll)
    started: list[Node] = []
    try:
        await a.start()
        started.append(a)
        await until(lambda: a.dispatcher.leader.term is not None, timeout=10, what="a leads")
        await b.start()
        started.append(b)
        # Both nodes hear each other's change signals from here on (LISTEN is up).
        await until(lambda: all(n.store.signals.listening.is_set() for n in (a, b)), timeout=10, what="LISTEN")
        yield a, b
    finally:
        for node in reversed(started):
            with contextlib.suppress(Exception):
                await node.stop()


@pytest.fixture
async def pair(postgres: ThrowawayPostgres, fake_ami: FakeAmi, tmp_path: Path) -> AsyncIterator[tuple[Node, Node]]:
    async with two_nodes(postgres, fake_ami, tmp_path) as nodes:
        yield nodes


def originates(fake: FakeAmi, prefix: str = "dispatch-") -> list[dict[str, str]]:
    return [a for a in fake.actions if a.get("Action") == "Originate" and a.get("ActionID", "").startswith(prefix)]


async def originate_response(fake: FakeAmi, reference: str, *, answered: bool, reason: str = "3") -> None:
    """The ``OriginateResponse`` Asterisk sends every AMI session: answered (Success), or not (Reason)."""
    response = "Success" if answered else "Failure"
    await fake.send({"Event": "OriginateResponse", "ActionID": reference, "Response": response, "Reason": reason})


def ringing(reference: str, state: str = "5", **extra: str) -> dict[str, str]:
    """A ``CoreShowChannel`` entry of a channel Asterisk still has (5 ringing, 6 up)."""
    return {"Channel": f"PJSIP/line-{reference}", "Uniqueid": reference, "ChannelState": state, **extra}


async def attempts(store: Store, dispatch_id: int) -> list[DispatchAttempt]:
    async def op(session: AsyncSession) -> list[DispatchAttempt]:
        query = select(DispatchAttempt).where(DispatchAttempt.dispatch_id == dispatch_id).order_by(DispatchAttempt.id)
        return list(await session.scalars(query))

    return await store.transaction("test_attempts", op)


async def row(store: Store, model: type[Any], key: int) -> Any:
    async def op(session: AsyncSession) -> Any:
        return await session.get(model, key)

    return await store.transaction("test_row", op)


async def new_dispatch(node: Node) -> int:
    incident = await seed_incident(node.store, SAMPLE_INTAKE, None)
    [d] = await node.dispatcher.dispatch(incident.id, ["damkar"], user_id=None)
    return d.id


async def placed(node: Node, fake: FakeAmi) -> tuple[int, DispatchAttempt]:
    """A dispatch requested on ``node`` and its first attempt, once the leader has placed its call."""
    dispatch_id = await new_dispatch(node)
    await until(lambda: len(originates(fake)) == 1, timeout=10, what="the call placed")
    [attempt] = await attempts(node.store, dispatch_id)
    return dispatch_id, attempt


async def test_a_dispatch_requested_on_a_follower_is_placed_by_the_leader_once(
    pair: tuple[Node, Node], fake_ami: FakeAmi
) -> None:
    a, b = pair
    dispatch_id, attempt = await placed(b, fake_ami)  # the follower's web API takes the request
    assert a.dispatcher.active == 1 and b.dispatcher.active == 0
    assert originates(fake_ami)[0]["ActionID"] == f"dispatch-{attempt.id}"
    assert (await row(a.store, Dispatch, dispatch_id)).leader_epoch == a.leadership.epoch
    # The officer's key reaches the follower (the dialplan's first AGI node): recorded once, there.
    assert await b.dispatcher.briefing_result(attempt.id, "accepted")
    assert not await a.dispatcher.briefing_result(attempt.id, "accepted")
    await until(lambda: a.dispatcher.active == 0, timeout=10, what="the leader saw the acceptance")
    assert (await row(a.store, Dispatch, dispatch_id)).status == "accepted"
    assert len(originates(fake_ami)) == 1


async def test_the_change_signal_wakes_the_leader_for_a_followers_request(
    postgres: ThrowawayPostgres, fake_ami: FakeAmi, tmp_path: Path
) -> None:
    """With a poll too slow to matter, the follower's request still rings at once: its ``dispatch`` signal
    (LISTEN/NOTIFY) wakes the leader; so does a call-back's."""
    async with two_nodes(postgres, fake_ami, tmp_path, poll=60) as (a, b):
        await until(lambda: a.dispatcher.leader.term is not None, timeout=10, what="a claims")
        await new_dispatch(b)
        await until(lambda: len(originates(fake_ami)) == 1, timeout=10, what="placed without waiting for a poll")
        await b.callbacks.request(await abandoned_call(b.store), user_id=None, interface="PJSIP/taker1")
        await until(lambda: len(originates(fake_ami, "callback-")) == 1, timeout=10, what="the call-back too")


async def test_leader_dies_while_the_line_rings_the_new_leader_adopts_it_once(
    pair: tuple[Node, Node], fake_ami: FakeAmi
) -> None:
    a, b = pair
    a_term = a.leadership.epoch
    dispatch_id, attempt = await placed(a, fake_ami)
    reference = f"dispatch-{attempt.id}"
    fake_ami.channels = [ringing(reference)]  # Asterisk still rings the duty line

    await a.stop()
    await until(lambda: b.dispatcher.lines.running(attempt.id) is not None, timeout=10, what="b adopted the line")
    assert (await row(b.store, Dispatch, dispatch_id)).leader_epoch == b.leadership.epoch != a_term
    assert len(originates(fake_ami)) == 1, "an adopted line is not placed again"

    await originate_response(fake_ami, reference, answered=True, reason="4")
    assert await b.dispatcher.briefing_result(attempt.id, "accepted")
    await fake_ami.send({"Event": "Hangup", "Uniqueid": reference, "Cause": "16"})
    await until(lambda: b.dispatcher.active == 0, timeout=10, what="the walk ended")
    d = await row(b.store, Dispatch, dispatch_id)
    assert d.status == "accepted" and d.leader_epoch == b.leadership.epoch
    [closed] = await attempts(b.store, dispatch_id)
    assert closed.outcome == "accepted"
    assert len(originates(fake_ami)) == 1


async def test_a_line_gone_with_the_leader_is_followed_by_the_next_attempt_once(
    pair: tuple[Node, Node], fake_ami: FakeAmi
) -> None:
    a, b = pair
    dispatch_id = await new_dispatch(a)
    await until(lambda: len(originates(fake_ami)) == 1, timeout=10, what="the call placed")
    fake_ami.channels = []  # the line stopped ringing while no leader listened: its outcome is lost

    await a.stop()
    await until(lambda: len(originates(fake_ami)) == 2, timeout=10, what="the escalation went on")
    first, second = await attempts(b.store, dispatch_id)
    assert first.outcome == "error" and first.reason == LOST
    assert second.line == "PJSIP/damkar-backup" and second.outcome is None
    assert originates(fake_ami)[1]["Channel"] == "PJSIP/damkar-backup"
    await originate_response(fake_ami, f"dispatch-{second.id}", answered=False)
    await until(lambda: b.dispatcher.active == 0, timeout=10, what="every line tried")
    assert (await row(b.store, Dispatch, dispatch_id)).status == "failed"
    assert len(originates(fake_ami)) == 2, "each step of the escalation exactly once"


async def test_a_deposed_leaders_late_writes_are_refused(
    pair: tuple[Node, Node], fake_ami: FakeAmi, postgres: ThrowawayPostgres
) -> None:
    """A leader that was paused while a newer one took the lock: its verdict and its next call are refused."""
    a, _b = pair
    term = a.leadership.epoch
    dispatch_id, attempt = await placed(a, fake_ami)

    # What a new leader does first when it takes the lock: raise the epoch. ``a`` has not noticed.
    postgres.sql("UPDATE leader_epochs SET epoch = epoch + 1", dbname=str(a.store.engine.url.database))
    assert a.leadership.is_leader
    await originate_response(fake_ami, f"dispatch-{attempt.id}", answered=False)
    await until(lambda: a.dispatcher.active == 0, timeout=10, what="the deposed walk stopped")
    [still_open] = await attempts(a.store, dispatch_id)
    assert still_open.outcome is None, "the deposed leader's verdict was not written"
    assert (await row(a.store, Dispatch, dispatch_id)).status == "calling"
    assert len(originates(fake_ami)) == 1, "and it placed no next attempt"

    async def stale(session: AsyncSession) -> None:
        await check_term(session, term)

    with pytest.raises(Deposed):
        await a.store.transaction("test_stale_term", stale)


async def abandoned_call(store: Store) -> str:
    call_id = f"c-{uuid.uuid4().hex[:8]}"
    at = utcnow() - timedelta(minutes=2)

    async def op(session: AsyncSession) -> None:
        session.add(
            Call(id=call_id, uniqueid=call_id, caller_number="+6281234567891", arrived_at=at, status="abandoned")
        )

    await store.transaction("test_call", op)
    return call_id


async def test_call_backs_are_placed_by_the_leader_and_taken_over_once(
    pair: tuple[Node, Node], fake_ami: FakeAmi
) -> None:
    a, b = pair
    answered = await b.callbacks.request(await abandoned_call(b.store), user_id=None, interface="PJSIP/taker1")
    lost = await b.callbacks.request(await abandoned_call(b.store), user_id=None, interface="PJSIP/taker2")
    await until(lambda: len(originates(fake_ami, "callback-")) == 2, timeout=10, what="the leader placed both")
    assert [o["Channel"] for o in originates(fake_ami, "callback-")] == ["PJSIP/taker1", "PJSIP/taker2"]
    # The first one's citizen answered while no leader listened; the second one's channel is gone.
    fake_ami.channels = [ringing(f"callback-{answered.id}", "6", BridgeId="b-1")]

    await a.stop()
    await until(lambda: b.callbacks.term is not None, timeout=10, what="b leads")

    async def outcomes() -> list[str]:
        return [(await row(b.store, Callback, cb.id)).outcome for cb in (answered, lost)]

    async def settled() -> bool:
        return "calling" not in await outcomes()

    await until(settled, timeout=10, what="both settled")
    assert await outcomes() == ["answered", "failed"]
    assert (await row(b.store, Callback, lost.id)).reason == LOST
    assert len(originates(fake_ami, "callback-")) == 2, "no call-back placed twice"


async def test_a_restarted_single_node_adopts_its_own_ringing_line(fake_ami: FakeAmi, tmp_path: Path) -> None:
    """SQLite, one node: a restart no longer marks the dispatch failed; the line still ringing is followed."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'one.db'}"
    first = Node("one", url, fake_ami, tmp_path / "first")
    await first.start()
    dispatch_id = await new_dispatch(first)
    await until(lambda: len(originates(fake_ami)) == 1, timeout=10, what="the call placed")
    [attempt] = await attempts(first.store, dispatch_id)
    fake_ami.channels = [ringing(f"dispatch-{attempt.id}")]
    await first.stop()

    second = Node("one", url, fake_ami, tmp_path / "second")
    await second.start()
    try:
        await until(lambda: second.dispatcher.lines.running(attempt.id) is not None, timeout=10, what="adopted")
        await originate_response(fake_ami, f"dispatch-{attempt.id}", answered=False)
        await until(lambda: len(originates(fake_ami)) == 2, timeout=10, what="the next line")
        first_row, _ = await attempts(second.store, dispatch_id)
        assert first_row.outcome == "no_answer"
    finally:
        await second.stop()


async def test_a_deposed_rating_trigger_writes_and_rings_nothing(fake_ami: FakeAmi, tmp_path: Path) -> None:
    """A rating row is written under the leader's term: after a newer term began, an old trigger's request
    is refused before anything is stored or sent; the current term's goes through."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'ratings.db'}"
    node = Node("one", url, fake_ami, tmp_path / "node")
    await node.start()
    try:
        old = node.leadership.epoch
        newer = Leadership(url, node="restarted")  # one node: each start is a new term
        await newer.start()
        assert newer.epoch is not None and old is not None and newer.epoch > old
        ratings = Ratings(node.store, node.ami, node._publish, lambda: None, public_url="")
        incident = await seed_incident(node.store, SAMPLE_INTAKE, None)
        with pytest.raises(Deposed):
            await ratings.request(incident.id, via="sms", term=old)
        assert await rating_rows(node.store) == 0
        await ratings.request(incident.id, via="sms", term=newer.epoch)
        assert await rating_rows(node.store) == 1
        await ratings.close()
        await newer.stop()
    finally:
        await node.stop()


async def rating_rows(store: Store) -> int:
    async def op(session: AsyncSession) -> int:
        return len(list(await session.scalars(select(Rating.id))))

    return await store.transaction("test_ratings", op)


async def test_a_row_of_this_term_left_calling_without_a_walk_is_walked_again(
    fake_ami: FakeAmi, tmp_path: Path
) -> None:
    """A walk that ended without settling its dispatch (its last write failed in an outage) leaves the row
    ``calling`` under the running term: the leader's next look walks it again, from its attempts."""
    node = Node("one", f"sqlite+aiosqlite:///{tmp_path / 'heal.db'}", fake_ami, tmp_path / "node")
    await node.start()
    try:
        incident = await seed_incident(node.store, SAMPLE_INTAKE, None)
        dispatch_id = await seed_dispatch(node.store, incident.id, "damkar")

        async def orphan(session: AsyncSession) -> None:
            row = await session.get(Dispatch, dispatch_id)
            assert row is not None
            row.leader_epoch = node.leadership.epoch

        await node.store.transaction("test_orphan", orphan)
        await until(lambda: len(originates(fake_ami)) == 1, timeout=10, what="walked again")
        [attempt] = await attempts(node.store, dispatch_id)
        assert attempt.line == "PJSIP/damkar"
    finally:
        await node.stop()


async def test_a_call_back_of_this_term_nobody_follows_is_settled_once(fake_ami: FakeAmi, tmp_path: Path) -> None:
    """A call-back whose verdict could not be written (an outage) stays ``calling`` under the running term
    with nobody following it: the leader's next look asks Asterisk and settles it, without calling again."""
    node = Node("one", f"sqlite+aiosqlite:///{tmp_path / 'heal.db'}", fake_ami, tmp_path / "node")
    await node.start()
    try:
        call_id = await abandoned_call(node.store)

        async def orphan(session: AsyncSession) -> int:
            cb = Callback(
                call_id=call_id,
                requested_at=utcnow(),
                outcome="calling",
                phone="PJSIP/taker1",
                number="+6281234567891",
                leader_epoch=node.leadership.epoch,
            )
            session.add(cb)
            await session.flush()
            return cb.id

        callback_id = await node.store.transaction("test_orphan", orphan)

        async def settled() -> bool:
            return bool((await row(node.store, Callback, callback_id)).outcome != "calling")

        await until(settled, timeout=10, what="settled")
        assert (await row(node.store, Callback, callback_id)).reason == LOST
        assert originates(fake_ami, "callback-") == []
    finally:
        await node.stop()
