"""Quotas: a logged-in session (a careless script, a stolen cookie) cannot fill the disk with drafts or
photos, turn the PBX into a dialler of past callers, or text a citizen again and again.

Against the real app (``create_app``) and a SQLite store; each quota is shown both ways: what a normal
shift does still works, the excess is refused (429/409) or, for drafts, the stalest is dropped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.app import create_app
from callcenter.config import replace
from callcenter.store import Store, utcnow
from callcenter.store import dispatches as dispatch_store
from callcenter.store.incidents import MAX_DRAFTS_PER_USER
from callcenter.store.models import Call, Callback, Draft, Rating
from callcenter.supervision.callbacks import MAX_PER_CALL
from callcenter.supervision.ratings import MAX_SMS_PER_INCIDENT
from callcenter.testing.rows import dispatch_row, incident_row
from callcenter.testing.wait import until
from callcenter.testing.web import login_session, make_user, test_config
from callcenter.web.keys import STORE

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"
    b"\x00\x00\x00\x0cIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x9a\xa0\xa0\x00\x00\x00\x00IEND\xaeB`\x82"
)


@dataclass
class Env:
    app: web.Application
    client: TestClient[web.Request, web.Application]
    store: Store

    def url(self, path: str) -> str:
        return str(self.client.make_url(path))

    async def session(self, username: str) -> aiohttp.ClientSession:
        return await login_session(str(self.client.make_url("")).rstrip("/"), username)

    async def count(self, model: type[Any], *where: Any) -> int:
        async def op(session: AsyncSession) -> int:
            return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)

        return await self.store.transaction("count", op)

    async def add(self, *rows: Any) -> list[Any]:
        async def op(session: AsyncSession) -> list[Any]:
            session.add_all(rows)
            await session.flush()
            return list(rows)

        return await self.store.transaction("add", op)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    cfg = replace(test_config(tmp_path), dispatch={"upload_dir": str(tmp_path / "uploads")})
    app = create_app(cfg)
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
    await client.start_server()
    store = app[STORE]
    await make_user(store, "ayu", "calltaker", interface="PJSIP/taker1")
    await make_user(store, "sri", "supervisor")
    await make_user(store, "damkar1", "agency", agency="damkar")
    try:
        yield Env(app, client, store)
    finally:
        await client.close()


async def test_drafts_keep_the_newest_per_user(env: Env) -> None:
    async with await env.session("ayu") as ayu:
        for n in range(MAX_DRAFTS_PER_USER + 10):
            async with ayu.put(env.url(f"/api/drafts/call-{n:03d}"), json={"data": {"notes": "x" * 1000}}) as r:
                assert r.status == 200
        assert await env.count(Draft) == MAX_DRAFTS_PER_USER
        async with ayu.get(env.url(f"/api/drafts/call-{MAX_DRAFTS_PER_USER + 9:03d}")) as r:
            assert (await r.json())["data"] == {"notes": "x" * 1000}  # what is typed now survives
        async with ayu.get(env.url("/api/drafts/call-000")) as r:
            assert (await r.json())["data"] is None  # the stalest went


async def test_repeat_updates_and_photos_per_dispatch_are_bounded(
    env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(dispatch_store, "MAX_PHOTOS", 2)
    monkeypatch.setattr(dispatch_store, "MAX_UPDATES", 4)
    now = utcnow()
    [incident] = await env.add(incident_row("112-Q-1", now))
    [dispatch] = await env.add(dispatch_row(incident.id, "damkar", now, status="on_scene"))

    async def report(session: aiohttp.ClientSession, photo: bool) -> int:
        form = aiohttp.FormData()
        form.add_field("status", "on_scene")
        form.add_field("note", "masih di lokasi")
        if photo:
            form.add_field("photo", PNG, filename="a.png", content_type="image/png")
        async with session.post(env.url(f"/api/dispatches/{dispatch.id}/updates"), data=form) as r:
            return r.status

    async with await env.session("damkar1") as officer:
        assert [await report(officer, True) for _ in range(3)] == [201, 201, 429]
        assert await report(officer, False) == 201  # a note without a photo still goes in
        assert await report(officer, False) == 201
        assert await report(officer, False) == 429
    photos = list((tmp_path / "uploads").glob("*.png"))
    assert len(photos) == 2, photos  # the refused photo was not kept on disk


async def test_call_backs_only_for_abandoned_calls_and_a_few_times(env: Env) -> None:
    at = utcnow() - timedelta(minutes=5)
    answered = Call(id="c-answered", uniqueid="u1", caller_number="+6281234567890", arrived_at=at, status="completed")
    gave_up = Call(id="c-abandoned", uniqueid="u2", caller_number="+6281234567891", arrived_at=at, status="abandoned")
    await env.add(answered, gave_up)
    async with await env.session("ayu") as ayu:
        async with ayu.post(env.url("/api/calls/c-answered/callback")) as r:
            assert r.status == 409 and "abandoned" in (await r.json())["error"]
        for _ in range(MAX_PER_CALL):
            async with ayu.post(env.url("/api/calls/c-abandoned/callback")) as r:
                assert r.status == 202
            # AMI is down in this test: each call-back fails at once, so the next may be asked.
            await until(lambda: no_running(env), timeout=5, what="call-back settled")
        async with ayu.post(env.url("/api/calls/c-abandoned/callback")) as r:
            assert r.status == 429
    assert await env.count(Callback, Callback.call_id == "c-abandoned") == MAX_PER_CALL
    assert await env.count(Callback, Callback.call_id == "c-answered") == 0


async def no_running(env: Env) -> bool:
    return await env.count(Callback, Callback.outcome == "calling") == 0


async def test_rating_texts_per_incident_are_bounded(env: Env) -> None:
    now = utcnow()
    [incident] = await env.add(incident_row("112-Q-2", now, callback_number="+6281234567892"))
    # No resolved dispatch: the automatic rating (which would count too) stays out of this test.
    async with await env.session("sri") as sri:
        statuses = []
        for _ in range(MAX_SMS_PER_INCIDENT + 1):
            async with sri.post(env.url(f"/api/incidents/{incident.id}/rating"), json={"via": "sms"}) as r:
                statuses.append(r.status)
    assert statuses == [202] * MAX_SMS_PER_INCIDENT + [429]
    assert await env.count(Rating, Rating.incident_id == incident.id, Rating.via == "sms") == MAX_SMS_PER_INCIDENT
