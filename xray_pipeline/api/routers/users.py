"""Users: the list with connection counts, one user's activity, and the IPs-in-a-window signal
that operators use to find shared accounts."""

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from psycopg.rows import dict_row

from xray_pipeline.api.deps import (
    API_RESPONSES,
    AsnQuery,
    CountryQuery,
    Email,
    PoolDep,
    TimezoneDep,
    bad_param,
    clean,
    require_token,
    utc,
)
from xray_pipeline.api.queries import users as q
from xray_pipeline.api.schemas import SourceIp, UserDetail, UserIps, UserPage

router = APIRouter(
    prefix="/api/users",
    tags=["users"],
    dependencies=[Depends(require_token)],
    responses={**API_RESPONSES, 404: {"description": "no such user"}},
)


def _window(from_: dt.datetime | None, to: dt.datetime | None, days: int):
    from_, to = utc("from", from_), utc("to", to)
    try:
        hi = to or dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        lo = from_ or hi - dt.timedelta(days=days)
    except OverflowError as exc:
        raise bad_param("to", "out of range") from exc
    return lo, hi


@router.get(
    "",
    response_model=UserPage,
    summary="Users with connection counts and last seen (from the daily rollups)",
)
async def list_users(
    pool: PoolDep,
    search: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
    node: Annotated[
        str | None,
        Query(max_length=64, description="only the users seen on this node, with its counts"),
    ] = None,
    country: CountryQuery = None,
    asn: AsnQuery = None,
) -> UserPage:
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        items, total = await q.list_users(
            cur, clean(search), limit, offset, clean(node), country, asn
        )
    return UserPage(items=items, total=total)


@router.get(
    "/{email}",
    response_model=UserDetail,
    summary="One user: first/last seen, source IPs, destinations, sessions",
)
async def user_detail(
    email: Email,
    pool: PoolDep,
    tz: TimezoneDep,
    from_: Annotated[dt.datetime | None, Query(alias="from")] = None,
    to: Annotated[dt.datetime | None, Query()] = None,
    session_gap_minutes: Annotated[int, Query(ge=1, le=1440)] = 30,
    top: Annotated[int, Query(ge=1, le=100)] = 10,
) -> UserDetail:
    lo, hi = _window(from_, to, days=30)
    gap = dt.timedelta(minutes=session_gap_minutes)
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        uid = await q.user_id(cur, email)
        found = await q.activity(cur, uid, lo, hi, tz, gap=gap, top=top)
    ips = [SourceIp(**i) for i in found.pop("source_ips")]  # JSON text: typed here
    return UserDetail(
        email=email,
        from_=lo,
        to=hi,
        first_seen=min((i.first_seen for i in ips), default=None),
        last_seen=max((i.last_seen for i in ips), default=None),
        connections=sum(i.connections for i in ips),
        source_ips=ips,
        **found,
    )


@router.get(
    "/{email}/ips",
    response_model=UserIps,
    summary="Source IPs active in the last `window` minutes",
)
async def user_ips(
    email: Email,
    pool: PoolDep,
    window: Annotated[int, Query(ge=1, le=10_080, description="minutes")] = 60,
    at: Annotated[dt.datetime | None, Query(description="end of the window (default now)")] = None,
) -> UserIps:
    hi = utc("at", at) or dt.datetime.now(dt.UTC)
    try:
        lo = hi - dt.timedelta(minutes=window)
    except OverflowError as exc:
        raise bad_param("at", "out of range") from exc
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        ips = await q.window_ips(cur, await q.user_id(cur, email), lo, hi)
    return UserIps(
        email=email,
        from_=lo,
        to=hi,
        window_minutes=window,
        distinct_ips=len(ips),
        distinct_countries=len({i["country"] for i in ips if i["country"]}),
        distinct_networks=len({i["asn"] for i in ips if i["asn"] is not None}),
        ips=ips,
    )
