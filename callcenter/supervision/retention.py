"""Data retention (UU PDP): delete old recordings, anonymise old personal data (``callcenter retention run``).

Two windows from ``[retention]``: recordings older than ``recordings_days`` are deleted from disk and
unlinked from their call; personal fields of calls and incidents older than ``personal_days`` are
blanked (caller number/raw, reporter name, callback number, address, landmark, notes, victims'
condition, access route, village/sub-district, coordinates),
together with every copy of them — an anonymised row whose copies still say who called would
anonymise nothing:

* the incident audit trail (personal fields' old and new values);
* the call's timeline (``call_events.data``, free JSON): values under personal keys, and the caller's
  number wherever a string holds it (``PJSIP/0812…-0001``), in every form it may be written in; the
  number is cut out in the same transaction that blanks the call, the last moment it is known;
* prank/hoax/silent flags (``number_flags``) older than the window, of numbers that have not called
  since: a flag is the number itself, and a number still calling keeps its history;
* photos agency officers attached to the incident's dispatch updates (files under
  ``[dispatch] upload_dir``, unlinked from their update);
* dispatch update notes, intake drafts, kept flags' notes and the briefing prompts that speak the
  address and number (``retention_copies.py``);
* the report app's reports and their photos, stale device tokens and idle app numbers
  (``retention_reports.py``).

Statistics survive: category, times, outcomes, classification and ratings stay.

A run is idempotent (already-blank rows are not counted again) and writes one ``access_log`` entry
with its counts, so that "who removed this data, when" has an answer. ``dry_run`` only counts: it
deletes, changes and writes nothing at all.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import phonenumbers
import structlog
from sqlalchemy import and_, delete, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.config import RetentionConfig
from callcenter.logs import CALLER_KEYS
from callcenter.store import Store, utcnow
from callcenter.store.dispatches import PHOTO_NAME
from callcenter.store.models import (
    AccessLog,
    Call,
    CallEvent,
    Dispatch,
    DispatchUpdate,
    Incident,
    IncidentAudit,
    LocationFix,
    LocationLink,
    NumberFlag,
)
from callcenter.store.recordings import recording_host_path
from callcenter.supervision import retention_copies as copies
from callcenter.supervision import retention_reports

log = structlog.get_logger("callcenter.supervision.retention")

#: Incident fields blanked by anonymisation (text fields → "", coordinates and the village → None).
#: The victims' condition and the access route describe people and a place as precisely as the address.
INCIDENT_TEXT = (
    "reporter_name",
    "callback_number",
    "address",
    "landmark",
    "notes",
    "victims_condition",
    "access_route",
)
INCIDENT_NULL = ("latitude", "longitude", "subdistrict")
PERSONAL_AUDIT_FIELDS = frozenset(INCIDENT_TEXT + INCIDENT_NULL)
#: Keys of timeline event data whose value is personal whatever it is: caller ids as AMI and the
#: dialplan name them, and intake fields copied into an event (compared in lower case).
PERSONAL_EVENT_KEYS = PERSONAL_AUDIT_FIELDS | CALLER_KEYS
ANONYMISED = "[dihapus]"
#: Agency photos are stored under a bare random name of one of these kinds (``web/dispatch_api.py``).
PHOTO_SUFFIXES = (".jpg", ".png")
#: Digit runs shorter than this (112, a queue position) are never taken for a caller's number.
MIN_NUMBER_DIGITS = 6
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
    events_scrubbed: int = 0
    incidents_anonymised: int = 0
    flags_deleted: int = 0
    photos_deleted: int = 0
    photos_missing: int = 0
    update_notes_blanked: int = 0
    drafts_deleted: int = 0
    flag_notes_blanked: int = 0
    prompts_deleted: int = 0
    #: Caller positions (AML, location links) and the links themselves, deleted whole.
    locations_deleted: int = 0
    #: The report app's reports (with their photos), stale device tokens and idle numbers (``retention_reports.py``).
    reports_deleted: int = 0
    report_photos_deleted: int = 0
    app_devices_deleted: int = 0
    app_numbers_deleted: int = 0
    #: Parts not run, and why (not errors: nothing was left half done).
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def recording_path(recording: str, root: str, record_dir: str) -> Path:
    """Where this host finds a recording Asterisk wrote (``root`` prefixes a chroot's path); ValueError
    unless it lies inside ``record_dir`` (checked again here, right before a delete: the path is data)."""
    path = recording_host_path(recording, record_dir, root)
    if path is None:
        raise ValueError(f"not a recording inside {record_dir or 'the record directory (none given)'}: {recording!r}")
    return path


def number_pattern(*numbers: str | None) -> re.Pattern[str] | None:
    """Every way the caller's ``numbers`` (E.164, raw) may be written in free text: with or without
    the plus and country code, or nationally with the trunk 0 (``+62812…``, ``62812…``, ``0812…``);
    None when there is no number long enough to look for."""
    forms: set[str] = set()
    for number in numbers:
        digits = re.sub(r"[^0-9]", "", number or "")
        if len(digits) >= MIN_NUMBER_DIGITS:
            forms.add(rf"\+?{digits}")
        if number and number.startswith("+"):
            try:
                parsed = phonenumbers.parse(number)
            except phonenumbers.NumberParseException:
                continue
            national = phonenumbers.national_significant_number(parsed)
            if len(national) >= MIN_NUMBER_DIGITS:
                forms.add(rf"(?:\+?{parsed.country_code}|0)?{national}")
    if not forms:
        return None
    return re.compile("(?<![0-9])(?:" + "|".join(sorted(forms, key=len, reverse=True)) + ")(?![0-9])")


def _blank(value: Any) -> Any:
    """A personal value's replacement: text keeps a marker (the timeline shows something was there)."""
    if value is None or value == "":
        return value
    return ANONYMISED if isinstance(value, str) else None


def scrub(value: Any, number: re.Pattern[str] | None) -> Any:
    """``value`` (JSON) with personal keys blanked and the ``number`` cut out of every string; equal to
    ``value`` when there was nothing to remove, so a second run changes nothing."""
    if isinstance(value, dict):
        return {k: _blank(v) if str(k).lower() in PERSONAL_EVENT_KEYS else scrub(v, number) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, number) for v in value]
    if isinstance(value, str) and number is not None:
        return number.sub(ANONYMISED, value)
    return value


