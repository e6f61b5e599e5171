"""Alerts to agency leaders through the real ``twilio`` client against the fake Twilio recorder, with the
app serving Twilio's signed status callbacks: WhatsApp first (the documented ``whatsapp:`` request
shape), SMS when WhatsApp is refused or reports failure, nothing of a women-and-children case in the
text, each alert once, and the regional head's daily summary."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.app import create_app
from callcenter.config import replace
from callcenter.store import Store, utcnow
from callcenter.store.models import Call, Dispatch, Incident, LeaderAlert
from callcenter.supervision.leaders import LeaderAlerts, LeadersConfigError, parse_leaders
from callcenter.testing.fake_twilio import FakeTwilio
from callcenter.testing.rows import dispatch_row, incident_row
from callcenter.testing.sipp import free_port
from callcenter.testing.web import test_config
from callcenter.web.keys import LEADER_ALERTS, STORE, TZ_OFFSET

WA_FROM = "+14155238886"
SMS_FROM = "+62365100112"
HEAD = "+6281100000001"
CHIEF = "+6281100000002"
DPPPA = "+6281100000003"
REGENT = "+6281100000009"
LEADERS = f"""
[[leader]]
name = "Kepala Damkar"
role = "head"
agency = "damkar"
number = "{HEAD}"

[[leader]]
name = "Kasi Operasi Damkar"
role = "section_chief"
agency = "damkar"
number = "{CHIEF}"
priorities = ["critical"]
channels = ["sms"]

[[leader]]
name = "Kepala DPPPA"
role = "head"
agency = "dpppa"
number = "{DPPPA}"

