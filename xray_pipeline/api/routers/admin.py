"""Admin routes, behind their own token ([api] admin_token): what is kept about a user (an
access request) and the erasure of a user, as `xray-pipeline export` and `forget` do."""

from pathlib import Path
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from xray_pipeline.api.deps import TimezoneDep, check_bearer, clean
from xray_pipeline.api.routers.users import Email

_bearer = HTTPBearer(auto_error=False)  # its own scheme: the admin token


async def require_admin(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
) -> None:
    """The admin token, always: the routes are off (403) while [api] admin_token is unset."""
    expected = request.app.state.admin_token
    if not expected:
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail="the admin routes are off: set [api] admin_token (XRAY_API_ADMIN_TOKEN) "
            "and restart the sidecar",
        )
    check_bearer(
        expected,
        credentials,
        "the admin token is required (Authorization: Bearer <XRAY_API_ADMIN_TOKEN>)",
    )


router = APIRouter(
    prefix="/api/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses={
        401: {"description": "admin token missing or wrong"},
        403: {"description": "the admin routes are off ([api] admin_token unset)"},
        503: {"description": "the database is unavailable"},
    },
)


def _with_connection(url: str, work):
    with psycopg.connect(url, connect_timeout=5) as conn:
        return work(conn)


@router.get(
    "/users/{email}/export",
    summary="What is kept about one user (an access request), as `xray-pipeline export`",
)
async def export(email: Email, request: Request, tz: TimezoneDep) -> dict[str, Any]:
    from xray_pipeline.core.forget import export_user

    return await run_in_threadpool(
        _with_connection,
        request.app.state.admin_database_url,
        lambda conn: export_user(conn, clean(email) or "", timezone=tz),
    )


@router.post(
    "/users/{email}/forget",
    summary="Erase one user everywhere the pipeline keeps them, as `xray-pipeline forget`",
)
async def forget(
    email: Email,
    request: Request,
    tz: TimezoneDep,
    confirm: Annotated[
        str, Query(max_length=320, description="the email again: an erasure cannot be undone")
    ],
) -> dict[str, Any]:
    from xray_pipeline.core.forget import forget_user

    if confirm != email:
        raise HTTPException(
            status_code=422,
            detail=[{"loc": ["query", "confirm"], "type": "value_error",
                     "msg": "confirm: repeat the email to erase (this cannot be undone)"}],
        )  # fmt: skip
    landing: Path | None = request.app.state.landing_dir
    report = await run_in_threadpool(
        _with_connection,
        request.app.state.admin_database_url,
        lambda conn: forget_user(conn, clean(email) or "", timezone=tz, landing_dir=landing),
    )
    return report.as_dict()
