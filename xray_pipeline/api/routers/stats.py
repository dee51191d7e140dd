"""Aggregates: /api/logs/stats and /api/timeseries, from the daily rollups where they are
complete (past days) plus a live query of `logs` for the rest (today, partial days)."""

import datetime as dt
import zoneinfo
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from xray_pipeline.api.deps import bad_param, clean, get_pool, require_token, utc
from xray_pipeline.api.routers.logs import TAG_FILTER

router = APIRouter(
    prefix="/api",
    tags=["stats"],
    dependencies=[Depends(require_token)],
    responses={
        401: {"description": "bearer token missing or wrong"},
        503: {"description": "database unavailable"},
    },
)


def split_window(
    lo: dt.datetime, hi: dt.datetime, tz: str, rolled: set[dt.date]
) -> tuple[list[dt.date], list[tuple[dt.datetime, dt.datetime]]]:
    """Whole local days inside [lo, hi) that have rollups (strictly before today), and the
    remaining windows to read from `logs`."""
    zone = zoneinfo.ZoneInfo(tz)
    today = dt.datetime.now(zone).date()
    days: list[dt.date] = []
    windows: list[tuple[dt.datetime, dt.datetime]] = []
    cursor = lo
    day = lo.astimezone(zone).date()
    while cursor < hi:
        start = dt.datetime.combine(day, dt.time(), zone)
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), zone)
        piece_lo, piece_hi = max(start, cursor), min(end, hi)
        if piece_lo == start and piece_hi == end and day < today and day in rolled:
            days.append(day)
        elif windows and windows[-1][1] == piece_lo:
            windows[-1] = (windows[-1][0], piece_hi)
        else:
            windows.append((piece_lo, piece_hi))
        cursor = end
        day += dt.timedelta(days=1)
    return days, windows


async def _bounds(cur, lo: dt.datetime | None, hi: dt.datetime | None, tz: str):
    """The asked window, narrowed to the local days that hold data (None, None when empty)."""
    await cur.execute("SELECT min(ts) AS lo, max(ts) AS hi FROM logs")
    row = await cur.fetchone()
    if row["lo"] is None:
        return None, None
    zone = zoneinfo.ZoneInfo(tz)
    first = dt.datetime.combine(row["lo"].astimezone(zone).date(), dt.time(), zone)
    after_last = dt.datetime.combine(
        row["hi"].astimezone(zone).date() + dt.timedelta(days=1), dt.time(), zone
    )
    return max(lo or first, first), min(hi or after_last, after_last)


def live_filter(windows: list[tuple[dt.datetime, dt.datetime]]) -> tuple[str, dict]:
    """`logs` rows inside the windows, as ranges on ts the planner can use (index, pruning)."""
    if not windows:
        return "false", {}
    parts, params = [], {}
    for i, (lo, hi) in enumerate(windows):
        parts.append(f"(l.ts >= %(wlo{i})s AND l.ts < %(whi{i})s)")
        params[f"wlo{i}"], params[f"whi{i}"] = lo, hi
    return "(" + " OR ".join(parts) + ")", params


