"""Retention of the report app's data (``/lapor``; part of ``callcenter retention run``, ``retention.py``).

A citizen's report is personal data: their number, where they were, a photo. Once older than the
personal window it has no use (what the call-taker decided is in the incident), so the run deletes:

* reports created before the window, with their photos (files under ``[report] upload_dir``, named as
  ``web/uploads.save_photo`` names them; any other name is left on disk and reported);
* device tokens not used since the window began (the browser verifies again if it comes back);
* app numbers with nothing left since the window began (no report, no device, no code asked): like
  a prank flag of a number that stopped calling, a number that stopped using the app loses its record,
  its false-report count and block included. A number still using the app keeps them.

Idempotent; a dry run only counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import and_, delete, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store import Store
from callcenter.store.dispatches import PHOTO_NAME
from callcenter.store.models import AppDevice, AppNumber, Report

#: Reports handled per transaction.
BATCH = 500


@dataclass
class ReportRetention:
    reports_deleted: int = 0
    photos_deleted: int = 0
    photos_missing: int = 0
    devices_deleted: int = 0
    numbers_deleted: int = 0
    errors: list[str] = field(default_factory=list)


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


async def _old_reports(store: Store, cutoff: datetime, directory: Path, dry_run: bool, done: ReportRetention) -> None:
    after = 0
    while True:

        async def op(session: AsyncSession, last: int = after) -> list[Report]:
            rows = await session.scalars(
                select(Report).where(Report.created_at < cutoff, Report.id > last).order_by(Report.id).limit(BATCH)
            )
            reports = list(rows)
            gone: list[int] = []
            for report in reports:
                if report.photo:
                    path = directory / report.photo
                    try:
                        if PHOTO_NAME.fullmatch(report.photo) is None:
                            raise ValueError(f"not a photo: {report.photo!r}")
                        present = path.exists() if dry_run else _unlink(path)
                    except (OSError, ValueError) as exc:  # kept: the next run tries again
                        done.errors.append(f"report {report.id}: {exc}")
                        continue
                    done.photos_deleted += int(present)
                    done.photos_missing += int(not present)
                gone.append(report.id)
            if gone and not dry_run:
                await session.execute(delete(Report).where(Report.id.in_(gone)))
            done.reports_deleted += len(gone)
            return reports

        batch = await store.transaction("retention_reports", op)
        if len(batch) < BATCH:
            return
        after = batch[-1].id


async def run(store: Store, cutoff: datetime, upload_dir: str, dry_run: bool) -> ReportRetention:
    """Apply the personal window ``cutoff`` to reports, devices and app numbers."""
    done = ReportRetention()
    await _old_reports(store, cutoff, Path(upload_dir), dry_run, done)
    stale_devices = AppDevice.last_used_at < cutoff
    idle_numbers = and_(
        AppNumber.created_at < cutoff,
        or_(AppNumber.codes_window_at.is_(None), AppNumber.codes_window_at < cutoff),
        ~exists().where(Report.number == AppNumber.number),
        ~exists().where(AppDevice.number == AppNumber.number, AppDevice.last_used_at >= cutoff),
    )

    async def op(session: AsyncSession) -> tuple[int, int]:
        if dry_run:
            devices = await session.scalar(select(func.count()).select_from(AppDevice).where(stale_devices))
            numbers = await session.scalar(select(func.count()).select_from(AppNumber).where(idle_numbers))
            return int(devices or 0), int(numbers or 0)
        numbers_gone = list(await session.scalars(select(AppNumber.number).where(idle_numbers)))
        removed = await session.execute(delete(AppDevice).where(or_(stale_devices, AppDevice.number.in_(numbers_gone))))
        await session.execute(delete(AppNumber).where(AppNumber.number.in_(numbers_gone)))
        return int(getattr(removed, "rowcount", 0) or 0), len(numbers_gone)

    done.devices_deleted, done.numbers_deleted = await store.transaction("retention_app_numbers", op)
    return done


__all__ = ["ReportRetention", "run"]
