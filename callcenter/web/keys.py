"""Typed keys for what the composition root puts on the aiohttp application."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry

from callcenter.agi.server import AgiServer
from callcenter.config import Config
from callcenter.forms.intake import Districts
from callcenter.queue.ami import AmiClient
from callcenter.queue.presence import Presence
from callcenter.queue.tracker import QueueTracker
from callcenter.store import Store
from callcenter.store.accounts import Accounts
from callcenter.store.dispatches import Dispatches
from callcenter.store.incidents import Incidents
from callcenter.store.pending import PendingWrites
from callcenter.store.stats import Stats
from callcenter.tasks import Background

if TYPE_CHECKING:
    # Typed for mypy only: importing the supervision package at run time from here would be a cycle
    # (its package module wires contexts that read these keys).
    from callcenter.supervision.presence_control import AutoPause, PresenceBoard
    from callcenter.supervision.quality import Quality

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
BACKGROUND = web.AppKey("background", Background)
PENDING = web.AppKey("pending", PendingWrites)
AGI = web.AppKey("agi", AgiServer)
AMI = web.AppKey("ami", AmiClient)
TRACKER = web.AppKey("tracker", QueueTracker)
PRESENCE = web.AppKey("presence", Presence)
#: The app's own Prometheus registry (``web/metrics.py``): never prometheus-client's global one.
METRICS = web.AppKey("metrics", CollectorRegistry)

# The repositories the web API serves from: built by the composition root once the store exists.
ACCOUNTS = web.AppKey("accounts", Accounts)
INCIDENTS = web.AppKey("incidents", Incidents)
DISTRICTS = web.AppKey("districts", Districts)
DISPATCHES = web.AppKey("dispatches", Dispatches)
STATS = web.AppKey("stats", Stats)
#: Quality review of call handling (``supervision/quality.py``).
QUALITY: web.AppKey[Quality] = web.AppKey("quality")
#: Time in state per queue member and the auto-pause after missed offers (``supervision/presence_control.py``).
PRESENCE_BOARD: web.AppKey[PresenceBoard] = web.AppKey("presence_board")
AUTO_PAUSE: web.AppKey[AutoPause] = web.AppKey("auto_pause")
