"""Shared dependencies: the connection pool and the bearer token."""

import datetime as dt
import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import AsyncConnectionPool

_bearer = HTTPBearer(auto_error=False)


# async, though they only read app state: FastAPI runs a plain `def` dependency in a thread
# (a hop per request)
async def get_pool(request: Request) -> AsyncConnectionPool:
    return request.app.state.pool


async def get_timezone(request: Request) -> str:
    """The zone of the local days (the partitions' and the rollups')."""
    return request.app.state.timezone


# what every /api route may answer besides its own response
API_RESPONSES: dict[int | str, dict] = {
    401: {"description": "bearer token missing or wrong"},
    503: {"description": "database unavailable"},
}

PoolDep = Annotated[AsyncConnectionPool, Depends(get_pool)]
TimezoneDep = Annotated[str, Depends(get_timezone)]


def check_bearer(
    expected: str, credentials: HTTPAuthorizationCredentials | None, detail: str
) -> None:
    """401 with `detail` unless the request's bearer token is `expected`."""
    given = credentials.credentials if credentials else ""
    if not secrets.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=detail,
            headers={"WWW-Authenticate": "Bearer"},
        )


async def require_token(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
) -> None:
    """When XRAY_API_TOKEN is set, every /api route needs `Authorization: Bearer <token>`."""
    expected = request.app.state.token
    if expected:
        check_bearer(
            expected,
            credentials,
            "a valid bearer token is required (Authorization: Bearer <XRAY_API_TOKEN>)",
        )


def bad_param(name: str, message: str) -> HTTPException:
    """A 422 in FastAPI's own validation-error shape, naming the query parameter."""
    return HTTPException(
        status_code=422,
        detail=[{"loc": ["query", name], "msg": f"{name}: {message}", "type": "value_error"}],
    )


CountryQuery = Annotated[
    str | None,
    Query(
        pattern="^[A-Za-z]{2}$",
        description="only the rows whose source is in this country (ISO code, such as DE)",
    ),
]
AsnQuery = Annotated[
    int | None,
    Query(ge=0, le=4_294_967_295, description="only the rows whose source is in this ASN"),
]


def clean(text: str | None) -> str | None:
    """Query text without NUL characters (PostgreSQL text cannot hold them, and no stored
    value contains one)."""
    return None if text is None else text.replace("\x00", "")


def utc(name: str, value: dt.datetime | None) -> dt.datetime | None:
    """A query time as UTC; 422 naming the parameter when it has no zone or cannot be one."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise bad_param(name, "give a time zone (e.g. 2025-01-01T00:00Z)")
    try:
        return value.astimezone(dt.UTC)
    except (OverflowError, ValueError) as exc:
        raise bad_param(name, "out of range") from exc


# path parameters shared by the routers (the admin routes act on the same incidents and users)
IncidentId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the incident's id")]
Email = Annotated[str, Path(max_length=320, description="the user's email as Xray prints it")]
