"""Quality review through the real app, on SQLite and PostgreSQL: the weekly sample, reviews with
weights and critical deviations, calibration by a second reviewer, the call-taker's acknowledgement,
scores per call-taker over time (JSON and CSV), and who may do what.

The centre is at UTC+8 (WITA); the seeded week is 2026-W10 (Monday 2 to Sunday 8 March, local).
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
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store import Store
from callcenter.store.models import Call, QualitySample
from callcenter.testing.rows import incident_row
from callcenter.testing.web import DEFAULT_PASSWORD, app_client, make_user, test_config
from callcenter.web.keys import STORE, TZ_OFFSET

OFFSET = timedelta(hours=8)
MONDAY = datetime(2026, 3, 2, tzinfo=UTC) - OFFSET
WEEK = "2026-W10"
# Member names as Asterisk reports them: an interface, a console login's display name, an unknown one.
TAKERS = ("PJSIP/taker1", "Budi", "PJSIP/taker9")
FULL = {"greeting": 4, "location": 4, "key_questions": 4, "intake": 4, "agencies": 4, "care": 4}


@dataclass
class Env:
    client: TestClient[Any, Any]
    store: Store
    http: dict[str, aiohttp.ClientSession]
    users: dict[str, int]

    async def call(self, who: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        session = self.http[who]
        headers = {"X-CSRF-Token": session.headers.get("X-Test-Csrf", "")}
        async with session.request(method, self.client.make_url(path), json=body, headers=headers) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()


async def seed(store: Store) -> None:
    async def op(session: AsyncSession) -> None:
        for i in range(120):
            at = MONDAY + timedelta(hours=i)
            answered = i % 10 != 9  # 108 answered, 12 abandoned
            session.add(
                Call(
                    id=f"w{i}",
                    uniqueid=f"u-w{i}",
                    routed_by="agi",
                    status="completed" if answered else "abandoned",
                    arrived_at=at,
                    answered_at=at + timedelta(seconds=5) if answered else None,
                    answered_by=TAKERS[i % 3] if answered else None,
                    caller_number=f"+62812111{i:05d}",
                )
            )
        # The week after: a small one, four answered calls.
        for i in range(4):
            at = MONDAY + timedelta(days=7, hours=i)
            session.add(
                Call(
                    id=f"n{i}",
                    uniqueid=f"u-n{i}",
                    routed_by="agi",
                    status="completed",
                    arrived_at=at,
                    answered_at=at,
                    answered_by="PJSIP/taker1",
                )
            )
        await session.flush()
        session.add(incident_row("112-20260302-0001", MONDAY + timedelta(hours=4), call_id="w4", priority="critical"))
        session.add(incident_row("112-20260302-0002", MONDAY + timedelta(hours=5), call_id="w5", priority="high"))

    await store.transaction("seed", op)


@pytest.fixture
async def env(db_url: str, tmp_path: Path) -> AsyncIterator[Env]:
    from callcenter.config import replace

    config = replace(test_config(tmp_path), store={"url": db_url, "retry_for": 5.0})
    http: dict[str, aiohttp.ClientSession] = {}
    async with app_client(config, lambda app: app.__setitem__(TZ_OFFSET, OFFSET)) as client:
        store = client.app[STORE]
        users = {
            "sri": (await make_user(store, "sri", "supervisor")).id,
            "tono": (await make_user(store, "tono", "supervisor")).id,
            "ayu": (await make_user(store, "ayu", "calltaker", interface="PJSIP/taker1")).id,
            "budi": (await make_user(store, "budi", "calltaker", interface="PJSIP/taker2")).id,
        }
        await seed(store)
        for name in users:
            session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
            async with session.post(
                client.make_url("/api/login"), json={"username": name, "password": DEFAULT_PASSWORD}
            ) as resp:
                assert resp.status == 200
                session.headers["X-Test-Csrf"] = (await resp.json())["csrf_token"]
            http[name] = session
        try:
            yield Env(client, store, http, users)
        finally:
            for session in http.values():
                await session.close()


async def test_weekly_sample_follows_the_rules_and_tops_up_once(env: Env) -> None:
    status, body = await env.call("sri", "POST", "/api/quality/samples", {"week": WEEK})
    assert status == 201, body
    # 108 answered: random share max(ceil(2.16), min(10, 108)) = 10, including a monthly pick for ayu; budi's
    # month is covered by the critical call (w4, answered by "Budi"), which comes on top.
    assert body["added"] == 11 and body["reasons"] == ["critical", "monthly", "random"]
    status, again = await env.call("sri", "POST", "/api/quality/samples", {"week": WEEK})
    assert status == 200 and again["added"] == 0

    status, listed = await env.call("sri", "GET", f"/api/quality/samples?week={WEEK}")
    assert status == 200
    samples = listed["samples"]
    assert len(samples) == 11
    reasons = [s["reason"] for s in samples]
    assert reasons.count("critical") == 1 and reasons.count("monthly") == 1 and reasons.count("random") == 9
    (critical,) = [s for s in samples if s["reason"] == "critical"]
    assert critical["call_id"] == "w4"
    assert critical["calltaker_id"] == env.users["budi"]
    assert [s["calltaker_id"] for s in samples if s["reason"] == "monthly"] == [env.users["ayu"]]
    for s in samples:
        assert s["status"] == "open" and s["week"] == WEEK
        due = datetime.fromisoformat(s["due_at"]) - datetime.fromisoformat(s["drawn_at"])
        assert due == timedelta(days=5)
        assert int(s["call_id"][1:]) % 10 != 9, "an abandoned call was drawn"

    # A small week: every answered call (fewer than the floor of 10); ayu already has March covered.
    status, small = await env.call("sri", "POST", "/api/quality/samples", {"week": "2026-W11"})
    assert status == 201 and small["added"] == 4 and small["reasons"] == ["random"]

    # Overdue once the due date has passed without a review.
    async def expire(session: AsyncSession) -> None:
        await session.execute(
            update(QualitySample).where(QualitySample.call_id == "w4").values(due_at=datetime.now(UTC) - timedelta(1))
        )

    await env.store.transaction("expire", expire)
    status, listed = await env.call("sri", "GET", f"/api/quality/samples?week={WEEK}")
    assert {s["call_id"]: s["status"] for s in listed["samples"]}["w4"] == "overdue"

    for bad in ("2026-W99", "week", "2026-10"):
        status, err = await env.call("sri", "POST", "/api/quality/samples", {"week": bad})
        assert status == 422 and "week" in err["fields"], (bad, err)


async def test_review_calibration_and_acknowledgement(env: Env) -> None:
    status, _ = await env.call("sri", "POST", "/api/quality/samples", {"week": WEEK})
    assert status == 201
    _, listed = await env.call("sri", "GET", f"/api/quality/samples?week={WEEK}")
    mine = next(s for s in listed["samples"] if s["calltaker_id"] == env.users["ayu"])
    call = mine["call_id"]

    for bad in ([1, 2], "levels"):  # a body that is not a JSON object: 400, as on every other route
        status, _ = await env.call("sri", "POST", f"/api/quality/calls/{call}/reviews", bad)
        assert status == 400
        status, _ = await env.call("sri", "POST", "/api/quality/samples", bad)
        assert status == 400
    status, err = await env.call("sri", "POST", f"/api/quality/calls/{call}/reviews", {"levels": {"greeting": 9}})
    assert status == 422 and "levels.greeting" in err["fields"] and "levels.location" in err["fields"]
    review = {
        "levels": {**FULL, "location": 2, "intake": 3, "agencies": None},
        "deviations": {"location": "critical"},
        "comment": "Alamat tidak diulang kepada penelepon.",
    }
    status, body = await env.call("sri", "POST", f"/api/quality/calls/{call}/reviews", review)
    assert status == 201, body
    sample = body["sample"]
    assert sample["status"] == "reviewed" and sample["score"] == 79.4 and sample["critical"] is True
    assert [r["primary"] for r in sample["reviews"]] == [True]
    status, dup = await env.call("sri", "POST", f"/api/quality/calls/{call}/reviews", review)
    assert status == 409, dup

    # A second supervisor calibrates: the difference to the first review is shown.
    status, body = await env.call("tono", "POST", f"/api/quality/calls/{call}/reviews", {"levels": FULL})
    assert status == 201, body
    (diff,) = body["sample"]["calibration"]
    assert diff["reviewer"] == "Tono" and diff["score_difference"] == 20.6
    assert diff["level_differences"]["location"] == 2 and diff["level_differences"]["agencies"] is None
    assert diff["critical_agrees"] is False
    status, detail = await env.call("tono", "GET", f"/api/quality/calls/{call}")
    assert status == 200 and detail["reviewed_by_me"] is True and len(detail["sample"]["reviews"]) == 2

    # The call-taker reads the primary review only (not the calibration one) and acknowledges it once.
    status, reading = await env.call("ayu", "GET", "/api/quality/mine")
    assert status == 200 and reading["unread"] == 1
    (item,) = reading["reviews"]
    assert item["call_id"] == call and item["review"]["score"] == 79.4
    assert item["review"]["comment"] == review["comment"] and item["review"]["deviations"] == {"location": "critical"}
    primary_id = item["review"]["id"]
    calibration_id = detail["sample"]["reviews"][1]["id"]
    status, _ = await env.call("budi", "POST", f"/api/quality/reviews/{primary_id}/acknowledge")
    assert status == 404  # not budi's call
    status, _ = await env.call("ayu", "POST", f"/api/quality/reviews/{calibration_id}/acknowledge")
    assert status == 404  # calibration reviews are not the call-taker's to acknowledge
    status, _ = await env.call("ayu", "POST", f"/api/quality/reviews/{primary_id}/acknowledge")
    assert status == 200
    status, _ = await env.call("ayu", "POST", f"/api/quality/reviews/{primary_id}/acknowledge")
    assert status == 409
    _, reading = await env.call("ayu", "GET", "/api/quality/mine")
    assert reading["unread"] == 0 and reading["reviews"][0]["review"]["acknowledged_at"]
    _, detail = await env.call("sri", "GET", f"/api/quality/calls/{call}")
    assert detail["sample"]["status"] == "acknowledged" and detail["reviewed_by_me"] is True

    # Scores per call-taker and week of the call, JSON and CSV (the primary review counts).
    status, scores = await env.call("sri", "GET", "/api/quality/scores?from=2026-03-01&to=2026-03-31")
    assert status == 200
    assert scores["scores"] == [
        {
            "calltaker_id": env.users["ayu"],
            "calltaker": "Ayu",
            "week": WEEK,
            "reviews": 1,
            "average": 79.4,
            "critical": 1,
        }
    ]
    status, text = await env.call("sri", "GET", "/api/quality/scores.csv?from=2026-03-01&to=2026-03-31")
    assert status == 200
    assert list(csv.reader(io.StringIO(text))) == [
        ["calltaker", "week", "reviews", "average", "critical"],
        ["Ayu", WEEK, "1", "79.4", "1"],
    ]
    status, err = await env.call("sri", "GET", "/api/quality/scores?from=2020-01-01&to=2026-03-31")
    assert status == 422 and "to" in err["fields"]


async def test_calibration_is_blind_until_the_reviewer_has_submitted(env: Env) -> None:
    """A second reviewer sees that a call was reviewed, never the first review's scores, levels, comment or
    the difference, until their own review is in; then everything, the difference included."""
    status, _ = await env.call("sri", "POST", "/api/quality/calls/w0")
    assert status == 201
    first = {"levels": {**FULL, "location": 2}, "deviations": {"location": "critical"}, "comment": "Alamat salah."}
    status, _ = await env.call("sri", "POST", "/api/quality/calls/w0/reviews", first)
    assert status == 201

    for path in ("/api/quality/calls/w0", f"/api/quality/samples?week={WEEK}"):
        status, seen = await env.call("tono", "GET", path)
        assert status == 200
        text = str(seen)
        assert "Alamat" not in text and "critical': True" not in text, (path, seen)
        sample = seen["sample"] if "sample" in seen else next(s for s in seen["samples"] if s["call_id"] == "w0")
        assert sample["blind"] is True and sample["review_count"] == 1 and sample["status"] == "reviewed"
        assert sample["score"] is None and sample["critical"] is None and sample["calibration"] == []
        assert sample.get("reviews", []) == []
    # The first reviewer sees their own review (and is not blind to anything).
    _, own = await env.call("sri", "GET", "/api/quality/calls/w0")
    assert own["sample"]["blind"] is False and own["sample"]["score"] == 87.5 and own["sample"]["reviews"]

    status, body = await env.call("tono", "POST", "/api/quality/calls/w0/reviews", {"levels": FULL})
    assert status == 201, body
    assert body["sample"]["blind"] is False and len(body["sample"]["reviews"]) == 2
    (diff,) = body["sample"]["calibration"]
    assert diff["score_difference"] == 12.5 and diff["critical_agrees"] is False
    _, listed = await env.call("tono", "GET", f"/api/quality/samples?week={WEEK}")
    row = next(s for s in listed["samples"] if s["call_id"] == "w0")
    assert row["blind"] is False and row["score"] == 87.5 and row["calibration"][0]["score_difference"] == 12.5


async def test_manual_sample_and_roles(env: Env) -> None:
    status, body = await env.call("sri", "POST", "/api/quality/calls/w0")
    assert status == 201 and body["sample"]["reason"] == "manual"
    assert body["sample"]["calltaker_id"] == env.users["ayu"]
    status, again = await env.call("sri", "POST", "/api/quality/calls/w0")
    assert status == 201 and again["sample"]["id"] == body["sample"]["id"]
    for missing in ("w9", "nope", "w%2F..%2F1"):  # w9 was abandoned: nothing to review
        status, _ = await env.call("sri", "POST", f"/api/quality/calls/{missing}")
        assert status == 404, missing
    status, _ = await env.call("sri", "POST", "/api/quality/calls/w3/reviews", {"levels": FULL})
    assert status == 404  # not in the sample

    for path in ("/api/quality/samples", "/api/quality/calls/w0", "/api/quality/scores", "/api/quality/scores.csv"):
        status, _ = await env.call("ayu", "GET", path)
        assert status == 403, path
    status, _ = await env.call("ayu", "POST", "/api/quality/calls/w0/reviews", {"levels": FULL})
    assert status == 403
    status, _ = await env.call("sri", "GET", "/api/quality/mine")
    assert status == 403
    status, form = await env.call("ayu", "GET", "/api/quality/form")
    assert status == 200 and sum(s["weight"] for s in form["sections"]) == 100 and form["due_days"] == 5


async def test_review_drafts_are_kept_per_supervisor_and_dropped_on_submit(env: Env) -> None:
    """A review being typed is kept like an intake (``/api/drafts/review.<call id>``), only for supervisors,
    and submitting the review deletes that reviewer's draft, not another reviewer's."""
    long_key = "review." + "f" * 32  # a real call id is 32 hex digits: the key outgrows the old 32 characters
    draft = {"levels": {"greeting": "3", "agencies": "na"}, "deviations": {"location": "major"}, "comment": "Patokan?"}
    status, body = await env.call("sri", "PUT", f"/api/drafts/{long_key}", {"data": draft})
    assert status == 200, body
    status, body = await env.call("sri", "GET", f"/api/drafts/{long_key}")
    assert status == 200 and body["data"] == draft
    status, _ = await env.call("sri", "PUT", f"/api/drafts/review.{'f' * 33}", {"data": draft})
    assert status == 404
    status, _ = await env.call("ayu", "PUT", f"/api/drafts/{long_key}", {"data": draft})
    assert status == 403  # a call-taker types intakes, not reviews
    status, _ = await env.call("sri", "PUT", "/api/drafts/none", {"data": {"notes": "x"}})
    assert status == 403  # and a supervisor's server drafts are reviews only

    status, _ = await env.call("sri", "POST", "/api/quality/calls/w0")
    assert status == 201
    for who in ("sri", "tono"):
        status, _ = await env.call(who, "PUT", "/api/drafts/review.w0", {"data": draft})
        assert status == 200
    status, body = await env.call("sri", "POST", "/api/quality/calls/w0/reviews", {"levels": FULL})
    assert status == 201, body
    _, mine = await env.call("sri", "GET", "/api/drafts/review.w0")
    _, theirs = await env.call("tono", "GET", "/api/drafts/review.w0")
    assert mine["data"] is None and theirs["data"] == draft


def test_openapi_fragment_describes_every_route() -> None:
    import json

    from aiohttp import web

    from callcenter.web import quality_api
    from callcenter.web.openapi import FRAGMENTS

    fragment = json.loads((FRAGMENTS / "quality.json").read_text(encoding="utf-8"))
    served = {(r.path, r.method.lower()) for r in quality_api.routes if isinstance(r, web.RouteDef)}
    assert served == {(path, method) for path, ops in fragment["paths"].items() for method in ops}
    for r in quality_api.routes:
        assert isinstance(r, web.RouteDef) and getattr(r.handler, "roles", None), r
