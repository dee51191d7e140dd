"""Aggregates from the rollups where they are complete (whole past days: `daily_totals` for
the counts, `hourly_traffic` for the time series, `daily_user_ips` for unique users) plus a
live query of `logs` for the rest (today, partial days, days not rolled up yet)."""

import datetime as dt
import zoneinfo

from psycopg import sql

from xray_pipeline.api.queries.logs import tag_filter
from xray_pipeline.api.queries.places import TOP_PLACES, place_conds, place_filter


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


async def bounds(cur, lo: dt.datetime | None, hi: dt.datetime | None, tz: str):
    """The asked window, narrowed to the local days that hold data, in `logs` or only in the
    archive (their rollups stay): None, None when there is none."""
    await cur.execute(
        "SELECT min(ts) AS lo, max(ts) AS hi, (SELECT min(day) FROM archive_days) AS first, "
        "(SELECT max(day) FROM archive_days) AS last FROM logs"
    )
    row = await cur.fetchone()
    zone = zoneinfo.ZoneInfo(tz)
    days = [row["lo"].astimezone(zone).date()] if row["lo"] is not None else []
    days += [row["hi"].astimezone(zone).date()] if row["hi"] is not None else []
    days += [d for d in (row["first"], row["last"]) if d is not None]
    if not days:
        return None, None
    first = dt.datetime.combine(min(days), dt.time(), zone)
    after_last = dt.datetime.combine(max(days) + dt.timedelta(days=1), dt.time(), zone)
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


async def rolled_days(
    cur, lo: dt.datetime, hi: dt.datetime, tables: tuple[str, ...]
) -> set[dt.date]:
    """The days in [lo - 1 day, hi + 1 day] that every one of `tables` holds (one index
    probe per day and table: a day missing from one rollup is read live from `logs`)."""
    probes = sql.SQL(" AND ").join(
        sql.SQL("EXISTS (SELECT 1 FROM {} r WHERE r.day = d.day)").format(sql.Identifier(table))
        for table in tables
    )
    await cur.execute(
        sql.SQL(
            "SELECT d.day FROM (SELECT g::date AS day FROM generate_series(%s::date, %s::date, "
            "interval '1 day') g) d WHERE {}"
        ).format(probes),
        ((lo - dt.timedelta(days=1)).date(), (hi + dt.timedelta(days=1)).date()),
    )
    return {r["day"] for r in await cur.fetchall()}


STATS = """
WITH parts AS (
    SELECT protocol_id, inbound_tag_id, outbound_tag_id, connections, rejected
      FROM daily_totals WHERE day = ANY(%(days)s)
    UNION ALL
    SELECT l.dest_protocol_id, l.inbound_tag_id, l.outbound_tag_id, count(*),
           count(*) FILTER (WHERE l.status = 'rejected')
      FROM logs l WHERE {live} GROUP BY 1, 2, 3
)
SELECT
    coalesce(sum(connections), 0) AS connections,
    coalesce(sum(rejected), 0) AS rejected,
    -- a probe per user (indexes on user_id, day and user_id, ts) rather than a distinct over
    -- every user-day row; one EXISTS over a UNION ALL, because `EXISTS .. OR EXISTS ..` lets
    -- the planner hash the whole of daily_user_ips instead (measured: 106 ms against 22 ms)
    {unique_users} AS unique_users,
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
"""


UNIQUE_USERS = """(SELECT count(*) FROM users u
      WHERE EXISTS (SELECT 1 FROM daily_user_ips d
                     WHERE d.user_id = u.id AND d.day = ANY(%(days)s)
                    UNION ALL
                    SELECT 1 FROM logs l WHERE l.user_id = u.id AND {live}))"""
# with no rolled day and a filter that no index serves (a place), one pass over the window's
# rows, grouped by hashing, beats a probe per user and a sorted distinct (each a read of the
# rows in user order: measured 10.6 s and 5.3 s against 0.8 s for a week of 2.3M rows)
UNIQUE_USERS_LIVE = (
    "(SELECT count(*) FROM (SELECT l.user_id FROM logs l WHERE {live} "
    "AND l.user_id IS NOT NULL GROUP BY 1) x)"
)


# the rollup of each bucket size and the instant its rows start at (daily_totals: about a
# hundred rows a day against a few thousand in hourly_traffic)
SERIES_ROLLUPS = {
    "hour": ("hourly_traffic", "h.hour"),
    "day": ("daily_totals", "(h.day::timestamp AT TIME ZONE %(tz)s)"),
}


