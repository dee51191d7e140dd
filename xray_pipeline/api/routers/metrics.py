"""GET /metrics: Prometheus text format (requests, latencies, pool, ingest lag, incidents,
notifications, and per registered node what an operator alerts on)."""

import datetime as dt
import time

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    Summary,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from psycopg.rows import dict_row

from xray_pipeline.api.deps import PoolDep, TimezoneDep
from xray_pipeline.api.queries.nodes import node_status
from xray_pipeline.api.queries.stats import newest

router = APIRouter(tags=["health"])
INCIDENT_COUNTS = "SELECT rule, state, count(*) AS n FROM incidents GROUP BY rule, state"
NOTIFICATION_COUNTS = (
    "SELECT target, status, count(*) AS n FROM alert_deliveries GROUP BY target, status"
)
# the ledger keeps them for good (compaction sums, retention leaves the ledger): counters
LOAD_TOTALS = (
    "SELECT coalesce(sum(lines), 0) AS lines, coalesce(sum(reject_rows), 0) AS rejects, "
    "coalesce(sum(seconds), 0) AS seconds FROM ingest_ledger"
)


class LedgerCounters:
    """The counters read from the ledger at each scrape: per node, the lines and bytes
    loaded; over every load (local files too), the lines, rejected lines and seconds."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.loads: dict | None = None

    def collect(self):
        lines = CounterMetricFamily(
            "xray_node_loaded_lines", "Lines loaded from the node.", labels=("node",)
        )
        size = CounterMetricFamily(
            "xray_node_loaded_bytes", "Bytes loaded from the node.", labels=("node",)
        )
        for node in self.nodes:
            lines.add_metric((node.name,), node.lines_loaded)
            size.add_metric((node.name,), node.bytes_loaded)
        yield from (lines, size)
        if self.loads is not None:
            yield from (
                CounterMetricFamily(f"xray_loads_{key}", text, value=self.loads[key])
                for key, text in (
                    ("lines", "Lines the loads stored (every source)."),
                    ("rejects", "Lines the loads kept as rejects (neither access nor DNS)."),
                    ("seconds", "Seconds the loads took (preparing and committing)."),
                )
            )


class RequestMetrics:
    """The app's own registry (one per app, so that two apps in a process never mix), kept
    by the middleware per method, route template and status."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "xray_api_requests",
            "Requests answered, by method, route and status.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.seconds = Summary(
            "xray_api_request_seconds",
            "Time spent answering, by method and route.",
            ("method", "route"),
            registry=self.registry,
        )
        self.pool = Gauge(
            "xray_api_pool", "Connection pool figures.", ("figure",), registry=self.registry
        )
        self.lag = Gauge(
            "xray_ingest_lag_seconds",
            "Age of the newest row in logs (NaN when unknown).",
            registry=self.registry,
        )
        self.incidents = Gauge(
            "xray_incidents",
            "Incidents of the abuse rules, by rule and state (open, closed).",
            ("rule", "state"),
            registry=self.registry,
        )
        self.notifications = Gauge(
            "xray_alert_notifications",
            "Notifications of incident changes, by target and outcome (sent, pending: to "
            "send or retry, dead: the dead letter, stale: too old to send).",
            ("target", "outcome"),
            registry=self.registry,
        )

        self.ledger = LedgerCounters()
        self.registry.register(self.ledger)
        # per registered node (the cardinality of the nodes table)
        self.node_lag = Gauge(
            "xray_node_lag_seconds",
            "Age of the node's newest loaded line (NaN: none loaded yet).",
            ("node",),
            registry=self.registry,
        )
        self.node_silence = Gauge(
            "xray_node_contact_age_seconds",
            "Seconds since the node's shipper last called the center (NaN: never).",
            ("node",),
            registry=self.registry,
        )
        self.node_waiting = Gauge(
            "xray_node_waiting_bytes",
            "Bytes the node landed that are not loaded yet.",
            ("node",),
            registry=self.registry,
        )
        self.node_today = Gauge(
            "xray_node_loaded_today",
            "Lines and bytes of the node loaded today (local day), by unit.",
            ("node", "unit"),
            registry=self.registry,
        )
        self.node_shipper = Info(
            "xray_node_shipper",
            "The version of the node's shipper, as it last said.",
            ("node",),
            registry=self.registry,
        )

    def set_nodes(self, nodes: list) -> None:
        """The per-node series of `nodes` (NodeStatus), those of nodes gone removed."""
        for metric in (self.node_lag, self.node_silence, self.node_waiting, self.node_today,
                       self.node_shipper):  # fmt: skip
            metric.clear()
        now = dt.datetime.now(dt.UTC)
        nan = float("nan")
        for node in nodes:
            name = node.name
            self.node_lag.labels(name).set(nan if node.lag_seconds is None else node.lag_seconds)
            contact = node.last_contact
            self.node_silence.labels(name).set(
                nan if contact is None else (now - contact).total_seconds()
            )
            self.node_waiting.labels(name).set(node.bytes_waiting)
            self.node_today.labels(name, "lines").set(node.lines_today)
            self.node_today.labels(name, "bytes").set(node.bytes_today)
            self.node_shipper.labels(name).info({"version": node.shipper_version or "unknown"})
        self.ledger.nodes = nodes

    def count(self, method: str, route: str, status: str, seconds: float) -> None:
        """One request answered."""
        self.requests.labels(method, route, status).inc()
        self.seconds.labels(method, route).observe(seconds)

    def middleware(self, app):
        """A plain ASGI middleware that counts each request (Starlette's BaseHTTPMiddleware
        adds its own task and a copy of each request and response: paid 200 times a second by the
        landing of 200 nodes)."""

        async def counted(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            started = time.perf_counter()
            status = ["500"]

            async def sending(message) -> None:
                if message["type"] == "http.response.start":
                    status[0] = str(message["status"])
                await send(message)

            try:
                await app(scope, receive, sending)
            finally:
                route = getattr(scope.get("route"), "path", "unmatched")
                self.count(scope["method"], route, status[0], time.perf_counter() - started)

        return counted


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
    summary="Prometheus metrics",
)
async def metrics(request: Request, pool: PoolDep, timezone: TimezoneDep) -> Response:
    m: RequestMetrics = request.app.state.metrics
    stats = pool.get_stats()
    for key in ("pool_size", "pool_available", "requests_waiting"):
        m.pool.labels(key).set(stats.get(key, 0))
    lag = None
    try:
        async with pool.connection(timeout=2) as conn, conn.cursor(row_factory=dict_row) as cur:
            lag = (await newest(cur))["lag"]
            await cur.execute(INCIDENT_COUNTS)
            m.incidents.clear()  # a count gone to nothing leaves no stale series
            for row in await cur.fetchall():
                m.incidents.labels(row["rule"], row["state"]).set(row["n"])
            await cur.execute(NOTIFICATION_COUNTS)
            m.notifications.clear()
            for row in await cur.fetchall():
                m.notifications.labels(row["target"], row["status"]).set(row["n"])
            await cur.execute(LOAD_TOTALS)
            m.ledger.loads = await cur.fetchone()
        m.set_nodes(await node_status(pool, timezone, request.app.state.landing_dir))
    except Exception:  # the database is down: the lag is unknown, the rest still reports
        lag = None
    m.lag.set(float(lag) if lag is not None else float("nan"))
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
