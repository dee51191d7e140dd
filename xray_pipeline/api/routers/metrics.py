"""GET /metrics: Prometheus text format (requests, latencies, pool, ingest lag)."""

import time
from collections import defaultdict
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse
from psycopg_pool import AsyncConnectionPool

from xray_pipeline.api.deps import get_pool

router = APIRouter(tags=["health"])


class RequestMetrics:
    """Counters kept by the middleware, per method, route template and status."""

    def __init__(self) -> None:
        self.count: dict[tuple[str, str, int], int] = defaultdict(int)
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.observed: dict[tuple[str, str], int] = defaultdict(int)

    async def middleware(self, request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        self.count[(request.method, path, response.status_code)] += 1
        self.seconds[(request.method, path)] += time.perf_counter() - started
        self.observed[(request.method, path)] += 1
        return response


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
async def metrics(request: Request, pool: Annotated[AsyncConnectionPool, Depends(get_pool)]) -> str:
    m: RequestMetrics = request.app.state.metrics
    lines = [
        "# HELP xray_api_requests_total Requests answered, by method, route and status.",
        "# TYPE xray_api_requests_total counter",
    ]
    for (method, path, status), n in sorted(m.count.items()):
        lines.append(
            f'xray_api_requests_total{{method="{method}",route="{_label(path)}",'
            f'status="{status}"}} {n}'
        )
    lines += [
        "# HELP xray_api_request_seconds Time spent answering, by method and route.",
        "# TYPE xray_api_request_seconds summary",
    ]
    for (method, path), seconds in sorted(m.seconds.items()):
        labels = f'method="{method}",route="{_label(path)}"'
        lines.append(f"xray_api_request_seconds_sum{{{labels}}} {seconds:.6f}")
        lines.append(f"xray_api_request_seconds_count{{{labels}}} {m.observed[(method, path)]}")
    stats = pool.get_stats()
    lines += ["# HELP xray_api_pool Connection pool figures.", "# TYPE xray_api_pool gauge"]
    for key in ("pool_size", "pool_available", "requests_waiting"):
        lines.append(f'xray_api_pool{{figure="{key}"}} {stats.get(key, 0)}')
    lag = None
    try:
        async with pool.connection(timeout=2) as conn:
            row = await (
                await conn.execute("SELECT extract(epoch FROM now() - max(ts)) FROM logs")
            ).fetchone()
            lag = row[0]
    except Exception:  # the database is down: the lag is unknown, the rest still reports
        lag = None
    lines += [
        "# HELP xray_ingest_lag_seconds Age of the newest row in logs (NaN when unknown).",
        "# TYPE xray_ingest_lag_seconds gauge",
        f"xray_ingest_lag_seconds {float(lag) if lag is not None else float('nan')}",
    ]
    return "\n".join(lines) + "\n"
