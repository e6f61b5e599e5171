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
    UniqueConstraint,
    text,
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
    __table_args__ = (
        Index("ix_calls_arrived_stats", "arrived_at", "answered_at", "wait_seconds", "status", "classification"),
        Index("ix_calls_answered_by_arrived", "answered_by", "arrived_at"),
        Index("ix_calls_status_arrived", "status", "arrived_at"),
        Index("ix_calls_id_arrived", "id", "arrived_at"),
        Index("ix_calls_arrived_id", "arrived_at", "id"),
    )

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
    #: Indexed with ``id`` (``ix_calls_arrived_id``): newest-first pages in the call log's own order.
    arrived_at: Mapped[datetime]
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
    classified_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    classified_at: Mapped[datetime | None]


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


class User(Base):
    """A person who logs in: call-taker, supervisor, agency officer or admin."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128))
    #: argon2id hash (argon2-cffi's encoded form, parameters included).
    password_hash: Mapped[str] = mapped_column(String(255))
    #: calltaker, supervisor, agency, admin.
    role: Mapped[str] = mapped_column(String(16))
    #: UI language: id (default) or en.
    language: Mapped[str] = mapped_column(String(8), default="id")
    #: The call-taker's softphone as a queue member interface, e.g. ``PJSIP/taker1``.
    interface: Mapped[str | None] = mapped_column(String(64), unique=True)
    #: For agency officers: the agency they act for (dispatch issue).
    agency: Mapped[str | None] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime]


class QueueLogin(Base):
    """A call-taker the app has put in the queue from their console: the app's record of who is logged in.

    Asterisk forgets dynamic queue members when it restarts (``persistentmembers = no``: its own copy in
    astdb would bring back takers who logged out while it was down). This row is what the app puts back,
    with the pause state, after every (re)connect; it changes only by the call-taker's own console actions
    and by pause changes Asterisk reports (``queue/presence.py``).
    """

    __tablename__ = "queue_logins"

    queue: Mapped[str] = mapped_column(String(64), primary_key=True)
    interface: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    member_name: Mapped[str] = mapped_column(String(128))
    paused: Mapped[bool] = mapped_column(default=False)
    reason: Mapped[str] = mapped_column(String(32), default="")
    logged_in_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class WebSession(Base):
    """Server-side login session; the cookie holds a random token, the table only its SHA-256."""

    __tablename__ = "web_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    remote: Mapped[str | None] = mapped_column(String(64))


class Incident(Base):
    """The structured intake of an emergency, linked to the call it came from."""

    __tablename__ = "incidents"
    __table_args__ = (
        Index("ix_incidents_created_category", "created_at", "category"),
        Index("ix_incidents_sla_breached_at", "sla_breached_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: Human-facing number read out to agencies: ``112-YYYYMMDD-NNNN``.
    reference: Mapped[str] = mapped_column(String(32), unique=True)
    call_id: Mapped[str | None] = mapped_column(ForeignKey("calls.id", ondelete="SET NULL"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="new")
    category: Mapped[str] = mapped_column(String(32), index=True)
    priority: Mapped[str] = mapped_column(String(16))
    reporter_name: Mapped[str] = mapped_column(String(128))
    callback_number: Mapped[str] = mapped_column(String(32))
    address: Mapped[str] = mapped_column(Text)
    district: Mapped[str | None] = mapped_column(String(64))
    subdistrict: Mapped[str | None] = mapped_column(String(64))
    landmark: Mapped[str] = mapped_column(Text, default="")
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    victims_count: Mapped[int] = mapped_column(Integer, default=0)
    victims_condition: Mapped[str] = mapped_column(Text, default="")
    access_route: Mapped[str] = mapped_column(Text, default="")
    notes: Mapped[str] = mapped_column(Text, default="")
    #: Circumstances ticked on the intake (codes of ``forms.categories.FLAGS``, each once); the
    #: dispatch rules add agencies by them (``needs_water`` adds PDAM to a fire).
    flags: Mapped[list[str]] = mapped_column(JSON, default=list, server_default=text("'[]'"))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(index=True)
    updated_at: Mapped[datetime]
    #: Service level (dispatch acknowledged by an agency) for the category: due time from the call's
    #: arrival, when it was met, and when it was breached (flagged on the console and in statistics).
    sla_due_at: Mapped[datetime | None]
    sla_met_at: Mapped[datetime | None]
    sla_breached_at: Mapped[datetime | None]


class IncidentAudit(Base):
    """Every change to an incident and who made it: ``changes`` maps field → [old, new]."""

    __tablename__ = "incident_audit"
    __table_args__ = (Index("ix_incident_audit_incident_at", "incident_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    at: Mapped[datetime]
    action: Mapped[str] = mapped_column(String(16))
    changes: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Draft(Base):
    """A form being typed, saved as the user types so a reload or a dropped link loses nothing: a
    call-taker's intake, or a supervisor's quality review of a call."""

    __tablename__ = "drafts"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    #: The intake's call id, ``"none"`` for an intake not tied to a call, or ``review.<call id>`` for a
    #: review (``store/quality.py`` ``review_draft_key``).
    call_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime]


class Dispatch(Base):
    """One agency asked to respond to one incident; several run in parallel for one incident."""

    __tablename__ = "dispatches"
    __table_args__ = (
        Index("ix_dispatches_agency_status", "agency", "status"),
        Index("ix_dispatches_incident_accepted", "incident_id", "accepted_at"),
        Index("ix_dispatches_created_agency", "created_at", "agency", "accepted_at"),
        Index("ix_dispatches_status_agency", "status", "agency", "incident_id"),
        Index("ix_dispatches_agency_incident", "agency", "incident_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    #: Agency code from ``config/agencies.toml``.
    agency: Mapped[str] = mapped_column(String(32))
    #: calling → accepted | failed | cancelled, then the agency's own progress:
    #: dispatched → en_route → on_scene → resolved (or cancelled).
    status: Mapped[str] = mapped_column(String(16), default="calling")
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    accepted_at: Mapped[datetime | None]
    #: The duty line that accepted (dial string or E.164) and how it was reached (pbx, twilio).
    accepted_line: Mapped[str | None] = mapped_column(String(128))
    accepted_via: Mapped[str | None] = mapped_column(String(16))
    #: The leader term (``leader_epochs.epoch``) placing this dispatch's calls while it is ``calling``;
    #: NULL until the leader claims it (``dispatch/claims.py``).
    leader_epoch: Mapped[int | None] = mapped_column(BigInteger)


class LeaderEpoch(Base):
    """The fencing token of a leadership lock: one more each time a node takes it (``store/leadership.py``)."""

    __tablename__ = "leader_epochs"

    key: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    epoch: Mapped[int] = mapped_column(BigInteger)
    #: Host and process of the node that took it (``leadership.node_name``).
    node: Mapped[str] = mapped_column(String(128))
    since: Mapped[datetime]


class DispatchAttempt(Base):
    """One call to one duty line, with how it ended: the evidence behind every escalation."""

    __tablename__ = "dispatch_attempts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    dispatch_id: Mapped[int] = mapped_column(ForeignKey("dispatches.id", ondelete="CASCADE"), index=True)
    line: Mapped[str] = mapped_column(String(128))
    via: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    #: accepted, no_answer, busy, failed, no_key, declined, error (None while in progress).
    outcome: Mapped[str | None] = mapped_column(String(16))
    #: OriginateResponse Reason code, Twilio call status, or similar.
    reason: Mapped[str | None] = mapped_column(String(64))
    hangup_cause: Mapped[int | None] = mapped_column(Integer)
    #: Asterisk channel or Twilio call SID, to match later events.
    reference: Mapped[str | None] = mapped_column(String(64), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class DispatchUpdate(Base):
    """A status report from the agency (with a note and optional photo), shown live to the centre."""

    __tablename__ = "dispatch_updates"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    dispatch_id: Mapped[int] = mapped_column(ForeignKey("dispatches.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text, default="")
    #: Stored file name of an uploaded photo (under the configured upload directory).
    photo: Mapped[str | None] = mapped_column(String(128))
    #: Where the officer's browser was when posting the update (the map's "last position"), if it said.
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    accuracy_m: Mapped[float | None] = mapped_column(Float)


class Rating(Base):
    """A citizen's rating of how their emergency was handled (1-5), asked after the incident is resolved."""

    __tablename__ = "ratings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    #: ivr (outbound call through the PBX, press 1-5) or sms (a link through Twilio).
    via: Mapped[str] = mapped_column(String(8))
    #: requested → calling → rated | no_answer | failed | declined.
    status: Mapped[str] = mapped_column(String(16), default="requested")
    score: Mapped[int | None] = mapped_column(Integer)
    requested_at: Mapped[datetime]
    rated_at: Mapped[datetime | None]
    #: Public token for the SMS link (random; the page needs no login).
    token: Mapped[str | None] = mapped_column(String(64), unique=True)


