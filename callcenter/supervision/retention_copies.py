"""Retention of the copies of a case that live outside the incident and call rows (``retention.py``).

A case's personal details also travel into: the agency officers' status notes ("korban dibawa ke RS
…, keluarga Bu …"), the call-taker's autosaved intake drafts (the whole form as typed), the notes on a
prank flag that survives because its number still calls, and the briefing prompt WAVs that speak the
address and the callback number to a duty officer (``dispatch/prompts.py``). Anonymising the incident
and leaving these would anonymise nothing, so a retention run also:

* blanks the notes of dispatch updates on incidents older than the personal window;
* deletes intake drafts not saved since the personal window began (a draft that old was abandoned);
* blanks the notes of prank flags older than the window that are kept (``retention._flags`` deletes
  the others);
* deletes every generated briefing prompt not used for ``prompts_hours``: a prompt is a cache needed
  only while its dispatch rings (a later briefing generates it again), so it goes long before the
  personal window ends.

Each part counts into the run's report, is idempotent, and changes nothing in a dry run.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

import structlog
from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store import Store
from callcenter.store.models import Call, Dispatch, DispatchUpdate, Draft, Incident, NumberFlag

log = structlog.get_logger("callcenter.supervision.retention")

#: What a blanked note says (the same marker as the rest of retention).
ANONYMISED = "[dihapus]"
#: Generated briefing prompts are named ``brief-<sha1 of the text>.wav`` (``PromptCache.name_for``).
PROMPT_GLOB = "brief-*.wav"


async def update_notes(store: Store, cutoff: datetime, dry_run: bool) -> int:
    """Blank the notes of dispatch updates on incidents created before ``cutoff``; returns how many."""
    old_updates = (
        select(DispatchUpdate.id)
        .join(Dispatch, Dispatch.id == DispatchUpdate.dispatch_id)
        .join(Incident, Incident.id == Dispatch.incident_id)
        .where(Incident.created_at < cutoff, DispatchUpdate.note != "", DispatchUpdate.note != ANONYMISED)
    )

    async def op(session: AsyncSession) -> int:
        if dry_run:
            return int(await session.scalar(select(func.count()).select_from(old_updates.subquery())) or 0)
        result = await session.execute(
            update(DispatchUpdate).where(DispatchUpdate.id.in_(old_updates.scalar_subquery())).values(note=ANONYMISED)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    return await store.transaction("retention_update_notes", op)


async def drafts(store: Store, cutoff: datetime, dry_run: bool) -> int:
    """Delete intake drafts last saved before ``cutoff``; returns how many."""
    stale = Draft.updated_at < cutoff

    async def op(session: AsyncSession) -> int:
        if dry_run:
            return int(await session.scalar(select(func.count()).select_from(Draft).where(stale)) or 0)
        result = await session.execute(delete(Draft).where(stale))
        return int(getattr(result, "rowcount", 0) or 0)

    return await store.transaction("retention_drafts", op)


async def flag_notes(store: Store, cutoff: datetime, dry_run: bool) -> int:
    """Blank the notes of flags created before ``cutoff`` that are kept (their number still calls)."""
    kept = exists().where(Call.caller_number == NumberFlag.number, Call.arrived_at >= cutoff)
    old = (NumberFlag.created_at < cutoff, NumberFlag.note != "", NumberFlag.note != ANONYMISED, kept)

    async def op(session: AsyncSession) -> int:
        if dry_run:
            return int(await session.scalar(select(func.count()).select_from(NumberFlag).where(*old)) or 0)
        result = await session.execute(update(NumberFlag).where(*old).values(note=ANONYMISED))
        return int(getattr(result, "rowcount", 0) or 0)

    return await store.transaction("retention_flag_notes", op)


def prompts(
    directory: Path, older_than_hours: float, dry_run: bool, *, now: float | None = None
) -> tuple[int, list[str]]:
    """Delete briefing prompts in ``directory`` not written or reused for ``older_than_hours``; returns
    how many and the errors. Only regular files named like a generated prompt are touched."""
    limit = (time.time() if now is None else now) - older_than_hours * 3600
    deleted, errors = 0, []
    if not directory.is_dir():
        return 0, []
    for path in directory.glob(PROMPT_GLOB):
        try:
            if path.is_symlink() or not path.is_file() or path.stat().st_mtime >= limit:
                continue
            if not dry_run:
                os.unlink(path)
            deleted += 1
        except FileNotFoundError:
            continue
        except OSError as exc:
            errors.append(f"prompt {path.name}: {exc}")
    return deleted, errors


__all__ = ["drafts", "flag_notes", "prompts", "update_notes"]
