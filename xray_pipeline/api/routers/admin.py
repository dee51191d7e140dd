"""Admin routes, behind their own token ([api] admin_token): what is kept about a user (an
access request) and the erasure of a user, as `xray-pipeline export` and `forget` do; the
acknowledgement and closing of incidents; the per-user IP limits, as `limits` does."""

from pathlib import Path
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from xray_pipeline.api.deps import Email, IncidentId, TimezoneDep, check_bearer, clean

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
    from xray_pipeline.core.privacy.export import export_user

    return await run_in_threadpool(
        _with_connection,
        request.app.state.admin_database_url,
        lambda conn: export_user(
            conn, clean(email) or "", timezone=tz, archive=request.app.state.archive
        ),
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
    from xray_pipeline.core.privacy.forget import forget_user

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
        lambda conn: forget_user(
            conn,
            clean(email) or "",
            timezone=tz,
            landing_dir=landing,
            archive=request.app.state.archive,
        ),
    )
    return report.as_dict()


def _incident_change(work, incident_id: int):
    """Run an acknowledgement or a close; 404 when the incident does not exist, 409 when it
    cannot take the change."""
    from xray_pipeline.core.rules.incidents import IncidentError

    def run(conn):
        try:
            return work(conn, incident_id)
        except IncidentError as exc:
            missing = str(exc).startswith("no incident")
            raise HTTPException(status_code=404 if missing else 409, detail=str(exc)) from None

    return run


@router.post(
    "/incidents/{incident_id}/acknowledge",
    summary="Mark an incident as seen (it stays open while its condition holds)",
    responses={404: {"description": "no such incident"}},
)
async def acknowledge_incident(incident_id: IncidentId, request: Request) -> dict[str, Any]:
    from xray_pipeline.core.rules.incidents import acknowledge

    at = await run_in_threadpool(
        _with_connection,
        request.app.state.admin_database_url,
        _incident_change(acknowledge, incident_id),
    )
    return {"id": incident_id, "acknowledged_at": at}


@router.post(
    "/incidents/{incident_id}/close",
    summary="Close an open incident now (its `closed` change is notified)",
    responses={
        404: {"description": "no such incident"},
        409: {"description": "the incident is closed already"},
    },
)
async def close_incident(incident_id: IncidentId, request: Request) -> dict[str, Any]:
    from xray_pipeline.core.rules.incidents import close

    at = await run_in_threadpool(
        _with_connection,
        request.app.state.admin_database_url,
        _incident_change(close, incident_id),
    )
    return {"id": incident_id, "state": "closed", "closed_at": at}


class LimitBody(BaseModel):
    ip_limit: int = Field(ge=1, le=100_000, description="distinct sources allowed")


@router.get("/limits", summary="The users with their own IP limit, as `limits list`")
async def get_limits(request: Request) -> dict[str, int]:
    from xray_pipeline.core.rules.evaluate import user_limits

    return await run_in_threadpool(
        _with_connection, request.app.state.admin_database_url, user_limits
    )


def _set_limit(email: str, limit: int | None):
    from xray_pipeline.core.rules.evaluate import LimitError, set_user_limit

    def run(conn):
        try:
            set_user_limit(conn, email, limit)
        except LimitError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None

    return run


@router.put(
    "/limits/{email}",
    summary="Set one user's IP limit, as `limits set`",
    responses={404: {"description": "no such user in the logs"}},
)
async def put_limit(email: Email, body: LimitBody, request: Request) -> dict[str, Any]:
    await run_in_threadpool(
        _with_connection,
        request.app.state.admin_database_url,
        _set_limit(clean(email) or "", body.ip_limit),
    )
    return {"email": email, "ip_limit": body.ip_limit}


@router.delete(
    "/limits/{email}",
    summary="Put one user back on [rules] ip_limit, as `limits clear`",
    responses={404: {"description": "no such user in the logs"}},
)
async def delete_limit(email: Email, request: Request) -> dict[str, Any]:
    await run_in_threadpool(
        _with_connection, request.app.state.admin_database_url, _set_limit(clean(email) or "", None)
    )
    return {"email": email, "ip_limit": None}
