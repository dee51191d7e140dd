"""Rollups, data-quality checks and partition maintenance: the SQL behind the daily operations."""

import datetime as dt
from dataclasses import dataclass

import psycopg
from psycopg import sql

from xray_pipeline.core.db.migrations import load_query

ROLLUPS = (
    "daily_traffic",
    "daily_user_ips",
    "daily_user_destinations",
    "daily_user_activity",
    "hourly_traffic",
    "daily_totals",
    "daily_node_users",
    "daily_places",
)


def rebuild_rollup(conn: psycopg.Connection, table: str, day: dt.date, timezone: str) -> int:
    """Replace one day of a rollup table from `logs`, in one transaction; returns its rows."""
    if table not in ROLLUPS:
        raise ValueError(f"unknown rollup {table}")
    with conn.transaction():
        conn.execute(sql.SQL("DELETE FROM {} WHERE day = %s").format(sql.Identifier(table)), (day,))
        inserted = conn.execute(
            load_query(f"rollup_{table}"), {"day": day, "tz": timezone}
        ).rowcount
    return inserted


# the rows of `logs` that a rollup counts: every row, but for the destinations rollup only
# the rows that have one (rejected lines have none)
COUNTED_ROWS = {"daily_user_destinations": sql.SQL(" AND endpoint_id IS NOT NULL")}


def day_row_count(
    conn: psycopg.Connection, day: dt.date, timezone: str, table: str | None = None
) -> int:
    """The day's rows in `logs` (those that `table`, a rollup, counts)."""
    query = sql.SQL(
        "SELECT count(*) FROM logs, xray_day_bounds(%s, %s) b WHERE ts >= b.lo AND ts < b.hi{}"
    ).format(COUNTED_ROWS.get(table, sql.SQL("")))
    return conn.execute(query, (day, timezone)).fetchone()[0]


def rollup_totals(
    conn: psycopg.Connection, table: str, day: dt.date, timezone: str
) -> tuple[int, int]:
    """(the day's total connections in a rollup, the day's rows in logs)."""
    if table not in ROLLUPS:
        raise ValueError(f"unknown rollup {table}")
    total = conn.execute(
        sql.SQL("SELECT coalesce(sum(connections), 0) FROM {} WHERE day = %s").format(
            sql.Identifier(table)
        ),
        (day,),
    ).fetchone()[0]
    return int(total), day_row_count(conn, day, timezone, table)


@dataclass
class Reconciliation:
    """For the ledger ranges that put rows into a day: lines read vs rows stored."""

    ranges: int
    lines: int
    rows: int
    rejects: int

    @property
    def ok(self) -> bool:
        return self.lines == self.rows


def reconcile_day(conn: psycopg.Connection, day: dt.date, timezone: str) -> Reconciliation:
    row = conn.execute(load_query("reconcile_day"), {"day": day, "tz": timezone}).fetchone()
    return Reconciliation(ranges=row[0], lines=int(row[1]), rows=row[2], rejects=row[3])


def newest_row(conn: psycopg.Connection) -> dt.datetime | None:
    return conn.execute("SELECT max(ts) FROM logs").fetchone()[0]


def row_totals(conn: psycopg.Connection) -> dict[str, int]:
    """Exact row counts of the tables a user looks at first (for `demo --once`: small)."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM logs), (SELECT count(*) FROM dns_queries), "
        "(SELECT count(*) FROM rejects), (SELECT count(*) FROM users)"
    ).fetchone()
    return dict(zip(("logs", "dns_queries", "rejects", "users"), row, strict=True))
