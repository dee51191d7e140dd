"""The daily partitions of `logs`: their names, creation and listing."""

import datetime as dt

import psycopg
from psycopg import sql


def partition_name(day: dt.date) -> str:
    return f"logs_{day:%Y_%m_%d}"


def ensure_partitions(conn: psycopg.Connection, days: list[dt.date], timezone: str) -> list[str]:
    """Create the daily `logs` partitions that are missing; returns the names created.

    The bounds are midnight to midnight in `timezone`, the zone of the Xray clock. The SQL
    function creates a standalone table and ATTACHes it, which holds only a SHARE UPDATE
    EXCLUSIVE lock on `logs`, so API readers are not blocked.
    """
    created: list[str] = []
    for day in sorted(set(days)):
        row = conn.execute("SELECT xray_ensure_log_partition(%s, %s)", (day, timezone)).fetchone()
        if row and row[0]:
            created.append(partition_name(day))
    return created


def list_partitions(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(partition name, bound expression) of every `logs` partition, oldest first."""
    rows = conn.execute(
        """
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = 'logs'
        ORDER BY c.relname
        """
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def partition_rows(conn: psycopg.Connection, day: dt.date, timezone: str) -> int:
    """The rows of `logs` on the local `day` (an index-only count of the day's partition)."""
    row = conn.execute(
        "SELECT count(*) FROM logs, xray_day_bounds(%s, %s) b WHERE ts >= b.lo AND ts < b.hi",
        (day, timezone),
    ).fetchone()
    conn.commit()
    return row[0]


# the statistics target of a quick ANALYZE of some columns (a sample of 300 times as many
# rows): enough for the plans of the rules' queries, about a quarter of the default's time
QUICK_SAMPLE_TARGET = 20


def analyze_between(
    conn: psycopg.Connection, lo: dt.datetime, hi: dt.datetime, columns: tuple[str, ...] = ()
) -> list[str]:
    """ANALYZE the `logs` partitions of the days from `lo` to `hi` (a day either side: the
    partitions are local days): after a bulk load their statistics are stale, and the plans
    of the queries that read them by time go wrong. With `columns`, only theirs (and the
    partitions' sizes) from a sample of QUICK_SAMPLE_TARGET: a fraction of the time, and
    autovacuum still analyzes the partitions in full later (an ANALYZE of some columns leaves
    the count of changes since the last one as it was). Returns the partitions analyzed."""
    first, last = lo.date() - dt.timedelta(days=1), hi.date() + dt.timedelta(days=1)
    names = []
    for name, _ in list_partitions(conn):
        try:
            day = dt.datetime.strptime(name, "logs_%Y_%m_%d").date()
        except ValueError:
            continue
        if first <= day <= last:
            names.append(name)
    if names:
        listed = sql.SQL(" ({})").format(sql.SQL(", ").join(map(sql.Identifier, columns)))
        tables = [sql.SQL("{}{}").format(sql.Identifier(n), listed if columns else sql.SQL(""))
                  for n in names]  # fmt: skip
        # SKIP_LOCKED: a partition that autovacuum is analyzing already is left to it (a
        # conflicting lock would wait a deadlock_timeout for autovacuum to give way)
        if columns:
            conn.execute(f"SET LOCAL default_statistics_target = {QUICK_SAMPLE_TARGET}")
        conn.execute(sql.SQL("ANALYZE (SKIP_LOCKED) {}").format(sql.SQL(", ").join(tables)))
        conn.commit()
    return names
