"""The write side for a fleet: nodes land the byte ranges of their logs here.

Authenticated by the node's own token (`xray-pipeline nodes add`), not the API's read token:
a token writes only as its node. A range is acknowledged once it is appended and fsynced in
the landing store (core/landing.py); the pipeline then loads it like a local file.
"""

import asyncio
import json
import re
import time
from pathlib import Path as FsPath
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from xray_pipeline.api.deps import PoolDep
from xray_pipeline.core.fleet.landing import (
    LandingError,
    inflate,
    land,
    landed_sources,
    record_contact,
)
from xray_pipeline.core.fleet.nodes import NAME, token_hash, valid_name

_bearer = HTTPBearer(auto_error=False)

router = APIRouter(
    prefix="/api/ship",
    tags=["ship"],
    responses={
        401: {"description": "the node token is missing or unknown"},
        403: {"description": "the token is another node's"},
        503: {"description": "database unavailable, or this sidecar takes no ranges"},
    },
)

# a node's token is looked up in the database at most this often: 200 nodes calling every
# second would otherwise cost a query a call. A removed node's token stops working within it.
TOKEN_TTL_S = 30.0


class TokenCache:
    """Token hash -> node name, each answer kept TOKEN_TTL_S (unknown tokens are not kept)."""

    def __init__(self, ttl: float = TOKEN_TTL_S) -> None:
        self.ttl = ttl
        self.known: dict[bytes, tuple[str, float]] = {}

    def cached(self, token: str) -> str | None:
        """The token's node while its answer is fresh (None: ask the database)."""
        hit = self.known.get(token_hash(token))
        if hit is not None and time.monotonic() - hit[1] < self.ttl:
            return hit[0]
        return None

    async def node(self, pool, token: str) -> str | None:
        key = token_hash(token)
        hit = self.known.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[1] < self.ttl:
            return hit[0]
        async with pool.connection() as conn:
            row = await (
                await conn.execute("SELECT name FROM nodes WHERE token_sha256 = %s", (key,))
            ).fetchone()
        if row is None:
            self.known.pop(key, None)
            return None
        self.known[key] = (row[0], now)
        return row[0]


# a body up to this size (a second of a busy node's lines) lands on the event loop: a thread
# hop would cost more than its append and fsync
INLINE_BYTES = 64 * 1024
# the query's limits, checked by the route and by the fast lane alike
IDENTITY_MAX, PATH_MAX = 512, 4096


NodeName = Annotated[
    str, Path(pattern=NAME.pattern, max_length=64, description="the registered node name")
]


class Landed(BaseModel):
    """Where a source's landed bytes end: the next range starts there."""

    identity: str
    end: int = Field(description="the remote offset just past the last landed byte")


class Refused(BaseModel):
    detail: str
    expected: int | None = Field(None, description="409: the offset to send from")


