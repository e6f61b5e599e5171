"""Data retention (UU PDP): delete old recordings, anonymise old personal data (``callcenter retention run``).

Two windows from ``[retention]``: recordings older than ``recordings_days`` are deleted from disk and
unlinked from their call; personal fields of calls and incidents older than ``personal_days`` are
blanked (caller number/raw, reporter name, callback number, address, landmark, notes, coordinates),
together with the copies of those fields in the incident audit trail — an anonymised incident whose
audit still says who called would anonymise nothing. Statistics survive: category, times, outcomes,
classification and ratings stay.

A run is idempotent (already-blank rows are not counted again) and writes one ``access_log`` entry
with its counts, so that "who removed this data, when" has an answer. ``dry_run`` only counts: it
deletes, changes and writes nothing at all.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.config import RetentionConfig
from callcenter.store import Store, utcnow
from callcenter.store.models import AccessLog, Call, Incident, IncidentAudit

log = structlog.get_logger("callcenter.supervision.retention")

#: Incident fields blanked by anonymisation (text fields → "", coordinates → None).
INCIDENT_TEXT = ("reporter_name", "callback_number", "address", "landmark", "notes")
INCIDENT_NULL = ("latitude", "longitude")
PERSONAL_AUDIT_FIELDS = frozenset(INCIDENT_TEXT + INCIDENT_NULL)
ANONYMISED = "[dihapus]"
#: Rows handled per transaction: a big first run must not hold one huge transaction.
BATCH = 500


@dataclass
class RetentionReport:
    dry_run: bool
    recordings_cutoff: str
    personal_cutoff: str
    recordings_deleted: int = 0
    recordings_missing: int = 0
    calls_anonymised: int = 0
    incidents_anonymised: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def recording_path(recording: str, root: str) -> Path:
    """Where this host finds a recording Asterisk wrote (``root`` prefixes a chroot's path)."""
    return Path(root) / recording.lstrip("/") if root else Path(recording)


def _remove(path: Path) -> bool:
    """Delete a recording file; False when it was already gone. Only ``.wav`` files are touched: a
    corrupted path in the database must not delete anything else."""
    if path.suffix.lower() != ".wav":
        raise ValueError(f"not a recording: {path}")
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


async def run_retention(
    store: Store,
    config: RetentionConfig,
    *,
    recordings_root: str = "",
    dry_run: bool = False,
    now: datetime | None = None,
    user_id: int | None = None,
) -> RetentionReport:
    now = now or utcnow()
    rec_cutoff = now - timedelta(days=config.recordings_days)
    pers_cutoff = now - timedelta(days=config.personal_days)
    report = RetentionReport(dry_run, rec_cutoff.isoformat(), pers_cutoff.isoformat())
    await _recordings(store, report, rec_cutoff, recordings_root, dry_run)
    await _calls(store, report, pers_cutoff, dry_run)
    await _incidents(store, report, pers_cutoff, dry_run)
    if not dry_run:

        async def write(session: AsyncSession) -> None:
            session.add(
                AccessLog(
                    user_id=user_id,
                    at=utcnow(),
                    action="retention_run",
                    subject_type="retention",
                    subject_id=now.date().isoformat(),
                    detail=report.as_dict(),
                )
            )

        await store.transaction("retention_log", write)
    log.info("retention.done", **report.as_dict())
    return report


async def _recordings(store: Store, report: RetentionReport, cutoff: datetime, root: str, dry_run: bool) -> None:
    last = ""
    while True:

        async def op(session: AsyncSession, after: str = last) -> list[Call]:
            rows = await session.scalars(
                select(Call)
                .where(Call.recording.is_not(None), Call.arrived_at < cutoff, Call.id > after)
                .order_by(Call.id)
                .limit(BATCH)
            )
            found = list(rows)
            if dry_run:
                return found
            for call in found:
                assert call.recording is not None
                path = recording_path(call.recording, root)
                try:
                    if _remove(path):
                        report.recordings_deleted += 1
                    else:
                        report.recordings_missing += 1
                except (OSError, ValueError) as exc:  # kept linked: the next run tries again
                    report.errors.append(f"{call.id}: {exc}")
                    continue
                call.recording = None
            return found

        batch = await store.transaction("retention_recordings", op)
        if dry_run:
            for call in batch:
                assert call.recording is not None
                if recording_path(call.recording, root).exists():
                    report.recordings_deleted += 1
                else:
                    report.recordings_missing += 1
        if len(batch) < BATCH:
            return
        last = batch[-1].id


async def _calls(store: Store, report: RetentionReport, cutoff: datetime, dry_run: bool) -> None:
    last = ""
    while True:

        async def op(session: AsyncSession, after: str = last) -> list[str]:
            rows = list(
                await session.scalars(
                    select(Call)
                    .where(
                        Call.arrived_at < cutoff,
                        Call.id > after,
                        or_(Call.caller_number.is_not(None), Call.caller_raw.is_not(None)),
                    )
                    .order_by(Call.id)
                    .limit(BATCH)
                )
            )
            if not dry_run:
                for call in rows:
                    call.caller_number = None
                    call.caller_raw = None
            return [c.id for c in rows]

        ids = await store.transaction("retention_calls", op)
        report.calls_anonymised += len(ids)
        if len(ids) < BATCH:
            return
        last = ids[-1]


def _personal(incident: Incident) -> bool:
    return any(getattr(incident, f) for f in INCIDENT_TEXT) or any(
        getattr(incident, f) is not None for f in INCIDENT_NULL
    )


async def _incidents(store: Store, report: RetentionReport, cutoff: datetime, dry_run: bool) -> None:
    last = 0
    while True:

        async def op(session: AsyncSession, after: int = last) -> tuple[int, int]:
            rows = list(
                await session.scalars(
                    select(Incident)
                    .where(Incident.created_at < cutoff, Incident.id > after)
                    .order_by(Incident.id)
                    .limit(BATCH)
                )
            )
            touched = [i for i in rows if _personal(i)]
            if not dry_run and touched:
                for incident in touched:
                    for name in INCIDENT_TEXT:
                        setattr(incident, name, "")
                    for name in INCIDENT_NULL:
                        setattr(incident, name, None)
                audits = await session.scalars(
                    select(IncidentAudit).where(IncidentAudit.incident_id.in_([i.id for i in touched]))
                )
                for audit in audits:
                    changes = dict(audit.changes or {})
                    scrubbed = {
                        k: ([ANONYMISED, ANONYMISED] if k in PERSONAL_AUDIT_FIELDS else v) for k, v in changes.items()
                    }
                    if scrubbed != changes:
                        audit.changes = scrubbed
            return len(touched), (rows[-1].id if rows else 0) if len(rows) == BATCH else -1

        count, next_after = await store.transaction("retention_incidents", op)
        report.incidents_anonymised += count
        if next_after < 0:
            return
        last = next_after


__all__ = ["RetentionReport", "recording_path", "run_retention"]
