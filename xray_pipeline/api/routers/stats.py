"""Aggregates: /api/logs/stats, /api/timeseries and /api/freshness (see queries/stats.py)."""

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from psycopg.rows import dict_row

from xray_pipeline.api.deps import (
    API_RESPONSES,
    AsnQuery,
    CountryQuery,
    PoolDep,
    TimezoneDep,
    bad_param,
    clean,
    require_token,
    utc,
)
from xray_pipeline.api.queries import stats as q
from xray_pipeline.api.schemas import (
    Freshness,
    Series,
    SeriesPoint,
    Stats,
    TopCountries,
    TopNetworks,
)

router = APIRouter(
    prefix="/api",
    tags=["stats"],
    dependencies=[Depends(require_token)],
    responses=API_RESPONSES,
)
FromQuery = Annotated[dt.datetime | None, Query(alias="from")]
ToQuery = Annotated[dt.datetime | None, Query()]
NodeQuery = Annotated[
    str | None, Query(max_length=64, description="only the rows shipped by this node")
]
MAX_HOURLY = dt.timedelta(days=93)


@router.get(
    "/logs/stats",
    response_model=Stats,
    summary="Totals, unique users, protocol, tag and status breakdowns, top countries and networks",
)
async def stats(
    pool: PoolDep,
    tz: TimezoneDep,
    from_: FromQuery = None,
    to: ToQuery = None,
    node: NodeQuery = None,
    country: CountryQuery = None,
    asn: AsnQuery = None,
    top: Annotated[
        int, Query(ge=1, le=100, description="countries and networks listed; the rest is `other`")
    ] = 10,
) -> Stats:
    from_, to = utc("from", from_), utc("to", to)
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        lo, hi = await q.bounds(cur, from_, to, tz)
        if lo is None or hi is None or lo >= hi:
            return Stats.empty(lo, hi)
        row, rolled = await q.totals(cur, lo, hi, tz, clean(node), country, asn, top)
    connections, rejected = int(row["connections"]), int(row["rejected"])
    return Stats(
        from_=lo,
        to=hi,
        connections=connections,
        accepted=connections - rejected,
        rejected=rejected,
        unique_users=row["unique_users"],
        protocols=row["protocols"],
        inbound_tags=row["inbound_tags"],
        outbound_tags=row["outbound_tags"],
        countries=TopCountries(
            items=row["countries"],
            other=row["countries_other"],
            unknown=row["countries_unknown"],
            distinct=row["countries_distinct"],
        ),
        networks=TopNetworks(
            items=row["networks"],
            other=row["networks_other"],
            unknown=row["networks_unknown"],
            distinct=row["networks_distinct"],
        ),
        geoip=row["databases"],
        days_from_rollups=rolled,
    )


@router.get("/timeseries", response_model=Series, summary="Connections per hour or day")
async def timeseries(
    pool: PoolDep,
    tz: TimezoneDep,
    bucket: Annotated[Literal["hour", "day"], Query()] = "day",
    from_: FromQuery = None,
    to: ToQuery = None,
    user: Annotated[str | None, Query(max_length=320)] = None,
    tag: Annotated[str | None, Query(max_length=200)] = None,
    node: NodeQuery = None,
    country: CountryQuery = None,
    asn: AsnQuery = None,
) -> Series:
    from_, to = utc("from", from_), utc("to", to)
    too_long = bad_param("from", "hourly buckets cover at most 93 days (narrow from/to)")
    if bucket == "hour" and from_ and to and to - from_ > MAX_HOURLY:
        raise too_long
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        lo, hi = await q.bounds(cur, from_, to, tz)
        if lo is None or hi is None or lo >= hi:
            return Series(bucket=bucket, points=[])
        if bucket == "hour" and hi - lo > MAX_HOURLY:
            raise too_long
        rows = await q.series(
            cur, lo, hi, tz, bucket, clean(user), clean(tag), clean(node), country, asn
        )
    return Series(bucket=bucket, timezone=tz, points=[SeriesPoint(**r) for r in rows])


@router.get(
    "/freshness",
    response_model=Freshness,
    summary="The newest row in logs and its age (the ingest lag)",
)
async def freshness(pool: PoolDep) -> Freshness:
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        row = await q.newest(cur)
    lag = row["lag"]
    return Freshness(newest_row=row["newest"], lag_seconds=None if lag is None else float(lag))
