"""Retention against a real store (SQLite; PostgreSQL too when the throwaway server is available):
old recordings are deleted and unlinked, old personal fields blanked, newer rows untouched, a dry run
changes nothing, and a real run leaves one ``access_log`` entry."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.cli import main as cli_main
from callcenter.config import RetentionConfig
from callcenter.store import Store, utcnow
from callcenter.store.models import AccessLog, Call, Incident, IncidentAudit
from callcenter.supervision.retention import ANONYMISED, run_retention

CONFIG = RetentionConfig(recordings_days=90, personal_days=365)
NOW = utcnow()


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "postgresql":
        try:
            pg = request.getfixturevalue("postgres")
        except Exception as exc:  # no PostgreSQL binaries on this machine
            pytest.skip(f"no throwaway PostgreSQL: {exc}")
        url = pg.create_database(f"ret_{uuid.uuid4().hex[:12]}")
    else:
        url = f"sqlite+aiosqlite:///{tmp_path}/ret.db"
    s = Store.from_url(url, retry_for=2)
    await s.upgrade()
    yield s
    await s.close()


async def add_call(store: Store, root: Path, age_days: int, *, with_file: bool = True) -> tuple[str, Path]:
    call_id = uuid.uuid4().hex[:16]
    recording = f"/srv/cc-test/recordings/{call_id}.wav"
    host = root / recording.lstrip("/")
    if with_file:
        host.parent.mkdir(parents=True, exist_ok=True)
        host.write_bytes(b"RIFF....WAVE")
    at = NOW - timedelta(days=age_days)

    async def op(session: AsyncSession) -> None:
        session.add(
            Call(
                id=call_id,
                uniqueid=f"u-{call_id}",
                caller_raw="081234567890",
                caller_number="+6281234567890",
                arrived_at=at,
                recording=recording,
                status="completed",
            )
        )
        incident = Incident(
            reference=f"112-{call_id}",
            call_id=call_id,
            category="fire",
            priority="high",
            reporter_name="Made Wirawan",
            callback_number="+6281234567890",
            address="Jl. Udayana 12",
            landmark="dekat pura",
            notes="rumah biru",
            latitude=-8.36,
            longitude=114.62,
            created_at=at,
            updated_at=at,
        )
        session.add(incident)
        await session.flush()
        session.add(
            IncidentAudit(
                incident_id=incident.id,
                at=at,
                action="update",
                changes={"reporter_name": ["Made", "Made Wirawan"], "category": ["medical", "fire"]},
            )
        )

    await store.transaction("t", op)
    return call_id, host


async def snapshot(store: Store, call_id: str) -> tuple[Call, Incident, list[IncidentAudit]]:
    async def op(session: AsyncSession) -> tuple[Call, Incident, list[IncidentAudit]]:
        call = await session.get(Call, call_id)
        incident = await session.scalar(select(Incident).where(Incident.call_id == call_id))
        assert call is not None and incident is not None
        audits = list(await session.scalars(select(IncidentAudit).where(IncidentAudit.incident_id == incident.id)))
        return call, incident, audits

    return await store.transaction("t", op)


async def access_log(store: Store) -> list[AccessLog]:
    async def op(session: AsyncSession) -> list[AccessLog]:
        return list(await session.scalars(select(AccessLog)))

    return await store.transaction("t", op)


def personal_kept(call: Call, incident: Incident) -> bool:
    return (
        call.caller_number == "+6281234567890"
        and incident.reporter_name == "Made Wirawan"
        and incident.address == "Jl. Udayana 12"
        and incident.latitude is not None
    )


async def test_retention_run_and_dry_run(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "chroot"
    fresh, fresh_file = await add_call(store, root, age_days=10)
    mid, mid_file = await add_call(store, root, age_days=100)  # recording old, personal data not yet
    old, old_file = await add_call(store, root, age_days=400)  # both windows passed
    gone, _ = await add_call(store, root, age_days=200, with_file=False)

    dry = await run_retention(store, CONFIG, recordings_root=str(root), dry_run=True, now=NOW)
    assert (dry.recordings_deleted, dry.recordings_missing) == (2, 1)
    assert (dry.calls_anonymised, dry.incidents_anonymised) == (1, 1)
    assert mid_file.exists() and old_file.exists() and fresh_file.exists()
    for call_id in (fresh, mid, old, gone):
        call, incident, _ = await snapshot(store, call_id)
        assert call.recording is not None and personal_kept(call, incident)
    assert await access_log(store) == []

    report = await run_retention(store, CONFIG, recordings_root=str(root), now=NOW)
    assert (report.recordings_deleted, report.recordings_missing, report.errors) == (2, 1, [])
    assert (report.calls_anonymised, report.incidents_anonymised) == (1, 1)
    assert fresh_file.exists() and not mid_file.exists() and not old_file.exists()

    call, incident, audits = await snapshot(store, fresh)
    assert call.recording is not None and personal_kept(call, incident)
    assert audits[0].changes["reporter_name"] == ["Made", "Made Wirawan"]
    call, incident, _ = await snapshot(store, mid)
    assert call.recording is None and personal_kept(call, incident)
    call, incident, audits = await snapshot(store, old)
    assert call.recording is None and call.caller_number is None and call.caller_raw is None
    assert (incident.reporter_name, incident.callback_number, incident.address, incident.landmark) == ("", "", "", "")
    assert incident.notes == "" and incident.latitude is None and incident.longitude is None
    assert incident.category == "fire"  # statistics survive
    assert audits[0].changes == {"reporter_name": [ANONYMISED, ANONYMISED], "category": ["medical", "fire"]}
    call, _, _ = await snapshot(store, gone)
    assert call.recording is None

    (entry,) = await access_log(store)
    assert entry.action == "retention_run" and entry.subject_type == "retention"
    assert entry.detail["recordings_deleted"] == 2 and entry.detail["dry_run"] is False

    again = await run_retention(store, CONFIG, recordings_root=str(root), now=NOW)
    assert (again.recordings_deleted, again.calls_anonymised, again.incidents_anonymised) == (0, 0, 0)
    assert len(await access_log(store)) == 2


async def test_cli_dry_run_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    store = Store.from_url(url, retry_for=2)
    await store.upgrade()
    root = tmp_path / "chroot"
    old, old_file = await add_call(store, root, age_days=400)
    await store.close()
    monkeypatch.setenv("CALLCENTER_STORE_URL", url)
    monkeypatch.setenv("CALLCENTER_SUPERVISION_RECORDINGS_ROOT", str(root))
    monkeypatch.setenv("CALLCENTER_LOG_JSON", "false")
    monkeypatch.delenv("CALLCENTER_CONFIG", raising=False)
    import asyncio

    # The CLI runs its own event loop: run it in a thread so that it does not nest in the test's.
    assert await asyncio.to_thread(cli_main, ["retention", "run", "--dry-run"]) == 0
    assert old_file.exists()
    assert await asyncio.to_thread(cli_main, ["retention", "run"]) == 0
    assert not old_file.exists()
    store = Store.from_url(url, retry_for=2)
    try:
        call, incident, _ = await snapshot(store, old)
        assert call.caller_number is None and incident.reporter_name == ""
        assert len(await access_log(store)) == 1
    finally:
        await store.close()
