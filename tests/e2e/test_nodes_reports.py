"""A citizen's report on two app nodes (docs/nodes.md): placed in the queue once, by the leader, and not
again when the leader dies and the other node takes over while the report still waits in Asterisk.

Real Asterisk 22, both nodes as child processes on one PostgreSQL database; what is in the queue is asked
from Asterisk itself (``QueueStatus``), not from the app.
"""

from __future__ import annotations

import pytest

from callcenter.pbx.harness import TestPbx
from callcenter.queue.live import report_id_of
from callcenter.store import Calls, Store
from callcenter.store.reports import TAKEN, NewReport, Reports
from callcenter.testing import sipp
from callcenter.testing.ami import QueueProbe
from callcenter.testing.nodes import StartNodes
from callcenter.testing.wait import until
from callcenter.testing.web import make_user

pytestmark = [pytest.mark.pbx, pytest.mark.postgres]


async def test_a_report_is_placed_once_across_a_takeover(start_nodes: StartNodes, pbx: TestPbx) -> None:
    nodes = await start_nodes()
    url = nodes[0].env["CALLCENTER_STORE_URL"]
    store = None
    taker = None
    try:
        leader = await nodes.leader()
        (survivor,) = nodes.others(leader)
        store = Store.from_url(url, retry_for=5)
        ayu = await make_user(store, "ayu", "calltaker", interface="PJSIP/taker1")
        # Stored as the app stores it; no node is told (as if the node that took it died at once): the
        # leader's loop finds it waiting. taker1 does not answer yet, so it waits in the queue.
        reports = Reports(Calls(store))
        report = await reports.create(NewReport(number="+6281234567890", category="flood", client_group="127.0.0.1"))

        async with QueueProbe(pbx.spec.ami_port, pbx.spec.ami_secret, pbx.spec.queue) as probe:

            async def queued() -> list[str]:
                return [u for u in (await probe.snapshot()).waiting if report_id_of(u) == report.id]

            async def once() -> bool:
                return len(await queued()) == 1

            await until(once, timeout=15, what="the report waiting in Asterisk's queue")
            (entry,) = await queued()
            assert [e["report_id"] for e in leader.events("report.queue_placed")] == [report.id]
            assert survivor.events("report.queue_placed") == []

            # The leader dies; the other node leads, finds the report already in the queue, leaves it there.
            await leader.kill()
            assert await nodes.leader(among=[survivor]) is survivor
            found = await survivor.wait_event("report.queue_leading", timeout=20)
            assert (found["placed"], found["in_queue"]) == (0, 1)
            assert await queued() == [entry]

            # taker1 answers: the survivor follows it and the report is ayu's.
            taker = await sipp.answerer(dict(pbx.spec.takers)["taker1"], answer_after=0.3, max_calls=1, timeout=60)

            async def taken() -> bool:
                now = await reports.get(report.id)
                return now is not None and now.status == TAKEN and now.taken_by == ayu.id

            await until(taken, timeout=20, what="the report taken through the surviving node")
            assert survivor.events("report.queue_placed") == []
            await taker.wait(timeout=30)
    finally:
        if taker is not None:
            taker.kill()
        await nodes.stop()  # before the PBX goes idle (start_nodes would stop them only after)
        if store is not None:
            await store.close()
        await pbx.await_idle(timeout=30)
