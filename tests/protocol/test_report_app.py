"""The citizen report app ``/lapor`` over real sockets: the whole app (``create_app``) on SQLite, a
scripted AMI, and Twilio's local recorder, from which each test reads the SMS code it was sent.

Checked: the shell (page, manifest, service worker, icons) and its headers; verification (right,
wrong, expired and too many codes; codes and device tokens never stored as given; the httpOnly
cookie); a report stored and handed to the queue's sink; the limits per number and per address; a
number blocked after three false reports (app only, with a clear message); malformed, oversized and
cross-origin input answered 4xx with nothing stored; no number in the log.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from structlog.testing import capture_logs

from callcenter.app import create_app
from callcenter.config import replace
from callcenter.store import Store, utcnow
from callcenter.store.models import AppDevice, AppNumber, NumberFlag, Report
from callcenter.store.reports import WAITING, ReportLimits
from callcenter.testing.fake_ami import FakeAmi
from callcenter.testing.fake_twilio import FakeTwilio
from callcenter.testing.web import UserSession, make_user, test_config
from callcenter.web.keys import AMI, CODE_LIMITER, LIMITER, REPORTS, STORE
from callcenter.web.report_app import COOKIE

Client = TestClient[web.Request, web.Application]
TYPED = "0812-3456-7890"
NUMBER = "+6281234567890"
OTHER = "+6281298765432"
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"
    b"\x00\x00\x00\x0cIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x9a\xa0\xa0\x00\x00\x00\x00IEND\xaeB`\x82"
)
PHOTO_LIMIT = 4096


class Sink:
    """The queue side's view: every accepted report (what ``callback``'s ReportQueue receives)."""

    def __init__(self) -> None:
        self.reports: list[int] = []

    async def report_accepted(self, report: Report) -> None:
        self.reports.append(report.id)


@dataclass
class Env:
    client: Client
    twilio: FakeTwilio
    store: Store
    sink: Sink
    uploads: Path

    @property
    def app(self) -> web.Application:
        return self.client.app


@pytest.fixture
async def env(tmp_path: Path, fake_ami: FakeAmi) -> AsyncIterator[Env]:
    async with FakeTwilio() as twilio:
        cfg = replace(
            test_config(tmp_path),
            ami={"port": fake_ami.port, "username": fake_ami.username, "secret": fake_ami.secret},
            twilio={
                "account_sid": twilio.account_sid,
                "auth_token": twilio.auth_token,
                "from_number": "+62365100112",
                "api_base": twilio.base_url,
            },
            report={"upload_dir": str(tmp_path / "reports"), "photo_max_bytes": PHOTO_LIMIT},
        )
        app = create_app(cfg)
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            await app[AMI].wait_ready(5)
            sink = Sink()
            app[REPORTS].add_sink(sink)
            yield Env(client, twilio, app[STORE], sink, tmp_path / "reports")
        finally:
            await client.close()


async def rows(store: Store, model: Any) -> list[Any]:
    async def op(session: AsyncSession) -> list[Any]:
        return list(await session.scalars(select(model)))

    return await store.transaction("test_rows", op)


async def count(store: Store, model: Any) -> int:
    async def op(session: AsyncSession) -> int:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)

    return await store.transaction("test_count", op)


def last_code(twilio: FakeTwilio, to: str = NUMBER) -> str:
    """The code in the newest SMS Twilio's recorder got for ``to``."""
    texts = [m for m in twilio.messages() if m.param("To") == to]
    assert texts, "no SMS was sent"
    found = re.search(r"\b([0-9]{6})\b", texts[-1].param("Body"))
    assert found is not None, texts[-1].param("Body")
    return found.group(1)


async def ask_code(client: Client, number: str = TYPED) -> aiohttp.ClientResponse:
    return await client.post("/lapor/api/code", json={"number": number})


async def verified(env: Env, number: str = TYPED, e164: str = NUMBER) -> None:
    """The client's cookie jar holds a device token of ``number``."""
    assert (await ask_code(env.client, number)).status == 202
    resp = await env.client.post("/lapor/api/verify", json={"number": number, "code": last_code(env.twilio, e164)})
    assert resp.status == 200, await resp.text()


