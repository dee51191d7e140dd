"""Users: the list, one user's sources, destinations and sessions, the IPs of a window.

A user's sources, destinations and sessions come from the daily rollups for whole past days
(one row per address, destination or quarter hour a day, not one per connection) plus `logs`
for the rest of the window, as the stats do."""

import datetime as dt

from fastapi import HTTPException

from xray_pipeline.api.deps import clean
from xray_pipeline.api.queries.logs import like
from xray_pipeline.api.queries.places import place_conds
from xray_pipeline.api.queries.stats import live_filter, rolled_days, split_window

LIST_USERS = """
WITH last_day AS (
    SELECT u.id, u.email,
           (SELECT max(day) FROM daily_user_ips d WHERE d.user_id = u.id) AS day
    FROM users u
    WHERE (%(pattern)s::text IS NULL OR u.email ILIKE %(pattern)s){place}
), page AS (
    SELECT l.id, l.email,
           (SELECT max(d.last_seen) FROM daily_user_ips d
             WHERE d.user_id = l.id AND d.day = l.day) AS last_seen
    FROM last_day l
    ORDER BY 3 DESC NULLS LAST, l.email
    LIMIT %(limit)s OFFSET %(offset)s
)
SELECT p.email, coalesce(sum(d.connections), 0)::bigint AS connections,
       p.last_seen, count(DISTINCT d.source) AS source_ips
FROM page p LEFT JOIN daily_user_ips d ON d.user_id = p.id
GROUP BY p.id, p.email, p.last_seen
ORDER BY p.last_seen DESC NULLS LAST, p.email
"""

# A node's users: their connections on that node and their last time seen there (from
# daily_node_users, a few rows per user a day); source_ips stays the user's count over the fleet
LIST_NODE_USERS = """
WITH per_user AS (
    SELECT d.user_id, sum(d.connections)::bigint AS connections, max(d.last_seen) AS last_seen
    FROM daily_node_users d
    WHERE d.node = %(node)s
    GROUP BY d.user_id
), matching AS (
    SELECT u.id, u.email, p.connections, p.last_seen FROM per_user p
    JOIN users u ON u.id = p.user_id
    WHERE (%(pattern)s::text IS NULL OR u.email ILIKE %(pattern)s){place}
)
SELECT m.email, m.connections, m.last_seen,
       (SELECT count(DISTINCT d.source) FROM daily_user_ips d WHERE d.user_id = m.id)
           AS source_ips,
       count(*) OVER () AS total
FROM matching m
ORDER BY m.last_seen DESC NULLS LAST, m.email
LIMIT %(limit)s OFFSET %(offset)s
"""

# One statement: the window's live rows of the user are read once (`live`) and feed the
# source IPs, the destinations and the sessions, each added to its rollup's rows for the whole
# past days. Live IPs are grouped on the stored columns first, host() on the groups only
# (measured for a user with 340,000 rows in the window: 159 ms against 683 ms).
#
# A gap of more than `gap` between two connections starts a new session. The connections come
# as segments (first seen, last seen, count) in time order: the quarter-hour rows of
# daily_user_activity for whole past days, the same rows made from the live rows for the rest.
# No gap inside a quarter hour is 15 minutes long, so for a `gap` of 15 minutes or more the
# sessions are exactly those of the single connections; a shorter gap reads every connection.
USER_ACTIVITY = """
WITH live AS MATERIALIZED (
    SELECT l.src_ip, l.src_host, l.endpoint_id, l.ts FROM logs l
     WHERE l.user_id = %(uid)s AND {live}
), ips AS (
    SELECT ip, sum(n)::bigint AS connections, min(first_seen) AS first_seen,
           max(last_seen) AS last_seen
    FROM (
        SELECT nullif(source, '') AS ip, connections AS n, first_seen, last_seen
          FROM daily_user_ips WHERE user_id = %(uid)s AND day = ANY(%(days)s)
        UNION ALL
        SELECT coalesce(host(src_ip), src_host), n, first_seen, last_seen FROM (
            SELECT src_ip, src_host, count(*) AS n, min(ts) AS first_seen, max(ts) AS last_seen
              FROM live GROUP BY 1, 2) g
    ) x GROUP BY 1
), destinations AS (
    SELECT endpoint_id, sum(n)::bigint AS n FROM (
        SELECT endpoint_id, connections AS n FROM daily_user_destinations
         WHERE user_id = %(uid)s AND day = ANY(%(days)s)
        UNION ALL
        SELECT endpoint_id, count(*) FROM live WHERE endpoint_id IS NOT NULL GROUP BY 1
    ) x GROUP BY 1
), top_destinations AS (
    -- the endpoints are looked up for the top counts only (ties at the cut included)
    SELECT e.host, e.port, d.n AS connections
    FROM destinations d JOIN endpoints e ON e.id = d.endpoint_id
    WHERE d.n >= (SELECT min(n) FROM (
        SELECT n FROM destinations ORDER BY n DESC LIMIT %(top)s) t)
    ORDER BY 3 DESC, 1, 2 LIMIT %(top)s
), segments AS ({segments}), sessions AS (
    SELECT min(first_seen) AS start, max(last_seen) AS "end", sum(n)::bigint AS connections
    FROM (
        SELECT first_seen, last_seen, n, sum(new) OVER (ORDER BY first_seen, last_seen) AS session
        FROM (
            SELECT first_seen, last_seen, n,
                   (lag(last_seen) OVER w IS NULL
                    OR first_seen - lag(last_seen) OVER w > %(gap)s)::int AS new
            FROM segments
            WINDOW w AS (ORDER BY first_seen, last_seen)
        ) x
    ) y GROUP BY session ORDER BY 1 DESC LIMIT 200
), placed AS (
    SELECT i.*, p.country, p.asn, a.org AS as_org FROM ips i
    LEFT JOIN ip_places p ON p.address = i.ip LEFT JOIN asns a ON a.asn = p.asn
)
SELECT
    (SELECT coalesce(json_agg(i ORDER BY i.last_seen DESC), '[]') FROM placed i) AS source_ips,
    (SELECT coalesce(json_agg(c ORDER BY c.connections DESC, c.country), '[]') FROM (
        SELECT country, sum(connections)::bigint AS connections FROM placed
        WHERE country IS NOT NULL GROUP BY 1) c) AS countries,
    (SELECT coalesce(json_agg(n ORDER BY n.connections DESC, n.asn), '[]') FROM (
        SELECT asn, min(as_org) AS org, sum(connections)::bigint AS connections FROM placed
        WHERE asn IS NOT NULL GROUP BY 1) n) AS networks,
    (SELECT coalesce(json_agg(d ORDER BY d.connections DESC, d.host, d.port), '[]')
       FROM top_destinations d) AS top_destinations,
    (SELECT coalesce(json_agg(s ORDER BY s.start DESC), '[]') FROM sessions s) AS sessions
"""
QUARTER_HOURS = """
SELECT first_seen, last_seen, connections AS n FROM daily_user_activity
 WHERE user_id = %(uid)s AND day = ANY(%(days)s)
UNION ALL
SELECT min(ts), max(ts), count(*) FROM live
 GROUP BY date_bin('15 minutes', ts, TIMESTAMPTZ '2000-01-01 UTC')
"""
CONNECTIONS = """
SELECT ts AS first_seen, ts AS last_seen, 1 AS n FROM logs
 WHERE user_id = %(uid)s AND ts >= %(lo)s AND ts < %(hi)s
"""
QUARTER_HOUR = dt.timedelta(minutes=15)
WINDOW_IPS = """
SELECT w.*, p.country, p.asn, a.org AS as_org FROM (
    SELECT coalesce(host(src_ip), src_host) AS ip, count(*) AS connections,
           min(ts) AS first_seen, max(ts) AS last_seen
    FROM logs WHERE user_id = %s AND ts > %s AND ts <= %s
    GROUP BY 1
) w LEFT JOIN ip_places p ON p.address = w.ip LEFT JOIN asns a ON a.asn = p.asn
ORDER BY w.last_seen DESC
"""


