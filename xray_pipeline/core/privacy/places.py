"""ip_places: the country and network of each address as the rows keep it, written by the
loads (once per new address and database build) and refreshed for past days by a backfill."""

import datetime as dt
from dataclasses import dataclass

import polars as pl
import psycopg

from xray_pipeline.core.privacy.geoip import GeoIP
from xray_pipeline.core.privacy.policy import HASH_PREFIX, RowPolicy, parse_ip

_STORE_PLACES = """
INSERT INTO ip_places (address, country, asn, db_version)
SELECT DISTINCT ON (k) k, c, n, %(version)s
FROM (
    SELECT coalesce(u.key, host(u.address::inet)) AS k, u.c, u.n
    FROM unnest(%(address)s::text[], %(key)s::text[], %(country)s::text[], %(asn)s::bigint[])
        AS u (address, key, c, n)
) s
ORDER BY k
ON CONFLICT (address) DO UPDATE
    SET country = EXCLUDED.country, asn = EXCLUDED.asn, db_version = EXCLUDED.db_version,
        resolved_at = now()
    WHERE ip_places.db_version IS DISTINCT FROM EXCLUDED.db_version
"""

_STORE_ASNS = """
INSERT INTO asns (asn, org)
SELECT DISTINCT ON (n) n, o FROM unnest(%s::bigint[], %s::text[]) AS u (n, o) ORDER BY n
ON CONFLICT (asn) DO UPDATE SET org = EXCLUDED.org WHERE asns.org IS DISTINCT FROM EXCLUDED.org
"""


# the place of a rewritten source, kept under what the row keeps now (no database needed)
MOVE_PLACES = """
INSERT INTO ip_places (address, country, asn, db_version)
SELECT DISTINCT ON (m.kept) m.kept, p.country, p.asn, p.db_version
FROM unnest(%(old)s::text[], %(kept)s::text[]) AS m (old, kept)
JOIN ip_places p ON p.address = m.old
ORDER BY m.kept
ON CONFLICT (address) DO NOTHING
"""


def _database(conn: psycopg.Connection) -> str:
    info = conn.info
    return f"{info.host}:{info.port}/{info.dbname}"


def store_places(conn: psycopg.Connection, geoip: GeoIP | None, addresses: pl.DataFrame) -> int:
    """Resolve and store the places of `addresses` (columns `address`: the full address to
    look up; `key`: what the rows keep, or null for the address itself) that this process has
    not stored yet under the current database build. Returns the rows written."""
    if geoip is None or not geoip.enabled or addresses.is_empty():
        return 0
    addresses = addresses.unique(subset=["address", "key"])
    places = geoip.lookup(addresses["address"].to_list())
    version = geoip.version()
    database = _database(conn)
    rows = [
        (address, key, places[address])
        for address, key in addresses.select("address", "key").iter_rows()
        if address in places and (database, key or address) not in geoip.stored
    ]
    if not rows:
        return 0
    written = conn.execute(
        _STORE_PLACES,
        {
            "version": version,
            "address": [r[0] for r in rows],
            "key": [r[1] for r in rows],
            "country": [r[2].country for r in rows],
            "asn": [r[2].asn for r in rows],
        },
    ).rowcount
    orgs = {r[2].asn: r[2].as_org for r in rows if r[2].asn is not None}
    if orgs:
        conn.execute(_STORE_ASNS, (list(orgs), list(orgs.values())))
    geoip.stored.update((database, key or address) for address, key, _ in rows)
    return max(written, 0)


def chunk_addresses(sources: pl.DataFrame, access: pl.DataFrame) -> pl.DataFrame:
    """The addresses of a chunk to resolve: each source address (keyed by what its rows keep
    when that is not the address) and each destination that is an IP address (keyed by its
    host as stored)."""
    src = sources.filter(pl.col("address").is_not_null()).select(
        "address", pl.col("stored_host").alias("key")
    )
    hosts = access["dest_host"].drop_nulls().unique().to_list()
    dest = [(str(ip), host) for host in hosts if (ip := parse_ip(host)) is not None]
    dest_frame = pl.DataFrame(dest, schema={"address": pl.String, "key": pl.String}, orient="row")
    return pl.concat([src, dest_frame])


@dataclass
class EnrichResult:
    """What a day's enrichment did."""

    addresses: int = 0
    resolved: int = 0
    written: int = 0
    unresolvable: int = 0  # hashed sources of rows loaded without a database: address gone
    version: str = "none"


_DAY_SOURCES = """
SELECT DISTINCT coalesce(host(l.src_ip), l.src_host) FROM logs l, xray_day_bounds(%(day)s, %(tz)s) b
WHERE l.ts >= b.lo AND l.ts < b.hi AND (l.src_ip IS NOT NULL OR l.src_host IS NOT NULL)
"""
_DAY_DESTINATIONS = """
SELECT DISTINCT e.host FROM logs l JOIN endpoints e ON e.id = l.endpoint_id,
    xray_day_bounds(%(day)s, %(tz)s) b
WHERE l.ts >= b.lo AND l.ts < b.hi AND e.host ~ '^[0-9a-fA-F:.]+$'
"""


def enrich_day(
    conn: psycopg.Connection, day: dt.date, timezone: str, policy: RowPolicy
) -> EnrichResult:
    """Resolve the addresses of a day's rows with the current databases: what a database
    update or newly configured databases add to days already loaded. A masked network is
    resolved by its first address; a hashed source only when a load has resolved it before
    (its address is not stored)."""
    geoip = policy.geoip
    result = EnrichResult()
    if geoip is None or not geoip.enabled:
        return result
    result.version = geoip.version()
    params = {"day": day, "tz": timezone}
    keys = [r[0] for r in conn.execute(_DAY_SOURCES, params)]
    keys += [r[0] for r in conn.execute(_DAY_DESTINATIONS, params)]
    rows = []
    for key in dict.fromkeys(keys):
        if key.startswith(HASH_PREFIX):
            result.unresolvable += 1
            continue
        ip = parse_ip(key.split("/")[0]) if "/" in key else parse_ip(key)
        if ip is None:
            continue
        rows.append((str(ip), key))
    result.addresses = len(rows)
    frame = pl.DataFrame(rows, schema={"address": pl.String, "key": pl.String}, orient="row")
    result.resolved = len(geoip.lookup(frame["address"].to_list()))
    geoip.stored = {item for item in geoip.stored if item[0] != _database(conn)}
    result.written = store_places(conn, geoip, frame)
    # a hashed source resolved under an older build stays as it was resolved
    if result.unresolvable:
        result.unresolvable = conn.execute(
            "SELECT count(*) FROM unnest(%s::text[]) k WHERE NOT EXISTS "
            "(SELECT 1 FROM ip_places p WHERE p.address = k)",
            ([k for k in dict.fromkeys(keys) if k.startswith(HASH_PREFIX)],),
        ).fetchone()[0]
    conn.commit()
    return result
