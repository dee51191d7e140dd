"""The FastAPI sidecar: create_app() with a lifespan that owns one async connection pool."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from xray_pipeline.api.routers import (
    admin,
    health,
    incidents,
    logs,
    metrics,
    nodes,
    ship,
    stats,
    users,
)
from xray_pipeline.core.archive.store import ArchiveStore

STATIC = Path(__file__).parent / "static"


def create_app(
    database_url: str,
    *,
    token: str | None = None,
    cors_origins: tuple[str, ...] = (),
    statement_timeout_ms: int = 5000,
    pool_size: int = 8,
    timezone: str = "UTC",
    landing_dir: Path | None = None,
    archive: ArchiveStore | None = None,
    max_range_bytes: int = 16 * 1024 * 1024,
    admin_token: str | None = None,
    admin_database_url: str | None = None,
) -> FastAPI:
    """The sidecar for `database_url`; read-only connections with a statement timeout."""
    options = f"-c statement_timeout={statement_timeout_ms} -c default_transaction_read_only=on"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = AsyncConnectionPool(
            database_url,
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=5,
            kwargs={"autocommit": True, "options": options, "connect_timeout": 3,
                    "application_name": "xray-pipeline-api"},
        )  # fmt: skip
        # the API starts even when the database is down; /health/ready says so
        await pool.open(wait=False)
        app.state.pool = pool
        app.state.token = token
        app.state.timezone = timezone
        app.state.landing_dir = landing_dir
        app.state.archive = archive
        app.state.node_tokens = ship.TokenCache()
        app.state.max_range_bytes = max_range_bytes
        app.state.admin_token = admin_token
        # the admin routes write (an erasure): the owner's connection, not the read-only pool
        app.state.admin_database_url = admin_database_url or database_url
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(
        title="xray-pipeline API",
        summary="Analytics over the Xray access logs kept by xray-pipeline.",
        version="0.1.0",
        lifespan=lifespan,
    )
    request_metrics = metrics.RequestMetrics()
    app.state.metrics = request_metrics
    app.add_middleware(request_metrics.middleware)
    # outside the metrics middleware: the lane counts what it answers itself
    app.add_middleware(ship.fast_lane, state=app.state, counted=request_metrics.count)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET"],
            allow_headers=["Authorization"],
        )  # fmt: skip

    @app.exception_handler(PoolTimeout)
    @app.exception_handler(psycopg.OperationalError)
    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            status_code=503,
            content={"detail": "the database is unavailable; retry later"},
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(psycopg.DataError)
    async def out_of_range(request: Request, exc: Exception) -> JSONResponse:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return JSONResponse(
            status_code=422,
            content={"detail": [{"loc": ["query"], "msg": f"a parameter is out of range: {first}",
                                 "type": "value_error"}]},
        )  # fmt: skip

    @app.exception_handler(psycopg.errors.QueryCanceled)
    async def too_slow(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            status_code=503,
            content={"detail": "the query took longer than the statement timeout; narrow it "
                               "with from/to or more filters"},
        )  # fmt: skip

    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(stats.router)
    app.include_router(logs.router)
    app.include_router(users.router)
    app.include_router(nodes.router)
    app.include_router(incidents.router)
    app.include_router(ship.router)
    app.include_router(admin.router)

    # the dashboard: static files shipped in the package, reading only the public API
    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
