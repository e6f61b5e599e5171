"""Supervisor API through the real app, on SQLite and PostgreSQL: exact statistics from a known data set,
call-log filters, CSV, recordings with the access log, and women-and-children case access.

The centre is put at UTC+8 (WITA) so that hour-of-day and day boundaries are checked across the UTC
date line: a call at 07:30 local arrived at 23:30 UTC the day before.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.config import replace
from callcenter.store import Store
from callcenter.store.access import access_entries
from callcenter.store.models import Call
from callcenter.store.recordings import recording_file
from callcenter.testing.rows import dispatch_row, incident_row, rating_row
from callcenter.testing.web import DEFAULT_PASSWORD, app_client, make_user, test_config
from callcenter.web.keys import STORE, TZ_OFFSET
from callcenter.web.supervisor_api import csv_cell

OFFSET = timedelta(hours=8)
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(64))


def local(day: int, hour: int, minute: int = 0) -> datetime:
    """A local (UTC+8) wall-clock time in January 2026, as an aware UTC datetime."""
    return datetime(2026, 1, day, hour, minute, tzinfo=UTC) - OFFSET


@dataclass
class Env:
    client: TestClient[Any, Any]
    store: Store
    http: dict[str, aiohttp.ClientSession]

    async def get(self, who: str, path: str) -> tuple[int, Any]:
        async with self.http[who].get(self.client.make_url(path)) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.read()


# id, local arrival (day, h, m), wait, answered?, classification, taker, number
CALLS = (
    ("c1", (10, 7, 30), 4.0, True, "genuine", "PJSIP/taker1", "+6281211110001"),
    ("c2", (10, 7, 45), 10.0, True, "prank", "PJSIP/taker1", "+6281211110002"),
    ("c3", (10, 9, 0), 15.0, True, "silent", "PJSIP/taker2", "+6281211110003"),
    ("c4", (10, 9, 10), 16.0, True, "genuine", "PJSIP/taker2", "+6281211110004"),
    ("c5", (10, 23, 59), 45.0, True, "genuine", "PJSIP/taker1", "+6281211110005"),
    ("c6", (11, 0, 30), 30.0, False, "abandoned", None, "+6281211110006"),
    ("c7", (9, 23, 0), 3.0, True, "genuine", "PJSIP/taker1", "+6281211110007"),  # the day before: outside
)


async def seed(store: Store) -> None:
    async def op(session: AsyncSession) -> None:
        arrivals = {}
        for cid, (d, h, m), wait, answered, klass, taker, number in CALLS:
            at = local(d, h, m)
            arrivals[cid] = at
            session.add(
                Call(
                    id=cid,
                    uniqueid=f"u-{cid}",
                    routed_by="agi",
                    status="completed" if answered else "abandoned",
                    arrived_at=at,
                    answered_at=at + timedelta(seconds=wait) if answered else None,
                    wait_seconds=wait,
                    answered_by=taker,
                    classification=klass,
                    caller_number=number,
                )
            )
        await session.flush()
        incidents = {"c1": (1, "medical"), "c4": (2, "fire"), "c5": (3, "violence_women_children")}
        for cid, (iid, category) in incidents.items():
            at = arrivals[cid] + timedelta(seconds=60)
            session.add(incident_row(f"112-20260110-000{iid}", at, call_id=cid, category=category, id=iid))
        await session.flush()
        for iid, agency, accepted_after in ((1, "dinkes", 40), (2, "damkar", 100), (2, "pdam", 20), (3, "dpppa", None)):
            cid = {1: "c1", 2: "c4", 3: "c5"}[iid]
            created = arrivals[cid] + timedelta(seconds=61)
            accepted = arrivals[cid] + timedelta(seconds=accepted_after) if accepted_after else None
            session.add(dispatch_row(iid, agency, created, accepted_at=accepted))
        for iid, score in ((1, 5), (2, 3)):
            session.add(rating_row(iid, local(10, 12), score))

    await store.transaction("seed", op)


@pytest.fixture
async def env(db_url: str, tmp_path: Path) -> AsyncIterator[Env]:
    root = tmp_path / "root"
    (root / "rec").mkdir(parents=True)
    (root / "rec" / "c1.wav").write_bytes(WAV)
    (root / "secret.wav").write_bytes(b"RIFF secret")
    cfg = replace(
        test_config(tmp_path),
        store={"url": db_url, "retry_for": 5.0},
        supervision={"recordings_root": str(root)},
        queue={"record_dir": "/rec"},
    )
    http: dict[str, aiohttp.ClientSession] = {}
    async with app_client(cfg, lambda app: app.__setitem__(TZ_OFFSET, OFFSET)) as client:
        store = client.app[STORE]
        await make_user(store, "sri", "supervisor")
        await make_user(store, "ayu", "calltaker", interface="PJSIP/taker1")
        await make_user(store, "budi", "calltaker", interface="PJSIP/taker2")
        await seed(store)

        async def set_recording(session: AsyncSession) -> None:
            for cid, rec in (("c1", "/rec/c1.wav"), ("c2", "/rec/../secret.wav"), ("c3", "/etc/passwd")):
                row = await session.get(Call, cid)
                assert row is not None
                row.recording = rec

        await store.transaction("recordings", set_recording)
        for name in ("sri", "ayu"):
            session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
            async with session.post(
                client.make_url("/api/login"), json={"username": name, "password": DEFAULT_PASSWORD}
            ) as resp:
                assert resp.status == 200
            http[name] = session
        try:
            yield Env(client, store, http)
        finally:
            for session in http.values():
                await session.close()


RANGE = "from=2026-01-10&to=2026-01-11"


async def test_statistics_exact(env: Env) -> None:
    status, body = await env.get("sri", f"/api/stats?{RANGE}")
    assert status == 200, body
    assert body["calls"] == 6 and body["answered"] == 5 and body["abandoned"] == 1
    by_hour = [0] * 24
    by_hour[7], by_hour[9], by_hour[23], by_hour[0] = 2, 2, 1, 1
    assert body["by_hour"] == by_hour
    assert body["by_day"] == [
        {"day": "2026-01-10", "count": 5, "answered": 5, "abandoned": 0},
        {"day": "2026-01-11", "count": 1, "answered": 0, "abandoned": 1},
    ]
    answer = body["answer_time"]
    assert [(b["le_seconds"], b["count"]) for b in answer["buckets"]] == [
        (5, 1),
        (10, 1),
        (15, 1),
        (20, 1),
        (30, 0),
        (60, 1),
        (120, 0),
        (None, 0),
    ]
    assert answer["within"] == {"10": 40.0, "15": 60.0, "20": 80.0}
    share = body["classification_share"]
    assert share["genuine"] == 50.0 and share["prank"] == 16.7 and share["silent"] == 16.7
    assert share["abandoned"] == 16.7 and share["hoax"] == 0.0 and share["unclassified"] == 0.0
    assert body["by_category"] == [
        {"code": "fire", "count": 1, "share": 33.3},
        {"code": "medical", "count": 1, "share": 33.3},
        {"code": "violence_women_children", "count": 1, "share": 33.3},
    ]
    assert {a["code"]: (a["count"], a["share"], a["accepted"]) for a in body["by_agency"]} == {
        "damkar": (1, 25.0, 1),
        "dinkes": (1, 25.0, 1),
        "dpppa": (1, 25.0, 0),
        "pdam": (1, 25.0, 1),
    }
    # first acceptance: incident 1 after 40 s, incident 2 after 20 s (pdam before damkar)
    assert body["dispatch_ack"] == {"count": 2, "p50": 20, "p90": 40}
    ratings = body["ratings"]
    assert [(r["calltaker"], r["display_name"], r["count"], r["average"]) for r in ratings["by_calltaker"]] == [
        ("PJSIP/taker1", "Ayu", 1, 5.0),
        ("PJSIP/taker2", "Budi", 1, 3.0),
    ]
    assert {r["agency"]: r["average"] for r in ratings["by_agency"]} == {"dinkes": 5.0, "damkar": 3.0, "pdam": 3.0}

    # one local day only: c7 (9 Jan 23:00 local = 9 Jan 15:00 UTC) is its only call
    status, body = await env.get("sri", "/api/stats?from=2026-01-09&to=2026-01-09")
    assert status == 200 and body["calls"] == 1 and body["by_hour"][23] == 1


async def test_call_log_filters(env: Env) -> None:
    async def ids(query: str) -> tuple[list[str], int]:
        status, body = await env.get("sri", f"/api/calls/log?{query}")
        assert status == 200, body
        return [c["id"] for c in body["calls"]], body["total"]

    assert await ids(RANGE) == (["c6", "c5", "c4", "c3", "c2", "c1"], 6)
    assert await ids("") == (["c6", "c5", "c4", "c3", "c2", "c1", "c7"], 7)
    assert await ids(f"{RANGE}&limit=2&offset=1") == (["c5", "c4"], 6)
    assert await ids("number=081211110001") == (["c1"], 1)
    assert await ids(f"{RANGE}&calltaker=ayu") == (["c5", "c2", "c1"], 3)
    assert await ids("calltaker=PJSIP/taker2") == (["c4", "c3"], 2)
    assert await ids("category=fire") == (["c4"], 1)
    assert await ids("classification=prank") == (["c2"], 1)
    assert await ids("agency=pdam") == (["c4"], 1)
    assert await ids("status=abandoned") == (["c6"], 1)
    assert await ids("from=2026-01-10T09:05:00%2B08:00&to=2026-01-10T23:00:00%2B08:00") == (["c4"], 1)
    status, body = await env.get("sri", f"/api/calls/log?{RANGE}&calltaker=ayu")
    row = body["calls"][-1]
    assert row["calltaker"] == "Ayu" and row["incidents"][0]["category"] == "medical" and row["has_recording"]
    for bad in ("from=10-01-2026", "to=yesterday", "status=lost", "category=aliens", "limit=0", "number=abc"):
        status, body = await env.get("sri", f"/api/calls/log?{bad}")
        assert status == 422, bad
        assert set(body["fields"]) == {bad.split("=")[0]}
    status, body = await env.get("sri", "/api/stats?from=2026-02-01&to=2026-01-01")
    assert status == 422 and "to" in body["fields"]
    status, _ = await env.get("ayu", "/api/calls/log")
    assert status == 403


async def test_abandoned_list_reads_dates_as_the_centres_days(env: Env) -> None:
    """c6 gave up at 00:30 local time on 11 January: still 10 January in UTC."""

    async def ids(query: str) -> list[str]:
        status, body = await env.get("ayu", f"/api/abandoned?{query}")
        assert status == 200, (query, body)
        return [r["call_id"] for r in body]

    assert await ids("from=2026-01-11&to=2026-01-11") == ["c6"]
    assert await ids("from=2026-01-10&to=2026-01-10") == []
    assert await ids("to=2026-01-11") == ["c6"]  # only "to": that day and nothing before it
    assert await ids("to=2026-01-10") == []
    assert await ids("from=2026-01-10T16:00:00Z&to=2026-01-10T17:00:00Z") == ["c6"]  # instants as given
    assert await ids("from=2026-01-11T00:00:00&to=2026-01-11T01:00:00") == ["c6"]  # naive: local time
    for bad, field in (("from=yesterday", "from"), ("from=2026-01-12&to=2026-01-11", "to")):
        status, body = await env.get("ayu", f"/api/abandoned?{bad}")
        assert (status, body["error"], set(body["fields"])) == (422, "invalid input", {field}), bad


async def test_csv(env: Env) -> None:
    status, raw = await env.get("sri", f"/api/stats/by_category.csv?{RANGE}")
    assert status == 200
    rows = list(csv.reader(io.StringIO(raw.decode())))
    assert rows[0] == ["code", "count", "share"] and ["medical", "1", "33.3"] in rows
    status, raw = await env.get("sri", f"/api/stats/answer_time.csv?{RANGE}")
    assert list(csv.reader(io.StringIO(raw.decode())))[-1] == ["inf", "0"]
    status, raw = await env.get("sri", f"/api/stats/by_hour.csv?{RANGE}")
    assert list(csv.reader(io.StringIO(raw.decode())))[8] == ["7", "2"]
    status, raw = await env.get("sri", "/api/stats/calls.csv?classification=genuine")
    assert status == 200
    rows = list(csv.reader(io.StringIO(raw.decode())))
    assert [r[0] for r in rows[1:]] == ["c5", "c4", "c1", "c7"]
    assert rows[1][4] == "+6281211110005"  # a number is not mistaken for a formula
    assert csv_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)" and csv_cell("+62812") == "+62812"
    status, _ = await env.get("sri", "/api/stats/nothing.csv")
    assert status == 404
    status, _ = await env.get("sri", "/api/stats/calls.csv?from=bad")
    assert status == 422


async def test_recording_and_access_log(env: Env) -> None:
    status, body = await env.get("sri", "/api/calls/c1/recording")
    assert status == 200 and body == WAV
    async with env.http["sri"].get(
        env.client.make_url("/api/calls/c1/recording"), headers={"Range": "bytes=0-3"}
    ) as resp:
        assert resp.status == 206 and await resp.read() == b"RIFF"
        assert resp.content_type == "audio/wav"
    entries = await access_entries(env.store, subject_type="call", subject_id="c1")
    assert [e.action for e in entries] == ["play_recording", "play_recording"]
    assert entries[0].detail["range"] == "bytes=0-3"
    status, _ = await env.get("ayu", "/api/calls/c1/recording")
    assert status == 403
    for cid in ("c2", "c3", "c4", "nope"):  # traversal, outside the record dir, none, unknown call
        status, _ = await env.get("sri", f"/api/calls/{cid}/recording")
        assert status == 404, cid
    assert len(await access_entries(env.store, subject_type="call")) == 2
    assert recording_file("/rec/../secret.wav", "/rec", "/x") is None
    assert recording_file("/recx/a.wav", "/rec", "/x") is None


async def test_detail_and_women_children_access(env: Env) -> None:
    status, body = await env.get("sri", "/api/calls/c1/detail")
    assert status == 200
    assert body["incident"]["category"] == "medical" and body["recording_url"] == "/api/calls/c1/recording"
    assert [d["agency"] for d in body["dispatches"]] == ["dinkes"] and body["rating"]["score"] == 5
    assert await access_entries(env.store, subject_type="incident") == []
    status, body = await env.get("sri", "/api/calls/c5/detail")
    assert status == 200 and body["incident"]["category"] == "violence_women_children"
    entries = await access_entries(env.store, subject_type="incident", subject_id="3")
    assert [e.action for e in entries] == ["view_case"]
    status, _ = await env.get("sri", "/api/calls/zz/detail")
    assert status == 404
    status, _ = await env.get("ayu", "/api/calls/c5/detail")
    assert status == 403


async def test_call_log_and_csv_export_of_a_case_are_traced(env: Env) -> None:
    """Issue 12: the call log page and the calls CSV list the case (caller number, reference, category):
    each is in the access log; the detail trail above is not the only one."""
    assert await access_entries(env.store, subject_type="incident") == []
    status, body = await env.get("sri", "/api/calls/log?limit=500")
    assert status == 200 and any(
        i["category"] == "violence_women_children" for c in body["calls"] for i in c["incidents"]
    )
    status, raw = await env.get("sri", "/api/stats/calls.csv?classification=genuine")
    assert status == 200 and b"violence_women_children" in raw
    entries = await access_entries(env.store, subject_type="incident", subject_id="3")
    assert sorted(e.action for e in entries) == ["call_log", "export_csv"]
    assert {e.detail["username"] for e in entries} == {"sri"}


async def test_wallboard(env: Env) -> None:
    status, body = await env.get("sri", "/api/wallboard")
    assert status == 200, body
    assert body["calls_today"] == 0 and body["waiting"] == [] and body["longest_wait"] == 0.0
    # incident 3's dpppa dispatch is still calling: open
    assert body["open_incidents"] == {"by_category": {"violence_women_children": 1}, "by_agency": {"dpppa": 1}}
    assert body["answered_within"] == {"10": None, "15": None, "20": None}