async def node_of_request(
    request: Request,
    pool: PoolDep,
    node: NodeName,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
) -> str:
    """The node the request writes as: its token must be that node's."""
    if request.app.state.landing_dir is None:
        raise HTTPException(503, "this sidecar takes no ranges (started without a landing dir)")
    if node in {".", ".."}:
        raise HTTPException(422, "a node name cannot be '.' or '..'")
    if credentials is None:
        raise HTTPException(
            401, "a node token is required (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )  # fmt: skip
    owner = await request.app.state.node_tokens.node(pool, credentials.credentials)
    if owner is None:
        raise HTTPException(
            401, "unknown node token: `xray-pipeline nodes add NAME` at the center gives one",
            headers={"WWW-Authenticate": "Bearer"},
        )  # fmt: skip
    if owner != node:
        raise HTTPException(403, f"this token is node {owner!r}'s; it cannot write as {node!r}")
    return node


NodeDep = Annotated[str, Depends(node_of_request)]


@router.get(
    "/{node}/sources",
    response_model=list[Landed],
    summary="What a node has landed: where each of its sources ends (a shipper asks at start)",
)
async def sources(request: Request, node: NodeDep) -> list[Landed]:
    root: FsPath = request.app.state.landing_dir
    landed = await asyncio.to_thread(landed_sources, root, node)
    return [Landed(identity=s.identity, end=s.end) for s in landed.values()]


@router.post(
    "/{node}/ranges",
    response_model=Landed,
    responses={
        400: {"model": Refused, "description": "the body is not what Content-Encoding says"},
        409: {"model": Refused, "description": "the range does not continue what was landed"},
        413: {"model": Refused, "description": "the range is larger than [api] max_range_bytes"},
        415: {"model": Refused, "description": "an encoding other than gzip or deflate"},
        422: {"model": Refused, "description": "a range that does not end at a line end"},
    },
    summary="Land bytes [start, start + length) of one of the node's log files",
)
async def land_range(
    request: Request,
    node: NodeDep,
    identity: Annotated[
        str, Query(min_length=1, max_length=IDENTITY_MAX, description="the file's identity")
    ],
    start: Annotated[int, Query(ge=0, description="the remote offset of the first byte")],
    path: Annotated[
        str, Query(max_length=PATH_MAX, description="the file's path on the node")
    ] = "",
    content_encoding: Annotated[str | None, Header()] = None,
    user_agent: Annotated[str | None, Header()] = None,
):
    limit: int = request.app.state.max_range_bytes
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            return JSONResponse({"detail": f"the body is larger than {limit} bytes"}, 413)
    state = request.app.state
    args = (state, node, identity, path, start, bytes(body), content_encoding, user_agent)
    try:
        if len(body) <= INLINE_BYTES:  # a step's range: an append and an fsync, at once
            end = land_body(*args)
        else:  # a backlog's: off the event loop, so that other nodes' requests go on
            end = await asyncio.to_thread(land_body, *args)
    except LandingError as exc:
        return JSONResponse({"detail": str(exc), "expected": exc.expected}, exc.status)
    return Landed(identity=identity, end=end)


def land_body(
    state, node: str, identity: str, path: str, start: int, body: bytes,
    encoding: str | None, agent: str | None,
) -> int:  # fmt: skip
    """Inflate a range's body and land it; note the node's contact. Where its bytes end."""
    root: FsPath = state.landing_dir
    data = inflate(body, encoding, state.max_range_bytes)
    end = land(root, node, identity, path, start, data)
    record_contact(root, node, agent)
    return end


RANGES_ROUTE = "/api/ship/{node}/ranges"
_RANGES_PATH = re.compile(r"/api/ship/([^/]+)/ranges")


def fast_lane(app, state, counted):
    """A plain ASGI middleware for the steady state of a fleet: a node's small range (at most
    INLINE_BYTES, its Content-Length given), its token known to the cache, its query valid,
    lands here without FastAPI's routing, parameter solving and response model, which cost a
    multiple of the landing itself at 200 nodes calling every second. Anything else (a first
    call, a backlog's range, an unknown token, a bad parameter) goes on to `land_range`,
    which says what is wrong. `counted(method, route, status, seconds)` keeps the request
    metrics."""

    async def lane(scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await app(scope, receive, send)
        found = _RANGES_PATH.fullmatch(scope["path"])
        call = _steady_call(state, scope, found[1]) if found else None
        if call is None:
            return await app(scope, receive, send)
        started = time.perf_counter()
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        node, identity, path, start, encoding, agent = call
        try:
            if len(body) > INLINE_BYTES:  # its Content-Length said otherwise
                raise LandingError(400, "the body is longer than its Content-Length")
            end = land_body(state, node, identity, path, start, bytes(body), encoding, agent)
            status, answer = 200, {"identity": identity, "end": end}
        except LandingError as exc:
            status, answer = exc.status, {"detail": str(exc), "expected": exc.expected}
        payload = json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ]})  # fmt: skip
        await send({"type": "http.response.body", "body": payload})
        counted("POST", RANGES_ROUTE, str(status), time.perf_counter() - started)

    return lane


def _steady_call(state, scope, node: str) -> tuple | None:
    """(node, identity, path, start, encoding, user agent) of a range the fast lane takes, or
    None: the route takes it."""
    if getattr(state, "landing_dir", None) is None or not valid_name(node):
        return None
    headers = dict(scope["headers"])
    auth = headers.get(b"authorization", b"").decode("latin-1")
    scheme, _, token = auth.partition(" ")
    length = headers.get(b"content-length", b"")
    if scheme.lower() != "bearer" or not _number(length) or int(length) > INLINE_BYTES:
        return None
    if state.node_tokens.cached(token.strip()) != node:
        return None
    query = parse_qs(scope["query_string"].decode("latin-1"), keep_blank_values=True)
    identity, start, path = (query.get(k, [None]) for k in ("identity", "start", "path"))
    if len(identity) != 1 or len(start) != 1 or len(path) != 1:
        return None
    identity, start, path = identity[0], start[0], path[0] or ""
    if identity is None or not 1 <= len(identity) <= IDENTITY_MAX or len(path) > PATH_MAX:
        return None
    if start is None or not _number(start):
        return None
    encoding = headers.get(b"content-encoding")
    agent = headers.get(b"user-agent")
    return (
        node, identity, path, int(start),
        encoding.decode("latin-1") if encoding is not None else None,
        agent.decode("latin-1") if agent is not None else None,
    )  # fmt: skip


def _number(text: str | bytes) -> bool:
    return text.isascii() and text.isdigit()