[[leader]]
name = "Bupati"
role = "regional_head"
number = "{REGENT}"
"""


@dataclass
class Env:
    client: TestClient[Any, Any]
    fake: FakeTwilio
    store: Store
    alerts: LeaderAlerts

    async def rows(self) -> list[LeaderAlert]:
        async def op(session: AsyncSession) -> list[LeaderAlert]:
            return list(await session.scalars(select(LeaderAlert).order_by(LeaderAlert.id)))

        return await self.store.transaction("rows", op)


@pytest.fixture
async def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    # The app's own poll loop stays out of the way: each test polls when it means to.
    monkeypatch.setattr("callcenter.wiring.LEADER_POLL", 3600.0)
    leaders = tmp_path / "leaders.toml"
    leaders.write_text(LEADERS, encoding="utf-8")
    port = free_port("tcp")
    async with FakeTwilio() as fake:
        cfg = replace(
            test_config(tmp_path),
            twilio={
                "account_sid": fake.account_sid,
                "auth_token": fake.auth_token,
                "from_number": SMS_FROM,
                "whatsapp_from": WA_FROM,
                "public_url": f"http://127.0.0.1:{port}",
                "api_base": fake.base_url,
            },
            supervision={"leaders_file": str(leaders), "daily_summary_hour": 7},
        )
        app = create_app(cfg)
        app[TZ_OFFSET] = timedelta(hours=8)
        client = TestClient(TestServer(app, port=port))
        await client.start_server()
        try:
            yield Env(client, fake, app[STORE], app[LEADER_ALERTS])
        finally:
            await client.close()


async def seed_incident(store: Store, reference: str, *, category: str, priority: str, agency: str) -> int:
    async def op(session: AsyncSession) -> int:
        now = utcnow()
        row = incident_row(
            reference,
            now,
            category=category,
            priority=priority,
            district="Negara",
            reporter_name="Made Wirawan",
            callback_number="+6281234567890",
            address="Jl. Udayana 12",
        )
        session.add(row)
        await session.flush()
        session.add(dispatch_row(row.id, agency, now))
        return row.id

    return await store.transaction("seed", op)


async def test_whatsapp_first_then_sms_when_undelivered(env: Env) -> None:
    incident = await seed_incident(env.store, "112-20261206-0001", category="fire", priority="high", agency="damkar")
    assert await env.alerts.poll() == 1
    assert await env.alerts.poll() == 0  # once
    ((request, sid),) = env.fake.created()
    assert request.param("To") == f"whatsapp:{HEAD}" and request.param("From") == f"whatsapp:{WA_FROM}"
    body = request.param("Body")
    assert body == (
        "112 112-20261206-0001: Kebakaran di Kec. Negara, prioritas Tinggi. "
        "Diteruskan ke Damkar Jembrana (Dinas Pemadam Kebakaran dan Penyelamatan)."
    )
    for secret in ("Made", "6281234567890", "Udayana"):
        assert secret not in body
    (row,) = await env.rows()
    assert request.param("StatusCallback") == f"{env.alerts.public_url}/api/twilio/message-status?alert={row.id}"
    assert row.channel == "whatsapp" and row.status == "queued" and row.sid == sid

    # Twilio's signed callbacks move the status; a forged one is refused.
    assert await env.fake.report(sid, "sent") == 204
    assert await env.fake.report(sid, "failed", auth_token="not-the-token") == 403
    assert (await env.rows())[0].status == "sent"

    # The service level is breached: WhatsApp again; it is undelivered, so the same text follows by SMS.
    async def breach(session: AsyncSession) -> None:
        await session.execute(update(Incident).where(Incident.id == incident).values(sla_breached_at=utcnow()))

    await env.store.transaction("breach", breach)
    assert await env.alerts.poll() == 1
    (_, breach_sid) = env.fake.created()[-1]
    assert "batas waktu layanan Kebakaran di Kec. Negara terlewati" in env.fake.created()[-1][0].param("Body")
    assert await env.fake.report(breach_sid, "undelivered", error_code="63024") == 204
    sms, sms_sid = env.fake.created()[-1]
    assert sms.param("To") == HEAD and sms.param("From") == SMS_FROM
    assert sms.param("Body") == env.fake.created()[-2][0].param("Body")
    assert await env.fake.report(breach_sid, "undelivered", error_code="63024") == 204
    assert len(env.fake.created()) == 3  # one SMS, not two
    rows = await env.rows()
    assert [(r.event, r.channel, r.status) for r in rows] == [
        ("dispatched", "whatsapp", "sent"),
        ("sla_breached", "whatsapp", "undelivered"),
        ("sla_breached", "sms", "queued"),
    ]
    assert rows[2].fallback_of == rows[1].id and rows[1].error == "63024"
    assert await env.fake.report(sms_sid, "delivered") == 204

    # Resolved: the head hears that too; the chief (critical only, SMS) has heard nothing all along.
    async def resolve(session: AsyncSession) -> None:
        await session.execute(
            update(Dispatch).where(Dispatch.incident_id == incident).values(status="resolved", updated_at=utcnow())
        )

    await env.store.transaction("resolve", resolve)
    assert await env.alerts.poll() == 1
    assert (
        env.fake.created()[-1][0]
        .param("Body")
        .endswith("selesai ditangani Damkar Jembrana (Dinas Pemadam Kebakaran dan Penyelamatan).")
    )
    assert all(CHIEF not in r.param("To") for r, _ in env.fake.created())


async def test_critical_case_reaches_the_chief_by_sms_and_whatsapp_refusal_falls_back(env: Env) -> None:
    await seed_incident(env.store, "112-20261206-0002", category="fire", priority="critical", agency="damkar")
    env.fake.fail_next(400, 63016, "Failed to send freeform message because you are outside the allowed window.")
    assert await env.alerts.poll() == 2
    sent = [(r.param("To"), r.param("From")) for r, _ in env.fake.created()]
    # The head's WhatsApp was refused at once (no SID): SMS instead; the chief wants SMS only.
    assert sorted(sent) == sorted([(HEAD, SMS_FROM), (CHIEF, SMS_FROM)])
    refused = [r for r in env.fake.messages() if r.param("To") == f"whatsapp:{HEAD}"]
    assert len(refused) == 1
    rows = await env.rows()
    assert {(r.recipient, r.channel, r.status) for r in rows} == {
        (HEAD, "whatsapp", "failed"),
        (HEAD, "sms", "queued"),
        (CHIEF, "sms", "queued"),
    }


async def test_women_and_children_cases_carry_no_details(env: Env) -> None:
    await seed_incident(
        env.store, "112-20261206-0003", category="violence_women_children", priority="critical", agency="dpppa"
    )
    assert await env.alerts.poll() == 1
    ((request, _),) = env.fake.created()
    assert request.param("To") == f"whatsapp:{DPPPA}"
    assert request.param("Body") == (
        "112 112-20261206-0003: laporan perlindungan perempuan dan anak diteruskan ke "
        "DPPPA / P2TP2A Kabupaten Jembrana (Perlindungan Perempuan dan Anak). Rincian hanya di konsol 112."
    )


async def test_daily_summary_for_the_regional_head_once(env: Env) -> None:
    offset = timedelta(hours=8)
    today = (datetime.now(UTC) + offset).date()
    yesterday = datetime.combine(today - timedelta(days=1), datetime.min.time(), tzinfo=UTC) - offset

    async def seed(session: AsyncSession) -> None:
        for i, klass in enumerate(("genuine", "genuine", "prank", None)):
            at = yesterday + timedelta(hours=10 + i)
            session.add(
                Call(
                    id=f"d{i}",
                    uniqueid=f"u-d{i}",
                    routed_by="agi",
                    status="completed",
                    arrived_at=at,
                    answered_at=at if i < 3 else None,
                    classification=klass,
                )
            )
        at = yesterday + timedelta(hours=10)
        session.add(
            incident_row(
                "112-Y-1",
                at,
                category="fire",
                sla_due_at=at + timedelta(minutes=5),
                sla_met_at=at + timedelta(minutes=3),
            )
        )
        session.add(incident_row("112-Y-2", at, category="medical", sla_due_at=at + timedelta(minutes=5)))
        session.add(incident_row("112-Y-3", at, category="fire"))

    await env.store.transaction("seed", seed)
    morning = datetime.combine(today, datetime.min.time(), tzinfo=UTC) - offset + timedelta(hours=8)
    assert await env.alerts.daily(morning - timedelta(hours=2)) == 0  # before the summary hour
    assert await env.alerts.daily(morning) == 1
    assert await env.alerts.daily(morning + timedelta(hours=1)) == 0
    ((request, _),) = env.fake.created()
    assert request.param("To") == f"whatsapp:{REGENT}"
    day = (today - timedelta(days=1)).strftime("%d-%m-%Y")
    assert request.param("Body") == (
        f"Ringkasan 112 {day}: 4 panggilan (3 dijawab); laporan: Kebakaran 2, Ambulans / medis 1; "
        "iseng/hoaks/diam 33%; batas waktu layanan terpenuhi 1/2 (50%)."
    )


def test_bad_leaders_entries_are_named() -> None:
    good = {"name": "A", "role": "head", "agency": "damkar", "number": "+6281100000001"}
    assert parse_leaders({"leader": [good]}, ["damkar"])[0].channels == ("whatsapp", "sms")
    for bad, word in (
        ({**good, "number": "0811"}, "number"),
        ({**good, "agency": "nasa"}, "agency"),
        ({**good, "role": "boss"}, "role"),
        ({**good, "categories": ["fire", "ufo"]}, "categories"),
        ({**good, "channels": ["pigeon"]}, "channels"),
        ({**good, "mood": "x"}, "unknown"),
    ):
        with pytest.raises(LeadersConfigError, match=word):
            parse_leaders({"leader": [bad]}, ["damkar"])
