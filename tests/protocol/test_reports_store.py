"""The report app's storage (``store/reports.py``, ``store/app_numbers.py``) on SQLite and PostgreSQL:
codes hashed and limited, device tokens hashed, reports through their states, limits in the storing
transaction, the sink told of every accepted report, prank/hoax flagging the number and blocking it from
the app after three."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from callcenter.store import Calls, Store, utcnow
from callcenter.store.accounts import Accounts
from callcenter.store.app_numbers import AppNumbers, code_hash
from callcenter.store.models import AppDevice, NumberFlag, Report
from callcenter.store.quota import QuotaExceeded
from callcenter.store.reports import (
    CALLED_BACK,
    CLOSED,
    TAKEN,
    WAITING,
    AppBlocked,
    NewReport,
    ReportLimits,
    Reports,
)

NUMBER = "+6281234567890"
OTHER = "+6281298765432"


class Recorder:
    """A sink that remembers what it was told (and can fail, like an AMI that is down)."""

    def __init__(self, fail: bool = False) -> None:
        self.seen: list[int] = []
        self.fail = fail

    async def report_accepted(self, report: Report) -> None:
        self.seen.append(report.id)
        if self.fail:
            raise ConnectionError("AMI down")


async def test_code_is_hashed_limited_and_single_use(store: Store) -> None:
    numbers = AppNumbers(store, code_attempts=3, codes_per_hour=2)
    issued = await numbers.request_code(NUMBER)
    assert issued.outcome == "issued" and len(issued.code) == 6 and issued.code.isdigit()
    row = await numbers.get(NUMBER)
    assert row is not None and row.code_hash and row.code_salt
    assert issued.code not in (row.code_hash, row.code_salt)
    assert row.code_hash == code_hash(row.code_salt, NUMBER, issued.code)
    # Wrong codes count down; the right one then verifies and is used up.
    wrong = "000000" if issued.code != "000000" else "111111"
    first = await numbers.verify(NUMBER, wrong)
    assert (first.outcome, first.attempts_left) == ("wrong", 2)
    done = await numbers.verify(NUMBER, issued.code)
    assert done.outcome == "verified" and len(done.token) >= 40
    assert (await numbers.verify(NUMBER, issued.code)).outcome == "no_code"
    async with store.engine.connect() as conn:
        hashes = list((await conn.execute(select(AppDevice.token_hash))).scalars())
    assert len(hashes) == 1 and done.token not in hashes[0]
    device = await numbers.device(done.token)
    assert device is not None and device.number == NUMBER and not device.blocked
    assert await numbers.device(done.token + "x") is None
    # Two codes an hour: the third is refused.
    assert (await numbers.request_code(NUMBER)).outcome == "issued"
    assert (await numbers.request_code(NUMBER)).outcome == "limited"


async def test_too_many_wrong_codes_and_expiry(store: Store) -> None:
    numbers = AppNumbers(store, code_attempts=2)
    issued = await numbers.request_code(NUMBER)
    wrong = "000000" if issued.code != "000000" else "111111"
    assert (await numbers.verify(NUMBER, wrong)).outcome == "wrong"
    assert (await numbers.verify(NUMBER, wrong)).outcome == "too_many"
    assert (await numbers.verify(NUMBER, issued.code)).outcome == "too_many", "the right code after the limit"
    expired = AppNumbers(store, code_ttl=timedelta(seconds=-1))
    again = await expired.request_code(OTHER)
    assert (await expired.verify(OTHER, again.code)).outcome == "expired"


async def test_report_states_and_sink(store: Store) -> None:
    reports = Reports(Calls(store))
    told, broken = Recorder(), Recorder(fail=True)
    reports.add_sink(told)
    stop = reports.add_sink(broken)
    new = NewReport(NUMBER, "fire", "192.0.2.7", latitude=-8.35, longitude=114.62, accuracy_m=12.0)
    report = await reports.create(new)
    assert report.status == WAITING and told.seen == [report.id] and broken.seen == [report.id]
    stop()
    assert [r.id for r in await reports.waiting()] == [report.id]
    ayu = await Accounts(store).create_user("ayu", "Ayu", "correct-horse-battery", "calltaker")
    taken = await reports.take(report.id, ayu.id)
    assert taken is not None and taken.status == TAKEN and taken.taken_by == ayu.id
    assert await reports.take(report.id, ayu.id) is None, "taken twice"
    assert await reports.waiting() == []
    linked = await reports.link_callback(report.id, "1733500000.42")
    assert linked is not None and linked.status == CALLED_BACK and linked.callback_uniqueid == "1733500000.42"
    found = await reports.by_callback_uniqueid("1733500000.42")
    assert found is not None and found.id == report.id
    closed = await reports.close(report.id)
    assert closed is not None and closed.status == CLOSED
    assert await reports.link_callback(report.id, "x") is None, "a closed report is not called back"
    got = await reports.get(report.id)
    assert got is not None and got.latitude == -8.35 and got.category == "fire"


async def test_limits_are_checked_when_storing(store: Store) -> None:
    reports = Reports(Calls(store), limits=ReportLimits(per_number=2, per_client=3))
    for _ in range(2):
        await reports.create(NewReport(NUMBER, "medical", "192.0.2.7"))
    with pytest.raises(QuotaExceeded, match="per number"):
        await reports.create(NewReport(NUMBER, "medical", "192.0.2.8"))
    await reports.create(NewReport(OTHER, "medical", "192.0.2.7"))
    with pytest.raises(QuotaExceeded, match="per address"):
        await reports.create(NewReport("+6281211112222", "medical", "192.0.2.7"))
    async with store.engine.connect() as conn:
        assert len(list((await conn.execute(select(Report.id))).scalars())) == 3


async def test_three_false_reports_flag_and_block_from_the_app_only(store: Store) -> None:
    calls = Calls(store)
    numbers, reports = AppNumbers(store), Reports(calls, limits=ReportLimits(per_number=10))
    issued = await numbers.request_code(NUMBER)
    token = (await numbers.verify(NUMBER, issued.code)).token
    ids = [(await reports.create(NewReport(NUMBER, "crime", "192.0.2.7"))).id for _ in range(4)]
    first = await reports.classify(ids[0], "prank", user_id=None, username="ayu")
    assert first is not None and (first.false_reports, first.blocked) == (1, False)
    again = await reports.classify(ids[0], "hoax", user_id=None, username="ayu")
    assert again is not None and again.false_reports == 1, "reclassifying a false report counts it once"
    await reports.classify(ids[1], "genuine", user_id=None, username="ayu")
    await reports.classify(ids[2], "hoax", user_id=None, username="ayu")
    third = await reports.classify(ids[3], "prank", user_id=None, username="ayu")
    assert third is not None and (third.false_reports, third.blocked) == (3, True)
    # The same flags as calls: in the table and in routing's in-memory index.
    async with store.engine.connect() as conn:
        kinds = list((await conn.execute(select(NumberFlag.kind).where(NumberFlag.number == NUMBER))).scalars())
    assert sorted(kinds) == ["hoax", "prank", "prank"]
    assert store.flags.count(NUMBER, utcnow() - timedelta(days=1)) == 3
    # Blocked from the app: no new report, no new code, the device says so.
    with pytest.raises(AppBlocked):
        await reports.create(NewReport(NUMBER, "crime", "192.0.2.7"))
    assert (await numbers.request_code(NUMBER)).outcome == "blocked"
    device = await numbers.device(token)
    assert device is not None and device.blocked
    # A false report taken back lifts the block below the threshold.
    undone = await reports.classify(ids[3], "genuine", user_id=None, username="sup")
    assert undone is not None and (undone.false_reports, undone.blocked) == (2, False)
