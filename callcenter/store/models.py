"""Tables: a call summary row per 112 call, its append-only timeline, and flags against caller numbers.

The timeline is the record of truth (what happened, when, reported by whom); the summary columns on
``calls`` are derived from it as events arrive so that call logs and statistics need no replay.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite hands back naive values otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UtcDateTime, dict[str, Any]: JSON}


class Call(Base):
    __tablename__ = "calls"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    #: Asterisk's UNIQUEID of the caller's channel: the key every AGI and AMI report carries.
    uniqueid: Mapped[str] = mapped_column(String(64), unique=True)
    linkedid: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str | None] = mapped_column(String(128))
    caller_raw: Mapped[str | None] = mapped_column(String(64))
    #: E.164 when the number could be normalised; None for withheld/anonymous/unparseable callers.
    caller_number: Mapped[str | None] = mapped_column(String(32), index=True)
    dialed: Mapped[str | None] = mapped_column(String(16))
    #: ``agi`` when our route handled it, ``fallback`` when the dialplan queued without us.
    routed_by: Mapped[str] = mapped_column(String(16), default="agi")
    status: Mapped[str] = mapped_column(String(16), default="arrived")
    queue: Mapped[str | None] = mapped_column(String(64))
    queue_priority: Mapped[int | None] = mapped_column(Integer)
    language: Mapped[str | None] = mapped_column(String(8))
    arrived_at: Mapped[datetime] = mapped_column(index=True)
    queued_at: Mapped[datetime | None]
    answered_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    answered_by: Mapped[str | None] = mapped_column(String(128))
    wait_seconds: Mapped[float | None] = mapped_column(Float)
    talk_seconds: Mapped[float | None] = mapped_column(Float)
    abandon_position: Mapped[int | None] = mapped_column(Integer)
    #: ``caller``, ``calltaker`` or ``system``: who ended the call.
    hangup_by: Mapped[str | None] = mapped_column(String(16))
    hangup_cause: Mapped[int | None] = mapped_column(Integer)
    recording: Mapped[str | None] = mapped_column(String(255))
    #: Set by the call-taker: genuine, non_emergency, prank, hoax, silent, misdial, abandoned.
    classification: Mapped[str | None] = mapped_column(String(16), index=True)


class CallEvent(Base):
    __tablename__ = "call_events"
    __table_args__ = (Index("ix_call_events_call_at", "call_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime]
    #: ``agi``, ``ami`` or ``hangup``: which part of the system saw it.
    source: Mapped[str] = mapped_column(String(16))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class NumberFlag(Base):
    """A prank, hoax or silent call held against a normalised number; shown on that number's next call."""

    __tablename__ = "number_flags"
    __table_args__ = (Index("ix_number_flags_number_at", "number", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    number: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    call_id: Mapped[str | None] = mapped_column(ForeignKey("calls.id", ondelete="SET NULL"))
    note: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
