"""Access-log records: the filters, the page and its (capped) count."""

import base64
import datetime as dt
import re

from psycopg import sql

from xray_pipeline.api.deps import bad_param
from xray_pipeline.api.queries.places import place_filter

# the characters of an address as host() prints it: other text cannot match a source IP,
# and host() on every row is the dearest part of a search
IP_TEXT = re.compile(r"[0-9A-Fa-f.:]+")


def tag_filter(alias: str = "l") -> str:
    """A tag matches the inbound or the outbound tag (of `logs` or of a rollup)."""
    return (
        f"({alias}.inbound_tag_id IN (SELECT id FROM tags WHERE name = %(tag)s) "
        f"OR {alias}.outbound_tag_id IN (SELECT id FROM tags WHERE name = %(tag)s))"
    )


SELECT_ITEMS = """
SELECT l.ts, l.status, coalesce(host(l.src_ip), l.src_host) AS src_ip, l.src_port,
       sp.name AS src_network, dp.name AS dest_network, e.host AS dest_host,
       e.port AS dest_port, l.dest_url, ti.name AS inbound_tag, tout.name AS outbound_tag,
       u.email, l.reason, s.node, s.path AS source, l.source_id, l.byte_offset,
       p.country, p.asn, pd.country AS dest_country, pd.asn AS dest_asn
FROM logs l
JOIN sources s ON s.id = l.source_id
LEFT JOIN ip_places p ON p.address = coalesce(host(l.src_ip), l.src_host)
LEFT JOIN protocols sp ON sp.id = l.src_protocol_id
LEFT JOIN protocols dp ON dp.id = l.dest_protocol_id
LEFT JOIN endpoints e ON e.id = l.endpoint_id
LEFT JOIN ip_places pd ON pd.address = e.host
LEFT JOIN tags ti ON ti.id = l.inbound_tag_id
LEFT JOIN tags tout ON tout.id = l.outbound_tag_id
LEFT JOIN users u ON u.id = l.user_id
WHERE {where}
ORDER BY l.ts DESC, l.source_id DESC, l.byte_offset DESC
LIMIT %(limit)s OFFSET %(offset)s
"""


def like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def encode_cursor(ts: dt.datetime, source_id: int, byte_offset: int) -> str:
    raw = f"{ts.isoformat()}|{source_id}|{byte_offset}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, int, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        ts, source_id, offset = base64.urlsafe_b64decode(padded).decode().split("|")
        return dt.datetime.fromisoformat(ts), int(source_id), int(offset)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_param("cursor", "not a cursor of this API") from exc


def build_filters(
    *, search, protocol, tag, user, status, node, from_, to, cursor, country=None, asn=None
) -> tuple[sql.Composable, dict]:
    """The WHERE clause (bound values only; text is resolved to ids on small tables)."""
    conds: list[str] = []
    params: dict = {}
    if from_ is not None:
        conds.append("l.ts >= %(from)s")
        params["from"] = from_
    if to is not None:
        conds.append("l.ts < %(to)s")
        params["to"] = to
    if status is not None:
        conds.append("l.status = %(status)s")
        params["status"] = status
    if protocol is not None:
        conds.append("l.dest_protocol_id IN (SELECT id FROM protocols WHERE name = %(protocol)s)")
        params["protocol"] = protocol
    if tag is not None:
        conds.append(tag_filter())
        params["tag"] = tag
    if user is not None:
        # a scalar subquery (emails are unique): its id drives the (user_id, ts) index of each
        # partition, newest first; a semi-join (IN) made the planner walk `ts` and filter
        conds.append("l.user_id = (SELECT id FROM users WHERE email = %(user)s)")
        params["user"] = user
    if node is not None:
        conds.append("l.source_id IN (SELECT id FROM sources WHERE node = %(node)s)")
        params["node"] = node
    if country is not None or asn is not None:
        conds.append(place_filter(country, asn, params).removeprefix(" AND "))
    if search:
        ip = " OR host(l.src_ip) LIKE lower(%(pattern)s)" if IP_TEXT.fullmatch(search) else ""
        conds.append(
            "(l.user_id IN (SELECT id FROM users WHERE email ILIKE %(pattern)s) "
            "OR l.endpoint_id IN (SELECT id FROM endpoints WHERE host ILIKE %(pattern)s) "
            f"OR l.src_host ILIKE %(pattern)s{ip})"
        )
        params["pattern"] = like(search)
    if cursor is not None:
        c_ts, c_src, c_off = decode_cursor(cursor)
        conds.append("(l.ts, l.source_id, l.byte_offset) < (%(c_ts)s, %(c_src)s, %(c_off)s)")
        params.update(c_ts=c_ts, c_src=c_src, c_off=c_off)
    where = sql.SQL(" AND ".join(conds) if conds else "true")
    return where, params


async def page(cur, where: sql.Composable, params: dict) -> list[dict]:
    """The page of records (with `source_id`, for the next cursor)."""
    await cur.execute(sql.SQL(SELECT_ITEMS).format(where=where), params)
    return await cur.fetchall()


async def count(cur, where: sql.Composable, params: dict, cap: int) -> tuple[int, bool]:
    """(how many records match, whether that is the planner's estimate): exact up to `cap`,
    then the planner's figure, so that a count never scans a whole table."""
    params = {k: v for k, v in params.items() if k not in ("limit", "offset")}
    params["cap"] = cap + 1
    await cur.execute(
        sql.SQL("SELECT count(*) AS n FROM (SELECT 1 FROM logs l WHERE {} LIMIT %(cap)s) x").format(
            where
        ),
        params,
    )
    total = (await cur.fetchone())["n"]
    if total <= cap:
        return total, False
    await cur.execute(
        sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM logs l WHERE {}").format(where), params
    )
    plan = (await cur.fetchone())["QUERY PLAN"]
    return max(int(plan[0]["Plan"]["Plan Rows"]), total), True