# the users with a source in a country or network (any day of daily_user_ips)
USER_PLACE = (
    " AND u.id IN (SELECT d.user_id FROM daily_user_ips d JOIN ip_places p "
    "ON p.address = d.source WHERE {conds})"
)


def _user_place(country: str | None, asn: int | None, params: dict) -> str:
    conds = place_conds(country, asn, params, prefix="p.")
    return USER_PLACE.format(conds=" AND ".join(conds)) if conds else ""


async def list_users(
    cur,
    search: str | None,
    limit: int,
    offset: int,
    node: str | None = None,
    country: str | None = None,
    asn: int | None = None,
) -> tuple[list[dict], int]:
    """A page of users (of one node; with a source in one country or network), the most
    recently seen first, and how many users match."""
    pattern = like(search) if search else None
    params: dict = {"pattern": pattern, "limit": limit, "offset": offset}
    place = _user_place(country, asn, params)
    if node is not None:
        params["node"] = node
        query = LIST_NODE_USERS.format(place=place)
        await cur.execute(query, params)
        items = await cur.fetchall()
        if not items and offset:  # past the end: the total still counts
            await cur.execute(query, {**params, "limit": 1, "offset": 0})
            first = await cur.fetchall()
            return [], first[0]["total"] if first else 0
        total = items[0]["total"] if items else 0
        return [{k: v for k, v in i.items() if k != "total"} for i in items], total
    # the page first (each user's last day and last seen: two index probes a user), then the
    # counts of the page's users only: never an aggregate over every user-day row
    await cur.execute(LIST_USERS.format(place=place), params)
    items = await cur.fetchall()
    await cur.execute(
        "SELECT count(*) AS n FROM users u WHERE (%(pattern)s::text IS NULL "
        f"OR u.email ILIKE %(pattern)s){place}",
        params,
    )
    return items, (await cur.fetchone())["n"]


async def user_id(cur, email: str) -> int:
    """The user's id; 404 naming the user when there is none."""
    await cur.execute("SELECT id FROM users WHERE email = %s", (clean(email),))
    row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, detail=f"no user {email!r}")
    return row["id"]


async def activity(
    cur, uid: int, lo: dt.datetime, hi: dt.datetime, tz: str, *, gap: dt.timedelta, top: int
) -> dict:
    """`source_ips`, `top_destinations` and `sessions` of a user in [lo, hi)."""
    tables = ("daily_user_ips", "daily_user_destinations", "daily_user_activity")
    days, windows = split_window(lo, hi, tz, await rolled_days(cur, lo, hi, tables))
    live, params = live_filter(windows)
    params.update(uid=uid, days=days, lo=lo, hi=hi, gap=gap, top=top)
    segments = QUARTER_HOURS if gap >= QUARTER_HOUR else CONNECTIONS
    await cur.execute(USER_ACTIVITY.format(live=live, segments=segments), params)
    return await cur.fetchone()


async def window_ips(cur, uid: int, lo: dt.datetime, hi: dt.datetime) -> list[dict]:
    """The source IPs of a user in (lo, hi], from `logs` (a window of minutes)."""
    await cur.execute(WINDOW_IPS, (uid, lo, hi))
    return await cur.fetchall()
