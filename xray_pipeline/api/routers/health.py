"""Liveness and readiness probes (no token needed)."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from xray_pipeline.api.deps import PoolDep
from xray_pipeline.api.queries import ping
from xray_pipeline.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="Liveness: the process answers (no I/O)")
async def health() -> Health:
    return Health(status="ok")


@router.get(
    "/health/ready",
    response_model=Health,
    responses={503: {"model": Health}},
    summary="Readiness: the database answers",
)
async def ready(pool: PoolDep) -> Health | JSONResponse:
    try:
        async with pool.connection(timeout=2) as conn:
            await ping(conn)
    except Exception as exc:  # any failure to reach the database means "not ready"
        return JSONResponse(
            status_code=503, content={"status": f"database unavailable: {type(exc).__name__}"}
        )
    return Health(status="ready")
