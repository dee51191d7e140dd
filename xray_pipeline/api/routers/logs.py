"""GET /api/logs: filtered, newest first, offset or keyset (cursor) pagination; the days only in
the archive are read there and merged in."""

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from psycopg.rows import dict_row

from xray_pipeline.api.deps import (
    API_RESPONSES,
    AsnQuery,
    CountryQuery,
    PoolDep,
    clean,
    require_token,
    utc,
)
from xray_pipeline.api.queries import archive as qa
from xray_pipeline.api.queries import logs as q
from xray_pipeline.api.schemas import LogItem, LogPage

router = APIRouter(
    prefix="/api",
    tags=["logs"],
    dependencies=[Depends(require_token)],
    responses=API_RESPONSES,
)

EXACT_COUNT_LIMIT = 10_000
# a substring search has no index on logs: its count stops sooner (measured at 10M rows:
# 73 ms to find 10,001 matches, 9 ms to find 1,001)
SEARCH_COUNT_LIMIT = 1_000


@router.get("/logs", response_model=LogPage, summary="Access-log records, newest first")
async def list_logs(
    request: Request,
    pool: PoolDep,
    search: Annotated[
        str | None,
        Query(max_length=200, description="substring of destination host, user email or source"),
    ] = None,
    protocol: Annotated[str | None, Query(max_length=16, description="tcp or udp")] = None,
    tag: Annotated[str | None, Query(max_length=200, description="inbound or outbound tag")] = None,
    user: Annotated[str | None, Query(max_length=320, description="exact user email")] = None,
    status: Annotated[Literal["accepted", "rejected"] | None, Query()] = None,
    node: Annotated[str | None, Query(max_length=200)] = None,
    country: CountryQuery = None,
    asn: AsnQuery = None,
    from_: Annotated[
        dt.datetime | None, Query(alias="from", description="ISO 8601, inclusive")
    ] = None,
    to: Annotated[dt.datetime | None, Query(description="ISO 8601, exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of a page")
    ] = None,
) -> LogPage:
    from_, to = utc("from", from_), utc("to", to)
    search, protocol, tag, user, node = map(clean, (search, protocol, tag, user, node))
    where, params = q.build_filters(
        search=search, protocol=protocol, tag=tag, user=user, status=status, node=node,
        country=country, asn=asn, from_=from_, to=to, cursor=cursor,
    )  # fmt: skip
    params.update(limit=limit, offset=offset)
    # a search and a place filter have no index on logs: their counts stop sooner
    cap = SEARCH_COUNT_LIMIT if search or country or asn is not None else EXACT_COUNT_LIMIT
    store = request.app.state.archive
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        cold = await qa.cold_paths(cur, from_, to) if store is not None else []
        if cold:  # the newest offset + limit of each tier, merged
            params.update(limit=offset + limit, offset=0)
        rows = await q.page(cur, where, params)
        total, estimate = await q.count(cur, where, params, cap)
        if cold:
            sources = None
            if country is not None or asn is not None:
                sources = await qa.placed_sources(cur, country, asn)
            names = await qa.searched_names(cur, search) if search else None
            condition = qa.archive_filter(
                search=search, protocol=protocol, tag=tag, user=user, status=status, node=node,
                from_=from_, to=to, cursor=cursor, sources=sources, names=names,
            )  # fmt: skip
            archived, more = await run_in_threadpool(
                qa.archive_page, store, cold, condition, offset + limit, cap
            )
            await qa.add_places(cur, archived)
            rows = sorted(rows + archived, key=_order, reverse=True)[offset : offset + limit]
            total, estimate = total + min(more, cap), estimate or more > cap
    next_cursor = None
    if len(rows) == limit:
        last = rows[-1]
        next_cursor = q.encode_cursor(last["ts"], last["source_id"], last["byte_offset"])
    items = [LogItem(**{k: v for k, v in r.items() if k != "source_id"}) for r in rows]
    return LogPage(items=items, total=total, total_is_estimate=estimate, next_cursor=next_cursor)


def _order(row: dict) -> tuple:
    return row["ts"], row["source_id"], row["byte_offset"]
