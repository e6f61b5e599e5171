"""Console news that every app node must show: announced as store signals, re-read, sent by each node.

Each node follows AMI itself, so what AMI says (pops, hangups, queue members, pauses and their
reasons) reaches every node's consoles through its own tracker and :class:`LiveHub` already. What
only one node knows is what the app itself changed: a dispatch's state (officer status, acceptance,
photo), a call-back, a rating, a service-level breach, a caller's position, a login attack. Those go
through the store's change signal (``store/signals.py``) instead of straight to the hub:

- the services keep calling ``publish(message, roles=…, agency=…)`` (``store.roles.Publish``); a
  message of a kind listed in :data:`TOPICS` becomes ``signals.changed(<topic>, <row id>)``;
- every node (the one that made the change in-process, the others by ``NOTIFY``) re-reads that row
  and sends what it finds to its own sockets, once;
- after a node's listening connection came back (notifications may have been lost), its consoles are
  told ``{"type": "resync"}`` and re-read everything, as they do after their own reconnects.

Messages of other kinds (queue, presence alerts from AMI) stay on the node that made them.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import structlog

from callcenter.dispatch.sla import Breach
from callcenter.store.accounts import SESSIONS_TOPIC
from callcenter.store.dispatches import SIGNAL_TOPIC as DISPATCH_TOPIC
from callcenter.store.dispatches import Dispatches, allowed_next, incident_summary
from callcenter.store.engine import Store
from callcenter.store.locations import fix_json
from callcenter.store.models import Call, Callback, Incident, LocationFix, Rating
from callcenter.store.roles import CENTRE_ROLES, CONSOLE_ROLES, SUPERVISOR_ROLES
from callcenter.store.signals import ALL
from callcenter.supervision.callbacks import SIGNAL_TOPIC as CALLBACK_TOPIC
from callcenter.supervision.callbacks import callback_json
from callcenter.supervision.ratings import rating_json
from callcenter.tasks import Background
from callcenter.web.hub import LiveHub

log = structlog.get_logger("callcenter.web.news")

#: Message type → (signal topic, the field holding the row, the row's id field).
TOPICS: Mapping[str, tuple[str, str | None, str]] = {
    "dispatch": (DISPATCH_TOPIC, "dispatch", "id"),
    "callback": (CALLBACK_TOPIC, "callback", "id"),
    "rating": ("rating", "rating", "id"),
    "sla_breach": ("sla_breach", None, "incident_id"),
}
#: The topic whose :data:`~callcenter.store.signals.ALL` round tells the consoles to re-read everything.
RESYNC_TOPIC = "console"
LOCATION_TOPIC = "location"
LOGIN_ATTACK_TOPIC = "login_attack"


class LiveNews:
    """Turns the services' console messages into signals, and signals into messages on this node's sockets."""

    def __init__(
        self,
        store: Store,
        hub: LiveHub,
        dispatches: Dispatches,
        *,
        agency_names: Callable[[], Mapping[str, str]] = dict,
        login_attack: Callable[[str], Any] | None = None,
    ) -> None:
        self.store = store
        self.hub = hub
        self.dispatches = dispatches
        self.agency_names = agency_names
        #: Reads a stored login-attack report by key (the shared login guard's), None without one.
        self.login_attack = login_attack
        self.signals = store.signals
        #: Announcements on their way (``announce`` does not wait for them).
        self._tasks = Background()
        #: (topic, key) being re-read now → whether another change came meanwhile (read again after).
        self._reading: dict[tuple[str, str], bool] = {}
        readers: dict[str, Callable[[str], Coroutine[Any, Any, None]]] = {
            "dispatch": self._dispatch,
            "callback": self._callback,
            "rating": self._rating,
            "sla_breach": self._sla_breach,
            LOCATION_TOPIC: self._location,
            LOGIN_ATTACK_TOPIC: self._login_attack,
        }
        self._unsubscribe = [
            self.signals.subscribe(topic, self._in_turn(topic, reader)) for topic, reader in readers.items()
        ]
        self._unsubscribe.append(self.signals.subscribe(RESYNC_TOPIC, self._resync))
        # Sessions ended anywhere: this node's sockets of those sessions close now (one query for all).
        self._unsubscribe.append(self.signals.subscribe(SESSIONS_TOPIC, lambda _key: self.hub.check_sessions()))

    async def close(self) -> None:
        for undo in self._unsubscribe:
            undo()
        self._unsubscribe = []
        await self._tasks.settle()

    # -- announcing ---------------------------------------------------------------------------------

    def publish(self, message: dict[str, Any], *, roles: tuple[str, ...] = (), agency: str | None = None) -> None:
        """The ``Publish`` the wiring hands the services: shared kinds become a signal (every node re-reads
        the row), the rest goes to this node's consoles as it is. Never blocks, never raises."""
        kind = str(message.get("type", ""))
        found = TOPICS.get(kind)
        if found is None:
            self.hub.broadcast(message, roles=roles, agency=agency)
            return
        topic, holder, id_field = found
        body = message.get(holder) if holder else message
        key = body.get(id_field) if isinstance(body, Mapping) else None
        if key is None:
            log.warning("news.unkeyed", kind=kind)
            self.hub.broadcast(message, roles=roles, agency=agency)
            return
        self.announce(topic, key)

    def announce(self, topic: str, key: object) -> None:
        """``topic``/``key`` was committed: tell every node (this one at once), without waiting."""
        self._tasks.spawn(self.signals.changed(topic, key), name="news-announce")

    # -- re-reading ---------------------------------------------------------------------------------

    def _in_turn(
        self, topic: str, reader: Callable[[str], Coroutine[Any, Any, None]]
    ) -> Callable[[str], Coroutine[Any, Any, None]]:
        """One re-read of a row at a time: changes that come while it is read make one more read after
        it, so the last message a console gets about a row shows its latest state (two reads racing
        could deliver the older one last), and a burst of changes costs two reads, not one each."""

        async def read(key: str) -> None:
            slot = (topic, key)
            if slot in self._reading:
                self._reading[slot] = True
                return
            self._reading[slot] = False
            try:
                while True:
                    await reader(key)
                    if not self._reading[slot]:
                        break
                    self._reading[slot] = False
            finally:
                del self._reading[slot]

        return read

    async def _read(self, what: str, model: type[Any], key: str) -> Any:
        if key == ALL or not key.isdigit():
            return None
        row_id = int(key)

        async def op(session: Any) -> Any:
            return await session.get(model, row_id)

        return await self.store.transaction(f"news_{what}", op)

    async def _dispatch(self, key: str) -> None:
        if key == ALL or not key.isdigit():
            return
        view = await self.dispatches.get(int(key))
        if view is None:
            return
        body = view.as_json()
        body["agency_name"] = self.agency_names().get(view.dispatch.agency, view.dispatch.agency)
        body["next"] = sorted(allowed_next(view.dispatch.status))
        incidents: list[Mapping[str, Any]] = [incident_summary(view.incident)] if view.incident is not None else []
        self.hub.broadcast(
            {"type": "dispatch", "dispatch": body},
            roles=CENTRE_ROLES,
            agency=view.dispatch.agency,
            reads=("ws_dispatch", incidents),
        )

    async def _callback(self, key: str) -> None:
        row = await self._read("callback", Callback, key)
        if row is not None:
            self.hub.broadcast({"type": "callback", "callback": callback_json(row)}, roles=CENTRE_ROLES)

    async def _rating(self, key: str) -> None:
        row = await self._read("rating", Rating, key)
        if row is not None:
            self.hub.broadcast({"type": "rating", "rating": rating_json(row)}, roles=SUPERVISOR_ROLES)

    async def _sla_breach(self, key: str) -> None:
        incident = await self._read("sla_breach", Incident, key)
        if incident is None or incident.sla_due_at is None or incident.sla_breached_at is None:
            return
        breach = Breach(incident.id, incident.reference, incident.category, incident.sla_due_at)
        self.hub.broadcast(breach.message(), roles=CENTRE_ROLES)

    async def _location(self, key: str) -> None:
        if key == ALL or not key.isdigit():
            return
        fix_id = int(key)

        async def op(session: Any) -> tuple[LocationFix, Call] | None:
            fix = await session.get(LocationFix, fix_id)
            call = await session.get(Call, fix.call_id) if fix is not None and fix.call_id else None
            return (fix, call) if fix is not None and call is not None else None

        found = await self.store.transaction("news_location", op)
        if found is None:
            return
        fix, call = found
        sent = self.hub.send_to_call(call.uniqueid, {"type": "location", "call_id": call.id, "fix": fix_json(fix)})
        log.info("location.shown", fix_id=fix.id, call_id=call.id, consoles=sent)

    async def _login_attack(self, key: str) -> None:
        if key == ALL or self.login_attack is None:
            return
        report = await self.login_attack(key)
        if report is not None:
            self.hub.broadcast({"type": "login_attack", **report}, roles=SUPERVISOR_ROLES)

    def _resync(self, key: str) -> None:
        if key == ALL:
            self.hub.broadcast({"type": "resync"}, roles=CONSOLE_ROLES)


__all__ = ["LOCATION_TOPIC", "LOGIN_ATTACK_TOPIC", "RESYNC_TOPIC", "TOPICS", "LiveNews"]