@router.get("/logs/stats", summary="Totals, unique users, protocol, tag and status breakdowns")
async def stats(
    request: Request,
    pool: Annotated[AsyncConnectionPool, Depends(get_pool)],
    from_: Annotated[dt.datetime | None, Query(alias="from")] = None,
    to: Annotated[dt.datetime | None, Query()] = None,
) -> dict:
    from_, to = utc("from", from_), utc("to", to)
    tz = request.app.state.timezone
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        lo, hi = await _bounds(cur, from_, to, tz)
        if lo is None or hi is None or lo >= hi:
            return {"from": lo, "to": hi, "connections": 0, "accepted": 0, "rejected": 0,
                    "unique_users": 0, "protocols": {}, "inbound_tags": {}, "outbound_tags": {},
                    "days_from_rollups": 0}  # fmt: skip
        await cur.execute(
            "SELECT DISTINCT day FROM daily_traffic WHERE day >= %s AND day <= %s",
            ((lo - dt.timedelta(days=1)).date(), (hi + dt.timedelta(days=1)).date()),
        )
        rolled = {r["day"] for r in await cur.fetchall()}
        days, windows = split_window(lo, hi, tz, rolled)
        live, params = live_filter(windows)
        params["days"] = days
        await cur.execute(
            f"""
            WITH parts AS (
                SELECT user_id, protocol_id, inbound_tag_id, outbound_tag_id, connections,
                       rejected FROM daily_traffic WHERE day = ANY(%(days)s)
                UNION ALL
                SELECT l.user_id, l.dest_protocol_id, l.inbound_tag_id, l.outbound_tag_id, 1,
                       (l.status = 'rejected')::int FROM logs l WHERE {live}
            )
            SELECT
                coalesce(sum(connections), 0) AS connections,
                coalesce(sum(rejected), 0) AS rejected,
                (SELECT count(DISTINCT user_id) FROM parts) AS unique_users,
                (SELECT coalesce(jsonb_object_agg(coalesce(p.name, 'unknown'), n), '{{}}')
                   FROM (SELECT protocol_id, sum(connections) n FROM parts GROUP BY 1) x
                   LEFT JOIN protocols p ON p.id = x.protocol_id) AS protocols,
                (SELECT coalesce(jsonb_object_agg(coalesce(t.name, '(none)'), n), '{{}}')
                   FROM (SELECT inbound_tag_id, sum(connections) n FROM parts GROUP BY 1) x
                   LEFT JOIN tags t ON t.id = x.inbound_tag_id) AS inbound_tags,
                (SELECT coalesce(jsonb_object_agg(coalesce(t.name, '(none)'), n), '{{}}')
                   FROM (SELECT outbound_tag_id, sum(connections) n FROM parts GROUP BY 1) x
                   LEFT JOIN tags t ON t.id = x.outbound_tag_id) AS outbound_tags
            FROM parts
            """,
            params,
        )
        row = await cur.fetchone()
    connections, rejected = int(row["connections"]), int(row["rejected"])
    return {
        "from": lo,
        "to": hi,
        "connections": connections,
        "accepted": connections - rejected,
        "rejected": rejected,
        "unique_users": row["unique_users"],
        "protocols": {k: int(v) for k, v in row["protocols"].items()},
        "inbound_tags": {k: int(v) for k, v in row["inbound_tags"].items()},
        "outbound_tags": {k: int(v) for k, v in row["outbound_tags"].items()},
        "days_from_rollups": len(days),
    }


@router.get("/timeseries", summary="Connections per hour or day")
async def timeseries(
    request: Request,
    pool: Annotated[AsyncConnectionPool, Depends(get_pool)],
    bucket: Annotated[Literal["hour", "day"], Query()] = "day",
    from_: Annotated[dt.datetime | None, Query(alias="from")] = None,
    to: Annotated[dt.datetime | None, Query()] = None,
    user: Annotated[str | None, Query(max_length=320)] = None,
    tag: Annotated[str | None, Query(max_length=200)] = None,
) -> dict:
    from_, to = utc("from", from_), utc("to", to)
    tz = request.app.state.timezone
    if bucket == "hour" and from_ and to and to - from_ > dt.timedelta(days=93):
        raise bad_param("from", "hourly buckets cover at most 93 days (narrow from/to)")
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        lo, hi = await _bounds(cur, from_, to, tz)
        if lo is None or hi is None or lo >= hi:
            return {"bucket": bucket, "points": []}
        if bucket == "hour" and hi - lo > dt.timedelta(days=93):
            raise bad_param("from", "hourly buckets cover at most 93 days (narrow from/to)")
        filters, params = [], {"lo": lo, "hi": hi, "tz": tz, "bucket": bucket}
        user, tag = clean(user), clean(tag)
        if user is not None:
            filters.append("l.user_id IN (SELECT id FROM users WHERE email = %(user)s)")
            params["user"] = user
        if tag is not None:
            filters.append(TAG_FILTER)
            params["tag"] = tag
        extra = "".join(f" AND {f}" for f in filters)
        await cur.execute(
            "SELECT date_trunc(%(bucket)s, l.ts, %(tz)s) AS t, count(*) AS connections, "
            "count(*) FILTER (WHERE l.status = 'rejected') AS rejected FROM logs l "
            f"WHERE l.ts >= %(lo)s AND l.ts < %(hi)s{extra} GROUP BY 1 ORDER BY 1",
            params,
        )
        points = [
            {"t": r["t"], "connections": r["connections"], "rejected": r["rejected"]}
            for r in await cur.fetchall()
        ]
    return {"bucket": bucket, "timezone": tz, "points": points}
