"""Location evidence of calls: AML fixes, SMS location links and the fixes sent through them.

Matching a fix to a call is by the caller's E.164 number: the live call of that number (not yet
ended) if there is one, else the newest call that ended within the matching window ("recent": an
AML SMS can trail the hangup). A fix that matches no call is kept with ``call_id`` NULL, because
the handset may report before the call's own record is written; the pop claims those
(:meth:`Locations.for_call`) when they arrived around the call's start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.forms.location import Fix
from callcenter.store.engine import Store, utcnow
from callcenter.store.models import Call, LocationFix, LocationLink

log = structlog.get_logger("callcenter.locations")

#: A live call older than this is a record whose end we missed (app down at hangup), not a live call.
LIVE_AT_MOST = timedelta(hours=6)
#: Unmatched fixes received this long before a call's arrival still belong to it (AML can be early:
#: the handset sends as soon as it has a fix, the call record is written after the greeting starts).
EARLY = timedelta(minutes=2)
#: Newest fixes shown with a call.
SHOWN = 5


@dataclass(frozen=True)
class Matched:
    """A stored fix and the call it went to (None: no live or recent call of the number)."""

    fix: LocationFix
    call: Call | None


def fix_json(row: LocationFix) -> dict[str, Any]:
    return {
        "id": row.id,
        "call_id": row.call_id,
        "latitude": row.latitude,
        "longitude": row.longitude,
        "accuracy_m": row.accuracy_m,
        "confidence": row.confidence,
        "source": row.source,
        "via": row.via,
        "fixed_at": row.fixed_at.isoformat() if row.fixed_at else None,
        "received_at": row.received_at.isoformat(),
    }


class Locations:
    """Stores and finds location evidence; one per app, built by the composition root."""

    def __init__(self, store: Store, *, recent: timedelta = timedelta(minutes=30)) -> None:
        self.store = store
        self.recent = recent

    # -- fixes -------------------------------------------------------------------------------------

    async def receive(self, fix: Fix, number: str, *, at: datetime | None = None) -> Matched:
        """Store ``fix`` about E.164 ``number`` against its live or recent call (or none yet)."""
        now = at or utcnow()

        async def op(session: AsyncSession) -> Matched:
            call = await self._match(session, number, now)
            row = self._row(fix, number, call.id if call else None, now)
            session.add(row)
            await session.flush()
            return Matched(row, call)

        matched = await self.store.transaction("location_receive", op)
        log.info(
            "location.received",
            fix_id=matched.fix.id,
            call_id=matched.call.id if matched.call else None,
            via=fix.via,
            source=fix.source,
            accuracy_m=fix.accuracy_m,
        )
        return matched

    async def _match(self, session: AsyncSession, number: str, now: datetime) -> Call | None:
        live = await session.scalar(
            select(Call)
            .where(Call.caller_number == number, Call.ended_at.is_(None), Call.arrived_at >= now - LIVE_AT_MOST)
            .order_by(Call.arrived_at.desc())
            .limit(1)
        )
        if live is not None:
            return live
        recent: Call | None = await session.scalar(
            select(Call)
            .where(Call.caller_number == number, Call.ended_at >= now - self.recent)
            .order_by(Call.ended_at.desc())
            .limit(1)
        )
        return recent

    @staticmethod
    def _row(fix: Fix, number: str, call_id: str | None, now: datetime, link_id: int | None = None) -> LocationFix:
        return LocationFix(
            call_id=call_id,
            number=number,
            latitude=fix.latitude,
            longitude=fix.longitude,
            accuracy_m=fix.accuracy_m,
            confidence=fix.confidence,
            source=fix.source,
            via=fix.via,
            fixed_at=fix.fixed_at,
            received_at=now,
            link_id=link_id,
            details=dict(fix.details),
        )

    async def for_call(self, call: Call) -> list[dict[str, Any]]:
        """The call's newest fixes (newest first), after claiming unmatched ones of its number that
        arrived from shortly before the call on."""

        async def op(session: AsyncSession) -> list[LocationFix]:
            if call.caller_number:
                await session.execute(
                    update(LocationFix)
                    .where(
                        LocationFix.call_id.is_(None),
                        LocationFix.number == call.caller_number,
                        LocationFix.received_at >= call.arrived_at - EARLY,
                    )
                    .values(call_id=call.id)
                )
            rows = await session.scalars(
                select(LocationFix)
                .where(LocationFix.call_id == call.id)
                .order_by(LocationFix.received_at.desc(), LocationFix.id.desc())
                .limit(SHOWN)
            )
            return list(rows)

        return [fix_json(r) for r in await self.store.transaction("location_for_call", op)]

    # -- links -------------------------------------------------------------------------------------

    async def create_link(
        self, call: Call, number: str, token: str, *, user_id: int | None, ttl: timedelta
    ) -> LocationLink:
        now = utcnow()

        async def op(session: AsyncSession) -> LocationLink:
            link = LocationLink(
                call_id=call.id,
                number=number,
                token=token,
                created_by=user_id,
                created_at=now,
                expires_at=now + ttl,
                status="sending",
                fixes=0,
            )
            session.add(link)
            await session.flush()
            return link

        return await self.store.transaction("location_link_create", op)

    async def links_sent(self, *, call_id: str, number: str, since: datetime) -> tuple[int, int]:
        """How many links this call has had, and how many went to ``number`` since ``since``."""

        async def op(session: AsyncSession) -> tuple[int, int]:
            rows = await session.execute(
                select(LocationLink.call_id, LocationLink.created_at).where(
                    or_(LocationLink.call_id == call_id, LocationLink.number == number)
                )
            )
            pairs = list(rows)
            return sum(1 for c, _ in pairs if c == call_id), sum(1 for _, at in pairs if at >= since)

        return await self.store.transaction("location_links_sent", op)

    async def set_link_status(self, link_id: int, status: str, sms_sid: str | None = None) -> None:
        async def op(session: AsyncSession) -> None:
            await session.execute(
                update(LocationLink).where(LocationLink.id == link_id).values(status=status, sms_sid=sms_sid)
            )

        await self.store.transaction("location_link_status", op)

    async def link(self, token: str) -> LocationLink | None:
        async def op(session: AsyncSession) -> LocationLink | None:
            found: LocationLink | None = await session.scalar(select(LocationLink).where(LocationLink.token == token))
            return found

        return await self.store.transaction("location_link", op)

    async def receive_from_link(self, link: LocationLink, fix: Fix, *, max_fixes: int) -> Matched | None:
        """Store a browser fix sent through ``link`` for the link's own call; None when the link is over
        (expired, or it has sent ``max_fixes`` already): the count is taken in the same statement."""
        now = utcnow()

        async def op(session: AsyncSession) -> Matched | None:
            counted = await session.execute(
                update(LocationLink)
                .where(LocationLink.id == link.id, LocationLink.expires_at > now, LocationLink.fixes < max_fixes)
                .values(fixes=LocationLink.fixes + 1)
            )
            if not getattr(counted, "rowcount", 0):
                return None
            call = await session.get(Call, link.call_id)
            row = self._row(fix, link.number, link.call_id, now, link_id=link.id)
            session.add(row)
            await session.flush()
            return Matched(row, call)

        matched = await self.store.transaction("location_link_fix", op)
        if matched is not None:
            log.info("location.link_fix", fix_id=matched.fix.id, call_id=link.call_id, accuracy_m=fix.accuracy_m)
        return matched


__all__ = ["EARLY", "Locations", "Matched", "fix_json"]
