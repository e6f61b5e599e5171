"""Every typed key the composition root puts on the aiohttp application, declared together.

The contexts that fill them live in ``callcenter/wiring.py``; handlers read them. Keys of services
built after the AGI server (the dispatcher, ratings, call-backs, the Twilio line, the SLA timer's
interval) may be absent for a moment at startup, or for good when a test leaves that part out: read
those with ``app.get(KEY)``.
"""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web
from prometheus_client import CollectorRegistry

from callcenter.agi.server import AgiServer
from callcenter.config import Config
from callcenter.dispatch.agencies import Directory
from callcenter.dispatch.dispatcher import Dispatcher
from callcenter.dispatch.twilio_line import TwilioLine
from callcenter.forms.intake import Districts
from callcenter.queue.ami import AmiClient
from callcenter.queue.fanout import AmiFanout
from callcenter.queue.presence import Presence
from callcenter.queue.reports import ReportQueue
from callcenter.queue.routing import CallRouter
from callcenter.queue.tracker import QueueTracker
from callcenter.store import Calls, Store
from callcenter.store.accounts import Accounts
from callcenter.store.app_numbers import AppNumbers
from callcenter.store.calllog import CallLog
from callcenter.store.dispatches import Dispatches
from callcenter.store.incidents import Incidents
from callcenter.store.leadership import Leadership
from callcenter.store.locations import Locations
from callcenter.store.pending import PendingWrites
from callcenter.store.reports import Reports
from callcenter.store.stats import Stats
from callcenter.supervision.callbacks import Callbacks
from callcenter.supervision.leaders import LeaderAlerts
from callcenter.supervision.presence_control import AutoPause, PresenceBoard
from callcenter.supervision.quality import Quality
from callcenter.supervision.ratings import Ratings
from callcenter.tasks import Background
from callcenter.web.clients import ClientResolver
from callcenter.web.hub import LiveHub
from callcenter.web.news import LiveNews
from callcenter.web.ratelimit import AddressLimiter
from callcenter.web.throttle import LoginGuard

# Set before startup (by create_app, or by a test).
CONFIG = web.AppKey("config", Config)
#: The centre's UTC offset for "today", days and hours; set before startup to override the server's.
TZ_OFFSET = web.AppKey("stats_tz_offset", timedelta)
#: Seconds between two passes of the service-level timer (tests shorten it before startup).
SLA_INTERVAL = web.AppKey("sla_interval", float)

# The long-lived connections and the call path.
STORE = web.AppKey("store", Store)
#: Calls, their timelines and the numbers calling (``store/calls.py``): the call path writes through it.
CALLS = web.AppKey("calls", Calls)
BACKGROUND = web.AppKey("background", Background)
PENDING = web.AppKey("pending", PendingWrites)
AGI = web.AppKey("agi", AgiServer)
AMI = web.AppKey("ami", AmiClient)
AMI_FANOUT = web.AppKey("ami_fanout", AmiFanout)
TRACKER = web.AppKey("tracker", QueueTracker)
PRESENCE = web.AppKey("presence", Presence)
#: The app's own Prometheus registry (``web/metrics.py``): never prometheus-client's global one.
METRICS = web.AppKey("metrics", CollectorRegistry)
HUB = web.AppKey("live_hub", LiveHub)
#: Console news every node shows: announced as store signals, re-read by each node (``web/news.py``).
NEWS = web.AppKey("live_news", LiveNews)
#: Routes 112 callers from AMI during the greeting (``queue/routing.py``); its ``stats`` count late routes.
ROUTER = web.AppKey("router", CallRouter)
#: Whether this node leads the ones sharing its database (``store/leadership.py``): leader-only loops follow it.
LEADERSHIP = web.AppKey("leadership", Leadership)

# The repositories the web API serves from: built once the store exists.
ACCOUNTS = web.AppKey("accounts", Accounts)
# Login and client identity (``web/auth.py``): the failed-login guard, and how a request's client
# address and scheme are read (forwarded headers only from trusted proxies).
LOGIN_GUARD = web.AppKey("login_guard", LoginGuard)
CLIENTS = web.AppKey("clients", ClientResolver)
INCIDENTS = web.AppKey("incidents", Incidents)
DISTRICTS = web.AppKey("districts", Districts)
DISPATCHES = web.AppKey("dispatches", Dispatches)
STATS = web.AppKey("stats", Stats)
CALL_LOG = web.AppKey("call_log", CallLog)
#: Caller location evidence (``store/locations.py``) and the per-address limit of the public /l/ pages.
LOCATIONS = web.AppKey("locations", Locations)
LIMITER = web.AppKey("public_limiter", AddressLimiter)
#: Citizen reports from /lapor (``store/reports.py``; the queue side adds its sink), the app's numbers and
#: devices (``store/app_numbers.py``), and the per-address limit of verification codes.
REPORTS = web.AppKey("reports", Reports)
APP_NUMBERS = web.AppKey("app_numbers", AppNumbers)
CODE_LIMITER = web.AppKey("code_limiter", AddressLimiter)
#: Puts waiting reports into the call-takers' queue and marks them taken (``queue/reports.py``).
REPORT_QUEUE = web.AppKey("report_queue", ReportQueue)
#: Quality review of call handling (``supervision/quality.py``).
QUALITY = web.AppKey("quality", Quality)
#: Time in state per queue member and the auto-pause after missed offers (``supervision/presence_control.py``).
PRESENCE_BOARD = web.AppKey("presence_board", PresenceBoard)
AUTO_PAUSE = web.AppKey("auto_pause", AutoPause)
#: Alerts to agency leaders and the daily summary (``supervision/leaders.py``); absent without leaders.
LEADER_ALERTS = web.AppKey("leader_alerts", LeaderAlerts)

# Dispatch and supervision services, built after AMI and the live hub.
#: The Twilio line; may be set before startup (tests put a line aimed at the fake Twilio here).
TWILIO = web.AppKey("twilio_line", TwilioLine)
DIRECTORY = web.AppKey("agency_directory", Directory)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
CALLBACKS = web.AppKey("callbacks", Callbacks)
RATINGS = web.AppKey("ratings", Ratings)
