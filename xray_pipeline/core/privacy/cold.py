"""`privacy apply` over the days only in the archive (past [retention] hot_days): their files
are rewritten with the same per-distinct-value decisions as a load (full addresses become
masked networks or keyed hashes, destinations registrable domains or nothing), their places
moved to what the rows keep, and the two rollups that hold sources and destinations
(`daily_user_ips`, `daily_user_destinations`) merged onto the kept values. The other rollups'
counts (of distinct sources among them) stay as counted."""

import datetime as dt

import polars as pl
import psycopg

from xray_pipeline.core.archive.erase import rewrite_rows
from xray_pipeline.core.archive.read import day_files, scan
from xray_pipeline.core.archive.store import ArchiveStore
from xray_pipeline.core.archive.tables import LOGS, ArchivedTable
from xray_pipeline.core.privacy.places import MOVE_PLACES, store_places
from xray_pipeline.core.privacy.policy import RowPolicy

_MERGE_SOURCES = """
WITH m AS (SELECT * FROM unnest(%(old)s::text[], %(kept)s::text[]) AS m (old, kept)),
gone AS (
    DELETE FROM daily_user_ips d USING m WHERE d.day = %(day)s AND d.source = m.old
    RETURNING d.user_id, m.kept, d.connections, d.first_seen, d.last_seen
)
INSERT INTO daily_user_ips (day, user_id, source, connections, first_seen, last_seen)
SELECT %(day)s, user_id, kept, sum(connections), min(first_seen), max(last_seen)
FROM gone GROUP BY user_id, kept
ON CONFLICT ON CONSTRAINT daily_user_ips_key DO UPDATE SET
    connections = daily_user_ips.connections + excluded.connections,
    first_seen = least(daily_user_ips.first_seen, excluded.first_seen),
    last_seen = greatest(daily_user_ips.last_seen, excluded.last_seen)
"""
_MERGE_DESTINATIONS = """
WITH m AS (
    SELECT o.id AS old, n.id AS kept
    FROM unnest(%(host)s::text[], %(port)s::int[], %(kept)s::text[]) AS x (host, port, kept)
    JOIN endpoints o ON o.host = x.host AND o.port IS NOT DISTINCT FROM x.port
    JOIN endpoints n ON n.host = x.kept AND n.port IS NOT DISTINCT FROM x.port
),
gone AS (
    DELETE FROM daily_user_destinations d USING m
    WHERE d.day = %(day)s AND d.endpoint_id = m.old AND m.old <> m.kept
    RETURNING d.user_id, m.kept, d.connections
)
INSERT INTO daily_user_destinations (day, user_id, endpoint_id, connections)
SELECT %(day)s, user_id, kept, sum(connections) FROM gone GROUP BY user_id, kept
ON CONFLICT ON CONSTRAINT daily_user_destinations_key DO UPDATE SET
    connections = daily_user_destinations.connections + excluded.connections
"""


def apply_cold_day(
    conn: psycopg.Connection, store: ArchiveStore, policy: RowPolicy, day: dt.date
) -> int:
    """Rewrite the archived `day` to `policy`; the rows of the files it rewrote."""
    rows = scan(store, day_files(conn, LOGS, [day]), LOGS)
    mapping = _sources(conn, policy, rows, day)
    hosts = _destinations(conn, policy, rows, day)

    def change(table: ArchivedTable, frame: pl.DataFrame) -> pl.DataFrame | None:
        if table is not LOGS:
            return None
        out = frame
        if mapping is not None:
            out = (
                out.join(mapping, on="src_ip", how="left")
                .with_columns(
                    pl.coalesce("stored_host", "src_host").alias("src_host"),
                    pl.when(pl.col("stored_host").is_null())
                    .then(pl.col("src_ip"))
                    .otherwise(None)
                    .alias("src_ip"),
                )
                .drop("stored_host")
            )
        if policy.destination == "none":
            out = out.with_columns(
                pl.lit(None, pl.String).alias("dest_host"),
                pl.lit(None, pl.Int32).alias("dest_port"),
                pl.lit(None, pl.String).alias("dest_url"),
            )
        elif policy.destination != "full":
            if hosts is not None:
                out = (
                    out.join(hosts, on="dest_host", how="left")
                    .with_columns(pl.coalesce("kept", "dest_host").alias("dest_host"))
                    .drop("kept")
                )
            out = out.with_columns(pl.lit(None, pl.String).alias("dest_url"))
        return out.select(list(LOGS.schema))

    changed = rewrite_rows(conn, store, change, day)
    conn.commit()
    return changed


def _sources(
    conn: psycopg.Connection, policy: RowPolicy, rows: pl.LazyFrame, day: dt.date
) -> pl.DataFrame | None:
    """{src_ip: stored_host} of the day's full addresses, their places and daily_user_ips
    moved to what the rows keep; None when sources stay."""
    if policy.source_ip == "full":
        return None
    addresses = rows.select(pl.col("src_ip").drop_nulls().unique()).collect()["src_ip"]
    if addresses.is_empty():
        return None
    mapping = policy.sources(addresses.to_list()).filter(pl.col("stored_host").is_not_null())
    with conn.transaction():
        store_places(conn, policy.geoip, mapping.select("address", key="stored_host"))
        params = {"old": mapping["src_ip"].to_list(), "kept": mapping["stored_host"].to_list()}
        conn.execute(MOVE_PLACES, params)
        conn.execute(_MERGE_SOURCES, {**params, "day": day})
    return mapping.select("src_ip", "stored_host")


def _destinations(
    conn: psycopg.Connection, policy: RowPolicy, rows: pl.LazyFrame, day: dt.date
) -> pl.DataFrame | None:
    """{dest_host: kept} of the day's changed destinations, daily_user_destinations merged
    onto them (emptied for `none`); None when none changes."""
    if policy.destination == "full":
        return None
    if policy.destination == "none":
        with conn.transaction():
            conn.execute("DELETE FROM daily_user_destinations WHERE day = %s", (day,))
        return None
    pairs = rows.select("dest_host", "dest_port").drop_nulls("dest_host").unique().collect()
    kept = [policy.destination_host(h) for h in pairs["dest_host"].to_list()]  # once per host
    pairs = pairs.with_columns(pl.Series("kept", kept, pl.String))
    changed = pairs.filter(pl.col("kept") != pl.col("dest_host"))
    if changed.is_empty():
        return None
    new = changed.select("kept", "dest_port").unique().sort("kept", "dest_port", nulls_last=True)
    with conn.transaction():
        conn.execute(
            "INSERT INTO endpoints (host, port) SELECT * FROM unnest(%s::text[], %s::int[]) "
            "ON CONFLICT ON CONSTRAINT endpoints_host_port_key DO NOTHING",
            (new["kept"].to_list(), new["dest_port"].to_list()),
        )
        conn.execute(
            _MERGE_DESTINATIONS,
            {"host": changed["dest_host"].to_list(), "port": changed["dest_port"].to_list(),
             "kept": changed["kept"].to_list(), "day": day},
        )  # fmt: skip
    return changed.select("dest_host", "kept").unique("dest_host")
