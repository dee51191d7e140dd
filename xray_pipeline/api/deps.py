"""Shared dependencies: the connection pool and the bearer token."""

import secrets

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import AsyncConnectionPool

_bearer = HTTPBearer(auto_error=False)


def get_pool(request: Request) -> AsyncConnectionPool:
    return request.app.state.pool


async def require_token(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
) -> None:
    """When XRAY_API_TOKEN is set, every /api route needs `Authorization: Bearer <token>`."""
    expected = request.app.state.token
    if not expected:
        return
    given = credentials.credentials if credentials else ""
    if not secrets.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="a valid bearer token is required (Authorization: Bearer <XRAY_API_TOKEN>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