class Callback(Base):
    """A call back to a citizen who hung up before being answered, and how it went."""

    __tablename__ = "callbacks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    requested_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    requested_at: Mapped[datetime]
    #: calling → answered | no_answer | busy | failed.
    outcome: Mapped[str] = mapped_column(String(16), default="calling")
    ended_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(String(64))
    #: The leader term placing this call-back (NULL until the leader claims it), as for dispatches.
    leader_epoch: Mapped[int | None] = mapped_column(BigInteger)
    #: Dial string of the phone that rings first (the requester's softphone, or the overflow line).
    phone: Mapped[str | None] = mapped_column(String(128))
    #: The citizen's number dialled once the phone answers (the caller's, or an app report's).
    number: Mapped[str | None] = mapped_column(String(32))


class AccessLog(Base):
    """Who opened what sensitive record (recordings, women-and-children cases): UU PDP accountability."""

    __tablename__ = "access_log"
    __table_args__ = (Index("ix_access_log_subject", "subject_type", "subject_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    at: Mapped[datetime] = mapped_column(index=True)
    action: Mapped[str] = mapped_column(String(32))
    subject_type: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class QualitySample(Base):
    """A call drawn for quality review (``supervision/quality.py``): by the weekly sample rules or by hand.

    ``calltaker`` is the call's ``answered_by`` as the queue reported it; ``calltaker_id`` the user it
    was matched to when drawn (None when no account matches), which is whom the review is shown to.
    """

    __tablename__ = "quality_samples"
    __table_args__ = (Index("ix_quality_samples_calltaker_drawn", "calltaker_id", "drawn_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), unique=True)
    #: The centre's ISO week the call belongs to, ``2026-W49``.
    week: Mapped[str] = mapped_column(String(8), index=True)
    #: random, critical, monthly (a call-taker's monthly minimum) or manual.
    reason: Mapped[str] = mapped_column(String(16))
    calltaker: Mapped[str | None] = mapped_column(String(128))
    calltaker_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    drawn_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    drawn_at: Mapped[datetime]
    due_at: Mapped[datetime] = mapped_column(index=True)


class QualityReview(Base):
    """One reviewer's scoring of one sampled call; a second reviewer on the same call calibrates.

    The first submitted review of a call is the one the call-taker reads and acknowledges; later ones
    are calibration reviews, compared with it section by section.
    """

    __tablename__ = "quality_reviews"
    __table_args__ = (UniqueConstraint("sample_id", "reviewer_id", name="uq_quality_reviews_sample_reviewer"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("quality_samples.id", ondelete="CASCADE"), index=True)
    reviewer_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    #: Section code -> level 0-4 (``supervision.quality.SECTIONS``).
    levels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: Section code -> deviation severity (minor, moderate, major, critical); absent = none.
    deviations: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: Weighted score 0-100.
    score: Mapped[float] = mapped_column(Float)
    critical: Mapped[bool] = mapped_column(default=False)
    comment: Mapped[str] = mapped_column(Text, default="")
    submitted_at: Mapped[datetime]
    acknowledged_at: Mapped[datetime | None]


class LeaderAlert(Base):
    """One message to an agency leader (or the regional head's daily summary), and how it went.

    ``key`` makes each alert happen once, whoever polls: ``event:incident:agency:recipient`` or
    ``daily:YYYY-MM-DD:recipient``. The row is written before the message is sent; ``channel`` is
    whatsapp or sms; a WhatsApp message that fails is followed by an SMS row (``fallback_of``).
    """

    __tablename__ = "leader_alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(160), unique=True)
    #: dispatched, sla_breached, resolved or daily.
    event: Mapped[str] = mapped_column(String(16))
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    agency: Mapped[str | None] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(16))
    body: Mapped[str] = mapped_column(Text)
    #: pending → queued/sent/delivered/read (Twilio's words) | failed | undelivered.
    status: Mapped[str] = mapped_column(String(16), default="pending")
    sid: Mapped[str | None] = mapped_column(String(64), index=True)
    error: Mapped[str | None] = mapped_column(String(255))
    fallback_of: Mapped[int | None] = mapped_column(ForeignKey("leader_alerts.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class StatsRollup(Base):
    """Statistics grouped per UTC hour (``span`` 1) and per UTC day (``span`` 24, the sum of its hours),
    recomputed from the raw rows whenever triggers mark an hour dirty (migration 0007, ``store/rollup.py``).

    ``hour`` is whole hours since 1970-01-01 UTC (the first hour of the span); ``kind`` says what is
    counted and ``key`` by what (a category, an agency, an answer-time bucket…); ``n`` counts, ``total``
    sums a second figure where one is needed (accepted dispatches, rating scores). One row with
    ``span`` 0 records the roll-up's definition: when it is missing or differs, everything is rebuilt.
    """

    __tablename__ = "stats_rollup"
    __table_args__ = {"sqlite_with_rowid": False}

    span: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    hour: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    n: Mapped[int] = mapped_column(Integer)
    total: Mapped[int] = mapped_column(Integer)


class StatsDirty(Base):
    """UTC hours whose roll-up is out of date, written by triggers on every change to the source tables.

    ``tx`` is the writing transaction on PostgreSQL (``txid_current()``), so concurrent writers never
    share a mark and a refresh can only delete marks of committed changes; always 0 on SQLite.
    """

    __tablename__ = "stats_dirty"
    __table_args__ = {"sqlite_with_rowid": False}

    hour: Mapped[int] = mapped_column(Integer, primary_key=True)
    tx: Mapped[int] = mapped_column(BigInteger, primary_key=True)


class LocationFix(Base):
    """A position of a caller, as evidence of the call: AML (HTTPS or SMS) or the SMS location link.

    ``call_id`` is NULL while no call of ``number`` is known (an AML message can beat the call's own
    record by a moment); the pop claims such fixes for the call (``store/locations.py``).
    """

    __tablename__ = "location_fixes"
    __table_args__ = (Index("ix_location_fixes_number_received", "number", "received_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    call_id: Mapped[str | None] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    #: E.164 of the handset the fix is about.
    number: Mapped[str] = mapped_column(String(32))
    latitude: Mapped[float] = mapped_column(Float)
    longitude: Mapped[float] = mapped_column(Float)
    accuracy_m: Mapped[float | None] = mapped_column(Float)
    #: Percent confidence of the radius (AML ``lc``; 95 for the browser), when known.
    confidence: Mapped[int | None] = mapped_column(Integer)
    #: gps, wifi, cell, fused, browser, unknown (``forms.location.SOURCES``).
    source: Mapped[str] = mapped_column(String(16))
    #: aml_https, aml_sms, link (``forms.location.VIAS``).
    via: Mapped[str] = mapped_column(String(16))
    fixed_at: Mapped[datetime | None]
    received_at: Mapped[datetime]
    #: The link the fix came through (``via = 'link'``).
    link_id: Mapped[int | None] = mapped_column(ForeignKey("location_links.id", ondelete="SET NULL"))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class LocationLink(Base):
    """An SMS link a call-taker sent to a caller: ``/l/{token}`` reports the browser's position."""

    __tablename__ = "location_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    number: Mapped[str] = mapped_column(String(32), index=True)
    token: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    #: sending → sent | failed.
    status: Mapped[str] = mapped_column(String(16))
    sms_sid: Mapped[str | None] = mapped_column(String(64))
    fixes: Mapped[int] = mapped_column(Integer, default=0)


class AppNumber(Base):
    """A phone number that uses (or tried to use) the citizen report app ``/lapor``.

    The pending verification code is kept only as a salted SHA-256 (``store/app_numbers.py``) with its
    expiry and wrong attempts; ``codes_sent`` counts the codes texted since ``codes_window_at`` (the
    per-number SMS limit). ``false_reports`` counts this number's reports classified prank/hoax;
    ``blocked_at`` is when that blocked it from the app (calls to 112 are never affected).
    """

    __tablename__ = "app_numbers"

    #: E.164.
    number: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime]
    verified_at: Mapped[datetime | None]
    code_hash: Mapped[str | None] = mapped_column(String(64))
    code_salt: Mapped[str | None] = mapped_column(String(32))
    code_expires_at: Mapped[datetime | None]
    code_attempts: Mapped[int] = mapped_column(Integer, default=0)
    codes_window_at: Mapped[datetime | None]
    codes_sent: Mapped[int] = mapped_column(Integer, default=0)
    false_reports: Mapped[int] = mapped_column(Integer, default=0)
    blocked_at: Mapped[datetime | None]


class AppDevice(Base):
    """A browser that verified its number: it holds a random token (httpOnly cookie); we keep its SHA-256."""

    __tablename__ = "app_devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(ForeignKey("app_numbers.number", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Report(Base):
    """A citizen's report from ``/lapor``: it waits in the queue like a call until a call-taker takes it
    and calls the citizen back (``store/reports.py``: states and the hook that queues it)."""

    __tablename__ = "reports"
    __table_args__ = (
        Index("ix_reports_number_created", "number", "created_at"),
        Index("ix_reports_client_created", "client_group", "created_at"),
        Index("ix_reports_status_created", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: The verified E.164 number the call-back rings.
    number: Mapped[str] = mapped_column(String(32))
    device_id: Mapped[int | None] = mapped_column(ForeignKey("app_devices.id", ondelete="SET NULL"))
    #: An intake category code (``forms/categories.py``).
    category: Mapped[str] = mapped_column(String(32))
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    accuracy_m: Mapped[float | None] = mapped_column(Float)
    #: The photo's random file name under ``[report] upload_dir``.
    photo: Mapped[str | None] = mapped_column(String(64))
    #: The client's address group (IPv4 address or IPv6 /64), for the per-address limit.
    client_group: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    #: waiting → taken → called_back → closed (``store.reports.REPORT_STATES``).
    status: Mapped[str] = mapped_column(String(16))
    taken_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    taken_at: Mapped[datetime | None]
    #: The Asterisk uniqueid of the call-back call.
    callback_uniqueid: Mapped[str | None] = mapped_column(String(64), index=True)
    called_back_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    #: A call classification code (``forms.categories.CLASSIFICATIONS``); prank/hoax count against the number.
    classification: Mapped[str | None] = mapped_column(String(32))
    classified_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    classified_at: Mapped[datetime | None]


class LoginBucket(Base):
    """One bucket of the shared login guard (``store/login_throttle.py``): failures counted for a key
    (a username and client pair, a client, a username, an overflow bucket) and when its next attempt may
    start. Times are wall-clock seconds (every node's clock: NTP-synchronised hosts)."""

    __tablename__ = "login_buckets"
    __table_args__ = (Index("ix_login_buckets_next_last", "next_at", "last"),)

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[float] = mapped_column(Float, default=0.0)
    last: Mapped[float] = mapped_column(Float, default=0.0)


class LoginKnown(Base):
    """A (username, client) pair that logged in successfully: the shared buckets do not slow it."""

    __tablename__ = "login_known"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    client: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[float] = mapped_column(Float)


class LoginFailure(Base):
    """A failed or refused login across the centre (no username: people type passwords into it), kept
    for the attack alert's window."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    client: Mapped[str] = mapped_column(String(64))


class LoginAlert(Base):
    """A login attack reported to the supervisors (once per window, whichever node saw it)."""

    __tablename__ = "login_alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[float] = mapped_column(Float)
    failures: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)
    clients: Mapped[int] = mapped_column(Integer)
    top_client: Mapped[str] = mapped_column(String(64))
    top_client_failures: Mapped[int] = mapped_column(Integer)
