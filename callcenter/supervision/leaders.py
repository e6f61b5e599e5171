"""Alerts to agency leaders through Twilio WhatsApp, with SMS as the fallback, and a daily summary.

Sumenep's heads of agency and section chiefs are told the moment a report concerns them, and their
Regent follows the centre daily (``shared/DOMAIN.md``). ``config/leaders.toml`` lists, per agency, the
leaders (head, section chief) with a number and what they want: categories, priorities and events
(``dispatched`` to their agency, ``sla_breached``, ``resolved``); ``regional_head`` entries get the
summary of the day before, after ``[supervision] daily_summary_hour``.

**Once per alert.** :class:`LeaderAlerts` polls the store (like the rating trigger: an event written by
another instance, or while this one restarted, is still found) and writes the alert's row — with a
unique key per event, incident, agency and recipient — before sending, so two pollers never both send.

**WhatsApp, then SMS.** Indonesian officials live on WhatsApp: when the centre has a WhatsApp sender
(``[twilio] whatsapp_from``) and the leader accepts it, the message goes out as ``whatsapp:+62…`` through
Twilio's Messages API. When Twilio refuses it (a number not on WhatsApp, outside the 24 h window: error
63016…) or its signed status callback later reports ``failed`` / ``undelivered``, the same text follows
by SMS, once. Without a WhatsApp sender the alert goes by SMS directly.

**What the messages say.** Short, Indonesian, and no personal data: the incident's reference, category,
priority and district — never names, numbers or addresses. Cases of violence against women and children
carry only the reference and that such a case was passed on (UU PDP: specific personal data, and the
victim's safety): the details stay in the console, behind its access log.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any, Protocol

import structlog

from callcenter.forms.categories import CATEGORIES, CATEGORY_CODES, PRIORITIES, PRIORITY_CODES, WOMEN_AND_CHILDREN
from callcenter.store import utcnow
from callcenter.store.leader_alerts import IncidentEvent, LeaderAlertStore

log = structlog.get_logger("callcenter.supervision.leaders")

ROLES = ("head", "section_chief", "regional_head")
EVENTS = ("dispatched", "sla_breached", "resolved")
CHANNELS = ("whatsapp", "sms")
#: Events older than this are not alerted any more (the first start after an upgrade must not send a
#: day of old news).
HORIZON = timedelta(hours=1)
#: Twilio message statuses after which a WhatsApp message will not arrive.
UNDELIVERED = frozenset({"failed", "undelivered"})
#: Twilio's delivery reports of these messages, ``?alert=<id>`` (served by ``web/twilio_hooks.py``).
MESSAGE_STATUS_PATH = "/api/twilio/message-status"
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_CATEGORY = {c.code: c.label_id for c in CATEGORIES}
_PRIORITY = {p.code: p.label_id for p in PRIORITIES}


class LeadersConfigError(ValueError):
    """A bad leaders file: the message names the entry and the field."""


@dataclass(frozen=True)
class Leader:
    name: str
    role: str
    number: str
    agency: str | None
    categories: frozenset[str]
    priorities: frozenset[str]
    events: frozenset[str]
    channels: tuple[str, ...]

    def wants(self, event: IncidentEvent) -> bool:
        return (
            self.role != "regional_head"
            and self.agency == event.agency
            and event.event in self.events
            and (not self.categories or event.category in self.categories)
            and (not self.priorities or event.priority in self.priorities)
        )


def _codes(where: str, entry: Mapping[str, Any], name: str, allowed: Sequence[str] | frozenset[str]) -> frozenset[str]:
    raw = entry.get(name, [])
    if not isinstance(raw, list) or not all(isinstance(v, str) and v in allowed for v in raw):
        raise LeadersConfigError(f"{where}: {name} must be a list of {', '.join(sorted(allowed))}")
    return frozenset(raw)


def parse_leaders(data: Mapping[str, Any], agencies: Sequence[str]) -> tuple[Leader, ...]:
    """``[[leader]]`` entries, each checked; the first bad one stops the start with its name."""
    entries = data.get("leader", [])
    if not isinstance(entries, list):
        raise LeadersConfigError("leaders file: [[leader]] entries expected")
    unknown_top = set(data) - {"leader"}
    if unknown_top:
        raise LeadersConfigError(f"leaders file: unknown keys {sorted(unknown_top)}")
    out = []
    for i, entry in enumerate(entries):
        where = f"leader #{i + 1} ({entry.get('name', '?') if isinstance(entry, dict) else '?'})"
        if not isinstance(entry, dict):
            raise LeadersConfigError(f"{where}: a table expected")
        extra = set(entry) - {"name", "role", "number", "agency", "categories", "priorities", "events", "channels"}
        if extra:
            raise LeadersConfigError(f"{where}: unknown keys {sorted(extra)}")
        name, role, number, agency = entry.get("name"), entry.get("role"), entry.get("number"), entry.get("agency")
        if not isinstance(name, str) or not name.strip():
            raise LeadersConfigError(f"{where}: name is required")
        if role not in ROLES:
            raise LeadersConfigError(f"{where}: role must be one of {', '.join(ROLES)}")
        if not isinstance(number, str) or not _E164.match(number):
            raise LeadersConfigError(f"{where}: number must be E.164 (+62…)")
        if role != "regional_head" and agency not in agencies:
            raise LeadersConfigError(f"{where}: agency must be one of the directory's agencies")
        channels = entry.get("channels", list(CHANNELS))
        if not isinstance(channels, list) or not channels or not all(c in CHANNELS for c in channels):
            raise LeadersConfigError(f"{where}: channels must be a list of whatsapp, sms")
        events = _codes(where, entry, "events", EVENTS) or frozenset(EVENTS)
        out.append(
            Leader(
                name.strip(),
                str(role),
                number,
                str(agency) if role != "regional_head" else None,
                _codes(where, entry, "categories", CATEGORY_CODES),
                _codes(where, entry, "priorities", PRIORITY_CODES),
                events,
                tuple(dict.fromkeys(channels)),
            )
        )
    return tuple(out)


def load_leaders(path: str, agencies: Sequence[str]) -> tuple[Leader, ...]:
    if not path:
        return ()
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise LeadersConfigError(f"leaders file {path}: {exc}") from exc
    return parse_leaders(data, agencies)


# -- the texts ------------------------------------------------------------------------------------------


def alert_text(event: IncidentEvent, agency_name: str) -> str:
    """The short Indonesian message; no names, numbers or addresses, and nothing of a W&C case."""
    ref = event.reference
    if event.category == WOMEN_AND_CHILDREN:
        what = {
            "dispatched": "diteruskan ke",
            "sla_breached": "belum diterima oleh",
            "resolved": "selesai ditangani oleh",
        }[event.event]
        return f"112 {ref}: laporan perlindungan perempuan dan anak {what} {agency_name}. Rincian hanya di konsol 112."
    category = _CATEGORY.get(event.category, event.category)
    place = f" di Kec. {event.district}" if event.district else ""
    if event.event == "dispatched":
        priority = _PRIORITY.get(event.priority, event.priority)
        return f"112 {ref}: {category}{place}, prioritas {priority}. Diteruskan ke {agency_name}."
    if event.event == "sla_breached":
        return f"112 {ref}: batas waktu layanan {category}{place} terlewati; {agency_name} belum menerima."
    return f"112 {ref}: {category}{place} selesai ditangani {agency_name}."


def daily_text(
    day: str,
    calls: int,
    answered: int,
    by_category: Mapping[str, int],
    nuisance: int,
    classified: int,
    sla_due: int,
    sla_met: int,
) -> str:
    cats = ", ".join(f"{_CATEGORY.get(c, c)} {n}" for c, n in sorted(by_category.items(), key=lambda kv: -kv[1]))
    prank = f"{round(100 * nuisance / classified)}%" if classified else "-"
    sla = f"{sla_met}/{sla_due} ({round(100 * sla_met / sla_due)}%)" if sla_due else "-"
    return (
        f"Ringkasan 112 {day}: {calls} panggilan ({answered} dijawab); laporan: {cats or 'tidak ada'}; "
        f"iseng/hoaks/diam {prank}; batas waktu layanan terpenuhi {sla}."
    )


# -- the service ------------------------------------------------------------------------------------------


class Sender(Protocol):
    async def message(self, to: str, body: str, *, whatsapp: bool, status_callback: str | None = None) -> str: ...


class LeaderAlerts:
    def __init__(
        self,
        store: LeaderAlertStore,
        leaders: Sequence[Leader],
        sender: Callable[[], Sender | None],
        *,
        whatsapp: bool,
        public_url: str,
        offset: timedelta,
        agency_name: Callable[[str], str],
        daily_hour: int = 7,
    ) -> None:
        self.store = store
        self.leaders = tuple(leaders)
        self.sender = sender
        self.whatsapp = whatsapp
        self.public_url = public_url.rstrip("/")
        self.offset = offset
        self.agency_name = agency_name
        self.daily_hour = daily_hour

    def _callback(self, alert_id: int) -> str | None:
        return f"{self.public_url}{MESSAGE_STATUS_PATH}?alert={alert_id}" if self.public_url else None

    async def poll(self, now: datetime | None = None) -> int:
        """Send every alert that became due; returns how many were claimed."""
        now = now or utcnow()
        events = await self.store.events_since(now - HORIZON)
        wanted: list[tuple[str, IncidentEvent, Leader]] = []
        for event in events:
            for leader in self.leaders:
                if leader.wants(event):
                    key = f"{event.event}:{event.incident_id}:{event.agency}:{leader.number}"
                    wanted.append((key, event, leader))
        done = await self.store.existing(k for k, _, _ in wanted)
        sent = 0
        for key, event, leader in wanted:
            if key in done:
                continue
            body = alert_text(event, self.agency_name(event.agency))
            if await self._send(key, event.event, leader, body, incident_id=event.incident_id, agency=event.agency):
                sent += 1
        return sent

    async def tick(self, now: datetime | None = None) -> int:
        """What the app's loop runs: incident alerts, then the daily summary when it is due."""
        now = now or utcnow()
        return await self.poll(now) + await self.daily(now)

    async def _send(self, key: str, event: str, leader: Leader, body: str, **where: Any) -> bool:
        use_whatsapp = self.whatsapp and "whatsapp" in leader.channels
        channel = "whatsapp" if use_whatsapp else "sms"
        if channel == "sms" and "sms" not in leader.channels:
            log.warning("leaders.no_channel", key=key, reason="whatsapp not configured and sms not wanted")
            return False
        alert_id = await self.store.claim(key, event, leader.number, channel, body, **where)
        if alert_id is None:
            return False
        await self._deliver(alert_id, leader, channel, body, key)
        return True

    async def _deliver(self, alert_id: int, leader: Leader, channel: str, body: str, key: str) -> None:
        line = self.sender()
        if line is None:
            await self.store.settle(alert_id, "failed", error="twilio is not configured")
            log.warning("leaders.not_sent", alert_id=alert_id, reason="twilio not configured")
            return
        try:
            sid = await line.message(
                leader.number, body, whatsapp=channel == "whatsapp", status_callback=self._callback(alert_id)
            )
        except Exception as exc:  # Twilio refused or unreachable: the row says so; WhatsApp falls back to SMS
            await self.store.settle(alert_id, "failed", error=str(exc))
            log.warning("leaders.send_failed", alert_id=alert_id, channel=channel, error=str(exc))
            if channel == "whatsapp":
                await self._fallback(alert_id, leader.number, body, key)
            return
        await self.store.settle(alert_id, "queued", sid=sid)
        log.info("leaders.sent", alert_id=alert_id, channel=channel)

    async def _fallback(self, alert_id: int, number: str, body: str, key: str) -> None:
        leader = next((lead for lead in self.leaders if lead.number == number), None)
        if leader is None or "sms" not in leader.channels:
            return
        row = await self.store.get(alert_id)
        if row is None:
            return
        sms_id = await self.store.claim(f"{key}:sms", row.event, number, "sms", body, fallback_of=alert_id)
        if sms_id is not None:
            log.info("leaders.sms_fallback", alert_id=alert_id, sms_alert_id=sms_id)
            await self._deliver(sms_id, leader, "sms", body, f"{key}:sms")

    async def on_status(self, alert_id: int, params: Mapping[str, str]) -> bool:
        """A signed status callback from Twilio; False for an alert we do not know."""
        row = await self.store.get(alert_id)
        if row is None or (row.sid and params.get("MessageSid") and params.get("MessageSid") != row.sid):
            return False
        status = str(params.get("MessageStatus") or params.get("SmsStatus") or "")[:16]
        if not status:
            return True
        await self.store.settle(alert_id, status, error=params.get("ErrorCode") or None)
        if row.channel == "whatsapp" and status in UNDELIVERED and row.status not in UNDELIVERED:
            await self._fallback(alert_id, row.recipient, row.body, row.key)
        return True

    async def daily(self, now: datetime) -> int:
        """The regional head's summary of yesterday (local), once, from ``daily_hour`` on."""
        heads = [lead for lead in self.leaders if lead.role == "regional_head"]
        local = now.astimezone(UTC) + self.offset
        if not heads or local.hour < self.daily_hour:
            return 0
        day = local.date() - timedelta(days=1)
        keys = {f"daily:{day.isoformat()}:{h.number}": h for h in heads}
        missing = set(keys) - await self.store.existing(keys)
        if not missing:
            return 0
        start = datetime.combine(day, time(), tzinfo=UTC) - self.offset
        f = await self.store.daily(start, start + timedelta(days=1))
        body = daily_text(
            day.strftime("%d-%m-%Y"),
            f.calls,
            f.answered,
            f.incidents_by_category,
            f.nuisance,
            f.classified,
            f.sla_due,
            f.sla_met,
        )
        sent = 0
        for key in sorted(missing):
            if await self._send(key, "daily", keys[key], body):
                sent += 1
        return sent
