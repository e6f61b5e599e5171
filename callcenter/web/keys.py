"""Typed keys for what the composition root puts on the aiohttp application."""

from __future__ import annotations

from aiohttp import web

from callcenter.agi.server import AgiServer
from callcenter.config import Config
from callcenter.queue.ami import AmiClient
from callcenter.queue.presence import Presence
from callcenter.queue.tracker import QueueTracker
from callcenter.store import Store
from callcenter.store.pending import PendingWrites
from callcenter.tasks import Background

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
BACKGROUND = web.AppKey("background", Background)
PENDING = web.AppKey("pending", PendingWrites)
AGI = web.AppKey("agi", AgiServer)
AMI = web.AppKey("ami", AmiClient)
TRACKER = web.AppKey("tracker", QueueTracker)
PRESENCE = web.AppKey("presence", Presence)
