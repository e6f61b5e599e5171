"""``/metrics`` in Prometheus' text format: is the 112 path healthy, and how loaded is it.

Each app has its own ``CollectorRegistry`` (not prometheus-client's global one), so several apps in one
process (tests, benchmarks) never share or clash over a metric. Most figures are read from the live
objects when Prometheus scrapes (AGI outcome counts, the tracker's live picture, the AMI link, open
WebSockets): nothing on the call path does extra work for them. Database latency is a histogram the
store feeds from every transaction.

Not public: the figures tell an outsider how busy the centre is and whether its PBX link is down. Served
to loopback without more (a Prometheus on the same host), or to anyone presenting
``Authorization: Bearer <[web] metrics_token>``. A request that came through a reverse proxy (it carries
``Forwarded``/``X-Forwarded-For``) does not count as loopback even though the proxy connects from there.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Iterable

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from callcenter.store.roles import CONSOLE_ROLES
from callcenter.web.access import error
from callcenter.web.keys import AGI, AMI, CONFIG, HUB, METRICS, REPORT_QUEUE, TRACKER

routes = web.RouteTableDef()

#: Seconds; a transaction of the call path takes a few ms, a statistics read up to a few hundred.
DB_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")
#: The classic text format ``generate_latest`` writes, which every Prometheus version reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def new_registry(app: web.Application) -> CollectorRegistry:
    """The app's own registry, with the collector that reads the app's live objects at scrape time."""
    registry = CollectorRegistry()
    registry.register(AppCollector(app))
    return registry


def db_latency(registry: CollectorRegistry) -> Histogram:
    """The histogram ``Store.transaction`` feeds (the composition root wires it to the store)."""
    return Histogram(
        "callcenter_db_transaction_seconds",
        "Time of database transactions, retries through an outage included.",
        buckets=DB_BUCKETS,
        registry=registry,
    )


class AppCollector(Collector):
    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterable[Metric]:
        app = self.app
        sessions = CounterMetricFamily(
            "callcenter_agi_sessions",
            "FastAGI sessions by route and outcome (completed, or why not: the dialplan then fell back).",
            labels=["route", "outcome"],
        )
        agi = app.get(AGI)
        if agi is not None:
            for (route, outcome), count in sorted(agi.stats.outcomes.items()):
                sessions.add_metric([route, outcome], count)
        yield sessions

        tracker = app.get(TRACKER)
        ami = app.get(AMI)
        yield CounterMetricFamily(
            "callcenter_dialplan_fallbacks",
            "Callers the dialplan queued with defaults because the app did not route them (CC_FALLBACK).",
            value=tracker.fallbacks if tracker is not None else 0,
        )
        waiting = GaugeMetricFamily("callcenter_callers_waiting", "Callers waiting in the queue now.", labels=["queue"])
        longest = GaugeMetricFamily(
            "callcenter_longest_wait_seconds", "How long the longest-waiting caller has waited.", labels=["queue"]
        )
        members = GaugeMetricFamily(
            "callcenter_queue_members", "Call-takers in the queue, paused or not.", labels=["queue", "paused"]
        )
        queue = app[CONFIG].queue.name
        counts = {queue: 0}
        oldest: dict[str, float] = {queue: 0.0}
        member_counts = {(queue, "false"): 0, (queue, "true"): 0}
        backlog = 0
        if tracker is not None:
            now = time.time()
            for caller in list(tracker.live.waiting.values()):
                counts[caller.queue] = counts.get(caller.queue, 0) + 1
                waited = max(0.0, now - caller.joined_at.timestamp())
                oldest[caller.queue] = max(oldest.get(caller.queue, 0.0), waited)
            for member in list(tracker.live.members.values()):
                key = (member.queue, "true" if member.paused else "false")
                member_counts[key] = member_counts.get(key, 0) + 1
            backlog = tracker.backlog
        for name, count in sorted(counts.items()):
            waiting.add_metric([name], count)
            longest.add_metric([name], oldest.get(name, 0.0))
        for (name, paused), count in sorted(member_counts.items()):
            members.add_metric([name, paused], count)
        yield waiting
        yield longest
        yield members
        yield GaugeMetricFamily(
            "callcenter_ami_up",
            "1 while the AMI link is logged in and the live picture follows Asterisk.",
            value=1 if ami is not None and ami.ready.is_set() and tracker is not None and tracker.link_up else 0,
        )
        yield GaugeMetricFamily(
            "callcenter_timeline_backlog", "AMI events handled but not yet written to the database.", value=backlog
        )
        reports = app.get(REPORT_QUEUE)
        yield CounterMetricFamily(
            "callcenter_reports_placed",
            "Citizen reports from the app this node placed in the queue (AMI Originates; queue/reports.py).",
            value=reports.placed if reports is not None else 0,
        )
        yield CounterMetricFamily(
            "callcenter_report_placements_failed",
            "Placements of citizen reports that failed (each is placed again; the report waits meanwhile).",
            value=reports.failed if reports is not None else 0,
        )
        clients = GaugeMetricFamily("callcenter_websocket_clients", "Open console WebSockets.", labels=["role"])
        hub = app.get(HUB)
        by_role = hub.clients_by_role() if hub is not None else {}
        for role in CONSOLE_ROLES:
            clients.add_metric([role], by_role.get(role, 0))
        yield clients


def _allowed(request: web.Request) -> tuple[bool, int]:
    """(allowed, status if not): a valid bearer token, or a direct request from loopback."""
    token = request.app[CONFIG].web.metrics_token
    given = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return True, 200
    proxied = any(h in request.headers for h in _PROXY_HEADERS)
    try:
        loopback = request.remote is not None and ipaddress.ip_address(request.remote).is_loopback
    except ValueError:
        loopback = False
    if loopback and not proxied:
        return True, 200
    return False, 401 if token else 403


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.StreamResponse:
    allowed, status = _allowed(request)
    if not allowed:
        if status == 401:
            resp = error(401, "metrics need a valid bearer token")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return resp
        return error(403, "metrics are served to loopback only (set [web] metrics_token for remote scrapes)")
    body = generate_latest(request.app[METRICS])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