def _remove(path: Path, suffixes: tuple[str, ...] = (".wav",)) -> bool:
    """Delete a recording (or photo) file; False when it was already gone. Only files of the expected
    kind are touched: a corrupted path in the database must not delete anything else."""
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"not a {'/'.join(suffixes)} file: {path}")
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
    record_dir: str = "",
    upload_dir: str | None = None,
    prompt_dir: str | None = None,
    report_dir: str | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    user_id: int | None = None,
) -> RetentionReport:
    """Apply both windows once. ``upload_dir`` is ``[dispatch] upload_dir``, where the agency photos
    are; without it photos are left alone (and the report says so) rather than unlinked from their
    update while the files stay on disk. ``prompt_dir`` is ``[dispatch] prompt_dir``, where briefing
    prompts are generated (``retention_copies.py``: notes, drafts and prompts). ``record_dir`` is
    ``[queue] record_dir``: only recordings inside it are deleted; any other path stays on disk and in
    the row, reported as an error. ``report_dir`` is ``[report] upload_dir``, the report app's photos:
    without it reports are left alone (and the report says so)."""
    now = now or utcnow()
    rec_cutoff = now - timedelta(days=config.recordings_days)
    pers_cutoff = now - timedelta(days=config.personal_days)
    report = RetentionReport(dry_run, rec_cutoff.isoformat(), pers_cutoff.isoformat())
    await _recordings(store, report, rec_cutoff, recordings_root, record_dir, dry_run)
    await _calls(store, report, pers_cutoff, dry_run)
    await _incidents(store, report, pers_cutoff, dry_run)
    await _flags(store, report, pers_cutoff, dry_run)
    await _locations(store, report, pers_cutoff, dry_run)
    if upload_dir is None:
        report.skipped.append("photos: no upload directory given")
        log.warning("retention.photos_skipped", reason="no upload directory given")
    else:
        await _photos(store, report, pers_cutoff, upload_dir, dry_run)
    if report_dir is None:
        report.skipped.append("reports: no report upload directory given")
    else:
        app = await retention_reports.run(store, pers_cutoff, report_dir, dry_run)
        report.reports_deleted, report.report_photos_deleted = app.reports_deleted, app.photos_deleted
        report.app_devices_deleted, report.app_numbers_deleted = app.devices_deleted, app.numbers_deleted
        report.errors.extend(app.errors)
    report.update_notes_blanked += await copies.update_notes(store, pers_cutoff, dry_run)
    report.drafts_deleted += await copies.drafts(store, pers_cutoff, dry_run)
    report.flag_notes_blanked += await copies.flag_notes(store, pers_cutoff, dry_run)
    if prompt_dir is None:
        report.skipped.append("prompts: no prompt directory given")
    else:
        deleted, errors = copies.prompts(Path(prompt_dir), config.prompts_hours, dry_run, now=now.timestamp())
        report.prompts_deleted += deleted
        report.errors.extend(errors)
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


async def _recordings(
    store: Store, report: RetentionReport, cutoff: datetime, root: str, record_dir: str, dry_run: bool
) -> None:
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
                try:
                    if _remove(recording_path(call.recording, root, record_dir)):
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
                try:
                    present = recording_path(call.recording, root, record_dir).exists()
                except ValueError as exc:
                    report.errors.append(f"{call.id}: {exc}")
                    continue
                if present:
                    report.recordings_deleted += 1
                else:
                    report.recordings_missing += 1
        if len(batch) < BATCH:
            return
        last = batch[-1].id