# the rows of one node's files (the rollups of the stats have no node: a node's stats are read
# from `logs`, its sources' rows found through (source_id, byte_offset, ts))
NODE_FILTER = " AND l.source_id IN (SELECT id FROM sources WHERE node = %(node)s)"


async def totals(
    cur,
    lo: dt.datetime,
    hi: dt.datetime,
    tz: str,
    node: str | None = None,
    country: str | None = None,
    asn: int | None = None,
    top: int = 10,
) -> tuple[dict, int]:
    """The STATS row of [lo, hi) (of one node's rows, of the sources in one country or
    network) with the top countries and networks, and how many whole days came from the
    rollups (none with a filter: the rollups of the totals have no node nor place)."""
    if node is None and country is None and asn is None:
        tables = ("daily_totals", "daily_user_ips", "daily_places")
        days, windows = split_window(lo, hi, tz, await rolled_days(cur, lo, hi, tables))
    else:
        days, windows = [], [(lo, hi)]
    live, params = live_filter(windows)
    if node is not None:
        live = f"({live}{NODE_FILTER})"
        params["node"] = node
    users = UNIQUE_USERS
    if country is not None or asn is not None:
        live = f"({live}{place_filter(country, asn, params)})"
        users = UNIQUE_USERS_LIVE
    params["days"] = days
    await cur.execute(STATS.format(live=live, unique_users=users.format(live=live)), params)
    row = await cur.fetchone()
    await cur.execute(TOP_PLACES.format(live=live), {**params, "top": top})
    row.update(await cur.fetchone())
    return row, len(days)


async def series(
    cur,
    lo: dt.datetime,
    hi: dt.datetime,
    tz: str,
    bucket: str,
    user: str | None,
    tag: str | None,
    node: str | None = None,
    country: str | None = None,
    asn: int | None = None,
) -> list[dict]:
    """Connections and rejections per bucket: a rollup for whole past days (without a user or
    node filter: the rollups of the series have every dimension but those; daily_places for
    the days of one country or network without a tag), `logs` for the rest (a user's rows
    come straight off the (user_id, ts) index of logs)."""
    params: dict = {"tz": tz, "bucket": bucket, "days": []}
    live_extra = rollup_extra = ""
    if tag is not None:
        params["tag"] = tag
        live_extra, rollup_extra = f" AND {tag_filter('l')}", f" AND {tag_filter('h')}"
    table, start = SERIES_ROLLUPS[bucket]
    if node is not None:
        params["node"] = node
        live_extra += NODE_FILTER
    placed = country is not None or asn is not None
    by_place = placed and bucket == "day" and tag is None
    if placed:
        live_extra += place_filter(country, asn, params)
        if by_place:  # daily_places: the one rollup with places (no hours, no tags)
            table = "daily_places"
            rollup_extra += " AND " + " AND ".join(place_conds(country, asn, params, prefix="h."))
    if user is None and node is None and (not placed or by_place):
        rolled = await rolled_days(cur, lo, hi, (table,))
        days, windows = split_window(lo, hi, tz, rolled)
        params["days"] = days
    else:
        windows = [(lo, hi)]
    if user is not None:
        params["user"] = user
        live_extra += " AND l.user_id IN (SELECT id FROM users WHERE email = %(user)s)"
    live, window_params = live_filter(windows)
    params.update(window_params)
    query = sql.SQL(
        "SELECT t, sum(connections) AS connections, sum(rejected) AS rejected FROM ("
        "SELECT date_trunc(%(bucket)s, {start}, %(tz)s) AS t, h.connections, h.rejected "
        "FROM {table} h WHERE h.day = ANY(%(days)s){rollup_extra} "
        "UNION ALL SELECT date_trunc(%(bucket)s, l.ts, %(tz)s), count(*), "
        "count(*) FILTER (WHERE l.status = 'rejected') FROM logs l "
        "WHERE {live}{live_extra} GROUP BY 1) x GROUP BY t ORDER BY t"
    ).format(
        start=sql.SQL(start),
        table=sql.Identifier(table),
        rollup_extra=sql.SQL(rollup_extra),
        live=sql.SQL(live),
        live_extra=sql.SQL(live_extra),
    )
    await cur.execute(query, params)
    return await cur.fetchall()


async def newest(cur) -> dict:
    """The newest row's time and its age in seconds."""
    await cur.execute(
        "SELECT max(ts) AS newest, extract(epoch FROM now() - max(ts)) AS lag FROM logs"
    )
    return await cur.fetchone()