def report_form(category: str = "fire", photo: bytes | None = None, **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("category", category)
    for name, value in fields.items():
        form.add_field(name, value)
    if photo is not None:
        form.add_field("photo", photo, filename="foto.png", content_type="image/png")
    return form


async def post_report(client: Client, form: aiohttp.FormData | None = None) -> aiohttp.ClientResponse:
    return await client.post("/lapor/api/reports", data=form or report_form())


def wrong(code: str) -> str:
    return "000000" if code != "000000" else "111111"


# -- the shell ---------------------------------------------------------------------------------------------


async def test_the_installable_shell_is_served_with_its_headers(env: Env) -> None:
    resp = await env.client.get("/lapor", allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (308, "/lapor/")
    page = await env.client.get("/lapor/")
    html = await page.text()
    assert page.status == 200 and page.content_type == "text/html"
    assert '<html lang="id">' in html and 'rel="manifest" href="/lapor/manifest.webmanifest"' in html
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    manifest = await env.client.get("/lapor/manifest.webmanifest")
    assert manifest.content_type == "application/manifest+json"
    spec = await manifest.json(content_type=None)
    assert (spec["start_url"], spec["scope"], spec["display"], spec["lang"]) == (
        "/lapor/",
        "/lapor/",
        "standalone",
        "id",
    )
    for icon in spec["icons"]:
        got = await env.client.get(icon["src"])
        assert got.status == 200 and got.content_type == "image/png" and (await got.read()).startswith(b"\x89PNG")
    worker = await env.client.get("/lapor/sw.js")
    assert worker.content_type == "text/javascript" and worker.headers["Cache-Control"] == "no-cache"
    assert '"/lapor/api/"' in await worker.text()
    assert (await env.client.get("/lapor/../config.py")).status == 404
    assert (await env.client.get("/lapor/report_app.py")).status == 404
    state = await env.client.get("/lapor/api/state")
    body = await state.json()
    assert state.headers["Cache-Control"] == "no-store"
    assert (body["verified"], body["blocked"], body["hold_ms"]) == (False, False, 3000)
    assert [c["code"] for c in body["categories"]][:2] == ["medical", "fire"]
    assert body["categories"][1]["label"] == "Kebakaran"


# -- verification ------------------------------------------------------------------------------------------


async def test_verify_by_sms_code_then_report_reaches_the_queue(env: Env) -> None:
    with capture_logs() as logs:
        resp = await ask_code(env.client)
        assert resp.status == 202
        (sms,) = env.twilio.messages()
        assert sms.param("To") == NUMBER and sms.param("From") == "+62365100112"
        assert "Kode Lapor 112" in sms.param("Body")
        code = last_code(env.twilio)
        # Hashed at rest: neither the code nor anything that contains it.
        (row,) = await rows(env.store, AppNumber)
        assert row.code_hash and code not in (row.code_hash or "") + (row.code_salt or "")

        bad = await env.client.post("/lapor/api/verify", json={"number": TYPED, "code": wrong(code)})
        assert bad.status == 400
        assert (await bad.json())["attempts_left"] == 4 and "Kode salah" in (await bad.json())["pesan"]
        assert COOKIE not in bad.cookies

        ok = await env.client.post("/lapor/api/verify", json={"number": TYPED, "code": code})
        assert ok.status == 200
        cookie = ok.cookies[COOKIE]
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/lapor"
        assert int(cookie["max-age"]) == 365 * 86400
        (device,) = await rows(env.store, AppDevice)
        assert device.token_hash == hashlib.sha256(cookie.value.encode()).hexdigest()
        again = await env.client.post("/lapor/api/verify", json={"number": TYPED, "code": code})
        assert again.status == 400, "a code works once"

        state = await (await env.client.get("/lapor/api/state")).json()
        assert state["verified"] and state["number"].endswith("7890") and NUMBER not in state["number"]

        form = report_form("fire", PNG, latitude="-8.3581234", longitude="114.6170123", accuracy="12.4")
        created = await post_report(env.client, form)
        assert created.status == 201, await created.text()
        report_id = (await created.json())["report"]["id"]
    (report,) = await rows(env.store, Report)
    assert (report.id, report.number, report.category, report.status) == (report_id, NUMBER, "fire", WAITING)
    assert (report.latitude, report.longitude, report.accuracy_m) == (-8.3581234, 114.6170123, 12.4)
    assert report.client_group == "127.0.0.1" and report.device_id == device.id
    assert report.photo and (env.uploads / report.photo).read_bytes() == PNG
    assert env.sink.reports == [report_id]
    # Without a fix the report still goes.
    assert (await post_report(env.client, report_form("medical"))).status == 201
    assert (await rows(env.store, Report))[-1].latitude is None
    # Plain logs: a reference, never the number.
    assert "81234567890" not in repr(logs) and any(e["event"] == "lapor.reported" for e in logs)


async def test_expired_and_too_many_codes(env: Env) -> None:
    assert (await ask_code(env.client)).status == 202
    code = last_code(env.twilio)
    for left in (4, 3, 2, 1):
        resp = await env.client.post("/lapor/api/verify", json={"number": TYPED, "code": wrong(code)})
        assert (resp.status, (await resp.json())["attempts_left"]) == (400, left)
    fifth = await env.client.post("/lapor/api/verify", json={"number": TYPED, "code": wrong(code)})
    assert fifth.status == 429
    right = await env.client.post("/lapor/api/verify", json={"number": TYPED, "code": code})
    assert right.status == 429 and COOKIE not in right.cookies, "the right code after too many wrong ones"

    assert (await ask_code(env.client)).status == 202
    code = last_code(env.twilio)

    async def expire(session: AsyncSession) -> None:
        await session.execute(update(AppNumber).values(code_expires_at=utcnow() - timedelta(seconds=1)))

    await env.store.transaction("test_expire", expire)
    late = await env.client.post("/lapor/api/verify", json={"number": TYPED, "code": code})
    assert late.status == 410 and "kedaluwarsa" in (await late.json())["pesan"]
    assert await count(env.store, AppDevice) == 0


# -- limits and the block ----------------------------------------------------------------------------------


async def test_codes_are_limited_per_number_and_per_address(env: Env) -> None:
    env.app[CODE_LIMITER].limit = 4
    for _ in range(3):
        assert (await ask_code(env.client)).status == 202
    fourth = await ask_code(env.client)
    assert fourth.status == 429 and "Terlalu banyak kode" in (await fourth.json())["pesan"]
    assert len(env.twilio.messages()) == 3
    # This address has asked 4 times now (3 sent, 1 refused for the number): its fifth is refused.
    other = await ask_code(env.client, OTHER)
    assert other.status == 429 and len(env.twilio.messages()) == 3


async def test_reports_are_limited_per_number_and_per_address(env: Env) -> None:
    await verified(env)
    env.app[REPORTS].limits = ReportLimits(per_number=2, per_client=10)
    assert [(await post_report(env.client)).status for _ in range(3)] == [201, 201, 429]
    assert await count(env.store, Report) == 2
    env.app[REPORTS].limits = ReportLimits(per_number=10, per_client=2)
    refused = await post_report(env.client)
    assert refused.status == 429 and "telepon 112" in (await refused.json())["pesan"]
    assert await count(env.store, Report) == 2 and len(env.sink.reports) == 2
    # Every request of an address counts against the public limit.
    env.app[LIMITER].limit = 1
    assert (await env.client.get("/lapor/api/state")).status == 429


async def test_three_false_reports_block_the_number_from_the_app_only(env: Env) -> None:
    await verified(env)
    ids = [(await (await post_report(env.client)).json())["report"]["id"] for _ in range(3)]
    reports = env.app[REPORTS]
    for report_id, kind in zip(ids, ("prank", "hoax", "prank"), strict=True):
        assert await reports.classify(report_id, kind, user_id=None, username="ayu") is not None
    refused = await post_report(env.client)
    body = await refused.json()
    assert refused.status == 403 and body["blocked"] is True
    assert "diblokir" in body["pesan"] and "tetap dapat menelepon 112" in body["pesan"]
    assert await count(env.store, Report) == 3
    state = await (await env.client.get("/lapor/api/state")).json()
    assert state["blocked"] is True and "112" in state["pesan"]
    code = await ask_code(env.client)
    assert code.status == 403 and len(env.twilio.messages()) == 1, "no SMS for a blocked number"
    # The same flags as classified calls (what routing reads); calling 112 is not refused by anything here.
    flags = await rows(env.store, NumberFlag)
    assert sorted(f.kind for f in flags) == ["hoax", "prank", "prank"] and {f.number for f in flags} == {NUMBER}
    assert env.app[STORE].flags.count(NUMBER, utcnow() - timedelta(days=1)) == 3


# -- bad input ---------------------------------------------------------------------------------------------


async def test_malformed_and_oversized_input_is_refused_and_nothing_stored(env: Env) -> None:
    client = env.client
    assert (
        await client.post("/lapor/api/code", data="{not json", headers={"Content-Type": "application/json"})
    ).status == 400
    assert (await client.post("/lapor/api/code", json=["+6281234567890"])).status == 400
    # 021… is a landline (no SMS); +44 7… a British mobile: codes are never texted abroad (SMS pumping).
    for number in ("abc", "", "112", "+62 21 555 0100", "9" * 40, "+44 7700 900123"):
        resp = await ask_code(client, number)
        assert resp.status == 422, number
        assert "nomor ponsel" in (await resp.json())["pesan"]
    assert (await ask_code(client, 12345)).status == 422  # type: ignore[arg-type]
    assert env.twilio.messages() == [] and await count(env.store, AppNumber) == 0
    for code in ("12ab56", "1234567", "", None, "١٢٣٤٥٦"):
        resp = await client.post("/lapor/api/verify", json={"number": TYPED, "code": code})
        assert resp.status == 422, code

    # No device: nothing is read, nothing stored.
    assert (await post_report(client)).status == 401
    forged = await client.post("/lapor/api/reports", data=report_form(), headers={"Cookie": f"{COOKIE}=forged-token"})
    assert forged.status == 401

    await verified(env)
    cases: list[tuple[aiohttp.FormData | dict[str, str], int]] = [
        (report_form("not-a-category"), 422),
        (report_form("fire", latitude="-8.35"), 422),  # half a position
        (report_form("fire", latitude="95", longitude="114.6"), 422),
        (report_form("fire", latitude="-8.35", longitude="114.6", accuracy="-3"), 422),
        (report_form("fire", note="hello"), 422),  # unknown field
        (report_form("fire", b"GIF89a" + b"\0" * 64), 415),
        (report_form("fire", PNG + b"\0" * PHOTO_LIMIT), 413),
        (report_form("fire", latitude="1" * 100, longitude="114.6"), 413),
        (report_form("fire", PNG, latitude="1" * 100, longitude="114.6"), 413),  # the same, multipart
        ({"category": "fire", "photo": "x"}, 422),  # a plain form has no photo
    ]
    for form, status in cases:
        resp = await client.post("/lapor/api/reports", data=form)
        assert resp.status == status, (status, await resp.text())
        assert "pesan" in await resp.json()
    big = await client.post(
        "/lapor/api/reports",
        data=b"x" * (PHOTO_LIMIT + 70 * 1024),
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert big.status == 413
    for body in ({"category": "fire"}, "category=fire"):
        other_type = await client.post("/lapor/api/reports", json=body)
        assert other_type.status == 415
    assert await count(env.store, Report) == 0 and env.sink.reports == []
    assert not env.uploads.exists() or [p.name for p in env.uploads.iterdir()] == []

    # Another site cannot post for the citizen (its Origin is refused before anything is read).
    cross = await client.post("/lapor/api/reports", data=report_form(), headers={"Origin": "https://evil.example"})
    assert cross.status == 403 and await count(env.store, Report) == 0


async def test_forget_revokes_the_device(env: Env) -> None:
    await verified(env)
    assert (await post_report(env.client)).status == 201
    token = env.client.session.cookie_jar.filter_cookies(env.client.make_url("/lapor/api/state"))[COOKIE].value
    assert (await env.client.post("/lapor/api/forget")).status == 200
    reuse = await env.client.post("/lapor/api/reports", data=report_form(), headers={"Cookie": f"{COOKIE}={token}"})
    assert reuse.status == 401


# -- the centre's side -------------------------------------------------------------------------------------


async def test_the_centre_reads_classifies_and_closes_reports(env: Env) -> None:
    await verified(env)
    first = (await (await post_report(env.client, report_form("crime", PNG))).json())["report"]["id"]
    others = [(await (await post_report(env.client)).json())["report"]["id"] for _ in range(2)]
    ayu = await UserSession(env.client).login(await make_user(env.store, "ayu", "calltaker"))
    officer = await UserSession(env.client).login(await make_user(env.store, "damkar1", "agency", agency="damkar"))
    try:
        assert (await env.client.get(f"/api/reports/{first}")).status == 401  # the citizen's jar: no session
        assert (await officer.get(f"/api/reports/{first}"))[0] == 403
        assert (await officer.post(f"/api/reports/{first}/classify", {"classification": "prank"}))[0] == 403

        status, body = await ayu.get("/api/reports")
        assert status == 200 and [r["id"] for r in body["reports"]] == [first, *others]
        status, body = await ayu.get(f"/api/reports/{first}")
        assert status == 200
        assert (body["report"]["number"], body["report"]["category"]) == (NUMBER, "crime")
        status, photo, kind = await ayu.get_raw(f"/api/reports/{first}/photo")
        assert (status, photo, kind) == (200, PNG, "image/png")
        assert (await ayu.get_raw(f"/api/reports/{others[0]}/photo"))[0] == 404
        for missing in ("999999", "abc", "99999999999999999999"):
            assert (await ayu.get(f"/api/reports/{missing}"))[0] == 404

        assert (await ayu.post(f"/api/reports/{first}/classify", {"classification": "joke"}))[0] == 422
        assert (await ayu.post(f"/api/reports/{first}/classify", ["prank"]))[0] == 400
        for n, report_id in enumerate([first, *others], start=1):
            status, body = await ayu.post(f"/api/reports/{report_id}/classify", {"classification": "hoax"})
            assert status == 200 and (body["false_reports"], body["blocked"]) == (n, n == 3)
            assert body["report"]["classification"] == "hoax"
        refused = await post_report(env.client)
        assert refused.status == 403 and (await refused.json())["blocked"] is True

        assert (await ayu.post(f"/api/reports/{first}/close"))[0] == 200
        assert (await ayu.post(f"/api/reports/{first}/close"))[0] == 409

        # A supervisor reviews the block and lifts it (a call-taker cannot).
        assert (await ayu.get("/api/report-numbers/blocked"))[0] == 403
        assert (await ayu.post("/api/report-numbers/unblock", {"number": TYPED}))[0] == 403
        sri = await UserSession(env.client).login(await make_user(env.store, "sri", "supervisor"))
        status, body = await sri.get("/api/report-numbers/blocked")
        assert status == 200 and [(n["number"], n["false_reports"]) for n in body["numbers"]] == [(NUMBER, 3)]
        assert (await sri.post("/api/report-numbers/unblock", {"number": "abc"}))[0] == 422
        assert (await sri.post("/api/report-numbers/unblock", {"number": OTHER}))[0] == 404
        assert await sri.post("/api/report-numbers/unblock", {"number": TYPED}) == (
            200,
            {"number": NUMBER, "blocked": False},
        )
        assert (await sri.get("/api/report-numbers/blocked"))[1]["numbers"] == []
        await sri.close()
        assert (await post_report(env.client)).status == 201
    finally:
        await ayu.close()
        await officer.close()


def test_openapi_describes_every_report_route() -> None:
    from callcenter.web import report_app, reports_api
    from callcenter.web.openapi import build_spec

    spec = build_spec()
    api = {
        (r.path, r.method.lower())
        for module in (report_app, reports_api)
        for r in module.routes
        if isinstance(r, web.RouteDef) and "/api/" in r.path
    }
    described = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert api and api <= described
    for path, method in api:
        if path.startswith("/lapor/"):
            assert spec["paths"][path][method]["security"] == [], "the citizen's app has no console session"


async def test_retention_deletes_old_reports_photos_and_idle_numbers(env: Env) -> None:
    from callcenter.config import RetentionConfig
    from callcenter.supervision.retention import run_retention

    await verified(env)
    assert (await post_report(env.client, report_form("fire", PNG))).status == 201
    (report,) = await rows(env.store, Report)
    photo = env.uploads / report.photo
    assert photo.exists()
    window, uploads = RetentionConfig(personal_days=365), str(env.uploads)
    skipped = await run_retention(env.store, window, now=utcnow() + timedelta(days=400))
    assert skipped.reports_deleted == 0 and any("report" in s for s in skipped.skipped)
    kept = await run_retention(env.store, window, report_dir=uploads, now=utcnow())
    assert (kept.reports_deleted, kept.app_numbers_deleted) == (0, 0) and photo.exists()
    later = utcnow() + timedelta(days=400)
    dry = await run_retention(env.store, window, report_dir=uploads, dry_run=True, now=later)
    assert (dry.reports_deleted, dry.report_photos_deleted, dry.app_devices_deleted) == (1, 1, 1)
    assert photo.exists() and await count(env.store, Report) == 1
    done = await run_retention(env.store, window, report_dir=uploads, now=later)
    assert (done.reports_deleted, done.report_photos_deleted, done.app_devices_deleted) == (1, 1, 1)
    assert done.app_numbers_deleted == 1 and done.errors == []
    assert not photo.exists()
    for model in (Report, AppDevice, AppNumber):
        assert await count(env.store, model) == 0, model


async def test_classifying_a_reports_queue_call_counts_against_the_app_once_flagged(env: Env) -> None:
    """The call-taker classifies the pop as for any call: the report's queue call (``report-<id>-<n>-q``,
    caller id the verified number) gets flagged by the call path, the report gets the classification and
    the false report counts, without a second flag."""
    from callcenter.store import Calls

    await verified(env)
    ids = [(await (await post_report(env.client)).json())["report"]["id"] for _ in range(3)]
    calls = Calls(env.store)
    call_ids = [
        await calls.open_call(
            uniqueid=f"report-{report_id}-1733500000-q",
            arrived_at=utcnow(),
            routed_by="report",
            caller_raw=NUMBER,
            caller_number=NUMBER,
        )
        for report_id in ids
    ]
    ayu = await UserSession(env.client).login(await make_user(env.store, "ayu", "calltaker"))
    try:
        for n, call_id in enumerate(call_ids, start=1):
            status, body = await ayu.post(f"/api/calls/{call_id}/classification", {"classification": "prank"})
            assert status == 200 and body["report"] == {"id": ids[n - 1], "false_reports": n, "blocked": n == 3}
        # A misclick taken back: the call's flag is withdrawn and the report's count with it.
        status, body = await ayu.post(f"/api/calls/{call_ids[2]}/classification", {"classification": "genuine"})
        assert status == 200 and body["report"]["blocked"] is False
        status, body = await ayu.post(f"/api/calls/{call_ids[2]}/classification", {"classification": "hoax"})
        assert body["report"]["blocked"] is True
    finally:
        await ayu.close()
    flags = await rows(env.store, NumberFlag)
    assert sorted(f.kind for f in flags) == ["hoax", "prank", "prank"], "one flag per call, none added for the report"
    assert [r.classification for r in await rows(env.store, Report)] == ["prank", "prank", "hoax"]
    assert (await post_report(env.client)).status == 403