async def _calls(store: Store, report: RetentionReport, cutoff: datetime, dry_run: bool) -> None:
    """Blank the caller of old calls, and cut their number out of their timeline and channel name."""
    last = ""
    while True:

        async def op(session: AsyncSession, after: str = last) -> tuple[list[str], int]:
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
            numbers = {c.id: number_pattern(c.caller_number, c.caller_raw) for c in rows}
            scrubbed = 0
            if rows:
                for event in await session.scalars(select(CallEvent).where(CallEvent.call_id.in_(list(numbers)))):
                    clean = scrub(event.data, numbers[event.call_id])
                    if clean != event.data:
                        scrubbed += 1
                        if not dry_run:
                            event.data = clean
            if not dry_run:
                for call in rows:
                    call.caller_number = None
                    call.caller_raw = None
                    if call.channel:
                        call.channel = scrub(call.channel, numbers[call.id])
            return [c.id for c in rows], scrubbed

        ids, scrubbed = await store.transaction("retention_calls", op)
        report.calls_anonymised += len(ids)
        report.events_scrubbed += scrubbed
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


async def _locations(store: Store, report: RetentionReport, cutoff: datetime, dry_run: bool) -> None:
    """Delete caller positions received, and location links sent, before ``cutoff``: a position is
    personal data with no use once the incident is history (the intake keeps what was decided)."""
    fixes, links = LocationFix.received_at < cutoff, LocationLink.created_at < cutoff

    async def op(session: AsyncSession) -> int:
        if dry_run:
            counted = 0
            for model, where in ((LocationFix, fixes), (LocationLink, links)):
                counted += int(await session.scalar(select(func.count()).select_from(model).where(where)) or 0)
            return counted
        deleted = 0
        for model, where in ((LocationFix, fixes), (LocationLink, links)):
            result = await session.execute(delete(model).where(where))
            deleted += int(getattr(result, "rowcount", 0) or 0)
        return deleted

    report.locations_deleted += await store.transaction("retention_locations", op)


async def _flags(store: Store, report: RetentionReport, cutoff: datetime, dry_run: bool) -> None:
    """Delete flags older than ``cutoff`` of numbers with no call since ``cutoff``."""
    stale = and_(
        NumberFlag.created_at < cutoff,
        ~exists().where(Call.caller_number == NumberFlag.number, Call.arrived_at >= cutoff),
    )

    async def op(session: AsyncSession) -> int:
        if dry_run:
            return int(await session.scalar(select(func.count()).select_from(NumberFlag).where(stale)) or 0)
        result = await session.execute(delete(NumberFlag).where(stale))
        return int(getattr(result, "rowcount", 0) or 0)

    report.flags_deleted += await store.transaction("retention_flags", op)


async def _photos(store: Store, report: RetentionReport, cutoff: datetime, upload_dir: str, dry_run: bool) -> None:
    """Delete the photos of dispatch updates on incidents older than ``cutoff`` (the whole case goes
    at once, like its other personal fields) and unlink them from their update."""
    directory = Path(upload_dir)
    last = 0
    while True:

        async def op(session: AsyncSession, after: int = last) -> tuple[int, int, int, list[str]]:
            updates = list(
                await session.scalars(
                    select(DispatchUpdate)
                    .join(Dispatch, Dispatch.id == DispatchUpdate.dispatch_id)
                    .join(Incident, Incident.id == Dispatch.incident_id)
                    .where(DispatchUpdate.photo.is_not(None), Incident.created_at < cutoff, DispatchUpdate.id > after)
                    .order_by(DispatchUpdate.id)
                    .limit(BATCH)
                )
            )
            deleted = missing = 0
            errors: list[str] = []
            for update in updates:
                name = update.photo or ""
                path = directory / name
                try:
                    # A stored photo's name, or nothing is deleted: the name comes from the database.
                    if PHOTO_NAME.fullmatch(name) is None:
                        raise ValueError(f"not a photo: {name!r}")
                    present = path.exists() if dry_run else _remove(path, PHOTO_SUFFIXES)
                except (OSError, ValueError) as exc:  # kept linked: the next run tries again
                    errors.append(f"update {update.id}: {exc}")
                    continue
                if present:
                    deleted += 1
                else:
                    missing += 1
                if not dry_run:
                    update.photo = None
            return (updates[-1].id if len(updates) == BATCH else -1), deleted, missing, errors

        next_after, deleted, missing, errors = await store.transaction("retention_photos", op)
        report.photos_deleted += deleted
        report.photos_missing += missing
        report.errors.extend(errors)
        if next_after < 0:
            return
        last = next_after


__all__ = ["RetentionReport", "number_pattern", "recording_path", "run_retention", "scrub"]
