"""The report app's phone numbers: verification by SMS code, device tokens, and the block after false reports.

A number is verified once: ``/lapor`` asks for a code (texted by the web layer), the citizen types it,
and the browser gets a long-lived random device token. Neither the code nor the token is stored as
given: the code as an HMAC-SHA256 under a random per-code salt, the token as its SHA-256 (the same
rule as console sessions, ``store/accounts.py``), so a leaked database holds nothing that verifies a
number or drives a device. A code is short-lived (``code_ttl``), allows few wrong attempts, and a
number gets few codes an hour: six digits cannot be guessed in that budget.

Three reports classified prank/hoax (``store/reports.py``) block a number from the app: it gets no
code and its devices send no report, with a clear message. Calling 112 is never affected.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store.accounts import token_hash
from callcenter.store.engine import Store, utcnow
from callcenter.store.models import AppDevice, AppNumber

#: Digits of a verification code.
CODE_DIGITS = 6

CodeOutcome = Literal["issued", "limited", "blocked"]
VerifyOutcome = Literal["verified", "wrong", "expired", "no_code", "too_many", "blocked"]


@dataclass(frozen=True)
class CodeIssue:
    """What asking for a code gave: ``code`` (to text, never to log) when ``outcome`` is ``issued``."""

    outcome: CodeOutcome
    code: str = ""


@dataclass(frozen=True)
class Verification:
    """A code check; on ``verified``, ``token`` is the new device's secret (for the cookie only)."""

    outcome: VerifyOutcome
    token: str = ""
    attempts_left: int = 0


@dataclass(frozen=True)
class Device:
    """A verified browser: its id, its number, and whether that number is blocked from the app."""

    id: int
    number: str
    blocked: bool


def code_hash(salt: str, number: str, code: str) -> str:
    return hmac.new(salt.encode(), f"{number}:{code}".encode(), hashlib.sha256).hexdigest()


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def is_blocked(row: AppNumber | None, now: datetime, block_for: timedelta | None) -> bool:
    """Blocked when ``blocked_at`` is set and (``block_for`` None: for good) not yet over."""
    if row is None or row.blocked_at is None:
        return False
    return block_for is None or row.blocked_at + block_for > now


class AppNumbers:
    """Verification state of the app's numbers and their devices' tokens; one per app."""

    def __init__(
        self,
        store: Store,
        *,
        code_ttl: timedelta = timedelta(minutes=10),
        code_attempts: int = 5,
        codes_per_hour: int = 3,
        device_ttl: timedelta = timedelta(days=365),
        block_for: timedelta | None = None,
    ) -> None:
        self.store = store
        self.code_ttl = code_ttl
        self.code_attempts = code_attempts
        self.codes_per_hour = codes_per_hour
        self.device_ttl = device_ttl
        self.block_for = block_for

    async def request_code(self, number: str) -> CodeIssue:
        """A new code for E.164 ``number`` (replacing any earlier one), unless the number is blocked or
        has had ``codes_per_hour`` codes in the current hour. The count is taken in the same transaction."""
        now = utcnow()

        async def op(session: AsyncSession) -> CodeIssue:
            row = await session.get(AppNumber, number, with_for_update=True)
            if row is None:
                row = AppNumber(number=number, created_at=now, code_attempts=0, codes_sent=0, false_reports=0)
                session.add(row)
            if is_blocked(row, now, self.block_for):
                return CodeIssue("blocked")
            if row.codes_window_at is None or row.codes_window_at <= now - timedelta(hours=1):
                row.codes_window_at, row.codes_sent = now, 0
            if row.codes_sent >= self.codes_per_hour:
                return CodeIssue("limited")
            code, salt = new_code(), secrets.token_hex(16)
            row.code_salt, row.code_hash = salt, code_hash(salt, number, code)
            row.code_expires_at, row.code_attempts = now + self.code_ttl, 0
            row.codes_sent += 1
            return CodeIssue("issued", code)

        return await self.store.transaction("app_code_request", op)

    async def verify(self, number: str, code: str) -> Verification:
        """Check ``code`` for ``number``; a right one is used up and makes a device (its token returned)."""
        now = utcnow()

        async def op(session: AsyncSession) -> Verification:
            row = await session.get(AppNumber, number, with_for_update=True)
            if row is None or row.code_hash is None or row.code_salt is None or row.code_expires_at is None:
                return Verification("no_code")
            if is_blocked(row, now, self.block_for):
                return Verification("blocked")
            if row.code_expires_at <= now:
                return Verification("expired")
            if row.code_attempts >= self.code_attempts:
                return Verification("too_many")
            if not hmac.compare_digest(row.code_hash, code_hash(row.code_salt, number, code)):
                row.code_attempts += 1
                left = self.code_attempts - row.code_attempts
                return Verification("wrong" if left > 0 else "too_many", attempts_left=left)
            row.code_hash = row.code_salt = row.code_expires_at = None
            row.code_attempts = 0
            row.verified_at = row.verified_at or now
            token = secrets.token_urlsafe(32)
            session.add(AppDevice(number=number, token_hash=token_hash(token), created_at=now, last_used_at=now))
            return Verification("verified", token=token)

        return await self.store.transaction("app_code_verify", op)

    async def device(self, token: str) -> Device | None:
        """The live device holding ``token`` (its use noted), or None: unknown, revoked or too old."""
        now = utcnow()

        async def op(session: AsyncSession) -> Device | None:
            found = (
                await session.execute(
                    select(AppDevice, AppNumber)
                    .join(AppNumber, AppNumber.number == AppDevice.number)
                    .where(AppDevice.token_hash == token_hash(token), AppDevice.revoked_at.is_(None))
                )
            ).first()
            if found is None:
                return None
            device, number = found
            if device.created_at + self.device_ttl <= now:
                return None
            await session.execute(update(AppDevice).where(AppDevice.id == device.id).values(last_used_at=now))
            return Device(device.id, device.number, is_blocked(number, now, self.block_for))

        return await self.store.transaction("app_device", op)

    async def revoke(self, device_id: int) -> None:
        async def op(session: AsyncSession) -> None:
            await session.execute(update(AppDevice).where(AppDevice.id == device_id).values(revoked_at=utcnow()))

        await self.store.transaction("app_device_revoke", op)

    async def get(self, number: str) -> AppNumber | None:
        async def op(session: AsyncSession) -> AppNumber | None:
            return await session.get(AppNumber, number)

        return await self.store.transaction("app_number", op)

    async def blocked(self, limit: int = 500) -> list[AppNumber]:
        """Numbers blocked from the app (newest block first), expired blocks left out."""
        now = utcnow()

        async def op(session: AsyncSession) -> list[AppNumber]:
            rows = await session.scalars(
                select(AppNumber)
                .where(AppNumber.blocked_at.is_not(None))
                .order_by(AppNumber.blocked_at.desc())
                .limit(limit)
            )
            return [row for row in rows if is_blocked(row, now, self.block_for)]

        return await self.store.transaction("app_numbers_blocked", op)

    async def unblock(self, number: str) -> bool:
        """Lift a block (a supervisor's decision after review) and start the false-report count afresh."""

        async def op(session: AsyncSession) -> bool:
            done = await session.execute(
                update(AppNumber).where(AppNumber.number == number).values(blocked_at=None, false_reports=0)
            )
            return bool(getattr(done, "rowcount", 0))

        return await self.store.transaction("app_number_unblock", op)


__all__ = ["CODE_DIGITS", "AppNumbers", "CodeIssue", "Device", "Verification", "code_hash", "is_blocked"]
